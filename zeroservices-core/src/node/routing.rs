//! Routing: resource requests go to this node's collection or to a live provider (reads
//! retried on another), and plain requests, notifications and pings to a given peer.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tracing::Instrument;

use super::NodeHandle;
use super::Output;
use crate::error::{Error, Result};
use crate::medium::MessageKind;
use crate::protocol::{decode_reply, reply_data};
use crate::resources::ResourceRequest;
use crate::trace;

pub(super) enum Answer {
    Here(Output),
    There(Bytes),
}

impl NodeHandle {
    /// Runs a resource action: here when this node hosts the collection, else on a live
    /// provider (round-robin). Read-only actions are retried on another provider when one
    /// fails. Errors: `NotFound` for a collection never seen, `Unavailable` when every
    /// provider is gone, `Timeout`, and whatever the collection answered.
    pub async fn send(&self, req: ResourceRequest) -> Result<Value> {
        match self.route(req).await? {
            Answer::Here(out) => out.into_value(),
            Answer::There(b) => decode_reply(&b),
        }
    }

    /// [`NodeHandle::send`], answering the JSON bytes of the result. A provider's answer is passed
    /// on as it came (checked, not parsed into a `Value` and serialized again): what a gateway
    /// forwarding results wants.
    ///
    /// ```
    /// # async fn demo(node: zeroservices_core::Node) -> zeroservices_core::Result<()> {
    /// use zeroservices_core::resources::ResourceRequest;
    /// let json = node.send_json(ResourceRequest::new("power", "list", serde_json::json!({}))).await?;
    /// assert!(json.starts_with(b"{"));
    /// # Ok(()) }
    /// ```
    pub async fn send_json(&self, req: ResourceRequest) -> Result<Bytes> {
        match self.route(req).await? {
            Answer::Here(out) => out.into_json().map(Bytes::from),
            Answer::There(b) => reply_data(&b),
        }
    }

    /// [`NodeHandle::send`], its result read straight into `T` (a provider's reply is not built
    /// into a `Value` first).
    pub(crate) async fn send_as<T: serde::de::DeserializeOwned>(
        &self,
        req: ResourceRequest,
    ) -> Result<T> {
        let shape = |e: serde_json::Error| Error::Internal(format!("unexpected reply shape: {e}"));
        match self.route(req).await? {
            Answer::Here(Output::Value(v)) => serde_json::from_value(v).map_err(shape),
            Answer::Here(Output::Json(b)) => serde_json::from_slice(&b).map_err(shape),
            Answer::There(b) => serde_json::from_slice(&reply_data(&b)?).map_err(shape),
        }
    }

    pub(super) async fn route(&self, mut req: ResourceRequest) -> Result<Answer> {
        if let Some(h) = self.hosted(&req.collection) {
            return h.execute_detached(self, req).await.map(Answer::Here);
        }
        if !trace::enabled() {
            return self.route_remote(req).await;
        }
        let span = trace::span(
            &format!("request {}.{}", req.collection, req.action),
            "client",
            None,
        );
        async move {
            req.traceparent = trace::current();
            self.route_remote(req).await
        }
        .instrument(span)
        .await
    }

    /// [`NodeHandle::route`] to another node.
    async fn route_remote(&self, req: ResourceRequest) -> Result<Answer> {
        let body =
            Bytes::from(serde_json::to_vec(&req).map_err(|e| Error::Internal(e.to_string()))?);
        if let Some(answer) = self.route_by_medium(&req, &body).await {
            return answer;
        }
        let mut tried: Vec<String> = Vec::new();
        let mut last_failure: Option<Error> = None;
        loop {
            let Some(peer) = self.inner.directory.pick_provider(&req.collection, &tried) else {
                return Err(match last_failure {
                    // Every provider tried timed out: that is what the caller should hear.
                    Some(e @ Error::Timeout(_)) => e,
                    _ if tried.is_empty() && !self.inner.directory.has_seen(&req.collection) => {
                        Error::NotFound(format!("unknown collection {:?}", req.collection))
                    }
                    _ => Error::Unavailable(req.collection.clone()),
                });
            };
            let reply = self
                .inner
                .medium
                .request(
                    &peer,
                    MessageKind::Resource,
                    body.clone(),
                    self.inner.timeout,
                )
                .await;
            match reply {
                Ok(b) => return Ok(Answer::There(b)),
                Err(e @ (Error::PeerGone(_) | Error::Timeout(_) | Error::Transport(_))) => {
                    tracing::debug!(%peer, error = %e, collection = %req.collection, "provider failed");
                    if matches!(e, Error::PeerGone(_)) {
                        // Refused or reset: skip it until it announces itself again.
                        self.inner.directory.mark_down(&peer);
                    }
                    let give_up = !req.is_read_only() || tried.len() >= 2;
                    let e = match e {
                        Error::Timeout(_) => e,
                        _ => Error::Unavailable(req.collection.clone()),
                    };
                    if give_up {
                        return Err(e);
                    }
                    last_failure = Some(e);
                    tried.push(peer);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Lets a medium that balances requests itself (NATS: a queue group per collection) carry
    /// the request; `None` when the medium leaves the choice of provider to the node. A read
    /// that times out is sent once more (NATS hands it to the group again).
    async fn route_by_medium(&self, req: &ResourceRequest, body: &Bytes) -> Option<Result<Answer>> {
        let tries = if req.is_read_only() { 2 } else { 1 };
        let mut outcome = None;
        for _ in 0..tries {
            let reply = self
                .inner
                .medium
                .collection_routing()?
                .request_collection(
                    &req.collection,
                    MessageKind::Resource,
                    body.clone(),
                    self.inner.timeout,
                )
                .await?;
            outcome = Some(match reply {
                Ok(b) => return Some(Ok(Answer::There(b))),
                Err(Error::Unavailable(c)) if !self.inner.directory.has_seen(&c) => {
                    return Some(Err(Error::NotFound(format!("unknown collection {c:?}"))))
                }
                Err(e @ Error::Timeout(_)) => Err(e),
                Err(e) => return Some(Err(e)),
            });
        }
        outcome
    }

    /// Sends a message to a peer's `on_message` and waits for its reply.
    pub async fn request(&self, node_id: &str, message: Value) -> Result<Value> {
        self.request_with_timeout(node_id, message, self.inner.timeout)
            .await
    }

    /// [`NodeHandle::request`] with an explicit timeout.
    pub async fn request_with_timeout(
        &self,
        node_id: &str,
        message: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let body = Bytes::from(message.to_string());
        let reply = self
            .inner
            .medium
            .request(node_id, MessageKind::Request, body, timeout)
            .await?;
        decode_reply(&reply)
    }

    /// Sends a one-way message to a peer's `on_message`.
    pub async fn notify(&self, node_id: &str, message: Value) -> Result<()> {
        self.inner
            .medium
            .notify(
                node_id,
                MessageKind::Notify,
                Bytes::from(message.to_string()),
            )
            .await
    }

    /// Measures the round-trip time to a peer.
    pub async fn ping(&self, node_id: &str) -> Result<Duration> {
        let start = Instant::now();
        let reply = self
            .inner
            .medium
            .request(
                node_id,
                MessageKind::Ping,
                Bytes::from_static(b"{}"),
                self.inner.timeout,
            )
            .await?;
        decode_reply(&reply)?;
        Ok(start.elapsed())
    }
}
