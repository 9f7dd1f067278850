//! What some media can do beyond carrying requests and events, each an optional trait a medium
//! offers through [`Medium`](super::Medium)'s accessors (`None` by default): routing requests
//! by collection itself, keeping events durably, and work queues. A new medium implements
//! [`Medium`](super::Medium) and whichever of these it has.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Event, MessageKind, WorkQueue};
use crate::error::Result;

/// A medium that balances resource requests over a collection's providers itself (NATS: a
/// queue group per collection), instead of the node picking one.
#[async_trait]
pub trait CollectionRouting: Send + Sync {
    /// The collections this node serves now (called at start and on every change): the
    /// medium listens for requests to exactly these.
    fn serve_collections(&self, names: Vec<String>);

    /// Sends a resource request to a provider of `collection` that the medium chooses, and
    /// waits for the reply body, at most `timeout`. `None` leaves the choice to the node for
    /// this request (a keyed NATS cluster addresses each request to one provider).
    async fn request_collection(
        &self,
        collection: &str,
        kind: MessageKind,
        body: Bytes,
        timeout: Duration,
    ) -> Option<Result<Bytes>>;
}

/// A medium that keeps the cluster's events durably (NATS with JetStream).
#[async_trait]
pub trait EventHistory: Send + Sync {
    /// The last events (at most `max`, oldest first), for a realtime hub that starts and
    /// must replay what its clients missed.
    async fn history(&self, max: usize) -> Result<Vec<Event>>;
}

/// A medium with durable work queues (NATS with JetStream).
#[async_trait]
pub trait WorkQueues: Send + Sync {
    /// The work queue of worker `group`, holding the events of `collection`; each event goes
    /// to one reader of the group and comes back after `ack_wait` without an acknowledgement.
    async fn work_queue(
        &self,
        group: &str,
        collection: &str,
        ack_wait: Duration,
    ) -> Result<WorkQueue>;
}
