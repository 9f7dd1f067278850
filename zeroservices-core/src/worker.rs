//! Workers: rules of collection + filter + async callback. A worker runs the callback for each
//! change event whose resource matches, and on start and periodically pages through the
//! matching resources to catch up on what it missed while down (or what an overflowing queue
//! dropped).
//!
//! On a medium that keeps events (NATS with JetStream) a rule reads its group's durable work
//! queue instead: each event goes to one worker of the group and is acknowledged when its job
//! ends, and a worker that was down continues where the group was, from the stream, without
//! listing.
//!
//! Workers whose rules have the same collection and filter form a group, in one process or
//! many: before running the callback for a resource, a worker claims a lease on it from the
//! collection's coordinator (see `node::claims`), and runs only if granted and if the resource
//! as stored now still matches. So each matching resource is processed once in the normal case;
//! a worker that dies mid-job loses its lease when it expires, and the job runs again
//! (at-least-once). A callback that fails or panics releases its lease at once; callbacks are
//! tasks owned by the worker and are cancelled when it stops, their leases released.
//!
//! A work-queue event is acknowledged only when its job ran (or its resource is gone or no
//! longer matches): refused because another worker holds the lease, it comes back after the
//! lease's time left; for a resource whose job runs here, after that job; after a failed
//! callback, after the catch-up period; from a stopping worker, at once.
//!
//! ```no_run
//! use serde_json::json;
//! use zeroservices_core::{Node, Worker};
//!
//! # async fn demo(node: Node) -> zeroservices_core::Result<()> {
//! // The FOSDEM power worker: square the value of every pending power.
//! let worker = Worker::new(&node)
//!     .rule("power", json!({"status": "pending"}), |ctx| async move {
//!         let v = ctx.resource.resource_data["value"].as_f64().unwrap_or(0.0);
//!         ctx.node.collection("power")
//!             .patch(&ctx.resource.resource_id, json!({"$set": {"status": "done", "result": v * v}}))
//!             .await?;
//!         Ok(())
//!     })?
//!     .start();
//! # drop(worker); Ok(()) }
//! ```

use parking_lot::Mutex;
use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt as _;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::Result;
use crate::medium::{WorkAck, WorkQueue};
use crate::node::{ClaimRequest, NodeHandle};
use crate::query::{Filter, ListQuery};
use crate::resources::{Resource, ResourceEvent};
use crate::task::TaskGuard;

/// Resources read per page of a catch-up.
const CATCH_UP_PAGE: u64 = 1000;

/// What a rule's callback receives.
#[derive(Debug, Clone)]
pub struct WorkContext {
    /// The worker's node.
    pub node: NodeHandle,
    /// Collection of the resource.
    pub collection: String,
    /// The matching resource, as stored when the worker's claim was granted.
    pub resource: Resource,
}

type Callback = Arc<dyn Fn(WorkContext) -> BoxFuture<'static, Result<()>> + Send + Sync>;

struct Rule {
    collection: String,
    filter: Filter,
    callback: Callback,
    /// The worker group: every rule with this collection and filter, in any process.
    group: String,
    /// Resource ids whose job runs here (an event and a catch-up never run it twice at once).
    running: Mutex<HashSet<String>>,
}

/// A set of rules bound to a node. Configure, then [`Worker::start`]; see the module docs for
/// a full example.
///
/// ```
/// use std::time::Duration;
/// use serde_json::json;
/// use zeroservices_core::{Node, Worker};
///
/// # async fn demo(node: Node) -> zeroservices_core::Result<()> {
/// let handle = Worker::new(&node)
///     .lease(Duration::from_secs(10)) // a dead worker's job runs again after 10 s
///     .concurrency(8)
///     .rule("mail", json!({"sent": false}), |ctx| async move {
///         println!("sending {}", ctx.resource.resource_id);
///         Ok(())
///     })?
///     .start();
/// handle.stop();
/// # Ok(()) }
/// ```
pub struct Worker {
    node: NodeHandle,
    rules: Vec<Arc<Rule>>,
    catch_up: Duration,
    concurrency: usize,
    lease: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// A running worker; stops when dropped.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: CancellationToken,
    /// Owns the worker's event and catch-up tasks.
    _tasks: Vec<TaskGuard>,
}

