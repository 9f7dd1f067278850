//! The embedded persistent store: every collection is a table of one redb database file,
//! `<dir>/zeroservices.redb`. Each change is one committed (fsynced) transaction before it is
//! acknowledged, so an acknowledged change survives SIGKILL and power loss.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::query::{ListQuery, Update};
use crate::resources::{
    generate_id, list_in_memory, validate_data, validate_id, Collection, ListPage, Resource,
};

/// One database file holding any number of collections. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

impl EmbeddedStore {
    /// Opens (creating if missing) the store in directory `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<EmbeddedStore> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join("zeroservices.redb")).map_err(storage)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    /// The collection `name` in this store (its table is created on first write).
    pub fn collection(&self, name: &str) -> EmbeddedCollection {
        EmbeddedCollection {
            db: self.db.clone(),
            table: format!("collection:{name}"),
        }
    }
}

/// A collection stored in an [`EmbeddedStore`].
#[derive(Debug, Clone)]
pub struct EmbeddedCollection {
    db: Arc<Database>,
    table: String,
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

    /// Runs blocking redb work off the async threads.
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
    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let query = query.clone();
        self.blocking(move |db, def| {
            let tx = db.begin_read().map_err(storage)?;
            let table = match tx.open_table(def) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return list_in_memory(std::iter::empty(), &query);
                }
                Err(e) => return Err(storage(e)),
            };
            let mut rows: Vec<(String, Value)> = Vec::new();
            for row in table.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                rows.push((k.value().to_owned(), decode(v.value())?));
            }
            list_in_memory(rows.iter().map(|(k, v)| (k.as_str(), v)), &query)
        })
        .await
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
        self.blocking(move |db, def| {
            let tx = db.begin_write().map_err(storage)?;
            {
                let mut table = tx.open_table(def).map_err(storage)?;
                if table.get(id.as_str()).map_err(storage)?.is_some() {
                    return Err(Error::Conflict(format!("resource {id:?} already exists")));
                }
                let bytes = serde_json::to_vec(&data).map_err(storage)?;
                table
                    .insert(id.as_str(), bytes.as_slice())
                    .map_err(storage)?;
            }
            tx.commit().map_err(storage)?;
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
        self.blocking(move |db, def| {
            let tx = db.begin_write().map_err(storage)?;
            let data = {
                let mut table = tx.open_table(def).map_err(storage)?;
                let mut data = match table.get(id.as_str()).map_err(storage)? {
                    Some(v) => decode(v.value())?,
                    None => return Err(not_found(&id)),
                };
                update.apply(&mut data)?;
                let bytes = serde_json::to_vec(&data).map_err(storage)?;
                table
                    .insert(id.as_str(), bytes.as_slice())
                    .map_err(storage)?;
                data
            };
            tx.commit().map_err(storage)?;
            Ok(Resource {
                resource_id: id,
                resource_data: data,
            })
        })
        .await
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.blocking(move |db, def| {
            let tx = db.begin_write().map_err(storage)?;
            {
                let mut table = tx.open_table(def).map_err(storage)?;
                if table.remove(id.as_str()).map_err(storage)?.is_none() {
                    return Err(not_found(&id));
                }
            }
            tx.commit().map_err(storage)?;
            Ok(())
        })
        .await
    }
}
