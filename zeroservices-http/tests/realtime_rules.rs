//! The websocket under a read rule and the origin rule (issue 25, points 5 and 7): a handshake
//! from a foreign page is refused like a write from it (with `--cors-origin '*'` too when it
//! carries credentials), and a resource a live query listed at subscribe is followed to its
//! deletion and out of the caller's rule. An in-process node served on a loopback socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use zeroservices_core::discovery::NoDiscovery;
use zeroservices_core::medium::MemoryNetwork;
use zeroservices_core::{store::MemoryCollection, CollectionSpec, Node};
use zeroservices_http::{serve, BasicAuth, HttpConfig, ReadRule};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A node serving `todos` (read rule `{"owner": "$user"}`) over HTTP on a loopback port.
struct Api {
    node: Node,
    port: u16,
    stop: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(cors_origins: &[&str]) -> Api {
    let node = Node::builder("api")
        .memory(&MemoryNetwork::new())
        .discovery(NoDiscovery)
        .collection(CollectionSpec::new(
            "todos",
            Arc::new(MemoryCollection::new()),
        ))
        .start()
        .await
        .expect("node");
    let auth = BasicAuth::new()
        .user("alice", "alice-pass", &[("*", "*")])
        .user("bob", "bob-pass", &[("*", "*")]);
    let cfg = HttpConfig {
        auth: Arc::new(auth),
        cors_origins: cors_origins.iter().map(|o| (*o).to_owned()).collect(),
        read_rules: HashMap::from([(
            "todos".to_owned(),
            ReadRule::new(json!({"owner": "$user"})).expect("rule"),
        )]),
        ..HttpConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(serve(listener, node.clone(), cfg, None, async move {
        s.cancelled().await
    }));
    Api { node, port, stop }
}

fn basic(user: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{user}-pass"));
    format!("Basic {b64}")
}

/// The websocket handshake as `user` from a page of `origin`: the socket, or the refusal's
/// HTTP status.
async fn connect(port: u16, user: Option<&str>, origin: Option<&str>) -> Result<Ws, u16> {
    let mut req = format!("ws://127.0.0.1:{port}/realtime")
        .into_client_request()
        .expect("request");
    if let Some(u) = user {
        req.headers_mut()
            .insert("authorization", basic(u).parse().expect("header"));
    }
    if let Some(o) = origin {
        req.headers_mut()
            .insert("origin", o.parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("handshake: {e}"),
    }
}

/// Messages until `done` holds for what was received (at most 10 s).
async fn messages_until(ws: &mut Ws, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(&out) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                out.push(serde_json::from_str(t.as_str()).unwrap_or(Value::Null));
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("waited 10 s; got {out:?}, then {other:?}"),
        }
    }
    out
}

fn has(kind: &'static str, id: &'static str) -> impl Fn(&[Value]) -> bool {
    move |m| {
        m.iter()
            .any(|m| m["type"] == kind && m["resource_id"] == id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_cannot_open_the_websocket_with_credentials() {
    let api = start(&[]).await;
    let evil = Some("https://evil.example");
    assert_eq!(
        connect(api.port, Some("alice"), evil).await.err(),
        Some(403)
    );
    assert_eq!(connect(api.port, None, evil).await.err(), Some(403));
    // The node's own pages, local development servers, and clients that are no browser.
    let own = format!("http://127.0.0.1:{}", api.port);
    assert!(connect(api.port, Some("alice"), Some(&own)).await.is_ok());
    assert!(
        connect(api.port, Some("alice"), Some("http://localhost:5173"))
            .await
            .is_ok()
    );
    assert!(connect(api.port, Some("alice"), None).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_star_opens_neither_the_websocket_nor_writes_to_credentialed_foreign_pages() {
    let api = start(&["*"]).await;
    let evil = Some("https://evil.example");
    assert_eq!(
        connect(api.port, Some("alice"), evil).await.err(),
        Some(403)
    );
    assert!(
        connect(api.port, None, evil).await.is_ok(),
        "anonymous: allowed by '*'"
    );
    let url = format!("http://127.0.0.1:{}/todos", api.port);
    let post = move |creds: bool| {
        let mut r = ureq::post(&url).set("origin", "https://evil.example");
        if creds {
            r = r.set("authorization", &basic("alice"));
        }
        match r.send_string(r#"{"title": "t"}"#) {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("{e}"),
        }
    };
    let (with, without) = tokio::task::spawn_blocking(move || (post(true), post(false)))
        .await
        .expect("posts");
    assert_eq!(with, 403, "credentials from a foreign page");
    assert_eq!(
        without, 401,
        "no credentials: the origin passes, the auth refuses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_query_follows_its_listed_resources_to_their_deletion_and_out_of_the_rule() {
    let api = start(&[]).await;
    let todos = api.node.collection("todos");
    for id in ["gone", "given"] {
        todos
            .create(Some(id), json!({"owner": "alice", "title": id}))
            .await
            .expect("create");
    }
    let mut ws = connect(api.port, Some("alice"), None).await.expect("ws");
    let sub = json!({"type": "subscribe", "collection": "todos", "where": {}});
    ws.send(Message::text(sub.to_string())).await.expect("send");
    let got = messages_until(&mut ws, |m| m.iter().any(|m| m["type"] == "subscribed")).await;
    let listed = &got
        .iter()
        .find(|m| m["type"] == "subscribed")
        .expect("subscribed")["items"];
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{got:?}");
    // Listed at subscribe, never changed since: deleted, and given to bob.
    todos.delete("gone").await.expect("delete");
    let got = messages_until(&mut ws, has("leave", "gone")).await;
    // The creates' own events may reach the hub after the subscription (alice's data, shown
    // to alice): only what the deletion sends is checked here.
    let gone: Vec<_> = got.iter().filter(|m| m["action"] == "delete").collect();
    assert!(!gone.is_empty(), "{got:?}");
    assert!(gone.iter().all(|m| m["resource_data"].is_null()), "{got:?}");
    todos
        .patch(
            "given",
            json!({"$set": {"owner": "bob", "secret": "bob's now"}}),
        )
        .await
        .expect("patch");
    let got = messages_until(&mut ws, has("leave", "given")).await;
    let text = serde_json::to_string(&got).unwrap_or_default();
    assert!(
        !text.contains("bob's now"),
        "bob's data never reaches alice: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_subscriber_hears_of_the_deletion_of_a_resource_its_live_query_listed() {
    let api = start(&[]).await;
    let todos = api.node.collection("todos");
    todos
        .create(Some("t"), json!({"owner": "alice"}))
        .await
        .expect("create");
    let mut ws = connect(api.port, Some("alice"), None).await.expect("ws");
    for m in [
        json!({"type": "subscribe", "collection": "todos", "where": {}}),
        json!({"type": "subscribe", "topics": ["todos"]}),
    ] {
        ws.send(Message::text(m.to_string())).await.expect("send");
    }
    messages_until(&mut ws, |m| {
        m.iter().filter(|m| m["type"] == "subscribed").count() == 2
    })
    .await;
    todos.delete("t").await.expect("delete");
    messages_until(&mut ws, |m| {
        m.iter()
            .any(|m| m["type"] == "event" && m["data"]["action"] == "delete")
            && has("leave", "t")(m)
    })
    .await;
}
