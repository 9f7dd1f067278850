//! Events: publishing (changes get their `seq` in the event task), local subscriptions and
//! taps, and delivery of what arrives from peers.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{NodeHandle, NodeInner, SUBSCRIPTION_CAPACITY};
use crate::error::Result;
use crate::medium::Event;
use crate::protocol::topic_matches;

pub(super) struct SubEntry {
    id: u64,
    prefixes: Vec<String>,
    sink: Sink,
}

/// Where a subscription's events go.
pub(super) enum Sink {
    /// A bounded queue read by a [`Subscription`]; full means dropped and counted.
    Queue {
        tx: mpsc::Sender<Event>,
        dropped: Arc<AtomicU64>,
    },
    /// A callback run where the event is delivered (see [`NodeHandle::tap`]).
    Call(TapFn),
}

/// The callback of a [`Tap`].
pub type TapFn = Arc<dyn Fn(&Event) + Send + Sync>;

/// A callback receiving events under some topic prefixes, from [`NodeHandle::tap`]. Removed when
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
    pub(super) fn subscribe(&self, prefixes: Vec<String>, sink: Sink) -> u64 {
        let id = self.next_sub.fetch_add(1, Ordering::Relaxed);
        self.subs.lock().push(SubEntry { id, prefixes, sink });
        self.update_medium_subscriptions();
        id
    }

    pub(super) fn unsubscribe(&self, id: u64) {
        self.subs.lock().retain(|s| s.id != id);
        self.update_medium_subscriptions();
    }

    pub(super) fn update_medium_subscriptions(&self) {
        let mut prefixes: Vec<String> = {
            let subs = self.subs.lock();
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

    /// Hands `ev` to every local subscription it matches. Queues are filled under the lock;
    /// tap callbacks run after it is released, so a callback may subscribe, or drop a tap
    /// (its own included), without deadlocking.
    pub(super) fn deliver_local(&self, ev: &Event) {
        let mut calls: Vec<TapFn> = Vec::new();
        {
            let mut subs = self.subs.lock();
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
                        calls.push(f.clone());
                        true
                    }
                }
            });
        }
        for f in calls {
            f(ev);
        }
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl NodeHandle {
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

    /// The last events (at most `max`, oldest first) that the medium keeps durably — the
    /// JetStream stream on NATS — for a realtime hub that starts. Empty on media that keep
    /// none (ZeroMQ, memory).
    pub async fn event_history(&self, max: usize) -> Result<Vec<Event>> {
        match self.inner.medium.event_history() {
            Some(h) => h.history(max).await,
            None => Ok(Vec::new()),
        }
    }

    /// The medium's durable work queue of a worker group (see [`crate::medium::WorkQueue`]),
    /// `None` when the medium keeps no events.
    pub(crate) async fn work_queue(
        &self,
        group: &str,
        collection: &str,
        ack_wait: std::time::Duration,
    ) -> Result<Option<crate::medium::WorkQueue>> {
        match self.inner.medium.work_queues() {
            Some(q) => q.work_queue(group, collection, ack_wait).await.map(Some),
            None => Ok(None),
        }
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
            if let Some(tp) = crate::trace::current() {
                body.extend_from_slice(br#","traceparent":"#);
                serde_json::to_writer(&mut body, &tp)?;
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
    /// let _tap = node.tap(vec!["power.".into()], Arc::new(move |_ev: &zeroservices_core::medium::Event| {
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
}

/// Makes sure `seq` is within the durable reservation before an event takes it; `false` when
/// it cannot be (the node is stopping and the reservation still fails).
///
/// While the reservation cannot be saved (a full disk), the event waits, retried with
/// backoff, and the node refuses new writes (`Node::writes_refused`): an event published
/// past the durable reservation could see its seq used again after a restart, and a resuming
/// client's `since` would then hide the new events.
async fn reserve(node: &NodeHandle, seq: u64) -> bool {
    let Some(d) = &node.inner.durable else {
        return true;
    };
    let mut wait = Duration::from_millis(20);
    loop {
        if seq <= d.reserved.load(Ordering::Acquire) {
            return true;
        }
        let n = node.clone();
        let upto = seq.saturating_add(d.block);
        let done = tokio::task::spawn_blocking(move || match &n.inner.durable {
            Some(d) => d.reserve(upto),
            None => Ok(()),
        })
        .await;
        if matches!(done, Ok(Ok(()))) {
            if d.failing.swap(false, Ordering::AcqRel) {
                tracing::info!(seq, "seq reservation saved again: writes accepted");
            }
            return true;
        }
        if !d.failing.swap(true, Ordering::AcqRel) {
            tracing::error!(seq, error = ?done, "cannot save the seq reservation: events wait and writes are refused until it can be saved");
        }
        if node.inner.shutdown.is_cancelled() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = node.inner.shutdown.cancelled() => {}
        }
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

pub(super) async fn event_publisher(node: NodeHandle, mut rx: mpsc::Receiver<(String, Vec<u8>)>) {
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
        if !reserve(&node, seq).await {
            // Its seq is skipped: hubs see a hole, and resuming clients get `resync`.
            tracing::error!(topic = %topic, seq, "node stopping without a durable seq reservation: event not published");
            continue;
        }
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
