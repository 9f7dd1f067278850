//! The hub of `/realtime`: one tap on the node feeds a bounded replay buffer and a broadcast
//! channel that every connection reads at its own pace, and follows per publishing node the
//! seqs it can replay without a hole (what proves a resume complete).

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;
use tokio::sync::broadcast;
use zeroservices_core::{medium::Event, NodeHandle, Tap};

use super::MAX_SINCE;
use crate::ops::Metrics;

#[derive(Debug)]
pub(crate) struct HubEvent {
    pub(super) topic: Arc<str>,
    pub(super) node_id: Option<String>,
    pub(super) seq: Option<u64>,
    pub(super) text: Utf8Bytes,
}

/// Fan-out and replay of the cluster's events.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(super) tx: broadcast::Sender<Arc<HubEvent>>,
    /// `true` once the history kept by the medium (if any) is loaded; resumes wait for it.
    loaded: tokio::sync::watch::Sender<bool>,
    replay_capacity: usize,
    replay_bytes: usize,
    // A blocking (parking_lot) Mutex: push/pop and snapshot only; never held across an await.
    pub(super) replay: Mutex<Replay>,
}

#[derive(Debug, Default)]
pub(super) struct Replay {
    pub(super) events: VecDeque<Arc<HubEvent>>,
    /// Bytes of the events' text.
    bytes: usize,
    /// Per node, the seqs this hub can replay without a hole (see [`Track`]).
    tracks: HashMap<String, Track>,
}

/// Nodes whose sequence a hub follows at most; past it, it forgets them all (their resumes
/// get `resync`, which is always safe).
const MAX_TRACKED: usize = 4 * MAX_SINCE;

/// What a hub knows of one node's sequence: it received every event of the node from `first`
/// to `last` and still holds those from `first` on. A resume from `since` is complete exactly
/// when `first <= since + 1`; before any event (a hub that just started, a node it never
/// heard) nothing is proven.
#[derive(Debug, Clone, Copy)]
struct Track {
    first: u64,
    last: u64,
}

impl Replay {
    /// Records a live event of `node` with `seq`.
    fn follow(&mut self, node: &str, seq: u64) {
        match self.tracks.get_mut(node) {
            Some(t) if seq == t.last.saturating_add(1) => t.last = seq,
            // A hole (missed events, or a restart that skipped a reserved block of seqs):
            // only what comes from here on is proven.
            Some(t) if seq > t.last => {
                *t = Track {
                    first: seq,
                    last: seq,
                }
            }
            Some(_) => {} // a repeat or an older seq: proves nothing new
            None => {
                if self.tracks.len() >= MAX_TRACKED {
                    self.tracks.clear();
                }
                self.tracks.insert(
                    node.to_owned(),
                    Track {
                        first: seq,
                        last: seq,
                    },
                );
            }
        }
    }

    /// Records that `node`'s event `seq` left the buffer.
    fn evicted(&mut self, node: &str, seq: u64) {
        if let Some(t) = self.tracks.get_mut(node) {
            t.first = t.first.max(seq.saturating_add(1));
        }
    }

    /// Whether every event of `node` after `since` can be replayed.
    pub(super) fn complete(&self, node: &str, since: u64) -> bool {
        self.tracks
            .get(node)
            .is_some_and(|t| t.first <= since.saturating_add(1))
    }
}

impl Hub {
    pub(crate) fn new(queue: usize, replay_capacity: usize, replay_bytes: usize) -> Hub {
        Hub {
            tx: broadcast::channel(queue.max(1)).0,
            replay_capacity,
            replay_bytes,
            replay: Mutex::new(Replay::default()),
            loaded: tokio::sync::watch::channel(false).0,
        }
    }

    /// Before a client message that may resume (it names `since`): waits (at most
    /// [`LOAD_LIMIT`]) until the medium's history is in the buffer, so a resume right after
    /// this node started is answered from it rather than with `resync`.
    pub(super) async fn loaded_for(&self, text: &str) {
        if !text.contains("\"since\"") {
            return;
        }
        let mut rx = self.loaded.subscribe();
        let _ = tokio::time::timeout(LOAD_LIMIT, rx.wait_for(|l| *l)).await;
    }

