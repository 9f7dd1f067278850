//! The product on the NATS medium (issue 16), each test on a `nats-server` of its own with
//! JetStream: the power demo split over processes, a worker group over a durable work queue,
//! and a websocket resume across an API node restart answered from the stream.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, example, free_port, names, nodes_json, spawn_ready, Proc};
use futures::stream::{self, StreamExt};
use futures::SinkExt as _;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use zeroservices::core::medium::NatsConfig;
use zeroservices::core::{
    query::ListQuery,
    resources::{Action, ResourceEvent},
    Node,
};
use zeroservices_testkit::nats::{temp_dir, NatsServer};

/// `power --role ROLE` on the NATS server at `url`, with more arguments.
fn power(role: &str, url: &str, extra: &[&str]) -> Proc {
    let mut c = Command::new(example("power"));
    c.args(["--role", role, "--medium", url, "--heartbeat-ms", "200"]);
    c.args(extra);
    spawn_ready(&format!("power-{role}"), c)
}

/// A client node on the NATS server, once it knows a provider of `power`.
async fn client(url: &str) -> Node {
    let c = Node::builder("client")
        .nats(NatsConfig::new([url]))
        .heartbeat(Duration::from_millis(200))
        .start()
        .await
        .expect("client node on NATS");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.directory().providers("power").is_empty() {
        assert!(Instant::now() < deadline, "no provider of power after 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c
}

async fn count(c: &Node, filter: Value) -> u64 {
    let q = ListQuery {
        limit: Some(0),
        ..ListQuery::filtered(&filter).expect("filter")
    };
    c.collection("power").list(&q).await.expect("list").total
}

/// Waits (at most 60 s) until `n` powers are done and none is pending.
async fn wait_all_done(c: &Node, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = count(c, json!({"status": "done"})).await;
        let pending = count(c, json!({"status": "pending"})).await;
        if done == n && pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s: {done} done, {pending} pending of {n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn store(dir: &std::path::Path) -> String {
    format!("embedded:{}", dir.join("store").display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_power_demo_split_over_three_processes_on_nats_turns_a_thousand_powers_done() {
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = temp_dir("nats-demo");
    let http = free_port();
    let _service = power("service", &url, &["--store", &store(&dir)]);
    let _worker = power("worker", &url, &[]);
    let _api = power("api", &url, &["--http", &format!("127.0.0.1:{http}")]);
    // Through the API process, as a user would: every create is one HTTP POST.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let wait_api = Instant::now();
    while agent
        .get(&format!("http://127.0.0.1:{http}/power?limit=0"))
        .call()
        .is_err()
    {
        assert!(
            wait_api.elapsed() < Duration::from_secs(10),
            "API never served power"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    const N: usize = 1000;
    let created: usize = stream::iter(0..N)
        .map(|i| {
            let agent = agent.clone();
            tokio::task::spawn_blocking(move || {
                agent
                    .post(&format!("http://127.0.0.1:{http}/power"))
                    .set("content-type", "application/json")
                    .send_string(&json!({"value": i, "status": "pending"}).to_string())
                    .map(|r| r.status())
                    .map_err(|e| e.to_string())
            })
        })
        .buffer_unordered(16)
        .filter(|r| std::future::ready(matches!(r, Ok(Ok(201)))))
        .count()
        .await;
    assert_eq!(created, N, "creates answered 201");
    let c = client(&url).await;
    wait_all_done(&c, N as u64).await;
    let seven = c
        .collection("power")
        .list(&ListQuery {
            filter: serde_json::from_value(json!({"value": 7})).expect("filter"),
            ..ListQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(seven.items[0].resource_data["result"], 49);
    // `nodes` finds the processes through NATS as well.
    let mut nodes = Command::new(bin());
    nodes.args(["nodes", "--json", "--wait", "1", "--medium", &url]);
    let listed = tokio::task::spawn_blocking(move || nodes_json(nodes))
        .await
        .expect("nodes");
    let found = names(&listed);
    for role in ["power-api", "power-service", "power-worker"] {
        assert!(found.iter().any(|n| n == role), "nodes lists {found:?}");
    }
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_on_nats_share_the_jobs_each_done_once() {
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = temp_dir("nats-workers");
    let _service = power("service", &url, &["--store", &store(&dir)]);
    let workers: Vec<Proc> = (0..3)
        .map(|_| power("worker", &url, &["--lease-ms", "5000"]))
        .collect();
    let c = client(&url).await;
    let mut events = c.subscribe("power");
    const N: usize = 600;
    let power = c.collection("power");
    stream::iter(0..N)
        .map(|i| {
            let power = power.clone();
            async move {
                power
                    .create(None, json!({"value": i, "status": "pending"}))
                    .await
                    .expect("create")
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    wait_all_done(&c, N as u64).await;
    // Each job done once: one `done` patch per power, by one worker.
    let mut patches: HashMap<String, usize> = HashMap::new();
    let mut by_worker: HashMap<String, BTreeSet<String>> = HashMap::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
        let e: ResourceEvent = serde_json::from_slice(&ev.payload).expect("event JSON");
        let Some(d) = e.resource_data.filter(|d| d["status"] == "done") else {
            continue;
        };
        if e.action == Action::Patch {
            *patches.entry(e.resource_id.clone()).or_default() += 1;
            let w = d["worker"].as_str().expect("worker").to_owned();
            by_worker.entry(w).or_default().insert(e.resource_id);
        }
    }
    assert_eq!(
        events.dropped(),
        0,
        "the test's subscription dropped events"
    );
    assert_eq!(patches.len(), N, "powers patched to done");
    let twice = patches.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "powers done more than once");
    let sizes: Vec<usize> = by_worker.values().map(BTreeSet::len).collect();
    println!("jobs per worker: {sizes:?}");
    assert_eq!(
        by_worker.len(),
        workers.len(),
        "every worker took a share: {sizes:?}"
    );
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(http: u16) -> Ws {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{http}/realtime")).await {
            Ok((ws, _)) => return ws,
            Err(e) => assert!(Instant::now() < deadline, "websocket: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drain(ws: &mut Ws, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(quiet, ws.next()).await {
        if let Message::Text(t) = m {
            out.push(serde_json::from_str(t.as_str()).unwrap_or(Value::Null));
        }
    }
    out
}

fn api(url: &str, http: u16) -> Proc {
    power("api", url, &["--http", &format!("127.0.0.1:{http}")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_resumes_across_an_api_restart_from_jetstream() {
    let nats = NatsServer::start();
    let url = nats.url();
    let dir: PathBuf = temp_dir("nats-resume");
    let http = free_port();
    let _service = power("service", &url, &["--store", &store(&dir)]);
    let mut api_proc = api(&url, http);
    let c = client(&url).await;
    let power = c.collection("power");
    // Seen live: one event, its (node_id, seq) kept.
    let mut ws = ws_connect(http).await;
    ws.send(Message::text(
        json!({"type": "subscribe", "topics": ["power"]}).to_string(),
    ))
    .await
    .expect("subscribe");
    drain(&mut ws, Duration::from_millis(300)).await;
    power.create(None, json!({"v": 0})).await.expect("create");
    let seen = drain(&mut ws, Duration::from_millis(500)).await;
    let ev = seen
        .iter()
        .find(|m| m["type"] == "event")
        .unwrap_or_else(|| panic!("no live event: {seen:?}"));
    let (node, seq) = (
        ev["data"]["node_id"].as_str().expect("node_id").to_owned(),
        ev["data"]["seq"].as_u64().expect("seq"),
    );
    drop(ws);
    // The API node dies; three creates happen while it is down; it comes back.
    api_proc.signal(9);
    api_proc.wait_exit(Duration::from_secs(5));
    for v in 1..=3 {
        power.create(None, json!({"v": v})).await.expect("create");
    }
    let _api = api(&url, http);
    let mut ws = ws_connect(http).await;
    ws.send(Message::text(
        json!({"type": "subscribe", "topics": ["power"], "since": {node.clone(): seq}}).to_string(),
    ))
    .await
    .expect("resume");
    let got = drain(&mut ws, Duration::from_secs(2)).await;
    assert!(
        !got.iter().any(|m| m["type"] == "resync"),
        "resync instead of a replay from JetStream: {got:?}"
    );
    let vs: Vec<i64> = got
        .iter()
        .filter(|m| m["type"] == "event")
        .map(|m| m["data"]["resource_data"]["v"].as_i64().expect("v"))
        .collect();
    assert_eq!(
        vs,
        vec![1, 2, 3],
        "missed events replayed in order, once: {got:?}"
    );
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_nats_serves_its_collection_to_other_nodes_and_a_missing_server_is_a_clear_error()
{
    let nats = NatsServer::start();
    let url = nats.url();
    let mut s = Command::new(bin());
    s.args([
        "serve",
        "--name",
        "notes-svc",
        "--no-http",
        "--collection",
        "power",
    ]);
    s.args([
        "--store",
        "memory",
        "--medium",
        &url,
        "--heartbeat-ms",
        "200",
    ]);
    let _serve = spawn_ready("serve", s);
    let c = client(&url).await;
    let mut events = c.subscribe("power");
    // The subscription reaches the server asynchronously: probes until one's event arrives,
    // then drains up to the last probe's (one publisher: its events come in order).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = 0;
    let mut seen = None;
    while seen.is_none() {
        assert!(Instant::now() < deadline, "no probe event within 10 s");
        last += 1;
        c.collection("power")
            .create(Some(&format!("probe-{last}")), json!({"probe": last}))
            .await
            .expect("probe create");
        seen = tokio::time::timeout(Duration::from_millis(200), events.recv())
            .await
            .ok()
            .flatten();
    }
    while let Some(ev) = seen {
        if ev.topic.ends_with(&*format!(".probe-{last}")) {
            break;
        }
        seen = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("the last probe's event");
    }
    let made = c
        .collection("power")
        .create(Some("a b.c*>~"), json!({"n": 1}))
        .await
        .expect("create through NATS");
    assert_eq!(made.resource_id, "a b.c*>~");
    // Its event travels on a subject with the id encoded, and arrives with the id as it is.
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("event within 5 s")
        .expect("event");
    assert_eq!(&*ev.topic, "power.create.a b.c*>~");
    let got = c.collection("power").get("a b.c*>~").await.expect("get");
    assert_eq!(got.resource_data["n"], 1);
    let e = c
        .collection("nothing")
        .get("x")
        .await
        .expect_err("unknown collection");
    assert!(matches!(e, zeroservices::core::Error::NotFound(_)), "{e:?}");
    c.shutdown().await;
    // No server there: the command fails at once and says where it tried.
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin())
            .args([
                "serve",
                "--no-http",
                "--collection",
                "power",
                "--store",
                "memory",
            ])
            .args(["--medium", &dead])
            .output()
            .expect("run serve")
    })
    .await
    .expect("serve");
    assert!(
        !out.status.success(),
        "serve without a NATS server succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to NATS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_with_other_stream_flags_leaves_the_existing_stream_as_it_is() {
    use zeroservices::core::medium::NatsMedium;
    let nats = NatsServer::start();
    let mut first = NatsConfig::new([nats.url()]);
    first.stream_max_msgs = 500;
    let (a, _a_inbox) = NatsMedium::connect(first).await.expect("first node");
    // A later node with the defaults (1,000,000 events) must not change the stream.
    let later = NatsConfig::new([nats.url()]);
    let name = later.stream_name();
    let (_b, _b_inbox) = NatsMedium::connect(later).await.expect("later node");
    let js = async_nats::jetstream::new(a.client());
    let mut stream = js.get_stream(&name).await.expect("stream");
    let info = stream.info().await.expect("info");
    assert_eq!(
        info.config.max_messages, 500,
        "the stream's limit was changed"
    );
}
