//! Events: one XPUB socket publishing this node's events, one SUB socket connected to every
//! peer's publisher. Each is owned by one task.
//!
//! An XPUB rather than a PUB so that the publisher sees subscriptions arrive: until a first
//! subscriber is there, publishing skips the task entirely.
//!
//! A subscriber that keeps up loses nothing: the XPUB runs with `ZMQ_XPUB_NODROP`, so when a
//! subscriber's queue is full the publisher waits for it (and `Medium::publish` waits in turn:
//! back-pressure up to the writer). It waits at most [`STALL`]; a subscriber still full then
//! is treated as stuck: for [`DROP_PERIOD`] the XPUB drops for full queues (ZeroMQ's usual
//! rule, `seq` tells that subscriber), so one reader that never reads costs the others at most
//! `STALL` per `DROP_PERIOD`. Only subscriptions arrive on it, so
//! its `ZMQ_MAXMSGSIZE` is the longest topic prefix: one SUBSCRIBE cannot make libzmq build a
//! trie node for each of millions of bytes. Known limit: libzmq keeps every distinct prefix a
//! connection subscribes to, without bound (a million distinct SUBSCRIBEs grow a node by about
//! 210 MiB); see the transport issue's note.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio::sync::{mpsc, watch};

use super::socket::{context, harden, set_int_option, AsyncSocket};
use crate::error::Result;
use crate::medium::envelope::{self, Key};
use crate::medium::Incoming;

/// Events (or subscriptions) handled in one go.
const BATCH: usize = 512;
/// Longest wait for a full subscriber queue before that subscriber is considered stuck.
pub(super) const STALL: Duration = Duration::from_millis(100);
/// How long the XPUB drops for full queues once a subscriber was stuck.
pub(super) const DROP_PERIOD: Duration = Duration::from_secs(1);
/// Longest subscription prefix (bytes): a topic is `<collection>.<action>.<id>`, ids ≤ 512.
pub(super) const MAX_PREFIX: i64 = 2048;

/// Binds the XPUB socket.
pub(super) fn bind(endpoint: &str) -> Result<(AsyncSocket, String)> {
    let sock = context().socket(zmq::XPUB)?;
    harden(&sock)?;
    // Only subscriptions arrive on an XPUB: nothing longer than a prefix is read.
    sock.set_maxmsgsize(MAX_PREFIX + 1)?;
    sock.set_ipv6(endpoint.starts_with("tcp://["))?;
    sock.bind(endpoint)?;
    let bound = super::router::last_endpoint(&sock)?;
    let mut sock = AsyncSocket::new(sock)?;
    set_int_option(&mut sock, zmq_sys::ZMQ_XPUB_NODROP, 1)?;
    Ok((sock, bound))
}

/// The XPUB and its flow-control state.
struct Xpub {
    sock: AsyncSocket,
    key: Key,
    subscribed: Arc<AtomicBool>,
    /// Dropping for full queues until then (a subscriber was stuck).
    lossy_until: Option<Instant>,
}

impl Xpub {
    /// Reads the subscriptions waiting (at most a batch).
    fn read_subscriptions(&mut self, first: Option<Result<Vec<Bytes>>>) {
        let mut next = first.or_else(|| self.sock.try_recv().transpose());
        let mut n = 0;
        while let Some(sub) = next.take() {
            match sub {
                // A subscription is `0x01 + prefix`, a cancellation `0x00 + prefix`.
                Ok(frames) => {
                    if frames.first().and_then(|f| f.first()) == Some(&1) {
                        self.subscribed.store(true, Ordering::Release);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "publisher: receive failed"),
            }
            n += 1;
            if n < BATCH {
                next = self.sock.try_recv().transpose();
            }
        }
    }

    fn set_lossy(&mut self, lossy: bool) {
        if let Err(e) = set_int_option(&mut self.sock, zmq_sys::ZMQ_XPUB_NODROP, i32::from(!lossy)) {
            tracing::warn!(error = %e, "publisher: cannot switch ZMQ_XPUB_NODROP");
        }
    }

    /// Sends one event, waiting (at most [`STALL`]) for a full subscriber queue.
    async fn send(&mut self, topic: &str, payload: Bytes) {
        if self.lossy_until.is_some_and(|t| t <= Instant::now()) {
            self.lossy_until = None;
            self.set_lossy(false);
        }
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
            if tokio::time::timeout_at(deadline, self.sock.wait()).await.is_err() {
                tracing::warn!(
                    "publisher: a subscriber is stuck; dropping for full queues for {DROP_PERIOD:?}"
                );
                self.set_lossy(true);
                self.lossy_until = Some(Instant::now() + DROP_PERIOD);
                if let Err(e) = self.sock.try_send(&frames) {
                    tracing::warn!(error = %e, "publisher: send failed");
                }
                return;
            }
        }
    }
}

