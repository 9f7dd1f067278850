//! Discovery across OS processes: multicast inside private network namespaces (2 and 3 nodes,
//! SIGKILL detection, graceful bye) and static seeds on loopback without multicast.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, free_port, names, nodes_json, spawn, spawn_ready, NetNs, Proc};

const HB_MS: u64 = 200;

fn serve_in(ns: &NetNs, name: &str, extra: &[&str]) -> Proc {
    let mut c = ns.command(bin());
    c.args([
        "serve",
        "--name",
        name,
        "--no-http",
        "--store",
        "memory",
        "--collection",
        name,
        "--heartbeat-ms",
        &HB_MS.to_string(),
    ]);
    c.args(extra);
    spawn_ready(name, c)
}

fn nodes_in(ns: &NetNs, wait: &str) -> Vec<String> {
    let mut c = ns.command(bin());
    c.args([
        "nodes",
        "--json",
        "--wait",
        wait,
        "--heartbeat-ms",
        &HB_MS.to_string(),
    ]);
    names(&nodes_json(c))
}

#[test]
fn two_nodes_discover_each_other_over_multicast() {
    let ns = NetNs::new();
    let _a = serve_in(&ns, "alpha", &[]);
    let _b = serve_in(&ns, "beta", &[]);
    assert_eq!(nodes_in(&ns, "1.0"), vec!["alpha", "beta"]);
}

#[test]
fn three_nodes_discover_each_other_over_multicast_and_see_collections() {
    let ns = NetNs::new();
    let _a = serve_in(&ns, "alpha", &[]);
    let _b = serve_in(&ns, "beta", &[]);
    let _c = serve_in(&ns, "gamma", &[]);
    let mut c = ns.command(bin());
    c.args(["nodes", "--json", "--wait", "1.0", "--heartbeat-ms", "200"]);
    let v = nodes_json(c);
    assert_eq!(names(&v), vec!["alpha", "beta", "gamma"]);
    for n in v.as_array().unwrap() {
        assert_eq!(
            n["collections"],
            serde_json::json!([n["name"]]),
            "collections announced: {n}"
        );
        assert!(
            n["endpoints"]["request"]
                .as_str()
                .unwrap()
                .starts_with("tcp://127.0.0.1:"),
            "resolved endpoint: {n}"
        );
        assert!(n["rtt_ms"].as_f64().is_some(), "rtt measured: {n}");
    }
}

fn watcher(mut c: Command, hb: u64) -> Proc {
    c.args([
        "nodes",
        "--watch",
        "--wait",
        "0.3",
        "--heartbeat-ms",
        &hb.to_string(),
    ]);
    spawn("watcher", c)
}

#[test]
fn a_killed_peer_is_detected_by_its_silence() {
    let ns = NetNs::new();
    let _a = serve_in(&ns, "alpha", &[]);
    let b = serve_in(&ns, "beta", &[]);
    let w = watcher(ns.command(bin()), HB_MS);
    w.wait_line("+ beta", Duration::from_secs(5));
    // Killed without a bye, right after it was seen: only its silence can tell.
    let killed = Instant::now();
    b.signal(9);
    w.wait_line("- beta", Duration::from_secs(5));
    let took = killed.elapsed();
    eprintln!("SIGKILLed peer detected after {took:?} (heartbeat {HB_MS} ms)");
    // Silent for 3 heartbeats, checked every quarter heartbeat: 3.25 heartbeats on an idle
    // machine. The exact bound is the directory's logic (its unit tests); here, where a loaded
    // CI machine delays every process, only "detected, by silence" is asserted (issue 26):
    // within the 5 s of `wait_line`, and not before 2 heartbeats.
    assert!(
        took >= Duration::from_millis(2 * HB_MS),
        "detected too early ({took:?}): not by silence"
    );
}

#[test]
fn graceful_stop_says_bye_at_once() {
    let ns = NetNs::new();
    let hb = 2000;
    let mut c = ns.command(bin());
    c.args([
        "serve",
        "--name",
        "leaver",
        "--no-http",
        "--store",
        "memory",
        "--heartbeat-ms",
        &hb.to_string(),
    ]);
    let mut leaver = spawn_ready("leaver", c);
    let w = watcher(ns.command(bin()), hb);
    w.wait_line("+ leaver", Duration::from_secs(6));
    let stopped = Instant::now();
    leaver.signal(15);
    w.wait_line("- leaver", Duration::from_secs(10));
    let took = stopped.elapsed();
    eprintln!("bye seen after {took:?} (heartbeat {hb} ms)");
    assert!(
        took < Duration::from_millis(2 * hb),
        "leave seen after {took:?}: by expiry, not by bye"
    );
    assert_eq!(
        leaver.wait_exit(Duration::from_secs(5)),
        Some(0),
        "SIGTERM must exit 0"
    );
}

#[test]
fn static_seeds_find_the_whole_cluster_without_multicast() {
    let port = free_port();
    let seed = format!("static:127.0.0.1:{port}");
    let serve = |name: &str, discovery: &str, router_port: Option<u16>| {
        let mut c = Command::new(bin());
        c.args([
            "serve",
            "--name",
            name,
            "--no-http",
            "--store",
            "memory",
            "--collection",
            name,
            "--bind",
            "127.0.0.1",
        ]);
        c.args(["--discovery", discovery, "--heartbeat-ms", "200"]);
        if let Some(p) = router_port {
            c.args(["--router-port", &p.to_string()]);
        }
        spawn_ready(name, c)
    };
    let _a = serve("alpha", "none", Some(port));
    let _b = serve("beta", &seed, None);
    let _c = serve("gamma", &seed, None);
    let mut c = Command::new(bin());
    c.args([
        "nodes",
        "--json",
        "--wait",
        "1.5",
        "--bind",
        "127.0.0.1",
        "--discovery",
        &seed,
        "--heartbeat-ms",
        "200",
    ]);
    // gamma and beta are learned through alpha's peer list.
    assert_eq!(names(&nodes_json(c)), vec!["alpha", "beta", "gamma"]);
}
