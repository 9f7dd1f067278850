//! Per-user visibility (issue 17, point 4): with `--read-rule todos={"owner":"$user"}` each
//! user sees and changes only their own todos, over REST, topic subscriptions and live
//! queries; writing another user's `owner` is 403; anonymous callers get 401.

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::{bin, free_port, spawn_ready, Proc, TempFile};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn start() -> (Proc, u16, TempFile) {
    let users = TempFile::new("users", "alice:alice-pass\nbob:bob-pass\n");
    let http = free_port();
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "vis",
        "--collection",
        "todos",
        "--store",
        "memory",
    ]);
    c.args(["--discovery", "none", "--bind", "127.0.0.1"]);
    c.args([
        "--http",
        &format!("127.0.0.1:{http}"),
        "--users-file",
        &users.arg(),
    ]);
    c.args(["--read-rule", r#"todos={"owner":"$user"}"#]);
    (spawn_ready("vis", c), http, users)
}

fn basic(user: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{user}-pass"));
    format!("Basic {b64}")
}

/// `(status, body)` of a request as `user` (`None`: anonymous).
fn call(user: Option<&str>, method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = ureq::request(method, url).set("content-type", "application/json");
    if let Some(u) = user {
        r = r.set("authorization", &basic(u));
    }
    let res = match body {
        Some(b) => r.send_string(&b.to_string()),
        None => r.call(),
    };
    let read = |r: ureq::Response| {
        serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null)
    };
    match res {
        Ok(r) => (r.status(), read(r)),
        Err(ureq::Error::Status(s, r)) => (s, read(r)),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

async fn ws_as(http: u16, user: &str) -> Ws {
    let mut req = format!("ws://127.0.0.1:{http}/realtime")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("authorization", basic(user).parse().expect("header"));
    tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket")
        .0
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
            _ => panic!("waited 10 s; got {out:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_sees_and_changes_only_their_own_todos() {
    let (_p, http, _users) = start();
    let base = format!("http://127.0.0.1:{http}/todos");
    let c = |user, method, url: &str, body| {
        tokio::task::block_in_place(|| call(user, method, url, body))
    };

    let (st, a1) = c(Some("alice"), "POST", &base, Some(json!({"title": "a1"})));
    assert_eq!(st, 201, "{a1}");
    assert_eq!(
        a1["resource_data"]["owner"], "alice",
        "the owner is filled in"
    );
    let a1 = a1["resource_id"].as_str().expect("id").to_owned();
    let (st, b1) = c(
        Some("bob"),
        "POST",
        &base,
        Some(json!({"title": "b1", "owner": "bob"})),
    );
    assert_eq!(st, 201, "{b1}");
    let b1 = b1["resource_id"].as_str().expect("id").to_owned();

    let titles = |user| {
        let (st, v) = c(Some(user), "GET", &base, None);
        assert_eq!(st, 200, "{v}");
        v.as_array()
            .expect("list")
            .iter()
            .map(|r| r["resource_data"]["title"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(titles("alice"), vec![json!("a1")]);
    assert_eq!(titles("bob"), vec![json!("b1")]);
    let other = format!("{base}/{b1}");
    assert_eq!(c(Some("alice"), "GET", &other, None).0, 404);
    assert_eq!(
        c(
            Some("alice"),
            "PATCH",
            &other,
            Some(json!({"$set": {"title": "x"}}))
        )
        .0,
        404
    );
    assert_eq!(c(Some("alice"), "DELETE", &other, None).0, 404);
    assert_eq!(
        c(Some("bob"), "GET", &other, None).0,
        200,
        "bob's own todo is untouched"
    );
    let mine = format!("{base}/{a1}");
    assert_eq!(
        c(
            Some("alice"),
            "POST",
            &base,
            Some(json!({"title": "t", "owner": "bob"}))
        )
        .0,
        403
    );
    assert_eq!(
        c(
            Some("alice"),
            "PATCH",
            &mine,
            Some(json!({"$set": {"owner": "bob"}}))
        )
        .0,
        403
    );
    assert_eq!(
        c(
            Some("alice"),
            "PATCH",
            &mine,
            Some(json!({"$unset": {"owner": ""}}))
        )
        .0,
        403
    );
    assert_eq!(
        c(
            Some("alice"),
            "PATCH",
            &mine,
            Some(json!({"$set": {"done": true}}))
        )
        .0,
        200
    );
    assert_eq!(c(None, "GET", &base, None).0, 401, "anonymous");

    // Realtime: alice hears of her todos only, topics and live queries alike.
    let mut ws = ws_as(http, "alice").await;
    ws.send(Message::text(
        json!({"type": "subscribe", "topics": ["todos"]}).to_string(),
    ))
    .await
    .expect("send");
    ws.send(Message::text(
        json!({"type": "subscribe", "collection": "todos", "id": "mine"}).to_string(),
    ))
    .await
    .expect("send");
    let first = messages_until(&mut ws, |m| {
        m.iter().any(|m| m["query"] == "mine")
            && m.iter()
                .any(|m| m["type"] == "subscribed" && m["topics"].is_array())
    })
    .await;
    let live = first
        .iter()
        .find(|m| m["query"] == "mine")
        .expect("live query answer");
    let ids: Vec<&str> = live["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["resource_id"].as_str())
        .collect();
    assert_eq!(ids, vec![a1.as_str()], "{live}");
    let (_, b2) = c(Some("bob"), "POST", &base, Some(json!({"title": "b2"})));
    let b2 = b2["resource_id"].as_str().expect("id").to_owned();
    c(Some("bob"), "DELETE", &format!("{base}/{b2}"), None);
    let (_, a2) = c(Some("alice"), "POST", &base, Some(json!({"title": "a2"})));
    // Bob's create and delete were published before alice's create: once hers arrived (as a
    // topic event and as an enter), anything of his would have come first.
    let a2 = a2["resource_id"].as_str().expect("id").to_owned();
    let got = messages_until(&mut ws, |m| {
        m.iter()
            .any(|m| m["type"] == "event" && m["data"]["resource_id"] == a2.as_str())
            && m.iter()
                .any(|m| m["type"] == "enter" && m["resource_id"] == a2.as_str())
    })
    .await;
    let text = serde_json::to_string(&got).unwrap_or_default();
    assert!(!text.contains(&b2), "bob's todo reached alice: {text}");
    assert!(!text.contains("bob"), "{text}");
}
