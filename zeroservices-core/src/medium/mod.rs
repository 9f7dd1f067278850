//! Media move requests, replies and events between nodes: [`ZmqMedium`] over ZeroMQ for real
//! use, [`MemoryMedium`] in-process for fast deterministic tests. Both pass the medium
//! conformance cases of the `zeroservices-testkit` crate.
//!
//! A medium only moves frames; the protocol's rules (frame counts, authentication, size limit,
//! `ping`) are applied by `envelope.rs` on every medium, and the [`Node`](crate::Node) decides
//! what the rest means. Everything a
//! medium receives arrives on its [`Inbox`], a bounded channel: when the node cannot keep up,
//! the medium stops reading its sockets (back-pressure), it never buffers without bound.

mod capabilities;
pub(crate) mod envelope;
mod memory;
#[cfg(feature = "nats")]
mod nats;
mod work;
#[cfg(feature = "zmq")]
mod zmq;

pub use self::capabilities::{CollectionRouting, EventHistory, WorkQueues};
pub use self::envelope::MessageKind;
pub use self::memory::{MemoryMedium, MemoryNetwork};
#[cfg(feature = "nats")]
pub use self::nats::{JetStreamMode, NatsConfig, NatsMedium};
pub use self::work::{WorkAck, WorkItem, WorkQueue};
#[cfg(feature = "zmq")]
pub use self::zmq::{ZmqConfig, ZmqMedium};
pub use crate::protocol::{
    covering_prefixes, decode_reply, encode_reply, topic_matches, MAX_BODY_BYTES,
};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::error::Result;
use crate::protocol::Endpoints;

/// Capacity of a medium's inbox.
pub const INBOX_CAPACITY: usize = 8192;

/// Receiving side of a medium: requests and events for the node.
pub type Inbox = mpsc::Receiver<Incoming>;

/// Something a medium received.
#[derive(Debug)]
pub enum Incoming {
    /// A request (or a one-way notification when `reply` is `None`).
    Request(InboundRequest),
    /// An event published by a peer.
    Event(Event),
}

/// A request received from a peer.
#[derive(Debug)]
pub struct InboundRequest {
    /// Message kind, parsed by the medium (see docs/protocol.md).
    pub kind: MessageKind,
    /// JSON body as received.
    pub body: Bytes,
    /// Where the reply goes; `None` for one-way messages.
    pub reply: Option<Replier>,
}

/// Sends the reply of one request. Dropping it without replying answers the caller with an
/// `internal` error, so a forgotten reply never leaves the caller hanging until its timeout.
#[derive(Debug)]
pub struct Replier(Option<ReplyTo>);

/// Where a reply goes.
#[derive(Debug)]
#[cfg_attr(not(any(feature = "zmq", feature = "nats")), allow(dead_code))]
enum ReplyTo {
    /// A caller waiting on a oneshot (the memory medium).
    Oneshot(oneshot::Sender<Bytes>),
    /// A socket task's reply queue, with the routing of the request: (ident, request id, body).
    Queue {
        tx: mpsc::Sender<[Bytes; 3]>,
        ident: Bytes,
        rid: Bytes,
    },
}

impl Replier {
    /// A replier and the receiver the medium waits on: how a medium written in another crate
    /// hands a request to the node ([`InboundRequest::reply`]) and gets its reply body back
    /// (on the receiver; an `internal` error body if the node dropped the replier unanswered).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use zeroservices_core::medium::Replier;
    ///
    /// # #[tokio::main] async fn main() {
    /// let (replier, reply) = Replier::new();
    /// replier.send(Bytes::from_static(br#"{"ok":true,"data":{}}"#));
    /// assert_eq!(reply.await.unwrap(), Bytes::from_static(br#"{"ok":true,"data":{}}"#));
    /// // Dropped unanswered (a handler that panicked, say): the caller hears an error at once.
    /// let (dropped, reply) = Replier::new();
    /// drop(dropped);
    /// let answer = zeroservices_core::medium::decode_reply(&reply.await.unwrap());
    /// assert!(matches!(answer, Err(zeroservices_core::Error::Internal(_))), "{answer:?}");
    /// # }
    /// ```
    pub fn new() -> (Replier, oneshot::Receiver<Bytes>) {
        let (tx, rx) = oneshot::channel();
        (Replier(Some(ReplyTo::Oneshot(tx))), rx)
    }

