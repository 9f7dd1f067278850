//! [`NatsMedium`]: the protocol over a NATS server or cluster, for clusters beyond one LAN
//! (several subnets, Kubernetes, durable events). Nodes connect to NATS only, never to each
//! other: requests for a collection go to a queue group of its providers (NATS balances),
//! requests for one node to its own subject, events to subjects made from their topic, and
//! announcements to one subject ([`NatsDiscovery`](crate::discovery::NatsDiscovery)). With JetStream (on by default when the
//! server has it) a stream keeps the events: realtime hubs replay from it after a restart, and
//! workers read it through durable consumers. Subjects are listed in [`subjects`].
//!
//! Frames are sealed and opened by [`envelope`](super::envelope) as on every medium (cluster
//! key, size limit, `ping`), and packed into one NATS payload.
//!
//! ```no_run
//! # async fn demo() -> zeroservices_core::Result<()> {
//! use zeroservices_core::medium::NatsConfig;
//! use zeroservices_core::Node;
//! let node = Node::builder("svc")
//!     .nats(NatsConfig::new(["nats://127.0.0.1:4222"]))
//!     .start()
//!     .await?;
//! # drop(node); Ok(()) }
//! ```

mod capabilities;
mod inbound;
mod stream;
pub(crate) mod subjects;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, RequestErrorKind, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::envelope::{self, Key};
use super::{
    CollectionRouting, EventHistory, Inbox, Medium, MessageKind, WorkQueues, INBOX_CAPACITY,
};
use crate::error::{Error, Result};
use crate::protocol::Endpoints;
use crate::task::TaskGuard;

/// Whether events are kept in a JetStream stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JetStreamMode {
    /// When the server has JetStream (the default); without it, events are not kept.
    #[default]
    Auto,
    /// Required: connecting fails when the server has no JetStream.
    On,
    /// Never: events are not kept, workers catch up by listing.
    Off,
}

/// How to reach NATS and what to keep there.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Server URLs (`nats://HOST:PORT`, `tls://HOST:PORT`, user and password in the URL).
    pub servers: Vec<String>,
    /// First token of every subject, and of the stream's name: clusters with different
    /// prefixes share a NATS server without seeing each other (default `zs`).
    pub prefix: String,
    /// A NATS `.creds` file (JWT and nkey seed).
    pub credentials_file: Option<PathBuf>,
    /// A PEM file of the CAs that sign the servers' TLS certificates.
    pub ca_file: Option<PathBuf>,
    /// Refuse servers without TLS.
    pub require_tls: bool,
    /// Whether events are kept in a stream.
    pub jetstream: JetStreamMode,
    /// How long the stream keeps an event (default 24 h).
    pub stream_max_age: Duration,
    /// Events the stream keeps at most (default 1,000,000; the oldest go first).
    pub stream_max_msgs: i64,
    /// Bytes the stream keeps at most (default 1 GiB).
    pub stream_max_bytes: i64,
    /// Copies of the stream in a NATS cluster (default 1; 3 survives the loss of a server).
    pub replicas: usize,
    /// When set, every request, reply and event is sealed with this key.
    pub cluster_key: Key,
}

impl NatsConfig {
    /// The defaults, with these servers.
    pub fn new<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> NatsConfig {
        NatsConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            prefix: "zs".into(),
            credentials_file: None,
            ca_file: None,
            require_tls: false,
            jetstream: JetStreamMode::Auto,
            stream_max_age: Duration::from_secs(24 * 3600),
            stream_max_msgs: 1_000_000,
            stream_max_bytes: 1 << 30,
            replicas: 1,
            cluster_key: None,
        }
    }

    /// The name of the events stream: the prefix in capitals, then `_EVENTS`.
    pub fn stream_name(&self) -> String {
        let p: String = self
            .prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{p}_EVENTS")
    }
}

