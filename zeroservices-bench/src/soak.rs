//! A bounded soak: a `power` service node, an API node and a squaring worker node (three
//! processes), under mixed load for a fixed time — creates that the worker completes, reads,
//! deletes (so the data set stays small and memory growth means a leak), and websocket clients
//! that keep connecting, subscribing and leaving. Prints the RSS of every node over time and
//! its growth after the warm-up.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use zeroservices_core::{discovery::StaticDiscovery, medium::ZmqConfig, Node, NodeType, Worker};

use crate::stats::{emit, env_or, exit_on_stdin_close_or_deadline};

/// The worker process of the soak.
pub(crate) async fn worker() -> anyhow::Result<()> {
    let seed: u16 = env_or("BENCH_SEED_PORT", 0);
    exit_on_stdin_close_or_deadline();
    let node = Node::builder("soak-worker")
        .node_type(NodeType::Worker)
        .zmq(ZmqConfig::loopback())
        .discovery(StaticDiscovery::new([format!("tcp://127.0.0.1:{seed}")]))
        .heartbeat(Duration::from_millis(200))
        .start()
        .await?;
    let _w = Worker::new(&node)
        .catch_up_every(Duration::from_secs(2))
        .rule("power", json!({"status": "pending"}), |ctx| async move {
            let v = ctx.resource.resource_data["value"].as_i64().unwrap_or(0);
            ctx.node
                .collection("power")
                .patch(
                    &ctx.resource.resource_id,
                    json!({"$set": {"status": "done", "result": v * v}}),
                )
                .await?;
            Ok(())
        })?
        .start();
    emit(json!({"event": "ready"}));
    std::future::pending::<()>().await;
    Ok(())
}

async fn http(addr: &str, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Drives the load against the API node at `addr` for `secs` seconds.
/// Websocket sessions of half a second each until `stop`, half of them dropped without a
/// close frame; answers how many.
async fn websocket_sessions(ws_url: String, stop: Instant) -> u64 {
    let mut sessions = 0u64;
    while Instant::now() < stop {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(ws_url.as_str()).await else {
            continue;
        };
        let _ = ws
            .send(Message::text(r#"{"type":"subscribe","topics":["power"]}"#))
            .await;
        let until = Instant::now() + Duration::from_millis(500);
        while let Ok(Some(_)) =
            tokio::time::timeout(until.saturating_duration_since(Instant::now()), ws.next()).await
        {
        }
        sessions += 1;
        if sessions % 2 == 0 {
            let _ = ws.close(None).await;
        }
    }
    sessions
}

pub(crate) async fn load(addr: String, secs: u64) -> anyhow::Result<()> {
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for t in 0..6u64 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut bad) = (0u64, 0u64);
            let mut i = t;
            while Instant::now() < stop {
                i += 6;
                let Ok((201, body)) = http(
                    &addr,
                    "POST",
                    "/power",
                    &json!({"value": i % 1000, "status": "pending"}).to_string(),
                )
                .await
                else {
                    bad += 1;
                    continue;
                };
                let id = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["resource_id"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                // Wait for the worker, then read and delete.
                let mut done = false;
                for _ in 0..100 {
                    if let Ok((200, b)) = http(&addr, "GET", &format!("/power/{id}"), "").await {
                        if b.contains("\"done\"") {
                            done = true;
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let _ = http(&addr, "GET", "/power?limit=20&sort=-value", "").await;
                match (
                    done,
                    http(&addr, "DELETE", &format!("/power/{id}"), "").await,
                ) {
                    (true, Ok((204, _))) => ok += 1,
                    _ => bad += 1,
                }
            }
            (ok, bad)
        }));
    }
    let ws_task = tokio::spawn(websocket_sessions(format!("ws://{addr}/realtime"), stop));
    let (mut ok, mut bad) = (0, 0);
    for t in tasks {
        let (o, b) = t.await?;
        ok += o;
        bad += b;
    }
    let sessions = ws_task.await?;
    emit(
        json!({"event": "result", "cycles": ok, "failed_cycles": bad, "websocket_sessions": sessions}),
    );
    Ok(())
}
