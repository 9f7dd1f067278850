//! The HTTP node end to end, with a real HTTP client (ureq) and a real websocket client
//! (tokio-tungstenite), against separate processes: an API node with no collections and a
//! service node owning `power`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, free_port, spawn, Proc};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

struct Cluster {
    service: Option<Proc>,
    _api: Proc,
    base: String,
    ws: String,
    router_port: u16,
    service_node_id: String,
    schema: std::path::PathBuf,
}

fn ready_json(p: &Proc) -> Value {
    let line = p.wait_line("\"ready\"", Duration::from_secs(10));
    serde_json::from_str(&line).expect("ready line is JSON")
}

fn start_service(port: u16, schema: &std::path::Path) -> (Proc, String) {
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "svc",
        "--no-http",
        "--store",
        "memory",
        "--discovery",
        "none",
        "--bind",
        "127.0.0.1",
    ]);
    c.args(["--router-port", &port.to_string(), "--heartbeat-ms", "200"]);
    c.arg("--collection")
        .arg("power")
        .arg("--collection")
        .arg(format!("typed={}", schema.display()));
    let p = spawn("svc", c);
    let id = ready_json(&p)["node_id"]
        .as_str()
        .expect("node_id")
        .to_owned();
    (p, id)
}

fn start_api(router_port: u16, extra: &[&str]) -> (Proc, String) {
    let http = free_port();
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "api",
        "--http",
        &format!("127.0.0.1:{http}"),
        "--store",
        "memory",
        "--bind",
        "127.0.0.1",
    ]);
    c.args([
        "--discovery",
        &format!("static:127.0.0.1:{router_port}"),
        "--heartbeat-ms",
        "200",
        "--timeout-ms",
        "400",
    ]);
    c.args(extra);
    let p = spawn("api", c);
    ready_json(&p);
    (p, format!("127.0.0.1:{http}"))
}

impl Cluster {
    fn start(api_extra: &[&str]) -> Cluster {
        let schema = std::env::temp_dir().join(format!(
            "zs-schema-{}-{}.json",
            std::process::id(),
            free_port()
        ));
        std::fs::write(
            &schema,
            r#"{"type":"object","required":["value"],"properties":{"value":{"type":"number"}}}"#,
        )
        .expect("schema");
        let port = free_port();
        let (service, id) = start_service(port, &schema);
        let (api, addr) = start_api(port, api_extra);
        let c = Cluster {
            service: Some(service),
            _api: api,
            base: format!("http://{addr}"),
            ws: format!("ws://{addr}/realtime"),
            router_port: port,
            service_node_id: id,
            schema,
        };
        common::eventually(
            "the API node to list power",
            Duration::from_secs(10),
            || {
                let (s, _, b) = call("GET", &format!("{}/", c.base), None, &[]);
                (s == 200
                    && b["collections"]
                        .as_array()
                        .is_some_and(|a| a.contains(&json!("power"))))
                .then_some(())
            },
        );
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.schema);
    }
}

/// One HTTP exchange: (status, headers as lower-case (name, value), JSON body or Null).
fn call(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Value) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let res = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let hs = resp
        .headers_names()
        .into_iter()
        .map(|n| (n.to_lowercase(), resp.header(&n).unwrap_or("").to_owned()))
        .collect();
    let text = resp.into_string().unwrap_or_default();
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, hs, json)
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn assert_error(r: &(u16, Vec<(String, String)>, Value), status: u16, code: &str) {
    assert_eq!(r.0, status, "status of {:?}", r.2);
    assert_eq!(r.2["error"]["code"], code, "error body {:?}", r.2);
    assert!(
        r.2["error"]["message"].is_string(),
        "error message {:?}",
        r.2
    );
}

