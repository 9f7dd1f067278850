//! ZeroMQ medium (the `zeromq` crate): one ROUTER taking requests, one pooled DEALER per peer
//! for outgoing requests, one PUB for events and one SUB per peer.
//!
//! Why one SUB per peer rather than one SUB connected to all: the `zeromq` crate has no
//! `disconnect`, so dropping a peer's SUB socket is the only way to stop hearing a departed peer.
//! Every socket is owned by exactly one task; the medium talks to those tasks over bounded
//! channels. Receive loops are guarded with `catch_unwind` because `zeromq` 0.4 reaches `todo!()`
//! on some unexpected frames (see docs/protocol.md, "Robustness").

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use zeromq::{Endpoint, Socket, SocketRecv, SocketSend, ZmqMessage};

use super::{Event, InboundRequest, Inbox, Incoming, Medium, Replier, INBOX_CAPACITY};
use crate::cluster_key::ClusterKey;
use crate::error::{Error, Result};
use crate::protocol::{encode_reply, kind, Endpoints, MAX_BODY_BYTES};
use crate::task::TaskGuard;

/// Requests a ROUTER serves concurrently before it stops reading (back-pressure).
const MAX_INFLIGHT: usize = 16_384;
/// Events queued for the PUB socket before `publish` waits.
const PUB_QUEUE: usize = 16_384;
/// Requests queued per peer DEALER before `request` waits.
const DEALER_QUEUE: usize = 4096;
/// How long a reply may take to be written to a peer that does not read.
const REPLY_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Where and how a [`ZmqMedium`] binds.
#[derive(Debug, Clone)]
pub struct ZmqConfig {
    /// Address the ROUTER and PUB sockets bind to (default `0.0.0.0`).
    pub bind: IpAddr,
    /// ROUTER port; 0 picks a free one (default).
    pub router_port: u16,
    /// PUB port; 0 picks a free one (default).
    pub pub_port: u16,
    /// Host put in announced endpoints. `None`: the bind address, where peers substitute the
    /// address they heard the announcement from when it is `0.0.0.0` (docs/protocol.md).
    pub advertise: Option<String>,
    /// Longest wait for a TCP connection to a peer.
    pub connect_timeout: Duration,
    /// Authenticate every frame with this shared key (see [`ClusterKey`]); `None`: open cluster.
    pub cluster_key: Key,
}

/// An optional cluster key, shared by a node's sockets.
pub(crate) type Key = Option<Arc<ClusterKey>>;

impl Default for ZmqConfig {
    fn default() -> Self {
        ZmqConfig {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            router_port: 0,
            pub_port: 0,
            advertise: None,
            connect_timeout: Duration::from_secs(2),
            cluster_key: None,
        }
    }
}

impl ZmqConfig {
    /// Binds on 127.0.0.1 with random ports: for tests and single-host use.
    pub fn loopback() -> ZmqConfig {
        ZmqConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ..ZmqConfig::default()
        }
    }
}

/// The ZeroMQ medium. Dropping it closes every socket and stops every task it started.
#[derive(Debug)]
pub struct ZmqMedium {
    endpoints: Endpoints,
    cfg: ZmqConfig,
    inbox: mpsc::Sender<Incoming>,
    pub_tx: mpsc::Sender<(Arc<str>, Bytes)>,
    /// Set once a subscriber has connected to the PUB socket; until then publishing has no
    /// one to reach and skips the publisher task entirely.
    subscribed: Arc<AtomicBool>,
    prefixes: watch::Sender<Vec<String>>,
    // std Mutex: map lookups and inserts only; never held across an await.
    peers: Mutex<HashMap<String, PeerConn>>,
    /// Owns the ROUTER task; ends when the medium is dropped.
    _router: TaskGuard,
    /// Owns the PUB task; ends when the medium is dropped.
    _publisher: TaskGuard,
}

#[derive(Debug)]
struct PeerConn {
    endpoints: Endpoints,
    dealer: Option<Arc<DealerClient>>,
    /// Owns this peer's SUB task; dropping the entry stops it.
    _sub: TaskGuard,
}

fn tcp_port(ep: &Endpoint) -> Result<u16> {
    match ep {
        Endpoint::Tcp(_, port) => Ok(*port),
        other => Err(Error::Transport(format!("unexpected endpoint {other}"))),
    }
}

