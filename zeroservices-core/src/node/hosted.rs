//! Collections hosted by this node: the store, its optional schema and custom actions, and the
//! execution of every action (which publishes the change as an event).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{json, Value};

use tracing::Instrument;

use super::idempotency::Idempotency;
use super::NodeHandle;
use crate::error::{Error, Result};
use crate::query::Update;
use crate::resources::{
    validate_id, Action, Collection, LinkArgs, Resource, ResourceRequest, Schema, StandardArgs,
    DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT,
};
use crate::trace;

/// What a custom action receives.
#[derive(Debug, Clone)]
pub struct ActionContext {
    /// The node running the action (to publish events or call other collections).
    pub node: NodeHandle,
    /// Collection name.
    pub collection: String,
    /// Target resource, for resource-level actions.
    pub resource_id: Option<String>,
    /// Arguments sent by the caller.
    pub args: Value,
    /// The collection's store.
    pub store: Arc<dyn Collection>,
}

/// A custom action handler.
pub type ActionFn = Arc<dyn Fn(ActionContext) -> BoxFuture<'static, Result<Value>> + Send + Sync>;

/// A collection to host: name, store, optional schema and custom actions.
///
/// ```
/// use std::sync::Arc;
/// use serde_json::json;
/// use zeroservices_core::{CollectionSpec, store::MemoryCollection};
///
/// let spec = CollectionSpec::new("power", Arc::new(MemoryCollection::new()))
///     .schema(json!({"type": "object", "properties": {"value": {"type": "number"}}}))
///     .unwrap()
///     .action("ping", |_ctx| async { Ok(json!("pong")) });
/// assert_eq!(spec.name(), "power");
/// ```
#[derive(Clone)]
pub struct CollectionSpec {
    name: String,
    store: Arc<dyn Collection>,
    schema: Option<Schema>,
    actions: HashMap<String, ActionFn>,
    indexes: Vec<String>,
    idempotency: Option<Arc<dyn Collection>>,
}

impl std::fmt::Debug for CollectionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectionSpec")
            .field("name", &self.name)
            .field("schema", &self.schema.is_some())
            .field("actions", &self.actions.keys().collect::<Vec<_>>())
            .field("indexes", &self.indexes)
            .finish()
    }
}

impl CollectionSpec {
    /// A collection named `name` stored in `store`.
    pub fn new(name: &str, store: Arc<dyn Collection>) -> CollectionSpec {
        CollectionSpec {
            name: name.to_owned(),
            store,
            schema: None,
            actions: HashMap::new(),
            indexes: Vec::new(),
            idempotency: None,
        }
    }

    /// Where the collection keeps its idempotency records (see
    /// [`crate::resources::ResourceRequest::idempotent`]): a collection of the same store as
    /// the data, so that the records survive a restart and every provider sharing the store
    /// shares them. Without one, they are kept in memory by this node only.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use zeroservices_core::{CollectionSpec, store::MemoryCollection};
    ///
    /// let spec = CollectionSpec::new("power", Arc::new(MemoryCollection::new()))
    ///     .idempotency_store(Arc::new(MemoryCollection::new()));
    /// # drop(spec);
    /// ```
    pub fn idempotency_store(mut self, store: Arc<dyn Collection>) -> CollectionSpec {
        self.idempotency = Some(store);
        self
    }

    /// Keeps a secondary index on the dotted `path` in the store (see
    /// [`Collection::ensure_index`]), built when the node starts if missing. Equality, `$in`
    /// and range filters on the path, sorting by it with a limit, and counts use it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use zeroservices_core::{CollectionSpec, store::MemoryCollection};
    ///
    /// let spec = CollectionSpec::new("power", Arc::new(MemoryCollection::new())).index("status");
    /// # drop(spec);
    /// ```
    pub fn index(mut self, path: &str) -> CollectionSpec {
        self.indexes.push(path.to_owned());
        self
    }

