//! `/realtime`: the live websocket feed.
//!
//! A tap on the node (a callback, no task) receives every event, keeps a bounded replay
//! buffer and fans events out over a `broadcast` channel. Each connection reads that channel at its own pace:
//! the node and the other clients never wait for it. When a connection falls more than
//! [`CONNECTION_QUEUE`] events behind, it receives `{"type":"resync","node_id":null,
//! "reason":"overflow","missed":N}` and should reload what it shows. A client that reconnects
//! with `since: {node_id: seq}` gets the missed events from the replay buffer, or
//! `{"type":"resync","node_id":...}` when this hub cannot prove it holds all of them (older
//! than the buffer, a hole in the node's seqs, a hub that never heard the node; see `hub`).
//! A `subscribe` naming a `collection` and a `where` filter is a live query (see `live`).
//!
//! Bounds: the replay buffer holds at most [`REPLAY_CAPACITY`] events and [`REPLAY_BYTES`]
//! bytes; a connection has at most [`MAX_TOPICS`] topics and resumes at most [`MAX_SINCE`]
//! nodes per `subscribe`; client messages and frames are at most 64 KiB. Matching an event
//! against a connection's topics looks up the event topic's prefixes in a set (cost: its
//! segments, not the number of topics). Each event is delivered only if the connection may
//! still `get` its collection, and a connection whose token expires is closed with code 4401.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use tokio::sync::broadcast;
use zeroservices_core::medium::covering_prefixes;
use zeroservices_core::resources::Action;

mod hub;
mod messages;
mod seen;

use self::hub::HubEvent;
pub(crate) use self::hub::{tap, Hub, Prefill};
use self::messages::{error_msg, live_message, ClientMessage, LiveMessage, Topics};
use self::seen::{Seen, SeenVisible};
use crate::auth::{Access, Principal};
use crate::live;
use crate::outgoing::ServerMessage;
use crate::visibility;
use crate::AppState;

/// Default number of events a connection may fall behind before it gets a `resync`.
pub const CONNECTION_QUEUE: usize = 4096;
/// Default number of events kept for resuming clients.
pub const REPLAY_CAPACITY: usize = 10_000;
/// Default bytes of events kept for resuming clients.
pub const REPLAY_BYTES: usize = 64 * 1024 * 1024;
/// Topics one connection may subscribe to.
pub const MAX_TOPICS: usize = 256;
/// Nodes one `subscribe` may resume (`since` entries).
pub const MAX_SINCE: usize = 1024;
/// Largest client message and frame.
const MAX_MESSAGE: usize = 64 * 1024;
/// A client that does not read for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Close code for a connection whose credentials expired (4000-4999: the application's).
const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Collections whose permission a connection remembers (cleared on `auth`).
const PERMISSION_CACHE: usize = 1024;

/// `GET /realtime`.
pub(crate) async fn handler(
    ws: WebSocketUpgrade,
    State(st): State<AppState>,
    who: Principal,
) -> Response {
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| connection(st, who, socket))
}

struct Conn {
    st: AppState,
    who: Principal,
    /// Subscribed prefixes; `all` when one of them is `*` or empty.
    topics: HashSet<String>,
    all: bool,
    /// Per resumed node, the `seq` the client said it has (`since`): older live events of
    /// that node are not sent again. Set by the client only, never by an event, so a forged
    /// event with a huge `seq` cannot hide the node's later events.
    floor: HashMap<String, u64>,
    /// Events sent by a replay, so that the same event arriving live is not sent twice.
    replayed: HashMap<String, HashSet<u64>>,
    /// How many events `replayed` holds (bounded).
    replayed_count: usize,
    /// May `who` get this collection? (cleared when `who` changes)
    allowed: HashMap<Arc<str>, bool>,
    /// Server-side live queries (see `live`).
    live: live::LiveQueries,
    /// What this connection saw of collections with a read rule (cleared with `who`).
    seen: SeenVisible,
}

/// The collection an event topic belongs to.
fn collection_of(topic: &str) -> &str {
    topic.split('.').next().unwrap_or(topic)
}

