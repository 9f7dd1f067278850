//! A volatile collection in hash maps, sharded by id so that concurrent writers rarely meet.

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::BuildHasher;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::query::{ListQuery, Update};
use crate::resources::{
    generate_id, list_in_memory, validate_data, validate_id, Collection, ListPage, Resource,
};

/// Number of shards (independently locked maps).
const SHARDS: usize = 16;

type Shard = HashMap<String, Value>;

/// In-memory collection: fast, lost on exit.
#[derive(Debug)]
pub struct MemoryCollection {
    // Blocking (parking_lot) RwLocks: operations are short and synchronous; never held across an await. A list
    // takes every shard's read lock in index order; writers take one.
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    /// This collection's own store identity (nothing else reads its data).
    identity: String,
}

impl Default for MemoryCollection {
    fn default() -> Self {
        MemoryCollection {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
            identity: format!("memory:{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

impl MemoryCollection {
    /// An empty collection.
    pub fn new() -> MemoryCollection {
        MemoryCollection::default()
    }

    fn shard(&self, id: &str) -> &RwLock<Shard> {
        // The modulo keeps the index below SHARDS, so the index is in bounds.
        &self.shards[(self.hasher.hash_one(id) as usize) % SHARDS]
    }

    fn read(&self, id: &str) -> RwLockReadGuard<'_, Shard> {
        self.shard(id).read()
    }

    fn write(&self, id: &str) -> RwLockWriteGuard<'_, Shard> {
        self.shard(id).write()
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("resource {id:?} not found"))
}

#[async_trait]
impl Collection for MemoryCollection {
    async fn identity(&self) -> Result<String> {
        Ok(self.identity.clone())
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let shards: Vec<RwLockReadGuard<'_, Shard>> =
            self.shards.iter().map(|s| s.read()).collect();
        // `list_in_memory` orders by the query's sort, then by id: map order does not matter.
        list_in_memory(
            shards
                .iter()
                .flat_map(|s| s.iter().map(|(k, v)| (k.as_str(), v))),
            query,
        )
    }

    async fn create(&self, id: Option<String>, data: Value) -> Result<Resource> {
        let stored = data.clone();
        let id = self.insert(id, stored).await?;
        Ok(Resource {
            resource_id: id,
            resource_data: data,
        })
    }

    async fn insert(&self, id: Option<String>, data: Value) -> Result<String> {
        validate_data(&data)?;
        let id = match id {
            Some(id) => {
                validate_id(&id)?;
                id
            }
            None => generate_id(),
        };
        match self.write(&id).entry(id.clone()) {
            Entry::Occupied(_) => {
                return Err(Error::Conflict(format!("resource {id:?} already exists")))
            }
            Entry::Vacant(v) => {
                v.insert(data);
            }
        }
        Ok(id)
    }

    async fn get(&self, id: &str) -> Result<Resource> {
        let data = self
            .read(id)
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(id))?;
        Ok(Resource {
            resource_id: id.to_owned(),
            resource_data: data,
        })
    }

    async fn patch(&self, id: &str, update: &Update) -> Result<Resource> {
        let mut shard = self.write(id);
        let data = shard.get_mut(id).ok_or_else(|| not_found(id))?;
        update.apply(data)?;
        let data = data.clone();
        drop(shard);
        Ok(Resource {
            resource_id: id.to_owned(),
            resource_data: data,
        })
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let removed = self.write(id).remove(id);
        removed.map(|_| ()).ok_or_else(|| not_found(id))
    }
}
