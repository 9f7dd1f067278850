//! Collection names: names reserved by the layers above (the HTTP node's routes, an example's
//! page) and names that would break topics or paths cannot be registered, at start or later; a
//! valid name can.

use std::sync::Arc;

use zeroservices_core::{
    medium::MemoryNetwork, store::MemoryCollection, CollectionSpec, Error, Node,
};

const RESERVED_NAMES: [&str; 2] = ["health", "ui"];

fn spec(name: &str) -> CollectionSpec {
    CollectionSpec::new(name, Arc::new(MemoryCollection::new()))
}

#[tokio::test]
async fn reserved_and_malformed_names_are_refused() {
    let net = MemoryNetwork::new();
    let mut refused = Vec::new();
    for name in RESERVED_NAMES
        .iter()
        .copied()
        .chain(["", "a.b", "a/b", "*", "_private"])
    {
        let at_start = Node::builder("n")
            .reserve_names(&RESERVED_NAMES)
            .memory(&net)
            .collection(spec(name))
            .start()
            .await;
        assert!(
            matches!(at_start, Err(Error::BadRequest(_))),
            "{name:?} accepted at start"
        );
        refused.push(name);
    }
    assert_eq!(refused.len(), RESERVED_NAMES.len() + 5);

    let node = Node::builder("n")
        .reserve_names(&RESERVED_NAMES)
        .memory(&net)
        .start()
        .await
        .expect("node");
    for name in RESERVED_NAMES {
        assert!(
            matches!(
                node.register_collection(spec(name)).await,
                Err(Error::BadRequest(_))
            ),
            "{name:?} registered later"
        );
    }
    node.register_collection(spec("power"))
        .await
        .expect("a valid name");
    assert_eq!(node.local_collections(), vec!["power".to_owned()]);
    node.shutdown().await;
}