impl ZmqMedium {
    /// Binds the ROUTER and PUB sockets and starts their tasks.
    pub async fn bind(cfg: ZmqConfig) -> Result<(ZmqMedium, Inbox)> {
        let host = match cfg.bind {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        let mut router = zeromq::RouterSocket::new();
        let rep = router
            .bind(&format!("tcp://{host}:{}", cfg.router_port))
            .await?;
        let mut publisher = zeromq::PubSocket::new();
        // Before bind, so that every accepted subscriber is reported.
        let pub_monitor = publisher.monitor();
        let pep = publisher
            .bind(&format!("tcp://{host}:{}", cfg.pub_port))
            .await?;
        let shown = cfg.advertise.clone().unwrap_or(host);
        let endpoints = Endpoints {
            request: format!("tcp://{shown}:{}", tcp_port(&rep)?),
            publish: format!("tcp://{shown}:{}", tcp_port(&pep)?),
        };
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
        let (pub_tx, pub_rx) = mpsc::channel(PUB_QUEUE);
        let (prefixes, _) = watch::channel(Vec::new());
        let key = cfg.cluster_key.clone();
        let subscribed = Arc::new(AtomicBool::new(false));
        let medium = ZmqMedium {
            endpoints,
            cfg,
            inbox: inbox_tx.clone(),
            pub_tx,
            subscribed: subscribed.clone(),
            prefixes,
            peers: Mutex::new(HashMap::new()),
            _router: TaskGuard::spawn(router_task(router, inbox_tx, key.clone())),
            _publisher: TaskGuard::spawn(publisher_task(
                publisher,
                pub_monitor,
                subscribed,
                pub_rx,
                key,
            )),
        };
        Ok((medium, inbox_rx))
    }

    fn dealer_for(&self, node_id: &str) -> Result<Arc<DealerClient>> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let conn = peers
            .get_mut(node_id)
            .ok_or_else(|| Error::PeerGone(node_id.to_owned()))?;
        match &conn.dealer {
            Some(d) if d.is_alive() => Ok(d.clone()),
            _ => {
                // First use, or the previous connection broke: dial again.
                let d = Arc::new(DealerClient::spawn(
                    conn.endpoints.request.clone(),
                    self.cfg.connect_timeout,
                    self.cfg.cluster_key.clone(),
                ));
                conn.dealer = Some(d.clone());
                Ok(d)
            }
        }
    }
}

#[async_trait]
impl Medium for ZmqMedium {
    fn endpoints(&self) -> Endpoints {
        self.endpoints.clone()
    }

    async fn connect_peer(&self, node_id: &str, endpoints: &Endpoints) -> Result<()> {
        let sub = TaskGuard::spawn(subscriber_task(
            node_id.to_owned(),
            endpoints.publish.clone(),
            self.prefixes.subscribe(),
            self.inbox.clone(),
            self.cfg.cluster_key.clone(),
        ));
        let conn = PeerConn {
            endpoints: endpoints.clone(),
            dealer: None,
            _sub: sub,
        };
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id.to_owned(), conn);
        Ok(())
    }

    async fn disconnect_peer(&self, node_id: &str) {
        let gone = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node_id);
        drop(gone);
    }

    async fn request(
        &self,
        node_id: &str,
        kind: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        self.dealer_for(node_id)?.request(kind, body, timeout).await
    }

    async fn notify(&self, node_id: &str, kind: &str, body: Bytes) -> Result<()> {
        self.dealer_for(node_id)?.notify(kind, body).await
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()> {
        if !self.subscribed.load(Ordering::Acquire) {
            return Ok(()); // PUB would drop it: nobody has connected
        }
        self.pub_tx
            .send((Arc::from(topic), payload))
            .await
            .map_err(|_| Error::Shutdown)
    }

    fn set_subscriptions(&self, prefixes: Vec<String>) {
        self.prefixes.send_replace(prefixes);
    }
}

/// Receives one message; a panic inside `zeromq` becomes an error instead of killing the task.
async fn guarded_recv<S: SocketRecv + Send>(sock: &mut S) -> Result<ZmqMessage> {
    match AssertUnwindSafe(sock.recv()).catch_unwind().await {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(Error::Transport(e.to_string())),
        Err(_) => Err(Error::Transport(
            "zeromq receive loop panicked (unexpected frame)".into(),
        )),
    }
}

type PendingReply = BoxFuture<'static, (Bytes, Bytes, Bytes)>;