/// State the medium's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) prefix: String,
    pub(crate) key: Key,
    pub(crate) inbox: mpsc::Sender<super::Incoming>,
    /// Replies waiting to be published: (reply subject, request id, body).
    pub(crate) replies: mpsc::Sender<[Bytes; 3]>,
    /// The topic prefixes the node wants.
    pub(crate) prefixes: watch::Sender<Vec<String>>,
}

/// Replies that may wait for the NATS connection; past it a reply is dropped (its caller
/// times out), which happens only when the connection is down for long.
const REPLY_QUEUE: usize = 65_536;

/// Messages one NATS subscription buffers in this process (see `connect_client`).
const SUBSCRIPTION_BUFFER: usize = 256 * 1024;

/// A medium over NATS. Dropping it stops its tasks and closes the connection.
#[derive(Debug)]
pub struct NatsMedium {
    shared: Arc<Shared>,
    /// This node's own request subject.
    me: String,
    /// node_id → request subject, from announcements.
    peers: Mutex<HashMap<String, Subject>>,
    served: watch::Sender<Vec<String>>,
    stream: Option<stream::Events>,
    _tasks: Vec<TaskGuard>,
}

/// Returns once the server has every subscription this client made so far. `flush` is not
/// enough: it writes them to the socket, and the server may read a peer's request first (under
/// load the medium suite saw "no responders" and lost one-way messages). A request to a
/// subject nobody serves is answered "no responders" by the server itself, after it read our
/// earlier `SUB`s: it reads one connection in order. (A message to ourselves would not come
/// back: the client is `no_echo`.)
pub(super) async fn server_has_subscriptions(client: &Client) -> Result<()> {
    let probe = format!("_zs_probe.{}", uuid::Uuid::new_v4().simple());
    let asked = client.request(probe, Bytes::new());
    match tokio::time::timeout(Duration::from_secs(10), asked).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
        Ok(Err(e)) => Err(Error::Transport(format!("NATS round trip: {e}"))),
        Err(_) => Err(Error::Transport(
            "NATS server did not answer within 10 s".into(),
        )),
    }
}

impl NatsMedium {
    /// Connects to NATS (failing at once when no server answers), makes or updates the
    /// events stream, and starts listening on this node's subject.
    pub async fn connect(cfg: NatsConfig) -> Result<(NatsMedium, Inbox)> {
        let client = connect_client(&cfg).await?;
        let stream = stream::Events::open(&client, &cfg).await?;
        let me = format!("{}.node.{}", cfg.prefix, uuid::Uuid::new_v4().simple());
        let (inbox_tx, inbox) = mpsc::channel(INBOX_CAPACITY);
        let (replies_tx, replies_rx) = mpsc::channel(REPLY_QUEUE);
        let shared = Arc::new(Shared {
            client: client.clone(),
            prefix: cfg.prefix.clone(),
            key: cfg.cluster_key.clone(),
            inbox: inbox_tx,
            replies: replies_tx,
            prefixes: watch::channel(Vec::new()).0,
        });
        let node_sub = client
            .subscribe(me.clone())
            .await
            .map_err(|e| Error::Transport(format!("subscribing to {me}: {e}")))?;
        // Once the server has the subscription, a peer that hears of this node can reach it.
        server_has_subscriptions(&client).await?;
        let (served, served_rx) = watch::channel(Vec::new());
        let tasks = vec![
            TaskGuard::spawn(inbound::reply_writer(shared.clone(), replies_rx)),
            TaskGuard::spawn(inbound::request_loop(shared.clone(), node_sub)),
            TaskGuard::spawn(inbound::follow_events(
                shared.clone(),
                shared.prefixes.subscribe(),
            )),
            TaskGuard::spawn(inbound::serve_collections(shared.clone(), served_rx)),
        ];
        tracing::info!(servers = ?cfg.servers, subject = %me, jetstream = stream.is_some(), "NATS medium connected");
        Ok((
            NatsMedium {
                shared,
                me,
                peers: Mutex::new(HashMap::new()),
                served,
                stream,
                _tasks: tasks,
            },
            inbox,
        ))
    }

