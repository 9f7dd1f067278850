//! A libzmq socket driven by tokio: every call is non-blocking (`ZMQ_DONTWAIT`), and a task
//! waits for work through the socket's `ZMQ_FD` registered with the tokio reactor.
//!
//! `ZMQ_FD` is edge-triggered and shared by both directions: it only says "the socket's state
//! may have changed", and any libzmq call on the socket (a send included) may consume that
//! signal. So a wait is always "clear the readiness, then try the operation again": a signal
//! arriving after the clear sets readiness anew, and one consumed before it is seen by the
//! retry. Owners call [`AsyncSocket::recv`] afresh after every send (a `select!` in a loop does),
//! which starts with a non-blocking try and so never misses a message a send's call noticed.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::error::{Error, Result};

/// The process's libzmq context: one I/O thread, shared by every node of the process.
pub(super) fn context() -> &'static zmq::Context {
    static CTX: OnceLock<zmq::Context> = OnceLock::new();
    CTX.get_or_init(zmq::Context::new)
}

/// The socket's `ZMQ_FD`; libzmq owns and closes it.
pub(super) struct SignalFd(RawFd);

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A libzmq socket owned by one task. Its methods take `&mut self`: a libzmq socket is not
/// thread-safe, and exclusive access is what lets the owning task move between threads.
pub(super) struct AsyncSocket {
    // Declared before `sock`: deregistered from the reactor before libzmq closes the fd.
    signal: AsyncFd<SignalFd>,
    sock: zmq::Socket,
}

impl std::fmt::Debug for AsyncSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AsyncSocket(..)")
    }
}

impl From<zmq::Error> for Error {
    fn from(e: zmq::Error) -> Self {
        Error::Transport(e.to_string())
    }
}

/// Registers `sock`'s `ZMQ_FD` with the current tokio reactor.
///
/// # Safety
/// The returned `AsyncFd` must be dropped before `sock` is closed (the fd belongs to it).
pub(super) unsafe fn register(sock: &zmq::Socket) -> Result<AsyncFd<SignalFd>> {
    let fd = sock.get_fd()?;
    // SAFETY: `fd` is the socket's signalling fd, open for as long as the socket is, and the
    // caller drops the registration before the socket.
    unsafe { AsyncFd::register_with_interest(SignalFd(fd), Interest::READABLE) }
        .map_err(|e| Error::Io(e.into()))
}

