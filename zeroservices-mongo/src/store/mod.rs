//! The MongoDB store and its collections.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::raw::{RawBson, RawBsonRef, RawDocument, RawDocumentBuf};
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database, IndexModel};
use serde_json::Value;
use tokio::sync::OnceCell;
use zeroservices_core::query::{ListQuery, Update};
use zeroservices_core::resources::{list_in_memory_by, validate_data, validate_id};
use zeroservices_core::{
    resources::{Collection, ListPage, Resource},
    Error, Result,
};

use crate::convert::{id_filter, json_to_raw, map_error, raw_to_resource, to_document, VERSION};
use crate::pushdown;

mod server;
use self::server::id_kind;
use crate::recent::{Known, Recent, Stored, DEFAULT_RECENT};

/// How long a request waits for an unreachable server before answering `Unavailable`.
const SERVER_WAIT: Duration = Duration::from_secs(3);

/// A MongoDB database reached from a URI such as `mongodb://127.0.0.1:27017/power_db`
/// (database `zeroservices` when the URI names none). Cheap to clone.
#[derive(Debug, Clone)]
pub struct MongoStore {
    db: Database,
    /// Where the data lives, as far as this node can tell (see [`Collection::identity`]).
    place: Arc<str>,
}

impl MongoStore {
    /// Parses the URI and prepares the client. The server need not be up yet: requests fail
    /// with `Unavailable` within a few seconds until it is, and the driver reconnects by itself.
    pub async fn connect(uri: &str) -> Result<MongoStore> {
        let mut opts = ClientOptions::parse(uri)
            .await
            .map_err(|e| Error::BadRequest(format!("invalid MongoDB URI: {e}")))?;
        opts.server_selection_timeout = Some(SERVER_WAIT);
        opts.connect_timeout = Some(SERVER_WAIT);
        opts.app_name = Some("zeroservices".into());
        let name = opts
            .default_database
            .clone()
            .unwrap_or_else(|| "zeroservices".into());
        // The hosts as written in the URI (sorted), the replica set and the database: nodes
        // given the same servers under the same names share the identity.
        let mut hosts: Vec<String> = opts
            .hosts
            .iter()
            .map(|h| h.to_string().to_lowercase())
            .collect();
        hosts.sort();
        let place = format!(
            "{}{}/{name}",
            hosts.join(","),
            opts.repl_set_name
                .as_deref()
                .map(|r| format!("?replicaSet={r}"))
                .unwrap_or_default()
        );
        let client = Client::with_options(opts).map_err(map_error)?;
        Ok(MongoStore {
            db: client.database(&name),
            place: Arc::from(place),
        })
    }

    /// A store on a client made elsewhere, e.g. with the driver's command monitoring:
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use zeroservices_mongo::mongodb::{self, event::{command::CommandEvent, EventHandler}};
    /// use mongodb::options::ClientOptions;
    ///
    /// let mut opts = ClientOptions::parse("mongodb://127.0.0.1:27017").await?;
    /// opts.command_event_handler = Some(EventHandler::callback(|e: CommandEvent| {
    ///     if let CommandEvent::Succeeded(s) = e {
    ///         println!("{} took {:?}", s.command_name, s.duration);
    ///     }
    /// }));
    /// let store = zeroservices_mongo::MongoStore::from_client(mongodb::Client::with_options(opts)?, "power_db");
    /// # drop(store); Ok(()) }
    /// ```
    ///
    /// Its store identity is the database name alone (the driver does not tell which servers a
    /// client was given): nodes using one database name must use one deployment.
    pub fn from_client(client: Client, database: &str) -> MongoStore {
        MongoStore {
            db: client.database(database),
            place: Arc::from(format!("client/{database}")),
        }
    }

    /// The database name.
    pub fn database_name(&self) -> &str {
        self.db.name()
    }

