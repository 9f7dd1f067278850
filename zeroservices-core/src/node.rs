//! The node: one process's membership in the cluster. It owns a medium, runs a discovery,
//! keeps the directory, hosts collections, routes resource requests, publishes and delivers
//! events, and calls the [`Service`] hooks.
//!
//! ```no_run
//! use std::sync::Arc;
//! use serde_json::json;
//! use zeroservices_core::{CollectionSpec, MemoryCollection, MulticastDiscovery, Node, ZmqConfig};
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

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster_key::ClusterKey;
use crate::directory::{resolve_endpoint, Directory, Upsert};
use crate::discovery::{Discovery, DiscoveryContext, Heard, NoDiscovery};
use crate::error::{Error, Result};
use crate::medium::{
    Event, InboundRequest, Inbox, Incoming, Medium, MemoryMedium, MemoryNetwork, MessageKind,
    ZmqConfig, ZmqMedium,
};
use crate::protocol::{
    decode_reply, encode_json_reply, encode_reply, kind, reply_data, topic_matches, AnnounceKind,
    Announcement, NodeType, PROTOCOL_VERSION,
};
use crate::resources::{CollectionClient, CollectionSpec, Hosted, Output, ResourceRequest};

/// Default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default heartbeat.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// A peer silent for this many of its heartbeats is gone.
pub const MISSED_HEARTBEATS: u32 = 3;
/// Default capacity of a subscription's queue.
pub const SUBSCRIPTION_CAPACITY: usize = 65_536;

