//! Events: one XPUB socket publishing this node's events, and per peer one SUB socket
//! connected to that peer's publisher only (so an event's connection says which node sent
//! it). Each socket is owned by one task.
//!
//! An XPUB rather than a PUB so that the publisher sees subscriptions arrive: until a first
//! subscriber is there, publishing skips the task entirely.
//!
//! Subscriptions are bounded. libzmq keeps every distinct prefix any connection subscribes to
//! in a trie with a node per byte and no limit (a million distinct SUBSCRIBEs from one stranger
//! grew a node by over 200 MiB). So: a prefix longer than [`MAX_PREFIX`] closes its connection
//! (`ZMQ_MAXMSGSIZE`); the XPUB's receive high-water mark is tiny, so libzmq takes in only a
//! few subscriptions per read and the task sees them as they come; and once the distinct
//! prefixes pass [`MAX_PREFIX_BYTES`], the XPUB is closed and bound again on the same endpoint,
//! which drops every connection with its subscriptions. Real subscribers reconnect and subscribe
//! again within libzmq's reconnect interval (events in that gap are missed, `seq` says so); the
//! flooder starts over. Nodes themselves subscribe to the empty prefix only and match topics in
//! the SUB task (`apply_prefixes`), so a cluster never comes near the cap by itself.
//!
//! The XPUB has a libzmq context of its own, so that at shutdown ([`PubMsg::Flush`]) closing it
//! with a linger and ending that context waits exactly until the queued events reached the
//! connected subscribers (or the linger ran out), without touching the sockets of the rest of
//! the process.
//!
//! A subscriber that keeps up loses nothing: the XPUB runs with `ZMQ_XPUB_NODROP`, so when a
//! subscriber's queue is full the publisher waits for it (and `Medium::publish` waits in turn:
//! back-pressure up to the writer). It waits at most [`STALL`]; a subscriber still full then
//! is treated as stuck, and that one event is sent with NODROP off. libzmq then takes every
//! full queue out of the set it publishes to, until its reader drains it (a stuck subscriber
//! loses events from there on, and `seq` tells it so), and NODROP goes back on at once. A
//! reader that never reads costs the others one `STALL` (it is long, a second, so that a
//! subscriber process starved of CPU for a moment is waited for, not dropped: that costs
//! little since a stuck one is waited for only once, until it reads again).
//!
//! NODROP is not left off for a while: libzmq's writer sees how far a reader got only every
//! `HWM - 1024` messages, so with it off a subscriber that is barely behind (about a thousand
//! events, a few milliseconds at full speed) already counts as full and loses events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::socket::{context, harden, set_int_option, AsyncSocket};
use crate::cluster_key::ClusterKey;
use crate::error::Result;
use crate::medium::envelope::{self, Key};
use crate::medium::Incoming;
use crate::protocol::topic_matches;
use tokio::sync::oneshot;

/// Events (or subscriptions) handled in one go.
const BATCH: usize = 512;
/// Longest wait for a full subscriber queue before that subscriber is considered stuck.
pub(super) const STALL: Duration = Duration::from_secs(1);
/// Longest subscription (bytes, with its `0x01`/command header): a topic is
/// `<collection>.<action>.<id>`, ids at most 512 bytes.
pub(super) const MAX_PREFIX: i64 = 2048;
/// Bytes of distinct subscribed prefixes past which the XPUB is bound again.
pub(super) const MAX_PREFIX_BYTES: usize = 64 * 1024;
/// Subscriptions libzmq queues per connection before it stops reading that connection.
const SUBSCRIPTION_HWM: i32 = 16;

/// What the medium sends the publisher task.
#[derive(Debug)]
pub(super) enum PubMsg {
    /// An event: topic and payload.
    Event(Arc<str>, Bytes),
    /// Send what is queued, close the XPUB, answer, and stop (shutdown). At most `linger`.
    Flush {
        linger: Duration,
        done: oneshot::Sender<()>,
    },
}

