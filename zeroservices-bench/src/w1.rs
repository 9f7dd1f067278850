//! W1 — remote request/reply: a service process holding item `"1"` and a client process
//! calling `get` on it, in three implementations:
//! - `resource`: the resource layer (`Node::collection("items").get("1")` → MemoryCollection);
//! - `core`: the node's request/reply (`Node::request` → `Service::on_message`);
//! - `raw`: libzmq alone (the `zmq` crate, blocking calls), same frames (DEALER → ROUTER), no
//!   framework: the baseline the medium is measured against;
//! - `nats-resource`, `nats-core`: the first two on the NATS medium, and `nats-raw`: bare
//!   async-nats request/reply, their baseline (see [`crate::nats`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use serde_json::{json, Value};
use zeroservices_core::{
    discovery::StaticDiscovery, medium::ZmqConfig, resources::Collection, store::MemoryCollection,
    CollectionSpec, Node, NodeBuilder, NodeHandle, Service,
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

/// The medium of an implementation: NATS for `nats-*`, ZeroMQ on `port` otherwise.
fn on_medium(b: NodeBuilder, imp: &str, port: u16) -> NodeBuilder {
    if imp.starts_with("nats-") {
        b.nats(crate::nats::config())
    } else {
        b.zmq(zmq_on(port))
    }
}

struct ItemService(Value);

#[async_trait]
impl Service for ItemService {
    async fn on_message(&self, _node: &NodeHandle, msg: Value) -> zeroservices_core::Result<Value> {
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
        "resource" | "resource-create" | "nats-resource" => {
            let store = Arc::new(MemoryCollection::new());
            store.create(Some("1".into()), item).await?;
            let node = on_medium(Node::builder("w1-service"), imp, port)
                .collection(CollectionSpec::new("items", store))
                .start()
                .await?;
            emit(json!({"event": "ready", "node_id": node.node_id()}));
            std::future::pending::<()>().await;
            Ok(())
        }
        "core" | "nats-core" => {
            let node = on_medium(Node::builder("w1-service"), imp, port)
                .service(ItemService(item))
                .start()
                .await?;
            emit(json!({"event": "ready", "node_id": node.node_id()}));
            std::future::pending::<()>().await;
            Ok(())
        }
        "raw" => tokio::task::spawn_blocking(move || raw_service(port)).await?,
        "nats-raw" => crate::nats::raw_service(ITEM).await,
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
    Resource(NodeHandle),
    Core(NodeHandle, String),
    NatsRaw(async_nats::Client),
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
            Caller::NatsRaw(c) => crate::nats::raw_call(c, check).await,
        }
    }
}

/// What a W1 client measures, from the `BENCH_*` variables.
struct Plan {
    port: u16,
    mode: String,
    count: usize,
    warmup: usize,
    duration: Duration,
    inflight: usize,
    max_count: usize,
    cap: Duration,
    peer: String,
}

impl Plan {
    fn from_env(imp: &str) -> Plan {
        Plan {
            port: env_or("BENCH_PORT", 0),
            mode: env_or("BENCH_MODE", "latency".to_string()),
            count: env_or("BENCH_COUNT", 20_000),
            warmup: env_or("BENCH_WARMUP", 1_000),
            duration: Duration::from_secs_f64(env_or("BENCH_DURATION_S", 10.0)),
            inflight: env_or("BENCH_INFLIGHT", 64),
            max_count: env_or("BENCH_MAX_COUNT", 5_000_000),
            cap: Duration::from_secs_f64(env_or("BENCH_TIME_CAP_S", 60.0)),
            peer: format!("w1-{imp}"),
        }
    }

    /// Emits the result line of a latency run.
    fn latency_result(&self, mut samples: Vec<Duration>, errors: usize, elapsed: f64) {
        emit(
            json!({"event": "result", "peer": self.peer, "mode": "latency", "completed": samples.len(), "errors": errors,
                    "elapsed_s": elapsed, "latency": summary(&mut samples)}),
        );
    }

    /// Emits the result line of a throughput run.
    fn throughput_result(&self, mut samples: Vec<Duration>, errors: usize, elapsed: f64) {
        let n = samples.len();
        emit(
            json!({"event": "result", "peer": self.peer, "mode": "throughput", "inflight": self.inflight, "completed": n, "errors": errors,
                    "elapsed_s": elapsed, "req_per_s": n as f64 / elapsed, "latency": summary(&mut samples)}),
        );
    }
}

