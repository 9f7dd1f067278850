//! W1 — remote request/reply: a service process holding item `"1"` and a client process
//! calling `get` on it, in three implementations:
//! - `resource`: the resource layer (`Node::collection("items").get("1")` → MemoryCollection);
//! - `core`: the node's request/reply (`Node::request` → `Service::on_message`);
//! - `raw`: libzmq alone (the `zmq` crate, blocking calls), same frames (DEALER → ROUTER), no
//!   framework: the baseline the medium is measured against.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use serde_json::{json, Value};
use zeroservices_core::{
    Collection, CollectionSpec, MemoryCollection, Node, Service, StaticDiscovery, ZmqConfig,
};

use crate::stats::{emit, env_or, exit_on_stdin_close_or_deadline, summary};

/// The 64-byte W1 item.
pub(crate) const ITEM: &str = r#"{"id":"1","name":"meter-0001","watts":1500,"online":true,"v":42}"#;

fn zmq_on(port: u16) -> ZmqConfig {
    ZmqConfig {
        router_port: port,
        ..ZmqConfig::loopback()
    }
}

struct ItemService(Value);

#[async_trait]
impl Service for ItemService {
    async fn on_message(&self, _node: &Node, msg: Value) -> zeroservices_core::Result<Value> {
        match (msg["action"].as_str(), msg["id"].as_str()) {
            (Some("get"), Some("1")) => Ok(self.0.clone()),
            _ => Err(zeroservices_core::Error::NotFound("no such item".into())),
        }
    }
}

pub(crate) async fn service(imp: &str) -> anyhow::Result<()> {
    let port: u16 = env_or("BENCH_PORT", 0);
    exit_on_stdin_close_or_deadline();
    let item: Value = serde_json::from_str(ITEM)?;
    match imp {
        "resource" | "resource-create" => {
            let store = Arc::new(MemoryCollection::new());
            store.create(Some("1".into()), item).await?;
            let node = Node::builder("w1-service")
                .zmq(zmq_on(port))
                .collection(CollectionSpec::new("items", store))
                .start()
                .await?;
            emit(json!({"event": "ready", "node_id": node.node_id()}));
            std::future::pending::<()>().await;
            Ok(())
        }
        "core" => {
            let node = Node::builder("w1-service")
                .zmq(zmq_on(port))
                .service(ItemService(item))
                .start()
                .await?;
            emit(json!({"event": "ready", "node_id": node.node_id()}));
            std::future::pending::<()>().await;
            Ok(())
        }
        "raw" => tokio::task::spawn_blocking(move || raw_service(port)).await?,
        other => bail!("unknown implementation {other}"),
    }
}

/// The raw libzmq ROUTER: parses each request, answers the pre-encoded item.
fn raw_service(port: u16) -> anyhow::Result<()> {
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER)?;
    router.set_sndhwm(0)?;
    router.set_rcvhwm(0)?;
    router.bind(&format!("tcp://127.0.0.1:{port}"))?;
    emit(json!({"event": "ready"}));
    let reply = format!(r#"{{"ok":true,"data":{ITEM}}}"#);
    loop {
        let frames = router.recv_multipart(0)?;
        let [ident, rid, _kind, body] = &frames[..] else {
            continue;
        };
        let _req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        router.send_multipart([&ident[..], &rid[..], b"reply", reply.as_bytes()], 0)?;
    }
}

fn check(v: &Value) -> bool {
    v["id"] == "1" && v["watts"] == 1500
}

/// One way of calling `get` for item 1.
#[derive(Clone)]
enum Caller {
    Resource(Node),
    Core(Node, String),
}

impl Caller {
    async fn call(&self) -> bool {
        match self {
            Caller::Resource(n) => n
                .collection("items")
                .get("1")
                .await
                .map(|r| check(&r.resource_data))
                .unwrap_or(false),
            Caller::Core(n, peer) => n
                .request(peer, json!({"action": "get", "id": "1"}))
                .await
                .map(|v| check(&v))
                .unwrap_or(false),
        }
    }
}

