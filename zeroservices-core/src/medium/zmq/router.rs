//! The ROUTER socket: takes requests from peers, answers `ping` and protocol errors itself
//! (through [`envelope::open_request`]) and hands the rest to the node.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::socket::AsyncSocket;
use crate::cluster_key::ClusterKey;
use crate::error::{Error, Result};
use crate::medium::envelope::{self, Key, Opened};
use crate::medium::{InboundRequest, Incoming, Replier};

/// Requests the node serves concurrently before the ROUTER stops reading (back-pressure:
/// libzmq's per-connection queues fill, then TCP pushes back on the senders).
const MAX_INFLIGHT: usize = 16_384;
/// Messages read in one go before replies get their turn.
const BATCH: usize = 256;

/// Serves `router` until the node's inbox closes; `me`: the node's id, which keyed requests
/// must name.
pub(super) async fn run(
    mut router: AsyncSocket,
    inbox: mpsc::Sender<Incoming>,
    key: Key,
    me: Option<String>,
) {
    // Replies come back on one queue with room for every request in flight: the loop stops
    // reading requests while `inflight` is at the bound.
    let (reply_tx, mut replies) = mpsc::channel::<[Bytes; 3]>(MAX_INFLIGHT);
    let mut inflight = 0usize;
    loop {
        tokio::select! {
            Some([ident, rid, body]) = replies.recv() => {
                inflight -= 1;
                send_reply(&mut router, ident, rid, body, key.as_deref());
                while let Ok([ident, rid, body]) = replies.try_recv() {
                    inflight -= 1;
                    send_reply(&mut router, ident, rid, body, key.as_deref());
                }
            }
            msg = router.recv(), if inflight < MAX_INFLIGHT => {
                let mut next = Some(msg);
                let mut n = 0;
                while let Some(msg) = next.take() {
                    match msg {
                        Ok(frames) => match handle(&mut router, frames, &reply_tx, key.as_deref(), me.as_deref()) {
                            Handled::Done => {}
                            Handled::Deliver(req, replied) => {
                                inflight += usize::from(replied);
                                if inbox.send(Incoming::Request(req)).await.is_err() {
                                    return; // the node is gone
                                }
                            }
                        },
                        Err(e) => tracing::warn!(error = %e, "router: receive failed"),
                    }
                    n += 1;
                    if n < BATCH && inflight < MAX_INFLIGHT {
                        next = router.try_recv().transpose();
                    }
                }
            }
        }
    }
}

enum Handled {
    /// Dropped or answered here.
    Done,
    /// For the node; true when a reply will come back on the queue.
    Deliver(InboundRequest, bool),
}

/// Applies the protocol's rules to one ROUTER message.
fn handle(
    router: &mut AsyncSocket,
    mut frames: Vec<Bytes>,
    reply_tx: &mpsc::Sender<[Bytes; 3]>,
    key: Option<&ClusterKey>,
    me: Option<&str>,
) -> Handled {
    if frames.is_empty() {
        return Handled::Done;
    }
    let ident = frames.remove(0);
    match envelope::open_request(key, me, frames) {
        Opened::Drop(why) => tracing::debug!(why, "router: dropped a message"),
        Opened::Answer { rid, body } => send_reply(router, ident, rid, body, key),
        Opened::Deliver { rid, kind, body } => {
            let reply = rid.map(|rid| Replier::queued(reply_tx.clone(), ident, rid));
            let replied = reply.is_some();
            return Handled::Deliver(InboundRequest { kind, body, reply }, replied);
        }
    }
    Handled::Done
}

fn send_reply(
    router: &mut AsyncSocket,
    ident: Bytes,
    rid: Bytes,
    body: Bytes,
    key: Option<&ClusterKey>,
) {
    let mut frames = Vec::with_capacity(5);
    frames.push(ident);
    frames.extend(envelope::seal_reply(key, rid, body));
    // A ROUTER never blocks: a reply to a peer that left, or whose queue is full because it
    // does not read, is dropped by libzmq (the caller's timeout reports it).
    if let Err(e) = router.try_send(&frames) {
        tracing::debug!(error = %e, "router: reply not sent");
    }
}

/// Binds a ROUTER with the node's socket options.
pub(super) fn bind(endpoint: &str) -> Result<(AsyncSocket, String)> {
    let sock = super::socket::context().socket(zmq::ROUTER)?;
    super::socket::harden(&sock)?;
    sock.set_ipv6(endpoint.starts_with("tcp://["))?;
    sock.bind(endpoint)?;
    let bound = last_endpoint(&sock)?;
    Ok((AsyncSocket::new(sock)?, bound))
}

/// The endpoint a socket actually bound (port 0 resolved).
pub(super) fn last_endpoint(sock: &zmq::Socket) -> Result<String> {
    sock.get_last_endpoint()?
        .map_err(|_| Error::Transport("bound endpoint is not UTF-8".into()))
}
