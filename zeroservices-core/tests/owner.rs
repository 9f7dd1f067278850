//! The owner and its handles: [`Node`] stops the node (in order with `shutdown`, at once when
//! dropped) and reports what went wrong; a [`NodeHandle`] never keeps the node running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use zeroservices_core::discovery::DiscoveryContext;
use zeroservices_core::{
    discovery::Discovery, medium::MemoryNetwork, store::MemoryCollection, CollectionSpec, Node,
    NodeHandle,
};

/// A discovery that panics as soon as it runs.
#[derive(Debug)]
struct Panicking;

#[async_trait]
impl Discovery for Panicking {
    async fn run(self: Box<Self>, _ctx: DiscoveryContext) -> zeroservices_core::Result<()> {
        panic!("discovery bug");
    }
}

/// A discovery that ignores the shutdown signal (and says when it was dropped).
#[derive(Debug)]
struct Stuck(Arc<AtomicBool>);

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl Discovery for Stuck {
    async fn run(self: Box<Self>, _ctx: DiscoveryContext) -> zeroservices_core::Result<()> {
        let _dropped = SetOnDrop(self.0.clone());
        std::future::pending::<()>().await;
        Ok(())
    }
}

async fn node_with(discovery: impl Discovery) -> Node {
    Node::builder("owned")
        .memory(&MemoryNetwork::new())
        .discovery(discovery)
        .collection(CollectionSpec::new("c", Arc::new(MemoryCollection::new())))
        .start()
        .await
        .expect("node")
}

#[tokio::test]
async fn a_clean_shutdown_reports_nothing() {
    let node = node_with(zeroservices_core::discovery::NoDiscovery).await;
    node.collection("c")
        .create(None, json!({"v": 1}))
        .await
        .expect("create");
    let report = node.shutdown().await;
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test]
async fn shutdown_reports_a_task_that_panicked() {
    let node = node_with(Panicking).await;
    // The node serves on without its discovery.
    node.collection("c")
        .create(None, json!({"v": 1}))
        .await
        .expect("create");
    let report = node.shutdown().await;
    assert_eq!(report.panicked, vec!["discovery"], "{report:?}");
    assert!(!report.is_clean());
}

#[tokio::test]
async fn shutdown_aborts_a_task_that_does_not_stop() {
    let dropped = Arc::new(AtomicBool::new(false));
    let node = node_with(Stuck(dropped.clone())).await;
    let started = Instant::now();
    let report = node.shutdown().await;
    assert_eq!(report.aborted, vec!["discovery"], "{report:?}");
    // Aborted: its future is dropped, not left running.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dropped.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the stuck task was never dropped"
        );
        tokio::task::yield_now().await;
    }
    println!("shutdown with a stuck task took {:?}", started.elapsed());
}

#[tokio::test]
async fn handles_do_not_keep_the_node_running() {
    let node = node_with(zeroservices_core::discovery::NoDiscovery).await;
    let handle: NodeHandle = node.handle();
    let stopped = handle.shutdown_token();
    assert!(!stopped.is_cancelled());
    drop(node);
    assert!(
        stopped.is_cancelled(),
        "the node runs on after its owner was dropped"
    );
    // A call through the leftover handle fails cleanly instead of hanging.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        handle.collection("c").create(None, json!({"v": 2})),
    )
    .await
    .expect("a call through a handle of a stopped node returns");
    println!("create through a stopped node's handle: {r:?}");
}