pub(crate) async fn client(imp: &str) -> anyhow::Result<()> {
    let port: u16 = env_or("BENCH_PORT", 0);
    let mode: String = env_or("BENCH_MODE", "latency".to_string());
    let count: usize = env_or("BENCH_COUNT", 20_000);
    let warmup: usize = env_or("BENCH_WARMUP", 1_000);
    let duration = Duration::from_secs_f64(env_or("BENCH_DURATION_S", 10.0));
    let inflight: usize = env_or("BENCH_INFLIGHT", 64);
    let max_count: usize = env_or("BENCH_MAX_COUNT", 5_000_000);
    let cap = Duration::from_secs_f64(env_or("BENCH_TIME_CAP_S", 60.0));
    let peer = format!("w1-{imp}");
    if imp == "raw" {
        return tokio::task::spawn_blocking(move || {
            raw_client(
                port, &mode, count, warmup, duration, inflight, max_count, cap, &peer,
            )
        })
        .await?;
    }
    let node = Node::builder("w1-client")
        .zmq(ZmqConfig::loopback())
        .discovery(StaticDiscovery::new([format!("tcp://127.0.0.1:{port}")]))
        .heartbeat(Duration::from_millis(200))
        .start()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let service_id = loop {
        if let Some(p) = node.directory().peers().into_iter().next() {
            break p.announcement.node_id;
        }
        if Instant::now() > deadline {
            bail!("service not discovered within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let caller = if imp == "resource" {
        Caller::Resource(node.clone())
    } else {
        Caller::Core(node.clone(), service_id)
    };
    for _ in 0..warmup {
        caller.call().await;
    }
    emit(json!({"event": "ready"}));
    if mode == "latency" {
        let mut samples = Vec::with_capacity(count);
        let mut errors = 0;
        let start = Instant::now();
        for _ in 0..count {
            if start.elapsed() > cap {
                break;
            }
            let t = Instant::now();
            if !caller.call().await {
                errors += 1;
            }
            samples.push(t.elapsed());
        }
        let elapsed = start.elapsed().as_secs_f64();
        emit(
            json!({"event": "result", "peer": peer, "mode": "latency", "completed": samples.len(), "errors": errors,
                    "elapsed_s": elapsed, "latency": summary(&mut samples)}),
        );
    } else {
        let start = Instant::now();
        let tasks: Vec<_> = (0..inflight)
            .map(|_| {
                let c = caller.clone();
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut errors = 0usize;
                    while start.elapsed() < duration.min(cap)
                        && samples.len() < max_count / inflight.max(1)
                    {
                        let t = Instant::now();
                        if !c.call().await {
                            errors += 1;
                        }
                        samples.push(t.elapsed());
                    }
                    (samples, errors, Instant::now())
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut errors = 0;
        let mut last = start;
        for t in tasks {
            let (s, e, end) = t.await.context("client task")?;
            all.extend(s);
            errors += e;
            last = last.max(end);
        }
        let elapsed = (last - start).as_secs_f64();
        let n = all.len();
        emit(
            json!({"event": "result", "peer": peer, "mode": "throughput", "inflight": inflight, "completed": n, "errors": errors,
                    "elapsed_s": elapsed, "req_per_s": n as f64 / elapsed, "latency": summary(&mut all)}),
        );
    }
    node.shutdown().await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn raw_client(
    port: u16,
    mode: &str,
    count: usize,
    warmup: usize,
    duration: Duration,
    inflight: usize,
    max_count: usize,
    cap: Duration,
    peer: &str,
) -> anyhow::Result<()> {
    let ctx = zmq::Context::new();
    let d = ctx.socket(zmq::DEALER)?;
    d.set_sndhwm(0)?;
    d.set_rcvhwm(0)?;
    d.connect(&format!("tcp://127.0.0.1:{port}"))?;
    let body: &[u8] = br#"{"action":"get","id":"1"}"#;
    let mut next: u64 = 0;
    let mut send = |d: &zmq::Socket| -> anyhow::Result<()> {
        next += 1;
        d.send_multipart([&next.to_be_bytes()[..], b"request", body], 0)?;
        Ok(())
    };
    let recv_ok = |d: &zmq::Socket| -> anyhow::Result<bool> {
        let frames = d.recv_multipart(0)?;
        let v: Value = serde_json::from_slice(frames.get(2).map(|b| &b[..]).unwrap_or(b"null"))?;
        Ok(check(&v["data"]))
    };
    for _ in 0..warmup {
        send(&d)?;
        recv_ok(&d)?;
    }
    emit(json!({"event": "ready"}));
    let mut errors = 0;
    if mode == "latency" {
        let mut samples = Vec::with_capacity(count);
        let start = Instant::now();
        for _ in 0..count {
            if start.elapsed() > cap {
                break;
            }
            let t = Instant::now();
            send(&d)?;
            if !recv_ok(&d)? {
                errors += 1;
            }
            samples.push(t.elapsed());
        }
        emit(
            json!({"event": "result", "peer": peer, "mode": "latency", "completed": samples.len(), "errors": errors,
                    "elapsed_s": start.elapsed().as_secs_f64(), "latency": summary(&mut samples)}),
        );
    } else {
        // 64 in flight on one socket: send 64, then one new request per reply.
        let start = Instant::now();
        let mut sent_at = std::collections::VecDeque::new();
        for _ in 0..inflight {
            send(&d)?;
            sent_at.push_back(Instant::now());
        }
        let mut samples = Vec::new();
        while !sent_at.is_empty() {
            if !recv_ok(&d)? {
                errors += 1;
            }
            if let Some(t) = sent_at.pop_front() {
                samples.push(t.elapsed());
            }
            if start.elapsed() < duration.min(cap) && samples.len() + sent_at.len() < max_count {
                send(&d)?;
                sent_at.push_back(Instant::now());
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let n = samples.len();
        emit(
            json!({"event": "result", "peer": peer, "mode": "throughput", "inflight": inflight, "completed": n, "errors": errors,
                    "elapsed_s": elapsed, "req_per_s": n as f64 / elapsed, "latency": summary(&mut samples)}),
        );
    }
    Ok(())
}