    /// Makes the declared indexes (before the node serves).
    pub(crate) async fn ensure_indexes(&self) -> Result<()> {
        for path in &self.indexes {
            if let Err(e) = self.store.ensure_index(path).await {
                tracing::error!(collection = %self.name, path = %path, error = %e, "cannot make the index");
                return Err(e);
            }
        }
        Ok(())
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Validates creates and patches against a JSON Schema (see [`Schema`]).
    pub fn schema(mut self, schema: Value) -> Result<CollectionSpec> {
        self.schema = Some(Schema::new(schema)?);
        Ok(self)
    }

    /// Registers a custom action, callable on the collection (`POST /{c}/{action}`) and on a
    /// resource (`POST /{c}/{id}/{action}`; then `ctx.resource_id` is set).
    pub fn action<F, Fut>(mut self, name: &str, f: F) -> CollectionSpec
    where
        F: Fn(ActionContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value>> + Send + 'static,
    {
        self.actions
            .insert(name.to_owned(), Arc::new(move |ctx| Box::pin(f(ctx))));
        self
    }

    /// The hosted form of the spec; `reserved`: names this node may not serve (routes of
    /// the HTTP layer above, see [`crate::NodeBuilder::reserve_names`]).
    pub(crate) fn into_hosted(self, reserved: &[String]) -> Result<Hosted> {
        check_collection_name(&self.name, reserved)?;
        if let Some(a) = self.actions.keys().find(|a| Action::parse(a).is_standard()) {
            return Err(Error::BadRequest(format!(
                "custom action {a:?} shadows a standard action"
            )));
        }
        Ok(Hosted {
            name: self.name,
            store: self.store,
            schema: self.schema,
            actions: self.actions,
            last_failure: Arc::new(parking_lot::Mutex::new(None)),
            idempotency: Arc::new(Idempotency::new(
                self.idempotency
                    .unwrap_or_else(|| Arc::new(crate::store::MemoryCollection::new())),
            )),
            order: Arc::new(super::ordering::WriteOrder::new()),
            leases: Arc::new(super::claims::Leases::default()),
        })
    }
}

/// Collection names: like ids, plus no dots (they separate event topic parts) and not reserved.
pub(crate) fn check_collection_name(name: &str, reserved: &[String]) -> Result<()> {
    validate_id(name)?;
    if name.contains('.') || name.contains('*') || name.starts_with('_') {
        return Err(Error::BadRequest(format!(
            "invalid collection name {name:?}"
        )));
    }
    if reserved.iter().any(|r| r == name) {
        return Err(Error::BadRequest(format!("{name:?} is reserved")));
    }
    Ok(())
}

/// A collection this node serves.
#[derive(Clone)]
pub(crate) struct Hosted {
    pub(crate) name: String,
    pub(crate) store: Arc<dyn Collection>,
    pub(crate) schema: Option<Schema>,
    pub(crate) actions: HashMap<String, ActionFn>,
    /// When the store last failed (a storage error), for `/health`.
    pub(crate) last_failure: Arc<parking_lot::Mutex<Option<std::time::Instant>>>,
    /// Answers of changes sent with an idempotency key.
    idempotency: Arc<Idempotency>,
    /// Keeps each resource's events in commit order (see `ordering`).
    order: Arc<super::ordering::WriteOrder>,
    /// Worker leases, when this node coordinates the collection's claims (see `claims`).
    pub(crate) leases: Arc<super::claims::Leases>,
}

impl std::fmt::Debug for Hosted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosted").field("name", &self.name).finish()
    }
}

fn need_id<'a>(action: &Action, resource_id: &'a Option<String>) -> Result<&'a str> {
    let id = resource_id
        .as_deref()
        .ok_or_else(|| Error::BadRequest(format!("{action} needs a resource_id")))?;
    validate_id(id)?;
    Ok(id)
}

/// What an action answers: a value, or JSON bytes already serialized (creates and patches,
/// whose data is serialized once for both the event and the answer).
#[derive(Debug)]
pub(crate) enum Output {
    Value(Value),
    Json(Vec<u8>),
}

impl Output {
    /// As a value (parsing the bytes of a `Json` answer).
    pub(crate) fn into_value(self) -> Result<Value> {
        match self {
            Output::Value(v) => Ok(v),
            Output::Json(b) => {
                serde_json::from_slice(&b).map_err(|e| Error::Internal(e.to_string()))
            }
        }
    }

