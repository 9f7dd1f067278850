//! A change whose caller stops waiting still publishes its event (issue 25, point 4): an HTTP
//! client that closes its connection right after a POST drops the request's future, and the
//! node must not commit the write without its event (resuming clients and live queries could
//! not tell). Here the caller's future is dropped while the store is still answering.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use zeroservices_core::query::{ListQuery, Update};
use zeroservices_core::{
    medium::MemoryNetwork,
    resources::{Collection, ListPage, Resource, ResourceEvent, ResourceRequest},
    store::MemoryCollection,
    CollectionSpec, Node, Result,
};

/// A store that has written when it is still answering (as a store whose acknowledgement
/// comes late: a slow fsync, a remote database).
#[derive(Debug, Default)]
struct SlowAck(MemoryCollection);

const ACK_DELAY: Duration = Duration::from_millis(200);

#[async_trait]
impl Collection for SlowAck {
    async fn list(&self, q: &ListQuery) -> Result<ListPage> {
        self.0.list(q).await
    }
    async fn create(&self, id: Option<String>, data: Value) -> Result<Resource> {
        let r = self.0.create(id, data).await;
        tokio::time::sleep(ACK_DELAY).await;
        r
    }
    async fn insert(&self, id: Option<String>, data: Value) -> Result<String> {
        let r = self.0.insert(id, data).await;
        tokio::time::sleep(ACK_DELAY).await;
        r
    }
    async fn get(&self, id: &str) -> Result<Resource> {
        self.0.get(id).await
    }
    async fn patch(&self, id: &str, update: &Update) -> Result<Resource> {
        let r = self.0.patch(id, update).await;
        tokio::time::sleep(ACK_DELAY).await;
        r
    }
    async fn delete(&self, id: &str) -> Result<()> {
        let r = self.0.delete(id).await;
        tokio::time::sleep(ACK_DELAY).await;
        r
    }
}

/// Sends `req`, giving up (dropping the future) after 20 ms, while the store still answers.
async fn send_and_hang_up(node: &Node, req: ResourceRequest) {
    let gave_up = tokio::time::timeout(Duration::from_millis(20), node.send(req)).await;
    assert!(gave_up.is_err(), "the store answers after {ACK_DELAY:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_change_publishes_its_event_though_its_caller_stopped_waiting() {
    let net = MemoryNetwork::new();
    let node = Node::builder("n")
        .memory(&net)
        .collection(CollectionSpec::new("slow", Arc::new(SlowAck::default())))
        .start()
        .await
        .expect("start");
    let mut events = node.subscribe("slow");
    let create = |id: &str| {
        ResourceRequest::new(
            "slow",
            "create",
            json!({"resource_id": id, "resource_data": {"v": 1}}),
        )
    };
    for i in 0..5 {
        send_and_hang_up(&node, create(&format!("r{i}"))).await;
    }
    send_and_hang_up(
        &node,
        ResourceRequest::new("slow", "patch", json!({"patch": {"v": 2}})).on("r0"),
    )
    .await;
    send_and_hang_up(
        &node,
        ResourceRequest::new("slow", "delete", json!({})).on("r1"),
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 7 {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap_or_else(|_| panic!("after 10 s only these events: {seen:?}"))
            .expect("subscription open");
        let ev: ResourceEvent = serde_json::from_slice(&ev.payload).expect("an event");
        seen.push(format!("{}.{}", ev.action, ev.resource_id));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "create.r0",
            "create.r1",
            "create.r2",
            "create.r3",
            "create.r4",
            "delete.r1",
            "patch.r0"
        ]
    );
    let stored = node
        .collection("slow")
        .list(&ListQuery::default())
        .await
        .expect("list");
    assert_eq!(stored.total, 4, "r1 deleted, the rest stored");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_change_whose_caller_stopped_waiting() {
    let net = MemoryNetwork::new();
    let node = Node::builder("n")
        .memory(&net)
        .collection(CollectionSpec::new("slow", Arc::new(SlowAck::default())))
        .start()
        .await
        .expect("start");
    let mut events = node.subscribe("slow");
    let req = ResourceRequest::new(
        "slow",
        "create",
        json!({"resource_id": "x", "resource_data": {}}),
    );
    send_and_hang_up(&node, req).await;
    node.shutdown().await;
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert!(
        matches!(ev, Ok(Some(_))),
        "the event of the change in progress was published before the node stopped"
    );
}
