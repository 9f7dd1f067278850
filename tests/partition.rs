//! Faults between two hosts (network namespaces joined by a veth pair): an API node on one, the
//! `power` service (embedded store) on the other. The link goes down: requests end within their
//! timeout (504, then 503 once the provider is declared gone), never hang; the link comes back:
//! the API node serves again by itself and no acknowledged create was lost. Then the service is
//! SIGKILLed and restarted on the same data while the link is up.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, spawn, spawn_ready, NetNs, Proc};

fn curl(ns: &NetNs, args: &[&str]) -> (u16, f64, String) {
    let out = ns
        .command("curl")
        .args(["-s", "-m", "10", "-w", "\n%{http_code} %{time_total}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", "000 0"));
    let mut it = tail.split_whitespace();
    let code = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let secs = it.next().and_then(|c| c.parse().ok()).unwrap_or(0.0);
    (code, secs, body.to_owned())
}

fn service(ns: &NetNs, dir: &std::path::Path) -> Proc {
    let mut c = ns.command(bin());
    c.args([
        "serve",
        "--name",
        "svc",
        "--no-http",
        "--collection",
        "power",
        "--interface",
        "10.77.0.2",
        "--open-cluster", // two hosts without a key: deliberately open
        "--heartbeat-ms",
        "200",
    ]);
    c.arg("--store").arg(format!("embedded:{}", dir.display()));
    spawn_ready("svc", c)
}

