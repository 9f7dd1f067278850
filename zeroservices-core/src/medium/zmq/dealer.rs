//! One DEALER per peer, shared by every request to it, with the connection's state read from a
//! libzmq socket monitor so that a dead peer fails requests at once instead of at their timeout.
//!
//! States: `Connecting` until the first ZMTP handshake completes (requests wait for it, at most
//! the connect timeout), `Up`, and `Down` after a refused, reset or failed connection (requests
//! fail with `PeerGone` at once; libzmq keeps reconnecting, and a new handshake makes it `Up`).
//! With `ZMQ_IMMEDIATE`, libzmq never queues a request for a connection that is not up.
//!
//! A caller queues its request (under a short lock) and wakes the connection's task when the
//! queue was empty; the task sends everything queued in one go, so under load one wake-up
//! carries many requests. The task also reads replies and monitor events. A send may consume
//! the socket's `ZMQ_FD` signal of a reply that just arrived, so the task reads what is
//! waiting right after sending (see `socket.rs` for the rule).

use parking_lot::{Mutex, MutexGuard};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::socket::{self, context, harden, AsyncSocket};
use crate::error::{Error, Result};
use crate::medium::envelope::{self, Key};
use crate::task::TaskGuard;

/// Requests waiting to be sent, or for their reply, at most (per peer).
const DEALER_QUEUE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Up,
    Down,
}

type ReplyTx = oneshot::Sender<Result<Bytes>>;

/// A request not sent yet.
struct Waiting {
    kind: Bytes,
    body: Bytes,
    reply: Option<ReplyTx>,
}

/// A connection to one peer's ROUTER. Requests are matched to replies by request id; the task
/// reading the socket ends when the client is dropped.
#[derive(Debug)]
pub(crate) struct DealerClient {
    endpoint: String,
    /// The connection and the task reading it; `None` when it could not even be opened.
    conn: Option<(Arc<Shared>, TaskGuard)>,
}

#[derive(Debug)]
struct Shared {
    // A blocking (parking_lot) Mutex: held for non-blocking libzmq calls and map updates only, never across an
    // await; a libzmq socket is not thread-safe, and this lock is what serialises its use.
    inner: Mutex<Conn>,
    /// Wakes the connection's task to send what callers queued.
    queued: tokio::sync::Notify,
}

/// The socket and what belongs with it.
struct Conn {
    sock: zmq::Socket,
    endpoint: String,
    key: Key,
    /// The peer's node id, when known.
    to: Option<String>,
    state: State,
    next_id: u64,
    /// Requests sent, waiting for their reply.
    pending: HashMap<u64, ReplyTx>,
    /// Requests not sent yet: queued by callers, sent by the connection's task.
    waiting: VecDeque<Waiting>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("endpoint", &self.endpoint)
            .field("state", &self.state)
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Conn> {
        // Plain maps and a socket: usable even if a holder panicked.
        self.inner.lock()
    }

    /// Stops the socket's monitor; see [`socket::stop_monitor`] for why this comes first.
    fn stop_monitor(&self) {
        socket::stop_monitor(&mut self.lock().sock);
    }

    /// The reading task is ending on an error: the connection is down for good.
    fn give_up(&self) {
        self.stop_monitor();
        let mut conn = self.lock();
        conn.state = State::Down;
        conn.fail_all();
    }
}

impl Drop for DealerClient {
    fn drop(&mut self) {
        // Before the task (which holds the monitor's reading end) is aborted.
        if let Some((shared, _)) = &self.conn {
            shared.stop_monitor();
        }
    }
}

impl DealerClient {
    /// Starts connecting to `endpoint` in the background.
    /// `to`: the node at `endpoint`, named in keyed requests (see `envelope::seal_request`).
    pub(crate) fn spawn(
        endpoint: String,
        connect_timeout: Duration,
        key: Key,
        to: Option<String>,
    ) -> DealerClient {
        match open(&endpoint) {
            Ok((sock, monitor)) => {
                let conn = Arc::new(Shared {
                    inner: Mutex::new(Conn {
                        sock,
                        endpoint: endpoint.clone(),
                        key,
                        to,
                        state: State::Connecting,
                        // Request ids start anywhere: a reply captured on its way to another
                        // connection matches no request of this one.
                        next_id: rand::random(),
                        pending: HashMap::new(),
                        waiting: VecDeque::new(),
                    }),
                    queued: tokio::sync::Notify::new(),
                });
                let task = TaskGuard::spawn(run(conn.clone(), monitor, connect_timeout));
                DealerClient {
                    endpoint,
                    conn: Some((conn, task)),
                }
            }
            Err(e) => {
                tracing::debug!(%endpoint, error = %e, "dealer: cannot connect");
                DealerClient {
                    endpoint,
                    conn: None,
                }
            }
        }
    }

