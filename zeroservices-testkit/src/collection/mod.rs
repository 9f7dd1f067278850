//! The backend conformance cases: every operator, sort/skip/limit, projections, ids,
//! conflicts, not-found, updates, links, custom actions, events and schemas, through a real
//! node hosting the collection. One async function per case; [`crate::collection_suite`] makes
//! one test of each for a backend.

use std::sync::Arc;

use serde_json::{json, Value};
use zeroservices_core::{
    medium::MemoryNetwork, resources::Collection, CollectionClient, CollectionSpec, Error, Node,
};

use crate::{CollectionFactory, Failures};

mod hosting;
mod queries;
mod writes;

pub use self::hosting::{custom_actions, events, links, schema};
pub use self::queries::{bad_filters, filters, projections, sort_skip_limit};
pub use self::writes::{
    bad_updates, deep_documents, id_rules, ids_and_conflicts, large_nested_and_unknown,
    not_found_and_deletes, updates,
};

pub(crate) fn people() -> Vec<(&'static str, Value)> {
    vec![
        (
            "1",
            json!({"name": "ada", "age": 36, "tags": ["math", "code"], "addr": {"city": "london", "zip": "N1"}, "score": 9.5, "status": "pending", "bio": "First programmer, wrote notes"}),
        ),
        (
            "2",
            json!({"name": "alan", "age": 41, "tags": ["code", "crypto"], "addr": {"city": "manchester"}, "score": 8, "status": "done", "bio": "Broke codes at Bletchley"}),
        ),
        (
            "3",
            json!({"name": "grace", "age": 85, "tags": ["code", "navy"], "addr": {"city": "new york", "zip": "10001"}, "score": 9, "status": "pending", "bio": "Compilers and the first bug"}),
        ),
        (
            "4",
            json!({"name": "linus", "age": 54, "tags": [], "score": 7, "status": "done", "nick": null, "bio": "Kernel hacker"}),
        ),
        (
            "5",
            json!({"name": "Barbara", "age": 83, "tags": ["code"], "addr": {"city": "boston"}, "score": 9.5, "status": "pending", "items": [{"k": "a", "n": 1}, {"k": "b", "n": 5}]}),
        ),
        (
            "6",
            json!({"name": "edsger", "age": 72, "score": 6, "status": "archived", "bio": "Goto considered harmful"}),
        ),
    ]
}

/// A node on its own in-memory network, hosting `name` from a fresh collection of `make`.
pub(crate) async fn start_node(
    net: &MemoryNetwork,
    make: &CollectionFactory,
    name: &str,
    actions: Vec<&str>,
) -> (Node, Arc<dyn Collection>) {
    let store = make().await;
    let mut spec = CollectionSpec::new(name, store.clone());
    if actions.contains(&"increment") {
        spec = spec.action("increment", |ctx| async move {
            match ctx.resource_id {
                Some(id) => {
                    let by = ctx.args["by"].clone();
                    let r = ctx
                        .node
                        .collection(&ctx.collection)
                        .patch(&id, json!({"$inc": {"n": by}}))
                        .await?;
                    serde_json::to_value(r).map_err(|e| Error::Internal(e.to_string()))
                }
                None => Ok(json!({"collection_level": true})),
            }
        });
    }
    let node = Node::builder(name)
        .memory(net)
        .collection(spec)
        .start()
        .await
        .expect("start conformance node");
    (node, store)
}

/// A node hosting `people`, seeded with six people.
pub(crate) async fn people_node(
    make: &CollectionFactory,
    f: &mut Failures,
) -> (Node, CollectionClient) {
    let net = MemoryNetwork::new();
    let (node, _store) = start_node(&net, make, "people", vec![]).await;
    let client = node.collection("people");
    for (id, data) in people() {
        if let Err(e) = client.create(Some(id), data).await {
            f.push(format!("seed {id}: {e}"));
        }
    }
    (node, client)
}