/// When `who`'s credentials expire, as an instant of this process's clock.
fn expiry(who: &Principal) -> Option<tokio::time::Instant> {
    let exp_ms = who.expires_at()?.saturating_mul(1000);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Some(tokio::time::Instant::now() + Duration::from_millis(exp_ms.saturating_sub(now_ms)))
}

impl Conn {
    fn covers(&self, topic: &str) -> bool {
        self.all || covering_prefixes(topic).any(|p| self.topics.contains(p))
    }

    /// Whether `who` may still read this event's collection (asked once per collection).
    fn may_get(&mut self, topic: &str) -> bool {
        let collection = collection_of(topic);
        if let Some(ok) = self.allowed.get(collection) {
            return *ok;
        }
        let ok = self
            .st
            .auth
            .authorize(&self.who, collection, Access::Action(&Action::Get))
            .is_ok();
        if self.allowed.len() >= PERMISSION_CACHE {
            self.allowed.clear();
        }
        self.allowed.insert(Arc::from(collection), ok);
        ok
    }

    /// Not sent already (below the client's `since`, or by a replay).
    fn fresh(&self, ev: &HubEvent) -> bool {
        match (&ev.node_id, ev.seq) {
            (Some(n), Some(s)) => {
                self.floor.get(n).is_none_or(|f| s > *f)
                    && !self.replayed.get(n).is_some_and(|seqs| seqs.contains(&s))
            }
            _ => true,
        }
    }

    /// What one event of the hub means to this connection: the event itself (topics), and
    /// what it does to the live queries.
    fn deliver(&mut self, ev: &HubEvent) -> Vec<Utf8Bytes> {
        let mut out = Vec::new();
        if !self.fresh(ev) {
            return out;
        }
        let seen = self.visible(ev);
        if seen == Seen::Hidden {
            return out;
        }
        if seen == Seen::Visible && self.covers(&ev.topic) && self.may_get(&ev.topic) {
            out.push(ev.text.clone());
        }
        let collection = collection_of(&ev.topic);
        if self.live.follows(collection) && self.may_get(&ev.topic) {
            let (live, text) = (&mut self.live, ev.text.as_str());
            out.extend(off_io(|| live.on_event(text, seen == Seen::Visible)));
        }
        out
    }

    /// What the collection's read rule (if any) lets this connection see of the event.
    fn visible(&mut self, ev: &HubEvent) -> Seen {
        let rule = self.st.read_rules.get(collection_of(&ev.topic));
        self.seen.classify(rule, &self.who, ev)
    }

    /// Handles one text message of the client: live-query forms, then the rest.
    async fn on_message(&mut self, text: &str) -> Vec<Utf8Bytes> {
        match live_message(text) {
            Some(LiveMessage::Subscribe(sub)) => self.subscribe_live(sub).await,
            Some(LiveMessage::Unsubscribe(id)) => {
                let removed = self.live.remove(&id);
                let m = ServerMessage::LiveUnsubscribed {
                    query: &id,
                    found: removed,
                };
                vec![m.text()]
            }
            None => {
                self.st.hub.loaded_for(text).await;
                self.on_text(text)
            }
        }
    }

    /// A live query (`subscribe` with a `collection`): checks, lists, registers. Its
    /// `subscribed` answer carries the whole current result set, so a client coming back
    /// re-subscribes and replaces what it shows: nothing missed while away can stay hidden.
    async fn subscribe_live(&mut self, mut sub: live::LiveSubscribe) -> Vec<Utf8Bytes> {
        if let Some(rule) = self.st.read_rules.get(&sub.collection) {
            let Some(user) = visibility::user_of(&self.who) else {
                let m = format!("sign in to use {:?}", sub.collection);
                return vec![error_msg("unauthorized", &m)];
            };
            let asked = std::mem::take(&mut sub.filter);
            sub.filter = visibility::and(asked, rule.filter_for(user));
        }
        let (q, subscribed) = match live::open(&self.st, &self.who, &sub).await {
            Ok(x) => x,
            Err(e) => return vec![e],
        };
        if self.st.read_rules.contains_key(&sub.collection) {
            // The listed resources were seen: their deletion or leaving reaches this client.
            self.seen.listed(&sub.collection, q.members());
        }
        match self.live.add(q) {
            Ok(()) => vec![subscribed],
            Err(e) => vec![e],
        }
    }

