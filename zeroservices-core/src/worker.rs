//! Workers: rules of collection + filter + async callback. A worker runs the callback for each
//! change event whose resource matches, and on start and periodically lists matching resources
//! to catch up on what it missed while down (or what an overflowing queue dropped).
//!
//! ```no_run
//! use serde_json::json;
//! use zeroservices_core::{Node, Worker};
//!
//! # async fn demo(node: Node) -> zeroservices_core::Result<()> {
//! // The FOSDEM power worker: square the value of every pending power.
//! let worker = Worker::new(node)
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
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::node::Node;
use crate::query::{Filter, ListQuery};
use crate::resources::{Resource, ResourceEvent};
use crate::task::TaskGuard;

/// What a rule's callback receives.
#[derive(Debug, Clone)]
pub struct WorkContext {
    /// The worker's node.
    pub node: Node,
    /// Collection of the resource.
    pub collection: String,
    /// The matching resource (data as of the event or listing).
    pub resource: Resource,
}

type Callback = Arc<dyn Fn(WorkContext) -> BoxFuture<'static, Result<()>> + Send + Sync>;

struct Rule {
    collection: String,
    filter_doc: Value,
    filter: Filter,
    callback: Callback,
    /// Resource ids whose callback is running (an event and a catch-up never run it twice at
    /// once). std Mutex: inserts and removes only.
    running: Mutex<HashSet<String>>,
}

/// A set of rules bound to a node. Configure, then [`Worker::start`].
pub struct Worker {
    node: Node,
    rules: Vec<Arc<Rule>>,
    catch_up: Duration,
    concurrency: usize,
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
    /// Owns the worker's tasks.
    _tasks: Vec<TaskGuard>,
}

impl WorkerHandle {
    /// Stops the worker (callbacks already running finish on their own).
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
    /// A worker on `node` (catch-up every 30 s, 64 callbacks at once).
    pub fn new(node: Node) -> Worker {
        Worker {
            node,
            rules: Vec::new(),
            catch_up: Duration::from_secs(30),
            concurrency: 64,
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
            filter_doc: filter,
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

    /// Starts listening and catching up.
    pub fn start(self) -> WorkerHandle {
        let stop = self.node.shutdown_token().child_token();
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = Vec::new();
        for rule in self.rules {
            let sub = self.node.subscribe(&rule.collection);
            tasks.push(TaskGuard::spawn(on_events(
                self.node.clone(),
                rule.clone(),
                sub,
                permits.clone(),
                stop.clone(),
            )));
            tasks.push(TaskGuard::spawn(catch_up(
                self.node.clone(),
                rule,
                self.catch_up,
                permits.clone(),
                stop.clone(),
            )));
        }
        WorkerHandle {
            stop,
            _tasks: tasks,
        }
    }
}

/// Runs the rule's callback for one resource unless it is already running for it.
async fn run(node: &Node, rule: &Arc<Rule>, resource: Resource, permits: &Arc<Semaphore>) {
    {
        let mut running = rule.running.lock();
        if !running.insert(resource.resource_id.clone()) {
            return;
        }
    }
    let Ok(permit) = permits.clone().acquire_owned().await else {
        return;
    };
    let (node, rule) = (node.clone(), rule.clone());
    tokio::spawn(async move {
        let id = resource.resource_id.clone();
        let ctx = WorkContext {
            node,
            collection: rule.collection.clone(),
            resource,
        };
        if let Err(e) = (rule.callback)(ctx).await {
            tracing::warn!(collection = %rule.collection, resource_id = %id, error = %e, "worker callback failed");
        }
        rule.running.lock().remove(&id);
        drop(permit);
    });
}

async fn on_events(
    node: Node,
    rule: Arc<Rule>,
    mut sub: crate::Subscription,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = sub.recv() => match ev { Some(e) => e, None => return },
        };
        let Ok(ev) = serde_json::from_slice::<ResourceEvent>(&ev.payload) else {
            continue;
        };
        if ev.collection != rule.collection {
            continue;
        }
        if let Some(data) = ev.resource_data {
            if rule.filter.matches(&data) {
                let r = Resource {
                    resource_id: ev.resource_id,
                    resource_data: data,
                };
                run(&node, &rule, r, &permits).await;
            }
        }
    }
}

async fn catch_up(
    node: Node,
    rule: Arc<Rule>,
    every: Duration,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let q = ListQuery {
            filter: rule.filter_doc.clone(),
            limit: Some(crate::resources::MAX_LIST_LIMIT),
            ..ListQuery::default()
        };
        match node.collection(&rule.collection).list(&q).await {
            Ok(page) => {
                for r in page.items {
                    run(&node, &rule, r, &permits).await;
                }
            }
            // The collection may not be discovered yet; the next tick retries.
            Err(e) => {
                tracing::debug!(collection = %rule.collection, error = %e, "worker catch-up failed")
            }
        }
    }
}