    /// The collection `name`.
    pub fn collection(&self, name: &str) -> MongoCollection {
        MongoCollection {
            identity: Arc::from(format!("mongodb:{}/{name}", self.place)),
            coll: self.db.collection(name),
            raw: self.db.collection(name),
            indexes: Vec::new(),
            indexes_made: Arc::new(OnceCell::new()),
            cache: Arc::new(Mutex::new(Recent::new(DEFAULT_RECENT))),
        }
    }

    /// Drops the whole database (tests).
    pub async fn drop_database(&self) -> Result<()> {
        self.db.drop().await.map_err(map_error)
    }
}

/// A collection stored in MongoDB.
///
/// Patches are compare-and-swap writes guarded by a version field `_v` that every ZeroServices
/// node increments; a document starts at a random version, so one deleted and created again
/// under the same id never matches a version remembered from before. The collection remembers the last state it wrote or read of recently used
/// documents (at most [`MongoCollection::recent`] of them, default 10 000, and about 64 MiB;
/// documents over 1 MiB are not remembered), so that a patch usually takes one
/// round trip: the update is applied to the remembered state and written only if the stored
/// version is still the remembered one; otherwise the document is read again and the patch
/// retried. A program writing the same documents without ZeroServices must increment `_v` on
/// every change (or the collection must be built with `recent(0)`), else a patch can be
/// applied to a state that program has since changed.
#[derive(Debug, Clone)]
pub struct MongoCollection {
    identity: Arc<str>,
    coll: mongodb::Collection<Document>,
    /// The same collection, read and written as raw BSON: documents nest up to
    /// `MAX_NESTING` levels, and the driver's recursive conversions to `Document` need more
    /// stack than a worker thread has at that depth (see `convert::raw_to_json`).
    raw: mongodb::Collection<RawDocumentBuf>,
    indexes: Vec<IndexModel>,
    /// Set once the declared indexes exist (made before the first list, create or patch).
    indexes_made: Arc<OnceCell<()>>,
    // A blocking (parking_lot) Mutex: lookups and inserts only, never held across an await.
    cache: Arc<Mutex<Recent>>,
}

/// Read–apply–write attempts of one patch before it answers `Conflict`.
const PATCH_ATTEMPTS: u32 = 32;

fn version_of(d: &RawDocument) -> Option<i64> {
    match d.get(VERSION).ok().flatten() {
        Some(RawBsonRef::Int64(v)) => Some(v),
        Some(RawBsonRef::Int32(v)) => Some(i64::from(v)),
        Some(RawBsonRef::Double(v)) if v.fract() == 0.0 => Some(v as i64),
        _ => None,
    }
}

/// A stored document read: what a compare-and-swap write needs of it, and the resource.
fn read(d: &RawDocument) -> Result<(Stored, Resource)> {
    let (r, id) = raw_to_resource(d)?;
    Ok((
        Stored {
            id,
            version: version_of(d),
        },
        r,
    ))
}

/// `data` as a stored document with `_id` and the version field.
fn stored_document(data: &Value, id: &Bson, version: i64) -> Result<RawDocumentBuf> {
    let mut d = json_to_raw(data)?;
    let id = RawBson::try_from(id.clone())
        .map_err(|e| Error::Internal(format!("cannot encode _id: {e}")))?;
    d.append("_id", id);
    d.append(VERSION, version);
    Ok(d)
}

impl MongoCollection {
    /// Declares an index, e.g. `{"status": 1}`; `unique` makes a duplicate a `Conflict`. Declared
    /// indexes are made before the collection's first list, create or patch (or by
    /// [`MongoCollection::ensure_indexes`]); if the server is unreachable then, the operation
    /// fails and the next one tries again.
    ///
    /// ```no_run
    /// # async fn demo(store: zeroservices_mongo::MongoStore) -> zeroservices_core::Result<()> {
    /// let users = store.collection("users").index(serde_json::json!({"email": 1}), true)?;
    /// # drop(users); Ok(()) }
    /// ```
    pub fn index(mut self, keys: Value, unique: bool) -> Result<MongoCollection> {
        self.indexes_made = Arc::new(OnceCell::new());
        let opts = mongodb::options::IndexOptions::builder()
            .unique(unique)
            .build();
        self.indexes.push(
            IndexModel::builder()
                .keys(to_document(&keys)?)
                .options(opts)
                .build(),
        );
        Ok(self)
    }

