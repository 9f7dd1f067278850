//! The MongoDB store and its collections.

use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use mongodb::options::{ClientOptions, ReturnDocument};
use mongodb::{Client, Database, IndexModel};
use serde_json::Value;
use zeroservices_core::query::{ListQuery, Update};
use zeroservices_core::resources::{list_in_memory, validate_data, validate_id};
use zeroservices_core::{Collection, Error, ListPage, Resource, Result};

use crate::convert::{id_filter, map_error, to_bson, to_document, to_resource};

/// How long a request waits for an unreachable server before answering `Unavailable`.
const SERVER_WAIT: Duration = Duration::from_secs(3);

/// A MongoDB database reached from a URI such as `mongodb://127.0.0.1:27017/power_db`
/// (database `zeroservices` when the URI names none). Cheap to clone.
#[derive(Debug, Clone)]
pub struct MongoStore {
    db: Database,
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
        let client = Client::with_options(opts).map_err(map_error)?;
        Ok(MongoStore {
            db: client.database(&name),
        })
    }

    /// The database name.
    pub fn database_name(&self) -> &str {
        self.db.name()
    }

    /// The collection `name`.
    pub fn collection(&self, name: &str) -> MongoCollection {
        MongoCollection {
            coll: self.db.collection(name),
            indexes: Vec::new(),
        }
    }

    /// Drops the whole database (tests).
    pub async fn drop_database(&self) -> Result<()> {
        self.db.drop().await.map_err(map_error)
    }
}

/// A collection stored in MongoDB.
#[derive(Debug, Clone)]
pub struct MongoCollection {
    coll: mongodb::Collection<Document>,
    indexes: Vec<IndexModel>,
}

impl MongoCollection {
    /// Declares an index (created by [`MongoCollection::ensure_indexes`]), e.g. `{"status": 1}`.
    pub fn index(mut self, keys: Value, unique: bool) -> Result<MongoCollection> {
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

    /// Creates the declared indexes.
    pub async fn ensure_indexes(&self) -> Result<()> {
        if !self.indexes.is_empty() {
            self.coll
                .create_indexes(self.indexes.clone())
                .await
                .map_err(map_error)?;
        }
        Ok(())
    }
}

/// Field holding a document's version, for compare-and-swap patches. Hidden from resources.
pub(crate) const VERSION: &str = "_v";

/// The part of a filter every MongoDB-compatible server evaluates the same way: top-level
/// equalities on strings, numbers and booleans (AND-ed). The server narrows with it; the node
/// then applies the whole filter with the shared semantics, so results are identical on
/// MongoDB and on partial implementations such as nx-27017.
fn prefilter(f: &Value) -> Document {
    let mut d = Document::new();
    if let Value::Object(o) = f {
        for (k, v) in o {
            let simple = !k.starts_with('$') && !k.contains('.') && k != VERSION && k != "_id";
            if simple && (v.is_string() || v.is_number() || v.is_boolean()) {
                if let Ok(b) = to_bson(v) {
                    d.insert(k.clone(), b);
                }
            }
        }
    }
    d
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("resource {id:?} not found"))
}

#[async_trait]
impl Collection for MongoCollection {
    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        query.parsed_filter()?; // reject a bad query before touching the server
        let docs: Vec<Document> = self
            .coll
            .find(prefilter(&query.filter))
            .await
            .map_err(map_error)?
            .try_collect()
            .await
            .map_err(map_error)?;
        let rows = docs
            .into_iter()
            .map(to_resource)
            .collect::<Result<Vec<_>>>()?;
        list_in_memory(
            rows.iter()
                .map(|r| (r.resource_id.as_str(), &r.resource_data)),
            query,
        )
    }

    async fn create(&self, id: Option<String>, data: Value) -> Result<Resource> {
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
        let mut d = to_document(&data)?;
        d.insert(VERSION, 1i64);
        let id = match id {
            Some(id) => {
                validate_id(&id)?;
                // A client id looking like an ObjectId must not collide with a generated one.
                if self
                    .coll
                    .count_documents(id_filter(&id))
                    .await
                    .map_err(map_error)?
                    > 0
                {
                    return Err(Error::Conflict(format!("resource {id:?} already exists")));
                }
                d.insert("_id", Bson::String(id.clone()));
                id
            }
            None => {
                let oid = ObjectId::new();
                d.insert("_id", Bson::ObjectId(oid));
                oid.to_hex()
            }
        };
        self.coll.insert_one(d).await.map_err(map_error)?;
        Ok(Resource {
            resource_id: id,
            resource_data: data,
        })
    }

    async fn get(&self, id: &str) -> Result<Resource> {
        let d = self
            .coll
            .find_one(id_filter(id))
            .await
            .map_err(map_error)?
            .ok_or_else(|| not_found(id))?;
        to_resource(d)
    }

    async fn patch(&self, id: &str, update: &Update) -> Result<Resource> {
        // Read, apply with the shared semantics, write back only if nobody wrote in between
        // (compare-and-swap on the version field); retried on a lost race.
        for _ in 0..16 {
            let current = self
                .coll
                .find_one(id_filter(id))
                .await
                .map_err(map_error)?
                .ok_or_else(|| not_found(id))?;
            let stored_id = current.get("_id").cloned().unwrap_or(Bson::Null);
            let version = current.get(VERSION).cloned();
            let mut r = to_resource(current)?;
            update.apply(&mut r.resource_data)?;
            let mut next = to_document(&r.resource_data)?;
            let v = match &version {
                Some(Bson::Int64(v)) => *v,
                Some(Bson::Int32(v)) => i64::from(*v),
                _ => 0,
            };
            next.insert("_id", stored_id.clone());
            next.insert(VERSION, v + 1);
            let mut filter = doc! {"_id": stored_id};
            if let Some(ver) = version {
                filter.insert(VERSION, ver);
            }
            let replaced = self
                .coll
                .find_one_and_replace(filter, next)
                .return_document(ReturnDocument::After)
                .await
                .map_err(map_error)?;
            match replaced {
                Some(d) => return to_resource(d),
                None => continue, // changed (or deleted) meanwhile: read again
            }
        }
        Err(Error::Conflict(format!(
            "resource {id:?} is patched concurrently too often; retry"
        )))
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let r = self
            .coll
            .delete_one(id_filter(id))
            .await
            .map_err(map_error)?;
        if r.deleted_count == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }
}
