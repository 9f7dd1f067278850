//! The resource layer: the [`Collection`] trait every store implements, resources and pages,
//! schemas, the request that reaches a collection from any node, and the event every change
//! publishes. It knows nothing of nodes: the node layer hosts collections
//! (`CollectionSpec`, custom actions) and routes requests to them.

mod args;
mod collection;
mod schema;

pub use self::args::{LinkArgs, StandardArgs};
pub use self::collection::{
    generate_id, list_in_memory, list_in_memory_by, validate_data, validate_id, Collection,
    ListPage, Resource,
};
pub use self::schema::Schema;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest `limit` a list accepts.
pub const MAX_LIST_LIMIT: u64 = 10_000;

/// `limit` of a list request that gives none (over HTTP, `GET /{c}` and `POST /{c}/list`, and
/// from other nodes alike).
pub const DEFAULT_LIST_LIMIT: u64 = 100;

/// A change event, as published on `<collection>.<action>.<resource_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceEvent {
    /// Collection name.
    pub collection: String,
    /// [`Action::Create`], [`Action::Patch`] or [`Action::Delete`] (`add_link` publishes a
    /// patch); its name on the wire.
    pub action: Action,
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
    /// W3C trace context of the change, when the node that made it traces (see
    /// [`crate::trace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// What a resource request does: a standard action, or a custom one of the collection. On
/// the wire it is the action's name (`"list"`, `"create"`, ..., or the custom name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Matching resources of the collection.
    List,
    /// A new resource.
    Create,
    /// One resource.
    Get,
    /// An update of one resource.
    Patch,
    /// Removes one resource.
    Delete,
    /// A link from one resource to another (stored as a patch).
    AddLink,
    /// A custom action registered with the collection.
    Custom(String),
}

impl Action {
    /// The action named `name` (a custom one unless it is a standard name).
    pub fn parse(name: &str) -> Action {
        match name {
            "list" => Action::List,
            "create" => Action::Create,
            "get" => Action::Get,
            "patch" => Action::Patch,
            "delete" => Action::Delete,
            "add_link" => Action::AddLink,
            other => Action::Custom(other.to_owned()),
        }
    }

    /// The action's name, as on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Action::List => "list",
            Action::Create => "create",
            Action::Get => "get",
            Action::Patch => "patch",
            Action::Delete => "delete",
            Action::AddLink => "add_link",
            Action::Custom(name) => name,
        }
    }

    /// True for actions without side effects (safe to retry on another provider).
    pub fn is_read_only(&self) -> bool {
        matches!(self, Action::List | Action::Get)
    }

    /// True for the standard actions (a custom action may not take their names).
    pub fn is_standard(&self) -> bool {
        !matches!(self, Action::Custom(_))
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Action {
    fn from(name: &str) -> Action {
        Action::parse(name)
    }
}

impl From<&String> for Action {
    fn from(name: &String) -> Action {
        Action::parse(name)
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Action, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Action::parse(&name))
    }
}

/// A resource action addressed to a collection, wherever it is served. Wire body of the
/// `resource` message kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRequest {
    /// Collection name.
    pub collection: String,
    /// The action.
    pub action: Action,
    /// Target resource, for actions on one resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Action arguments (see docs/protocol.md, "Resource actions").
    #[serde(default)]
    pub args: Value,
    /// A change sent again with the key of an earlier one answers what that one answered
    /// and changes nothing (see [`ResourceRequest::idempotent`]). Ignored on reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// W3C trace context of the caller, when it traces (see [`crate::trace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl ResourceRequest {
    /// A request without a resource id.
    pub fn new(collection: &str, action: impl Into<Action>, args: Value) -> ResourceRequest {
        ResourceRequest {
            collection: collection.into(),
            action: action.into(),
            resource_id: None,
            args,
            idempotency_key: None,
            traceparent: None,
        }
    }

    /// The same request, run at most once per `key` within 24 hours by the providers of the
    /// collection: a retry with the key answers what the first run answered, a different
    /// request with the key is refused (`Error::KeyReused`), and one sent while the first
    /// still runs is refused too (`Error::InProgress`). The key is the caller's: scope it
    /// (the HTTP API prefixes the signed-in user).
    ///
    /// ```
    /// use serde_json::json;
    /// use zeroservices_core::resources::ResourceRequest;
    ///
    /// let req = ResourceRequest::new("power", "create", json!({"resource_data": {"value": 2}}))
    ///     .idempotent("order-7f3a");
    /// assert_eq!(req.idempotency_key.as_deref(), Some("order-7f3a"));
    /// ```
    pub fn idempotent(mut self, key: &str) -> ResourceRequest {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The same request, aimed at one resource.
    pub fn on(mut self, resource_id: &str) -> ResourceRequest {
        self.resource_id = Some(resource_id.into());
        self
    }

    /// True for actions without side effects (safe to retry on another provider).
    pub fn is_read_only(&self) -> bool {
        self.action.is_read_only()
    }
}
