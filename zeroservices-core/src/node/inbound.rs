//! Inbound: requests from peers, dispatched to the resource layer or the service's
//! `on_message` (refused while the node stops), and events from peers delivered locally.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Poll;

use serde_json::{json, Value};

use super::NodeHandle;
use super::Output;
use crate::discovery::Heard;
use crate::error::{Error, Result};
use crate::medium::{InboundRequest, Inbox, Incoming, MessageKind};
use crate::protocol::{encode_json_reply, encode_reply, Announcement};
use crate::resources::ResourceRequest;

impl NodeHandle {
    pub(super) async fn handle_request(&self, req: InboundRequest) {
        let result = self.answer(req.kind, &req.body).await;
        if let Err(e) = &result {
            tracing::debug!(kind = req.kind.as_str(), error = %e, "request failed");
        }
        if let Some(r) = req.reply {
            r.send(match result {
                // Already JSON: wrapped as it is, not parsed and serialized again.
                Ok(Output::Json(data)) => encode_json_reply(&data),
                Ok(Output::Value(v)) => encode_reply(&Ok(v)),
                Err(e) => encode_reply(&Err(e)),
            });
        }
    }

    pub(super) async fn answer(&self, kind: MessageKind, body: &[u8]) -> Result<Output> {
        match kind {
            MessageKind::Request | MessageKind::Notify => {
                let v: Value = serde_json::from_slice(body)?;
                self.inner
                    .service
                    .on_message(self, v)
                    .await
                    .map(Output::Value)
            }
            MessageKind::Resource => {
                let req: ResourceRequest = serde_json::from_slice(body)
                    .map_err(|e| Error::BadRequest(format!("invalid resource request: {e}")))?;
                match self.hosted(&req.collection) {
                    Some(h) => h.execute(self, req).await,
                    None => Err(Error::Unavailable(format!(
                        "{} is not served here",
                        req.collection
                    ))),
                }
            }
            // Media answer pings themselves; a medium that hands one on gets the same answer.
            MessageKind::Ping => Ok(Output::Value(json!({}))),
            MessageKind::Claim => {
                let req: super::ClaimRequest = serde_json::from_slice(body)
                    .map_err(|e| Error::BadRequest(format!("invalid claim: {e}")))?;
                let reply = self.answer_claim(&req).await?;
                serde_json::to_value(reply)
                    .map(Output::Value)
                    .map_err(|e| Error::Internal(e.to_string()))
            }
            MessageKind::Announce => {
                let a = Announcement::decode(body)?;
                self.handle_heard(Heard {
                    announcement: a,
                    source: None,
                    direct: true,
                })
                .await;
                let peers: Vec<Announcement> = self
                    .inner
                    .directory
                    .peers()
                    .into_iter()
                    .map(|p| p.announcement)
                    .collect();
                Ok(Output::Value(
                    json!({"node": self.announcement(), "peers": peers}),
                ))
            }
        }
    }
}

pub(super) async fn dispatcher(node: NodeHandle, mut inbox: Inbox) {
    let inline_first_poll = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread;
    loop {
        let incoming = tokio::select! {
            _ = node.inner.shutdown.cancelled() => return,
            i = inbox.recv() => i,
        };
        match incoming {
            None => return,
            Some(Incoming::Request(req)) if node.inner.stopping.is_cancelled() => {
                // The caller learns at once (a read is retried on another provider).
                if let Some(r) = req.reply {
                    r.send(encode_reply(&Err(Error::Shutdown)));
                }
            }
            Some(Incoming::Request(req)) => {
                let n = node.clone();
                let handler = async move { n.handle_request(req).await };
                if inline_first_poll {
                    // Most answers need no waiting (a read from memory, a ping): polled here
                    // once, they cost no task. Only on a current-thread runtime, where a task
                    // would run on this same thread anyway.
                    if let Some(pending) = poll_once(Box::pin(handler)).await {
                        node.inner.tracker.spawn(pending);
                    }
                } else {
                    node.inner.tracker.spawn(handler);
                }
            }
            Some(Incoming::Event(ev)) => node.inner.deliver_local(&ev),
        }
    }
}

/// Polls `fut` once with the caller's context: `None` when it finished (or panicked: it is
/// dropped then, as a task's future would be, and its caller hears an internal error), else
/// the future, still to be driven (polled again wherever it goes next, it registers its new
/// waker; the caller's may see one spurious wake-up).
async fn poll_once<F: Future + Unpin>(mut fut: F) -> Option<F> {
    let pending = std::future::poll_fn(|cx| {
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut fut).poll(cx)));
        Poll::Ready(match polled {
            Ok(p) => p.is_pending(),
            Err(_) => {
                tracing::error!("request handler panicked");
                false
            }
        })
    })
    .await;
    pending.then_some(fut)
}
