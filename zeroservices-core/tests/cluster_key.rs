//! Nodes sharing a cluster key talk over ZeroMQ (static discovery, requests, events); a node
//! with another key neither joins nor gets answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use zeroservices_core::{
    ClusterKey, CollectionSpec, Error, MemoryCollection, Node, StaticDiscovery, ZmqConfig,
};

async fn node(name: &str, key: Arc<ClusterKey>, seed: Option<String>, serve: bool) -> Node {
    let mut b = Node::builder(name)
        .zmq(ZmqConfig::loopback())
        .cluster_key(key)
        .heartbeat(Duration::from_millis(100))
        .timeout(Duration::from_millis(500));
    if let Some(s) = seed {
        b = b.discovery(StaticDiscovery::new([s]));
    }
    if serve {
        b = b.collection(CollectionSpec::new(
            "power",
            Arc::new(MemoryCollection::new()),
        ));
    }
    b.start().await.expect("node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_nodes_talk_and_a_wrong_key_gets_nothing() {
    let key = ClusterKey::new(b"a-shared-secret-of-32-bytes-long");
    let server = node("server", key.clone(), None, true).await;
    let seed = server.announcement().endpoints.request;
    let client = node("client", key, Some(seed.clone()), false).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.directory().providers("power").is_empty() {
        assert!(
            Instant::now() < deadline,
            "keyed client never discovered the keyed server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut events = client.subscribe("power");
    let deadline = Instant::now() + Duration::from_secs(5);
    let ev = loop {
        client
            .collection("power")
            .create(None, json!({"v": 1}))
            .await
            .expect("authenticated request");
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        {
            break ev;
        }
        assert!(Instant::now() < deadline, "no authenticated event arrived");
    };
    assert!(ev.topic.starts_with("power.create."));

    let intruder = node(
        "intruder",
        ClusterKey::new(b"another-secret-of-enough-length!"),
        Some(seed),
        false,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        intruder.directory().peers().is_empty(),
        "the wrong key joined"
    );
    assert!(
        server
            .directory()
            .peers()
            .iter()
            .all(|p| p.announcement.name != "intruder"),
        "the server listed the intruder"
    );
    match intruder.collection("power").get("x").await {
        Err(Error::NotFound(_)) => {} // never heard of `power`: nothing answered
        other => panic!("the intruder got {other:?}"),
    }
    for n in [client, intruder, server] {
        n.shutdown().await;
    }
}