    /// Remembers an event sent by a replay (bounded: a replay sends at most the buffer).
    fn note_replayed(&mut self, ev: &HubEvent) {
        if let (Some(n), Some(s)) = (&ev.node_id, ev.seq) {
            if self.replayed_count >= 2 * REPLAY_CAPACITY {
                self.replayed.clear();
                self.replayed_count = 0;
            }
            if self.replayed.entry(n.clone()).or_default().insert(s) {
                self.replayed_count += 1;
            }
        }
    }

    /// Handles one client message; returns the messages to send back.
    fn on_text(&mut self, text: &str) -> Vec<Utf8Bytes> {
        let msg: ClientMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                return vec![error_msg(
                    "bad_request",
                    &format!("unknown or malformed message: {e}"),
                )]
            }
        };
        match msg {
            ClientMessage::Ping => vec![ServerMessage::Pong.text()],
            ClientMessage::Auth { token } => match self.st.auth.authenticate(Some(&token)) {
                Ok(p) => {
                    self.who = p;
                    self.allowed.clear();
                    // What the old credentials could see is not the new ones' business.
                    self.seen.clear();
                    self.live = live::LiveQueries::default();
                    vec![ServerMessage::Authenticated.text()]
                }
                Err(_) => vec![error_msg("unauthorized", "invalid token")],
            },
            ClientMessage::Join { data } => self.subscribe(data.topics, HashMap::new()),
            ClientMessage::Unsubscribe { topics }
            | ClientMessage::Leave {
                data: Topics { topics },
            } => {
                for t in &topics {
                    self.topics.remove(t);
                }
                self.all = self.topics.iter().any(|t| t == "*" || t.is_empty());
                vec![ServerMessage::Unsubscribed { topics: &topics }.text()]
            }
            ClientMessage::Subscribe { topics, since } => self.subscribe(topics, since),
        }
    }

    /// `subscribe`: checks the bounds and grants, adds the topics, and replays what the client
    /// missed of the nodes in `since`.
    fn subscribe(&mut self, topics: Vec<String>, since: HashMap<String, u64>) -> Vec<Utf8Bytes> {
        let added = topics.iter().filter(|t| !self.topics.contains(*t)).count();
        if self.topics.len() + added > MAX_TOPICS {
            let m = format!("at most {MAX_TOPICS} topics per connection");
            return vec![error_msg("bad_request", &m)];
        }
        if since.len() > MAX_SINCE {
            let m = format!("at most {MAX_SINCE} nodes in since");
            return vec![error_msg("bad_request", &m)];
        }
        for t in &topics {
            let collection = if t == "*" || t.is_empty() {
                "*"
            } else {
                collection_of(t)
            };
            if let Err(e) = self
                .st
                .auth
                .authorize(&self.who, collection, Access::Subscribe)
            {
                let code = if e.status().as_u16() == 401 {
                    "unauthorized"
                } else {
                    "forbidden"
                };
                let m = format!("not allowed to subscribe to {t:?}");
                return vec![error_msg(code, &m)];
            }
        }
        let mut out: Vec<Utf8Bytes> = vec![ServerMessage::Subscribed { topics: &topics }.text()];
        let new_all = topics.iter().any(|t| t == "*" || t.is_empty());
        let new_topics: HashSet<String> = topics.into_iter().collect();
        self.all |= new_all;
        self.topics.extend(new_topics.iter().cloned());
        if !since.is_empty() {
            let covers = |ev: &HubEvent| {
                new_all || covering_prefixes(&ev.topic).any(|p| new_topics.contains(p))
            };
            for ev in self.replay(&since, &covers, &mut out) {
                out.push(ev.text.clone());
            }
        }
        out
    }

    /// Appends the buffered events of the `since` nodes newer than their `seq` (under the new
    /// topics), or a `resync` for a node whose missed events were already evicted.
    fn replay(
        &mut self,
        since: &HashMap<String, u64>,
        covers: &dyn Fn(&HubEvent) -> bool,
        out: &mut Vec<Utf8Bytes>,
    ) -> Vec<Arc<HubEvent>> {
        let (snapshot, unproven) = {
            let r = self.st.hub.replay.lock();
            let unproven: Vec<String> = since
                .iter()
                .filter(|(n, s)| !r.complete(n, **s))
                .map(|(n, _)| n.clone())
                .collect();
            (r.events.iter().cloned().collect::<Vec<_>>(), unproven)
        };
        // Nodes the client never heard of whose events it may have missed: it cannot be told
        // what it missed of them, only to reload.
        let mut strangers: Vec<&str> = snapshot
            .iter()
            .filter_map(|ev| {
                ev.node_id
                    .as_deref()
                    .filter(|n| !since.contains_key(*n) && covers(ev))
            })
            .collect();
        strangers.sort_unstable();
        strangers.dedup();
        for node_id in unproven.iter().map(String::as_str).chain(strangers) {
            out.push(
                ServerMessage::Resync {
                    node_id: Some(node_id),
                    reason: "gap",
                    missed: None,
                }
                .text(),
            );
        }
        for (node_id, seq) in since {
            if self.floor.len() >= MAX_SINCE {
                self.floor.clear();
            }
            self.floor.insert(node_id.clone(), *seq);
        }
        let mut replay = Vec::new();
        for ev in snapshot {
            let from_resumed = ev.node_id.as_ref().is_some_and(|n| since.contains_key(n));
            if from_resumed
                && covers(&ev)
                && self.fresh(&ev)
                && self.may_get(&ev.topic)
                && self.visible(&ev) == Seen::Visible
            {
                self.note_replayed(&ev);
                replay.push(ev);
            }
        }
        replay
    }
}

