//! A store that fails is reported by the node (for `/health`): the collection is listed as
//! failing after a storage error, and not before.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use zeroservices_core::query::{ListQuery, Update};
use zeroservices_core::{
    medium::MemoryNetwork,
    resources::{Collection, ListPage, Resource},
    CollectionSpec, Error, Node, Result,
};

/// Reads work, writes fail as a full disk would.
#[derive(Debug)]
struct FullDisk;

#[async_trait]
impl Collection for FullDisk {
    async fn list(&self, _: &ListQuery) -> Result<ListPage> {
        Ok(ListPage {
            items: Vec::new(),
            total: 0,
        })
    }
    async fn create(&self, _: Option<String>, _: Value) -> Result<Resource> {
        Err(Error::Storage("no space left on device".into()))
    }
    async fn get(&self, id: &str) -> Result<Resource> {
        Err(Error::NotFound(id.to_owned()))
    }
    async fn patch(&self, id: &str, _: &Update) -> Result<Resource> {
        Err(Error::NotFound(id.to_owned()))
    }
    async fn delete(&self, id: &str) -> Result<()> {
        Err(Error::NotFound(id.to_owned()))
    }
}

#[tokio::test]
async fn a_failing_store_is_reported_and_a_not_found_is_not() {
    let net = MemoryNetwork::new();
    let node = Node::builder("n")
        .memory(&net)
        .collection(CollectionSpec::new("disk", Arc::new(FullDisk)))
        .start()
        .await
        .expect("start");
    let disk = node.collection("disk");
    let window = Duration::from_secs(30);
    assert!(disk.get("x").await.is_err());
    assert!(
        node.failing_collections(window).is_empty(),
        "NotFound is no failure"
    );
    assert!(matches!(
        disk.create(None, json!({})).await,
        Err(Error::Storage(_))
    ));
    assert_eq!(node.failing_collections(window), vec!["disk".to_owned()]);
    assert!(node.failing_collections(Duration::ZERO).is_empty());
    node.shutdown().await;
}
