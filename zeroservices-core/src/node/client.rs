//! Typed calls to one collection, wherever it is served.

use serde_json::{json, Value};

use super::NodeHandle;
use crate::error::{Error, Result};
use crate::query::ListQuery;
use crate::resources::{ListPage, Resource, ResourceRequest};

/// A handle on a collection of the cluster, from [`NodeHandle::collection`].
///
/// ```no_run
/// # async fn demo(node: zeroservices_core::Node) -> zeroservices_core::Result<()> {
/// use serde_json::json;
/// let power = node.collection("power");
/// let created = power.create(None, json!({"value": 7, "status": "pending"})).await?;
/// let again = power.get(&created.resource_id).await?;
/// power.patch(&again.resource_id, json!({"$set": {"status": "done"}})).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CollectionClient {
    node: NodeHandle,
    name: String,
}

impl CollectionClient {
    pub(crate) fn new(node: NodeHandle, name: &str) -> CollectionClient {
        CollectionClient {
            node,
            name: name.to_owned(),
        }
    }

    fn req(&self, action: &str, args: Value) -> ResourceRequest {
        ResourceRequest::new(&self.name, action, args)
    }

    /// Lists matching resources: at most `query.limit` of them, which may not exceed
    /// [`crate::resources::MAX_LIST_LIMIT`]; without a limit, the first
    /// [`crate::resources::DEFAULT_LIST_LIMIT`]. `total` counts every match.
    pub async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let args = serde_json::to_value(query).map_err(|e| Error::Internal(e.to_string()))?;
        self.node.send_as(self.req("list", args)).await
    }

    /// Creates a resource (`id: None` lets the store choose).
    pub async fn create(&self, id: Option<&str>, data: Value) -> Result<Resource> {
        let mut args = json!({ "resource_data": data });
        if let Some(id) = id {
            args["resource_id"] = json!(id);
        }
        self.node.send_as(self.req("create", args)).await
    }

    /// Gets one resource.
    pub async fn get(&self, id: &str) -> Result<Resource> {
        self.node.send_as(self.req("get", Value::Null).on(id)).await
    }

    /// Applies an update document.
    pub async fn patch(&self, id: &str, patch: Value) -> Result<Resource> {
        self.node
            .send_as(self.req("patch", json!({ "patch": patch })).on(id))
            .await
    }

    /// Deletes a resource.
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.node
            .send(self.req("delete", Value::Null).on(id))
            .await
            .map(|_| ())
    }

    /// Links resource `id` to `target` (`(collection, id)`) under `relation`.
    pub async fn add_link(
        &self,
        id: &str,
        relation: &str,
        target: (&str, &str),
        title: &str,
    ) -> Result<Resource> {
        let args = json!({"relation": relation, "target": [target.0, target.1], "title": title});
        self.node.send_as(self.req("add_link", args).on(id)).await
    }

    /// Runs a custom action on the collection or, with `id`, on one resource.
    pub async fn action(&self, name: &str, id: Option<&str>, args: Value) -> Result<Value> {
        let mut r = self.req(name, args);
        r.resource_id = id.map(str::to_owned);
        self.node.send(r).await
    }
}