    /// Puts the events the medium kept from before this hub started (oldest first) in front
    /// of those received live meanwhile, skipping those received both ways, and recomputes
    /// what each node's sequence proves. They are not broadcast: they are past.
    fn prefill(&self, history: Vec<HubEvent>) {
        let mut r = self.replay.lock();
        let mut live_first: HashMap<String, u64> = HashMap::new();
        for ev in &r.events {
            if let (Some(n), Some(s)) = (&ev.node_id, ev.seq) {
                live_first.entry(n.clone()).or_insert(s);
            }
        }
        let older = history
            .into_iter()
            .filter(|ev| match (&ev.node_id, ev.seq) {
                (Some(n), Some(s)) => live_first.get(n).is_none_or(|f| s < *f),
                _ => false,
            });
        let mut events: VecDeque<Arc<HubEvent>> = older.map(Arc::new).collect();
        events.extend(r.events.drain(..));
        r.tracks.clear();
        r.bytes = 0;
        for ev in &events {
            if let (Some(n), Some(s)) = (&ev.node_id, ev.seq) {
                r.follow(n, s);
            }
            r.bytes += ev.text.len();
        }
        r.events = events;
        self.trim(&mut r);
    }

    /// Evicts the oldest events past the buffer's bounds.
    fn trim(&self, r: &mut Replay) {
        while r.events.len() > self.replay_capacity || r.bytes > self.replay_bytes {
            if let Some(old) = r.events.pop_front() {
                r.bytes -= old.text.len();
                if let (Some(n), Some(s)) = (&old.node_id, old.seq) {
                    r.evicted(n, s);
                }
            }
        }
    }

    fn push(&self, ev: HubEvent) {
        let ev = Arc::new(ev);
        {
            let mut r = self.replay.lock();
            if let (Some(n), Some(s)) = (&ev.node_id, ev.seq) {
                r.follow(n, s);
                r.bytes += ev.text.len();
                r.events.push_back(ev.clone());
            }
            self.trim(&mut r);
        }
        // No receiver (no websocket open) is fine.
        let _ = self.tx.send(ev);
    }
}

/// Longest a resume waits for the history of the medium to load.
const LOAD_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The hub's form of an event: only `node_id` and `seq` are read from the payload; the
/// websocket message is built around the payload bytes as they are. `None` when the payload
/// is not one JSON object.
fn hub_event(ev: &Event) -> Option<HubEvent> {
    #[derive(Deserialize)]
    struct Meta<'a> {
        #[serde(borrow, default)]
        node_id: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        seq: Option<u64>,
    }
    // Parsing into `Meta` also checks the whole payload is one JSON object.
    let meta = serde_json::from_slice::<Meta>(&ev.payload).ok()?;
    let topic = serde_json::to_string(&*ev.topic).unwrap_or_default();
    let mut text = String::with_capacity(ev.payload.len() + topic.len() + 40);
    text.push_str(r#"{"type":"event","topic":"#);
    text.push_str(&topic);
    text.push_str(r#","data":"#);
    // Checked above to be valid JSON (and so valid UTF-8).
    text.push_str(std::str::from_utf8(&ev.payload).unwrap_or("null"));
    text.push('}');
    Some(HubEvent {
        topic: ev.topic.clone(),
        node_id: meta.node_id.map(|c| c.into_owned()),
        seq: meta.seq,
        text: Utf8Bytes::from(text),
    })
}

/// Feeds the hub from the node's events, synchronously where each event is delivered (no
/// task in between).
pub(crate) fn tap(node: &NodeHandle, hub: Arc<Hub>, metrics: Arc<Metrics>) -> Tap {
    node.tap(
        vec!["*".into()],
        Arc::new(move |ev: &Event| {
            let Some(hev) = hub_event(ev) else {
                return;
            };
            metrics
                .events_published
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            hub.push(hev);
        }),
    )
}

/// Loads into the hub the events the node's medium kept (the JetStream stream on NATS),
/// after the tap is in place so nothing falls between the two. Aborted when dropped.
#[derive(Debug)]
pub(crate) struct Prefill(tokio::task::JoinHandle<()>);

impl Prefill {
    /// Starts loading, or marks the hub loaded at once outside a runtime.
    pub(crate) fn start(node: &NodeHandle, hub: Arc<Hub>, max: usize) -> Option<Prefill> {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            hub.loaded.send_replace(true);
            return None;
        };
        let node = node.clone();
        Some(Prefill(rt.spawn(async move {
            match node.event_history(max).await {
                Ok(h) if !h.is_empty() => {
                    let n = h.len();
                    hub.prefill(h.iter().filter_map(hub_event).collect());
                    tracing::info!(events = n, "realtime: history loaded from the medium");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "realtime: history not loaded; resumes from before this start get resync"),
            }
            hub.loaded.send_replace(true);
        })))
    }
}

impl Drop for Prefill {
    fn drop(&mut self) {
        self.0.abort();
    }
}
