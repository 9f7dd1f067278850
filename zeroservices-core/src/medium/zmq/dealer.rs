//! One DEALER per peer, shared by every request to it, with the connection's state read from a
//! libzmq socket monitor so that a dead peer fails requests at once instead of at their timeout.
//!
//! States: `Connecting` until the first ZMTP handshake completes (requests wait for it, at most
//! the connect timeout), `Up`, and `Down` after a refused, reset or failed connection (requests
//! fail with `PeerGone` at once; libzmq keeps reconnecting, and a new handshake makes it `Up`).
//! With `ZMQ_IMMEDIATE`, libzmq never queues a request for a connection that is not up.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::socket::{context, harden, AsyncSocket};
use crate::error::{Error, Result};
use crate::medium::envelope::{self, Key};
use crate::task::TaskGuard;

/// Requests queued for the DEALER task before `request` waits.
const DEALER_QUEUE: usize = 4096;

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

struct Cmd {
    kind: Bytes,
    body: Bytes,
    reply: Option<oneshot::Sender<Result<Bytes>>>,
}

/// A connection to one peer's ROUTER. Requests are matched to replies by request id; the task
/// owning the socket ends when the client is dropped.
#[derive(Debug)]
pub(crate) struct DealerClient {
    endpoint: String,
    tx: mpsc::Sender<Cmd>,
    state: Arc<AtomicU8>,
    /// Owns the DEALER task.
    task: TaskGuard,
}

impl DealerClient {
    /// Starts connecting to `endpoint` in the background.
    pub(crate) fn spawn(endpoint: String, connect_timeout: Duration, key: Key) -> DealerClient {
        let (tx, rx) = mpsc::channel(DEALER_QUEUE);
        let state = Arc::new(AtomicU8::new(CONNECTING));
        let task = TaskGuard::spawn(run(
            endpoint.clone(),
            connect_timeout,
            rx,
            state.clone(),
            key,
        ));
        DealerClient {
            endpoint,
            tx,
            state,
            task,
        }
    }

    /// False once the connection was refused, broke or could not be made.
    pub(crate) fn is_alive(&self) -> bool {
        self.state.load(Ordering::Acquire) != DOWN && !self.task.is_finished()
    }

    fn gone(&self) -> Error {
        Error::PeerGone(self.endpoint.clone())
    }

