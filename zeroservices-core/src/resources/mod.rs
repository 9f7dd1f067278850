//! The resource layer: the [`Collection`] trait every store implements, resources and pages,
//! schemas, the request that reaches a collection from any node, and the event every change
//! publishes. It knows nothing of nodes: the node layer hosts collections
//! (`CollectionSpec`, custom actions) and routes requests to them.

mod collection;
mod schema;

pub use self::collection::{
    generate_id, list_in_memory, validate_data, validate_id, Collection, ListPage, Resource,
};
pub use self::schema::Schema;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest `limit` a list accepts.
pub const MAX_LIST_LIMIT: u64 = 10_000;

/// A change event, as published on `<collection>.<action>.<resource_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceEvent {
    /// Collection name.
    pub collection: String,
    /// `create`, `patch`, `delete` (add_link publishes `patch`).
    pub action: String,
    /// The changed resource.
    pub resource_id: String,
    /// Full data after the change (create and patch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_data: Option<Value>,
    /// The update document (patch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
    /// Node that applied the change.
    pub node_id: String,
    /// Per-node monotonic sequence number.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
}

/// A resource action addressed to a collection, wherever it is served. Wire body of the
/// `resource` message kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRequest {
    /// Collection name.
    pub collection: String,
    /// `list`, `create`, `get`, `patch`, `delete`, `add_link` or a custom action.
    pub action: String,
    /// Target resource, for actions on one resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Action arguments (see docs/protocol.md, "Resource actions").
    #[serde(default)]
    pub args: Value,
}

impl ResourceRequest {
    /// A request without a resource id.
    pub fn new(collection: &str, action: &str, args: Value) -> ResourceRequest {
        ResourceRequest {
            collection: collection.into(),
            action: action.into(),
            resource_id: None,
            args,
        }
    }

    /// The same request, aimed at one resource.
    pub fn on(mut self, resource_id: &str) -> ResourceRequest {
        self.resource_id = Some(resource_id.into());
        self
    }

    /// True for actions without side effects (safe to retry on another provider).
    pub fn is_read_only(&self) -> bool {
        matches!(self.action.as_str(), "list" | "get")
    }
}
