//! A 3-server NATS cluster, one server per network namespace, joined by a bridge in a fourth
//! namespace where the nodes (and this test's client) run. One server is SIGKILLed while
//! creates flow: the nodes reconnect to another within 2 s, no acknowledged create is lost and
//! events keep arriving. Needs root and iproute2 (namespaces), and nats-server.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{example, spawn, spawn_ready, NetNs, Proc};
use futures::stream::{self, StreamExt};
use futures::FutureExt as _;
use serde_json::json;
use zeroservices::core::medium::NatsConfig;
use zeroservices::core::{query::ListQuery, resources::ResourceEvent, Node};
use zeroservices_testkit::nats::temp_dir;

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

/// Hub namespace with a bridge (10.79.0.10) and one namespace per server (10.79.0.1..3)
/// linked to it.
fn lan(hub: &NetNs, servers: &[NetNs]) {
    ip(&["-n", &hub.name, "link", "add", "zbr", "type", "bridge"]);
    ip(&[
        "-n",
        &hub.name,
        "addr",
        "add",
        "10.79.0.10/24",
        "dev",
        "zbr",
    ]);
    ip(&["-n", &hub.name, "link", "set", "zbr", "up"]);
    for (i, ns) in servers.iter().enumerate() {
        let (inner, outer) = (
            format!("zs{}{i}", std::process::id() % 10000),
            format!("zh{}{i}", std::process::id() % 10000),
        );
        ip(&[
            "link", "add", &inner, "type", "veth", "peer", "name", &outer,
        ]);
        ip(&["link", "set", &inner, "netns", &ns.name]);
        ip(&["link", "set", &outer, "netns", &hub.name]);
        let addr = format!("10.79.0.{}/24", i + 1);
        ip(&["-n", &ns.name, "addr", "add", &addr, "dev", &inner]);
        ip(&["-n", &ns.name, "link", "set", &inner, "up"]);
        ip(&["-n", &hub.name, "link", "set", &outer, "master", "zbr"]);
        ip(&["-n", &hub.name, "link", "set", &outer, "up"]);
    }
}

/// Starts server `i` (1-based) of the cluster in `ns`.
fn nats_server(ns: &NetNs, i: usize, dir: &std::path::Path) -> Proc {
    let routes: Vec<String> = (1..=3)
        .map(|j| format!("nats://10.79.0.{j}:6222"))
        .collect();
    let conf = format!(
        "server_name: n{i}\nlog_file: {:?}\nlisten: 10.79.0.{i}:4222\nhttp: 10.79.0.{i}:8222\nmax_payload: 9MB\n\
         jetstream {{ store_dir: {:?} }}\n\
         cluster {{ name: zs, listen: 10.79.0.{i}:6222, routes: [{}] }}\n",
        dir.join(format!("n{i}.log")),
        dir.join(format!("js{i}")),
        routes.join(", ")
    );
    let path = dir.join(format!("n{i}.conf"));
    std::fs::write(&path, conf).expect("write conf");
    let mut c = ns.command("nats-server");
    c.arg("-c").arg(&path);
    spawn(&format!("nats-{i}"), c)
}