/// Publishes what arrives on `rx` until the medium drops its sender.
pub(super) async fn publisher(
    sock: AsyncSocket,
    mut rx: mpsc::Receiver<(Arc<str>, Bytes)>,
    subscribed: Arc<AtomicBool>,
    key: Key,
) {
    let mut xpub = Xpub {
        sock,
        key,
        subscribed,
        lossy_until: None,
    };
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some((topic, payload)) = m else { return };
                xpub.send(&topic, payload).await;
                for _ in 1..BATCH {
                    match rx.try_recv() {
                        Ok((topic, payload)) => xpub.send(&topic, payload).await,
                        Err(_) => break,
                    }
                }
            }
            sub = xpub.sock.recv() => xpub.read_subscriptions(Some(sub)),
        }
    }
}

/// What the medium asks of the subscriber task.
#[derive(Debug)]
pub(super) enum SubCmd {
    /// Start receiving from a peer's publish endpoint.
    Connect(String),
    /// Stop receiving from it.
    Disconnect(String),
}

fn zmq_prefix(p: &str) -> &str {
    if p == "*" {
        ""
    } else {
        p
    }
}

/// Owns the SUB socket: connects and disconnects peers, follows the node's subscriptions and
/// forwards verified events to the inbox.
pub(super) async fn subscriber(
    ipv6: bool,
    mut cmds: mpsc::Receiver<SubCmd>,
    mut prefixes: watch::Receiver<Vec<String>>,
    inbox: mpsc::Sender<Incoming>,
    key: Key,
) {
    let mut sub = match open_sub(ipv6) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "subscriber: cannot open a SUB socket; no events will arrive");
            return;
        }
    };
    // Endpoint → number of peers using it (a restarted node may briefly share one).
    let mut connected: HashMap<String, usize> = HashMap::new();
    let mut current: BTreeSet<String> = BTreeSet::new();
    apply_prefixes(&sub, &mut current, &prefixes.borrow_and_update());
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => return,
                Some(SubCmd::Connect(ep)) => {
                    let n = connected.entry(ep.clone()).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        if let Err(e) = sub.get().connect(&ep) {
                            tracing::warn!(endpoint = %ep, error = %e, "subscriber: cannot connect");
                        }
                    }
                }
                Some(SubCmd::Disconnect(ep)) => {
                    if let Some(n) = connected.get_mut(&ep) {
                        *n -= 1;
                        if *n == 0 {
                            connected.remove(&ep);
                            // Fails only when the endpoint was never connected.
                            let _ = sub.get().disconnect(&ep);
                        }
                    }
                }
            },
            changed = prefixes.changed() => {
                if changed.is_err() {
                    return; // medium dropped
                }
                apply_prefixes(&sub, &mut current, &prefixes.borrow_and_update());
            }
            msg = sub.recv() => match msg {
                Ok(frames) => match envelope::open_event(key.as_deref(), frames) {
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

/// The SUB socket; IPv6 endpoints only when the node itself is on IPv6 (an IPv6 socket to an
/// IPv4 peer needs IPv4-mapped addresses, which a host may not route).
fn open_sub(ipv6: bool) -> Result<AsyncSocket> {
    let sock = context().socket(zmq::SUB)?;
    harden(&sock)?;
    sock.set_ipv6(ipv6)?;
    AsyncSocket::new(sock)
}

fn apply_prefixes(sub: &AsyncSocket, current: &mut BTreeSet<String>, wanted: &[String]) {
    let wanted: BTreeSet<String> = wanted.iter().map(|p| zmq_prefix(p).to_owned()).collect();
    for p in wanted.difference(current) {
        if let Err(e) = sub.get().set_subscribe(p.as_bytes()) {
            tracing::warn!(prefix = %p, error = %e, "subscriber: cannot subscribe");
        }
    }
    for p in current.difference(&wanted) {
        let _ = sub.get().set_unsubscribe(p.as_bytes()); // fails only for an unknown prefix
    }
    *current = wanted;
}