    /// Remembers at most `n` documents for one-round-trip patches (0: every patch reads the
    /// document first). See the type's documentation.
    pub fn recent(self, n: usize) -> MongoCollection {
        MongoCollection {
            cache: Arc::new(Mutex::new(Recent::new(n))),
            ..self
        }
    }

    fn recent_lock(&self) -> parking_lot::MutexGuard<'_, Recent> {
        self.cache.lock()
    }

    /// Writes `data` as the next version of the document `at`, if it is still at that version.
    /// `Ok(None)` when it changed (or went) meanwhile.
    async fn write_next(&self, id: &str, at: &Stored, data: Value) -> Result<Option<Resource>> {
        let version = at.version.unwrap_or(0) + 1;
        let next = stored_document(&data, &at.id, version)?;
        let mut filter = doc! {"_id": at.id.clone()};
        match at.version {
            Some(v) => filter.insert(VERSION, v),
            None => filter.insert(VERSION, doc! {"$exists": false}),
        };
        let r = self
            .raw
            .replace_one(filter, next)
            .await
            .map_err(map_error)?;
        if r.matched_count == 0 {
            return Ok(None);
        }
        self.recent_lock().remember(
            id,
            Known {
                at: Stored {
                    id: at.id.clone(),
                    version: Some(version),
                },
                data: data.clone(),
            },
        );
        Ok(Some(Resource {
            resource_id: id.to_owned(),
            resource_data: data,
        }))
    }

    /// Reads a document: what a compare-and-swap write needs of it, and the resource.
    async fn fetch(&self, id: &str) -> Result<(Stored, Resource)> {
        let d = self
            .raw
            .find_one(id_filter(id))
            .await
            .map_err(map_error)?
            .ok_or_else(|| not_found(id))?;
        read(&d)
    }

    /// Makes the declared indexes now (idempotent; also done before the first write).
    pub async fn ensure_indexes(&self) -> Result<()> {
        if self.indexes.is_empty() {
            return Ok(());
        }
        self.indexes_made
            .get_or_try_init(|| async {
                self.coll
                    .create_indexes(self.indexes.clone())
                    .await
                    .map(|_| ())
                    .map_err(map_error)
            })
            .await
            .map(|_| ())
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("resource {id:?} not found"))
}

#[async_trait]
impl Collection for MongoCollection {
    async fn identity(&self) -> Result<String> {
        Ok(self.identity.to_string())
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        self.ensure_indexes().await?;
        let pushed = pushdown::filter(query.filter.doc());
        if pushed.exact {
            if let Some(page) = self.list_on_server(&pushed.filter, query).await? {
                return Ok(page);
            }
        }
        // The server narrows with what translates; the node applies the whole query.
        let docs: Vec<RawDocumentBuf> = self
            .raw
            .find(pushed.filter)
            .await
            .map_err(map_error)?
            .try_collect()
            .await
            .map_err(map_error)?;
        let mut kinds = std::collections::HashMap::with_capacity(docs.len());
        let rows = docs
            .iter()
            .map(|d| {
                let (r, stored_id) = raw_to_resource(d)?;
                kinds.insert(r.resource_id.clone(), id_kind(&stored_id));
                Ok(r)
            })
            .collect::<Result<Vec<_>>>()?;
        // Ties in MongoDB's order of `_id`, as on the server: by kind, then by value.
        let kind = |id: &str| kinds.get(id).copied().unwrap_or(0);
        list_in_memory_by(
            rows.iter()
                .map(|r| (r.resource_id.as_str(), &r.resource_data)),
            query,
            |a, b| (kind(a), a).cmp(&(kind(b), b)),
        )
    }