    /// A replier that queues `[ident, rid, body]` on `tx`. The queue must have room for every
    /// request in flight (its owner stops reading requests before that), so a reply is never
    /// refused for lack of room.
    #[cfg_attr(not(any(feature = "zmq", feature = "nats")), allow(dead_code))]
    pub(crate) fn queued(tx: mpsc::Sender<[Bytes; 3]>, ident: Bytes, rid: Bytes) -> Replier {
        Replier(Some(ReplyTo::Queue { tx, ident, rid }))
    }

    /// Sends the encoded reply body (see [`crate::protocol::encode_reply`]).
    pub fn send(mut self, body: Bytes) {
        if let Some(to) = self.0.take() {
            to.send(body);
        }
    }
}

impl ReplyTo {
    fn send(self, body: Bytes) {
        match self {
            // The medium may have given up on this request (shutdown); nothing to do then.
            ReplyTo::Oneshot(tx) => {
                let _ = tx.send(body);
            }
            ReplyTo::Queue { tx, ident, rid } => {
                if let Err(e) = tx.try_send([ident, rid, body]) {
                    // Closed at shutdown; full cannot happen (see `Replier::queued`).
                    tracing::debug!(error = %e, "reply not queued");
                }
            }
        }
    }
}

impl Drop for Replier {
    fn drop(&mut self) {
        if let Some(to) = self.0.take() {
            let e = crate::Error::Internal("request dropped without a reply".into());
            to.send(crate::protocol::encode_reply(&Err(e)));
        }
    }
}

/// An event: its topic and its JSON payload, shared cheaply between subscribers.
#[derive(Debug, Clone)]
pub struct Event {
    /// `<collection>.<action>.<resource_id>` for resource events, any dotted name otherwise.
    pub topic: Arc<str>,
    /// JSON payload bytes.
    pub payload: Bytes,
}

impl Event {
    /// Parses the payload as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.payload)?)
    }
}

/// Transport between nodes. Object-safe: nodes hold an `Arc<dyn Medium>`.
#[async_trait]
pub trait Medium: Send + Sync + fmt::Debug + 'static {
    /// Endpoints peers use to reach this node (as announced).
    fn endpoints(&self) -> Endpoints;

    /// Starts receiving `peer`'s events and allows requests to it.
    async fn connect_peer(&self, node_id: &str, endpoints: &Endpoints) -> Result<()>;

    /// Forgets `node_id`: closes its connections; pending requests fail with `PeerGone`.
    async fn disconnect_peer(&self, node_id: &str);

    /// Sends a request and waits for the encoded reply body, at most `timeout`.
    async fn request(
        &self,
        node_id: &str,
        kind: MessageKind,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes>;

    /// Sends a request to a request endpoint that need not be a known peer (static discovery
    /// asks its seeds this way) and waits for the reply body, at most `timeout`. The
    /// connection is kept for the next call, until [`Medium::forget_endpoints`] drops it.
    async fn request_endpoint(
        &self,
        endpoint: &str,
        kind: MessageKind,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes>;

    /// Closes the connections [`Medium::request_endpoint`] made, except to `keep`.
    fn forget_endpoints(&self, keep: &[String]);

    /// Sends a one-way message.
    async fn notify(&self, node_id: &str, kind: MessageKind, body: Bytes) -> Result<()>;

    /// Publishes an event to every peer subscribed to a prefix of `topic`.
    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()>;

    /// Sets the topic prefixes this node wants from its peers (empty string = everything).
    fn set_subscriptions(&self, prefixes: Vec<String>);

    /// At shutdown: sends every event published so far to the subscribers connected now, taking
    /// at most about `limit`; publishing after it may fail. The default has nothing queued.
    async fn flush(&self, limit: Duration) {
        let _ = limit;
    }

    /// Routing by collection, if this medium does it (see [`CollectionRouting`]).
    fn collection_routing(&self) -> Option<&dyn CollectionRouting> {
        None
    }

    /// Durable events, if this medium keeps them (see [`EventHistory`]).
    fn event_history(&self) -> Option<&dyn EventHistory> {
        None
    }

    /// Durable work queues, if this medium has them (see [`WorkQueues`]).
    fn work_queues(&self) -> Option<&dyn WorkQueues> {
        None
    }
}
