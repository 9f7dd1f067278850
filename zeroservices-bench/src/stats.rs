//! Latency summaries (nearest-rank percentiles) and harness output.

use std::time::Duration;

use serde_json::{json, Value};

/// `{"n","mean_ms","p50_ms","p90_ms","p99_ms","p999_ms","min_ms","max_ms"}` of samples.
pub(crate) fn summary(samples: &mut [Duration]) -> Value {
    if samples.is_empty() {
        return json!({"n": 0});
    }
    samples.sort_unstable();
    let n = samples.len();
    let rank = |p: f64| {
        let r = ((p / 100.0) * n as f64).ceil() as usize;
        ms(samples[r.clamp(1, n) - 1])
    };
    let mean = samples.iter().map(|d| d.as_secs_f64()).sum::<f64>() / n as f64 * 1000.0;
    json!({"n": n, "mean_ms": mean, "p50_ms": rank(50.0), "p90_ms": rank(90.0), "p99_ms": rank(99.0),
           "p999_ms": rank(99.9), "min_ms": ms(samples[0]), "max_ms": ms(samples[n - 1])})
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Prints one harness JSON line on stdout.
pub(crate) fn emit(v: Value) {
    println!("{v}");
}

/// A `BENCH_*` variable, or `default`.
pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Exits the process when stdin closes (services and publishers live until then), or at the
/// hard deadline `BENCH_DEADLINE_S`.
pub(crate) fn exit_on_stdin_close_or_deadline() {
    let deadline = env_or("BENCH_DEADLINE_S", 600u64);
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            sink.clear();
        }
        std::process::exit(0);
    });
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(deadline));
        eprintln!("hard deadline of {deadline} s reached");
        std::process::exit(3);
    });
}

/// Resident set size of a process, in KiB (Linux).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