pub(crate) async fn client(imp: &str) -> anyhow::Result<()> {
    let plan = Plan::from_env(imp);
    if imp == "raw" {
        return tokio::task::spawn_blocking(move || raw_client(&plan)).await?;
    }
    if imp == "nats-raw" {
        let caller = Caller::NatsRaw(crate::nats::connect().await?);
        return measure(&caller, &plan).await;
    }
    let builder = if imp.starts_with("nats-") {
        Node::builder("w1-client").nats(crate::nats::config())
    } else {
        Node::builder("w1-client")
            .zmq(ZmqConfig::loopback())
            .discovery(StaticDiscovery::new([format!(
                "tcp://127.0.0.1:{}",
                plan.port
            )]))
    };
    let node = builder
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
    let caller = if imp.ends_with("resource") {
        Caller::Resource(node.clone())
    } else {
        Caller::Core(node.clone(), service_id)
    };
    measure(&caller, &plan).await?;
    node.shutdown().await;
    Ok(())
}

/// Warm-up, `ready`, then the plan's measurement.
async fn measure(caller: &Caller, plan: &Plan) -> anyhow::Result<()> {
    for _ in 0..plan.warmup {
        caller.call().await;
    }
    emit(json!({"event": "ready"}));
    if plan.mode == "latency" {
        latency(caller, plan).await;
    } else {
        throughput(caller, plan).await?;
    }
    Ok(())
}

/// W1a: one request at a time.
async fn latency(caller: &Caller, plan: &Plan) {
    let mut samples = Vec::with_capacity(plan.count);
    let mut errors = 0;
    let start = Instant::now();
    for _ in 0..plan.count {
        if start.elapsed() > plan.cap {
            break;
        }
        let t = Instant::now();
        if !caller.call().await {
            errors += 1;
        }
        samples.push(t.elapsed());
    }
    plan.latency_result(samples, errors, start.elapsed().as_secs_f64());
}

/// W1b: `inflight` requests kept in flight for the duration.
async fn throughput(caller: &Caller, plan: &Plan) -> anyhow::Result<()> {
    let start = Instant::now();
    let (limit, per_task) = (
        plan.duration.min(plan.cap),
        plan.max_count / plan.inflight.max(1),
    );
    let tasks: Vec<_> = (0..plan.inflight)
        .map(|_| {
            let c = caller.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut errors = 0usize;
                while start.elapsed() < limit && samples.len() < per_task {
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
    plan.throughput_result(all, errors, (last - start).as_secs_f64());
    Ok(())
}

/// A raw libzmq DEALER speaking the ZeroServices request frames.
struct RawConn {
    socket: zmq::Socket,
    next: u64,
}

impl RawConn {
    const BODY: &'static [u8] = br#"{"action":"get","id":"1"}"#;

    fn send(&mut self) -> anyhow::Result<()> {
        self.next += 1;
        self.socket
            .send_multipart([&self.next.to_be_bytes()[..], b"request", Self::BODY], 0)?;
        Ok(())
    }

    fn recv_ok(&self) -> anyhow::Result<bool> {
        let frames = self.socket.recv_multipart(0)?;
        let v: Value = serde_json::from_slice(frames.get(2).map(|b| &b[..]).unwrap_or(b"null"))?;
        Ok(check(&v["data"]))
    }
}

fn raw_client(plan: &Plan) -> anyhow::Result<()> {
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::DEALER)?;
    socket.set_sndhwm(0)?;
    socket.set_rcvhwm(0)?;
    socket.connect(&format!("tcp://127.0.0.1:{}", plan.port))?;
    let mut conn = RawConn { socket, next: 0 };
    for _ in 0..plan.warmup {
        conn.send()?;
        conn.recv_ok()?;
    }
    emit(json!({"event": "ready"}));
    if plan.mode == "latency" {
        raw_latency(&mut conn, plan)
    } else {
        raw_throughput(&mut conn, plan)
    }
}

fn raw_latency(conn: &mut RawConn, plan: &Plan) -> anyhow::Result<()> {
    let mut samples = Vec::with_capacity(plan.count);
    let mut errors = 0;
    let start = Instant::now();
    for _ in 0..plan.count {
        if start.elapsed() > plan.cap {
            break;
        }
        let t = Instant::now();
        conn.send()?;
        if !conn.recv_ok()? {
            errors += 1;
        }
        samples.push(t.elapsed());
    }
    plan.latency_result(samples, errors, start.elapsed().as_secs_f64());
    Ok(())
}

/// `inflight` requests on one socket: send that many, then one new request per reply.
fn raw_throughput(conn: &mut RawConn, plan: &Plan) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut errors = 0;
    let mut sent_at = std::collections::VecDeque::new();
    for _ in 0..plan.inflight {
        conn.send()?;
        sent_at.push_back(Instant::now());
    }
    let mut samples = Vec::new();
    while !sent_at.is_empty() {
        if !conn.recv_ok()? {
            errors += 1;
        }
        if let Some(t) = sent_at.pop_front() {
            samples.push(t.elapsed());
        }
        if start.elapsed() < plan.duration.min(plan.cap)
            && samples.len() + sent_at.len() < plan.max_count
        {
            conn.send()?;
            sent_at.push_back(Instant::now());
        }
    }
    plan.throughput_result(samples, errors, start.elapsed().as_secs_f64());
    Ok(())
}