/// One whole message from `sock`, if one is waiting (never blocks).
pub(super) fn try_recv(sock: &zmq::Socket) -> Result<Option<Vec<Bytes>>> {
    match sock.recv_multipart(zmq::DONTWAIT) {
        Ok(parts) => Ok(Some(parts.into_iter().map(Bytes::from).collect())),
        Err(zmq::Error::EAGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sends one message on `sock` without waiting; `Ok(false)` when the socket would block (its
/// high-water mark is reached, or with `ZMQ_IMMEDIATE` no connection is up).
pub(super) fn try_send(sock: &zmq::Socket, frames: &[Bytes]) -> Result<bool> {
    let Some((last, first)) = frames.split_last() else {
        return Ok(true);
    };
    for (i, f) in first.iter().enumerate() {
        match sock.send(&f[..], zmq::DONTWAIT | zmq::SNDMORE) {
            Ok(()) => {}
            // Only the first frame can find the queue full: the rest of a message always
            // follows it.
            Err(zmq::Error::EAGAIN) if i == 0 => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    match sock.send(&last[..], zmq::DONTWAIT) {
        Ok(()) => Ok(true),
        Err(zmq::Error::EAGAIN) if first.is_empty() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Waits until a socket's state may have changed (see the module docs for the rule).
pub(super) async fn wait(signal: &AsyncFd<SignalFd>) -> Result<()> {
    let mut ready = signal.readable().await?;
    ready.clear_ready();
    Ok(())
}

impl AsyncSocket {
    /// Registers `sock` with the current tokio reactor.
    pub(super) fn new(sock: zmq::Socket) -> Result<AsyncSocket> {
        // SAFETY: `signal` is declared before `sock` in the struct, so it is dropped first.
        let signal = unsafe { register(&sock)? };
        Ok(AsyncSocket { signal, sock })
    }

    /// Ends the registration with the reactor and hands back the socket (to close it
    /// somewhere that may block, such as after a linger).
    pub(super) fn into_socket(self) -> zmq::Socket {
        let AsyncSocket { signal, sock } = self;
        drop(signal);
        sock
    }

    /// The socket, for options, bind, connect and subscriptions.
    pub(super) fn get(&self) -> &zmq::Socket {
        &self.sock
    }

    /// One whole message, if one is waiting.
    pub(super) fn try_recv(&mut self) -> Result<Option<Vec<Bytes>>> {
        try_recv(&self.sock)
    }

    /// Waits for one whole message (libzmq delivers the frames of a message together).
    pub(super) async fn recv(&mut self) -> Result<Vec<Bytes>> {
        loop {
            if let Some(m) = self.try_recv()? {
                return Ok(m);
            }
            self.wait().await?;
        }
    }

    /// Waits until the socket's state may have changed.
    pub(super) async fn wait(&mut self) -> Result<()> {
        wait(&self.signal).await
    }

    /// Sends one message without waiting; see [`try_send`].
    pub(super) fn try_send(&mut self, frames: &[Bytes]) -> Result<bool> {
        try_send(&self.sock, frames)
    }
}

/// Sets an integer option the `zmq` crate has no setter for (e.g. `ZMQ_XPUB_NODROP`).
pub(super) fn set_int_option(sock: &mut AsyncSocket, option: u32, value: i32) -> Result<()> {
    let raw = sock.sock.as_mut_ptr();
    // SAFETY: `raw` is this live socket, borrowed mutably so no other call runs on it, and
    // the value is an int of the size given, as zmq_setsockopt(3) asks of integer options.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            raw,
            option as std::os::raw::c_int,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: zmq_errno only reads the calling thread's errno.
        Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }).into())
    }
}

/// Stops a socket's monitor (`zmq_socket_monitor(sock, NULL, 0)`), closing libzmq's end of it.
///
/// Must run before the reading end of the monitor is closed: libzmq's I/O thread writes
/// monitor events with a blocking send, so an event for a monitor nobody reads any more would
/// hang the I/O thread of the whole process (no accept, no handshake, nothing).
pub(super) fn stop_monitor(sock: &mut zmq::Socket) {
    // SAFETY: a live socket, borrowed mutably; a null address is documented to stop monitoring.
    let rc = unsafe { zmq_sys::zmq_socket_monitor(sock.as_mut_ptr(), std::ptr::null(), 0) };
    if rc != 0 {
        tracing::debug!("monitor already stopped");
    }
}

/// Options every socket of a node gets (see docs/architecture.md, "Transport").
pub(super) fn harden(sock: &zmq::Socket) -> Result<()> {
    // A frame over the protocol's body limit closes the connection before it is read.
    sock.set_maxmsgsize(crate::protocol::MAX_BODY_BYTES as i64)?;
    // A connection that does not complete its greeting in time is closed.
    sock.set_handshake_ivl(HANDSHAKE_MS)?;
    // ZMTP heartbeats: a silent half-open connection is noticed and closed.
    sock.set_heartbeat_ivl(HEARTBEAT_MS)?;
    sock.set_heartbeat_timeout(3 * HEARTBEAT_MS)?;
    sock.set_heartbeat_ttl(3 * HEARTBEAT_MS)?;
    sock.set_sndhwm(HWM)?;
    sock.set_rcvhwm(HWM)?;
    sock.set_reconnect_ivl(100)?;
    sock.set_reconnect_ivl_max(1000)?;
    sock.set_tcp_keepalive(1)?;
    // Closing a socket drops what it had not sent yet; nothing waits on it.
    sock.set_linger(0)?;
    Ok(())
}

/// Longest ZMTP greeting and handshake, in milliseconds.
pub(super) const HANDSHAKE_MS: i32 = 3000;
/// ZMTP heartbeat interval, in milliseconds.
pub(super) const HEARTBEAT_MS: i32 = 1000;
/// Messages queued per connection and direction.
pub(super) const HWM: i32 = 10_000;