    /// As JSON bytes (serializing a `Value` answer).
    pub(crate) fn into_json(self) -> Result<Vec<u8>> {
        match self {
            Output::Value(v) => to_json(&v),
            Output::Json(b) => Ok(b),
        }
    }
}

pub(crate) fn to_json(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(e.to_string()))
}

/// `{"resource_id": id, "resource_data": <data_json>}` around already serialized data.
fn resource_json(id: &str, data_json: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data_json.len() + id.len() + 40);
    out.extend_from_slice(br#"{"resource_id":"#);
    serde_json::to_writer(&mut out, id).map_err(|e| Error::Internal(e.to_string()))?;
    out.extend_from_slice(br#","resource_data":"#);
    out.extend_from_slice(data_json);
    out.push(b'}');
    Ok(out)
}

/// A resource as the JSON value actions answer with, built by moving (not copying) its data.
fn resource_value(r: Resource) -> Value {
    let mut m = serde_json::Map::with_capacity(2);
    m.insert("resource_id".into(), Value::String(r.resource_id));
    m.insert("resource_data".into(), r.resource_data);
    Value::Object(m)
}

fn to_value<T: Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::Internal(e.to_string()))
}

impl Hosted {
    /// [`Hosted::execute`] for a caller that may stop waiting (a local call made from an HTTP
    /// request, which its client can cancel by closing the connection): a change runs in a
    /// task of the node's tracker, so once it started its write and its event complete
    /// together whether or not anyone still waits, and the node's shutdown waits for it.
    /// Requests from peers need none: the dispatcher already runs them apart from the peer.
    pub(crate) async fn execute_detached(
        self: &Arc<Self>,
        node: &NodeHandle,
        req: ResourceRequest,
    ) -> Result<Output> {
        if req.is_read_only() {
            return self.execute(node, req).await;
        }
        let (h, n) = (self.clone(), node.clone());
        // The caller's span goes along, so the change is part of its trace.
        let span = match trace::enabled() {
            true => tracing::Span::current(),
            false => tracing::Span::none(),
        };
        node.inner
            .tracker
            .spawn(async move { h.execute(&n, req).await }.instrument(span))
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("the action failed: {e}"))))
    }

    /// Runs one action on this node's store and publishes the resulting event; a storage
    /// failure is remembered for `/health`.
    pub(crate) async fn execute(&self, node: &NodeHandle, req: ResourceRequest) -> Result<Output> {
        if !req.is_read_only() && node.writes_refused() {
            return Err(Error::Unavailable(
                "the node cannot save its event seq reservation (is its disk full?): writes are refused until it can".into(),
            ));
        }
        if trace::enabled() {
            let span = trace::span(
                &format!("handle {}.{}", self.name, req.action),
                "server",
                req.traceparent.as_deref(),
            );
            return self.execute_keyed(node, req).instrument(span).await;
        }
        self.execute_keyed(node, req).await
    }

    /// [`Hosted::execute`] once a refused write is ruled out: the idempotency key's answer, or
    /// the action.
    async fn execute_keyed(&self, node: &NodeHandle, req: ResourceRequest) -> Result<Output> {
        let out = match req.idempotency_key.clone() {
            Some(key) if !req.is_read_only() => {
                let idem = self.idempotency.clone();
                let run = self.run(node, req.clone());
                idem.run_once(&key, &req, run).await
            }
            _ => self.run(node, req).await,
        };
        if let Err(Error::Storage(_) | Error::Io(_)) = &out {
            *self.last_failure.lock() = Some(std::time::Instant::now());
        }
        out
    }

    async fn run(&self, node: &NodeHandle, req: ResourceRequest) -> Result<Output> {
        let ResourceRequest {
            action,
            resource_id,
            args,
            ..
        } = req;
        if let Action::Custom(name) = &action {
            let f = self.actions.get(name.as_str()).ok_or_else(|| {
                Error::NotFound(format!("collection {:?} has no action {name:?}", self.name))
            })?;
            if let Some(id) = &resource_id {
                validate_id(id)?;
            }
            let args = if args.is_null() { json!({}) } else { args };
            return f(ActionContext {
                node: node.clone(),
                collection: self.name.clone(),
                resource_id,
                args,
                store: self.store.clone(),
            })
            .await
            .map(Output::Value);
        }
        match StandardArgs::parse(&action, args)? {
            StandardArgs::List(mut q) => {
                // Every list request obeys the rules of `GET /{c}`, whoever sends it.
                match q.limit {
                    Some(l) if l > MAX_LIST_LIMIT => {
                        return Err(Error::BadRequest(format!(
                            "limit must be at most {MAX_LIST_LIMIT}"
                        )));
                    }
                    Some(_) => {}
                    None => q.limit = Some(DEFAULT_LIST_LIMIT),
                }
                to_value(&self.store.list(&q).await?).map(Output::Value)
            }
            StandardArgs::Create {
                resource_id,
                resource_data,
            } => self.create(node, resource_id, resource_data).await,
            StandardArgs::Get => Ok(Output::Value(resource_value(
                self.store.get(need_id(&action, &resource_id)?).await?,
            ))),
            StandardArgs::Patch(update) => {
                let id = need_id(&action, &resource_id)?;
                self.patch(node, id, &update).await
            }
            StandardArgs::Delete => {
                let id = need_id(&action, &resource_id)?;
                let _turn = self.order.turn(id).await;
                self.stored("delete", self.store.delete(id)).await?;
                node.publish_change(&self.name, "delete", id, None, None)
                    .await;
                Ok(Output::Value(json!({})))
            }
            StandardArgs::AddLink(link) => {
                let id = need_id(&action, &resource_id)?;
                self.add_link(node, id, link).await
            }
        }
    }

    /// A write to the store, in a span of its own when tracing is on.
    async fn stored<T>(&self, op: &str, write: impl Future<Output = Result<T>>) -> Result<T> {
        if !trace::enabled() {
            return write.await;
        }
        let span = trace::span(&format!("store {op} {}", self.name), "internal", None);
        write.instrument(span).await
    }

    async fn create(&self, node: &NodeHandle, id: Option<String>, data: Value) -> Result<Output> {
        if let Some(s) = &self.schema {
            s.validate(&data)?;
        }
        // Serialized once, before the store takes the data: the event and the answer are both
        // built from these bytes.
        let data_json = to_json(&data)?;
        let id = match id {
            Some(id) => {
                let _turn = self.order.turn(&id).await;
                let id = self
                    .stored("create", self.store.insert(Some(id), data))
                    .await?;
                node.publish_change(&self.name, "create", &id, Some(&data_json), None)
                    .await;
                id
            }
            None => {
                let id = self.stored("create", self.store.insert(None, data)).await?;
                let _turn = self.order.turn(&id).await;
                node.publish_change(&self.name, "create", &id, Some(&data_json), None)
                    .await;
                id
            }
        };
        Ok(Output::Json(resource_json(&id, &data_json)?))
    }

    async fn add_link(&self, node: &NodeHandle, id: &str, a: LinkArgs) -> Result<Output> {
        for part in [&a.relation, &a.target.0] {
            crate::query::check_path(part)?;
        }
        // Like the original: every link under its relation, and the latest link per target
        // collection.
        let update = Update::parse(&json!({
            "$push": {format!("_links.{}", a.relation): {"target_id": [a.target.0, a.target.1], "title": a.title}},
            "$set": {format!("_links.latest.{}", a.target.0): a.target.1},
        }))?;
        self.patch(node, id, &update).await
    }

    async fn patch(&self, node: &NodeHandle, id: &str, update: &Update) -> Result<Output> {
        // The schema is checked on the document the store writes, inside its atomic write.
        let _turn = self.order.turn(id).await;
        let r = match &self.schema {
            Some(s) => {
                let s = s.clone();
                let checked = update.clone().with_check(move |d| s.validate(d));
                self.stored("patch", self.store.patch(id, &checked)).await?
            }
            None => self.stored("patch", self.store.patch(id, update)).await?,
        };
        let data_json = to_json(&r.resource_data)?;
        node.publish_change(
            &self.name,
            "patch",
            id,
            Some(&data_json),
            Some(update.document()),
        )
        .await;
        Ok(Output::Json(resource_json(id, &data_json)?))
    }
}
