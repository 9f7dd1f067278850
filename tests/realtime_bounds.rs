//! The websocket feed under authorization and bounds: a token that expires closes its socket
//! with 4401, each event is delivered only to connections that may `get` its collection, JWT
//! `nbf`/`iss`/`aud` are checked, topics and `since` per connection are capped, and the replay
//! buffer is bounded in bytes (a stream of large events does not grow the node's memory).

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{bin, free_port, spawn_ready, Proc, TempFile};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const SECRET: &str = "a-shared-jwt-secret-of-length";

struct Node {
    _proc: Proc,
    base: String,
    ws: String,
    _secret: TempFile,
}

fn start(extra: &[&str]) -> Node {
    let secret = TempFile::new("jwt.secret", &format!("{SECRET}\n"));
    let http = free_port();
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "rt",
        "--collection",
        "power",
        "--collection",
        "secret",
        "--store",
        "memory",
        "--discovery",
        "none",
        "--http",
        &format!("127.0.0.1:{http}"),
    ]);
    c.arg("--jwt-hs256-secret-file").arg(&secret.0);
    c.args(extra);
    Node {
        _proc: spawn_ready("rt", c),
        base: format!("http://127.0.0.1:{http}"),
        ws: format!("ws://127.0.0.1:{http}/realtime"),
        _secret: secret,
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn grants_token(grants: &[&str], lifetime_s: i64) -> String {
    token(json!({"sub": "u", "exp": now() + lifetime_s, "grants": grants}))
}

fn post(base: &str, collection: &str, body: &str, token: &str) -> u16 {
    match ureq::post(&format!("{base}/{collection}"))
        .set("authorization", &format!("Bearer {token}"))
        .send_string(body)
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("POST: {e}"),
    }
}

async fn connect(url: &str, token: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("{url}?token={token}"))
        .await
        .expect("websocket")
        .0
}