async fn router_task(mut router: zeromq::RouterSocket, inbox: mpsc::Sender<Incoming>, key: Key) {
    let mut replies: FuturesUnordered<PendingReply> = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some((ident, rid, body)) = replies.next(), if !replies.is_empty() => {
                send_reply(&mut router, ident, rid, body, key.as_deref()).await;
            }
            msg = guarded_recv(&mut router), if replies.len() < MAX_INFLIGHT => {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        // The offending connection is dropped by zeromq; the socket keeps serving.
                        tracing::warn!(error = %e, "router: receive failed");
                        continue;
                    }
                };
                match classify(msg.into_vec(), key.as_deref()) {
                    Classified::Drop(why) => tracing::warn!(why, "router: dropped a frame"),
                    Classified::Immediate { ident, rid, body } => {
                        send_reply(&mut router, ident, rid, body, key.as_deref()).await;
                    }
                    Classified::Deliver { ident, rid, req } => {
                        let (reply, rx) = if rid.is_some() {
                            let (r, rx) = Replier::new();
                            (Some(r), Some(rx))
                        } else {
                            (None, None)
                        };
                        let req = InboundRequest { kind: req.0, body: req.1, reply };
                        if inbox.send(Incoming::Request(req)).await.is_err() {
                            return; // the node is gone
                        }
                        if let (Some(rid), Some(rx)) = (rid, rx) {
                            replies.push(Box::pin(async move {
                                let body = rx.await.unwrap_or_else(|_| {
                                    encode_reply(&Err(Error::Internal("no reply".into())))
                                });
                                (ident, rid, body)
                            }));
                        }
                    }
                }
            }
        }
    }
}

enum Classified {
    Drop(&'static str),
    Immediate {
        ident: Bytes,
        rid: Bytes,
        body: Bytes,
    },
    Deliver {
        ident: Bytes,
        rid: Option<Bytes>,
        req: (String, Bytes),
    },
}

/// Runs the ROUTER's classification of one message (for the fuzz targets).
pub(crate) fn classify_for_fuzzing(frames: Vec<Bytes>, key: Option<&ClusterKey>) {
    let _ = classify(frames, key);
}

/// Decides what to do with one ROUTER message `[identity, request_id, kind, body]`.
fn classify(mut frames: Vec<Bytes>, key: Option<&ClusterKey>) -> Classified {
    if let Some(key) = key {
        // With a cluster key: [identity, request_id, kind, body, authenticator].
        if frames.len() != 5 {
            return Classified::Drop("unauthenticated request (cluster key required)");
        }
        let auth = frames.pop().unwrap_or_default();
        if let Err(e) = key.verify(&[&frames[1], &frames[2], &frames[3]], &auth) {
            tracing::warn!(error = %e, "router: dropped a request");
            return Classified::Drop("request failed authentication");
        }
    }
    let [ident, rid, kind_frame, body]: [Bytes; 4] = match frames.try_into() {
        Ok(f) => f,
        Err(_) => return Classified::Drop("expected 3 frames: request_id, kind, body"),
    };
    let Ok(kind_str) = std::str::from_utf8(&kind_frame) else {
        return Classified::Drop("kind frame is not UTF-8");
    };
    let error = |e: Error| Classified::Immediate {
        ident: ident.clone(),
        rid: rid.clone(),
        body: encode_reply(&Err(e)),
    };
    if body.len() > MAX_BODY_BYTES {
        if kind_str == kind::NOTIFY {
            return Classified::Drop("oversized one-way message");
        }
        return error(Error::TooLarge(format!("body of {} bytes", body.len())));
    }
    match kind_str {
        kind::PING => Classified::Immediate {
            ident,
            rid,
            body: encode_reply(&Ok(serde_json::json!({}))),
        },
        kind::NOTIFY => Classified::Deliver {
            ident,
            rid: None,
            req: (kind_str.to_owned(), body),
        },
        kind::REQUEST | kind::RESOURCE | kind::ANNOUNCE => Classified::Deliver {
            ident,
            rid: Some(rid),
            req: (kind_str.to_owned(), body),
        },
        kind::REPLY => Classified::Drop("unsolicited reply"),
        other => {
            tracing::warn!(kind = other, "router: unknown message type");
            error(Error::BadRequest(format!("unknown message type {other:?}")))
        }
    }
}

async fn send_reply(
    router: &mut zeromq::RouterSocket,
    ident: Bytes,
    rid: Bytes,
    body: Bytes,
    key: Option<&ClusterKey>,
) {
    let auth = key.map(|k| k.sign(&[&rid, kind::REPLY.as_bytes(), &body]));
    let mut msg = ZmqMessage::from(ident);
    msg.push_back(rid);
    msg.push_back(Bytes::from_static(kind::REPLY.as_bytes()));
    msg.push_back(body);
    if let Some(a) = auth {
        msg.push_back(a);
    }
    match tokio::time::timeout(REPLY_SEND_TIMEOUT, router.send(msg)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "router: reply not delivered (peer left)"),
        Err(_) => tracing::warn!("router: peer does not read its replies; reply dropped"),
    }
}

