//! Per-resource write order: a write to a resource holds its stripe from before the store
//! write until its event is queued for sequencing, so that for every resource the events'
//! `seq` order is the order in which the store committed the writes.
//!
//! Stripes, not one lock per id: the table is fixed in size whatever the ids, and writes to
//! different resources rarely share a stripe (then one waits for the other's commit). A
//! create with a generated id takes its stripe after the insert (nobody can name the id
//! before the create answers, except by reading it from a list in between).
//!
//! A `tokio` mutex, held across the store write on purpose: ordering the writes of one
//! resource is what it is for. No user code runs under it (custom actions write through
//! `ActionContext::store` and publish their own events, outside this order).

use std::hash::{Hash, Hasher};

use tokio::sync::{Mutex, MutexGuard};

/// Stripes of the table (a power of two).
const STRIPES: usize = 1024;

/// The stripes of one hosted collection.
pub(crate) struct WriteOrder {
    stripes: Box<[Mutex<()>]>,
}

impl WriteOrder {
    pub(crate) fn new() -> WriteOrder {
        WriteOrder {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Waits for `id`'s turn; the turn ends when the guard is dropped.
    pub(crate) async fn turn(&self, id: &str) -> MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        // Truncation is the point: the low bits pick the stripe.
        let i = (h.finish() as usize) & (STRIPES - 1);
        self.stripes[i].lock().await
    }
}

impl std::fmt::Debug for WriteOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteOrder").finish()
    }
}