/// Binds an XPUB socket in `ctx` (the publisher's own context, see the module docs). `keyed`:
/// subscribers must pass the ZAP handler of `ctx` (see `zap`).
pub(super) fn bind(
    ctx: &zmq::Context,
    endpoint: &str,
    keyed: bool,
) -> Result<(AsyncSocket, String)> {
    let sock = ctx.socket(zmq::XPUB)?;
    harden(&sock)?;
    if keyed {
        sock.set_plain_server(true)?;
        sock.set_zap_domain(super::zap::DOMAIN)?;
    }
    // Only subscriptions arrive on an XPUB: nothing longer than one is read, and few at a time.
    sock.set_maxmsgsize(MAX_PREFIX)?;
    sock.set_rcvhwm(SUBSCRIPTION_HWM)?;
    sock.set_ipv6(endpoint.starts_with("tcp://["))?;
    sock.bind(endpoint)?;
    let bound = super::router::last_endpoint(&sock)?;
    let mut sock = AsyncSocket::new(sock)?;
    set_int_option(&mut sock, zmq_sys::ZMQ_XPUB_NODROP, 1)?;
    Ok((sock, bound))
}

/// The XPUB and its flow-control state.
struct Xpub {
    ctx: zmq::Context,
    /// Admits keyed subscribers only (with a cluster key).
    zap: Option<super::zap::ZapHandler>,
    endpoint: String,
    sock: AsyncSocket,
    /// The distinct prefixes subscribed now, as libzmq reports them (first subscription to a
    /// prefix; departure of its last subscriber, by cancel or disconnect).
    prefixes: std::collections::HashSet<Bytes>,
    prefix_bytes: usize,
    key: Key,
    subscribed: Arc<AtomicBool>,
}

impl Xpub {
    /// Reads the subscriptions waiting (at most a batch).
    fn read_subscriptions(&mut self, first: Option<Result<Vec<Bytes>>>) {
        let mut next = first.or_else(|| self.sock.try_recv().transpose());
        let mut n = 0;
        while let Some(sub) = next.take() {
            match sub {
                Ok(frames) => self.apply(frames.first()),
                Err(e) => tracing::warn!(error = %e, "publisher: receive failed"),
            }
            n += 1;
            if n < BATCH && self.prefix_bytes <= MAX_PREFIX_BYTES {
                next = self.sock.try_recv().transpose();
            }
        }
    }

    /// A first subscription to a prefix (`0x01 + prefix`) or the end of its last one
    /// (`0x00 + prefix`).
    fn apply(&mut self, msg: Option<&Bytes>) {
        let Some(msg) = msg else { return };
        match msg.first() {
            Some(1) => {
                self.subscribed.store(true, Ordering::Release);
                if self.prefixes.insert(msg.slice(1..)) {
                    self.prefix_bytes += msg.len();
                }
            }
            Some(0) if self.prefixes.remove(&msg[1..]) => self.prefix_bytes -= msg.len(),
            _ => {}
        }
    }

