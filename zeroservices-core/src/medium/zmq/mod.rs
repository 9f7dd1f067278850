//! The ZeroMQ medium on libzmq (the `zmq` crate, libzmq built from source): one ROUTER taking
//! requests, one pooled DEALER per peer for outgoing requests, one XPUB for events and one SUB
//! per peer, connected to that peer only.
//!
//! libzmq parses the wire: frames over the body limit close the connection before they are
//! read (`ZMQ_MAXMSGSIZE`), greetings have a deadline (`ZMQ_HANDSHAKE_IVL`), dead connections
//! are found by ZMTP heartbeats, every queue has a high-water mark, and connections are
//! re-established by libzmq itself. Each socket is owned by one tokio task that waits on the
//! socket's `ZMQ_FD` ([`socket`]); the medium talks to those tasks over bounded channels.
//!
//! | file | owns |
//! |---|---|
//! | `socket.rs` | the tokio bridge and the options every socket gets |
//! | `router.rs` | the ROUTER task: requests in, replies out |
//! | `dealer.rs` | [`DealerClient`]: one peer's DEALER, its connection state, fail-fast |
//! | `pubsub.rs` | the XPUB task and the per-peer SUB tasks |

mod dealer;
mod pubsub;
mod router;
mod socket;
mod zap;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};

pub(crate) use self::dealer::DealerClient;
use super::envelope::Key;
use super::{Inbox, Medium, MessageKind, INBOX_CAPACITY};
use crate::error::{Error, Result};
use crate::protocol::Endpoints;
use crate::task::TaskGuard;

/// Events queued for the XPUB socket before `publish` waits.
const PUB_QUEUE: usize = 16_384;

/// Where and how a [`ZmqMedium`] binds.
#[derive(Debug, Clone)]
pub struct ZmqConfig {
    /// Address the ROUTER and PUB sockets bind to. `None` (the default): loopback without a
    /// cluster key, as protected mode wants (no other host can call or subscribe), and every
    /// interface with one (see [`ZmqConfig::bind_address`]).
    pub bind: Option<IpAddr>,
    /// ROUTER port; 0 picks a free one (default).
    pub router_port: u16,
    /// PUB port; 0 picks a free one (default).
    pub pub_port: u16,
    /// Host put in announced endpoints. `None`: the bind address, where peers substitute the
    /// address they heard the announcement from when it is `0.0.0.0` (docs/protocol.md).
    pub advertise: Option<String>,
    /// Longest wait for a first connection to a peer.
    pub connect_timeout: Duration,
    /// Authenticate every frame with this shared key (see [`crate::ClusterKey`]); `None`:
    /// open cluster.
    pub cluster_key: Key,
    /// The node this medium serves. With a cluster key, a request naming another node is
    /// dropped (a captured request cannot be replayed to another provider); `None` takes
    /// keyed requests for any node. [`crate::NodeBuilder`] sets it.
    pub node_id: Option<String>,
}

impl Default for ZmqConfig {
    fn default() -> Self {
        ZmqConfig {
            bind: None,
            router_port: 0,
            pub_port: 0,
            advertise: None,
            connect_timeout: Duration::from_secs(2),
            cluster_key: None,
            node_id: None,
        }
    }
}

