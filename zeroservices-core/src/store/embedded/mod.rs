//! The embedded persistent store: every collection is a table of one redb database file,
//! `<dir>/zeroservices.redb`. A change is acknowledged only after the transaction holding it is
//! committed (fsynced), so an acknowledged change survives SIGKILL and power loss. Concurrent
//! changes share transactions and fsyncs: see [`GroupCommit`].

mod group_commit;
mod index;
mod keys;
mod list;
mod tables;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::query::{ListQuery, Update};
use crate::resources::{generate_id, validate_data, validate_id, Collection, ListPage, Resource};

use self::group_commit::Committer;
pub use self::group_commit::GroupCommit;
use self::tables::Tables;

/// One database file holding any number of collections. Cheap to clone; the file is closed when
/// the last clone (and the last of its collections) is dropped.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    committer: Arc<Committer>,
    /// Random, made when the file is created (see [`Collection::identity`]).
    store_id: Arc<str>,
}

/// Facts about the database file itself.
const META: TableDefinition<'_, &str, &str> = TableDefinition::new("zeroservices:meta");

/// The database's identity, made and stored on first open.
fn store_id(db: &Database) -> Result<String> {
    {
        let tx = db.begin_read().map_err(storage)?;
        match tx.open_table(META) {
            Ok(t) => {
                if let Some(v) = t.get("store_id").map_err(storage)? {
                    return Ok(v.value().to_owned());
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(storage(e)),
        }
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tx = db.begin_write().map_err(storage)?;
    tx.open_table(META)
        .map_err(storage)?
        .insert("store_id", id.as_str())
        .map_err(storage)?;
    tx.commit().map_err(storage)?;
    Ok(id)
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

impl EmbeddedStore {
    /// Opens (creating if missing) the store in directory `dir`, with the default
    /// [`GroupCommit`] bounds.
    pub fn open(dir: impl AsRef<Path>) -> Result<EmbeddedStore> {
        Self::open_with(dir, GroupCommit::default())
    }

    /// Opens (creating if missing) the store in directory `dir`; concurrent writes are committed
    /// together within the `group_commit` bounds.
    ///
    /// ```
    /// # fn main() -> zeroservices_core::Result<()> {
    /// use std::time::Duration;
    /// use zeroservices_core::store::{EmbeddedStore, GroupCommit};
    ///
    /// let dir = std::env::temp_dir().join(format!("zs-doc-{}", std::process::id()));
    /// let store = EmbeddedStore::open_with(
    ///     &dir,
    ///     GroupCommit { max_batch: 64, max_wait: Duration::from_micros(200) },
    /// )?;
    /// let _power = store.collection("power");
    /// # drop((_power, store));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn open_with(dir: impl AsRef<Path>, group_commit: GroupCommit) -> Result<EmbeddedStore> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let db = Arc::new(Database::create(dir.join("zeroservices.redb")).map_err(storage)?);
        let store_id = Arc::from(store_id(&db)?);
        let committer = Arc::new(Committer::start(db.clone(), group_commit)?);
        Ok(EmbeddedStore {
            db,
            committer,
            store_id,
        })
    }

    /// The collection `name` in this store (its table is created on first write).
    pub fn collection(&self, name: &str) -> EmbeddedCollection {
        EmbeddedCollection {
            db: self.db.clone(),
            committer: self.committer.clone(),
            table: Arc::from(format!("collection:{name}")),
            store_id: self.store_id.clone(),
        }
    }
}

/// A collection stored in an [`EmbeddedStore`].
#[derive(Debug, Clone)]
pub struct EmbeddedCollection {
    db: Arc<Database>,
    committer: Arc<Committer>,
    table: Arc<str>,
    store_id: Arc<str>,
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("resource {id:?} not found"))
}

fn decode(bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| Error::Storage(format!("corrupt record: {e}")))
}

impl EmbeddedCollection {
    fn def(&self) -> TableDefinition<'_, &'static str, &'static [u8]> {
        TableDefinition::new(&self.table)
    }

    /// Runs `f` on the transaction's tables, with this collection's table name, in the next
    /// group commit; answers once it is durable.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tables<'_>, &Arc<str>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let table = self.table.clone();
        self.committer.write(move |tables| f(tables, &table)).await
    }

    /// Declares a secondary index on the dotted `path` (see [`Collection::ensure_index`]): built
    /// now from the records already stored if it does not exist yet, then kept in the same
    /// transaction as every write. An index is kept until the store is deleted, whether or not
    /// later runs declare it.
    pub async fn index(&self, path: &str) -> Result<()> {
        crate::query::check_path(path)?;
        let path = path.to_owned();
        let built = self
            .write(move |tables, table| tables.build_index(table, &path))
            .await?;
        if built {
            tracing::info!(collection = %self.table, "index built");
        }
        Ok(())
    }

    /// Runs blocking redb reads off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database, TableDefinition<'_, &'static str, &'static [u8]>) -> Result<T>
            + Send
            + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this.db, this.def()))
            .await
            .map_err(|e| Error::Internal(format!("storage task failed: {e}")))?
    }

    /// Reads one record; `Ok(None)` when missing (or when the table does not exist yet).
    fn read_one(
        db: &Database,
        def: TableDefinition<'_, &'static str, &'static [u8]>,
        id: &str,
    ) -> Result<Option<Value>> {
        let tx = db.begin_read().map_err(storage)?;
        let table = match tx.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        match table.get(id).map_err(storage)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl Collection for EmbeddedCollection {
    async fn identity(&self) -> Result<String> {
        Ok(format!("embedded:{}/{}", self.store_id, self.table))
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let query = query.clone();
        let table = self.table.clone();
        self.blocking(move |db, def| list::list(db, def, &table, &query))
            .await
    }

    async fn ensure_index(&self, path: &str) -> Result<()> {
        self.index(path).await
    }

    async fn create(&self, id: Option<String>, data: Value) -> Result<Resource> {
        validate_data(&data)?;
        let id = match id {
            Some(id) => {
                validate_id(&id)?;
                id
            }
            None => generate_id(),
        };
        // Serialized before the write joins a batch: only the store's own work runs there.
        let bytes = serde_json::to_vec(&data).map_err(storage)?;
        self.write(move |tables, name| {
            let table = tables.get(name)?;
            // One descent of the tree: insert, and put the old record back if there was one
            // (same transaction, so nobody sees the swap).
            let old = table
                .insert(id.as_str(), bytes.as_slice())
                .map_err(storage)?
                .map(|v| v.value().to_vec());
            if let Some(old) = old {
                table.insert(id.as_str(), old.as_slice()).map_err(storage)?;
                return Err(Error::Conflict(format!("resource {id:?} already exists")));
            }
            tables.reindex(name, &id, None, Some(&data))?;
            Ok(Resource {
                resource_id: id,
                resource_data: data,
            })
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Resource> {
        let id = id.to_owned();
        self.blocking(move |db, def| {
            let data = Self::read_one(db, def, &id)?.ok_or_else(|| not_found(&id))?;
            Ok(Resource {
                resource_id: id,
                resource_data: data,
            })
        })
        .await
    }

    async fn patch(&self, id: &str, update: &Update) -> Result<Resource> {
        let (id, update) = (id.to_owned(), update.clone());
        self.write(move |tables, name| {
            let indexed = !tables.indexes(name)?.is_empty();
            let table = tables.get(name)?;
            let mut data = match table.get(id.as_str()).map_err(storage)? {
                Some(v) => decode(v.value())?,
                None => return Err(not_found(&id)),
            };
            let old = indexed.then(|| data.clone());
            // Changes a copy: a failing update leaves the stored record as it was.
            update.apply(&mut data)?;
            let bytes = serde_json::to_vec(&data).map_err(storage)?;
            table
                .insert(id.as_str(), bytes.as_slice())
                .map_err(storage)?;
            if let Some(old) = old {
                tables.reindex(name, &id, Some(&old), Some(&data))?;
            }
            Ok(Resource {
                resource_id: id,
                resource_data: data,
            })
        })
        .await
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.write(move |tables, name| {
            let indexed = !tables.indexes(name)?.is_empty();
            let old = match tables.get(name)?.remove(id.as_str()).map_err(storage)? {
                Some(v) if indexed => decode(v.value()).ok(),
                Some(_) => None,
                None => return Err(not_found(&id)),
            };
            if let Some(old) = old {
                tables.reindex(name, &id, Some(&old), None)?;
            }
            Ok(())
        })
        .await
    }
}