    /// The NATS client (a cheap handle on the medium's connection).
    pub fn client(&self) -> Client {
        self.shared.client.clone()
    }

    /// The subject announcements travel on.
    pub fn announce_subject(&self) -> String {
        subjects::announce_subject(&self.shared.prefix)
    }

    /// The request subject of a connected peer; `PeerGone` for any other.
    fn peer_subject(&self, node_id: &str) -> Result<Subject> {
        self.peers
            .lock()
            .get(node_id)
            .cloned()
            .ok_or_else(|| Error::PeerGone(node_id.to_owned()))
    }

    /// Sends a request to `subject` and opens the reply. `NoResponders` comes back as
    /// `PeerGone(subject)`, for the caller to name better.
    async fn call(
        &self,
        subject: Subject,
        kind: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        envelope::check_size(&body)?;
        let started = tokio::time::Instant::now();
        let key = self.shared.key.as_deref();
        // A request id of its own: a reply captured on its way to another request (which the
        // MAC would pass, its nonce unseen here) does not answer this one.
        let rid = Bytes::from(format!("{:032x}", rand::random::<u128>()));
        let frames = envelope::seal_request(
            key,
            Some(subject.as_str()),
            rid.clone(),
            Bytes::copy_from_slice(kind.as_bytes()),
            body,
        );
        let req = async_nats::Request::new()
            .payload(subjects::pack(&frames))
            .timeout(Some(timeout));
        // A clone of a `Subject` shares its bytes.
        let msg = match self.shared.client.send_request(subject.clone(), req).await {
            Ok(m) => m,
            Err(e) => {
                return Err(match e.kind() {
                    RequestErrorKind::TimedOut => Error::Timeout(timeout),
                    RequestErrorKind::NoResponders => Error::PeerGone(subject.to_string()),
                    RequestErrorKind::MaxPayloadExceeded => Error::TooLarge(e.to_string()),
                    _ => Error::Transport(format!("NATS request to {subject}: {e}")),
                })
            }
        };
        let opened = match subjects::unpack(&msg.payload) {
            Some(frames) => envelope::open_reply(key, frames),
            None => Err("malformed frames"),
        };
        match opened.and_then(|(r, body)| match r == rid {
            true => Ok(body),
            false => Err("a reply to another request"),
        }) {
            Ok(body) => Ok(body),
            // Dropped, as every medium drops a reply it cannot open: the caller's timeout
            // reports it.
            Err(why) => {
                tracing::debug!(why, %subject, "NATS reply dropped");
                tokio::time::sleep_until(started + timeout).await;
                Err(Error::Timeout(timeout))
            }
        }
    }
}

/// Connects with the configured credentials and TLS; reconnects forever, quickly (at most
/// 1 s between attempts), trying the other servers of the list and those the cluster gossips.
async fn connect_client(cfg: &NatsConfig) -> Result<Client> {
    let mut opts = match &cfg.credentials_file {
        Some(f) => ConnectOptions::with_credentials_file(f)
            .await
            .map_err(|e| {
                Error::Transport(format!("reading NATS credentials {}: {e}", f.display()))
            })?,
        None => ConnectOptions::new(),
    };
    if let Some(ca) = &cfg.ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    opts = opts
        .require_tls(cfg.require_tls)
        .no_echo()
        .name(format!("zeroservices {}", cfg.prefix))
        .connection_timeout(Duration::from_secs(5))
        // Messages the client holds per subscription while the node catches up: past it,
        // NATS drops (core NATS is at-most-once). A burst of 200,000 events fits.
        .subscription_capacity(SUBSCRIPTION_BUFFER)
        .ping_interval(Duration::from_secs(5))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50 * attempts as u64).min(1000))
        })
        .event_callback(|ev| async move {
            match ev {
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("NATS disconnected; reconnecting")
                }
                other => tracing::debug!(event = %other, "NATS"),
            }
        });
    let servers: Vec<async_nats::ServerAddr> = cfg
        .servers
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e| Error::Transport(format!("bad NATS server {s:?}: {e}")))
        })
        .collect::<Result<_>>()?;
    if servers.is_empty() {
        return Err(Error::Transport("no NATS server given".into()));
    }
    opts.connect(servers)
        .await
        .map_err(|e| Error::Transport(format!("cannot connect to NATS {:?}: {e}", cfg.servers)))
}

