//! [`NodeBuilder`]: what a node is made of (medium, discovery, collections, service hooks),
//! and starting it: the tasks every node runs.

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::CollectionSpec;
use crate::cluster_key::ClusterKey;
use crate::directory::Directory;
use crate::discovery::{Discovery, DiscoveryContext, Heard, NoDiscovery};
use crate::error::Result;
use crate::medium::{Inbox, Medium, MemoryMedium, MemoryNetwork};
#[cfg(feature = "nats")]
use crate::medium::{NatsConfig, NatsMedium};
#[cfg(feature = "zmq")]
use crate::medium::{ZmqConfig, ZmqMedium};
use crate::protocol::{AnnounceKind, Announcement, NodeType, PROTOCOL_VERSION};

use super::events::event_publisher;
use super::inbound::dispatcher;
use super::membership::{heard_loop, housekeeping, run_discovery};
use super::{
    NoService, Node, NodeHandle, NodeInner, Service, DEFAULT_HEARTBEAT, DEFAULT_TIMEOUT,
    EVENT_QUEUE, SUBSCRIPTION_CAPACITY,
};

pub(super) enum MediumChoice {
    #[cfg(feature = "zmq")]
    Zmq(ZmqConfig),
    Memory(MemoryNetwork),
    #[cfg(feature = "nats")]
    Nats(Box<NatsConfig>),
    Custom(Arc<dyn Medium>, Inbox),
    /// None chosen, and no ZeroMQ (the default) in this build.
    #[cfg_attr(feature = "zmq", allow(dead_code))]
    Unset,
}

impl MediumChoice {
    /// ZeroMQ with its defaults where it is built in, else nothing (an error at start).
    fn default_choice() -> MediumChoice {
        #[cfg(feature = "zmq")]
        return MediumChoice::Zmq(ZmqConfig::default());
        #[cfg(not(feature = "zmq"))]
        return MediumChoice::Unset;
    }
}

/// Configures and starts a [`Node`]: its medium (ZeroMQ by default), discovery, service hooks,
/// collections, cluster key and state directory.
///
/// ```no_run
/// use std::sync::Arc;
/// use zeroservices_core::{ClusterKey, CollectionSpec, Node, store::MemoryCollection, discovery::MulticastDiscovery};
///
/// # async fn demo() -> zeroservices_core::Result<()> {
/// let node = Node::builder("power-service")
///     .discovery(MulticastDiscovery::default())
///     .cluster_key(ClusterKey::new(&std::fs::read("cluster.key")?))
///     .state_dir("./state") // the same node_id and seq after a restart
///     .collection(CollectionSpec::new("power", Arc::new(MemoryCollection::new())))
///     .start()
///     .await?;
/// # drop(node); Ok(()) }
/// ```
pub struct NodeBuilder {
    name: String,
    node_type: NodeType,
    heartbeat: Duration,
    timeout: Duration,
    medium: MediumChoice,
    discovery: Box<dyn Discovery>,
    /// Whether the user chose the discovery (a NATS medium then keeps it).
    discovery_set: bool,
    service: Arc<dyn Service>,
    collections: Vec<CollectionSpec>,
    reserved: Vec<String>,
    cluster_key: Option<Arc<ClusterKey>>,
    state_dir: Option<std::path::PathBuf>,
    seq_block: u64,
}

impl fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("name", &self.name)
            .field("node_type", &self.node_type)
            .finish()
    }
}