    /// Sends a request and waits for its reply body, at most `timeout`.
    pub(crate) async fn request(
        &self,
        kind: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        envelope::check_size(&body)?;
        if !self.is_alive() {
            return Err(self.gone());
        }
        let (tx, rx) = oneshot::channel();
        let cmd = Cmd {
            kind: Bytes::copy_from_slice(kind.as_bytes()),
            body,
            reply: Some(tx),
        };
        let exchange = async {
            self.tx.send(cmd).await.map_err(|_| self.gone())?;
            rx.await.map_err(|_| self.gone())?
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    /// Sends a one-way message.
    pub(crate) async fn notify(&self, kind: &str, body: Bytes) -> Result<()> {
        envelope::check_size(&body)?;
        if !self.is_alive() {
            return Err(self.gone());
        }
        let cmd = Cmd {
            kind: Bytes::copy_from_slice(kind.as_bytes()),
            body,
            reply: None,
        };
        self.tx.send(cmd).await.map_err(|_| self.gone())
    }
}

/// Monitor events the task acts on.
const WATCHED: i32 = (zmq_sys_events::HANDSHAKE_SUCCEEDED
    | zmq_sys_events::CONNECT_RETRIED
    | zmq_sys_events::DISCONNECTED
    | zmq_sys_events::HANDSHAKE_FAILED_NO_DETAIL
    | zmq_sys_events::HANDSHAKE_FAILED_PROTOCOL
    | zmq_sys_events::HANDSHAKE_FAILED_AUTH) as i32;

/// libzmq's monitor event numbers (zmq.h), read from the monitor's first frame.
mod zmq_sys_events {
    pub(super) const CONNECT_RETRIED: u16 = 0x0004;
    pub(super) const DISCONNECTED: u16 = 0x0200;
    pub(super) const HANDSHAKE_FAILED_NO_DETAIL: u16 = 0x0800;
    pub(super) const HANDSHAKE_SUCCEEDED: u16 = 0x1000;
    pub(super) const HANDSHAKE_FAILED_PROTOCOL: u16 = 0x2000;
    pub(super) const HANDSHAKE_FAILED_AUTH: u16 = 0x4000;
}

/// The DEALER and the PAIR socket that receives its monitor events.
fn open(endpoint: &str) -> Result<(AsyncSocket, AsyncSocket)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ctx = context();
    let dealer = ctx.socket(zmq::DEALER)?;
    harden(&dealer)?;
    // Queue nothing for a connection that is not up: a send then fails at once.
    dealer.set_immediate(true)?;
    dealer.set_ipv6(endpoint.starts_with("tcp://["))?;
    let monitor_ep = format!(
        "inproc://zs-dealer-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    dealer.monitor(&monitor_ep, WATCHED)?;
    let monitor = ctx.socket(zmq::PAIR)?;
    monitor.connect(&monitor_ep)?;
    super::check_endpoint(endpoint)?;
    dealer.connect(endpoint)?;
    Ok((AsyncSocket::new(dealer)?, AsyncSocket::new(monitor)?))
}

/// What the task owns besides its sockets.
struct Conn {
    endpoint: String,
    state: Arc<AtomicU8>,
    key: Key,
    next_id: u64,
    /// Requests sent, waiting for their reply.
    pending: HashMap<u64, oneshot::Sender<Result<Bytes>>>,
    /// Requests made before the first handshake completed.
    waiting: VecDeque<Cmd>,
}

impl Conn {
    fn set(&self, s: u8) {
        self.state.store(s, Ordering::Release);
    }

    fn fail_all(&mut self) {
        let gone = || Err(Error::PeerGone(self.endpoint.clone()));
        for (_, r) in self.pending.drain() {
            let _ = r.send(gone()); // the caller may have given up already
        }
        for c in self.waiting.drain(..) {
            if let Some(r) = c.reply {
                let _ = r.send(gone());
            }
        }
    }

    fn send(&mut self, dealer: &mut AsyncSocket, cmd: Cmd) {
        self.next_id = self.next_id.wrapping_add(1);
        let rid = Bytes::copy_from_slice(&self.next_id.to_be_bytes());
        let frames = envelope::seal_request(self.key.as_deref(), rid, cmd.kind, cmd.body);
        let outcome = match dealer.try_send(&frames) {
            Ok(true) => Ok(()),
            // No connection up (it just broke) or the peer's queue is full.
            Ok(false) => Err(Error::PeerGone(self.endpoint.clone())),
            Err(e) => Err(e),
        };
        match (outcome, cmd.reply) {
            (Ok(()), Some(r)) => {
                if self.pending.len() >= 4 * DEALER_QUEUE {
                    // Callers that timed out dropped their receivers; forget them.
                    self.pending.retain(|_, s| !s.is_closed());
                }
                self.pending.insert(self.next_id, r);
            }
            (Ok(()), None) => {}
            (Err(e), Some(r)) => {
                let _ = r.send(Err(e));
            }
            (Err(e), None) => {
                tracing::debug!(endpoint = %self.endpoint, error = %e, "dealer: one-way message not sent")
            }
        }
    }

    fn on_reply(&mut self, frames: Vec<Bytes>) {
        match envelope::open_reply(self.key.as_deref(), frames) {
            Ok((rid, body)) => {
                let id = <[u8; 8]>::try_from(&rid[..]).map(u64::from_be_bytes);
                if let Some(r) = id.ok().and_then(|id| self.pending.remove(&id)) {
                    let _ = r.send(Ok(body)); // the caller may have timed out
                }
            }
            Err(why) => tracing::debug!(endpoint = %self.endpoint, why, "dealer: dropped a reply"),
        }
    }

    /// Applies one monitor event; true when the connection just came up.
    fn on_monitor(&mut self, frames: &[Bytes]) -> bool {
        let Some(head) = frames.first().filter(|f| f.len() >= 2) else {
            return false;
        };
        let event = u16::from_ne_bytes([head[0], head[1]]);
        if event == zmq_sys_events::HANDSHAKE_SUCCEEDED {
            self.set(UP);
            return true;
        }
        tracing::debug!(endpoint = %self.endpoint, event, "dealer: connection down");
        self.set(DOWN);
        self.fail_all();
        false
    }
}

async fn run(
    endpoint: String,
    connect_timeout: Duration,
    mut rx: mpsc::Receiver<Cmd>,
    state: Arc<AtomicU8>,
    key: Key,
) {
    let (mut dealer, mut monitor) = match open(&endpoint) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%endpoint, error = %e, "dealer: cannot connect");
            state.store(DOWN, Ordering::Release);
            return; // queued requests fail with PeerGone when `rx` drops
        }
    };
    let mut conn = Conn {
        endpoint,
        state,
        key,
        next_id: 0,
        pending: HashMap::new(),
        waiting: VecDeque::new(),
    };
    let first_deadline = tokio::time::sleep(connect_timeout);
    tokio::pin!(first_deadline);
    let mut connecting = true;
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                match conn.state.load(Ordering::Acquire) {
                    CONNECTING if conn.waiting.len() < DEALER_QUEUE => conn.waiting.push_back(cmd),
                    UP => {
                        conn.send(&mut dealer, cmd);
                        // Send what else is queued without going round the loop.
                        while let Ok(cmd) = rx.try_recv() {
                            conn.send(&mut dealer, cmd);
                        }
                    }
                    _ => {
                        if let Some(r) = cmd.reply {
                            let _ = r.send(Err(Error::PeerGone(conn.endpoint.clone())));
                        }
                    }
                }
            }
            ev = monitor.recv() => match ev {
                Ok(frames) => {
                    if conn.on_monitor(&frames) {
                        connecting = false;
                        while let Some(cmd) = conn.waiting.pop_front() {
                            conn.send(&mut dealer, cmd);
                        }
                    } else if conn.state.load(Ordering::Acquire) == DOWN {
                        connecting = false;
                    }
                }
                Err(e) => {
                    tracing::warn!(endpoint = %conn.endpoint, error = %e, "dealer: monitor failed");
                    conn.set(DOWN);
                    conn.fail_all();
                    return;
                }
            },
            msg = dealer.recv() => match msg {
                Ok(frames) => {
                    conn.on_reply(frames);
                    while let Ok(Some(frames)) = dealer.try_recv() {
                        conn.on_reply(frames);
                    }
                }
                Err(e) => tracing::warn!(endpoint = %conn.endpoint, error = %e, "dealer: receive failed"),
            },
            _ = &mut first_deadline, if connecting => {
                connecting = false;
                if conn.state.load(Ordering::Acquire) == CONNECTING {
                    tracing::debug!(endpoint = %conn.endpoint, "dealer: no handshake within the connect timeout");
                    conn.set(DOWN);
                    conn.fail_all();
                }
            }
        }
    }
}