/// What needs separate processes: the index and `/health` listing the service node with its
/// round-trip time, a frozen provider's 504, a killed one's 503, and recovery when another
/// returns. Each route and error on its own: zeroservices-http/tests/routes.rs, in process.
#[test]
fn a_provider_in_another_process_is_listed_timed_out_lost_and_found_again() {
    let mut c = Cluster::start(&[]);
    let b = c.base.clone();
    let (s, _, idx) = call("GET", &format!("{b}/"), None, &[]);
    assert_eq!(s, 200);
    let names: Vec<&str> = idx["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert!(names.contains(&"api") && names.contains(&"svc"), "{idx}");
    let (s, _, r) = call("POST", &format!("{b}/power"), Some(br#"{"value":7}"#), &[]);
    assert_eq!(s, 201, "{r}");
    let id = r["resource_id"].as_str().unwrap().to_owned();
    let (s, _, h) = call("GET", &format!("{b}/health"), None, &[]);
    assert_eq!(s, 200);
    let svc = h["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "svc")
        .expect("svc in health");
    assert!(
        svc["rtt_ms"].as_f64().is_some() && svc["last_seen_ms"].as_u64().is_some(),
        "{svc}"
    );
    let (s, _, m) = call("GET", &format!("{b}/metrics"), None, &[]);
    let m = m.as_str().unwrap_or_default().to_owned();
    assert_eq!(s, 200);
    assert!(m.contains("zeroservices_known_peers 1"), "{m}");

    // 504: the provider is frozen (SIGSTOP) — requests time out before it is declared gone.
    let svc = c.service.as_ref().unwrap();
    svc.signal(19);
    // Stopped for sure (state T) before the request is sent.
    let stat = format!("/proc/{}/stat", svc.child.id());
    common::eventually("the provider to be stopped", Duration::from_secs(5), || {
        let s = std::fs::read_to_string(&stat).unwrap_or_default();
        let state = s
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        (state == Some("T")).then_some(())
    });
    let start = Instant::now();
    assert_error(
        &call("GET", &format!("{b}/power/{id}"), None, &[]),
        504,
        "timeout",
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "504 after {:?}: not at the 400 ms timeout",
        start.elapsed()
    );
    svc.signal(18);
    common::eventually(
        "the thawed provider to answer",
        Duration::from_secs(5),
        || (call("GET", &format!("{b}/power/{id}"), None, &[]).0 == 200).then_some(()),
    );

    // 503: the provider is killed; the API node remembers `power`, answers 503, and recovers
    // by itself when a provider comes back.
    c.service.take();
    common::eventually(
        "the API node to drop the killed provider",
        Duration::from_secs(5),
        || {
            let (_, _, h) = call("GET", &format!("{b}/health"), None, &[]);
            h["peers"]
                .as_array()
                .is_some_and(|p| p.is_empty())
                .then_some(())
        },
    );
    assert_error(
        &call("GET", &format!("{b}/power/{id}"), None, &[]),
        503,
        "unavailable",
    );
    let (_, _, idx) = call("GET", &format!("{b}/"), None, &[]);
    assert_eq!(
        idx["collections"],
        json!([]),
        "live collections only in GET /"
    );
    // /health says why: a collection of the cluster has no live provider.
    let (s, _, h) = call("GET", &format!("{b}/health"), None, &[]);
    assert_eq!((s, h["status"].as_str()), (200, Some("degraded")), "{h}");
    assert!(
        h["problems"].as_array().is_some_and(|p| p
            .iter()
            .any(|x| x.as_str() == Some("no live provider of power")))
            && h["problems"].as_array().is_some_and(|p| p
                .iter()
                .any(|x| x.as_str().is_some_and(|t| t.contains("typed")))),
        "{h}"
    );
    assert_error(
        &call("POST", &format!("{b}/power"), Some(b"{}"), &[]),
        503,
        "unavailable",
    );
    let (svc2, _) = start_service(c.router_port, &c.schema);
    c.service = Some(svc2);
    common::eventually(
        "a new provider to serve power",
        Duration::from_secs(10),
        || {
            (call("POST", &format!("{b}/power"), Some(b"{\"back\":true}"), &[]).0 == 201)
                .then_some(())
        },
    );
    common::eventually("health to be ok again", Duration::from_secs(10), || {
        let (_, _, h) = call("GET", &format!("{b}/health"), None, &[]);
        (h["status"] == "ok").then_some(())
    });
}

#[test]
fn cors_preflight_default_and_restricted() {
    let c = Cluster::start(&[]);
    let preflight = |base: &str, origin: &str| {
        let pre = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ];
        let (s, hs, _) = call("OPTIONS", &format!("{base}/power"), None, &pre);
        assert!(s == 200 || s == 204, "preflight status {s}");
        assert!(header(&hs, "access-control-allow-credentials").is_none());
        header(&hs, "access-control-allow-origin").map(str::to_owned)
    };
    // Default: local dev servers and the node's own origin, nothing else.
    for local in ["http://localhost:5173", "http://127.0.0.1:3000"] {
        assert_eq!(preflight(&c.base, local).as_deref(), Some(local));
    }
    assert_eq!(
        preflight(&c.base, &c.base).as_deref(),
        Some(c.base.as_str())
    );
    assert_eq!(preflight(&c.base, "http://anywhere.example"), None);

    let (api2, addr2) = start_api(c.router_port, &["--cors-origin", "http://good.example"]);
    let b2 = format!("http://{addr2}");
    assert_eq!(
        preflight(&b2, "http://good.example").as_deref(),
        Some("http://good.example")
    );
    assert_eq!(
        preflight(&b2, "http://evil.example"),
        None,
        "evil origin allowed"
    );
    drop(api2);
    let (api3, addr3) = start_api(c.router_port, &["--cors-origin", "*"]);
    assert_eq!(
        preflight(&format!("http://{addr3}"), "http://anywhere.example").as_deref(),
        Some("*")
    );
    drop(api3);
}

#[test]
fn a_cross_site_form_post_is_refused_and_curl_is_not() {
    let c = Cluster::start(&[]);
    let url = format!("{}/power", c.base);
    let body = br#"{"value":1}"#;
    // A form or fetch from a foreign page: text/plain needs no preflight, so the server refuses.
    let foreign = [
        ("origin", "https://evil.example"),
        ("content-type", "text/plain"),
    ];
    assert_error(&call("POST", &url, Some(body), &foreign), 403, "forbidden");
    let (s, _, b) = call("GET", &url, None, &[]);
    assert_eq!(s, 200);
    assert_eq!(b, json!([]), "the refused POST created something");
    // No Origin (curl, another service), the node's own page, a local dev server: accepted.
    assert_eq!(call("POST", &url, Some(body), &[]).0, 201);
    assert_eq!(
        call("POST", &url, Some(body), &[("origin", &c.base)]).0,
        201
    );
    let dev = [("origin", "http://localhost:5173")];
    assert_eq!(call("POST", &url, Some(body), &dev).0, 201);
    // Reads are not refused (the browser withholds the answer from a foreign page anyway).
    assert_eq!(call("GET", &url, None, &foreign).0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_allows_and_denies_rest_and_websocket() {
    let users = common::TempFile::new(
        "users",
        "# name:password[:grants]\nadmin:secret\n\nreader:pw:*/list,*/get,*/subscribe\n",
    );
    let c = tokio::task::block_in_place(|| {
        Cluster::start(&["--users-file", &users.arg(), "--anonymous", "*/get"])
    });
    let b = c.base.clone();
    let basic = |u: &str, p: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let admin = basic("admin", "secret");
    let reader = basic("reader", "pw");
    let r = tokio::task::block_in_place(|| call("POST", &format!("{b}/power"), Some(b"{}"), &[]));
    assert_error(&r, 401, "unauthorized");
    let r = tokio::task::block_in_place(|| {
        call(
            "POST",
            &format!("{b}/power"),
            Some(b"{}"),
            &[("authorization", &basic("admin", "wrong"))],
        )
    });
    assert_error(&r, 401, "unauthorized");
    let r = tokio::task::block_in_place(|| {
        call(
            "POST",
            &format!("{b}/power"),
            Some(b"{}"),
            &[("authorization", &reader)],
        )
    });
    assert_error(&r, 403, "forbidden");
    let (s, _, r) = tokio::task::block_in_place(|| {
        call(
            "POST",
            &format!("{b}/power"),
            Some(b"{\"v\":1}"),
            &[("authorization", &admin)],
        )
    });
    assert_eq!(s, 201);
    let id = r["resource_id"].as_str().unwrap().to_owned();
    let (s, _, _) =
        tokio::task::block_in_place(|| call("GET", &format!("{b}/power/{id}"), None, &[]));
    assert_eq!(s, 200, "anonymous get is granted");
    let (s, _, _) = tokio::task::block_in_place(|| {
        call(
            "GET",
            &format!("{b}/power"),
            None,
            &[("authorization", &reader)],
        )
    });
    assert_eq!(s, 200);
    let r = tokio::task::block_in_place(|| call("GET", &format!("{b}/power"), None, &[]));
    assert_error(&r, 401, "unauthorized");

    // Websocket: anonymous may not subscribe; a token in the query or an auth message may.
    let (mut ws, _) = tokio_tungstenite::connect_async(&c.ws).await.expect("ws");
    ws.send(Message::text(r#"{"type":"subscribe","topics":["power"]}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["error"]["code"], "unauthorized");
    ws.send(Message::text(
        json!({"type": "auth", "token": reader}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "authenticated");
    ws.send(Message::text(r#"{"type":"subscribe","topics":["power"]}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    let token = reader.trim_start_matches("Basic ").replace('=', "%3D");
    let (mut ws2, _) = tokio_tungstenite::connect_async(format!("{}?token={token}", c.ws))
        .await
        .expect("ws with token");
    ws2.send(Message::text(r#"{"type":"subscribe","topics":["*"]}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws2).await["type"], "subscribed");
    let bad = tokio_tungstenite::connect_async(format!("{}?token=bm9wZTpub3Bl", c.ws)).await;
    assert!(bad.is_err(), "a wrong token must be refused at the upgrade");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("ws message within 5 s")
            .expect("open")
            .expect("ok");
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).expect("JSON");
        }
    }
}

async fn post(base: &str, body: Value) -> Value {
    let url = format!("{base}/power");
    tokio::task::spawn_blocking(move || {
        call("POST", &url, Some(body.to_string().as_bytes()), &[]).2
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_prefixes_unsubscribe_and_resume() {
    let c = tokio::task::block_in_place(|| Cluster::start(&["--replay", "8"]));
    let (mut all, _) = tokio_tungstenite::connect_async(&c.ws).await.expect("ws");
    all.send(Message::text(r#"{"type":"subscribe","topics":["*"]}"#))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut all).await,
        json!({"type": "subscribed", "topics": ["*"]})
    );
    let (mut patches, _) = tokio_tungstenite::connect_async(&c.ws).await.expect("ws");
    patches
        .send(Message::text(
            r#"{"type":"subscribe","topics":["power.patch"]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut patches).await["type"], "subscribed");
    // errors keep the connection open
    all.send(Message::text(r#"{"type":"dance"}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut all).await["error"]["code"], "bad_request");
    all.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next_json(&mut all).await["type"], "error");

    let r = post(
        &c.base,
        json!({"resource_id": "w1", "resource_data": {"value": 1}}),
    )
    .await;
    assert_eq!(r["resource_id"], "w1");
    let ev = next_json(&mut all).await;
    assert_eq!(ev["type"], "event");
    assert_eq!(ev["topic"], "power.create.w1");
    let d = &ev["data"];
    assert_eq!(
        (
            d["collection"].as_str(),
            d["action"].as_str(),
            d["resource_id"].as_str()
        ),
        (Some("power"), Some("create"), Some("w1"))
    );
    assert_eq!(d["resource_data"], json!({"value": 1}));
    assert_eq!(d["node_id"], c.service_node_id);
    assert!(d["seq"].as_u64().is_some() && d["ts"].as_u64().is_some_and(|t| t > 1_700_000_000_000));
    let url = format!("{}/power/w1", c.base);
    tokio::task::spawn_blocking(move || call("PATCH", &url, Some(br#"{"value":2}"#), &[]))
        .await
        .unwrap();
    let pe = next_json(&mut patches).await;
    assert_eq!(
        pe["topic"], "power.patch.w1",
        "prefix subscription got {pe}"
    );
    assert_eq!(pe["data"]["patch"], json!({"$set": {"value": 2}}));
    assert_eq!(pe["data"]["resource_data"], json!({"value": 2}));
    let seen = next_json(&mut all).await;
    assert_eq!(seen["topic"], "power.patch.w1");
    let last_seq = seen["data"]["seq"].as_u64().unwrap();

    // unsubscribe: acknowledged, then nothing more arrives
    patches
        .send(Message::text(
            r#"{"type":"unsubscribe","topics":["power.patch"]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut patches).await,
        json!({"type": "unsubscribed", "topics": ["power.patch"]})
    );

    // resume without a gap: miss 3 events, reconnect with since, get exactly those 3
    drop(all);
    create_named(&c.base, "r", 3).await;
    let mut back = resume(&c, last_seq).await;
    for i in 0..3 {
        let ev = next_json(&mut back).await;
        assert_eq!(ev["topic"], format!("power.create.r{i}"), "replayed {ev}");
        assert_eq!(ev["data"]["seq"].as_u64(), Some(last_seq + 1 + i));
    }
    post(&c.base, json!({"resource_id": "live", "resource_data": {}})).await;
    assert_eq!(
        next_json(&mut back).await["topic"],
        "power.create.live",
        "live after replay, no duplicate"
    );
    let url = format!("{}/power/w1", c.base);
    tokio::task::spawn_blocking(move || call("PATCH", &url, Some(br#"{"value":3}"#), &[]))
        .await
        .unwrap();
    assert_eq!(next_json(&mut back).await["topic"], "power.patch.w1");
    expect_silence(&mut patches, Duration::from_millis(500)).await;

    // resume with a gap older than the replay buffer (8 events here): resync
    drop(back);
    let missed_from = last_seq + 5;
    create_named(&c.base, "g", 12).await;
    let mut late = resume(&c, missed_from).await;
    let rs = next_json(&mut late).await;
    assert_eq!(rs["type"], "resync", "gap older than the buffer: {rs}");
    assert_eq!(rs["node_id"], c.service_node_id);
}

/// Creates `{prefix}0` … `{prefix}{n-1}` in `power`, one after the other.
async fn create_named(base: &str, prefix: &str, n: usize) {
    for i in 0..n {
        post(
            base,
            json!({"resource_id": format!("{prefix}{i}"), "resource_data": {}}),
        )
        .await;
    }
}

/// A new websocket subscribed to `power`, resuming after `seq` of the service node.
async fn resume(c: &Cluster, seq: u64) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(&c.ws).await.expect("ws");
    let since = json!({"type": "subscribe", "topics": ["power"], "since": {c.service_node_id.clone(): seq}});
    ws.send(Message::text(since.to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    ws
}

async fn expect_silence(ws: &mut Ws, d: Duration) {
    if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(d, ws.next()).await {
        panic!("expected nothing, got {t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_websocket_client_gets_resync_and_slows_nobody() {
    let c = tokio::task::block_in_place(|| Cluster::start(&["--ws-queue", "128"]));
    // A client with a tiny receive buffer that stops reading after subscribing.
    let addr =
        c.ws.trim_start_matches("ws://")
            .trim_end_matches("/realtime")
            .to_owned();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    let sa: std::net::SocketAddr = addr.parse().unwrap();
    sock.connect(&sa.into()).unwrap();
    sock.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(sock.into()).unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(
        c.ws.as_str(),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .expect("slow ws");
    slow.send(Message::text(r#"{"type":"subscribe","topics":["power"]}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut slow).await["type"], "subscribed");
    let (mut fast, _) = tokio_tungstenite::connect_async(&c.ws)
        .await
        .expect("fast ws");
    fast.send(Message::text(r#"{"type":"subscribe","topics":["power"]}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut fast).await["type"], "subscribed");

    // 3000 creates with a 2 KB payload each while the slow client reads nothing.
    let base = c.base.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let pad = "x".repeat(2000);
        for i in 0..3000 {
            let body = json!({"i": i, "pad": pad}).to_string();
            assert_eq!(
                call("POST", &format!("{base}/power"), Some(body.as_bytes()), &[]).0,
                201
            );
        }
    });
    let mut fast_got = 0;
    while fast_got < 3000 {
        let ev = next_json(&mut fast).await;
        assert_eq!(ev["type"], "event", "the fast client must not lag: {ev}");
        fast_got += 1;
    }
    writer.await.unwrap();
    // Now the slow client reads: somewhere in its stream there is a resync.
    let mut saw_resync = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !saw_resync && Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_secs(3), slow.next()).await
        else {
            break;
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "resync" {
            assert_eq!(v["reason"], "overflow");
            assert!(v["missed"].as_u64().unwrap_or(0) > 0);
            saw_resync = true;
        }
    }
    assert!(saw_resync, "the slow client never got a resync");
    let (s, _, h) =
        tokio::task::block_in_place(|| call("GET", &format!("{}/health", c.base), None, &[]));
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_battery_leaves_the_node_healthy() {
    let c = tokio::task::block_in_place(|| Cluster::start(&[]));
    let b = c.base.clone();
    // (method, url, body, status, error code)
    type Case<'a> = (&'a str, String, Option<Vec<u8>>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "POST",
            format!("{b}/power"),
            Some(br#"{"a":"#.to_vec()),
            400,
            "bad_request",
        ),
        (
            "POST",
            format!("{b}/power"),
            Some(b"[1,2,3]".to_vec()),
            400,
            "bad_request",
        ),
        (
            "POST",
            format!("{b}/power"),
            Some(br#""text""#.to_vec()),
            400,
            "bad_request",
        ),
        (
            "POST",
            format!("{b}/power"),
            Some(vec![0xff, 0xfe]),
            400,
            "bad_request",
        ),
        (
            "POST",
            format!("{b}/power"),
            Some(br#"{"resource_id":"a/b","resource_data":{}}"#.to_vec()),
            400,
            "bad_request",
        ),
        (
            "PATCH",
            format!("{b}/power/x"),
            Some(br#""str""#.to_vec()),
            400,
            "bad_request",
        ),
        (
            "PATCH",
            format!("{b}/power/x"),
            Some(br#"{"$rename":{"a":"b"}}"#.to_vec()),
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("{b}/power?where=notjson"),
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("{b}/power?where=%5B1%5D"),
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("{b}/power?where=%7B%22a%22%3A%7B%22%24bogus%22%3A1%7D%7D"),
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("{b}/power?sort=a,,b"),
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("{b}/power?limit=10001"),
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("{b}/power?limit=-1"),
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("{b}/power?limit=ten"),
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("{b}/power?skip=-3"),
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("{b}/power?fields=a,$b"),
            None,
            400,
            "bad_request",
        ),
        (
            "POST",
            format!("{b}/power"),
            Some(vec![b'{'; 10 * 1024 * 1024]),
            413,
            "too_large",
        ),
        ("GET", format!("{b}/power/%FF%FE"), None, 400, "bad_request"),
        (
            "GET",
            format!("{b}/power/{}", "i".repeat(10 * 1024)),
            None,
            400,
            "bad_request",
        ),
        ("GET", format!("{b}/%FF/1"), None, 400, "bad_request"),
    ];
    for (m, url, body, status, code) in &cases {
        let r = tokio::task::block_in_place(|| call(m, url, body.as_deref(), &[]));
        assert_eq!(r.0, *status, "{m} {}: {:?}", &url[..url.len().min(80)], r.2);
        assert_eq!(
            r.2["error"]["code"],
            *code,
            "{m} {}: {:?}",
            &url[..url.len().min(80)],
            r.2
        );
    }
    // websocket: unknown types, malformed JSON, binary frames — errors, connection stays open
    let (mut ws, _) = tokio_tungstenite::connect_async(&c.ws).await.expect("ws");
    for m in [
        Message::text(r#"{"type":"nope"}"#),
        Message::text("not json"),
        Message::text("{}"),
        Message::binary(vec![0u8; 100]),
    ] {
        ws.send(m).await.unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "error");
    }
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    // 1000 websockets opened and dropped abruptly (no close frame)
    for _ in 0..10 {
        let batch = (0..100).map(|_| tokio_tungstenite::connect_async(c.ws.clone()));
        let socks: Vec<_> = futures::future::join_all(batch)
            .await
            .into_iter()
            .map(|r| r.expect("ws").0)
            .collect();
        for s in socks {
            let tcp = s.into_inner();
            drop(tcp);
        }
    }
    let (s, _, h) = tokio::task::block_in_place(|| call("GET", &format!("{b}/health"), None, &[]));
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")));
    let (s, _, _) = tokio::task::block_in_place(|| {
        call("POST", &format!("{b}/power"), Some(br#"{"ok":1}"#), &[])
    });
    assert_eq!(s, 201);
    let (_, _, m) = tokio::task::block_in_place(|| call("GET", &format!("{b}/metrics"), None, &[]));
    let m = m.as_str().unwrap_or_default().to_owned();
    let open: i64 = m
        .lines()
        .find_map(|l| l.strip_prefix("zeroservices_websocket_connections "))
        .and_then(|v| v.parse().ok())
        .expect("gauge");
    assert!(
        open <= 2,
        "{open} websocket connections still counted after the drops"
    );
}

fn jwt(
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    grants: &[&str],
    exp_in: i64,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"sub": "tester", "exp": now + exp_in, "grants": grants});
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, key).expect("sign token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_jwt_hs256_and_rs256_for_rest_and_websocket() {
    // HS256
    let secret = "a-shared-jwt-secret-of-length";
    let secret_file = common::TempFile::new("jwt.secret", &format!("{secret}\n"));
    let c = tokio::task::block_in_place(|| {
        Cluster::start(&[
            "--jwt-hs256-secret-file",
            &secret_file.arg(),
            "--anonymous",
            "*/get",
        ])
    });
    let b = c.base.clone();
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let writer = jwt(jsonwebtoken::Algorithm::HS256, &key, &["power/*"], 300);
    let reader = jwt(
        jsonwebtoken::Algorithm::HS256,
        &key,
        &["power/get", "power/subscribe"],
        300,
    );
    let expired = jwt(jsonwebtoken::Algorithm::HS256, &key, &["*/*"], -300);
    let forged = jwt(
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-right-secret!!"),
        &["*/*"],
        300,
    );
    let post = |token: &str| {
        let auth = format!("Bearer {token}");
        tokio::task::block_in_place(|| {
            call(
                "POST",
                &format!("{b}/power"),
                Some(b"{\"v\":1}"),
                &[("authorization", &auth)],
            )
        })
    };
    let created = post(&writer);
    assert_eq!(created.0, 201, "{:?}", created.2);
    assert_error(&post(&reader), 403, "forbidden");
    assert_error(&post(&expired), 401, "unauthorized");
    assert_error(&post(&forged), 401, "unauthorized");
    let r = tokio::task::block_in_place(|| call("POST", &format!("{b}/power"), Some(b"{}"), &[]));
    assert_error(&r, 401, "unauthorized");
    let id = created.2["resource_id"].as_str().unwrap().to_owned();
    let (s, _, _) =
        tokio::task::block_in_place(|| call("GET", &format!("{b}/power/{id}"), None, &[]));
    assert_eq!(s, 200, "anonymous get is granted");
    // websocket: the token in the query string
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?token={reader}", c.ws))
        .await
        .expect("ws with token");
    ws.send(Message::text(r#"{"type":"subscribe","topics":["power"]}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    let (mut anon, _) = tokio_tungstenite::connect_async(&c.ws).await.expect("ws");
    anon.send(Message::text(r#"{"type":"subscribe","topics":["power"]}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut anon).await["error"]["code"], "unauthorized");
    drop(c);

    // RS256 with a key pair made by openssl
    let dir = std::env::temp_dir().join(format!("zs-rsa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (private, public) = (dir.join("private.pem"), dir.join("public.pem"));
    assert!(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&private)
        .arg("2048")
        .output()
        .unwrap()
        .status
        .success());
    assert!(Command::new("openssl")
        .args(["rsa", "-in"])
        .arg(&private)
        .args(["-pubout", "-out"])
        .arg(&public)
        .output()
        .unwrap()
        .status
        .success());
    let c = tokio::task::block_in_place(|| {
        Cluster::start(&["--jwt-rs256-public-key", public.to_str().unwrap()])
    });
    let b = c.base.clone();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&private).unwrap()).unwrap();
    let good = format!(
        "Bearer {}",
        jwt(jsonwebtoken::Algorithm::RS256, &key, &["*/*"], 300)
    );
    let hs = format!(
        "Bearer {}",
        jwt(
            jsonwebtoken::Algorithm::HS256,
            &jsonwebtoken::EncodingKey::from_secret(b"whatever-secret-123"),
            &["*/*"],
            300
        )
    );
    let (s, _, _) = tokio::task::block_in_place(|| {
        call(
            "POST",
            &format!("{b}/power"),
            Some(b"{}"),
            &[("authorization", &good)],
        )
    });
    assert_eq!(s, 201);
    let r = tokio::task::block_in_place(|| {
        call(
            "POST",
            &format!("{b}/power"),
            Some(b"{}"),
            &[("authorization", &hs)],
        )
    });
    assert_error(&r, 401, "unauthorized");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn queries_and_metrics_are_bounded() {
    let c = Cluster::start(&[]);
    // At most 16 $regex per filter, and a `where` of at most 64 KiB.
    let regexes: Vec<Value> = (0..17)
        .map(|i| json!({format!("f{i}"): {"$regex": "^a"}}))
        .collect();
    let w = json!({ "$or": regexes }).to_string();
    let url = format!("{}/power?where={}", c.base, urlencode(&w));
    assert_error(&call("GET", &url, None, &[]), 400, "bad_request");
    // Over 64 KiB: refused (400 by the node, or 414 by the HTTP parser before it).
    let big = json!({"value": "x".repeat(70 * 1024)}).to_string();
    let url = format!("{}/power?where={}", c.base, urlencode(&big));
    let status = call("GET", &url, None, &[]).0;
    assert!(
        matches!(status, 400 | 414),
        "a 70 KiB where answered {status}"
    );
    // `POST /{c}/list` obeys the limits of `GET /{c}`: 100 by default, at most 10 000.
    for i in 0..120 {
        let body = json!({"n": i}).to_string();
        let r = call(
            "POST",
            &format!("{}/power", c.base),
            Some(body.as_bytes()),
            &[],
        );
        assert_eq!(r.0, 201, "{r:?}");
    }
    let list = |body: Value| {
        let body = body.to_string();
        call(
            "POST",
            &format!("{}/power/list", c.base),
            Some(body.as_bytes()),
            &[],
        )
    };
    let r = list(json!({}));
    assert_eq!(r.0, 200, "{r:?}");
    assert_eq!(
        r.2["items"].as_array().map(Vec::len),
        Some(100),
        "default limit"
    );
    assert!(
        r.2["total"].as_u64().is_some_and(|t| t >= 120),
        "{}",
        r.2["total"]
    );
    let r = list(json!({"limit": 7, "skip": 1}));
    assert_eq!(r.2["items"].as_array().map(Vec::len), Some(7));
    assert_error(&list(json!({"limit": 10_001})), 400, "bad_request");
    // Requests for collections that do not exist share one metrics series.
    for i in 0..50 {
        let r = call("GET", &format!("{}/nosuch{i}", c.base), None, &[]);
        assert_eq!(r.0, 404);
    }
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let text = agent
        .get(&format!("{}/metrics", c.base))
        .call()
        .expect("metrics")
        .into_string()
        .expect("text");
    assert!(text.contains("collection=\"_unknown\""), "{text}");
    assert!(
        !text.contains("nosuch"),
        "one series per unknown name: {text}"
    );
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The original Python ZeroServices' clients work unchanged: the FOSDEM React page's
/// `join`/`leave`, the HTTP client's `{"patch": {...}}` bodies, routes with a trailing slash;
/// and an envelope with the wrong types is a 400, not data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_originals_clients_work_unchanged() {
    let c = tokio::task::block_in_place(|| Cluster::start(&[]));
    let (mut ws, _) = tokio_tungstenite::connect_async(&c.ws).await.expect("ws");
    ws.send(Message::text(
        r#"{"type":"join","data":{"topics":["power"]}}"#,
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    let base = c.base.clone();
    let blocking = move |method: &'static str, path: String, body: Option<Value>| {
        let url = format!("{base}{path}");
        tokio::task::block_in_place(|| {
            let body = body.map(|b| b.to_string());
            call(method, &url, body.as_deref().map(str::as_bytes), &[])
        })
    };
    // POST with a trailing slash creates; the event's `data` is what the page reads.
    let r = blocking(
        "POST",
        "/power/".into(),
        Some(json!({"resource_id": "o1", "resource_data": {"value": 1}})),
    );
    assert_eq!(r.0, 201, "{r:?}");
    let msg = next_json(&mut ws).await;
    let data = &msg["data"];
    assert_eq!(
        (
            &data["action"],
            &data["resource_id"],
            &data["resource_data"]
        ),
        (&json!("create"), &json!("o1"), &json!({"value": 1})),
        "{msg}"
    );
    // The original's PATCH body: the update document under "patch".
    let r = blocking(
        "PATCH",
        "/power/o1/".into(),
        Some(json!({"patch": {"$set": {"value": 2}}})),
    );
    assert_eq!(r.0, 200, "{r:?}");
    assert_eq!(r.2["resource_data"], json!({"value": 2}), "{r:?}");
    let msg = next_json(&mut ws).await;
    assert_eq!(msg["data"]["action"], "patch");
    assert_eq!(msg["data"]["patch"], json!({"$set": {"value": 2}}));
    let r = blocking("GET", "/power/".into(), None);
    assert_eq!(r.0, 200);
    assert!(r.2.as_array().is_some_and(|a| a.len() == 1), "{r:?}");
    assert_eq!(blocking("GET", "/power/o1/".into(), None).0, 200);
    // A malformed envelope is refused, not stored as data.
    let r = blocking(
        "POST",
        "/power".into(),
        Some(json!({"resource_id": "x", "resource_data": 5})),
    );
    assert_error(&r, 400, "bad_request");
    // `leave` stops the events.
    ws.send(Message::text(
        r#"{"type":"leave","data":{"topics":["power"]}}"#,
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "unsubscribed");
    assert_eq!(blocking("DELETE", "/power/o1".into(), None).0, 204);
    let quiet = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
    assert!(quiet.is_err(), "an event after leave: {quiet:?}");
}

/// `--rate-limit` on the CLI: past its budget a client gets 429, with `Retry-After` and the
/// JSON error; `/health` is not counted.
#[test]
fn the_rate_limit_flag_answers_429_with_retry_after() {
    // Starting the cluster may have spent part of the budget (its readiness probes): the
    // budget of 5 runs out within 6 requests, and only with 429s.
    let c = Cluster::start(&["--rate-limit", "5/min"]);
    let url = format!("{}/power", c.base);
    let (status, headers, body) = (0..6)
        .map(|_| call("GET", &url, None, &[]))
        .find(|(s, _, _)| *s != 200)
        .expect("6 requests within a budget of 5 a minute");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let retry = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.parse::<u64>().ok());
    assert!(
        retry.is_some_and(|s| (1..=30).contains(&s)),
        "Retry-After {retry:?}"
    );
    assert_eq!(call("GET", &format!("{}/health", c.base), None, &[]).0, 200);
}
