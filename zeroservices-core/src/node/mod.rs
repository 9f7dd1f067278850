//! The node: one process's membership in the cluster. It owns a medium, runs a discovery,
//! keeps the directory, hosts collections, routes resource requests, publishes and delivers
//! events, and calls the [`Service`] hooks.
//!
//! ```no_run
//! use std::sync::Arc;
//! use serde_json::json;
//! use zeroservices_core::{CollectionSpec, Node, store::MemoryCollection, discovery::MulticastDiscovery, medium::ZmqConfig};
//!
//! # async fn demo() -> zeroservices_core::Result<()> {
//! let node = Node::builder("power-service")
//!     .zmq(ZmqConfig::default())
//!     .discovery(MulticastDiscovery::default())
//!     .collection(CollectionSpec::new("power", Arc::new(MemoryCollection::new())))
//!     .start()
//!     .await?;
//! node.collection("power").create(None, json!({"value": 3})).await?;
//! node.shutdown().await;
//! # Ok(()) }
//! ```

mod builder;
mod claims;
mod client;
mod durable;
mod events;
mod hosted;
mod idempotency;
mod inbound;
mod membership;
mod ordering;
mod owner;
mod routing;

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use self::claims::ClaimRequest;
pub use self::claims::{MAX_LEASE, MAX_LEASES};
pub use self::client::CollectionClient;
pub use self::hosted::{ActionContext, ActionFn, CollectionSpec};
pub(crate) use self::hosted::{Hosted, Output};
use crate::directory::Directory;
use crate::error::{Error, Result};
use crate::medium::Medium;
use crate::protocol::{Announcement, NodeType};

pub use self::builder::NodeBuilder;
use self::events::SubEntry;
pub use self::events::{Subscription, Tap, TapFn};
pub use self::owner::{Node, ShutdownReport};

/// Default request timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default heartbeat.
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// A peer silent for this many of its heartbeats is gone.
pub(crate) const MISSED_HEARTBEATS: u32 = 3;
/// Default capacity of a subscription's queue.
pub(crate) const SUBSCRIPTION_CAPACITY: usize = 65_536;

/// The hooks of a service. Every method has a default, so implement only what you need.
///
/// ```
/// use async_trait::async_trait;
/// use serde_json::{json, Value};
/// use zeroservices_core::{Node, NodeHandle, Service};
///
/// /// Answers `{"hello": name}` with a greeting; logs `chat` events.
/// struct Greeter;
///
/// #[async_trait]
/// impl Service for Greeter {
///     async fn on_message(&self, _node: &NodeHandle, msg: Value) -> zeroservices_core::Result<Value> {
///         Ok(json!({"greeting": format!("hello {}", msg["hello"].as_str().unwrap_or("you"))}))
///     }
///     async fn on_event(&self, _node: &NodeHandle, topic: &str, data: Value) {
///         println!("{topic}: {data}");
///     }
///     fn subscriptions(&self) -> Vec<String> {
///         vec!["chat".into()]
///     }
/// }
/// let builder = Node::builder("greeter").service(Greeter);
/// # drop(builder);
/// ```
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// A unicast message (`kind: request` expects the returned value as reply; for
    /// `kind: notify` the value is discarded).
    async fn on_message(&self, node: &NodeHandle, message: Value) -> Result<Value> {
        let _ = (node, message);
        Err(Error::NotFound("this node does not handle messages".into()))
    }
    /// An event under one of [`Service::subscriptions`].
    async fn on_event(&self, node: &NodeHandle, topic: &str, data: Value) {
        let _ = (node, topic, data);
    }
    /// A peer appeared.
    async fn on_peer_join(&self, node: &NodeHandle, peer: &Announcement) {
        let _ = (node, peer);
    }
    /// A peer said bye or stopped answering.
    async fn on_peer_leave(&self, node: &NodeHandle, peer: &Announcement) {
        let _ = (node, peer);
    }
    /// Topic prefixes delivered to [`Service::on_event`].
    fn subscriptions(&self) -> Vec<String> {
        Vec::new()
    }
}

#[derive(Debug)]
struct NoService;
impl Service for NoService {}

/// A peer appearing or leaving, as seen by [`NodeHandle::peer_events`].
#[derive(Debug, Clone)]
pub enum PeerEvent {
    /// New peer.
    Joined(Announcement),
    /// Peer gone (bye, expiry or replaced by a restart).
    Left(Announcement),
}

/// Events waiting to be sequenced and published.
const EVENT_QUEUE: usize = 16_384;
/// Longest time shutdown gives the medium to send the last events to connected subscribers.
const EVENT_FLUSH: Duration = Duration::from_secs(2);

/// A cheap, cloneable handle on a running node: everything but stopping it. The node's own
/// tasks and the [`Service`] hooks get one; holding one does not keep the node running (its
/// owner, [`Node`], does). After the node stopped, calls through a handle fail with
/// [`Error::Shutdown`] or find nothing.
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<NodeInner>,
}

impl fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeHandle")
            .field("name", &self.inner.name)
            .field("node_id", &self.inner.node_id)
            .finish()
    }
}

