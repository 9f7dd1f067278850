//! A volatile collection in a `BTreeMap`.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::RwLock;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::query::{ListQuery, Update};
use crate::resources::{
    generate_id, list_in_memory, validate_data, validate_id, Collection, ListPage, Resource,
};

/// In-memory collection: fast, lost on exit.
#[derive(Debug, Default)]
pub struct MemoryCollection {
    // std RwLock: operations are short and synchronous; never held across an await.
    items: RwLock<BTreeMap<String, Value>>,
}

impl MemoryCollection {
    /// An empty collection.
    pub fn new() -> MemoryCollection {
        MemoryCollection::default()
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("resource {id:?} not found"))
}

#[async_trait]
impl Collection for MemoryCollection {
    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let items = self.items.read().unwrap_or_else(|p| p.into_inner());
        list_in_memory(items.iter().map(|(k, v)| (k.as_str(), v)), query)
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
        let mut items = self.items.write().unwrap_or_else(|p| p.into_inner());
        match items.entry(id.clone()) {
            Entry::Occupied(_) => {
                return Err(Error::Conflict(format!("resource {id:?} already exists")))
            }
            Entry::Vacant(v) => {
                v.insert(data.clone());
            }
        }
        drop(items);
        Ok(Resource {
            resource_id: id,
            resource_data: data,
        })
    }

    async fn get(&self, id: &str) -> Result<Resource> {
        let items = self.items.read().unwrap_or_else(|p| p.into_inner());
        let data = items.get(id).ok_or_else(|| not_found(id))?;
        Ok(Resource {
            resource_id: id.to_owned(),
            resource_data: data.clone(),
        })
    }

    async fn patch(&self, id: &str, update: &Update) -> Result<Resource> {
        let mut items = self.items.write().unwrap_or_else(|p| p.into_inner());
        let data = items.get_mut(id).ok_or_else(|| not_found(id))?;
        update.apply(data)?;
        Ok(Resource {
            resource_id: id.to_owned(),
            resource_data: data.clone(),
        })
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let mut items = self.items.write().unwrap_or_else(|p| p.into_inner());
        items.remove(id).map(|_| ()).ok_or_else(|| not_found(id))
    }
}
