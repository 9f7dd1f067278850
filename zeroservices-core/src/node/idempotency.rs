//! Idempotency keys: a change sent again with the key of an earlier one (a client retrying
//! after a timeout, perhaps through another API node) answers what the first answered and
//! changes nothing. The records live in a collection of their own next to the data (see
//! [`crate::CollectionSpec::idempotency_store`]), so they survive a restart and every
//! provider sharing the store sees them.
//!
//! A record is claimed by creating it (`pending`; the store's create is the atomic test and
//! set), then holds the answer (`done`). A request whose action fails leaves no record: it
//! changed nothing and may be sent again. Records expire after [`RETENTION`]; a `pending` one
//! older than [`STALE_PENDING`] (its node died mid-request) may be claimed again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::hosted::Output;
use crate::error::{Error, Result};
use crate::query::{ListQuery, Update};
use crate::resources::{Collection, ResourceRequest};

/// How long an answer is kept for retries.
pub(crate) const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// A claim older than this whose answer never came is taken to be abandoned.
const STALE_PENDING: Duration = Duration::from_secs(60);
/// Longest key accepted (bytes).
const MAX_KEY_BYTES: usize = 512;
/// Every this many claims, expired records are swept (at most [`SWEEP_BATCH`] at a time).
const SWEEP_EVERY: u64 = 256;
const SWEEP_BATCH: u64 = 100;

/// A stored record.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    fingerprint: String,
    state: State,
    #[serde(default)]
    answer: Value,
    started_ms: u64,
    expires_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum State {
    Pending,
    Done,
}

/// What a claim found.
enum Claim {
    /// No record: this request runs.
    New,
    /// The answer of the same request, made earlier.
    Replay(Value),
}

/// The idempotency records of one collection.
#[derive(Debug)]
pub(crate) struct Idempotency {
    store: Arc<dyn Collection>,
    claims: AtomicU64,
}

/// Checks a key as a caller sent it: 1 to [`MAX_KEY_BYTES`] bytes, no control characters.
fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
        return Err(Error::BadRequest(format!(
            "an idempotency key is 1 to {MAX_KEY_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What makes two requests "the same": collection, action, resource and arguments, with
/// object keys in sorted order (key order does not count, whatever order `serde_json` keeps).
fn fingerprint(req: &ResourceRequest) -> Result<String> {
    let doc = json!([req.collection, req.action, req.resource_id, req.args]);
    let mut hasher = Sha256::new();
    canonical(&doc, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// Feeds `v` to `h` as JSON with every object's keys sorted.
fn canonical(v: &Value, h: &mut Sha256) -> Result<()> {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            h.update(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                h.update(text(k)?.as_bytes());
                h.update(b":");
                canonical(&m[k.as_str()], h)?;
            }
            h.update(b"}");
        }
        Value::Array(items) => {
            h.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                canonical(item, h)?;
            }
            h.update(b"]");
        }
        scalar => h.update(text(scalar)?.as_bytes()),
    }
    Ok(())
}

/// The JSON text of a string or scalar.
fn text<T: Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Internal(e.to_string()))
}

impl Idempotency {
    pub(crate) fn new(store: Arc<dyn Collection>) -> Idempotency {
        Idempotency {
            store,
            claims: AtomicU64::new(0),
        }
    }

    /// Runs `action` once for `key`: the first time for real, afterwards answering what it
    /// answered (or refusing a different request under the same key, or one still running).
    pub(crate) async fn run_once<F>(
        &self,
        key: &str,
        req: &ResourceRequest,
        action: F,
    ) -> Result<Output>
    where
        F: std::future::Future<Output = Result<Output>>,
    {
        check_key(key)?;
        let fp = fingerprint(req)?;
        let id = hex(&Sha256::digest(key.as_bytes()));
        if let Claim::Replay(answer) = self.claim(&id, &fp).await? {
            return Ok(Output::Value(answer));
        }
        match action.await {
            Ok(out) => {
                let answer = out.into_value()?;
                let done =
                    Update::parse(&json!({"$set": {"state": State::Done, "answer": answer}}))?;
                if let Err(e) = self.store.patch(&id, &done).await {
                    // The change is made; only its replay is lost (a retry then waits for the
                    // claim to go stale and runs again).
                    tracing::warn!(error = %e, "idempotency: the answer could not be kept");
                }
                Ok(Output::Value(answer))
            }
            Err(e) => {
                if let Err(e) = self.store.delete(&id).await {
                    tracing::warn!(error = %e, "idempotency: a failed request's claim stays until it goes stale");
                }
                Err(e)
            }
        }
    }