/// The hooks of a service. Every method has a default, so implement only what you need.
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// A unicast message (`kind: request` expects the returned value as reply; for
    /// `kind: notify` the value is discarded).
    async fn on_message(&self, node: &Node, message: Value) -> Result<Value> {
        let _ = (node, message);
        Err(Error::NotFound("this node does not handle messages".into()))
    }
    /// An event under one of [`Service::subscriptions`].
    async fn on_event(&self, node: &Node, topic: &str, data: Value) {
        let _ = (node, topic, data);
    }
    /// A peer appeared.
    async fn on_peer_join(&self, node: &Node, peer: &Announcement) {
        let _ = (node, peer);
    }
    /// A peer said bye or stopped answering.
    async fn on_peer_leave(&self, node: &Node, peer: &Announcement) {
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

/// A peer appearing or leaving, as seen by [`Node::peer_events`].
#[derive(Debug, Clone)]
pub enum PeerEvent {
    /// New peer.
    Joined(Announcement),
    /// Peer gone (bye, expiry or replaced by a restart).
    Left(Announcement),
}

enum MediumChoice {
    Zmq(ZmqConfig),
    Memory(MemoryNetwork),
    Custom(Arc<dyn Medium>, Inbox),
}

/// Configures and starts a [`Node`].
pub struct NodeBuilder {
    name: String,
    node_type: NodeType,
    heartbeat: Duration,
    timeout: Duration,
    medium: MediumChoice,
    discovery: Box<dyn Discovery>,
    service: Arc<dyn Service>,
    collections: Vec<CollectionSpec>,
    cluster_key: Option<Arc<ClusterKey>>,
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
    /// ZeroMQ medium (the default, on all interfaces with random ports).
    pub fn zmq(mut self, cfg: ZmqConfig) -> Self {
        self.medium = MediumChoice::Zmq(cfg);
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
        self
    }
    /// Discovery, already boxed.
    pub fn boxed_discovery(mut self, d: Box<dyn Discovery>) -> Self {
        self.discovery = d;
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
    /// Hosts a collection.
    pub fn collection(mut self, spec: CollectionSpec) -> Self {
        self.collections.push(spec);
        self
    }

    /// Binds the medium, starts discovery and every background task.
    pub async fn start(self) -> Result<Node> {
        let (medium, inbox): (Arc<dyn Medium>, Inbox) = match self.medium {
            MediumChoice::Zmq(mut cfg) => {
                if self.cluster_key.is_some() {
                    cfg.cluster_key = self.cluster_key.clone();
                }
                let (m, i) = ZmqMedium::bind(cfg).await?;
                (Arc::new(m), i)
            }
            MediumChoice::Memory(net) => {
                let (m, i) = MemoryMedium::attach_with_key(&net, self.cluster_key.clone());
                (Arc::new(m), i)
            }
            MediumChoice::Custom(m, i) => (m, i),
        };
        let mut hosted = HashMap::new();
        for spec in self.collections {
            let h = spec.into_hosted()?;
            hosted.insert(h.name.clone(), Arc::new(h));
        }
        let node_id = uuid::Uuid::new_v4().simple().to_string();
        let mut names: Vec<String> = hosted.keys().cloned().collect();
        names.sort();
        let me = Announcement {
            version: PROTOCOL_VERSION,
            kind: AnnounceKind::Announce,
            node_id: node_id.clone(),
            name: self.name.clone(),
            node_type: self.node_type,
            collections: names,
            endpoints: medium.endpoints(),
            heartbeat_ms: u64::try_from(self.heartbeat.as_millis())
                .unwrap_or(1000)
                .max(1),
        };
        let (me_tx, me_rx) = watch::channel(me);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (heard_tx, heard_rx) = mpsc::channel(1024);
        let shutdown = CancellationToken::new();
        let stopping = shutdown.child_token();
        let inner = Arc::new(NodeInner {
            name: self.name,
            node_id,
            node_type: self.node_type,
            heartbeat: self.heartbeat,
            timeout: self.timeout,
            medium,
            directory: Directory::new(),
            me: me_tx,
            service: self.service.clone(),
            hosted: RwLock::new(hosted),
            subs: Mutex::new(Vec::new()),
            next_sub: AtomicU64::new(1),
            seq: AtomicU64::new(0),
            events_tx,
            peer_events: broadcast::channel(256).0,
            shutdown,
            stopping,
            tracker: TaskTracker::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let node = Node {
            inner: inner.clone(),
            _guard: None,
        };
        let ctx = DiscoveryContext {
            me: me_rx,
            heard: heard_tx,
            heartbeat: self.heartbeat,
            shutdown: inner.shutdown.clone(),
            directory: inner.directory.clone(),
            cluster_key: self.cluster_key.clone(),
        };
        // Service subscription first, so `on_event` sees events from the first peer on.
        let service_sub = {
            let prefixes = self.service.subscriptions();
            (!prefixes.is_empty()).then(|| node.subscribe_many(prefixes, SUBSCRIPTION_CAPACITY))
        };
        let handles = vec![
            tokio::spawn(dispatcher(node.clone(), inbox)),
            tokio::spawn(event_publisher(node.clone(), events_rx)),
            tokio::spawn(heard_loop(node.clone(), heard_rx)),
            tokio::spawn(housekeeping(node.clone())),
            tokio::spawn(run_discovery(self.discovery, ctx)),
        ];
        let mut all = handles;
        if let Some(mut sub) = service_sub {
            let n = node.clone();
            all.push(tokio::spawn(async move {
                while let Some(ev) = sub.recv().await {
                    match ev.json() {
                        Ok(v) => n.inner.service.on_event(&n, &ev.topic, v).await,
                        Err(e) => tracing::warn!(topic = %ev.topic, error = %e, "event with invalid JSON dropped"),
                    }
                }
            }));
        }
        *inner.tasks.lock().unwrap_or_else(|p| p.into_inner()) = all;
        let guard = Arc::new(ShutdownGuard(inner.shutdown.clone()));
        tracing::info!(name = %inner.name, node_id = %inner.node_id, endpoints = ?inner.medium.endpoints(), "node started");
        Ok(Node {
            inner,
            _guard: Some(guard),
        })
    }
}

/// Events waiting to be sequenced and published.
const EVENT_QUEUE: usize = 16_384;
/// Longest time shutdown gives the medium to send the last events to connected subscribers.
const EVENT_FLUSH: Duration = Duration::from_secs(2);

/// A handle on a running node. Cheap to clone; the node stops when the last handle returned
/// by [`NodeBuilder::start`] (and its clones) is dropped, or at [`Node::shutdown`].
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
    /// Present in user handles: the last one dropped cancels the node. Handles used by the
    /// node's own tasks have none, so they do not keep the node alive.
    _guard: Option<Arc<ShutdownGuard>>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.name)
            .field("node_id", &self.inner.node_id)
            .finish()
    }
}

#[derive(Debug)]
struct ShutdownGuard(CancellationToken);

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        self.0.cancel();
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
    // std RwLock: read on every resource request, written when a collection is registered.
    hosted: RwLock<HashMap<String, Arc<Hosted>>>,
    // std Mutex: event fan-out does try_send under it; never held across an await.
    subs: Mutex<Vec<SubEntry>>,
    next_sub: AtomicU64,
    seq: AtomicU64,
    /// Changes waiting to be sequenced; drained by the event publisher task.
    events_tx: mpsc::Sender<(String, Vec<u8>)>,
    peer_events: broadcast::Sender<PeerEvent>,
    shutdown: CancellationToken,
    /// Cancelled first at [`Node::shutdown`] (and with `shutdown`): requests from peers are
    /// answered `shutdown` instead of run, while the ones running finish.
    stopping: CancellationToken,
    /// Tracks per-request and hook tasks, so shutdown can let them finish.
    tracker: TaskTracker,
    /// The node's long-lived tasks; joined at shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct SubEntry {
    id: u64,
    prefixes: Vec<String>,
    sink: Sink,
}

