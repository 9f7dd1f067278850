//! Smoke test of the benchmark with tiny counts: every workload runs, every participant
//! process reports, and the JSON document has every figure and ratio.

use std::process::Command;

#[test]
fn the_benchmark_runs_every_workload_with_tiny_counts() {
    let out = Command::new(env!("CARGO_BIN_EXE_zeroservices-bench"))
        .args(["run", "--quick", "--json"])
        .output()
        .expect("run bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON document");
    for imp in [
        "raw",
        "core",
        "resource",
        "nats-raw",
        "nats-core",
        "nats-resource",
    ] {
        assert!(
            doc["w1"][imp]["throughput"]["req_per_s"]
                .as_f64()
                .unwrap_or(0.0)
                > 0.0,
            "W1 {imp}: {}",
            doc["w1"][imp]
        );
        assert_eq!(doc["w1"][imp]["latency"]["errors"], 0, "W1 {imp} errors");
        assert!(doc["w1"][imp]["service_rss_kib"]["idle"].as_u64().is_some());
    }
    for imp in ["raw", "framework", "nats-raw", "nats"] {
        assert!(
            doc["w2"][imp]["events_per_s_mean"].as_f64().unwrap_or(0.0) > 0.0,
            "W2 {imp}: {}",
            doc["w2"][imp]
        );
    }
    for mode in ["baseline", "all", "split"] {
        assert!(
            doc["w3"][mode]["post"]["req_per_s"].as_f64().unwrap_or(0.0) > 0.0,
            "W3 {mode} POST"
        );
        assert_eq!(
            doc["w3"][mode]["post"]["errors"], 0,
            "W3 {mode} POST errors"
        );
        assert_eq!(doc["w3"][mode]["get"]["errors"], 0, "W3 {mode} GET errors");
    }
    for mode in ["all", "split"] {
        assert_eq!(
            doc["w3"][mode]["realtime"]["lost_events"], 0,
            "W3c {mode} lost events"
        );
    }
    assert!(
        doc["ratios"]
            .as_object()
            .is_some_and(|r| r.len() >= 9 && r.values().all(|v| v.as_f64().is_some())),
        "{}",
        doc["ratios"]
    );
    assert!(doc["cores"].as_u64().unwrap_or(0) >= 1);
}
