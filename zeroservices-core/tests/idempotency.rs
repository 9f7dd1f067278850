//! Idempotency keys on the provider: a change sent again with its key answers the first
//! answer and changes nothing (no second record, no second event), whichever provider of the
//! store gets it; another request under the key is refused; a failed one may be retried.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use zeroservices_core::query::ListQuery;
use zeroservices_core::resources::{Collection, ResourceRequest};
use zeroservices_core::{
    discovery::NoDiscovery, medium::MemoryNetwork, store::MemoryCollection, CollectionSpec, Error,
    Node,
};

struct Stores {
    data: Arc<MemoryCollection>,
    keys: Arc<MemoryCollection>,
}

impl Stores {
    fn new() -> Stores {
        Stores {
            data: Arc::new(MemoryCollection::new()),
            keys: Arc::new(MemoryCollection::new()),
        }
    }
}

/// A provider of `todos` over the given stores (two providers may share them).
async fn provider(net: &MemoryNetwork, s: &Stores) -> Node {
    let spec = CollectionSpec::new("todos", s.data.clone())
        .idempotency_store(s.keys.clone())
        .schema(json!({"type": "object", "required": ["title"]}))
        .expect("schema");
    Node::builder("provider")
        .memory(net)
        .discovery(NoDiscovery)
        .collection(spec)
        .start()
        .await
        .expect("node")
}

fn create(title: Value, key: &str) -> ResourceRequest {
    ResourceRequest::new(
        "todos",
        "create",
        json!({"resource_data": {"title": title}}),
    )
    .idempotent(key)
}

async fn count(c: &MemoryCollection) -> u64 {
    c.list(&ListQuery::default()).await.expect("list").total
}

#[tokio::test]
async fn a_retried_create_answers_the_first_answer_and_creates_once() {
    let (net, s) = (MemoryNetwork::new(), Stores::new());
    let node = provider(&net, &s).await;
    let mut events = node.subscribe("todos");
    let first = node.send(create(json!("milk"), "k1")).await.expect("first");
    let again = node.send(create(json!("milk"), "k1")).await.expect("retry");
    assert_eq!(first, again, "the retry answers what the first answered");
    assert_eq!(count(&s.data).await, 1, "one record");
    // A create without a key is not deduplicated: it is the marker after which no second
    // event of the keyed create can still be on its way.
    node.send(ResourceRequest::new(
        "todos",
        "create",
        json!({"resource_data": {"title": "marker"}}),
    ))
    .await
    .expect("marker");
    let mut titles = Vec::new();
    while titles.last().map(String::as_str) != Some("marker") {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("events arrive")
            .expect("subscription open");
        let data = ev.json().expect("event json");
        titles.push(
            data["resource_data"]["title"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
    }
    assert_eq!(titles, ["milk", "marker"], "one event for the keyed create");
}

#[tokio::test]
async fn a_patch_and_a_delete_replay_too() {
    let (net, s) = (MemoryNetwork::new(), Stores::new());
    let node = provider(&net, &s).await;
    let made = node.send(create(json!("a"), "make")).await.expect("create");
    let id = made["resource_id"].as_str().expect("id").to_owned();
    let inc = || {
        ResourceRequest::new("todos", "patch", json!({"patch": {"$inc": {"n": 1}}}))
            .on(&id)
            .idempotent("inc")
    };
    let p1 = node.send(inc()).await.expect("patch");
    let p2 = node.send(inc()).await.expect("patch again");
    assert_eq!(p1, p2);
    assert_eq!(p2["resource_data"]["n"], 1, "incremented once");
    let del = || {
        ResourceRequest::new("todos", "delete", Value::Null)
            .on(&id)
            .idempotent("del")
    };
    node.send(del()).await.expect("delete");
    node.send(del())
        .await
        .expect("a retried delete answers as the first did, not 404");
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused() {
    let (net, s) = (MemoryNetwork::new(), Stores::new());
    let node = provider(&net, &s).await;
    node.send(create(json!("milk"), "k")).await.expect("first");
    let err = node
        .send(create(json!("eggs"), "k"))
        .await
        .expect_err("another body under the same key");
    assert!(matches!(err, Error::KeyReused(_)), "got {err:?}");
    assert_eq!(count(&s.data).await, 1);
    // Key order in the arguments is not a difference.
    let reordered = ResourceRequest::new(
        "todos",
        "create",
        serde_json::from_str(r#"{"resource_data": {"title": "x", "n": 1}}"#).expect("json"),
    );
    let a = node
        .send(reordered.clone().idempotent("order"))
        .await
        .expect("a");
    let b = ResourceRequest::new(
        "todos",
        "create",
        serde_json::from_str(r#"{"resource_data": {"n": 1, "title": "x"}}"#).expect("json"),
    );
    assert_eq!(node.send(b.idempotent("order")).await.expect("b"), a);
}

#[tokio::test]
async fn a_failed_request_leaves_the_key_free() {
    let (net, s) = (MemoryNetwork::new(), Stores::new());
    let node = provider(&net, &s).await;
    let bad = ResourceRequest::new("todos", "create", json!({"resource_data": {"no": "title"}}))
        .idempotent("k");
    let err = node.send(bad).await.expect_err("schema violation");
    assert!(matches!(err, Error::Validation(_)), "got {err:?}");
    assert_eq!(count(&s.keys).await, 0, "no record of a failure");
    node.send(create(json!("fixed"), "k"))
        .await
        .expect("the corrected request runs");
    assert_eq!(count(&s.data).await, 1);
}

#[tokio::test]
async fn every_provider_of_the_store_shares_the_records() {
    let (net, s) = (MemoryNetwork::new(), Stores::new());
    let a = provider(&net, &s).await;
    let b = provider(&net, &s).await;
    let first = a.send(create(json!("milk"), "k")).await.expect("on a");
    let again = b.send(create(json!("milk"), "k")).await.expect("on b");
    assert_eq!(first, again);
    assert_eq!(count(&s.data).await, 1);
}

#[tokio::test]
async fn a_running_request_is_not_run_twice_and_old_records_expire() {
    let (net, s) = (MemoryNetwork::new(), Stores::new());
    let node = provider(&net, &s).await;
    // Records as a provider leaves them: one still running (started now), one expired.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let id = |key: &str| {
        use sha2::Digest;
        sha2::Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    // The provider's fingerprint: JSON with sorted keys (one key per object here, so plain
    // serialization gives the same text).
    let fp_of = |req: &ResourceRequest| {
        use sha2::Digest;
        let doc = json!([req.collection, req.action, req.resource_id, req.args]);
        sha2::Sha256::digest(serde_json::to_vec(&doc).expect("json"))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let running = create(json!("r"), "running");
    s.keys
        .create(
            Some(id("running")),
            json!({"fingerprint": fp_of(&running), "state": "pending", "started_ms": now, "expires_ms": now + 86_400_000}),
        )
        .await
        .expect("plant");
    let err = node.send(running).await.expect_err("still running");
    assert!(matches!(err, Error::InProgress(_)), "got {err:?}");
    let old = create(json!("o"), "old");
    s.keys
        .create(
            Some(id("old")),
            json!({"fingerprint": "something else", "state": "done", "answer": {"stale": true}, "started_ms": 0, "expires_ms": now - 1}),
        )
        .await
        .expect("plant");
    let fresh = node.send(old).await.expect("an expired key is free again");
    assert_eq!(fresh["resource_data"]["title"], "o");
    assert_eq!(count(&s.data).await, 1);
}