/// The next message, text as JSON; `None` after `limit` or at the end of the stream. A close
/// frame comes back as `{"close": code}`.
async fn next(ws: &mut Ws, limit: Duration) -> Option<Value> {
    loop {
        let m = tokio::time::timeout(limit, ws.next()).await.ok()??;
        match m {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(f)) => {
                return Some(json!({"close": f.map(|f| u16::from(f.code))}));
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

async fn subscribe(ws: &mut Ws, msg: Value) -> Value {
    ws.send(Message::text(msg.to_string())).await.expect("send");
    next(ws, Duration::from_secs(5)).await.expect("answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_whose_token_expires_is_closed_with_4401() {
    let n = tokio::task::block_in_place(|| start(&[]));
    let short = grants_token(&["*/*"], 2);
    let mut ws = connect(&n.ws, &short).await;
    let ok = subscribe(&mut ws, json!({"type": "subscribe", "topics": ["power"]})).await;
    assert_eq!(ok["type"], "subscribed", "{ok}");
    let started = std::time::Instant::now();
    let bye = next(&mut ws, Duration::from_secs(6))
        .await
        .expect("a message at expiry");
    assert_eq!(bye["type"], "error", "{bye}");
    assert_eq!(bye["error"]["code"], "unauthorized", "{bye}");
    let close = next(&mut ws, Duration::from_secs(2)).await.expect("close");
    assert_eq!(close["close"], 4401, "{close}");
    assert!(started.elapsed() < Duration::from_secs(4));

    // A fresh token sent in time keeps the connection open past the first one's expiry.
    let mut ws = connect(&n.ws, &grants_token(&["*/*"], 2)).await;
    let fresh = grants_token(&["*/*"], 300);
    let ok = subscribe(&mut ws, json!({"type": "auth", "token": fresh})).await;
    assert_eq!(ok["type"], "authenticated", "{ok}");
    let quiet = next(&mut ws, Duration::from_secs(3)).await;
    assert!(quiet.is_none(), "closed despite a fresh token: {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_goes_only_to_connections_that_may_get_its_collection() {
    let n = tokio::task::block_in_place(|| start(&[]));
    let admin = grants_token(&["*/*"], 300);
    // May subscribe to everything, but read only power.
    let limited = grants_token(&["*/subscribe", "power/get"], 300);
    let mut ws = connect(&n.ws, &limited).await;
    let ok = subscribe(&mut ws, json!({"type": "subscribe", "topics": ["*"]})).await;
    assert_eq!(ok["type"], "subscribed", "{ok}");
    tokio::task::block_in_place(|| {
        assert_eq!(post(&n.base, "secret", r#"{"code": 1234}"#, &admin), 201);
        assert_eq!(post(&n.base, "power", r#"{"value": 1}"#, &admin), 201);
    });
    let first = next(&mut ws, Duration::from_secs(5))
        .await
        .expect("an event");
    assert_eq!(
        first["topic"].as_str().map(|t| t.starts_with("power.")),
        Some(true),
        "{first}"
    );
    let more = next(&mut ws, Duration::from_millis(500)).await;
    assert!(
        more.is_none(),
        "a secret event reached a reader of power only: {more:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_nbf_issuer_and_audience_are_checked() {
    let n = tokio::task::block_in_place(|| {
        start(&[
            "--jwt-issuer",
            "https://login.test",
            "--jwt-audience",
            "power-api",
        ])
    });
    let good = json!({"sub": "u", "exp": now() + 300, "grants": ["*/*"], "iss": "https://login.test", "aud": "power-api"});
    let status = |claims: Value| {
        tokio::task::block_in_place(|| post(&n.base, "power", "{}", &token(claims)))
    };
    assert_eq!(status(good.clone()), 201);
    let mut early = good.clone();
    early["nbf"] = json!(now() + 300);
    assert_eq!(status(early), 401, "a token not valid yet");
    let mut other_iss = good.clone();
    other_iss["iss"] = json!("https://elsewhere.test");
    assert_eq!(status(other_iss), 401, "another issuer");
    let mut other_aud = good.clone();
    other_aud["aud"] = json!("billing-api");
    assert_eq!(status(other_aud), 401, "another audience");
    let mut no_aud = good;
    no_aud.as_object_mut().map(|o| o.remove("aud"));
    assert_eq!(
        status(no_aud),
        401,
        "the audience claim is required once configured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_since_per_connection_are_capped() {
    let n = tokio::task::block_in_place(|| start(&[]));
    let mut ws = connect(&n.ws, &grants_token(&["*/*"], 300)).await;
    let topics: Vec<String> = (0..256).map(|i| format!("power.create.{i}")).collect();
    let ok = subscribe(&mut ws, json!({"type": "subscribe", "topics": topics})).await;
    assert_eq!(ok["type"], "subscribed");
    let over = subscribe(
        &mut ws,
        json!({"type": "subscribe", "topics": ["power.patch"]}),
    )
    .await;
    assert_eq!(over["type"], "error", "{over}");
    assert!(
        over["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("256"),
        "{over}"
    );
    let since: serde_json::Map<String, Value> =
        (0..1025).map(|i| (format!("n{i}"), json!(1))).collect();
    let mut ws = connect(&n.ws, &grants_token(&["*/*"], 300)).await;
    let over = subscribe(
        &mut ws,
        json!({"type": "subscribe", "topics": ["power"], "since": since}),
    )
    .await;
    assert_eq!(over["type"], "error", "{over}");
    assert!(
        over["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("1024"),
        "{over}"
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// 400 patches of a ~600 KB document: each event carries the whole document, 240 MB in all.
/// With the replay buffer bounded in bytes (64 MiB) the node's memory grows far less.
#[test]
fn large_events_do_not_grow_the_replay_buffer_past_its_byte_bound() {
    let n = start(&[]);
    let admin = grants_token(&["*/*"], 600);
    let big: String = "x".repeat(600_000);
    let r = ureq::post(&format!("{}/power", n.base))
        .set("authorization", &format!("Bearer {admin}"))
        .send_string(&json!({"blob": big, "n": 0}).to_string())
        .expect("create");
    let v: Value = serde_json::from_str(&r.into_string().expect("body")).expect("JSON");
    let id = v["resource_id"].as_str().expect("id").to_owned();
    let pid = n._proc.child.id();
    let before = rss_kib(pid);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    for i in 1..=400 {
        agent
            .request("PATCH", &format!("{}/power/{id}", n.base))
            .set("authorization", &format!("Bearer {admin}"))
            .send_string(&json!({"$set": {"n": i}}).to_string())
            .expect("patch");
    }
    let growth_mb = rss_kib(pid).saturating_sub(before) / 1024;
    assert!(growth_mb < 100, "RSS grew by {growth_mb} MB");
}

/// A stranger in a keyless cluster announces itself and publishes events carrying the real
/// node's `node_id` with `seq = u64::MAX`: only the publisher speaks for itself, so none of
/// them reaches a client (the stranger's events under its own name do, which proves its
/// connection works), and the real node's later events still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_event_naming_another_node_changes_nothing_for_clients() {
    let router = free_port();
    let n = tokio::task::block_in_place(|| start(&["--router-port", &router.to_string()]));
    let admin = grants_token(&["*/*"], 300);
    let mut ws = connect(&n.ws, &admin).await;
    let ok = subscribe(&mut ws, json!({"type": "subscribe", "topics": ["power"]})).await;
    assert_eq!(ok["type"], "subscribed", "{ok}");
    tokio::task::block_in_place(|| assert_eq!(post(&n.base, "power", r#"{"v": 1}"#, &admin), 201));
    let first = next(&mut ws, Duration::from_secs(5))
        .await
        .expect("first event");
    let real_id = first["data"]["node_id"]
        .as_str()
        .expect("node_id")
        .to_owned();

    // The rogue: a PUB, announced to the node over its request port.
    let ctx = zmq::Context::new();
    let rogue_pub = ctx.socket(zmq::PUB).expect("pub");
    rogue_pub.bind("tcp://127.0.0.1:*").expect("bind");
    let publish = rogue_pub
        .get_last_endpoint()
        .expect("endpoint")
        .expect("utf-8");
    let dealer = ctx.socket(zmq::DEALER).expect("dealer");
    dealer.set_rcvtimeo(5000).expect("timeout");
    dealer
        .connect(&format!("tcp://127.0.0.1:{router}"))
        .expect("connect");
    let me = json!({"version": 1, "node_id": "rogue", "name": "rogue", "collections": [],
        "endpoints": {"request": "tcp://127.0.0.1:1", "publish": publish}, "heartbeat_ms": 60000});
    dealer
        .send_multipart([&b"1"[..], b"announce", me.to_string().as_bytes()], 0)
        .expect("announce");
    dealer.recv_multipart(0).expect("announce answered");
    let forged = json!({"collection": "power", "action": "create", "resource_id": "forged",
        "resource_data": {}, "node_id": real_id, "seq": u64::MAX, "ts": 1});
    let own = json!({"collection": "power", "action": "create", "resource_id": "rogue-own",
        "resource_data": {}, "node_id": "rogue", "seq": 1, "ts": 1});
    // The node's SUB connects asynchronously: publish both until the rogue's own shows up.
    let mut seen_own = false;
    let mut seen_forged = false;
    for _ in 0..50 {
        for ev in [&forged, &own] {
            let topic = format!("power.create.{}", ev["resource_id"].as_str().unwrap_or(""));
            rogue_pub
                .send_multipart([topic.as_bytes(), ev.to_string().as_bytes()], 0)
                .expect("publish");
        }
        while let Some(ev) = next(&mut ws, Duration::from_millis(100)).await {
            match ev["data"]["resource_id"].as_str() {
                Some("forged") => seen_forged = true,
                Some("rogue-own") => seen_own = true,
                _ => {}
            }
        }
        if seen_own {
            break;
        }
    }
    assert!(
        seen_own,
        "the rogue's own events never arrived (the test proves nothing)"
    );
    assert!(
        !seen_forged,
        "an event naming the real node came from the rogue's connection"
    );

    tokio::task::block_in_place(|| assert_eq!(post(&n.base, "power", r#"{"v": 2}"#, &admin), 201));
    let mut later = None;
    while let Some(ev) = next(&mut ws, Duration::from_secs(3)).await {
        assert_ne!(
            ev["data"]["resource_id"], "forged",
            "a forged event arrived late"
        );
        if ev["data"]["resource_data"]["v"] == 2 {
            later = Some(ev);
            break;
        }
    }
    assert!(
        later.is_some(),
        "the real node's later event was hidden by the forged seq"
    );
}