#[async_trait]
impl Medium for NatsMedium {
    fn endpoints(&self) -> Endpoints {
        Endpoints {
            request: format!("nats:{}", self.me),
            publish: format!("nats:{}.ev", self.shared.prefix),
        }
    }

    async fn connect_peer(&self, node_id: &str, endpoints: &Endpoints) -> Result<()> {
        let Some(subject) = endpoints.request.strip_prefix("nats:") else {
            return Err(Error::Transport(format!(
                "peer {node_id} is not on NATS ({})",
                endpoints.request
            )));
        };
        self.peers
            .lock()
            .insert(node_id.to_owned(), Subject::from(subject));
        Ok(())
    }

    async fn disconnect_peer(&self, node_id: &str) {
        self.peers.lock().remove(node_id);
    }

    async fn request(
        &self,
        node_id: &str,
        kind: MessageKind,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        let kind = kind.as_str();
        let subject = self.peer_subject(node_id)?;
        // "No responders" means nobody got the request: a peer whose connection to the
        // server is being re-established (a slow consumer cut off under load, a server that
        // moved) has no subscription for a moment. Asked again a few times, briefly, since it
        // cannot run twice; a peer that is really gone is reported within ~200 ms.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(25);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.call(subject.clone(), kind, body.clone(), left).await {
                Err(Error::PeerGone(_)) if pause <= Duration::from_millis(100) && left > pause => {
                    tracing::debug!(%subject, "no responders; asking again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(Error::PeerGone(_)) => return Err(Error::PeerGone(node_id.to_owned())),
                other => return other,
            }
        }
    }

    async fn request_endpoint(
        &self,
        endpoint: &str,
        kind: MessageKind,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        let kind = kind.as_str();
        let subject = endpoint.strip_prefix("nats:").unwrap_or(endpoint);
        self.call(Subject::from(subject), kind, body, timeout).await
    }

    fn forget_endpoints(&self, _keep: &[String]) {}

    async fn notify(&self, node_id: &str, kind: MessageKind, body: Bytes) -> Result<()> {
        let kind = kind.as_str();
        envelope::check_size(&body)?;
        let subject = self.peer_subject(node_id)?;
        let frames = envelope::seal_request(
            self.shared.key.as_deref(),
            Some(subject.as_str()),
            Bytes::new(),
            Bytes::copy_from_slice(kind.as_bytes()),
            body,
        );
        self.shared
            .client
            .publish(subject, subjects::pack(&frames))
            .await
            .map_err(|e| Error::Transport(e.to_string()))
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()> {
        envelope::check_size(&payload)?;
        let frames = envelope::seal_event(self.shared.key.as_deref(), topic, payload);
        self.shared
            .client
            .publish(
                subjects::event_subject(&self.shared.prefix, topic),
                subjects::pack(&frames),
            )
            .await
            .map_err(|e| Error::Transport(e.to_string()))
    }

    fn set_subscriptions(&self, prefixes: Vec<String>) {
        self.shared.prefixes.send_replace(prefixes);
    }

    async fn flush(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.shared.client.flush()).await;
    }

    fn collection_routing(&self) -> Option<&dyn CollectionRouting> {
        Some(self)
    }

    fn event_history(&self) -> Option<&dyn EventHistory> {
        self.stream.is_some().then_some(self as &dyn EventHistory)
    }

    fn work_queues(&self) -> Option<&dyn WorkQueues> {
        self.stream.is_some().then_some(self as &dyn WorkQueues)
    }
}
