//! Subscribers must hold the cluster key: with a key, the XPUB is a ZeroMQ PLAIN server and this
//! ZAP handler (RFC 27, `inproc://zeromq.zap.01` in the publisher's own context) admits only
//! connections whose password is the key's [`ClusterKey::subscriber_password`]. A host without
//! the key fails the handshake and receives nothing. (PLAIN sends the password in clear: a host
//! that can already read the traffic learns it, but such a host reads the events anyway; the
//! key keeps out everyone who can only connect. docs/security.md has the threat model.)
//!
//! The handler is a thread with a blocking REP socket, polled with a short timeout so that it
//! notices when its owner drops it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::cluster_key::ClusterKey;
use crate::error::{Error, Result};

/// The ZAP endpoint libzmq asks, in the context of the socket being authenticated.
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";
/// How often the handler checks whether it should stop, in milliseconds.
const POLL_MS: i32 = 100;
/// The ZAP domain of our publishers.
pub(super) const DOMAIN: &str = "zeroservices";
/// The PLAIN user name subscribers present (the password is what counts).
pub(super) const USER: &str = "zeroservices";

/// Owns the handler thread; dropping it stops the thread (within [`POLL_MS`]).
#[derive(Debug)]
pub(super) struct ZapHandler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ZapHandler {
    /// Binds the handler in `ctx` (before any socket of `ctx` accepts connections).
    pub(super) fn start(ctx: &zmq::Context, key: Arc<ClusterKey>) -> Result<ZapHandler> {
        let rep = ctx.socket(zmq::REP)?;
        rep.set_linger(0)?;
        rep.set_rcvtimeo(POLL_MS)?;
        rep.bind(ZAP_ENDPOINT)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("zs-zap".into())
            .spawn(move || serve(&rep, &key, &flag))
            .map_err(|e| Error::Internal(format!("cannot start the ZAP handler: {e}")))?;
        Ok(ZapHandler {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ZapHandler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the ZAP handler panicked");
            }
        }
    }
}

fn serve(rep: &zmq::Socket, key: &ClusterKey, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let frames = match rep.recv_multipart(0) {
            Ok(f) => f,
            Err(zmq::Error::EAGAIN) => continue,
            Err(zmq::Error::ETERM) => return,
            Err(e) => {
                tracing::warn!(error = %e, "ZAP handler: receive failed");
                continue;
            }
        };
        let reply = answer(&frames, key);
        if let Err(e) = rep.send_multipart(reply, 0) {
            tracing::warn!(error = %e, "ZAP handler: reply failed");
        }
    }
}

/// The reply to one ZAP request: `[version, request id, status, text, user id, metadata]`.
fn answer(frames: &[Vec<u8>], key: &ClusterKey) -> Vec<Vec<u8>> {
    // [version, request id, domain, address, routing id, mechanism, credentials...]
    let request_id = frames.get(1).cloned().unwrap_or_default();
    let admitted = frames.first().is_some_and(|v| v == b"1.0")
        && frames.get(5).is_some_and(|m| m == b"PLAIN")
        && frames
            .get(7)
            .is_some_and(|p| key.check_subscriber_password(p));
    let address = frames
        .get(3)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .unwrap_or_default();
    let (code, text) = if admitted {
        (&b"200"[..], &b"OK"[..])
    } else {
        tracing::debug!(peer = %address, "subscriber without the cluster key refused");
        (&b"400"[..], &b"cluster key required"[..])
    };
    vec![
        b"1.0".to_vec(),
        request_id,
        code.to_vec(),
        text.to_vec(),
        Vec::new(),
        Vec::new(),
    ]
}