impl WorkerHandle {
    /// Stops the worker: running callbacks are cancelled, their leases released and their
    /// work-queue events handed back, so another worker of the group runs them at once.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Worker {
    /// A worker on `node` (catch-up every 30 s, 64 callbacks at once, leases of 30 s).
    pub fn new(node: &NodeHandle) -> Worker {
        Worker {
            node: node.clone(),
            rules: Vec::new(),
            catch_up: Duration::from_secs(30),
            concurrency: 64,
            lease: Duration::from_secs(30),
        }
    }

    /// Adds a rule: run `callback` for resources of `collection` matching `filter`.
    pub fn rule<F, Fut>(mut self, collection: &str, filter: Value, callback: F) -> Result<Worker>
    where
        F: Fn(WorkContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let parsed = Filter::parse(&filter)?;
        self.rules.push(Arc::new(Rule {
            collection: collection.to_owned(),
            group: format!("{collection}:{filter}"),
            filter: parsed,
            callback: Arc::new(move |ctx| Box::pin(callback(ctx))),
            running: Mutex::new(HashSet::new()),
        }));
        Ok(self)
    }

    /// Period of the catch-up listing (default 30 s).
    pub fn catch_up_every(mut self, d: Duration) -> Worker {
        self.catch_up = d;
        self
    }

    /// Callbacks running at once (default 64).
    pub fn concurrency(mut self, n: usize) -> Worker {
        self.concurrency = n.max(1);
        self
    }

    /// How long a claimed job stays this worker's without renewal (default 30 s, at most
    /// [`crate::MAX_LEASE`]): the delay before the job of a worker that died runs again.
    /// Renewed at half of it while the callback runs.
    pub fn lease(mut self, d: Duration) -> Worker {
        self.lease = d.clamp(Duration::from_millis(100), crate::node::MAX_LEASE);
        self
    }

    /// Starts listening and catching up.
    pub fn start(self) -> WorkerHandle {
        let stop = self.node.shutdown_token().child_token();
        let shared = Arc::new(Shared {
            node: self.node.clone(),
            permits: Arc::new(Semaphore::new(self.concurrency)),
            holder: format!("{}/{}", self.node.node_id(), uuid::Uuid::new_v4().simple()),
            lease: self.lease,
            stop: stop.clone(),
            jobs: TaskTracker::new(),
            retry_failed: self.catch_up,
        });
        let mut tasks = Vec::new();
        for rule in self.rules {
            let sub = self.node.subscribe(&rule.collection);
            tasks.push(TaskGuard::spawn(follow(
                shared.clone(),
                rule,
                sub,
                self.catch_up,
            )));
        }
        WorkerHandle {
            stop,
            _tasks: tasks,
        }
    }
}

/// What every task of one started worker shares.
struct Shared {
    node: NodeHandle,
    permits: Arc<Semaphore>,
    /// This worker's name in leases.
    holder: String,
    lease: Duration,
    stop: CancellationToken,
    /// The running jobs (each cancelled by `stop`).
    jobs: TaskTracker,
    /// Delay before a work-queue event whose callback failed comes back (the catch-up
    /// period).
    retry_failed: Duration,
}

/// Takes `id` out of the rule's running set when the job ends, however it ends.
struct Running {
    rule: Arc<Rule>,
    id: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.rule.running.lock().remove(&self.id);
    }
}

/// Reads the group's work queue when the medium has one; otherwise follows events and
/// catches up by listing.
async fn follow(w: Arc<Shared>, rule: Arc<Rule>, sub: crate::Subscription, every: Duration) {
    match w
        .node
        .work_queue(&rule.group, &rule.collection, w.lease)
        .await
    {
        Ok(Some(queue)) => {
            drop(sub);
            from_queue(w, rule, queue).await;
            return;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(collection = %rule.collection, error = %e, "no work queue; following events and listing instead")
        }
    }
    tokio::join!(
        on_events(w.clone(), rule.clone(), sub),
        catch_up(w, rule, every)
    );
}

