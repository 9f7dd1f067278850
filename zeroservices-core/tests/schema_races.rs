//! A schema holds under concurrent patches: it is checked on the document the store writes,
//! inside the store's atomic write, not on a preview read before it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;
use zeroservices_core::{
    medium::MemoryNetwork,
    resources::Collection,
    store::{EmbeddedStore, MemoryCollection},
    CollectionSpec, Error, Node,
};

async fn race(store: Arc<dyn Collection>) {
    let net = MemoryNetwork::new();
    let spec = CollectionSpec::new("counters", store)
        .schema(json!({"type": "object", "properties": {"n": {"type": "integer", "maximum": 10}}}))
        .expect("schema");
    let node = Node::builder("n")
        .memory(&net)
        .collection(spec)
        .start()
        .await
        .expect("start");
    let counters = node.collection("counters");
    counters
        .create(Some("c"), json!({"n": 0}))
        .await
        .expect("create");
    let refused = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (c, refused) = (counters.clone(), refused.clone());
            tokio::spawn(async move {
                match c.patch("c", json!({"$inc": {"n": 1}})).await {
                    Ok(_) => {}
                    Err(Error::Validation(_)) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let n = counters.get("c").await.expect("get").resource_data["n"].clone();
    assert_eq!(
        n,
        json!(10),
        "the schema's maximum was passed by concurrent patches"
    );
    assert_eq!(refused.load(Ordering::Relaxed), 30);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_cannot_pass_a_schema_limit_embedded() {
    let dir = std::env::temp_dir().join(format!("zs-schema-race-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = EmbeddedStore::open(&dir).expect("open");
    race(Arc::new(store.collection("counters"))).await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_cannot_pass_a_schema_limit_memory() {
    race(Arc::new(MemoryCollection::new())).await;
}