/// Runs work whose cost clients choose (their live queries' filters, evaluated on every
/// event) off the runtime's I/O scheduling: on a multi-thread runtime the worker hands its
/// other tasks (`/health`, other connections) to another thread meanwhile. Filters are bounded
/// too (`$text` terms, `$regex` count), so this is about many heavy connections at once.
fn off_io<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Tells the client its token expired and closes with [`CLOSE_UNAUTHORIZED`].
async fn close_expired(sink: &mut futures::stream::SplitSink<WebSocket, Message>) {
    let bye = error_msg("unauthorized", "token expired; reconnect with a fresh one");
    let close = Message::Close(Some(CloseFrame {
        code: CLOSE_UNAUTHORIZED,
        reason: Utf8Bytes::from_static("token expired"),
    }));
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        sink.send(Message::Text(bye)).await?;
        sink.send(close).await
    })
    .await;
}

async fn connection(st: AppState, who: Principal, socket: WebSocket) {
    let metrics = st.metrics.clone();
    metrics
        .ws_connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut rx = st.hub.tx.subscribe();
    let shutdown = st.node.shutdown_token();
    let (mut sink, mut stream) = socket.split();
    let expires = expiry(&who);
    let mut conn = Conn {
        st,
        who,
        topics: HashSet::new(),
        all: false,
        floor: HashMap::new(),
        replayed: HashMap::new(),
        replayed_count: 0,
        allowed: HashMap::new(),
        live: live::LiveQueries::default(),
        seen: SeenVisible::default(),
    };
    // Far away when the credentials do not expire; moved by every `auth`.
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let expired = tokio::time::sleep_until(expires.unwrap_or(far));
    tokio::pin!(expired);
    loop {
        let outgoing: Vec<Utf8Bytes> = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = expired.as_mut() => {
                close_expired(&mut sink).await;
                break;
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let before = conn.who.expires_at();
                    let out = conn.on_message(t.as_str()).await;
                    if conn.who.expires_at() != before {
                        expired.as_mut().reset(expiry(&conn.who).unwrap_or(far));
                    }
                    out
                }
                Some(Ok(Message::Binary(_))) => vec![error_msg("bad_request", "binary frames are not supported; send JSON text")],
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            },
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    let out = conn.deliver(&ev);
                    if out.is_empty() { continue; }
                    metrics.events_delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    out
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics.events_dropped.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    vec![ServerMessage::Resync { node_id: None, reason: "overflow", missed: Some(n) }.text()]
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        };
        let mut failed = false;
        for text in outgoing {
            match tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Text(text))).await {
                Ok(Ok(())) => {}
                _ => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            break;
        }
    }
    metrics
        .ws_connections
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}