fn wait_code(ns: &NetNs, url: &str, want: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let (code, _, body) = curl(ns, &[url]);
        if code == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: still {code} ({body}) after {limit:?}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The API node of these tests (HTTP on 127.0.0.1:8080 in `ns`, heartbeat 200 ms, `extra`
/// flags), once it serves `power`.
fn api_node(ns: &NetNs, extra: &[&str], limit: Duration) -> Proc {
    let mut a = ns.command(bin());
    a.args([
        "serve",
        "--name",
        "api",
        "--store",
        "memory",
        "--http",
        "127.0.0.1:8080",
        "--heartbeat-ms",
        "200",
    ]);
    a.args(extra);
    let api = spawn("api", a);
    wait_code(ns, "http://127.0.0.1:8080/power", 200, limit);
    api
}

/// POSTs `{"i": i}` to the API node; asserts 201; answers the seconds taken and the body.
fn create_power(ns: &NetNs, i: usize) -> (f64, serde_json::Value) {
    let (code, secs, body) = curl(
        ns,
        &[
            "-X",
            "POST",
            "http://127.0.0.1:8080/power",
            "-d",
            &format!(r#"{{"i": {i}}}"#),
        ],
    );
    assert_eq!(code, 201, "{body}");
    (secs, serde_json::from_str(&body).unwrap())
}

#[test]
fn partition_heal_and_crash_between_two_hosts() {
    let (api_host, svc_host) = (NetNs::new(), NetNs::new());
    let (api_if, _) = NetNs::link(&api_host, &svc_host);
    let dir = std::env::temp_dir().join(format!("zs-partition-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let svc = service(&svc_host, &dir);
    let _api = api_node(
        &api_host,
        &[
            "--interface",
            "10.77.0.1",
            "--open-cluster",
            "--timeout-ms",
            "1000",
        ],
        Duration::from_secs(10),
    );

    let mut ids = Vec::new();
    for i in 0..20 {
        let (_, v) = create_power(&api_host, i);
        ids.push(v["resource_id"].as_str().unwrap().to_owned());
    }

    // Partition: cut the API host's link.
    let cut = Instant::now();
    assert!(Command::new("ip")
        .args(["-n", &api_host.name, "link", "set", &api_if, "down"])
        .status()
        .unwrap()
        .success());
    let mut codes = Vec::new();
    while cut.elapsed() < Duration::from_secs(3) {
        let (code, secs, _) = curl(&api_host, &["http://127.0.0.1:8080/power?limit=1"]);
        assert!(
            secs < 1.6,
            "a request took {secs} s during the partition (timeout 1 s)"
        );
        assert!(code == 503 || code == 504, "during the partition: {code}");
        codes.push(code);
    }
    assert_eq!(
        codes.last(),
        Some(&503),
        "not 503 once the provider is declared gone: {codes:?}"
    );
    eprintln!(
        "partition: {} requests answered, codes {:?}…",
        codes.len(),
        &codes[..codes.len().min(6)]
    );

    // Heal: the API node finds the service again by itself; nothing acknowledged was lost.
    let healed = Instant::now();
    assert!(Command::new("ip")
        .args(["-n", &api_host.name, "link", "set", &api_if, "up"])
        .status()
        .unwrap()
        .success());
    assert!(Command::new("ip")
        .args([
            "-n",
            &api_host.name,
            "route",
            "replace",
            "224.0.0.0/4",
            "dev",
            &api_if
        ])
        .status()
        .unwrap()
        .success());
    wait_code(
        &api_host,
        "http://127.0.0.1:8080/power",
        200,
        Duration::from_secs(10),
    );
    eprintln!("healed: serving again after {:?}", healed.elapsed());
    let (_, _, body) = curl(&api_host, &["http://127.0.0.1:8080/power?limit=100"]);
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(20), "{body}");

    // Crash: SIGKILL the service, restart it on the same data.
    svc.signal(9);
    drop(svc);
    wait_code(
        &api_host,
        "http://127.0.0.1:8080/power",
        503,
        Duration::from_secs(5),
    );
    let _svc2 = service(&svc_host, &dir);
    wait_code(
        &api_host,
        "http://127.0.0.1:8080/power",
        200,
        Duration::from_secs(10),
    );
    for id in &ids {
        let (code, _, _) = curl(&api_host, &[&format!("http://127.0.0.1:8080/power/{id}")]);
        assert_eq!(code, 200, "{id} lost across SIGKILL");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fifty_ms_each_way_between_hosts_is_tolerated() {
    // The kernel here has no netem, so latency comes from a delaying TCP proxy in the API
    // host: the service binds 0.0.0.0 and announces 0.0.0.0, which the API node, learning it
    // through static discovery, resolves to 127.0.0.1 — the proxy — so every request, reply
    // and event crosses it.
    let (api_host, svc_host) = (NetNs::new(), NetNs::new());
    let _ = NetNs::link(&api_host, &svc_host);
    let (router, publish) = (common::free_port(), common::free_port());
    let mut proxy = api_host.command("python3");
    proxy
        .arg(common::root().join("tests/faults/delay_proxy.py"))
        .arg("50");
    proxy
        .arg(format!("{router}:10.77.0.2:{router}"))
        .arg(format!("{publish}:10.77.0.2:{publish}"));
    let proxy = spawn("delay-proxy", proxy);
    proxy.wait_line("PROXY READY", Duration::from_secs(10));
    let mut s = svc_host.command(bin());
    s.args([
        "serve",
        "--name",
        "svc",
        "--no-http",
        "--collection",
        "power",
        "--store",
        "memory",
        "--discovery",
        "none",
        "--open-cluster", // binds 0.0.0.0 without a key, on purpose (see above)
        "--heartbeat-ms",
        "200",
    ]);
    s.args([
        "--router-port",
        &router.to_string(),
        "--pub-port",
        &publish.to_string(),
    ]);
    let svc = spawn_ready("svc", s);
    let _api = api_node(
        &api_host,
        &[
            "--timeout-ms",
            "2000",
            "--discovery",
            &format!("static:127.0.0.1:{router}"),
        ],
        Duration::from_secs(15),
    );

    let mut times = Vec::new();
    for i in 0..10 {
        times.push(create_power(&api_host, i).0);
    }
    let (code, secs, body) = curl(&api_host, &["http://127.0.0.1:8080/power?limit=100"]);
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .map(Vec::len),
        Some(10)
    );
    times.push(secs);
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    eprintln!("through 50 ms each way: request times {times:?}");
    assert!(
        min >= 0.1,
        "requests did not cross the delaying proxy ({min} s)"
    );
    // The delayed peer is not declared gone (its announcements are late but regular): five
    // fresh announcements in a row (its `last_seen_ms` drops back), listed and up at each look.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (mut fresh, mut previous) = (0, u64::MAX);
    let mut health = String::new();
    while fresh < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "5 announcements did not arrive within 30 s: {health}"
        );
        health = curl(&api_host, &["http://127.0.0.1:8080/health"]).2;
        let h: serde_json::Value = serde_json::from_str(&health).unwrap_or_default();
        let peer = &h["peers"][0];
        assert_eq!(peer["name"], "svc", "{health}");
        assert_eq!(peer["down"], false, "declared down: {health}");
        let seen = peer["last_seen_ms"].as_u64().unwrap_or(u64::MAX);
        if seen < previous {
            fresh += 1;
        }
        previous = seen;
        std::thread::sleep(Duration::from_millis(50));
    }
    let h: serde_json::Value = serde_json::from_str(&health).unwrap_or_default();
    let peer = &h["peers"][0];
    assert!(
        peer["rtt_ms"].as_f64().unwrap_or(0.0) >= 100.0,
        "rtt should show the added latency: {health}"
    );
    drop(svc);
}
