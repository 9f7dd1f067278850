//! In-process medium: nodes of one [`MemoryNetwork`] exchange requests and events through
//! channels, with the same semantics as ZeroMQ (publish drops for a full subscriber). Messages
//! are sealed and opened by [`envelope`] exactly as on the wire, so `ping`, the size limit and
//! the cluster key behave as they do over ZeroMQ.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::envelope::{self, Key, Opened};
use super::{InboundRequest, Inbox, Incoming, Medium, MessageKind, Replier, INBOX_CAPACITY};
use crate::error::{Error, Result};
use crate::protocol::{topic_matches, Endpoints};

/// A shared in-process "network" that [`MemoryMedium`]s attach to.
#[derive(Debug, Clone, Default)]
pub struct MemoryNetwork {
    // A blocking (parking_lot) Mutex: every critical section is a few map operations, never across an await.
    inner: Arc<Mutex<NetInner>>,
    next: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct NetInner {
    slots: HashMap<String, Slot>,
}

#[derive(Debug)]
struct Slot {
    inbox: mpsc::Sender<Incoming>,
    key: Key,
    prefixes: Vec<String>,
    /// Endpoints of the media that receive this one's events.
    subscribers: HashSet<String>,
}

impl MemoryNetwork {
    /// A new, empty network.
    pub fn new() -> MemoryNetwork {
        MemoryNetwork::default()
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, NetInner> {
        // A panic while holding this lock leaves only plain maps behind; keep using them.
        self.inner.lock()
    }
}

/// A medium attached to a [`MemoryNetwork`]. Dropping it detaches it.
#[derive(Debug)]
pub struct MemoryMedium {
    net: MemoryNetwork,
    me: String,
    key: Key,
    // A blocking (parking_lot) Mutex: short map lookups only.
    peers: Mutex<HashMap<String, String>>,
}

impl MemoryMedium {
    /// Attaches a new medium to `net`; returns it and the inbox the node reads.
    pub fn attach(net: &MemoryNetwork) -> (MemoryMedium, Inbox) {
        MemoryMedium::attach_with_key(net, None)
    }

    /// [`MemoryMedium::attach`], sealing and checking every message with a cluster key.
    pub fn attach_with_key(net: &MemoryNetwork, key: Key) -> (MemoryMedium, Inbox) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        let me = format!("mem://{}", net.next.fetch_add(1, Ordering::Relaxed));
        net.lock().slots.insert(
            me.clone(),
            Slot {
                inbox: tx,
                key: key.clone(),
                prefixes: Vec::new(),
                subscribers: HashSet::new(),
            },
        );
        (
            MemoryMedium {
                net: net.clone(),
                me,
                key,
                peers: Mutex::new(HashMap::new()),
            },
            rx,
        )
    }

    fn peer_endpoint(&self, node_id: &str) -> Result<String> {
        let peers = self.peers.lock();
        peers
            .get(node_id)
            .cloned()
            .ok_or_else(|| Error::PeerGone(node_id.to_owned()))
    }

    fn inbox_of(&self, endpoint: &str, node_id: &str) -> Result<(mpsc::Sender<Incoming>, Key)> {
        let net = self.net.lock();
        let slot = net
            .slots
            .get(endpoint)
            .ok_or_else(|| Error::PeerGone(node_id.to_owned()))?;
        Ok((slot.inbox.clone(), slot.key.clone()))
    }

    /// Delivers a sealed request to the peer as its medium would receive it; the reply body,
    /// or `None` when nothing comes back (dropped, or a one-way message).
    async fn exchange(
        &self,
        node_id: &str,
        kind: &str,
        body: Bytes,
        one_way: bool,
    ) -> Result<Option<Bytes>> {
        let endpoint = self.peer_endpoint(node_id)?;
        self.exchange_at(&endpoint, node_id, kind, body, one_way)
            .await
    }

