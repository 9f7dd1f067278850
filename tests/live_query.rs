//! Live queries on `/realtime` (issue 17, point 1): a subscription to the resources of a
//! collection matching a filter receives `enter`, `update` and `leave`; coming back is a new
//! `subscribe`, whose answer is the whole current result set.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{bin, free_port, spawn_ready, Proc};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn start() -> (Proc, u16) {
    let http = free_port();
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "live",
        "--collection",
        "power",
        "--store",
        "memory",
    ]);
    c.args(["--discovery", "none", "--bind", "127.0.0.1"]);
    c.args(["--http", &format!("127.0.0.1:{http}")]);
    (spawn_ready("live", c), http)
}

fn call(method: &str, url: &str, body: &str) -> Value {
    let r = ureq::request(method, url).send_string(body);
    let text = match r {
        Ok(r) => r.into_string().unwrap_or_default(),
        Err(ureq::Error::Status(s, r)) => panic!("{method} {url}: {s} {:?}", r.into_string()),
        Err(e) => panic!("{method} {url}: {e}"),
    };
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).expect("JSON");
        }
    }
}

/// The next message, which must be of `kind` for `id`.
async fn expect(ws: &mut Ws, kind: &str, id: &str) -> Value {
    let m = next(ws).await;
    assert_eq!(
        (m["type"].as_str(), m["resource_id"].as_str()),
        (Some(kind), Some(id)),
        "{m}"
    );
    assert_eq!(m["query"], "pending", "{m}");
    m
}

async fn subscribe(ws: &mut Ws, since: Value) -> Value {
    let msg = json!({"type": "subscribe", "collection": "power", "id": "pending",
        "where": {"status": "pending"}, "since": since});
    ws.send(Message::text(msg.to_string())).await.expect("send");
    next(ws).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_query_gets_enter_update_and_leave() {
    let (_p, http) = start();
    let base = format!("http://127.0.0.1:{http}/power");
    let post = |id: &str, data: Value| {
        let body = json!({"resource_id": id, "resource_data": data}).to_string();
        tokio::task::block_in_place(|| call("POST", &base, &body))
    };
    let patch = |id: &str, update: Value| {
        let url = format!("{base}/{id}");
        tokio::task::block_in_place(|| call("PATCH", &url, &update.to_string()))
    };
    post("before", json!({"status": "pending", "value": 1}));
    post("done-before", json!({"status": "done", "value": 2}));

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{http}/realtime"))
        .await
        .expect("websocket");
    let ok = subscribe(&mut ws, json!({})).await;
    assert_eq!(ok["type"], "subscribed", "{ok}");
    let items: Vec<&str> = ok["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["resource_id"].as_str())
        .collect();
    assert_eq!(items, vec!["before"], "the initial result set");

    post("new", json!({"status": "pending", "value": 3}));
    let m = expect(&mut ws, "enter", "new").await;
    assert_eq!(m["resource_data"]["value"], 3);
    post("other", json!({"status": "done"})); // never matches: nothing
    patch("before", json!({"$set": {"value": 10}}));
    let m = expect(&mut ws, "update", "before").await;
    assert_eq!(m["resource_data"]["value"], 10);
    assert_eq!(m["patch"], json!({"$set": {"value": 10}}));
    patch("before", json!({"$set": {"status": "done"}}));
    expect(&mut ws, "leave", "before").await;
    patch("done-before", json!({"$set": {"status": "pending"}}));
    expect(&mut ws, "enter", "done-before").await;
    tokio::task::block_in_place(|| ureq::delete(&format!("{base}/new")).call().expect("delete"));
    let m = expect(&mut ws, "leave", "new").await;
    assert!(m["seq"].as_u64().is_some(), "{m}");

    // Away: one enters, one leaves; coming back, the answer holds exactly what matches now.
    drop(ws);
    post("while-away", json!({"status": "pending"}));
    patch("done-before", json!({"$set": {"status": "done"}}));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{http}/realtime"))
        .await
        .expect("websocket");
    let ok = subscribe(&mut ws, json!({})).await;
    let items: Vec<&str> = ok["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["resource_id"].as_str())
        .collect();
    assert_eq!(items, vec!["while-away"], "{ok}");
    let quiet = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
    assert!(quiet.is_err(), "unexpected message: {quiet:?}");

    // A filter the query language refuses is an error, as for lists.
    let bad = json!({"type": "subscribe", "collection": "power", "where": {"$bogus": 1}});
    ws.send(Message::text(bad.to_string())).await.expect("send");
    let e = next(&mut ws).await;
    assert_eq!(e["type"], "error", "{e}");
}