/// Runs the jobs the work queue hands out, acknowledging each event when its job ends.
async fn from_queue(w: Arc<Shared>, rule: Arc<Rule>, mut queue: WorkQueue) {
    loop {
        let item = tokio::select! {
            _ = w.stop.cancelled() => return,
            item = queue.recv() => match item { Some(i) => i, None => return },
        };
        let (id, traceparent) = match serde_json::from_slice::<ResourceEvent>(&item.event.payload) {
            Ok(ev)
                if ev.collection == rule.collection
                    && ev
                        .resource_data
                        .as_ref()
                        .is_some_and(|d| rule.filter.matches(d)) =>
            {
                (ev.resource_id, ev.traceparent)
            }
            _ => {
                item.ack.done().await;
                continue;
            }
        };
        run(&w, &rule, id, Some(item.ack), traceparent).await;
    }
}

/// Starts the job for one resource unless it already runs here; `ack` (from a work queue)
/// is acknowledged when the job ends; `traceparent`: the trace of the change that made the job
/// (from its event), which the job's span continues.
async fn run(
    w: &Arc<Shared>,
    rule: &Arc<Rule>,
    id: String,
    ack: Option<Box<dyn WorkAck>>,
    traceparent: Option<String>,
) {
    if !rule.running.lock().insert(id.clone()) {
        // Runs here already, maybe on data older than this event's: the event comes back
        // once that job is over (then it finds the resource done, or runs again).
        if let Some(a) = ack {
            a.retry(w.lease.min(BUSY_RETRY)).await;
        }
        return;
    }
    let running = Running {
        rule: rule.clone(),
        id,
    };
    let Ok(permit) = w.permits.clone().acquire_owned().await else {
        return;
    };
    let w2 = w.clone();
    let span = crate::trace::span(
        &format!("job {}", rule.collection),
        "consumer",
        traceparent.as_deref(),
    );
    let job_task = async move {
        let _permit = permit;
        tokio::select! {
            () = w2.stop.cancelled() => {
                // The job is cancelled: its lease and its event go back at once, so another
                // worker of the group runs it without waiting for them to expire.
                let handed_back = async {
                    release(&w2, &running.rule, &running.id).await;
                    if let Some(a) = &ack {
                        a.retry(Duration::ZERO).await;
                    }
                };
                if tokio::time::timeout(HAND_BACK, handed_back).await.is_err() {
                    tracing::debug!(resource_id = %running.id, "stopping worker: lease and event not handed back in time; they expire");
                }
            }
            outcome = job(&w2, &running.rule, &running.id, ack.as_deref()) => {
                if let Some(a) = &ack {
                    match outcome {
                        Claimed::Done => a.done().await,
                        Claimed::Failed => a.retry(w2.lease.min(Duration::from_secs(1))).await,
                        // Never dropped: back after the other worker's lease, when it will
                        // have finished (the event then no longer matches) or died.
                        Claimed::Held(left) => a.retry(left + HELD_MARGIN).await,
                        Claimed::Again => a.retry(w2.retry_failed).await,
                    }
                }
            }
        }
        drop(running);
    };
    w.jobs.spawn(job_task.instrument(span));
}

/// How a job ended, for its work-queue event.
enum Claimed {
    /// Ran, or the resource is gone or no longer matches.
    Done,
    /// The claim could not be made (no coordinator): try again soon.
    Failed,
    /// Another worker holds the lease for this long.
    Held(Duration),
    /// The callback failed or panicked: try again later, as the catch-up listing does when
    /// there is no work queue.
    Again,
}

/// Delay before an event for a resource whose job runs here is handed out again.
const BUSY_RETRY: Duration = Duration::from_secs(1);
/// Added to the other holder's lease time left before a refused event comes back.
const HELD_MARGIN: Duration = Duration::from_millis(100);
/// Longest a stopping worker spends giving a cancelled job's lease and event back.
const HAND_BACK: Duration = Duration::from_secs(2);

/// This worker's claim of a lease on `id` for the rule's group.
fn claim_of(w: &Shared, rule: &Rule, id: &str) -> ClaimRequest {
    ClaimRequest {
        collection: rule.collection.clone(),
        group: rule.group.clone(),
        resource_id: id.to_owned(),
        holder: w.holder.clone(),
        lease_ms: u64::try_from(w.lease.as_millis()).unwrap_or(u64::MAX),
        release: false,
    }
}