    /// Binds the XPUB again when its subscriptions passed the cap (see the module docs).
    /// False when the endpoint cannot be bound again (publishing stops).
    async fn rebind_if_flooded(&mut self) -> bool {
        if self.prefix_bytes <= MAX_PREFIX_BYTES {
            return true;
        }
        tracing::warn!(endpoint = %self.endpoint, "publisher: too many distinct subscriptions; binding again (subscribers reconnect)");
        // Closing first frees the port (libzmq closes the listener in its I/O thread).
        self.prefixes.clear();
        self.prefix_bytes = 0;
        let placeholder = match self
            .ctx
            .socket(zmq::XPUB)
            .map_err(Into::into)
            .and_then(AsyncSocket::new)
        {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "publisher: cannot open a socket; events stop");
                return false;
            }
        };
        // The old socket is closed here, before binding its endpoint again.
        drop(std::mem::replace(&mut self.sock, placeholder));
        for _ in 0..100 {
            match bind(&self.ctx, &self.endpoint, self.zap.is_some()) {
                Ok((sock, _)) => {
                    self.sock = sock;
                    return true;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        tracing::error!(endpoint = %self.endpoint, "publisher: cannot bind the publish endpoint again; events stop");
        false
    }

    fn set_lossy(&mut self, lossy: bool) {
        if let Err(e) = set_int_option(&mut self.sock, zmq_sys::ZMQ_XPUB_NODROP, i32::from(!lossy))
        {
            tracing::warn!(error = %e, "publisher: cannot switch ZMQ_XPUB_NODROP");
        }
    }

    /// Sends one event, waiting (at most [`STALL`]) for a full subscriber queue.
    async fn send(&mut self, topic: &str, payload: Bytes) {
        let frames = envelope::seal_event(self.key.as_deref(), topic, payload);
        let deadline = Instant::now() + STALL;
        loop {
            match self.sock.try_send(&frames) {
                Ok(true) => return,
                Ok(false) => {} // a subscriber's queue is full
                Err(e) => {
                    tracing::warn!(error = %e, "publisher: send failed");
                    return;
                }
            }
            self.read_subscriptions(None);
            if !self.rebind_if_flooded().await {
                return;
            }
            if tokio::time::timeout_at(deadline, self.sock.wait())
                .await
                .is_err()
            {
                tracing::warn!("publisher: a subscriber is stuck; it misses events until it reads");
                self.set_lossy(true);
                if let Err(e) = self.sock.try_send(&frames) {
                    tracing::warn!(error = %e, "publisher: send failed");
                }
                self.set_lossy(false);
                return;
            }
        }
    }
}

/// Publishes what arrives on `rx` until the medium drops its sender or asks for a flush.
pub(super) async fn publisher(
    ctx: zmq::Context,
    zap: Option<super::zap::ZapHandler>,
    endpoint: String,
    sock: AsyncSocket,
    mut rx: mpsc::Receiver<PubMsg>,
    subscribed: Arc<AtomicBool>,
    key: Key,
) {
    let mut xpub = Xpub {
        ctx,
        zap,
        endpoint,
        sock,
        prefixes: std::collections::HashSet::new(),
        prefix_bytes: 0,
        key,
        subscribed,
    };
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(mut msg) = m else { return };
                let mut sent = 0;
                loop {
                    match msg {
                        PubMsg::Event(topic, payload) => xpub.send(&topic, payload).await,
                        PubMsg::Flush { linger, done } => {
                            xpub.close(linger).await;
                            let _ = done.send(());
                            return;
                        }
                    }
                    sent += 1;
                    // A batch, then the select again (subscriptions get their turn).
                    if sent >= BATCH {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(m) => msg = m,
                        Err(_) => break,
                    }
                }
            }
            sub = xpub.sock.recv() => {
                xpub.read_subscriptions(Some(sub));
                if !xpub.rebind_if_flooded().await {
                    return;
                }
            }
        }
    }
}

impl Xpub {
    /// Closes the XPUB with a linger of `linger` and ends its context, which waits until the
    /// queued events are sent or the linger ran out (on a blocking thread).
    async fn close(self, linger: Duration) {
        let Xpub { ctx, zap, sock, .. } = self;
        let sock = sock.into_socket();
        let ms = i32::try_from(linger.as_millis()).unwrap_or(i32::MAX);
        if let Err(e) = sock.set_linger(ms) {
            tracing::warn!(error = %e, "publisher: cannot set the linger; events may be lost");
        }
        let closing = tokio::task::spawn_blocking(move || {
            drop(sock);
            drop(zap); // its thread closes the last other socket of the context
            drop(ctx); // zmq_ctx_term: returns when the socket's queue is sent or dropped
        });
        if closing.await.is_err() {
            tracing::warn!("publisher: closing the socket failed");
        }
    }
}