    async fn create(&self, id: Option<String>, data: Value) -> Result<Resource> {
        self.ensure_indexes().await?;
        validate_data(&data)?;
        if data.get("_id").is_some() {
            return Err(Error::BadRequest(
                "_id is reserved in the MongoDB store".into(),
            ));
        }
        if data.get(VERSION).is_some() {
            return Err(Error::BadRequest(format!(
                "{VERSION} is reserved in the MongoDB store"
            )));
        }
        // A random first version: a document recreated under the same id never takes a
        // version that another node may still remember from the deleted one (a patch from
        // that stale copy would otherwise match and bring the old data back). Below 2^52,
        // so versions stay exact in any JSON reader and can grow.
        let first = rand::Rng::gen_range(&mut rand::thread_rng(), 1..(1i64 << 52));
        let (id, stored_id) = match id {
            Some(id) => {
                validate_id(&id)?;
                // A client id looking like an ObjectId must not collide with a generated one
                // (another id that exists already is refused by `_id`'s uniqueness: conflict).
                if ObjectId::parse_str(&id).is_ok()
                    && self
                        .coll
                        .count_documents(id_filter(&id))
                        .await
                        .map_err(map_error)?
                        > 0
                {
                    return Err(Error::Conflict(format!("resource {id:?} already exists")));
                }
                (id.clone(), Bson::String(id))
            }
            None => {
                let oid = ObjectId::new();
                (oid.to_hex(), Bson::ObjectId(oid))
            }
        };
        let d = stored_document(&data, &stored_id, first)?;
        self.raw.insert_one(d).await.map_err(map_error)?;
        self.recent_lock().remember(
            &id,
            Known {
                at: Stored {
                    id: stored_id,
                    version: Some(first),
                },
                data: data.clone(),
            },
        );
        Ok(Resource {
            resource_id: id,
            resource_data: data,
        })
    }

    async fn get(&self, id: &str) -> Result<Resource> {
        let (at, r) = self.fetch(id).await?;
        let data = r.resource_data.clone();
        self.recent_lock().remember(id, Known { at, data });
        Ok(r)
    }

    async fn patch(&self, id: &str, update: &Update) -> Result<Resource> {
        self.ensure_indexes().await?;
        if let Some(r) = self.patch_on_server(id, update).await? {
            return Ok(r);
        }
        // First from the remembered state (one round trip when nobody else wrote since).
        let remembered = self.recent_lock().get(id);
        if let Some(Known { at, mut data }) = remembered {
            // An update that does not apply to the remembered state may apply to the stored
            // one: only the stored state decides errors, below.
            if update.apply(&mut data).is_ok() {
                if let Some(r) = self.write_next(id, &at, data).await? {
                    return Ok(r);
                }
            }
            self.recent_lock().forget(id);
        }
        // Read, apply with the shared semantics, write back only if nobody wrote in between;
        // retried on a lost race, after a random pause that grows with the attempts (so that
        // writers racing for one document spread out instead of colliding again).
        for attempt in 0..PATCH_ATTEMPTS {
            if attempt > 0 {
                let cap_us = 200u64 << attempt.min(6);
                let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 0..cap_us);
                tokio::time::sleep(Duration::from_micros(pause)).await;
            }
            // Not remembered here: a successful write remembers the state it wrote.
            let (at, r) = self.fetch(id).await?;
            let mut data = r.resource_data;
            update.apply(&mut data)?;
            if let Some(r) = self.write_next(id, &at, data).await? {
                return Ok(r);
            }
        }
        Err(Error::Conflict(format!(
            "resource {id:?} is patched concurrently too often; retry"
        )))
    }

    async fn ensure_index(&self, path: &str) -> Result<()> {
        zeroservices_core::query::check_path(path)?;
        self.ensure_indexes().await?;
        self.coll
            .create_index(IndexModel::builder().keys(doc! { path: 1 }).build())
            .await
            .map(|_| ())
            .map_err(map_error)
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let r = self
            .coll
            .delete_one(id_filter(id))
            .await
            .map_err(map_error)?;
        self.recent_lock().forget(id);
        if r.deleted_count == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }
}
