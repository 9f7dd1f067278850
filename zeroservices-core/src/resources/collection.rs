//! The [`Collection`] trait every backend implements, and the shapes it works with.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::query::{ListQuery, Update};

/// A resource: `{"resource_id": "...", "resource_data": {...}}` everywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Unique id within its collection.
    pub resource_id: String,
    /// The resource's data (a JSON object).
    pub resource_data: Value,
}

/// One page of a list: the resources and the number of matches ignoring skip and limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListPage {
    /// Matching resources after sort, skip, limit and projection.
    pub items: Vec<Resource>,
    /// Number of matches ignoring skip and limit.
    pub total: u64,
}

/// Storage of one collection. Object-safe (`Arc<dyn Collection>`); every backend passes the
/// conformance cases of the `zeroservices-testkit` crate.
///
/// ```
/// use serde_json::json;
/// use zeroservices_core::{resources::Collection, query::ListQuery, store::MemoryCollection};
///
/// # #[tokio::main] async fn main() -> zeroservices_core::Result<()> {
/// let store = MemoryCollection::new();
/// store.create(Some("1".into()), json!({"value": 2, "status": "pending"})).await?;
/// store.create(Some("2".into()), json!({"value": 3, "status": "done"})).await?;
/// let q = ListQuery::filtered(&json!({"status": "pending"}))?;
/// let page = store.list(&q).await?;
/// assert_eq!((page.total, page.items[0].resource_id.as_str()), (1, "1"));
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Collection: Send + Sync + fmt::Debug + 'static {
    /// Matching resources (see [`ListQuery`]).
    async fn list(&self, query: &ListQuery) -> Result<ListPage>;
    /// Stores a new resource; `id: None` generates one. An existing id is a `Conflict`.
    async fn create(&self, id: Option<String>, data: Value) -> Result<Resource>;
    /// [`Collection::create`] answering only the id, for callers that kept what they need of
    /// the data: a store that keeps the `Value` itself need not copy it. Same rules as `create`.
    async fn insert(&self, id: Option<String>, data: Value) -> Result<String> {
        Ok(self.create(id, data).await?.resource_id)
    }
    /// One resource, or `NotFound`.
    async fn get(&self, id: &str) -> Result<Resource>;
    /// Applies `update` and returns the resource after it, or `NotFound`.
    async fn patch(&self, id: &str, update: &Update) -> Result<Resource>;
    /// Removes a resource, or `NotFound`.
    async fn delete(&self, id: &str) -> Result<()>;
    /// Makes every acknowledged change durable (no-op for stores that are already).
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
    /// Declares a secondary index on a dotted path: lists filtering or sorting on it need not
    /// read the whole collection. Built now if missing, so call it before serving. Stores that
    /// keep no indexes (memory) ignore it.
    async fn ensure_index(&self, _path: &str) -> Result<()> {
        Ok(())
    }
    /// Identity of the storage behind this collection: equal for two values exactly when they
    /// read and write the same data (a MongoDB database: one identity for every node using it;
    /// each memory or embedded store: its own). Nodes announce it, and a collection is served
    /// only by providers sharing one (a node whose store differs refuses the collection). The
    /// default is unique to this value in this process: override it in a backend that nodes
    /// can share.
    async fn identity(&self) -> Result<String> {
        Ok(format!("process:{}:{:p}", process_token(), self))
    }
}

/// A random token of this process (for default store identities).
fn process_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| uuid::Uuid::new_v4().simple().to_string())
}

/// Checks a resource id: 1–512 bytes of UTF-8 without `/` or control characters.
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 512 {
        return Err(Error::BadRequest("resource id must be 1-512 bytes".into()));
    }
    if id.chars().any(|c| c == '/' || c.is_control()) {
        return Err(Error::BadRequest(
            "resource id must not contain '/' or control characters".into(),
        ));
    }
    Ok(())
}

/// Checks that resource data is a JSON object nesting at most [`crate::query::MAX_NESTING`] levels.
pub fn validate_data(data: &Value) -> Result<()> {
    if data.is_object() {
        crate::query::check_nesting(data)
    } else {
        Err(Error::BadRequest(
            "resource data must be a JSON object".into(),
        ))
    }
}

/// A new unique id of 32 hex digits: the creation time in milliseconds since the epoch (48 bits),
/// then 80 random bits from the thread's cryptographically secure generator (seeded from the OS
/// once, not a system call per id). Ids made later sort after earlier ones (like UUIDv7 and
/// MongoDB's ObjectId), so a store keyed by id appends instead of writing all over its tree;
/// 80 random bits keep them unguessable.
pub fn generate_id() -> String {
    use rand::Rng as _;
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() & ((1 << 48) - 1));
    let random = rand::thread_rng().gen::<u128>() & ((1 << 80) - 1);
    format!("{:032x}", (ms << 80) | random)
}

/// Filters, sorts, pages and projects `(id, data)` pairs: the list semantics shared by
/// backends that evaluate queries themselves.
pub fn list_in_memory<'a>(
    items: impl Iterator<Item = (&'a str, &'a Value)>,
    query: &ListQuery,
) -> Result<ListPage> {
    list_in_memory_by(items, query, str::cmp)
}

/// [`list_in_memory`] with ties (and lists without a sort) ordered by `ids` instead of by the
/// ids' text: for a store whose own order of ids is another (MongoDB orders string ids before
/// ObjectIds), so that what it evaluates itself and what its server evaluates agree.
pub fn list_in_memory_by<'a>(
    items: impl Iterator<Item = (&'a str, &'a Value)>,
    query: &ListQuery,
    ids: impl Fn(&str, &str) -> std::cmp::Ordering,
) -> Result<ListPage> {
    let filter = &query.filter;
    let mut hits: Vec<(&str, &Value)> = items.filter(|(_, d)| filter.matches(d)).collect();
    let total = hits.len() as u64;
    hits.sort_by(|(ia, a), (ib, b)| query.sort.compare_data(a, b).then_with(|| ids(ia, ib)));
    let skip = usize::try_from(query.skip).unwrap_or(usize::MAX);
    let limit = query
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let items = hits
        .into_iter()
        .skip(skip)
        .take(limit)
        .map(|(id, d)| Resource {
            resource_id: id.to_owned(),
            resource_data: query.fields.apply(d.clone()),
        })
        .collect();
    Ok(ListPage { items, total })
}