/// Receives one peer's events: its own SUB socket connected to the peer's publish endpoint
/// only, so every event it reads comes from that peer. One that names another node as its
/// publisher (`node_id`) is dropped: only the publisher speaks for itself. Follows the node's
/// subscriptions and forwards the rest to the inbox. Ends when its owner drops it.
pub(super) async fn peer_subscriber(
    ipv6: bool,
    node_id: String,
    endpoint: String,
    mut prefixes: watch::Receiver<Vec<String>>,
    inbox: mpsc::Sender<Incoming>,
    key: Key,
) {
    let mut sub = match open_sub(ipv6, key.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(peer = %node_id, error = %e, "subscriber: cannot open a SUB socket; no events from this peer");
            return;
        }
    };
    if let Err(e) = sub.get().connect(&endpoint) {
        tracing::warn!(peer = %node_id, endpoint = %endpoint, error = %e, "subscriber: cannot connect");
        return;
    }
    let mut everything = false;
    // What the node wants: events are matched against it here, since the SUB takes everything.
    let mut wanted: Vec<String> = prefixes.borrow_and_update().clone();
    apply_prefixes(&sub, &mut everything, &wanted);
    loop {
        tokio::select! {
            changed = prefixes.changed() => {
                if changed.is_err() {
                    return; // medium dropped
                }
                wanted = prefixes.borrow_and_update().clone();
                apply_prefixes(&sub, &mut everything, &wanted);
            }
            msg = sub.recv() => match msg {
                Ok(frames) => match envelope::open_event(key.as_deref(), frames) {
                    Ok(ev) if !wanted.iter().any(|p| topic_matches(p, &ev.topic)) => {}
                    Ok(ev) if names_another(&ev.payload, &node_id) => {
                        tracing::debug!(peer = %node_id, topic = %ev.topic, "subscriber: dropped an event naming another node");
                    }
                    Ok(ev) => {
                        if inbox.send(Incoming::Event(ev)).await.is_err() {
                            return;
                        }
                    }
                    Err(why) => tracing::debug!(why, "subscriber: dropped an event"),
                },
                Err(e) => tracing::warn!(error = %e, "subscriber: receive failed"),
            },
        }
    }
}

/// Whether a payload is a JSON object whose `node_id` is a string other than `node_id`. Other
/// payloads (user events of `Node::publish`, which need not name a node) pass.
fn names_another(payload: &[u8], node_id: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Who<'a> {
        #[serde(borrow, default)]
        node_id: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Who>(payload)
        .ok()
        .and_then(|w| w.node_id)
        .is_some_and(|n| n != node_id)
}

/// The SUB socket; IPv6 endpoints only when the node itself is on IPv6 (an IPv6 socket to an
/// IPv4 peer needs IPv4-mapped addresses, which a host may not route).
fn open_sub(ipv6: bool, key: Option<&ClusterKey>) -> Result<AsyncSocket> {
    let sock = context().socket(zmq::SUB)?;
    harden(&sock)?;
    sock.set_ipv6(ipv6)?;
    if let Some(key) = key {
        // Keyed publishers admit only subscribers holding the key (see `zap`).
        sock.set_plain_username(Some(super::zap::USER))?;
        sock.set_plain_password(Some(&key.subscriber_password()))?;
    }
    AsyncSocket::new(sock)
}

/// Subscribes to everything while the node wants anything: the node's prefixes are matched
/// here, per event, so each node costs a publisher one subscription (see the module docs).
fn apply_prefixes(sub: &AsyncSocket, everything: &mut bool, wanted: &[String]) {
    let want = !wanted.is_empty();
    if want == *everything {
        return;
    }
    let done = if want {
        sub.get().set_subscribe(b"")
    } else {
        sub.get().set_unsubscribe(b"")
    };
    match done {
        Ok(()) => *everything = want,
        Err(e) => tracing::warn!(error = %e, "subscriber: cannot change the subscription"),
    }
}