    /// Claims `id` for a new run, or finds the earlier answer, or says why neither.
    async fn claim(&self, id: &str, fp: &str) -> Result<Claim> {
        if self.claims.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep().await;
        }
        for _ in 0..3 {
            let now = now_ms();
            let record = Record {
                fingerprint: fp.to_owned(),
                state: State::Pending,
                answer: Value::Null,
                started_ms: now,
                expires_ms: now.saturating_add(RETENTION.as_millis() as u64),
            };
            let data = serde_json::to_value(&record).map_err(|e| Error::Internal(e.to_string()))?;
            match self.store.create(Some(id.to_owned()), data).await {
                Ok(_) => return Ok(Claim::New),
                Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
            let held = match self.store.get(id).await {
                Ok(r) => r,
                Err(Error::NotFound(_)) => continue, // deleted meanwhile: claim again
                Err(e) => return Err(e),
            };
            let held: Record = serde_json::from_value(held.resource_data)
                .map_err(|e| Error::Storage(format!("an idempotency record is damaged: {e}")))?;
            let stale = held.state == State::Pending
                && held
                    .started_ms
                    .saturating_add(STALE_PENDING.as_millis() as u64)
                    < now;
            if held.expires_ms < now || stale {
                match self.store.delete(id).await {
                    Ok(()) | Err(Error::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            if held.fingerprint != fp {
                return Err(Error::KeyReused(
                    "this idempotency key was used for a different request".into(),
                ));
            }
            return match held.state {
                State::Done => Ok(Claim::Replay(held.answer)),
                State::Pending => Err(Error::InProgress(
                    "a request with this idempotency key is still running; retry later".into(),
                )),
            };
        }
        Err(Error::InProgress(
            "the idempotency key is contended; retry later".into(),
        ))
    }

    /// Deletes a batch of expired records.
    async fn sweep(&self) {
        let q = match ListQuery::filtered(&json!({"expires_ms": {"$lt": now_ms()}})) {
            Ok(mut q) => {
                q.limit = Some(SWEEP_BATCH);
                q
            }
            Err(_) => return,
        };
        match self.store.list(&q).await {
            Ok(page) => {
                for r in page.items {
                    let _ = self.store.delete(&r.resource_id).await; // gone meanwhile: fine
                }
            }
            Err(e) => tracing::warn!(error = %e, "idempotency: expired records not swept"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_ignores_key_order_whatever_order_serde_json_keeps() {
        // Built in two insertion orders: with serde_json's `preserve_order` (which another
        // crate of a workspace may turn on) they serialize differently.
        let mut a = serde_json::Map::new();
        a.insert("title".into(), json!("x"));
        a.insert("n".into(), json!([1, {"b": 2, "a": 1}]));
        let mut b = serde_json::Map::new();
        b.insert("n".into(), json!([1, {"a": 1, "b": 2}]));
        b.insert("title".into(), json!("x"));
        let req =
            |m| ResourceRequest::new("c", "create", json!({"resource_data": Value::Object(m)}));
        let (fa, fb) = (fingerprint(&req(a)).unwrap(), fingerprint(&req(b)).unwrap());
        assert_eq!(fa, fb);
        let other = ResourceRequest::new("c", "create", json!({"resource_data": {"title": "y"}}));
        assert_ne!(fingerprint(&other).unwrap(), fa);
        // Arrays keep their order.
        let x = ResourceRequest::new("c", "create", json!({"resource_data": {"l": [1, 2]}}));
        let y = ResourceRequest::new("c", "create", json!({"resource_data": {"l": [2, 1]}}));
        assert_ne!(fingerprint(&x).unwrap(), fingerprint(&y).unwrap());
    }
}
