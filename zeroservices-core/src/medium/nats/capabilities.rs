//! What NATS offers beyond the transport: queue groups per collection, and with JetStream,
//! the event history and work queues.

use std::time::Duration;

use async_nats::Subject;
use async_trait::async_trait;
use bytes::Bytes;

use super::{subjects, NatsMedium};
use crate::error::{Error, Result};
use crate::medium::{CollectionRouting, Event, EventHistory, MessageKind, WorkQueue, WorkQueues};

#[async_trait]
impl CollectionRouting for NatsMedium {
    fn serve_collections(&self, names: Vec<String>) {
        self.served.send_if_modified(|s| {
            let changed = *s != names;
            *s = names;
            changed
        });
    }

    async fn request_collection(
        &self,
        collection: &str,
        kind: MessageKind,
        body: Bytes,
        timeout: Duration,
    ) -> Option<Result<Bytes>> {
        let kind = kind.as_str();
        if self.shared.key.is_some() {
            // Any member of a queue group takes a request sent to it, so a keyed request
            // could be replayed to another provider: keyed nodes address each request to one
            // provider's own subject instead (see docs/security.md).
            return None;
        }
        let subject = Subject::from(subjects::collection_subject(
            &self.shared.prefix,
            collection,
        ));
        let mut reply = self
            .call(subject.clone(), kind, body.clone(), timeout)
            .await;
        if matches!(reply, Err(Error::PeerGone(_))) {
            // No member in the group: perhaps a provider that just announced itself and whose
            // subscription is on its way. One more try, still well within the 50 ms a caller
            // waits to hear that nobody serves the collection.
            tokio::time::sleep(Duration::from_millis(25)).await;
            reply = self.call(subject, kind, body, timeout).await;
        }
        Some(reply.map_err(|e| match e {
            Error::PeerGone(_) => Error::Unavailable(collection.to_owned()),
            e => e,
        }))
    }
}

#[async_trait]
impl EventHistory for NatsMedium {
    async fn history(&self, max: usize) -> Result<Vec<Event>> {
        match &self.stream {
            Some(s) => s.history(&self.shared, max).await,
            None => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl WorkQueues for NatsMedium {
    async fn work_queue(
        &self,
        group: &str,
        collection: &str,
        ack_wait: Duration,
    ) -> Result<WorkQueue> {
        match &self.stream {
            Some(s) => {
                s.work_queue(&self.shared, group, collection, ack_wait)
                    .await
            }
            None => Err(Error::Unavailable(
                "no JetStream stream: no work queues".into(),
            )),
        }
    }
}
