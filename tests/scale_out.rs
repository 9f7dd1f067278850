//! Cluster semantics when users start more processes of a role: workers of one group process
//! each job once (and a killed worker's jobs run again), and events of one resource leave in
//! commit order under concurrent writes.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, example, free_port, serve_power, spawn_ready, Proc};
use futures::stream::{self, StreamExt};
use serde_json::json;
use zeroservices::core::{
    discovery::StaticDiscovery,
    medium::ZmqConfig,
    query::ListQuery,
    resources::{Action, ResourceEvent},
    Node,
};

const HB: Duration = Duration::from_millis(200);

fn worker(name: &str, port: u16) -> Proc {
    let mut w = Command::new(example("power"));
    w.args([
        "--role",
        "worker",
        "--bind",
        "127.0.0.1",
        "--heartbeat-ms",
        "200",
    ]);
    w.args(["--discovery", &format!("static:127.0.0.1:{port}")]);
    w.args(["--lease-ms", "2000", "--catch-up-ms", "1000"]);
    spawn_ready(name, w)
}

async fn client(port: u16) -> Node {
    let c = Node::builder("client")
        .zmq(ZmqConfig::loopback())
        .discovery(StaticDiscovery::new(vec![format!(
            "tcp://127.0.0.1:{port}"
        )]))
        .heartbeat(HB)
        .start()
        .await
        .expect("client node");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.directory().providers("power").is_empty() {
        assert!(Instant::now() < deadline, "no provider of power after 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c
}

async fn pending(c: &Node) -> u64 {
    let q = ListQuery {
        filter: serde_json::from_value(json!({"status": "pending"})).expect("filter"),
        limit: Some(0),
        ..ListQuery::default()
    };
    c.collection("power").list(&q).await.expect("list").total
}

/// Creates `n` pending powers (32 at a time); `after(i)` runs once `i` were sent.
async fn create_pending(c: &Node, n: usize, mut after: impl FnMut(usize)) {
    let power = c.collection("power");
    let mut creates = stream::iter(0..n)
        .map(|i| {
            let power = power.clone();
            async move {
                power
                    .create(None, json!({"value": i, "status": "pending"}))
                    .await
                    .expect("create")
            }
        })
        .buffer_unordered(32);
    let mut sent = 0;
    while creates.next().await.is_some() {
        sent += 1;
        after(sent);
    }
}

/// Waits until no power is pending (at most 60 s), then counts the patch events that set
/// `status: done`, per resource id, until `n` ids were seen and the stream is quiet.
async fn done_patches(
    c: &Node,
    events: &mut zeroservices::core::Subscription,
    n: usize,
) -> HashMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = pending(c).await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} powers still pending after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut done: HashMap<String, usize> = HashMap::new();
    let quiet = Duration::from_secs(2);
    while let Ok(Some(ev)) = tokio::time::timeout(quiet, events.recv()).await {
        let e: ResourceEvent = serde_json::from_slice(&ev.payload).expect("event JSON");
        if e.action == Action::Patch && e.resource_data.is_some_and(|d| d["status"] == "done") {
            *done.entry(e.resource_id).or_default() += 1;
        }
    }
    assert_eq!(
        events.dropped(),
        0,
        "the test's subscription dropped events"
    );
    assert_eq!(done.len(), n, "resources patched to done");
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_process_each_of_a_thousand_powers_once() {
    let port = free_port();
    let _service = serve_power("service", port, "memory");
    let _workers: Vec<Proc> = (0..3)
        .map(|i| worker(&format!("worker-{i}"), port))
        .collect();
    let c = client(port).await;
    let mut events = c.subscribe("power");
    const N: usize = 1000;
    create_pending(&c, N, |_| {}).await;
    let done = done_patches(&c, &mut events, N).await;
    let twice: Vec<(&String, &usize)> = done.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} powers processed more than once, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_workers_jobs_run_again_and_only_those_may_run_twice() {
    let port = free_port();
    let _service = serve_power("service", port, "memory");
    let mut workers: Vec<Proc> = (0..3)
        .map(|i| worker(&format!("worker-{i}"), port))
        .collect();
    let c = client(port).await;
    let mut events = c.subscribe("power");
    const N: usize = 1000;
    let victim = workers.remove(0);
    let mut victim = Some(victim);
    create_pending(&c, N, |sent| {
        if sent == N / 3 {
            if let Some(v) = victim.take() {
                v.signal(9);
            }
        }
    })
    .await;
    let done = done_patches(&c, &mut events, N).await;
    let twice = done.values().filter(|n| **n > 1).count();
    println!("SIGKILL of one of 3 workers mid-run: {twice} of {N} powers processed twice");
    // Only jobs in flight at the kill can run twice: at most the worker's 64 callbacks.
    assert!(twice <= 64, "{twice} powers processed twice");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_of_one_resource_publish_in_commit_order() {
    let port = free_port();
    let _service = serve_power("service", port, "memory");
    let c = client(port).await;
    let mut events = c.subscribe("power");
    let power = c.collection("power");
    power
        .create(Some("counter"), json!({"n": 0}))
        .await
        .expect("create");
    const CLIENTS: usize = 32;
    const EACH: usize = 200;
    stream::iter(0..CLIENTS * EACH)
        .map(|_| {
            let power = power.clone();
            async move {
                power
                    .patch("counter", json!({"$inc": {"n": 1}}))
                    .await
                    .expect("patch")
            }
        })
        .buffer_unordered(CLIENTS)
        .collect::<Vec<_>>()
        .await;
    let mut by_seq: BTreeMap<u64, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while by_seq.len() < CLIENTS * EACH {
        assert!(Instant::now() < deadline, "{} patch events", by_seq.len());
        let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(5), events.recv()).await else {
            continue;
        };
        let e: ResourceEvent = serde_json::from_slice(&ev.payload).expect("event JSON");
        if e.action == Action::Patch {
            let n = e.resource_data.and_then(|d| d["n"].as_i64()).expect("n");
            by_seq.insert(e.seq, n);
        }
    }
    let ns: Vec<i64> = by_seq.values().copied().collect();
    let inversions = ns.windows(2).filter(|w| w[1] <= w[0]).count();
    assert_eq!(
        inversions, 0,
        "n does not increase with seq at {inversions} places"
    );
    assert_eq!(ns.last().copied(), Some((CLIENTS * EACH) as i64));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_provider_with_its_own_store_refuses_the_collection() {
    let base = std::env::temp_dir().join(format!("zs-split-{}", std::process::id()));
    let (pa, pb) = (free_port(), free_port());
    let _a = serve_power(
        "first",
        pa,
        &format!("embedded:{}", base.join("a").display()),
    );
    std::thread::sleep(Duration::from_millis(50)); // started strictly later
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "second",
        "--no-http",
        "--collection",
        "power",
    ]);
    c.args(["--store", &format!("embedded:{}", base.join("b").display())]);
    c.args(["--discovery", &format!("static:127.0.0.1:{pa}")]);
    c.args(["--bind", "127.0.0.1", "--router-port", &pb.to_string()]);
    c.args(["--heartbeat-ms", "200"]);
    let _b = spawn_ready("second", c);

    // `nodes` shows the refusal with its reason.
    let seen = common::eventually(
        "the second provider's refusal",
        Duration::from_secs(10),
        || {
            let mut n = Command::new(bin());
            n.args(["nodes", "--json", "--wait", "0.5", "--heartbeat-ms", "200"]);
            n.args([
                "--discovery",
                &format!("static:127.0.0.1:{pb}"),
                "--bind",
                "127.0.0.1",
            ]);
            let v = common::nodes_json(n);
            let second = v
                .as_array()?
                .iter()
                .find(|p| p["name"] == "second")?
                .clone();
            second["refused"]["power"].is_string().then_some(second)
        },
    );
    let why = seen["refused"]["power"].as_str().unwrap_or_default();
    assert!(why.contains("first") && why.contains("split"), "{why}");
    assert!(
        !seen["collections"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "power")),
        "{seen}"
    );

    // A client that knows both sends every request to the first: each create is found.
    let c = Node::builder("client")
        .zmq(ZmqConfig::loopback())
        .discovery(StaticDiscovery::new(vec![
            format!("tcp://127.0.0.1:{pa}"),
            format!("tcp://127.0.0.1:{pb}"),
        ]))
        .heartbeat(HB)
        .start()
        .await
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.directory().peers().len() < 2 {
        assert!(Instant::now() < deadline, "client never saw both nodes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.directory().providers("power").len(), 1);
    let power = c.collection("power");
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            power
                .create(None, json!({"i": i}))
                .await
                .expect("create")
                .resource_id,
        );
    }
    for id in &ids {
        power
            .get(id)
            .await
            .unwrap_or_else(|e| panic!("GET {id}: {e}"));
    }
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(&base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_maximum_holds_under_concurrent_increments_and_deep_paths_are_refused() {
    let dir = std::env::temp_dir().join(format!("zs-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let schema = dir.join("power.schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"n": {"type": "integer", "maximum": 10}}}"#,
    )
    .expect("schema");
    let port = free_port();
    let mut s = Command::new(bin());
    s.args(["serve", "--name", "schema", "--no-http"]);
    s.args(["--collection", &format!("power={}", schema.display())]);
    s.args([
        "--store",
        &format!("embedded:{}", dir.join("data").display()),
    ]);
    s.args(["--discovery", "none", "--bind", "127.0.0.1"]);
    s.args(["--router-port", &port.to_string(), "--heartbeat-ms", "200"]);
    let _service = spawn_ready("schema", s);
    let c = client(port).await;
    let power = c.collection("power");
    power
        .create(Some("capped"), json!({"n": 0}))
        .await
        .expect("create");
    let results: Vec<bool> = stream::iter(0..20)
        .map(|_| {
            let power = power.clone();
            async move {
                power
                    .patch("capped", json!({"$inc": {"n": 1}}))
                    .await
                    .is_ok()
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let n = power.get("capped").await.expect("get").resource_data["n"].clone();
    assert_eq!(n, json!(10), "the stored value");
    assert_eq!(
        results.iter().filter(|ok| **ok).count(),
        10,
        "accepted increments"
    );

    // A $set path deeper than a record may nest: refused, and the collection still lists.
    let deep = vec!["a"; 200].join(".");
    let refused = power.patch("capped", json!({"$set": {deep: 1}})).await;
    assert!(
        matches!(refused, Err(zeroservices::core::Error::BadRequest(_))),
        "{refused:?}"
    );
    let page = power.list(&ListQuery::default()).await.expect("list");
    assert_eq!(page.total, 1);
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
