//! Resuming the websocket feed after restarts: a client that missed events while away gets
//! exactly what it missed, or `resync`, never silence. The service keeps its `node_id` and
//! continues its `seq` after a SIGKILL (its identity lives in the embedded store's directory).

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, free_port, spawn_ready, Proc};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Cluster {
    dir: std::path::PathBuf,
    router: u16,
    http: u16,
    service: Option<Proc>,
    api: Option<Proc>,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = std::env::temp_dir().join(format!("zs-resume-{}", free_port()));
        let mut c = Cluster {
            dir,
            router: free_port(),
            http: free_port(),
            service: None,
            api: None,
        };
        c.start_service();
        c.start_api();
        c
    }

    fn start_service(&mut self) {
        let mut c = Command::new(bin());
        c.args([
            "serve",
            "--name",
            "svc",
            "--no-http",
            "--collection",
            "power",
        ]);
        c.args(["--store", &format!("embedded:{}", self.dir.display())]);
        c.args(["--discovery", "none", "--bind", "127.0.0.1"]);
        c.args([
            "--router-port",
            &self.router.to_string(),
            "--heartbeat-ms",
            "200",
        ]);
        self.service = Some(spawn_ready("svc", c));
    }

    fn start_api(&mut self) {
        let mut c = Command::new(bin());
        c.args(["serve", "--name", "api", "--bind", "127.0.0.1"]);
        c.args(["--http", &format!("127.0.0.1:{}", self.http)]);
        c.args(["--discovery", &format!("static:127.0.0.1:{}", self.router)]);
        c.args(["--heartbeat-ms", "200"]);
        self.api = Some(spawn_ready("api", c));
    }

    fn kill(p: &mut Option<Proc>) {
        if let Some(p) = p.take() {
            p.signal(9);
        }
    }

    fn post(&self, body: &str) -> u16 {
        match ureq::post(&format!("http://127.0.0.1:{}/power", self.http)).send_string(body) {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(_) => 0,
        }
    }

    /// Waits until the API node reaches the service again (a read: no new event).
    fn wait_served(&self) {
        common::eventually(
            "the API node serving power",
            Duration::from_secs(15),
            || {
                ureq::get(&format!("http://127.0.0.1:{}/power?limit=1", self.http))
                    .call()
                    .ok()
                    .filter(|r| r.status() == 200)
            },
        );
    }

    async fn connect(&self) -> Ws {
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/realtime", self.http))
            .await
            .expect("websocket")
            .0
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.service.take();
        self.api.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every message within `quiet` of the previous one.
async fn drain(ws: &mut Ws, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(quiet, ws.next()).await {
        if let Message::Text(t) = m {
            out.push(serde_json::from_str(t.as_str()).unwrap_or(Value::Null));
        }
    }
    out
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// Subscribes, creates one power and answers its event's `(node_id, seq)`.
async fn first_event(c: &Cluster) -> (Ws, String, u64) {
    let mut ws = c.connect().await;
    send(&mut ws, json!({"type": "subscribe", "topics": ["power"]})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no event for the first create");
        assert_eq!(tokio::task::block_in_place(|| c.post(r#"{"v": 0}"#)), 201);
        for m in drain(&mut ws, Duration::from_millis(300)).await {
            if m["type"] == "event" {
                let d = &m["data"];
                let node = d["node_id"].as_str().expect("node_id").to_owned();
                return (ws, node, d["seq"].as_u64().expect("seq"));
            }
        }
    }
}

/// What a resume from `(node, seq)` delivers: `Err(resync)` or the `v`s of the events.
async fn resume(c: &Cluster, node: &str, seq: u64) -> Result<BTreeSet<i64>, Value> {
    let mut ws = c.connect().await;
    let since = json!({ node: seq });
    send(
        &mut ws,
        json!({"type": "subscribe", "topics": ["power"], "since": since}),
    )
    .await;
    let got = drain(&mut ws, Duration::from_secs(2)).await;
    if let Some(r) = got.iter().find(|m| m["type"] == "resync") {
        return Err(r.clone());
    }
    let mut vs = BTreeSet::new();
    for m in got.iter().filter(|m| m["type"] == "event") {
        let v = m["data"]["resource_data"]["v"].as_i64().expect("v");
        assert!(vs.insert(v), "event v={v} delivered twice: {got:?}");
    }
    Ok(vs)
}

/// A cluster whose client saw one event (`node`, `seq`), disconnected, and missed 3 creates.
async fn away_for_three_creates() -> (Cluster, String, u64) {
    let c = Cluster::new();
    c.wait_served();
    let (ws, node, seq) = first_event(&c).await;
    drop(ws);
    for v in 1..=3 {
        assert_eq!(c.post(&format!(r#"{{"v": {v}}}"#)), 201);
    }
    (c, node, seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_a_service_sigkill_gets_the_missed_events_or_resync() {
    let (mut c, node, seq) = away_for_three_creates().await;
    Cluster::kill(&mut c.service);
    c.start_service();
    c.wait_served();
    match resume(&c, &node, seq).await {
        Ok(vs) => {
            println!("resume after a service SIGKILL: the missed events {vs:?}");
            assert_eq!(
                vs,
                BTreeSet::from([1, 2, 3]),
                "not exactly the missed events"
            );
        }
        Err(r) => {
            println!("resume after a service SIGKILL: {r}");
            assert_eq!(r["node_id"], node.as_str(), "{r}");
        }
    }
    // The restarted service is the same node, and its seq went on.
    let (_ws, after_node, after_seq) = first_event(&c).await;
    assert_eq!(after_node, node, "the node_id changed across SIGKILL");
    assert!(
        after_seq > seq + 3,
        "seq went back: {after_seq} after {seq}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_a_restarted_api_node_gets_resync() {
    let (mut c, node, seq) = away_for_three_creates().await;
    Cluster::kill(&mut c.api);
    c.start_api();
    c.wait_served();
    // The new API node never saw the three events: it cannot replay them, so it must say so.
    let r = resume(&c, &node, seq).await;
    let r = r.expect_err("a resume the API node cannot prove complete was answered in silence");
    assert_eq!(r["node_id"], node.as_str(), "{r}");
}
