//! The ROUTER socket: takes requests from peers, answers `ping` and protocol errors itself
//! (through [`envelope::open_request`]) and hands the rest to the node.

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::socket::AsyncSocket;
use crate::cluster_key::ClusterKey;
use crate::error::{Error, Result};
use crate::medium::envelope::{self, Key, Opened};
use crate::medium::{InboundRequest, Incoming, Replier};
use crate::protocol::encode_reply;

/// Requests the node serves concurrently before the ROUTER stops reading (back-pressure:
/// libzmq's per-connection queues fill, then TCP pushes back on the senders).
const MAX_INFLIGHT: usize = 16_384;
/// Messages read in one go before replies get their turn.
const BATCH: usize = 256;

type PendingReply = std::pin::Pin<Box<dyn std::future::Future<Output = [Bytes; 3]> + Send>>;

fn pending(ident: Bytes, rid: Bytes, rx: oneshot::Receiver<Bytes>) -> PendingReply {
    Box::pin(async move {
        let body = rx
            .await
            .unwrap_or_else(|_| encode_reply(&Err(Error::Internal("no reply".into()))));
        [ident, rid, body]
    })
}

/// Serves `router` until the node's inbox closes.
pub(super) async fn run(mut router: AsyncSocket, inbox: mpsc::Sender<Incoming>, key: Key) {
    let mut replies: FuturesUnordered<PendingReply> = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some([ident, rid, body]) = replies.next(), if !replies.is_empty() => {
                send_reply(&mut router, ident, rid, body, key.as_deref());
            }
            msg = router.recv(), if replies.len() < MAX_INFLIGHT => {
                let mut next = Some(msg);
                let mut n = 0;
                while let Some(msg) = next.take() {
                    match msg {
                        Ok(frames) => {
                            if !handle(&mut router, frames, &inbox, &mut replies, key.as_deref()).await {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "router: receive failed"),
                    }
                    n += 1;
                    if n < BATCH && replies.len() < MAX_INFLIGHT {
                        next = router.try_recv().transpose();
                    }
                }
            }
        }
    }
}

/// Handles one ROUTER message; false once the node is gone.
async fn handle(
    router: &mut AsyncSocket,
    mut frames: Vec<Bytes>,
    inbox: &mpsc::Sender<Incoming>,
    replies: &mut FuturesUnordered<PendingReply>,
    key: Option<&ClusterKey>,
) -> bool {
    if frames.is_empty() {
        return true;
    }
    let ident = frames.remove(0);
    match envelope::open_request(key, frames) {
        Opened::Drop(why) => tracing::debug!(why, "router: dropped a message"),
        Opened::Answer { rid, body } => send_reply(router, ident, rid, body, key),
        Opened::Deliver { rid, kind, body } => {
            let (reply, rx) = match rid {
                Some(rid) => {
                    let (r, rx) = Replier::new();
                    (Some(r), Some((rid, rx)))
                }
                None => (None, None),
            };
            let req = InboundRequest { kind, body, reply };
            if inbox.send(Incoming::Request(req)).await.is_err() {
                return false;
            }
            if let Some((rid, rx)) = rx {
                replies.push(pending(ident, rid, rx));
            }
        }
    }
    true
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
