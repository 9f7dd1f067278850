//! `Idempotency-Key` across processes: a client that timed out retries through a restarted API
//! node, and the change is made once; the answers are kept in the provider's embedded store,
//! so they also survive the provider's restart.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{bin, eventually, free_port, spawn_ready, Proc};
use serde_json::Value;

fn provider(port: u16, dir: &std::path::Path) -> Proc {
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "store",
        "--no-http",
        "--collection",
        "todos",
    ]);
    c.args(["--store", &format!("embedded:{}", dir.display())]);
    c.args(["--discovery", "none", "--bind", "127.0.0.1"]);
    c.args(["--router-port", &port.to_string(), "--heartbeat-ms", "200"]);
    spawn_ready("store", c)
}

/// An API node (no collections) on `http`, knowing the provider at `router`; returns once it
/// routes `todos`.
fn api(http: u16, router: u16) -> Proc {
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "api",
        "--http",
        &format!("127.0.0.1:{http}"),
    ]);
    c.args(["--discovery", &format!("static:127.0.0.1:{router}")]);
    c.args(["--bind", "127.0.0.1", "--heartbeat-ms", "200"]);
    let p = spawn_ready("api", c);
    eventually("the API node routes todos", Duration::from_secs(10), || {
        (call("GET", http, "/todos", None, None).0 == 200).then_some(())
    });
    p
}

/// One exchange: (status, JSON body or Null).
fn call(
    method: &str,
    http: u16,
    path: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> (u16, Value) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let mut req = agent.request(method, &format!("http://127.0.0.1:{http}{path}"));
    if let Some(k) = key {
        req = req.set("Idempotency-Key", k);
    }
    req = req.set("Content-Type", "application/json");
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return (0, Value::String(e.to_string())),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Sends a keyed POST and gives up on it at once, as a client that timed out (the answer,
/// if any, is never read).
fn post_and_give_up(http: u16, body: &str, key: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    let req = format!(
        "POST /todos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
}

fn titles(http: u16) -> Vec<String> {
    let (status, body) = call("GET", http, "/todos?limit=1000", None, None);
    assert_eq!(status, 200, "{body}");
    let mut v: Vec<String> = body
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| {
            r["resource_data"]["title"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_retry_through_a_restarted_api_node_creates_once_and_answers_survive_the_store_restart() {
    let dir = std::env::temp_dir().join(format!("zs-idem-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (router, http) = (free_port(), free_port());
    let mut store = provider(router, &dir);
    let mut node = api(http, router);

    // A client times out on its create, and the API node dies: it may or may not have passed
    // the create on. The retry, through a new API node, makes it exactly once.
    post_and_give_up(http, r#"{"title":"milk"}"#, "order-1");
    node.signal(9);
    node.wait_exit(Duration::from_secs(5));
    drop(node);
    let node = api(http, router);
    let retry = call(
        "POST",
        http,
        "/todos",
        Some(r#"{"title":"milk"}"#),
        Some("order-1"),
    );
    assert_eq!(retry.0, 201, "{}", retry.1);
    let again = call(
        "POST",
        http,
        "/todos",
        Some(r#"{"title":"milk"}"#),
        Some("order-1"),
    );
    assert_eq!(again, retry, "a second retry answers the same");

    // A create whose answer was seen, then the API node restarts: the retry answers it.
    let first = call(
        "POST",
        http,
        "/todos",
        Some(r#"{"title":"eggs"}"#),
        Some("order-2"),
    );
    assert_eq!(first.0, 201, "{}", first.1);
    drop(node);
    let node = api(http, router);
    let retry = call(
        "POST",
        http,
        "/todos",
        Some(r#"{"title":"eggs"}"#),
        Some("order-2"),
    );
    assert_eq!(retry, first, "the first answer, same id");
    assert_eq!(titles(http), ["eggs", "milk"], "each created once");

    // The records are in the provider's store: they survive its restart.
    store.signal(15);
    assert_eq!(
        store.wait_exit(Duration::from_secs(10)),
        Some(0),
        "clean stop"
    );
    drop(store);
    let _store = provider(router, &dir);
    eventually("todos back", Duration::from_secs(10), || {
        (call("GET", http, "/todos", None, None).0 == 200).then_some(())
    });
    let retry = call(
        "POST",
        http,
        "/todos",
        Some(r#"{"title":"eggs"}"#),
        Some("order-2"),
    );
    assert_eq!(retry, first, "answered from the store after its restart");
    let other = call(
        "POST",
        http,
        "/todos",
        Some(r#"{"title":"bread"}"#),
        Some("order-2"),
    );
    assert_eq!(other.0, 422, "{}", other.1);
    assert_eq!(other.1["error"]["code"], "idempotency_key_reused");
    assert_eq!(titles(http), ["eggs", "milk"]);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