/// Where a subscription's events go.
enum Sink {
    /// A bounded queue read by a [`Subscription`]; full means dropped and counted.
    Queue {
        tx: mpsc::Sender<Event>,
        dropped: Arc<AtomicU64>,
    },
    /// A callback run where the event is delivered (see [`Node::tap`]).
    Call(TapFn),
}

/// The callback of a [`Tap`].
pub type TapFn = Arc<dyn Fn(&Event) + Send + Sync>;

/// A callback receiving events under some topic prefixes, from [`Node::tap`]. Removed when
/// dropped.
pub struct Tap {
    id: u64,
    node: Weak<NodeInner>,
}

impl fmt::Debug for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap").field("id", &self.id).finish()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Some(inner) = self.node.upgrade() {
            inner.unsubscribe(self.id);
        }
    }
}

/// A stream of events under some topic prefixes. Bounded: when its queue is full, new events
/// are dropped and counted in [`Subscription::dropped`] (the node never waits for a slow
/// consumer). Unsubscribes when dropped.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Event>,
    id: u64,
    dropped: Arc<AtomicU64>,
    node: Weak<NodeInner>,
}

impl Subscription {
    /// The next event; `None` once the node stopped.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(inner) = self.node.upgrade() {
            inner.unsubscribe(self.id);
        }
    }
}

impl NodeInner {
    fn subscribe(&self, prefixes: Vec<String>, sink: Sink) -> u64 {
        let id = self.next_sub.fetch_add(1, Ordering::Relaxed);
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(SubEntry { id, prefixes, sink });
        self.update_medium_subscriptions();
        id
    }

    fn unsubscribe(&self, id: u64) {
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| s.id != id);
        self.update_medium_subscriptions();
    }

    fn update_medium_subscriptions(&self) {
        let mut prefixes: Vec<String> = {
            let subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
            subs.iter()
                .flat_map(|s| s.prefixes.iter().cloned())
                .collect()
        };
        if prefixes.iter().any(|p| p.is_empty() || p == "*") {
            prefixes = vec![String::new()];
        }
        prefixes.sort();
        prefixes.dedup();
        self.medium.set_subscriptions(prefixes);
    }

    fn deliver_local(&self, ev: &Event) {
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|s| {
            if !s.prefixes.iter().any(|p| topic_matches(p, &ev.topic)) {
                return true;
            }
            match &s.sink {
                Sink::Queue { tx, dropped } => match tx.try_send(ev.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                },
                Sink::Call(f) => {
                    f(ev);
                    true
                }
            }
        });
    }
}