    /// False once the connection was refused, broke or could not be made.
    pub(crate) fn is_alive(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|(c, task)| !task.is_finished() && c.lock().state != State::Down)
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
        let (tx, rx) = oneshot::channel();
        self.submit(kind, body, Some(tx))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(self.gone()),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// Sends a one-way message.
    pub(crate) async fn notify(&self, kind: &str, body: Bytes) -> Result<()> {
        envelope::check_size(&body)?;
        self.submit(kind, body, None)
    }

    fn submit(&self, kind: &str, body: Bytes, reply: Option<ReplyTx>) -> Result<()> {
        let Some((shared, task)) = &self.conn else {
            return Err(self.gone());
        };
        if task.is_finished() {
            return Err(self.gone());
        }
        let kind = Bytes::copy_from_slice(kind.as_bytes());
        let mut conn = shared.lock();
        match conn.state {
            State::Down => Err(self.gone()),
            State::Connecting | State::Up if conn.waiting.len() < DEALER_QUEUE => {
                let first = conn.waiting.is_empty();
                conn.waiting.push_back(Waiting { kind, body, reply });
                if first && conn.state == State::Up {
                    drop(conn);
                    shared.queued.notify_one();
                }
                Ok(())
            }
            State::Connecting => Err(Error::Unavailable(format!(
                "{}: too many requests waiting for the connection",
                self.endpoint
            ))),
            State::Up => Err(Error::Unavailable(format!(
                "{}: too many requests waiting to be sent",
                self.endpoint
            ))),
        }
    }
}

/// Monitor events the task acts on (zmq.h numbers, read from the monitor's first frame).
mod event {
    pub(super) const CONNECT_RETRIED: u16 = 0x0004;
    pub(super) const DISCONNECTED: u16 = 0x0200;
    pub(super) const HANDSHAKE_FAILED_NO_DETAIL: u16 = 0x0800;
    pub(super) const HANDSHAKE_SUCCEEDED: u16 = 0x1000;
    pub(super) const HANDSHAKE_FAILED_PROTOCOL: u16 = 0x2000;
    pub(super) const HANDSHAKE_FAILED_AUTH: u16 = 0x4000;
    pub(super) const WATCHED: i32 = (HANDSHAKE_SUCCEEDED
        | CONNECT_RETRIED
        | DISCONNECTED
        | HANDSHAKE_FAILED_NO_DETAIL
        | HANDSHAKE_FAILED_PROTOCOL
        | HANDSHAKE_FAILED_AUTH) as i32;
}

/// The DEALER and the PAIR socket that receives its monitor events.
fn open(endpoint: &str) -> Result<(zmq::Socket, AsyncSocket)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    super::check_endpoint(endpoint)?;
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
    dealer.monitor(&monitor_ep, event::WATCHED)?;
    let mut dealer = dealer;
    let opened = (|| {
        let monitor = ctx.socket(zmq::PAIR)?;
        monitor.connect(&monitor_ep)?;
        dealer.connect(endpoint)?;
        AsyncSocket::new(monitor)
    })();
    match opened {
        Ok(monitor) => Ok((dealer, monitor)),
        Err(e) => {
            socket::stop_monitor(&mut dealer); // before the monitor's reader goes
            Err(e)
        }
    }
}

impl Conn {
    fn gone(&self) -> Error {
        Error::PeerGone(self.endpoint.clone())
    }

    fn fail_all(&mut self) {
        for (_, r) in self.pending.drain() {
            let _ = r.send(Err(Error::PeerGone(self.endpoint.clone()))); // caller may be gone
        }
        for w in self.waiting.drain(..) {
            if let Some(r) = w.reply {
                let _ = r.send(Err(Error::PeerGone(self.endpoint.clone())));
            }
        }
    }