struct NodeInner {
    name: String,
    node_id: String,
    node_type: NodeType,
    heartbeat: Duration,
    timeout: Duration,
    medium: Arc<dyn Medium>,
    directory: Directory,
    me: watch::Sender<Announcement>,
    service: Arc<dyn Service>,
    /// Names no collection may take (see [`NodeBuilder::reserve_names`]).
    reserved: Vec<String>,
    // A blocking (parking_lot) RwLock: read on every resource request, written when a collection is registered.
    hosted: RwLock<HashMap<String, Arc<Hosted>>>,
    // A blocking (parking_lot) Mutex: event fan-out does try_send under it; never held across an await.
    subs: Mutex<Vec<SubEntry>>,
    next_sub: AtomicU64,
    seq: AtomicU64,
    /// Where `node_id` and the seq reservation are kept, if anywhere (see `durable`).
    durable: Option<durable::Durable>,
    /// Changes waiting to be sequenced; drained by the event publisher task.
    events_tx: mpsc::Sender<(String, Vec<u8>)>,
    peer_events: broadcast::Sender<PeerEvent>,
    shutdown: CancellationToken,
    /// Cancelled first at [`Node::shutdown`] (and with `shutdown`): requests from peers are
    /// answered `shutdown` instead of run, while the ones running finish.
    stopping: CancellationToken,
    /// Tracks per-request and hook tasks, so shutdown can let them finish.
    tracker: TaskTracker,
    /// The node's long-lived tasks, by name; joined at shutdown.
    tasks: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl NodeInner {
    /// Tells a medium that routes by collection what this node serves now.
    fn serve_collections(&self, names: Vec<String>) {
        if let Some(r) = self.medium.collection_routing() {
            r.serve_collections(names);
        }
    }
}

impl NodeHandle {
    /// Unique id of this process's node.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Human name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Role.
    pub fn node_type(&self) -> NodeType {
        self.inner.node_type
    }

    /// The default request timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// What this node announces.
    pub fn announcement(&self) -> Announcement {
        self.inner.me.borrow().clone()
    }

    /// The directory of peers.
    pub fn directory(&self) -> &Directory {
        &self.inner.directory
    }

    /// Peers joining and leaving, from now on.
    pub fn peer_events(&self) -> broadcast::Receiver<PeerEvent> {
        self.inner.peer_events.subscribe()
    }

    /// Fires when the node shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Collections of this node whose store failed within `within` (for health reports).
    pub fn failing_collections(&self, within: Duration) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .hosted
            .read()
            .values()
            .filter(|h| h.last_failure.lock().is_some_and(|t| t.elapsed() < within))
            .map(|h| h.name.clone())
            .collect();
        v.sort();
        v
    }

    /// Names of the collections hosted here.
    pub fn local_collections(&self) -> Vec<String> {
        self.inner.me.borrow().collections.clone()
    }

    /// Hosts another collection and announces it at once (with its store's identity).
    pub async fn register_collection(&self, spec: CollectionSpec) -> Result<()> {
        let h = Arc::new(spec.into_hosted(&self.inner.reserved)?);
        let identity = h.store.identity().await?;
        let name = h.name.clone();
        self.inner.hosted.write().insert(name.clone(), h);
        self.inner.me.send_modify(|me| {
            if !me.collections.contains(&name) {
                me.collections.push(name.clone());
                me.collections.sort();
            }
            me.refused.remove(&name);
            me.stores.insert(name, identity);
        });
        self.inner.serve_collections(self.local_collections());
        self.refuse_split_collections();
        Ok(())
    }

    /// True while the durable seq reservation cannot be saved (see `events::reserve`).
    pub(crate) fn writes_refused(&self) -> bool {
        self.inner
            .durable
            .as_ref()
            .is_some_and(|d| d.failing.load(std::sync::atomic::Ordering::Acquire))
    }

    fn hosted(&self, collection: &str) -> Option<Arc<Hosted>> {
        self.inner.hosted.read().get(collection).cloned()
    }

    /// Typed calls on a collection of the cluster.
    pub fn collection(&self, name: &str) -> CollectionClient {
        CollectionClient::new(self.clone(), name)
    }

    /// Stops the node in order (see [`Node::shutdown`]).
    async fn stop(&self) -> ShutdownReport {
        let mut report = ShutdownReport::default();
        // 1. No new work from peers; what runs finishes and queues its events.
        self.inner.stopping.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(self.inner.timeout, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests still running at shutdown");
            report.requests_unfinished = true;
        }
        // 2. The tasks stop; the event publisher first sequences and publishes what is queued.
        // One that does not stop within 2 s is aborted; one that panicked is reported.
        self.inner.shutdown.cancel();
        let tasks: Vec<(&'static str, JoinHandle<()>)> =
            std::mem::take(&mut *self.inner.tasks.lock());
        for (name, mut t) in tasks {
            // Discovery sends its bye before returning; the rest return on cancel.
            match tokio::time::timeout(Duration::from_secs(2), &mut t).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_panic() => {
                    tracing::error!(task = name, "a node task had panicked");
                    report.panicked.push(name);
                }
                Ok(Err(_)) => {}
                Err(_) => {
                    tracing::warn!(task = name, "a node task did not stop within 2 s: aborted");
                    t.abort();
                    report.aborted.push(name);
                }
            }
        }
        // 3. Every acknowledged change's event leaves the node before it stops.
        self.inner.medium.flush(EVENT_FLUSH).await;
        let hosted: Vec<Arc<Hosted>> = self.inner.hosted.read().values().cloned().collect();
        for h in hosted {
            if let Err(e) = h.store.flush().await {
                tracing::error!(collection = %h.name, error = %e, "flush at shutdown failed");
                report.flush_failed.push(h.name.clone());
            }
        }
        report
    }
}
