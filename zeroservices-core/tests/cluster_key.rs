//! Nodes sharing a cluster key talk over ZeroMQ (static discovery, requests, events); a node
//! with another key neither joins nor gets answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use zeroservices_core::{
    discovery::StaticDiscovery, medium::ZmqConfig, store::MemoryCollection, ClusterKey,
    CollectionSpec, Error, Node,
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
    let client = node("client", key.clone(), Some(seed.clone()), false).await;
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
        Some(seed.clone()),
        false,
    )
    .await;
    // A marker instead of a quiet period: a keyed node started after the intruder, on the
    // same seed, joins; by then the intruder had the same chances.
    let witness = node("witness", key, Some(seed), false).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while witness.directory().providers("power").is_empty() {
        assert!(Instant::now() < deadline, "the keyed witness never joined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// Sends `frames` on a fresh DEALER to `endpoint`; the reply's frames if one comes within
/// `wait`.
fn raw_exchange(endpoint: &str, frames: &[bytes::Bytes], wait: Duration) -> Option<Vec<Vec<u8>>> {
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::DEALER).expect("dealer");
    s.set_linger(0).expect("linger");
    s.connect(endpoint).expect("connect");
    let parts: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    s.send_multipart(parts, 0).expect("send");
    match s.poll(
        zmq::POLLIN,
        i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
    ) {
        Ok(n) if n > 0 => s.recv_multipart(0).ok(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_captured_on_its_way_to_one_provider_is_dropped_by_another() {
    use zeroservices_core::fuzzing::seal_request;
    use zeroservices_core::medium::MessageKind;
    use zeroservices_core::resources::ResourceRequest;

    // Two providers with the key, each with its own replay memory (two processes).
    let secret = b"a-shared-secret-of-32-bytes-long";
    let a = node("a", ClusterKey::new(secret), None, true).await;
    let b = node("b", ClusterKey::new(secret), None, true).await;
    // What a keyed client sent to `a`, as captured on the wire: a create.
    let create = ResourceRequest::new("power", "create", json!({"resource_data": {"v": 1}}));
    let body = serde_json::to_vec(&create).expect("json");
    let frames = seal_request(
        &ClusterKey::new(secret),
        a.node_id(),
        bytes::Bytes::from_static(b"1"),
        MessageKind::Resource,
        bytes::Bytes::from(body),
    );
    let (to_a, to_b) = (
        a.announcement().endpoints.request,
        b.announcement().endpoints.request,
    );
    let (replayed, delivered) = tokio::task::spawn_blocking(move || {
        // Replayed to `b` first (so its nonce is fresh there), then delivered to `a`.
        let replayed = raw_exchange(&to_b, &frames, Duration::from_secs(1));
        let delivered = raw_exchange(&to_a, &frames, Duration::from_secs(5));
        (replayed, delivered)
    })
    .await
    .expect("exchanges");
    assert!(replayed.is_none(), "b answered a request meant for a");
    assert!(delivered.is_some(), "a answers the request meant for it");
    let q = zeroservices_core::query::ListQuery::default();
    let (in_a, in_b) = (
        a.collection("power").list(&q).await.expect("list a").total,
        b.collection("power").list(&q).await.expect("list b").total,
    );
    assert_eq!((in_a, in_b), (1, 0), "created once, on a only");
}