/// Gives the lease on `id` back (if this worker holds it).
async fn release(w: &Shared, rule: &Rule, id: &str) {
    let claim = ClaimRequest {
        lease_ms: 0,
        release: true,
        ..claim_of(w, rule, id)
    };
    if let Err(e) = w.node.claim(&claim).await {
        tracing::debug!(resource_id = %id, error = %e, "lease release failed; it expires");
    }
}

/// Claims the resource, runs the callback if granted and still matching, then releases.
/// While it runs, the lease is renewed and `ack` told the event is in progress.
async fn job(w: &Shared, rule: &Rule, id: &str, ack: Option<&dyn WorkAck>) -> Claimed {
    let claim = claim_of(w, rule, id);
    let resource = match w.node.claim(&claim).await {
        Ok(r) if r.granted => r.resource,
        Ok(r) => {
            return match r.held_ms {
                Some(ms) => Claimed::Held(Duration::from_millis(ms)),
                None => Claimed::Done, // the resource is gone
            };
        }
        Err(e) => {
            tracing::debug!(collection = %rule.collection, resource_id = %id, error = %e, "claim failed; tried again later");
            return Claimed::Failed;
        }
    };
    if let Some(resource) = resource.filter(|r| rule.filter.matches(&r.resource_data)) {
        let ctx = WorkContext {
            node: w.node.clone(),
            collection: rule.collection.clone(),
            resource,
        };
        let work = AssertUnwindSafe((rule.callback)(ctx)).catch_unwind();
        let renew = async {
            loop {
                tokio::time::sleep(w.lease / 2).await;
                if let Err(e) = w.node.claim(&claim).await {
                    tracing::debug!(resource_id = %id, error = %e, "lease renewal failed");
                }
                if let Some(a) = ack {
                    a.progress().await;
                }
            }
        };
        let outcome = tokio::select! {
            o = work => o,
            () = renew => return Claimed::Done,
        };
        let ended = match outcome {
            Ok(Ok(())) => Claimed::Done,
            Ok(Err(e)) => {
                tracing::warn!(collection = %rule.collection, resource_id = %id, error = %e, "worker callback failed");
                Claimed::Again
            }
            Err(_) => {
                tracing::error!(collection = %rule.collection, resource_id = %id, "worker callback panicked");
                Claimed::Again
            }
        };
        release(w, rule, id).await;
        return ended;
    }
    release(w, rule, id).await;
    Claimed::Done
}

async fn on_events(w: Arc<Shared>, rule: Arc<Rule>, mut sub: crate::Subscription) {
    loop {
        let ev = tokio::select! {
            _ = w.stop.cancelled() => return,
            ev = sub.recv() => match ev { Some(e) => e, None => return },
        };
        let Ok(ev) = serde_json::from_slice::<ResourceEvent>(&ev.payload) else {
            continue;
        };
        if ev.collection != rule.collection {
            continue;
        }
        if ev.resource_data.is_some_and(|d| rule.filter.matches(&d)) {
            run(&w, &rule, ev.resource_id, None, ev.traceparent).await;
        }
    }
}

/// Pages through every resource matching the rule, every `every`.
async fn catch_up(w: Arc<Shared>, rule: Arc<Rule>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = w.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut skip = 0;
        loop {
            let q = ListQuery {
                filter: rule.filter.clone(),
                skip,
                limit: Some(CATCH_UP_PAGE),
                ..ListQuery::default()
            };
            let page = match w.node.collection(&rule.collection).list(&q).await {
                Ok(p) => p,
                // The collection may not be discovered yet; the next tick retries.
                Err(e) => {
                    tracing::debug!(collection = %rule.collection, error = %e, "worker catch-up failed");
                    break;
                }
            };
            let n = page.items.len() as u64;
            for r in page.items {
                if w.stop.is_cancelled() {
                    return;
                }
                run(&w, &rule, r.resource_id, None, None).await;
            }
            // Jobs finishing meanwhile leave the filter and shift the pages: what this pass
            // skips over that way, the next one finds.
            skip += n;
            if n < CATCH_UP_PAGE || skip >= page.total {
                break;
            }
        }
    }
}
