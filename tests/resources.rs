//! The resource layer across OS processes on ZeroMQ: a `power` service on the embedded store,
//! the squaring worker in another process, and this test as the client node; two providers
//! sharing a MongoDB database (nx-27017) spread requests and survive losing one.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{example, free_port, serve_power, spawn};
use futures::stream::{self, StreamExt};
use serde_json::json;
use zeroservices::core::{
    discovery::StaticDiscovery, medium::ZmqConfig, query::ListQuery, resources::ResourceEvent, Node,
};

const HB: Duration = Duration::from_millis(200);

async fn client(seeds: &[u16], timeout: Duration) -> Node {
    let seeds: Vec<String> = seeds
        .iter()
        .map(|p| format!("tcp://127.0.0.1:{p}"))
        .collect();
    Node::builder("client")
        .zmq(ZmqConfig::loopback())
        .discovery(StaticDiscovery::new(seeds))
        .heartbeat(HB)
        .timeout(timeout)
        .start()
        .await
        .expect("client node")
}

async fn wait_providers(node: &Node, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.directory().providers("power").len() < n {
        assert!(
            Instant::now() < deadline,
            "waited 10 s for {n} providers of power"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_powers_are_squared_across_processes_and_survive_sigkill() {
    let dir = std::env::temp_dir().join(format!("zs-power-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = format!("embedded:{}", dir.display());
    let port = free_port();
    let a = serve_power("service-a", port, &store);
    let mut w = Command::new(example("power"));
    w.args([
        "--role",
        "worker",
        "--discovery",
        &format!("static:127.0.0.1:{port}"),
        "--bind",
        "127.0.0.1",
        "--heartbeat-ms",
        "200",
    ]);
    let _worker = spawn("worker-b", w);

    let c = client(&[port], Duration::from_secs(5)).await;
    wait_providers(&c, 1).await;
    let mut events = c.subscribe("power");
    let power = c.collection("power");

    const N: i64 = 1000;
    let created: Vec<String> = stream::iter(0..N)
        .map(|i| {
            let power = power.clone();
            async move {
                power
                    .create(None, json!({"value": i, "status": "pending"}))
                    .await
                    .expect("create")
                    .resource_id
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(created.iter().collect::<HashSet<_>>().len(), N as usize);

    // Every power reaches done with the right result.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending = power
            .list(&ListQuery {
                filter: serde_json::from_value(json!({"status": "pending"})).expect("filter"),
                limit: Some(0),
                ..ListQuery::default()
            })
            .await
            .expect("list")
            .total;
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} powers still pending after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = power
        .list(&ListQuery {
            limit: Some(10_000),
            ..ListQuery::default()
        })
        .await
        .expect("list all");
    assert_eq!(all.total, N as u64);
    for r in &all.items {
        let v = r.resource_data["value"].as_i64().expect("value");
        assert_eq!(r.resource_data["status"], "done", "{r:?}");
        assert_eq!(r.resource_data["result"].as_i64(), Some(v * v), "{r:?}");
    }

    // The subscription saw every event exactly once, in seq order, with no gap.
    let mut seen: BTreeMap<String, Vec<ResourceEvent>> = BTreeMap::new();
    let mut creates = HashSet::new();
    let mut patched = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (creates.len() < N as usize || patched.len() < N as usize) && Instant::now() < deadline {
        let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await else {
            continue;
        };
        let e: ResourceEvent = serde_json::from_slice(&ev.payload).expect("event JSON");
        match e.action.as_str() {
            "create" => assert!(
                creates.insert(e.resource_id.clone()),
                "create of {} seen twice",
                e.resource_id
            ),
            "patch" => {
                if e.resource_data
                    .as_ref()
                    .is_some_and(|d| d["status"] == "done")
                {
                    patched.insert(e.resource_id.clone());
                }
            }
            other => panic!("unexpected {other} event"),
        }
        seen.entry(e.node_id.clone()).or_default().push(e);
    }
    assert_eq!(creates.len(), N as usize, "create events");
    assert_eq!(patched.len(), N as usize, "patch events to done");
    assert_eq!(events.dropped(), 0);
    for (node, evs) in &seen {
        let seqs: Vec<u64> = evs.iter().map(|e| e.seq).collect();
        let first = seqs[0];
        let want: Vec<u64> = (first..first + seqs.len() as u64).collect();
        assert_eq!(
            seqs, want,
            "events of {node} out of order, duplicated or missing"
        );
    }

    // SIGKILL the service and restart it on the same data: nothing acknowledged is lost.
    a.signal(9);
    drop(a);
    let _a2 = serve_power("service-a2", port, &store);
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match power
            .list(&ListQuery {
                limit: Some(10_000),
                ..ListQuery::default()
            })
            .await
        {
            Ok(p) => break p,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "service not back after 10 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(after.total, N as u64, "resources lost across SIGKILL");
    let ids: HashSet<&String> = after.items.iter().map(|r| &r.resource_id).collect();
    assert!(created.iter().all(|id| ids.contains(id)));
    assert!(after
        .items
        .iter()
        .all(|r| r.resource_data["status"] == "done"));
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two providers of one collection share its store (here a MongoDB database; providers with
/// separate stores refuse, see `scale_out.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_over_two_providers_and_survive_losing_one() {
    let dir = std::env::temp_dir().join(format!("zs-spread-nx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = free_port();
    let _nx = common::nx::start_nx(db, &dir);
    let store = format!("mongodb://127.0.0.1:{db}/spread");
    let (p1, p2) = (free_port(), free_port());
    let _a1 = serve_power("provider-1", p1, &store);
    let a2 = serve_power("provider-2", p2, &store);
    let timeout = Duration::from_secs(1);
    let c = client(&[p1, p2], timeout).await;
    wait_providers(&c, 2).await;
    let mut events = c.subscribe("power");
    let power = c.collection("power");
    // A subscription reaches the publishers asynchronously (ZeroMQ's slow joiner): create
    // probes until events arrive from both providers, then count from a clean slate.
    let mut probed: BTreeSet<String> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while probed.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "events never came from both providers"
        );
        power
            .create(None, json!({"probe": true}))
            .await
            .expect("probe");
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        {
            let e: ResourceEvent = serde_json::from_slice(&ev.payload).expect("event JSON");
            probed.insert(e.node_id);
        }
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {}
    for i in 0..40 {
        power.create(None, json!({"i": i})).await.expect("create");
    }
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    while by_node.values().sum::<usize>() < 40 {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("event")
            .expect("open");
        let e: ResourceEvent = serde_json::from_slice(&ev.payload).expect("event JSON");
        *by_node.entry(e.node_id).or_default() += 1;
    }
    assert_eq!(by_node.len(), 2, "creates not spread: {by_node:?}");
    assert!(
        by_node.values().all(|n| *n >= 10),
        "uneven spread: {by_node:?}"
    );

    let killed = Instant::now();
    a2.signal(9);
    let mut failures_after_detection = 0;
    let mut slowest = Duration::ZERO;
    let mut ok = 0;
    while killed.elapsed() < Duration::from_secs(3) {
        let start = Instant::now();
        let r = power.create(None, json!({"after": true})).await;
        let took = start.elapsed();
        slowest = slowest.max(took);
        assert!(
            took < timeout + Duration::from_millis(500),
            "a request hung for {took:?}"
        );
        match r {
            Ok(_) => ok += 1,
            Err(e) => {
                if killed.elapsed() > HB * 4 + took {
                    failures_after_detection += 1;
                }
                eprintln!("during failover: {e} after {took:?}");
            }
        }
    }
    eprintln!("failover: {ok} creates succeeded, slowest {slowest:?}");
    assert_eq!(
        failures_after_detection, 0,
        "requests failed after the dead provider was detected"
    );
    assert!(ok > 50, "only {ok} requests succeeded");
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
