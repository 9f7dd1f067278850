//! The resource layer: collections served by nodes, the request that reaches them from any
//! node, the events every change publishes, and custom actions.
//!
//! A node hosts collections registered with [`CollectionSpec`]; [`Node::send`](crate::Node::send)
//! runs a [`ResourceRequest`] locally or on a provider found through discovery;
//! [`CollectionClient`] is the typed front of that call.

mod client;
mod collection;
mod hosted;
mod schema;

pub use self::client::CollectionClient;
pub use self::collection::{
    generate_id, list_in_memory, validate_data, validate_id, Collection, ListPage, Resource,
};
pub use self::hosted::{ActionContext, ActionFn, CollectionSpec, ResourceEvent, MAX_LIST_LIMIT};
pub(crate) use self::hosted::{Hosted, Output};
pub use self::schema::Schema;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