/// Where a resource action ran: its result here, or a provider's reply body.
enum Answer {
    Here(Output),
    There(Bytes),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    /// Starts configuring a node named `name`.
    pub fn builder(name: &str) -> NodeBuilder {
        NodeBuilder {
            name: name.to_owned(),
            node_type: NodeType::Service,
            heartbeat: DEFAULT_HEARTBEAT,
            timeout: DEFAULT_TIMEOUT,
            medium: MediumChoice::Zmq(ZmqConfig::default()),
            discovery: Box::new(NoDiscovery),
            service: Arc::new(NoService),
            collections: Vec::new(),
            cluster_key: None,
        }
    }

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
    /// Names of the collections hosted here.
    pub fn local_collections(&self) -> Vec<String> {
        self.inner.me.borrow().collections.clone()
    }

    /// Hosts another collection and announces it at once.
    pub fn register_collection(&self, spec: CollectionSpec) -> Result<()> {
        let h = Arc::new(spec.into_hosted()?);
        let name = h.name.clone();
        self.inner
            .hosted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), h);
        self.inner.me.send_modify(|me| {
            if !me.collections.contains(&name) {
                me.collections.push(name);
                me.collections.sort();
            }
        });
        Ok(())
    }

    fn hosted(&self, collection: &str) -> Option<Arc<Hosted>> {
        self.inner
            .hosted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(collection)
            .cloned()
    }

    /// Typed calls on a collection of the cluster.
    pub fn collection(&self, name: &str) -> CollectionClient {
        CollectionClient::new(self.clone(), name)
    }

    /// Runs a resource action: here when this node hosts the collection, else on a live
    /// provider (round-robin). Read-only actions are retried on another provider when one
    /// fails. Errors: `NotFound` for a collection never seen, `Unavailable` when every
    /// provider is gone, `Timeout`, and whatever the collection answered.
    pub async fn send(&self, req: ResourceRequest) -> Result<Value> {
        match self.route(req).await? {
            Answer::Here(out) => out.into_value(),
            Answer::There(b) => decode_reply(&b),
        }
    }

    /// [`Node::send`], answering the JSON bytes of the result. A provider's answer is passed
    /// on as it came (checked, not parsed into a `Value` and serialized again): what a gateway
    /// forwarding results wants.
    ///
    /// ```
    /// # async fn demo(node: zeroservices_core::Node) -> zeroservices_core::Result<()> {
    /// use zeroservices_core::ResourceRequest;
    /// let json = node.send_json(ResourceRequest::new("power", "list", serde_json::json!({}))).await?;
    /// assert!(json.starts_with(b"{"));
    /// # Ok(()) }
    /// ```
    pub async fn send_json(&self, req: ResourceRequest) -> Result<Bytes> {
        match self.route(req).await? {
            Answer::Here(out) => out.into_json().map(Bytes::from),
            Answer::There(b) => reply_data(&b),
        }
    }

    /// [`Node::send`], its result read straight into `T` (a provider's reply is not built
    /// into a `Value` first).
    pub(crate) async fn send_as<T: serde::de::DeserializeOwned>(
        &self,
        req: ResourceRequest,
    ) -> Result<T> {
        let shape = |e: serde_json::Error| Error::Internal(format!("unexpected reply shape: {e}"));
        match self.route(req).await? {
            Answer::Here(Output::Value(v)) => serde_json::from_value(v).map_err(shape),
            Answer::Here(Output::Json(b)) => serde_json::from_slice(&b).map_err(shape),
            Answer::There(b) => serde_json::from_slice(&reply_data(&b)?).map_err(shape),
        }
    }

    async fn route(&self, req: ResourceRequest) -> Result<Answer> {
        if let Some(h) = self.hosted(&req.collection) {
            return h.execute(self, req).await.map(Answer::Here);
        }
        let body =
            Bytes::from(serde_json::to_vec(&req).map_err(|e| Error::Internal(e.to_string()))?);
        let mut tried: Vec<String> = Vec::new();
        let mut last_failure: Option<Error> = None;
        loop {
            let Some(peer) = self.inner.directory.pick_provider(&req.collection, &tried) else {
                return Err(match last_failure {
                    // Every provider tried timed out: that is what the caller should hear.
                    Some(e @ Error::Timeout(_)) => e,
                    _ if tried.is_empty() && !self.inner.directory.has_seen(&req.collection) => {
                        Error::NotFound(format!("unknown collection {:?}", req.collection))
                    }
                    _ => Error::Unavailable(req.collection.clone()),
                });
            };
            let reply = self
                .inner
                .medium
                .request(&peer, kind::RESOURCE, body.clone(), self.inner.timeout)
                .await;
            match reply {
                Ok(b) => return Ok(Answer::There(b)),
                Err(e @ (Error::PeerGone(_) | Error::Timeout(_) | Error::Transport(_))) => {
                    tracing::debug!(%peer, error = %e, collection = %req.collection, "provider failed");
                    if matches!(e, Error::PeerGone(_)) {
                        // Refused or reset: skip it until it announces itself again.
                        self.inner.directory.mark_down(&peer);
                    }
                    let give_up = !req.is_read_only() || tried.len() >= 2;
                    let e = match e {
                        Error::Timeout(_) => e,
                        _ => Error::Unavailable(req.collection.clone()),
                    };
                    if give_up {
                        return Err(e);
                    }
                    last_failure = Some(e);
                    tried.push(peer);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a message to a peer's `on_message` and waits for its reply.
    pub async fn request(&self, node_id: &str, message: Value) -> Result<Value> {
        self.request_with_timeout(node_id, message, self.inner.timeout)
            .await
    }

    /// [`Node::request`] with an explicit timeout.
    pub async fn request_with_timeout(
        &self,
        node_id: &str,
        message: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let body = Bytes::from(message.to_string());
        let reply = self
            .inner
            .medium
            .request(node_id, kind::REQUEST, body, timeout)
            .await?;
        decode_reply(&reply)
    }

    /// Sends a one-way message to a peer's `on_message`.
    pub async fn notify(&self, node_id: &str, message: Value) -> Result<()> {
        self.inner
            .medium
            .notify(node_id, kind::NOTIFY, Bytes::from(message.to_string()))
            .await
    }

    /// Measures the round-trip time to a peer.
    pub async fn ping(&self, node_id: &str) -> Result<Duration> {
        let start = Instant::now();
        let reply = self
            .inner
            .medium
            .request(
                node_id,
                kind::PING,
                Bytes::from_static(b"{}"),
                self.inner.timeout,
            )
            .await?;
        decode_reply(&reply)?;
        Ok(start.elapsed())
    }

    /// Publishes an event to every subscriber in the cluster, this node included.
    pub async fn publish(&self, topic: &str, data: &Value) -> Result<()> {
        let payload = Bytes::from(data.to_string());
        let ev = Event {
            topic: Arc::from(topic),
            payload: payload.clone(),
        };
        self.inner.deliver_local(&ev);
        self.inner.medium.publish(topic, payload).await
    }

    /// Delivers an event to this node's own subscribers only (nothing goes to peers).
    pub fn publish_local(&self, topic: &str, data: &Value) {
        let ev = Event {
            topic: Arc::from(topic),
            payload: Bytes::from(data.to_string()),
        };
        self.inner.deliver_local(&ev);
    }

    /// Queues a resource change event; the event task gives it its `seq` and publishes it, so
    /// events leave in `seq` order. The payload is written here around the data's JSON bytes
    /// (serialized once by the caller); the event task only appends `seq` and `ts`.
    pub(crate) async fn publish_change(
        &self,
        collection: &str,
        action: &str,
        id: &str,
        data_json: Option<&[u8]>,
        patch: Option<&Value>,
    ) {
        // {"collection":…,"action":…,"resource_id":…[,"resource_data":…][,"patch":…],"node_id":…
        // (left open: the event task appends seq and ts and closes it).
        let mut body = Vec::with_capacity(128 + data_json.map_or(0, <[u8]>::len));
        let written = (|| -> serde_json::Result<()> {
            body.extend_from_slice(br#"{"collection":"#);
            serde_json::to_writer(&mut body, collection)?;
            body.extend_from_slice(br#","action":"#);
            serde_json::to_writer(&mut body, action)?;
            body.extend_from_slice(br#","resource_id":"#);
            serde_json::to_writer(&mut body, id)?;
            if let Some(d) = data_json {
                body.extend_from_slice(br#","resource_data":"#);
                body.extend_from_slice(d);
            }
            if let Some(p) = patch {
                body.extend_from_slice(br#","patch":"#);
                serde_json::to_writer(&mut body, p)?;
            }
            body.extend_from_slice(br#","node_id":"#);
            serde_json::to_writer(&mut body, &self.inner.node_id)
        })();
        if let Err(e) = written {
            tracing::error!(collection, action, id, error = %e, "change event not serializable");
            return;
        }
        let topic = format!("{collection}.{action}.{id}");
        if self.inner.events_tx.send((topic, body)).await.is_err() {
            tracing::warn!(
                collection,
                action,
                id,
                "node stopping: change event not published"
            );
        }
    }

    /// Receives events whose topic lies under `prefix` (`*` or empty: everything).
    pub fn subscribe(&self, prefix: &str) -> Subscription {
        self.subscribe_many(vec![prefix.to_owned()], SUBSCRIPTION_CAPACITY)
    }

    /// Receives events under any of `prefixes`, with a queue of `capacity` events.
    pub fn subscribe_many(&self, prefixes: Vec<String>, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let id = self.inner.subscribe(
            prefixes,
            Sink::Queue {
                tx,
                dropped: dropped.clone(),
            },
        );
        Subscription {
            rx,
            id,
            dropped,
            node: Arc::downgrade(&self.inner),
        }
    }

    /// Calls `f` with every event under any of `prefixes`, where the event is delivered: no
    /// queue and no task in between. `f` runs while the node's subscription list is locked, so
    /// it must be quick and must not block or wait, and must not subscribe or unsubscribe — that
    /// includes dropping a [`Tap`] or [`Subscription`], even indirectly through the last `Arc` of
    /// something that owns one (hand work off with `try_send`). The callback is removed when the
    /// returned [`Tap`] is dropped.
    ///
    /// ```
    /// # async fn demo(node: zeroservices_core::Node) {
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// let seen = Arc::new(AtomicU64::new(0));
    /// let counter = seen.clone();
    /// let _tap = node.tap(vec!["power.".into()], Arc::new(move |_ev: &zeroservices_core::Event| {
    ///     counter.fetch_add(1, Ordering::Relaxed);
    /// }));
    /// # }
    /// ```
    pub fn tap(&self, prefixes: Vec<String>, f: TapFn) -> Tap {
        let id = self.inner.subscribe(prefixes, Sink::Call(f));
        Tap {
            id,
            node: Arc::downgrade(&self.inner),
        }
    }

    /// Adds a peer by hand (as if announced).
    pub async fn add_peer(&self, a: Announcement) {
        self.handle_heard(Heard {
            announcement: a,
            source: None,
            direct: true,
        })
        .await;
    }

    /// Stops the node in order: requests from peers are refused (`shutdown`) while the ones
    /// running finish (at most the request timeout); then the tasks stop (discovery says bye)
    /// after the event publisher sent every queued change; the medium sends the last events
    /// (at most 2 s) and the hosted stores are flushed. Call it after the HTTP server stopped,
    /// so every acknowledged write has queued its event.
    pub async fn shutdown(&self) {
        // 1. No new work from peers; what runs finishes and queues its events.
        self.inner.stopping.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(self.inner.timeout, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests still running at shutdown");
        }
        // 2. The tasks stop; the event publisher first sequences and publishes what is queued.
        self.inner.shutdown.cancel();
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            // Discovery sends its bye before returning; the rest return on cancel.
            if tokio::time::timeout(Duration::from_secs(2), t)
                .await
                .is_err()
            {
                tracing::warn!("a node task did not stop within 2 s");
            }
        }
        // 3. Every acknowledged change's event leaves the node before it stops.
        self.inner.medium.flush(EVENT_FLUSH).await;
        let hosted: Vec<Arc<Hosted>> = self
            .inner
            .hosted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for h in hosted {
            if let Err(e) = h.store.flush().await {
                tracing::error!(collection = %h.name, error = %e, "flush at shutdown failed");
            }
        }
    }

    async fn handle_heard(&self, h: Heard) {
        let mut a = h.announcement;
        if a.node_id == self.inner.node_id {
            return;
        }
        a.endpoints.request = resolve_endpoint(&a.endpoints.request, h.source);
        a.endpoints.publish = resolve_endpoint(&a.endpoints.publish, h.source);
        if a.kind == AnnounceKind::Bye {
            if let Some(p) = self.inner.directory.remove(&a.node_id) {
                self.peer_left(p.announcement).await;
            }
            return;
        }
        match self.inner.directory.upsert(a.clone(), h.direct) {
            Upsert::Joined { replaced, evicted } => {
                for old in replaced.into_iter().chain(evicted.map(|b| *b)) {
                    self.peer_left(old.announcement).await;
                }
                if let Err(e) = self
                    .inner
                    .medium
                    .connect_peer(&a.node_id, &a.endpoints)
                    .await
                {
                    tracing::warn!(peer = %a.node_id, error = %e, "cannot connect to peer");
                }
                tracing::info!(peer = %a.name, node_id = %a.node_id, "peer joined");
                let _ = self.inner.peer_events.send(PeerEvent::Joined(a.clone()));
                // Measure the round-trip time at once, so /health and `nodes` show it.
                let (n, id, limit) = (
                    self.clone(),
                    a.node_id.clone(),
                    self.inner.heartbeat.max(Duration::from_millis(100)),
                );
                self.inner.tracker.spawn(async move {
                    if let Ok(Ok(rtt)) = tokio::time::timeout(limit, n.ping(&id)).await {
                        n.inner.directory.set_rtt(&id, rtt);
                    }
                });
                let n = self.clone();
                self.inner
                    .tracker
                    .spawn(async move { n.inner.service.on_peer_join(&n, &a).await });
            }
            Upsert::Refused => {
                tracing::debug!(peer = %a.node_id, "peer table full of verified peers; announcement ignored");
            }
            Upsert::Updated | Upsert::Refreshed | Upsert::Ignored => {}
        }
    }

    async fn peer_left(&self, a: Announcement) {
        self.inner.medium.disconnect_peer(&a.node_id).await;
        tracing::info!(peer = %a.name, node_id = %a.node_id, "peer left");
        let _ = self.inner.peer_events.send(PeerEvent::Left(a.clone()));
        let n = self.clone();
        self.inner
            .tracker
            .spawn(async move { n.inner.service.on_peer_leave(&n, &a).await });
    }

    async fn handle_request(&self, req: InboundRequest) {
        let result = self.answer(req.kind, &req.body).await;
        if let Err(e) = &result {
            tracing::debug!(kind = req.kind.as_str(), error = %e, "request failed");
        }
        if let Some(r) = req.reply {
            r.send(match result {
                // Already JSON: wrapped as it is, not parsed and serialized again.
                Ok(Output::Json(data)) => encode_json_reply(&data),
                Ok(Output::Value(v)) => encode_reply(&Ok(v)),
                Err(e) => encode_reply(&Err(e)),
            });
        }
    }

    async fn answer(&self, kind: MessageKind, body: &[u8]) -> Result<Output> {
        match kind {
            MessageKind::Request | MessageKind::Notify => {
                let v: Value = serde_json::from_slice(body)?;
                self.inner
                    .service
                    .on_message(self, v)
                    .await
                    .map(Output::Value)
            }
            MessageKind::Resource => {
                let req: ResourceRequest = serde_json::from_slice(body)
                    .map_err(|e| Error::BadRequest(format!("invalid resource request: {e}")))?;
                match self.hosted(&req.collection) {
                    Some(h) => h.execute(self, req).await,
                    None => Err(Error::Unavailable(format!(
                        "{} is not served here",
                        req.collection
                    ))),
                }
            }
            MessageKind::Announce => {
                let a = Announcement::decode(body)?;
                self.handle_heard(Heard {
                    announcement: a,
                    source: None,
                    direct: true,
                })
                .await;
                let peers: Vec<Announcement> = self
                    .inner
                    .directory
                    .peers()
                    .into_iter()
                    .map(|p| p.announcement)
                    .collect();
                Ok(Output::Value(
                    json!({"node": self.announcement(), "peers": peers}),
                ))
            }
        }
    }
}

async fn dispatcher(node: Node, mut inbox: Inbox) {
    loop {
        let incoming = tokio::select! {
            _ = node.inner.shutdown.cancelled() => return,
            i = inbox.recv() => i,
        };
        match incoming {
            None => return,
            Some(Incoming::Request(req)) if node.inner.stopping.is_cancelled() => {
                // The caller learns at once (a read is retried on another provider).
                if let Some(r) = req.reply {
                    r.send(encode_reply(&Err(Error::Shutdown)));
                }
            }
            Some(Incoming::Request(req)) => {
                let n = node.clone();
                node.inner
                    .tracker
                    .spawn(async move { n.handle_request(req).await });
            }
            Some(Incoming::Event(ev)) => node.inner.deliver_local(&ev),
        }
    }
}

async fn event_publisher(node: Node, mut rx: mpsc::Receiver<(String, Vec<u8>)>) {
    use std::io::Write as _;
    // Runs until every sender is gone, so changes acknowledged before shutdown still go out.
    loop {
        let next = tokio::select! {
            n = rx.recv() => n,
            _ = node.inner.shutdown.cancelled() => {
                rx.close();
                rx.recv().await
            }
        };
        let Some((topic, mut body)) = next else {
            return;
        };
        let seq = node.inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
        // Writing into a Vec cannot fail.
        let _ = write!(body, r#","seq":{seq},"ts":{}}}"#, now_ms());
        let ev = Event {
            topic: Arc::from(topic),
            payload: Bytes::from(body),
        };
        node.inner.deliver_local(&ev);
        if let Err(e) = node.inner.medium.publish(&ev.topic, ev.payload).await {
            tracing::warn!(topic = %ev.topic, error = %e, "change event not published");
        }
        if node.inner.shutdown.is_cancelled() && rx.is_empty() {
            return;
        }
    }
}

async fn heard_loop(node: Node, mut rx: mpsc::Receiver<Heard>) {
    loop {
        tokio::select! {
            _ = node.inner.shutdown.cancelled() => return,
            h = rx.recv() => match h {
                Some(h) => node.handle_heard(h).await,
                None => return,
            },
        }
    }
}

async fn housekeeping(node: Node) {
    // Expiry is checked 4 times per heartbeat so a dead peer is noticed soon after its third
    // missed heartbeat; pings go out once per heartbeat.
    let mut tick = tokio::time::interval(node.inner.heartbeat / 4);
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = node.inner.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        round += 1;
        for gone in node.inner.directory.expire(MISSED_HEARTBEATS) {
            tracing::info!(peer = %gone.announcement.name, "peer silent for {MISSED_HEARTBEATS} heartbeats");
            node.peer_left(gone.announcement).await;
        }
        if round % 4 != 1 {
            continue;
        }
        for p in node.inner.directory.peers() {
            let n = node.clone();
            let id = p.announcement.node_id;
            let limit = node.inner.heartbeat;
            node.inner.tracker.spawn(async move {
                if let Ok(Ok(rtt)) = tokio::time::timeout(limit, n.ping(&id)).await {
                    n.inner.directory.set_rtt(&id, rtt);
                }
            });
        }
    }
}

async fn run_discovery(d: Box<dyn Discovery>, ctx: DiscoveryContext) {
    if let Err(e) = d.run(ctx).await {
        tracing::error!(error = %e, "discovery stopped");
    }
}
