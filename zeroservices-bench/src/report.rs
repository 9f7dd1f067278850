//! The benchmark's summary table: one line per measured figure, then the ratios.

use serde_json::Value;

use crate::driver::W3_MODES;

pub(crate) fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or(f64::NAN)
}

pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

/// The table of a run's results (W1–W3 figures, then every ratio).
pub(crate) fn table(w1v: &Value, w2v: &Value, w3v: &Value, ratios: &Value) -> String {
    let tp = |imp: &str| f(w1v, &[imp, "throughput", "req_per_s"]);
    let mut table = String::new();
    let mut row = |name: &str, value: String| table.push_str(&format!("{name:<52} {value}\n"));
    for imp in [
        "raw",
        "core",
        "resource",
        "resource-create",
        "nats-raw",
        "nats-core",
        "nats-resource",
    ] {
        row(
            &format!("W1a {imp}: p50 / p99 latency (ms)"),
            format!(
                "{:.3} / {:.3}",
                f(w1v, &[imp, "latency", "latency", "p50_ms"]),
                f(w1v, &[imp, "latency", "latency", "p99_ms"])
            ),
        );
        row(
            &format!("W1b {imp}: req/s at 64 in flight"),
            format!("{:.0}", tp(imp)),
        );
    }
    for imp in ["raw", "framework", "nats-raw", "nats"] {
        row(
            &format!("W2 {imp}: events/s per subscriber (mean / slowest)"),
            format!(
                "{:.0} / {:.0}",
                f(w2v, &[imp, "events_per_s_mean"]),
                f(w2v, &[imp, "events_per_s_slowest"])
            ),
        );
        row(
            &format!("W2 {imp}: loss %"),
            format!("{:.3}", f(w2v, &[imp, "loss_pct"])),
        );
    }
    for mode in W3_MODES {
        row(
            &format!("W3a {mode}: POST req/s"),
            format!("{:.0}", f(w3v, &[mode, "post", "req_per_s"])),
        );
        row(
            &format!("W3b {mode}: GET req/s"),
            format!("{:.0}", f(w3v, &[mode, "get", "req_per_s"])),
        );
        if mode != "baseline" {
            row(
                &format!("W3c {mode}: POST→event p50 / p99 (ms)"),
                format!(
                    "{:.3} / {:.3}",
                    f(w3v, &[mode, "realtime", "latency", "p50_ms"]),
                    f(w3v, &[mode, "realtime", "latency", "p99_ms"])
                ),
            );
        }
        if mode == "all" {
            row(
                "W3 fan-out to 1000 websockets: p50 / p99 / all-1000 p99 (ms)",
                format!(
                    "{:.3} / {:.3} / {:.3} (lost {})",
                    f(w3v, &["all", "fanout_1000", "latency", "p50_ms"]),
                    f(w3v, &["all", "fanout_1000", "latency", "p99_ms"]),
                    f(
                        w3v,
                        &["all", "fanout_1000", "all_clients_latency", "p99_ms"]
                    ),
                    w3v["all"]["fanout_1000"]["lost_events"]
                ),
            );
        }
    }
    for (k, v) in ratios.as_object().into_iter().flatten() {
        row(k, format!("{:.3}", v.as_f64().unwrap_or(f64::NAN)));
    }
    table
}