impl ZmqConfig {
    /// Where the sockets bind: [`ZmqConfig::bind`], or by default 127.0.0.1 without a
    /// cluster key and 0.0.0.0 with one.
    ///
    /// ```
    /// use zeroservices_core::{ClusterKey, medium::ZmqConfig};
    /// assert!(ZmqConfig::default().bind_address().is_loopback());
    /// let keyed = ZmqConfig { cluster_key: Some(ClusterKey::new(b"a-secret-of-16-bytes")), ..ZmqConfig::default() };
    /// assert!(keyed.bind_address().is_unspecified());
    /// ```
    pub fn bind_address(&self) -> IpAddr {
        self.bind.unwrap_or(match self.cluster_key {
            Some(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        })
    }

    /// Binds on 127.0.0.1 with random ports: for tests and single-host use.
    pub fn loopback() -> ZmqConfig {
        ZmqConfig {
            bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ..ZmqConfig::default()
        }
    }
}

/// Refuses endpoints libzmq cannot take (an interior NUL would abort inside the binding).
pub(super) fn check_endpoint(ep: &str) -> Result<()> {
    if ep.starts_with("tcp://") && !ep.contains('\0') && ep.len() <= 256 {
        Ok(())
    } else {
        Err(Error::Transport(format!("not a tcp:// endpoint: {ep:?}")))
    }
}

/// The ZeroMQ medium. Dropping it closes every socket and stops every task it started.
#[derive(Debug)]
pub struct ZmqMedium {
    endpoints: Endpoints,
    cfg: ZmqConfig,
    pub_tx: mpsc::Sender<pubsub::PubMsg>,
    /// Set once a subscription reached the XPUB; until then publishing has no one to reach
    /// and skips the publisher task entirely.
    subscribed: Arc<AtomicBool>,
    prefixes: watch::Sender<Vec<String>>,
    /// Where peer subscribers forward events.
    inbox_tx: mpsc::Sender<super::Incoming>,
    // A blocking (parking_lot) Mutex: map lookups and inserts only; never held across an await.
    peers: Mutex<HashMap<String, PeerConn>>,
    /// Connections to endpoints asked directly (static discovery's seeds), by endpoint.
    // A blocking (parking_lot) Mutex: map lookups and inserts only; never held across an await.
    endpoints_asked: Mutex<HashMap<String, Arc<DealerClient>>>,
    /// Own the ROUTER and XPUB tasks; they end when the medium is dropped.
    _tasks: [TaskGuard; 2],
}

#[derive(Debug)]
struct PeerConn {
    /// Owns the peer's DEALER task.
    dealer: Arc<DealerClient>,
    /// Owns the task of the SUB socket connected to this peer only.
    _sub: TaskGuard,
}

fn tcp_port(ep: &str) -> Result<u16> {
    ep.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Error::Transport(format!("unexpected endpoint {ep}")))
}

impl ZmqMedium {
    /// Binds the ROUTER and XPUB sockets and starts their tasks (each peer gets a SUB task when
    /// it is connected).
    pub async fn bind(cfg: ZmqConfig) -> Result<(ZmqMedium, Inbox)> {
        let host = match cfg.bind_address() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        let (router, rep) = router::bind(&format!("tcp://{host}:{}", cfg.router_port))?;
        let pub_ctx = zmq::Context::new();
        // The ZAP handler first: no subscriber may connect before it can be checked.
        let zap = match &cfg.cluster_key {
            Some(k) => Some(zap::ZapHandler::start(&pub_ctx, k.clone())?),
            None => None,
        };
        let (xpub, pep) = pubsub::bind(
            &pub_ctx,
            &format!("tcp://{host}:{}", cfg.pub_port),
            zap.is_some(),
        )?;
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
        let tasks = [
            TaskGuard::spawn(router::run(
                router,
                inbox_tx.clone(),
                key.clone(),
                cfg.node_id.clone(),
            )),
            TaskGuard::spawn(pubsub::publisher(
                pub_ctx,
                zap,
                pep.clone(),
                xpub,
                pub_rx,
                subscribed.clone(),
                key.clone(),
            )),
        ];
        let medium = ZmqMedium {
            endpoints,
            cfg,
            pub_tx,
            subscribed,
            prefixes,
            inbox_tx,
            peers: Mutex::new(HashMap::new()),
            endpoints_asked: Mutex::new(HashMap::new()),
            _tasks: tasks,
        };
        Ok((medium, inbox_rx))
    }

    /// A connection to `endpoint`, the node `to` (`None`: known by its address only).
    fn dealer(&self, endpoint: &str, to: Option<&str>) -> Arc<DealerClient> {
        Arc::new(DealerClient::spawn(
            endpoint.to_owned(),
            self.cfg.connect_timeout,
            self.cfg.cluster_key.clone(),
            to.map(str::to_owned),
        ))
    }