async fn publisher_task(
    mut publisher: zeromq::PubSocket,
    mut monitor: futures::channel::mpsc::Receiver<zeromq::SocketEvent>,
    subscribed: Arc<AtomicBool>,
    mut rx: mpsc::Receiver<(Arc<str>, Bytes)>,
    key: Key,
) {
    let mut watching = true;
    loop {
        let (topic, payload) = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
            ev = monitor.next(), if watching => {
                match ev {
                    Some(zeromq::SocketEvent::Accepted(..)) => {
                        subscribed.store(true, Ordering::Release);
                    }
                    Some(_) => {}
                    None => watching = false,
                }
                continue;
            }
        };
        let auth = key.as_ref().map(|k| k.sign(&[topic.as_bytes(), &payload]));
        let mut msg = ZmqMessage::from(Bytes::copy_from_slice(topic.as_bytes()));
        msg.push_back(payload);
        if let Some(a) = auth {
            msg.push_back(a);
        }
        // PUB never blocks: a subscriber whose queue is full misses the event (ZMTP rule).
        if let Err(e) = publisher.send(msg).await {
            tracing::warn!(error = %e, "publisher: send failed");
        }
    }
}

fn zmq_prefix(p: &str) -> &str {
    if p == "*" {
        ""
    } else {
        p
    }
}

async fn subscriber_task(
    node_id: String,
    endpoint: String,
    mut prefixes: watch::Receiver<Vec<String>>,
    inbox: mpsc::Sender<Incoming>,
    key: Key,
) {
    let mut sock = zeromq::SubSocket::new();
    let mut current: BTreeSet<String> = prefixes
        .borrow_and_update()
        .iter()
        .map(|p| zmq_prefix(p).to_owned())
        .collect();
    for p in &current {
        // Before connect this only records the subscription; it is sent in the handshake.
        let _ = sock.subscribe(p).await;
    }
    // A peer that just announced itself may still be starting: retry until it answers or the
    // peer is forgotten (which aborts this task).
    let mut delay = Duration::from_millis(50);
    loop {
        match AssertUnwindSafe(sock.connect(&endpoint))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => break,
            Ok(Err(e)) => tracing::debug!(%node_id, error = %e, "sub: connect failed, retrying"),
            Err(_) => tracing::warn!(%node_id, "sub: connect panicked, retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
    loop {
        tokio::select! {
            changed = prefixes.changed() => {
                if changed.is_err() {
                    return; // medium dropped
                }
                let wanted: BTreeSet<String> =
                    prefixes.borrow_and_update().iter().map(|p| zmq_prefix(p).to_owned()).collect();
                for p in wanted.difference(&current) {
                    let _ = sock.subscribe(p).await;
                }
                for p in current.difference(&wanted) {
                    let _ = sock.unsubscribe(p).await;
                }
                current = wanted;
            }
            msg = guarded_recv(&mut sock) => {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(%node_id, error = %e, "sub: receive failed; waiting for rediscovery");
                        return;
                    }
                };
                let mut frames = msg.into_vec();
                if let Some(k) = &key {
                    let auth = if frames.len() == 3 { frames.pop() } else { None };
                    let ok = auth.is_some_and(|a| match k.verify(&[&frames[0], &frames[1]], &a) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(%node_id, error = %e, "sub: dropped an event");
                            false
                        }
                    });
                    if !ok {
                        continue;
                    }
                }
                let Ok([topic, payload]) = <[Bytes; 2]>::try_from(frames) else {
                    tracing::warn!(%node_id, "sub: dropped event without exactly 2 frames");
                    continue;
                };
                let Ok(topic) = std::str::from_utf8(&topic) else {
                    tracing::warn!(%node_id, "sub: dropped event with a non-UTF-8 topic");
                    continue;
                };
                if payload.len() > MAX_BODY_BYTES {
                    tracing::warn!(%node_id, "sub: dropped oversized event");
                    continue;
                }
                let ev = Event { topic: Arc::from(topic), payload };
                if inbox.send(Incoming::Event(ev)).await.is_err() {
                    return;
                }
            }
        }
    }
}

enum DealerCmd {
    Request {
        kind: String,
        body: Bytes,
        reply: Option<oneshot::Sender<Result<Bytes>>>,
    },
}

/// A connection to one peer's ROUTER, shared by every request to that peer. Requests are
/// matched to replies by request id; the task owning the socket ends when the client is dropped
/// or the connection breaks (then pending requests fail with `PeerGone`).
#[derive(Debug)]
pub(crate) struct DealerClient {
    endpoint: String,
    tx: mpsc::Sender<DealerCmd>,
    /// Owns the DEALER task.
    _task: TaskGuard,
}

