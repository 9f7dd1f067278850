//! A seq never repeats, even when the reservation file cannot be written (issue 25, point
//! 8): while the reservation is not durable the node holds the event and refuses new writes
//! (503-like `Unavailable`); once it can write again the held event goes out with its seq,
//! and after a restart the node starts past every seq it used.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use zeroservices_core::{
    medium::MemoryNetwork, resources::ResourceEvent, store::MemoryCollection, CollectionSpec,
    Error, Node, Subscription,
};
use zeroservices_testkit::nats::temp_dir;

async fn start(net: &MemoryNetwork, dir: &std::path::Path) -> Node {
    Node::builder("n")
        .memory(net)
        .state_dir(dir)
        .seq_reservation_block(2)
        .collection(CollectionSpec::new("c", Arc::new(MemoryCollection::new())))
        .start()
        .await
        .expect("start")
}

async fn next_seq(events: &mut Subscription, within: Duration) -> Option<u64> {
    let ev = tokio::time::timeout(within, events.recv()).await.ok()??;
    serde_json::from_slice::<ResourceEvent>(&ev.payload)
        .ok()
        .map(|e| e.seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seq_is_never_used_past_a_reservation_that_could_not_be_saved() {
    let dir = temp_dir("seq-reservation");
    let net = MemoryNetwork::new();
    let node = start(&net, &dir).await;
    let mut events = node.subscribe("c");
    let c = node.collection("c");
    // Reserved up to 2 at start: seqs 1 and 2 need no new reservation.
    for i in 0..2 {
        c.create(Some(&format!("r{i}")), json!({}))
            .await
            .expect("create");
    }
    let mut used = Vec::new();
    for _ in 0..2 {
        used.push(
            next_seq(&mut events, Duration::from_secs(5))
                .await
                .expect("event"),
        );
    }
    // The reservation's temporary file cannot be made (a directory in its place, as a full
    // disk would refuse it; root ignores permissions).
    let blocker = dir.join("node.json.tmp");
    std::fs::create_dir_all(&blocker).expect("blocker");
    c.create(Some("r2"), json!({})).await.expect("stored");
    // Writes are refused as soon as the node found it cannot reserve r2's seq (writes made
    // before that are stored, their events queued behind r2's) ...
    let mut queued = 1; // r2
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match c.create(Some(&format!("q{queued}")), json!({})).await {
            Err(Error::Unavailable(_)) => break,
            Ok(_) => queued += 1,
            Err(e) => panic!("unexpected error {e:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "writes never refused");
    }
    // ... and by then r2's event is held, not published past the durable reservation.
    assert_eq!(next_seq(&mut events, Duration::ZERO).await, None);
    assert!(c.get("r0").await.is_ok(), "reads still work");
    std::fs::remove_dir_all(&blocker).expect("unblock");
    for _ in 0..queued {
        let held = next_seq(&mut events, Duration::from_secs(10))
            .await
            .expect("the held events go out once the reservation is saved");
        used.push(held);
    }
    // Writes are accepted again.
    let mut accepted = false;
    for _ in 0..200 {
        if c.create(Some("r3"), json!({})).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(accepted, "writes accepted again");
    used.push(
        next_seq(&mut events, Duration::from_secs(5))
            .await
            .expect("event"),
    );
    node.shutdown().await;
    // A restart starts past every seq used.
    let node = start(&net, &dir).await;
    let mut events = node.subscribe("c");
    node.collection("c")
        .create(None, json!({}))
        .await
        .expect("create");
    let after = next_seq(&mut events, Duration::from_secs(5))
        .await
        .expect("event");
    let max = used.iter().copied().max().unwrap_or(0);
    assert!(
        after > max,
        "seq {after} after the restart, {used:?} before"
    );
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