impl NodeBuilder {
    /// Sets the role (default `service`).
    pub fn node_type(mut self, t: NodeType) -> Self {
        self.node_type = t;
        self
    }
    /// Announce period (default 1 s); peers silent for 3 of theirs are gone.
    pub fn heartbeat(mut self, d: Duration) -> Self {
        self.heartbeat = d;
        self
    }
    /// Request timeout (default 5 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }
    /// ZeroMQ medium (the default, with random ports, on loopback unless a cluster key is set:
    /// see [`ZmqConfig::bind_address`]).
    #[cfg(feature = "zmq")]
    pub fn zmq(mut self, cfg: ZmqConfig) -> Self {
        self.medium = MediumChoice::Zmq(cfg);
        self
    }
    /// NATS medium (see [`NatsMedium`]); peers are then found through NATS as well
    /// ([`crate::discovery::NatsDiscovery`]) unless a discovery was set with
    /// [`NodeBuilder::discovery`], which is then kept.
    #[cfg(feature = "nats")]
    pub fn nats(mut self, cfg: NatsConfig) -> Self {
        self.medium = MediumChoice::Nats(Box::new(cfg));
        self
    }
    /// In-process medium on `net`.
    pub fn memory(mut self, net: &MemoryNetwork) -> Self {
        self.medium = MediumChoice::Memory(net.clone());
        self
    }
    /// Any medium already bound, with its inbox.
    pub fn medium(mut self, medium: Arc<dyn Medium>, inbox: Inbox) -> Self {
        self.medium = MediumChoice::Custom(medium, inbox);
        self
    }
    /// Discovery (default: none).
    pub fn discovery(mut self, d: impl Discovery) -> Self {
        self.discovery = Box::new(d);
        self.discovery_set = true;
        self
    }
    /// Discovery, already boxed.
    pub fn boxed_discovery(mut self, d: Box<dyn Discovery>) -> Self {
        self.discovery = d;
        self.discovery_set = true;
        self
    }
    /// Authenticates every datagram and frame with a shared key; peers without it are ignored.
    pub fn cluster_key(mut self, key: Arc<ClusterKey>) -> Self {
        self.cluster_key = Some(key);
        self
    }
    /// Service hooks.
    pub fn service(mut self, s: impl Service) -> Self {
        self.service = Arc::new(s);
        self
    }
    /// Keeps this node's identity in `dir` (`node.json`): the same `node_id` after a restart,
    /// and `seq` continuing above every value used before, so clients resuming with `since`
    /// are never silently short of events. Give a node with a persistent store its directory
    /// (`serve` and the examples use the embedded store's); one process per directory.
    pub fn state_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }
    /// Hosts a collection.
    pub fn collection(mut self, spec: CollectionSpec) -> Self {
        self.collections.push(spec);
        self
    }

    /// Names no collection of this node may take, such as the routes of the HTTP layer that
    /// serves the cluster (`zeroservices_http::RESERVED_ROUTES`), checked at start and by
    /// [`NodeHandle::register_collection`]. Adds to what was reserved before.
    ///
    /// ```
    /// # use zeroservices_core::Node;
    /// let builder = Node::builder("svc").reserve_names(&["health", "ui"]);
    /// # drop(builder);
    /// ```
    pub fn reserve_names(mut self, names: &[&str]) -> Self {
        self.reserved.extend(names.iter().map(|n| (*n).to_owned()));
        self
    }

    /// Seqs reserved at a time in the state directory (default 2^20): for tests of what
    /// happens when a reservation cannot be saved, which they would otherwise reach only
    /// after a million events.
    #[doc(hidden)]
    pub fn seq_reservation_block(mut self, block: u64) -> Self {
        self.seq_block = block.max(1);
        self
    }

    /// Binds the medium, starts discovery and every background task.
    pub async fn start(mut self) -> Result<Node> {
        for spec in &self.collections {
            spec.ensure_indexes().await?;
        }
        let (durable, first_seq) = match &self.state_dir {
            Some(dir) => {
                let (d, used) = super::durable::Durable::open(dir, self.seq_block)?;
                (Some(d), used)
            }
            None => (None, 0),
        };
        let node_id = durable.as_ref().map_or_else(
            || uuid::Uuid::new_v4().simple().to_string(),
            |d| d.node_id().to_owned(),
        );
        let (medium, inbox) = self.bind_medium(&node_id).await?;
        let mut hosted = HashMap::new();
        for spec in std::mem::take(&mut self.collections) {
            let h = spec.into_hosted(&self.reserved)?;
            hosted.insert(h.name.clone(), Arc::new(h));
        }
        let me = self
            .announcement(&node_id, &hosted, medium.endpoints())
            .await?;
        let (me_tx, me_rx) = watch::channel(me);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (heard_tx, heard_rx) = mpsc::channel(1024);
        let shutdown = CancellationToken::new();
        let stopping = shutdown.child_token();
        let inner = Arc::new(NodeInner {
            name: self.name.clone(),
            node_id,
            node_type: self.node_type,
            heartbeat: self.heartbeat,
            timeout: self.timeout,
            medium,
            directory: Directory::new(),
            me: me_tx,
            service: self.service.clone(),
            reserved: std::mem::take(&mut self.reserved),
            hosted: RwLock::new(hosted),
            subs: Mutex::new(Vec::new()),
            next_sub: AtomicU64::new(1),
            seq: AtomicU64::new(first_seq),
            durable,
            events_tx,
            peer_events: broadcast::channel(256).0,
            shutdown,
            stopping,
            tracker: TaskTracker::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let ctx = DiscoveryContext {
            me: me_rx,
            heard: heard_tx,
            heartbeat: self.heartbeat,
            shutdown: inner.shutdown.clone(),
            directory: inner.directory.clone(),
            cluster_key: self.cluster_key.clone(),
            medium: inner.medium.clone(),
        };
        inner.serve_collections(inner.me.borrow().collections.clone());
        let tasks = spawn_tasks(&inner, self.discovery, ctx, inbox, events_rx, heard_rx);
        *inner.tasks.lock() = tasks;
        tracing::info!(name = %inner.name, node_id = %inner.node_id, endpoints = ?inner.medium.endpoints(), "node started");
        Ok(Node::own(NodeHandle { inner }))
    }

    /// What the node announces: its collections with their stores' identities.
    async fn announcement(
        &self,
        node_id: &str,
        hosted: &HashMap<String, Arc<super::Hosted>>,
        endpoints: crate::protocol::Endpoints,
    ) -> Result<Announcement> {
        let mut names: Vec<String> = hosted.keys().cloned().collect();
        names.sort();
        let mut stores = std::collections::BTreeMap::new();
        for (name, h) in hosted {
            stores.insert(name.clone(), h.store.identity().await?);
        }
        Ok(Announcement {
            version: PROTOCOL_VERSION,
            kind: AnnounceKind::Announce,
            node_id: node_id.to_owned(),
            name: self.name.clone(),
            node_type: self.node_type,
            collections: names,
            endpoints,
            heartbeat_ms: u64::try_from(self.heartbeat.as_millis())
                .unwrap_or(1000)
                .max(1),
            stores,
            started_ms: super::events::now_ms(),
            refused: Default::default(),
        })
    }

    /// The medium chosen, bound for the node `node_id` (with the cluster key, if any).
    #[cfg_attr(not(feature = "zmq"), allow(unused_variables))]
    async fn bind_medium(&mut self, node_id: &str) -> Result<(Arc<dyn Medium>, Inbox)> {
        let choice = std::mem::replace(&mut self.medium, MediumChoice::Unset);
        Ok(match choice {
            #[cfg(feature = "zmq")]
            MediumChoice::Zmq(mut cfg) => {
                if self.cluster_key.is_some() {
                    cfg.cluster_key = self.cluster_key.clone();
                }
                cfg.node_id = Some(node_id.to_owned());
                let (m, i) = ZmqMedium::bind(cfg).await?;
                (Arc::new(m), i)
            }
            #[cfg(feature = "nats")]
            MediumChoice::Nats(mut cfg) => {
                if self.cluster_key.is_some() {
                    cfg.cluster_key = self.cluster_key.clone();
                }
                let (m, i) = NatsMedium::connect(*cfg).await?;
                if self.discovery_set {
                    tracing::info!("NATS medium with the discovery set on the builder (not NATS discovery)");
                } else {
                    self.discovery = Box::new(crate::discovery::NatsDiscovery::new(&m));
                }
                (Arc::new(m), i)
            }
            MediumChoice::Memory(net) => {
                let (m, i) = MemoryMedium::attach_with_key(&net, self.cluster_key.clone());
                (Arc::new(m), i)
            }
            MediumChoice::Custom(m, i) => (m, i),
            MediumChoice::Unset => {
                return Err(crate::Error::BadRequest(
                    "no medium: choose one on the builder (memory, nats, medium) or build with the `zmq` feature".into(),
                ))
            }
        })
    }
}

/// The node's long-lived tasks: inbound dispatch, event publishing, membership, discovery, and
/// the service's event hook (its subscription made first, so `on_event` sees events from the
/// first peer on).
fn spawn_tasks(
    inner: &Arc<NodeInner>,
    discovery: Box<dyn Discovery>,
    ctx: DiscoveryContext,
    inbox: Inbox,
    events_rx: mpsc::Receiver<(String, Vec<u8>)>,
    heard_rx: mpsc::Receiver<Heard>,
) -> Vec<(&'static str, JoinHandle<()>)> {
    let node = NodeHandle {
        inner: inner.clone(),
    };
    let service_sub = {
        let prefixes = node.inner.service.subscriptions();
        (!prefixes.is_empty()).then(|| node.subscribe_many(prefixes, SUBSCRIPTION_CAPACITY))
    };
    let mut tasks = vec![
        ("dispatcher", tokio::spawn(dispatcher(node.clone(), inbox))),
        (
            "event publisher",
            tokio::spawn(event_publisher(node.clone(), events_rx)),
        ),
        (
            "membership",
            tokio::spawn(heard_loop(node.clone(), heard_rx)),
        ),
        ("housekeeping", tokio::spawn(housekeeping(node.clone()))),
        ("discovery", tokio::spawn(run_discovery(discovery, ctx))),
    ];
    if let Some(sub) = service_sub {
        tasks.push(("service events", tokio::spawn(service_events(node, sub))));
    }
    tasks
}

/// Hands each event of the service's subscriptions to its `on_event` hook, one at a time. A
/// hook that panics is logged and delivery goes on with the next event: user code never ends
/// the node's event delivery for good.
async fn service_events(node: NodeHandle, mut sub: crate::Subscription) {
    use futures::FutureExt as _;
    while let Some(ev) = sub.recv().await {
        let v = match ev.json() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(topic = %ev.topic, error = %e, "event with invalid JSON dropped");
                continue;
            }
        };
        let hook = node.inner.service.on_event(&node, &ev.topic, v);
        if std::panic::AssertUnwindSafe(hook)
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::error!(topic = %ev.topic, "the service's on_event hook panicked; next event");
        }
    }
}

impl NodeBuilder {
    /// Starts configuring a node named `name` (also [`Node::builder`]).
    pub fn new(name: &str) -> NodeBuilder {
        NodeBuilder {
            name: name.to_owned(),
            node_type: NodeType::Service,
            heartbeat: DEFAULT_HEARTBEAT,
            timeout: DEFAULT_TIMEOUT,
            medium: MediumChoice::default_choice(),
            discovery_set: false,
            discovery: Box::new(NoDiscovery),
            service: Arc::new(NoService),
            collections: Vec::new(),
            reserved: Vec::new(),
            cluster_key: None,
            state_dir: None,
            seq_block: super::durable::SEQ_BLOCK,
        }
    }
}