    /// Sends a request; on failure `reply` is dropped (its caller hears PeerGone).
    fn send(&mut self, kind: Bytes, body: Bytes, reply: Option<ReplyTx>) -> Result<()> {
        self.next_id = self.next_id.wrapping_add(1);
        let rid = Bytes::copy_from_slice(&self.next_id.to_be_bytes());
        let frames =
            envelope::seal_request(self.key.as_deref(), self.to.as_deref(), rid, kind, body);
        match socket::try_send(&self.sock, &frames)? {
            true => {}
            // No connection up (it just broke) or the peer's queue is full.
            false => return Err(self.gone()),
        }
        if let Some(r) = reply {
            if self.pending.len() >= DEALER_QUEUE {
                // Callers that timed out dropped their receivers; forget them.
                self.pending.retain(|_, s| !s.is_closed());
            }
            self.pending.insert(self.next_id, r);
        }
        Ok(())
    }

    /// Matches every reply waiting on the socket to its caller.
    fn read_replies(&mut self) {
        loop {
            match socket::try_recv(&self.sock) {
                Ok(Some(frames)) => self.on_reply(frames),
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(endpoint = %self.endpoint, error = %e, "dealer: receive failed");
                    return;
                }
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

    /// Sends every queued request, then reads the replies waiting (a send may have taken the
    /// signal of a reply that just arrived).
    fn flush(&mut self) {
        while let Some(w) = self.waiting.pop_front() {
            // On failure the reply sender is dropped: that caller gets PeerGone.
            if let Err(e) = self.send(w.kind, w.body, w.reply) {
                tracing::debug!(endpoint = %self.endpoint, error = %e, "dealer: queued request not sent");
            }
        }
        self.read_replies();
    }

    /// Applies one monitor event.
    fn on_monitor(&mut self, frames: &[Bytes]) {
        let Some(head) = frames.first().filter(|f| f.len() >= 2) else {
            return;
        };
        let ev = u16::from_ne_bytes([head[0], head[1]]);
        if ev == event::HANDSHAKE_SUCCEEDED {
            self.state = State::Up;
            self.flush();
            return;
        }
        tracing::debug!(endpoint = %self.endpoint, event = ev, "dealer: connection down");
        self.state = State::Down;
        self.fail_all();
    }
}

/// The reading end of a dealer's monitor. Dropped (the client dropped, or the runtime shutting
/// down and dropping the task before the client), it stops the monitor before it closes: see
/// [`socket::stop_monitor`] for the hang that order avoids.
struct MonitorReader {
    shared: Arc<Shared>,
    sock: AsyncSocket,
}

impl Drop for MonitorReader {
    fn drop(&mut self) {
        self.shared.stop_monitor();
    }
}

/// Reads replies and monitor events until the client is dropped.
async fn run(shared: Arc<Shared>, monitor: AsyncSocket, connect_timeout: Duration) {
    let mut monitor = MonitorReader {
        shared: shared.clone(),
        sock: monitor,
    };
    // Declared after `shared`: dropped first, so the registration ends before the socket.
    // SAFETY: `shared` (which owns the socket) outlives `signal`, see above.
    let signal = match unsafe { socket::register(&shared.lock().sock) } {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "dealer: cannot watch the socket");
            shared.give_up();
            return;
        }
    };
    let first_deadline = tokio::time::sleep(connect_timeout);
    tokio::pin!(first_deadline);
    let mut connecting = true;
    loop {
        tokio::select! {
            ready = socket::wait(&signal) => {
                if let Err(e) = ready {
                    tracing::warn!(error = %e, "dealer: wait failed");
                    shared.give_up();
                    return;
                }
                shared.lock().read_replies();
            }
            _ = shared.queued.notified() => {
                let mut conn = shared.lock();
                if conn.state == State::Up {
                    conn.flush();
                }
            }
            ev = monitor.sock.recv() => match ev {
                Ok(frames) => {
                    let mut conn = shared.lock();
                    conn.on_monitor(&frames);
                    connecting &= conn.state == State::Connecting;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dealer: monitor failed");
                    shared.give_up();
                    return;
                }
            },
            _ = &mut first_deadline, if connecting => {
                connecting = false;
                let mut conn = shared.lock();
                if conn.state == State::Connecting {
                    tracing::debug!(endpoint = %conn.endpoint, "dealer: no handshake within the connect timeout");
                    conn.state = State::Down;
                    conn.fail_all();
                }
            }
        }
    }
}
