//! W3 — REST + realtime: HTTP servers (`all`: one node with the `power` memory collection;
//! `all-embedded`: the same on the embedded store in a fresh temporary directory; `service` + `api`: the same split over two processes; `baseline`: a bare axum handler with
//! fixed bodies of the same size), an HTTP/1.1 keep-alive load generator, and the W3c realtime
//! client (16 websockets, sequential creates, POST → event latency).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use zeroservices_core::{
    discovery::StaticDiscovery,
    medium::ZmqConfig,
    resources::Collection,
    store::{EmbeddedStore, MemoryCollection},
    CollectionSpec, Node, NodeType,
};
use zeroservices_http::{serve, HttpConfig};

use crate::stats::{emit, env_or, exit_on_stdin_close_or_deadline, summary};

/// The 63-byte W3 create body.
pub(crate) const BODY: &str = r#"{"name":"meter-0001","watts":1500,"online":true,"site":"lab-a"}"#;

pub(crate) async fn server(mode: &str) -> anyhow::Result<()> {
    let port: u16 = env_or("BENCH_PORT", 0);
    exit_on_stdin_close_or_deadline();
    let http = async |node: Node| -> anyhow::Result<()> {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        emit(json!({"event": "ready", "http": l.local_addr()?.to_string()}));
        serve(
            l,
            node.handle(),
            HttpConfig::default(),
            None,
            std::future::pending(),
        )
        .await?;
        Ok(())
    };
    let all = async |power: Arc<dyn Collection>| -> anyhow::Result<()> {
        let node = Node::builder("w3-all")
            .zmq(ZmqConfig::loopback())
            .collection(CollectionSpec::new("power", power))
            .start()
            .await?;
        http(node).await
    };
    match mode {
        "all" => all(Arc::new(MemoryCollection::new())).await,
        "all-embedded" => {
            let dir = std::env::temp_dir().join(format!("zs-w3-embedded-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let store = EmbeddedStore::open(&dir)?;
            // The open database file lives on (and is fsynced as usual) after its directory is
            // unlinked, so nothing is left behind however the harness ends this process.
            std::fs::remove_dir_all(&dir)?;
            all(Arc::new(store.collection("power"))).await
        }
        "service" => {
            let node = Node::builder("w3-service")
                .zmq(ZmqConfig {
                    router_port: port,
                    ..ZmqConfig::loopback()
                })
                .collection(CollectionSpec::new(
                    "power",
                    Arc::new(MemoryCollection::new()),
                ))
                .start()
                .await?;
            emit(json!({"event": "ready"}));
            let _keep = node;
            std::future::pending::<()>().await;
            Ok(())
        }
        "api" => {
            let seed: u16 = env_or("BENCH_SEED_PORT", 0);
            let node = Node::builder("w3-api")
                .node_type(NodeType::Api)
                .zmq(ZmqConfig::loopback())
                .discovery(StaticDiscovery::new([format!("tcp://127.0.0.1:{seed}")]))
                .heartbeat(Duration::from_millis(200))
                .start()
                .await?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while node.directory().providers("power").is_empty() {
                if Instant::now() > deadline {
                    bail!("power provider not discovered");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            http(node).await
        }
        "baseline" => baseline(port).await,
        other => bail!("unknown mode {other}"),
    }
}

/// A bare axum server answering create and get with the framework's status codes and body
/// sizes.
async fn baseline(port: u16) -> anyhow::Result<()> {
    let resource = json!({"resource_id": "0123456789abcdef0123456789abcdef", "resource_data": serde_json::from_str::<Value>(BODY)?}).to_string();
    let (a, b) = (resource.clone(), resource);
    let app = Router::new()
        .route(
            "/power",
            post(move || {
                let r = a.clone();
                async move {
                    (
                        StatusCode::CREATED,
                        [("content-type", "application/json")],
                        r,
                    )
                }
            }),
        )
        .route(
            "/power/{id}",
            get(move || {
                let r = b.clone();
                async move { ([("content-type", "application/json")], r) }
            }),
        );
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    emit(json!({"event": "ready", "http": l.local_addr()?.to_string()}));
    axum::serve(l, app).await?;
    Ok(())
}

/// Lifts the open-file limit to `want` (up to the hard limit), for many websockets.
fn raise_fd_limit(want: u64) {
    // `ulimit -n` through the shell would not affect this process; use prlimit on ourselves.
    let _ = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={want}:{want}"),
        ])
        .status();
}

/// Reads one HTTP/1.1 response; returns its status.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?;
            let status: u16 = head.get(9..12).context("status line")?.parse()?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .map(|(_, v)| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let mut chunk = [0u8; 16384];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    bail!("connection closed");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let mut chunk = [0u8; 16384];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn request(method: &str, path: &str, body: &str) -> Vec<u8> {
    if body.is_empty() {
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
    } else {
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }
}

/// `wrk`-like load: `conns` keep-alive connections for `secs` seconds after `warm` seconds.
pub(crate) async fn load(
    url: &str,
    method: &str,
    path: &str,
    conns: usize,
    warm: f64,
    secs: f64,
    expect: u16,
) -> anyhow::Result<()> {
    let addr = url.trim_start_matches("http://").to_owned();
    let req = Arc::new(request(
        method,
        path,
        if method == "POST" { BODY } else { "" },
    ));
    let run = |secs: f64| {
        let (addr, req) = (addr.clone(), req.clone());
        async move {
            let stop = Instant::now() + Duration::from_secs_f64(secs);
            let tasks: Vec<_> = (0..conns)
                .map(|_| {
                    let (addr, req) = (addr.clone(), req.clone());
                    tokio::spawn(async move {
                        let (mut ok, mut bad, mut lat) = (0u64, 0u64, Vec::new());
                        let Ok(mut s) = TcpStream::connect(&addr).await else {
                            return (0, 1, lat);
                        };
                        let _ = s.set_nodelay(true);
                        let mut buf = Vec::new();
                        while Instant::now() < stop && ok + bad < 3_000_000 {
                            let t = Instant::now();
                            if s.write_all(&req).await.is_err() {
                                bad += 1;
                                break;
                            }
                            match read_response(&mut s, &mut buf).await {
                                Ok(st) if st == expect => ok += 1,
                                Ok(_) => bad += 1,
                                Err(_) => {
                                    bad += 1;
                                    break;
                                }
                            }
                            lat.push(t.elapsed());
                        }
                        (ok, bad, lat)
                    })
                })
                .collect();
            let start = Instant::now();
            let (mut ok, mut bad, mut lat) = (0, 0, Vec::new());
            for t in tasks {
                if let Ok((o, b, l)) = t.await {
                    ok += o;
                    bad += b;
                    lat.extend(l);
                }
            }
            (ok, bad, lat, start.elapsed().as_secs_f64())
        }
    };
    run(warm).await;
    let (ok, bad, mut lat, elapsed) = run(secs).await;
    emit(
        json!({"event": "result", "method": method, "connections": conns, "completed": ok, "errors": bad,
                "elapsed_s": elapsed, "req_per_s": ok as f64 / elapsed, "latency": summary(&mut lat)}),
    );
    Ok(())
}

/// W3c: `clients` websockets subscribed to `power`, `posts` sequential creates with a nonce.
/// Nonce → the instants its event reached each websocket client.
type Arrivals = Arc<Mutex<HashMap<u64, Vec<Instant>>>>;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One websocket client: says when it is subscribed, then records when each event arrives.
async fn read_events(
    mut ws: Ws,
    arrivals: Arrivals,
    stray: Arc<std::sync::atomic::AtomicU64>,
    ready: tokio::sync::mpsc::Sender<()>,
    arrived: Arc<tokio::sync::Notify>,
) {
    while let Some(Ok(m)) = ws.next().await {
        let Message::Text(t) = m else { continue };
        let now = Instant::now();
        let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
        match v["type"].as_str() {
            Some("subscribed") => {
                let _ = ready.send(()).await;
            }
            Some("event") => match v["data"]["resource_data"]["nonce"].as_u64() {
                Some(n) => {
                    arrivals.lock().entry(n).or_default().push(now);
                    arrived.notify_one();
                }
                None => {
                    stray.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            },
            _ => {}
        }
    }
}

/// Waits until every client got event `nonce`, or `deadline`; takes its arrivals.
async fn wait_arrivals(
    arrivals: &Arrivals,
    arrived: &tokio::sync::Notify,
    nonce: u64,
    clients: usize,
    deadline: Instant,
) -> Vec<Instant> {
    loop {
        let n = arrivals.lock().get(&nonce).map_or(0, Vec::len);
        if n >= clients || Instant::now() > deadline {
            return arrivals.lock().remove(&nonce).unwrap_or_default();
        }
        // A reader stores a permit when it notifies before we wait, so no arrival is missed.
        let _ = tokio::time::timeout_at(deadline.into(), arrived.notified()).await;
    }
}

pub(crate) async fn realtime_client() -> anyhow::Result<()> {
    let url: String = env_or("BENCH_URL", "http://127.0.0.1:5001".to_string());
    let clients: usize = env_or("BENCH_CLIENTS", 16);
    let posts: usize = env_or("BENCH_COUNT", 2000);
    let warmup: usize = env_or("BENCH_WARMUP", 100);
    let cap = Duration::from_secs_f64(env_or("BENCH_TIME_CAP_S", 60.0));
    let ws_url = format!("{}/realtime", url.replace("http://", "ws://"));
    raise_fd_limit(clients as u64 * 2 + 256);
    // nonce → arrival instants
    let arrivals: Arrivals = Arc::default();
    let arrived = Arc::new(tokio::sync::Notify::new());
    let stray = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(clients);
    let mut readers = Vec::new();
    for _ in 0..clients {
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await?;
        ws.send(Message::text(r#"{"type":"subscribe","topics":["power"]}"#))
            .await?;
        readers.push(tokio::spawn(read_events(
            ws,
            arrivals.clone(),
            stray.clone(),
            ready_tx.clone(),
            arrived.clone(),
        )));
    }
    for _ in 0..clients {
        ready_rx.recv().await.context("websocket subscribe")?;
    }
    emit(json!({"event": "ready"}));
    let addr = url.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await?;
    s.set_nodelay(true)?;
    let mut buf = Vec::new();
    let base: Value = serde_json::from_str(BODY)?;
    let (mut samples, mut all_samples, mut lost, mut done_posts) =
        (Vec::new(), Vec::new(), 0u64, 0usize);
    let start = Instant::now();
    for i in 0..(warmup + posts) as u64 {
        if start.elapsed() > cap {
            break;
        }
        let mut body = base.clone();
        body["nonce"] = json!(i);
        let req = request("POST", "/power", &body.to_string());
        let t0 = Instant::now();
        s.write_all(&req).await?;
        let st = read_response(&mut s, &mut buf).await?;
        if st != 201 {
            bail!("create answered {st}");
        }
        let got = wait_arrivals(&arrivals, &arrived, i, clients, t0 + Duration::from_secs(2)).await;
        if i >= warmup as u64 {
            done_posts += 1;
            lost += (clients - got.len().min(clients)) as u64;
            for a in &got {
                samples.push(a.saturating_duration_since(t0));
            }
            if let Some(m) = got.iter().max() {
                if got.len() == clients {
                    all_samples.push(m.saturating_duration_since(t0));
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let received = samples.len();
    emit(
        json!({"event": "result", "peer": "zeroservices", "clients": clients, "posts": done_posts, "elapsed_s": elapsed,
                "events_expected": done_posts * clients, "events_received": received, "lost_events": lost,
                "stray_events": stray.load(std::sync::atomic::Ordering::Relaxed),
                "latency": summary(&mut samples), "all_clients_latency": summary(&mut all_samples)}),
    );
    for r in readers {
        r.abort();
    }
    Ok(())
}
