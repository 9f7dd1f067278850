//! A request handler that panics costs its own request only: the caller hears an error at
//! once and the node goes on serving (on a current-thread runtime the dispatcher polls a
//! handler inline first, so a panic there must not take the dispatcher with it). And a
//! runtime that ends with nodes still connected (no `shutdown`) ends: it used to hang in
//! libzmq when a dealer's monitor reader went before the monitor was stopped.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use zeroservices_core::{
    discovery::StaticDiscovery, medium::ZmqConfig, Error, Node, NodeHandle, Service,
};

struct Fragile;

#[async_trait]
impl Service for Fragile {
    async fn on_message(&self, _node: &NodeHandle, msg: Value) -> zeroservices_core::Result<Value> {
        if msg["panic"] == true {
            panic!("handler panics on purpose");
        }
        Ok(json!({"echo": msg}))
    }
}

/// Heartbeats of 1 s: a panic's backtrace (`RUST_BACKTRACE=1`, a debug build) stalls a
/// current-thread node for a few hundred ms, which with 100 ms heartbeats expired the peer.
async fn pair() -> (Node, Node, String) {
    let server = Node::builder("fragile")
        .zmq(ZmqConfig::loopback())
        .service(Fragile)
        .heartbeat(Duration::from_secs(1))
        .start()
        .await
        .expect("server");
    let client = Node::builder("caller")
        .zmq(ZmqConfig::loopback())
        .discovery(StaticDiscovery::new([server
            .announcement()
            .endpoints
            .request
            .clone()]))
        .heartbeat(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .start()
        .await
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(5);
    let id = loop {
        if let Some(p) = client.directory().peers().into_iter().next() {
            break p.announcement.node_id;
        }
        assert!(Instant::now() < deadline, "server never discovered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    (server, client, id)
}

async fn panics_cost_one_request(client: &Node, id: &str) {
    for _ in 0..3 {
        let started = Instant::now();
        let err = client
            .request(id, json!({"panic": true}))
            .await
            .expect_err("a panicking handler has no result");
        assert!(
            matches!(err, Error::Internal(_)),
            "expected an internal error, got {err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the caller waited {:?} instead of hearing at once",
            started.elapsed()
        );
        let ok = client
            .request(id, json!({"n": 1}))
            .await
            .expect("the node still serves after a handler panicked");
        assert_eq!(ok, json!({"echo": {"n": 1}}));
    }
}

#[tokio::test]
async fn a_panicking_handler_on_a_current_thread_runtime() {
    let (_server, client, id) = pair().await;
    panics_cost_one_request(&client, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_on_a_multi_thread_runtime() {
    let (_server, client, id) = pair().await;
    panics_cost_one_request(&client, &id).await;
}

#[test]
fn a_runtime_dropped_with_connected_nodes_ends() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..3 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let (server, client, id) = pair().await;
                client.request(&id, json!({"n": 1})).await.expect("served");
                // No shutdown: the nodes' tasks are dropped with the runtime, in no set
                // order, while the client's dealer is connected to the server.
                drop((server, client));
            });
            drop(rt);
        }
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("dropping a runtime with connected nodes hung");
}

/// A service whose `on_event` panics on events of resource `bad` and reports the others.
struct FragileListener(tokio::sync::mpsc::UnboundedSender<String>);

#[async_trait]
impl Service for FragileListener {
    async fn on_event(&self, _node: &NodeHandle, topic: &str, _data: Value) {
        if topic.ends_with(".bad") {
            panic!("on_event panics on purpose");
        }
        let _ = self.0.send(topic.to_owned()); // the test may have ended
    }
    fn subscriptions(&self) -> Vec<String> {
        vec!["c".into()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_event_hook_that_panics_costs_its_event_only() {
    use std::sync::Arc;
    use zeroservices_core::{medium::MemoryNetwork, store::MemoryCollection, CollectionSpec};

    let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let node = Node::builder("listener")
        .memory(&MemoryNetwork::new())
        .service(FragileListener(tx))
        .collection(CollectionSpec::new("c", Arc::new(MemoryCollection::new())))
        .start()
        .await
        .expect("node");
    let c = node.collection("c");
    for id in ["bad", "good"] {
        c.create(Some(id), json!({})).await.expect("create");
    }
    let next = tokio::time::timeout(Duration::from_secs(10), heard.recv()).await;
    assert_eq!(
        next.ok().flatten().as_deref(),
        Some("c.create.good"),
        "the event after the panic is delivered"
    );
    node.shutdown().await;
}