impl DealerClient {
    /// Starts connecting to `endpoint` in the background.
    pub(crate) fn spawn(endpoint: String, connect_timeout: Duration, key: Key) -> DealerClient {
        let (tx, rx) = mpsc::channel(DEALER_QUEUE);
        let task = TaskGuard::spawn(dealer_task(endpoint.clone(), connect_timeout, rx, key));
        DealerClient {
            endpoint,
            tx,
            _task: task,
        }
    }

    /// False once the connection failed or broke.
    pub(crate) fn is_alive(&self) -> bool {
        !self.tx.is_closed() && !self._task.is_finished()
    }

    /// Sends a request and waits for its reply body, at most `timeout`.
    pub(crate) async fn request(
        &self,
        kind: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        let (tx, rx) = oneshot::channel();
        let cmd = DealerCmd::Request {
            kind: kind.to_owned(),
            body,
            reply: Some(tx),
        };
        let exchange = async {
            self.tx
                .send(cmd)
                .await
                .map_err(|_| Error::PeerGone(self.endpoint.clone()))?;
            rx.await
                .map_err(|_| Error::PeerGone(self.endpoint.clone()))?
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    /// Sends a one-way message.
    pub(crate) async fn notify(&self, kind: &str, body: Bytes) -> Result<()> {
        let cmd = DealerCmd::Request {
            kind: kind.to_owned(),
            body,
            reply: None,
        };
        self.tx
            .send(cmd)
            .await
            .map_err(|_| Error::PeerGone(self.endpoint.clone()))
    }
}

async fn dealer_task(
    endpoint: String,
    connect_timeout: Duration,
    mut rx: mpsc::Receiver<DealerCmd>,
    key: Key,
) {
    let mut sock = zeromq::DealerSocket::new();
    let connected = tokio::time::timeout(
        connect_timeout,
        AssertUnwindSafe(sock.connect(&endpoint)).catch_unwind(),
    )
    .await;
    if !matches!(connected, Ok(Ok(Ok(())))) {
        tracing::debug!(%endpoint, "dealer: could not connect");
        return; // queued requests fail with PeerGone when `rx` drops
    }
    let mut next_id: u64 = 0;
    let mut pending: HashMap<u64, oneshot::Sender<Result<Bytes>>> = HashMap::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(DealerCmd::Request { kind, body, reply }) = cmd else { return };
                next_id = next_id.wrapping_add(1);
                let rid = Bytes::copy_from_slice(&next_id.to_be_bytes());
                let auth = key.as_ref().map(|k| k.sign(&[&rid, kind.as_bytes(), &body]));
                let mut msg = ZmqMessage::from(rid);
                msg.push_back(Bytes::from(kind.into_bytes()));
                msg.push_back(body);
                if let Some(a) = auth {
                    msg.push_back(a);
                }
                if let Err(e) = sock.send(msg).await {
                    tracing::debug!(%endpoint, error = %e, "dealer: send failed; connection closed");
                    if let Some(r) = reply {
                        let _ = r.send(Err(Error::PeerGone(endpoint.clone())));
                    }
                    return;
                }
                if let Some(r) = reply {
                    if pending.len() >= 4 * DEALER_QUEUE {
                        // Callers that timed out dropped their receivers; forget them.
                        pending.retain(|_, s| !s.is_closed());
                    }
                    pending.insert(next_id, r);
                }
            }
            msg = guarded_recv(&mut sock) => {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(%endpoint, error = %e, "dealer: connection broke");
                        return;
                    }
                };
                let mut frames = msg.into_vec();
                if let Some(k) = &key {
                    let auth = if frames.len() == 4 { frames.pop() } else { None };
                    if auth.is_none_or(|a| k.verify(&[&frames[0], &frames[1], &frames[2]], &a).is_err()) {
                        tracing::warn!(%endpoint, "dealer: dropped an unauthenticated reply");
                        continue;
                    }
                }
                let Ok([rid, kind_frame, body]) = <[Bytes; 3]>::try_from(frames) else {
                    tracing::warn!(%endpoint, "dealer: dropped a reply without 3 frames");
                    continue;
                };
                let id = <[u8; 8]>::try_from(&rid[..]).map(u64::from_be_bytes);
                match (id, &kind_frame[..]) {
                    (Ok(id), b"reply") => {
                        if let Some(r) = pending.remove(&id) {
                            let _ = r.send(Ok(body));
                        }
                    }
                    _ => tracing::warn!(%endpoint, "dealer: dropped a malformed reply"),
                }
            }
        }
    }
}
