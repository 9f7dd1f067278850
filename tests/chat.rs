//! The chat example: two chat nodes; what one says reaches the other's page feed, and the
//! other node's arrival shows up as presence.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{example, free_port, spawn_ready};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

async fn next_event(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    topic: &str,
) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("event within 10 s")
            .expect("open")
            .expect("ok");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["topic"] == topic {
                return v["data"].clone();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chat_nodes_talk_and_see_each_other_arrive() {
    let (router_a, http_a) = (free_port(), free_port());
    let mut a = Command::new(example("chat"));
    a.args([
        "--name",
        "alice",
        "--http",
        &format!("127.0.0.1:{http_a}"),
        "--discovery",
        "none",
        "--bind",
        "127.0.0.1",
    ]);
    a.args([
        "--router-port",
        &router_a.to_string(),
        "--heartbeat-ms",
        "200",
    ]);
    let _alice = spawn_ready("alice", a);
    let (mut ws_a, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{http_a}/realtime"))
            .await
            .expect("ws");
    ws_a.send(Message::text(r#"{"type":"subscribe","topics":["chat"]}"#))
        .await
        .unwrap();

    // Chosen once alice holds her ports (her ZeroMQ ports are random: picked earlier, this one
    // could have become one of them).
    let http_b = free_port();
    let mut b = Command::new(example("chat"));
    b.args([
        "--name",
        "bob",
        "--http",
        &format!("127.0.0.1:{http_b}"),
        "--bind",
        "127.0.0.1",
    ]);
    b.args([
        "--discovery",
        &format!("static:127.0.0.1:{router_a}"),
        "--heartbeat-ms",
        "200",
    ]);
    let bob = spawn_ready("bob", b);
    let joined = next_event(&mut ws_a, "chat.presence").await;
    assert_eq!(
        (joined["event"].as_str(), joined["name"].as_str()),
        (Some("join"), Some("bob"))
    );

    let (mut ws_b, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{http_b}/realtime"))
            .await
            .expect("ws");
    ws_b.send(Message::text(r#"{"type":"subscribe","topics":["chat"]}"#))
        .await
        .unwrap();
    // Bob's node has subscribed to alice's events once it joined; say something until it arrives.
    let url = format!("http://127.0.0.1:{http_a}/chat/say");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_saying = stop.clone();
    let said = tokio::spawn(async move {
        for _ in 0..50 {
            if stop_saying.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            let u = url.clone();
            let status = tokio::task::spawn_blocking(move || {
                ureq::post(&u)
                    .send_string(r#"{"text":"hello bob"}"#)
                    .map(|r| r.status())
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap()
            .expect("say");
            assert_eq!(status, 204);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let msg = next_event(&mut ws_b, "chat.message").await;
    assert_eq!(
        (msg["from"].as_str(), msg["text"].as_str()),
        (Some("alice"), Some("hello bob"))
    );
    // Joined, not aborted: an assertion that failed in it fails the test.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    said.await.expect("every say answered 204");
    drop(bob);
    let left = next_event(&mut ws_a, "chat.presence").await;
    let left = if left["event"] == "join" {
        next_event(&mut ws_a, "chat.presence").await
    } else {
        left
    };
    assert_eq!(
        (left["event"].as_str(), left["name"].as_str()),
        (Some("leave"), Some("bob"))
    );
}
