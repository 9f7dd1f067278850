//! What the node adds around a collection: links, events, custom actions, schemas.

use std::time::{Duration, Instant};

use serde_json::json;
use zeroservices_core::{
    medium::MemoryNetwork, resources::ResourceEvent, CollectionSpec, Error, Node,
};

use super::{people_node, start_node};
use crate::{CollectionFactory, Failures};

/// `add_link`: links under their relation, the latest per target; not on a missing resource.
pub async fn links(make: &CollectionFactory) {
    let mut f = Failures::new("links");
    let (node, client) = people_node(make, &mut f).await;
    let linked = client
        .add_link("1", "friend", ("people", "2"), "Alan")
        .await;
    let linked2 = client
        .add_link("1", "friend", ("people", "3"), "Grace")
        .await;
    match (linked, linked2) {
        (Ok(_), Ok(r)) => {
            let l = &r.resource_data["_links"];
            if l["friend"].as_array().map(Vec::len) != Some(2) || l["latest"]["people"] != "3" {
                f.push(format!("add_link shape: {l}"));
            } else {
                f.pass();
            }
        }
        other => f.push(format!("add_link: {other:?}")),
    }
    if !matches!(
        client
            .add_link("nope", "friend", ("people", "1"), "x")
            .await,
        Err(Error::NotFound(_))
    ) {
        f.push("add_link on a missing resource".into());
    }
    node.shutdown().await;
    f.finish();
}

/// Changes publish events: topic, action, consecutive seq, node id, data and patch.
pub async fn events(make: &CollectionFactory) {
    let mut f = Failures::new("events");
    let (node, client) = people_node(make, &mut f).await;
    let mut events = node.subscribe("people");
    // Events leave in order: once a marker's event arrives, the seeds' are behind us.
    let _ = client.create(Some("marker"), json!({})).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Some(ev)) if ev.topic.as_ref() == "people.create.marker" => break,
            Ok(Some(_)) => continue,
            _ => {
                f.push("the marker's event never came".into());
                break;
            }
        }
    }
    let _ = client
        .add_link("1", "friend", ("people", "2"), "Alan")
        .await;
    let _ = client
        .add_link("1", "friend", ("people", "3"), "Grace")
        .await;
    let _ = client.create(Some("ev1"), json!({"v": 1})).await;
    let _ = client.patch("ev1", json!({"$inc": {"v": 1}})).await;
    let _ = client.delete("ev1").await;
    let mut got: Vec<ResourceEvent> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 5 && Instant::now() < deadline {
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await
        {
            if let Ok(e) = serde_json::from_slice::<ResourceEvent>(&ev.payload) {
                // Earlier changes of this suite may still be on their way; keep only ours.
                if e.resource_id != "1" && e.resource_id != "ev1" {
                    continue;
                }
                if ev.topic.as_ref() != format!("{}.{}.{}", e.collection, e.action, e.resource_id) {
                    f.push(format!("event topic {} does not match payload", ev.topic));
                } else {
                    f.pass();
                }
                got.push(e);
            }
        }
    }
    let actions: Vec<&str> = got.iter().map(|e| e.action.as_str()).collect();
    if actions != ["patch", "patch", "create", "patch", "delete"] {
        f.push(format!("events: {actions:?}"));
    } else {
        f.pass();
    }
    if got.windows(2).any(|w| w[1].seq != w[0].seq + 1)
        || got.iter().any(|e| e.node_id != node.node_id() || e.ts == 0)
    {
        f.push("event seq not consecutive, or node_id/ts wrong".into());
    }
    if got
        .get(3)
        .map(|e| (e.resource_data.clone(), e.patch.clone()))
        != Some((Some(json!({"v": 2})), Some(json!({"$inc": {"v": 1}}))))
    {
        f.push(format!("patch event payload: {:?}", got.get(3)));
    }
    if got.get(4).map(|e| e.resource_data.is_none()) != Some(true) {
        f.push("delete event must not carry data".into());
    } else {
        f.pass();
    }

    node.shutdown().await;
    f.finish();
}

/// Custom actions on a resource and on the collection; unknown actions are `NotFound`.
pub async fn custom_actions(make: &CollectionFactory) {
    let mut f = Failures::new("custom_actions");
    let net = MemoryNetwork::new();
    let (anode, _store) = start_node(&net, make, "counters", vec!["increment"]).await;
    let counters = anode.collection("counters");
    let _ = counters.create(Some("c"), json!({"n": 1})).await;
    match counters
        .action("increment", Some("c"), json!({"by": 4}))
        .await
    {
        Ok(v) if v["resource_data"]["n"] == 5 => f.pass(),
        other => f.push(format!("resource action: {other:?}")),
    }
    match counters.action("increment", None, json!({})).await {
        Ok(v) if v == json!({"collection_level": true}) => f.pass(),
        other => f.push(format!("collection action: {other:?}")),
    }
    if !matches!(
        counters.action("nope", None, json!({})).await,
        Err(Error::NotFound(_))
    ) {
        f.push("unknown action must be NotFound".into());
    }

    anode.shutdown().await;
    f.finish();
}

/// A schema refuses invalid creates and patches, and a refused patch changes nothing.
pub async fn schema(make: &CollectionFactory) {
    let mut f = Failures::new("schema");
    let net = MemoryNetwork::new();
    let schema_spec = CollectionSpec::new("typed", make().await)
        .schema(json!({"type": "object", "required": ["value"], "properties": {"value": {"type": "number"}}}))
        .expect("schema");
    let tnode = Node::builder("typed")
        .memory(&net)
        .collection(schema_spec)
        .start()
        .await
        .expect("typed node");
    let typed = tnode.collection("typed");
    if typed.create(Some("t"), json!({"value": 1})).await.is_err() {
        f.push("schema: valid create rejected".into());
    } else {
        f.pass();
    }
    match typed.create(None, json!({"value": "x"})).await {
        Err(Error::Validation(p)) if p.iter().any(|s| s.contains("/value")) => f.pass(),
        other => f.push(format!("schema create: {other:?}")),
    }
    match typed.patch("t", json!({"$unset": {"value": ""}})).await {
        Err(Error::Validation(_))
            if typed
                .get("t")
                .await
                .map(|r| r.resource_data == json!({"value": 1}))
                .unwrap_or(false) =>
        {
            f.pass()
        }
        other => f.push(format!("schema patch: {other:?}")),
    }

    tnode.shutdown().await;
    f.finish();
}
