//! Worker groups: a lease on (group, resource) taken before a worker runs its callback, so
//! that N workers of one group process each matching resource once in the normal case.
//!
//! The lease table lives in memory on one provider of the collection, the *coordinator*: the
//! live provider with the smallest `node_id` (this node included when it provides the
//! collection). Every worker computes the same coordinator from its directory, so a claim is a
//! conditional update of one table under one lock: granted when no other holder has an
//! unexpired lease. A granted claim answers the resource as stored now, and the worker runs
//! only if that still matches its rule: a job finished by another worker (its patch committed
//! before it released the lease) is not run again from a stale event.
//!
//! At-least-once, not exactly-once: a worker that dies mid-job keeps its lease until it
//! expires, then the job runs again (the catch-up listing finds it). Leases are also lost
//! when the coordinator stops or a new provider with a smaller id joins; then jobs in flight
//! may run twice. A worker renews its lease at half its length while the callback runs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::NodeHandle;
use crate::error::{Error, Result};
use crate::medium::MessageKind;
use crate::protocol::decode_reply;
use crate::resources::{validate_id, Resource};

/// Leases one coordinator keeps at most (expired ones are swept first).
pub const MAX_LEASES: usize = 100_000;
/// Longest lease a claim may ask for.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);

/// A claim, renewal or release, as sent to the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClaimRequest {
    pub(crate) collection: String,
    /// The worker group (one per rule): leases of different groups are independent.
    pub(crate) group: String,
    pub(crate) resource_id: String,
    /// Who holds the lease (a worker of a node).
    pub(crate) holder: String,
    pub(crate) lease_ms: u64,
    /// Give the lease back instead of taking it.
    #[serde(default)]
    pub(crate) release: bool,
}

/// The coordinator's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClaimReply {
    pub(crate) granted: bool,
    /// The resource as stored now (granted claims only; `None` when it is gone).
    #[serde(default)]
    pub(crate) resource: Option<Resource>,
    /// Refused because another worker holds the lease: milliseconds it has left (a work
    /// queue's event is handed out again after them, never dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) held_ms: Option<u64>,
}

impl ClaimReply {
    fn refused(held_ms: Option<u64>) -> ClaimReply {
        ClaimReply {
            granted: false,
            resource: None,
            held_ms,
        }
    }
}

struct Lease {
    holder: String,
    until: Instant,
}

/// The lease table of one hosted collection.
#[derive(Default)]
pub(crate) struct Leases {
    // parking_lot Mutex: lookups and inserts only, never held across an await.
    table: parking_lot::Mutex<HashMap<(String, String), Lease>>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("held", &self.table.lock().len())
            .finish()
    }
}

impl Leases {
    /// Takes or renews the lease; `Err(left)` when another holder has it for `left` more.
    pub(crate) fn take(&self, req: &ClaimRequest) -> Result<std::result::Result<(), Duration>> {
        let lease = Duration::from_millis(req.lease_ms).min(MAX_LEASE);
        let now = Instant::now();
        let mut t = self.table.lock();
        let key = (req.group.clone(), req.resource_id.clone());
        if let Some(l) = t.get_mut(&key) {
            if l.until > now && l.holder != req.holder {
                return Ok(Err(l.until - now));
            }
            l.holder.clone_from(&req.holder);
            l.until = now + lease;
            return Ok(Ok(()));
        }
        if t.len() >= MAX_LEASES {
            t.retain(|_, l| l.until > now);
            if t.len() >= MAX_LEASES {
                return Err(Error::Unavailable(format!(
                    "{MAX_LEASES} leases held on {}",
                    req.collection
                )));
            }
        }
        t.insert(
            key,
            Lease {
                holder: req.holder.clone(),
                until: now + lease,
            },
        );
        Ok(Ok(()))
    }

    /// Gives the lease back if `req.holder` holds it.
    pub(crate) fn release(&self, req: &ClaimRequest) {
        let mut t = self.table.lock();
        let key = (req.group.clone(), req.resource_id.clone());
        if t.get(&key).is_some_and(|l| l.holder == req.holder) {
            t.remove(&key);
        }
    }
}

impl NodeHandle {
    /// Runs a claim on the collection's coordinator (this node or a peer).
    pub(crate) async fn claim(&self, req: &ClaimRequest) -> Result<ClaimReply> {
        validate_id(&req.resource_id)?;
        let mut providers = self.inner.directory.providers(&req.collection);
        if self.hosted(&req.collection).is_some() {
            providers.push(self.inner.node_id.clone());
        }
        let Some(coordinator) = providers.into_iter().min() else {
            return Err(if self.inner.directory.has_seen(&req.collection) {
                Error::Unavailable(req.collection.clone())
            } else {
                Error::NotFound(format!("unknown collection {:?}", req.collection))
            });
        };
        if coordinator == self.inner.node_id {
            return self.answer_claim(req).await;
        }
        let body =
            Bytes::from(serde_json::to_vec(req).map_err(|e| Error::Internal(e.to_string()))?);
        let reply = self
            .inner
            .medium
            .request(&coordinator, MessageKind::Claim, body, self.inner.timeout)
            .await?;
        serde_json::from_value(decode_reply(&reply)?)
            .map_err(|e| Error::Internal(format!("unexpected claim reply: {e}")))
    }

    /// The coordinator's side of a claim.
    pub(crate) async fn answer_claim(&self, req: &ClaimRequest) -> Result<ClaimReply> {
        validate_id(&req.resource_id)?;
        let h = self
            .hosted(&req.collection)
            .ok_or_else(|| Error::Unavailable(format!("{} is not served here", req.collection)))?;
        if req.release {
            h.leases.release(req);
            return Ok(ClaimReply::refused(None));
        }
        if let Err(left) = h.leases.take(req)? {
            let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
            return Ok(ClaimReply::refused(Some(ms)));
        }
        match h.store.get(&req.resource_id).await {
            Ok(r) => Ok(ClaimReply {
                granted: true,
                resource: Some(r),
                held_ms: None,
            }),
            Err(Error::NotFound(_)) => {
                h.leases.release(req);
                Ok(ClaimReply::refused(None))
            }
            Err(e) => {
                h.leases.release(req);
                Err(e)
            }
        }
    }
}
