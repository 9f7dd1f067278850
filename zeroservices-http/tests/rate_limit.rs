//! `--rate-limit`: each user (with valid credentials) or each client IP (without) has a budget;
//! past it, 429 with `Retry-After` and a JSON error; probes are not counted.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use zeroservices_core::store::MemoryCollection;
use zeroservices_core::CollectionSpec;
use zeroservices_http::{BasicAuth, HttpConfig, RateLimit};

fn limited(limit: &str) -> HttpConfig {
    HttpConfig {
        rate_limit: Some(limit.parse::<RateLimit>().expect("limit")),
        ..HttpConfig::default()
    }
}

fn power() -> Vec<CollectionSpec> {
    vec![CollectionSpec::new(
        "power",
        Arc::new(MemoryCollection::new()),
    )]
}

fn retry_after(a: &common::Answer) -> u64 {
    a.header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric Retry-After: {:?}", a.headers))
}

#[tokio::test]
async fn past_its_budget_a_client_gets_429_with_retry_after() {
    let api = common::start_with(power(), limited("3/min")).await;
    for i in 0..3 {
        let a = api.json("GET", "/power", None).await;
        assert_eq!(a.status, StatusCode::OK, "request {i} within the budget");
    }
    let over = api.json("GET", "/power", None).await;
    over.assert_error(429, "rate_limited");
    // One request every 20 s refills a budget of 3 per minute.
    let wait = retry_after(&over);
    assert!((1..=20).contains(&wait), "Retry-After {wait}");
    // Writes count too, and are refused before they run.
    let w = api
        .json("POST", "/power", Some(serde_json::json!({"v": 1})))
        .await;
    w.assert_error(429, "rate_limited");
    let listed = api.node.collection("power");
    let page = listed
        .list(&zeroservices_core::query::ListQuery::default())
        .await
        .expect("list");
    assert_eq!(page.total, 0, "a refused create ran");
    // Probes are not counted.
    for path in ["/health", "/metrics"] {
        assert_eq!(api.json("GET", path, None).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn each_user_has_a_budget_of_their_own() {
    let auth = BasicAuth::new()
        .user("alice", "alice-pass", &[("*", "*")])
        .user("bob", "bob-pass", &[("*", "*")])
        .anonymous(&[("*", "list")]);
    let cfg = HttpConfig {
        auth: Arc::new(auth),
        ..limited("2/min")
    };
    let api = common::start_with(power(), cfg).await;
    for _ in 0..2 {
        let a = api.as_user("alice", "GET", "/power", None).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    api.as_user("alice", "GET", "/power", None)
        .await
        .assert_error(429, "rate_limited");
    // Bob and anonymous callers are counted apart.
    assert_eq!(
        api.as_user("bob", "GET", "/power", None).await.status,
        StatusCode::OK
    );
    assert_eq!(api.json("GET", "/power", None).await.status, StatusCode::OK);
    // Wrong credentials spend the IP's budget, not alice's: they cannot exhaust hers, nor
    // escape their own.
    let forged = common::basic("mallory");
    for _ in 0..2 {
        let a = api
            .raw("GET", "/power", None, &[("authorization", forged.as_str())])
            .await;
        assert_ne!(a.status, StatusCode::OK, "mallory let in");
    }
    api.json("GET", "/power", None)
        .await
        .assert_error(429, "rate_limited");
}

#[tokio::test]
async fn a_refilled_budget_serves_again() {
    let api = common::start_with(power(), limited("2/s")).await;
    for _ in 0..2 {
        assert_eq!(api.json("GET", "/power", None).await.status, StatusCode::OK);
    }
    let over = api.json("GET", "/power", None).await;
    over.assert_error(429, "rate_limited");
    // After the time it names, the client is served.
    tokio::time::sleep(Duration::from_secs(retry_after(&over))).await;
    assert_eq!(api.json("GET", "/power", None).await.status, StatusCode::OK);
}

/// One `GET /power` over a socket bound to `from`; the status code.
fn get_from(from: &str, to: SocketAddr) -> u16 {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local: SocketAddr = format!("{from}:0").parse().expect("addr");
    sock.bind(&local.into()).expect("bind the source address");
    sock.connect(&to.into()).expect("connect");
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /power HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_ip_has_a_budget_of_its_own() {
    let node = zeroservices_core::Node::builder("api")
        .memory(&zeroservices_core::medium::MemoryNetwork::new())
        .collection(power().remove(0))
        .start()
        .await
        .expect("node");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let to = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(zeroservices_http::serve(
        listener,
        node.handle(),
        limited("2/min"),
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    let codes = tokio::task::spawn_blocking(move || {
        let first: Vec<u16> = (0..3).map(|_| get_from("127.0.0.1", to)).collect();
        // Another address of the loopback network: another client.
        let other = get_from("127.0.0.2", to);
        (first, other)
    })
    .await
    .expect("clients");
    assert_eq!(codes.0, vec![200, 200, 429], "127.0.0.1 over its budget");
    assert_eq!(codes.1, 200, "127.0.0.2 spent 127.0.0.1's budget");
    let _ = stop.send(());
    server.await.expect("server task").expect("serve");
    node.shutdown().await;
}