    fn dealer_for(&self, node_id: &str) -> Result<Arc<DealerClient>> {
        let peers = self.peers.lock();
        let conn = peers
            .get(node_id)
            .ok_or_else(|| Error::PeerGone(node_id.to_owned()))?;
        Ok(conn.dealer.clone())
    }
}

#[async_trait]
impl Medium for ZmqMedium {
    fn endpoints(&self) -> Endpoints {
        self.endpoints.clone()
    }

    async fn connect_peer(&self, node_id: &str, endpoints: &Endpoints) -> Result<()> {
        check_endpoint(&endpoints.request)?;
        check_endpoint(&endpoints.publish)?;
        // Dialled at once, so the first request finds the connection up.
        let conn = PeerConn {
            dealer: self.dealer(&endpoints.request, Some(node_id)),
            _sub: TaskGuard::spawn(pubsub::peer_subscriber(
                self.cfg.bind_address().is_ipv6(),
                node_id.to_owned(),
                endpoints.publish.clone(),
                self.prefixes.subscribe(),
                self.inbox_tx.clone(),
                self.cfg.cluster_key.clone(),
            )),
        };
        // A connection replaced (a restart at new endpoints) closes with the old value.
        let old = self.peers.lock().insert(node_id.to_owned(), conn);
        drop(old);
        Ok(())
    }

    async fn disconnect_peer(&self, node_id: &str) {
        let gone = self.peers.lock().remove(node_id);
        drop(gone);
    }

    async fn request(
        &self,
        node_id: &str,
        kind: MessageKind,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        let kind = kind.as_str();
        let dealer = self.dealer_for(node_id)?;
        dealer
            .request(kind, body, timeout)
            .await
            .map_err(|e| match e {
                Error::PeerGone(_) => Error::PeerGone(node_id.to_owned()),
                e => e,
            })
    }

    async fn request_endpoint(
        &self,
        endpoint: &str,
        kind: MessageKind,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        let kind = kind.as_str();
        let dealer = {
            let mut asked = self.endpoints_asked.lock();
            match asked.get(endpoint) {
                Some(d) if d.is_alive() => d.clone(),
                _ => {
                    let d = self.dealer(endpoint, None);
                    asked.insert(endpoint.to_owned(), d.clone());
                    d
                }
            }
        };
        dealer.request(kind, body, timeout).await
    }

    fn forget_endpoints(&self, keep: &[String]) {
        self.endpoints_asked
            .lock()
            .retain(|ep, _| keep.contains(ep));
    }

    async fn notify(&self, node_id: &str, kind: MessageKind, body: Bytes) -> Result<()> {
        let kind = kind.as_str();
        self.dealer_for(node_id)?.notify(kind, body).await
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<()> {
        super::envelope::check_size(&payload)?;
        if !self.subscribed.load(Ordering::Acquire) {
            return Ok(()); // nobody has subscribed: XPUB would drop it
        }
        self.pub_tx
            .send(pubsub::PubMsg::Event(Arc::from(topic), payload))
            .await
            .map_err(|_| Error::Shutdown)
    }

    async fn flush(&self, limit: Duration) {
        if !self.subscribed.load(Ordering::Acquire) {
            return; // nothing was ever queued
        }
        let (done, finished) = tokio::sync::oneshot::channel();
        let flush = async {
            let asked = self.pub_tx.send(pubsub::PubMsg::Flush {
                linger: limit,
                done,
            });
            if asked.await.is_ok() {
                let _ = finished.await;
            }
        };
        // The queue ahead of the flush is sent too; a subscriber that is stuck costs one
        // STALL, and one that reads slowly more, so bound the whole wait as well.
        if tokio::time::timeout(limit + Duration::from_secs(1), flush)
            .await
            .is_err()
        {
            tracing::warn!("events still queued at shutdown were dropped");
        }
    }

    fn set_subscriptions(&self, prefixes: Vec<String>) {
        self.prefixes.send_replace(prefixes);
    }
}