/// Moves the calling thread into the namespace (its sockets, and threads it starts, are there).
fn enter(ns: &NetNs) {
    let f = File::open(format!("/var/run/netns/{}", ns.name)).expect("namespace file");
    // SAFETY: setns on a valid namespace fd only changes this thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

fn http_get(url: &str) -> Option<serde_json::Value> {
    let r = ureq::get(url).timeout(Duration::from_secs(2)).call().ok()?;
    serde_json::from_str(&r.into_string().ok()?).ok()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what} not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_nats_server_sigkilled_while_creates_flow_loses_no_acknowledged_create() {
    let hub = NetNs::new();
    let ns: Vec<NetNs> = (0..3).map(|_| NetNs::new()).collect();
    lan(&hub, &ns);
    let dir = temp_dir("nats-cluster");
    let mut servers: Vec<Option<Proc>> = (0..3)
        .map(|i| Some(nats_server(&ns[i], i + 1, &dir)))
        .collect();
    let urls: Vec<String> = (1..=3)
        .map(|i| format!("nats://10.79.0.{i}:4222"))
        .collect();
    let medium = urls.join(",");
    let mut svc = hub.command(example("power"));
    svc.args([
        "--role",
        "service",
        "--medium",
        &medium,
        "--heartbeat-ms",
        "200",
    ]);
    svc.args(["--jetstream-replicas", "3"]);
    svc.arg("--store")
        .arg(format!("embedded:{}", dir.join("store").display()));
    let hub_name = hub.name.clone();
    let dir2 = dir.clone();
    // The checks run inside the hub namespace, on a runtime of their own.
    let outcome = std::thread::spawn(move || {
        let hub = NetNs { name: hub_name };
        enter(&hub);
        std::mem::forget(hub); // owned (and deleted) by the test's own handle
        wait_for("a JetStream meta leader", Duration::from_secs(30), || {
            (1..=3).any(|i| {
                http_get(&format!("http://10.79.0.{i}:8222/jsz")).is_some_and(|j| {
                    j["meta_cluster"]["leader"]
                        .as_str()
                        .is_some_and(|l| !l.is_empty())
                })
            })
        });
        let service = spawn_ready("power-service", svc);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(flow(urls, &mut servers));
        drop(service);
        drop(servers);
        let _ = std::fs::remove_dir_all(&dir2);
    })
    .join();
    drop(ns);
    drop(hub);
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

/// The server with the most client connections (the one the nodes are on).
fn busiest() -> usize {
    (1..=3)
        .max_by_key(|i| {
            http_get(&format!("http://10.79.0.{i}:8222/connz"))
                .and_then(|c| c["num_connections"].as_u64())
                .unwrap_or(0)
        })
        .unwrap_or(1)
}

async fn flow(urls: Vec<String>, servers: &mut [Option<Proc>]) {
    let c = Node::builder("client")
        .nats(NatsConfig::new(urls))
        .heartbeat(Duration::from_millis(200))
        .timeout(Duration::from_secs(1))
        .start()
        .await
        .expect("client on the NATS cluster");
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.directory().providers("power").is_empty() {
        assert!(Instant::now() < deadline, "no provider of power");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut events = c.subscribe("power");
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut acked: Vec<(String, Instant)> = Vec::new();
    let power = c.collection("power");
    let start = Instant::now();
    let mut killed_at: Option<Instant> = None;
    let mut n = 0u64;
    // Counted, not timed: the busiest server is killed once 64 creates were acknowledged; the
    // run goes on until 64 more were, and one of those had its event (the subscription is
    // back). 60 s at most.
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "after 60 s: {} acknowledged, {} events",
            acked.len(),
            seen.len()
        );
        if killed_at.is_none() && acked.len() >= 64 {
            let victim = busiest();
            println!("SIGKILL of nats server n{victim}");
            if let Some(p) = servers[victim - 1].take() {
                p.signal(9);
            }
            killed_at = Some(Instant::now());
        }
        // 8 creates at a time, each acknowledged or failed within the 1 s timeout.
        let batch: Vec<u64> = (n..n + 8).collect();
        n += 8;
        let results: Vec<_> = stream::iter(batch)
            .map(|i| {
                let power = power.clone();
                async move { power.create(None, json!({"value": i})).await }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for r in results.into_iter().flatten() {
            acked.push((r.resource_id, Instant::now()));
        }
        while let Some(Some(ev)) = events.recv().now_or_never() {
            let e: ResourceEvent = serde_json::from_slice(&ev.payload).expect("event");
            seen.insert(e.resource_id);
        }
        if let Some(k) = killed_at {
            let after: Vec<&String> = acked
                .iter()
                .filter(|(_, t)| *t > k)
                .map(|(id, _)| id)
                .collect();
            if after.len() >= 64 && after.iter().any(|id| seen.contains(*id)) {
                break;
            }
        }
    }
    let killed_at = killed_at.expect("a server was killed");
    let first_after = acked
        .iter()
        .filter(|(_, t)| *t > killed_at)
        .map(|(_, t)| *t - killed_at)
        .min()
        .unwrap_or_default();
    // How long the failover took depends on the machine's load: shown, not asserted.
    println!(
        "{} creates acknowledged; first after the kill in {first_after:?}",
        acked.len()
    );
    // No acknowledged create lost.
    let mut stored: BTreeSet<String> = BTreeSet::new();
    loop {
        let page = c
            .collection("power")
            .list(&ListQuery {
                skip: stored.len() as u64,
                limit: Some(10_000),
                ..ListQuery::default()
            })
            .await
            .expect("list");
        let got = page.items.len();
        stored.extend(page.items.into_iter().map(|r| r.resource_id));
        if got < 10_000 {
            break;
        }
    }
    let lost: Vec<&String> = acked
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(lost.is_empty(), "{} acknowledged creates lost", lost.len());
    // Events keep arriving: 32 creates made now, with the subscription back, each has its
    // event.
    let mut late = Vec::new();
    for i in 0..32 {
        let made = power
            .create(None, json!({"late": i}))
            .await
            .expect("a create after the failover");
        late.push(made.resource_id);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while late.iter().any(|id| !seen.contains(id)) && Instant::now() < deadline {
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        {
            let e: ResourceEvent = serde_json::from_slice(&ev.payload).expect("event");
            seen.insert(e.resource_id);
        }
    }
    let missing = late.iter().filter(|id| !seen.contains(*id)).count();
    println!(
        "events: {} seen; {missing} of {} late creates without one",
        seen.len(),
        late.len()
    );
    assert_eq!(missing, 0, "events stopped arriving after the kill");
    c.shutdown().await;
}
