//! Taps run their callbacks outside the node's subscription lock: a callback that drops a tap
//! (its own) or subscribes does not deadlock event delivery.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use zeroservices_core::{
    medium::{Event, MemoryNetwork},
    Node, Tap,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_may_drop_itself_and_subscribe_from_its_callback() {
    let net = MemoryNetwork::new();
    let node = Node::builder("taps")
        .memory(&net)
        .start()
        .await
        .expect("start");
    let slot: Arc<Mutex<Option<Tap>>> = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let (s, n, w) = (slot.clone(), node.clone(), seen.clone());
    let tap = node.tap(
        vec!["t".into()],
        Arc::new(move |ev: &Event| {
            w.lock().unwrap().push(ev.topic.to_string());
            // Both take the subscription lock.
            drop(n.subscribe("other"));
            drop(s.lock().unwrap().take());
        }),
    );
    *slot.lock().unwrap() = Some(tap);
    // On a thread of its own, so that a deadlock fails the test instead of hanging it.
    let (done, finished) = std::sync::mpsc::channel();
    let n = node.clone();
    std::thread::spawn(move || {
        n.publish_local("t.1", &json!({}));
        n.publish_local("t.2", &json!({}));
        let _ = done.send(());
    });
    assert!(
        finished.recv_timeout(Duration::from_secs(5)).is_ok(),
        "event delivery deadlocked"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["t.1".to_string()],
        "the tap ran after it was dropped"
    );
    assert!(slot.lock().unwrap().is_none());
    node.shutdown().await;
}