    /// [`MemoryMedium::exchange`] with the medium at `endpoint`; `node_id` names it in errors.
    async fn exchange_at(
        &self,
        endpoint: &str,
        node_id: &str,
        kind: &str,
        body: Bytes,
        one_way: bool,
    ) -> Result<Option<Bytes>> {
        envelope::check_size(&body)?;
        let (inbox, their_key) = self.inbox_of(endpoint, node_id)?;
        let rid = Bytes::from_static(b"m");
        let kind = Bytes::copy_from_slice(kind.as_bytes());
        // Addressed by the peer's place in the network (its node id is not known here).
        let frames = envelope::seal_request(self.key.as_deref(), Some(endpoint), rid, kind, body);
        let opened = envelope::open_request(their_key.as_deref(), Some(endpoint), frames);
        let (rid, reply_body) = match opened {
            Opened::Drop(why) => {
                tracing::debug!(why, "memory medium: request dropped");
                return Ok(None);
            }
            Opened::Answer { rid, body } => (rid, body),
            Opened::Deliver { rid, kind, body } => {
                let (reply, rx) = match (&rid, one_way) {
                    (Some(_), false) => {
                        let (r, rx) = Replier::new();
                        (Some(r), Some(rx))
                    }
                    _ => (None, None),
                };
                let req = InboundRequest { kind, body, reply };
                inbox
                    .send(Incoming::Request(req))
                    .await
                    .map_err(|_| Error::PeerGone(node_id.into()))?;
                let (Some(rid), Some(rx)) = (rid, rx) else {
                    return Ok(None);
                };
                let body = rx.await.map_err(|_| Error::PeerGone(node_id.to_owned()))?;
                (rid, body)
            }
        };
        if one_way {
            return Ok(None);
        }
        let frames = envelope::seal_reply(their_key.as_deref(), rid, reply_body);
        match envelope::open_reply(self.key.as_deref(), frames) {
            Ok((_, body)) => Ok(Some(body)),
            Err(why) => {
                tracing::debug!(why, "memory medium: reply dropped");
                Ok(None)
            }
        }
    }
}

impl Drop for MemoryMedium {
    fn drop(&mut self) {
        let mut net = self.net.lock();
        net.slots.remove(&self.me);
        for slot in net.slots.values_mut() {
            slot.subscribers.remove(&self.me);
        }
    }
}

#[async_trait]
impl Medium for MemoryMedium {
    fn endpoints(&self) -> Endpoints {
        Endpoints {
            request: self.me.clone(),
            publish: self.me.clone(),
        }
    }

    async fn connect_peer(&self, node_id: &str, endpoints: &Endpoints) -> Result<()> {
        self.peers
            .lock()
            .insert(node_id.to_owned(), endpoints.request.clone());
        let mut net = self.net.lock();
        match net.slots.get_mut(&endpoints.publish) {
            Some(slot) => {
                slot.subscribers.insert(self.me.clone());
                Ok(())
            }
            None => Err(Error::PeerGone(node_id.to_owned())),
        }
    }

    async fn disconnect_peer(&self, node_id: &str) {
        let endpoint = self.peers.lock().remove(node_id);
        if let Some(ep) = endpoint {
            if let Some(slot) = self.net.lock().slots.get_mut(&ep) {
                slot.subscribers.remove(&self.me);
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
        let exchange = async {
            match self
                .exchange_at(endpoint, endpoint, kind, body, false)
                .await?
            {
                Some(b) => Ok(b),
                None => std::future::pending().await,
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    fn forget_endpoints(&self, _keep: &[String]) {}

    async fn request(
        &self,
        node_id: &str,
        kind: MessageKind,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        let kind = kind.as_str();
        let exchange = async {
            match self.exchange(node_id, kind, body, false).await? {
                Some(b) => Ok(b),
                // Nothing comes back, as on the wire: the caller's timeout reports it.
                None => std::future::pending().await,
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    async fn notify(&self, node_id: &str, kind: MessageKind, body: Bytes) -> Result<()> {
        let kind = kind.as_str();
        self.exchange(node_id, kind, body, true).await.map(|_| ())
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()> {
        envelope::check_size(&payload)?;
        let targets: Vec<(mpsc::Sender<Incoming>, Key)> = {
            let net = self.net.lock();
            let Some(me) = net.slots.get(&self.me) else {
                return Err(Error::Shutdown);
            };
            me.subscribers
                .iter()
                .filter_map(|ep| net.slots.get(ep))
                .filter(|s| s.prefixes.iter().any(|p| topic_matches(p, topic)))
                .map(|s| (s.inbox.clone(), s.key.clone()))
                .collect()
        };
        let frames = envelope::seal_event(self.key.as_deref(), topic, payload);
        for (inbox, their_key) in targets {
            let event = match envelope::open_event(their_key.as_deref(), frames.clone()) {
                Ok(ev) => ev,
                Err(why) => {
                    tracing::debug!(why, "memory medium: event dropped");
                    continue;
                }
            };
            // Like a ZeroMQ PUB socket: a subscriber whose queue is full misses the event.
            if inbox.try_send(Incoming::Event(event)).is_err() {
                tracing::debug!(topic, "memory medium: subscriber queue full, event dropped");
            }
        }
        Ok(())
    }

    fn set_subscriptions(&self, prefixes: Vec<String>) {
        if let Some(slot) = self.net.lock().slots.get_mut(&self.me) {
            slot.prefixes = prefixes;
        }
    }
}
