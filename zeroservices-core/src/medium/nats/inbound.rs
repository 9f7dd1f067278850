//! The NATS medium's tasks: requests from this node's subject and its collections' queue
//! groups, events from the subject patterns of the node's subscriptions, and the replies.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::{Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::{mpsc, watch};

use super::subjects::{collection_subject, event_patterns, pack, unpack};
use super::Shared;
use crate::medium::envelope::{self, Opened};
use crate::medium::{InboundRequest, Incoming, Replier};
use crate::protocol::topic_matches;
use crate::task::TaskGuard;

/// Publishes the replies the node queued.
pub(super) async fn reply_writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<[Bytes; 3]>) {
    while let Some([subject, rid, body]) = rx.recv().await {
        // Without a copy: the bytes came from a subject.
        let Ok(subject) = async_nats::Subject::from_utf8(subject) else {
            continue;
        };
        let frames = envelope::seal_reply(shared.key.as_deref(), rid, body);
        if let Err(e) = shared.client.publish(subject, pack(&frames)).await {
            tracing::debug!(error = %e, "NATS reply not sent");
        }
    }
}

/// Hands every request of `sub` to the node.
pub(super) async fn request_loop(shared: Arc<Shared>, mut sub: Subscriber) {
    while let Some(msg) = sub.next().await {
        if !on_request(&shared, msg).await {
            return;
        }
    }
}

/// Opens one request and queues it for the node; `false` once the node is gone.
async fn on_request(shared: &Shared, msg: Message) -> bool {
    let Some(frames) = unpack(&msg.payload) else {
        tracing::debug!(subject = %msg.subject, "NATS request with malformed frames dropped");
        return true;
    };
    let reply_to = msg.reply.map(|s| Bytes::copy_from_slice(s.as_bytes()));
    // Keyed requests name the subject they were sent to: one sent to another node's
    // subject is dropped.
    match envelope::open_request(shared.key.as_deref(), Some(msg.subject.as_str()), frames) {
        Opened::Drop(why) => {
            tracing::debug!(why, "NATS request dropped");
            true
        }
        Opened::Answer { rid, body } => {
            if let Some(to) = reply_to {
                let _ = shared.replies.try_send([to, rid, body]);
            }
            true
        }
        Opened::Deliver { rid, kind, body } => {
            let reply = match (rid, reply_to) {
                (Some(rid), Some(to)) => Some(Replier::queued(shared.replies.clone(), to, rid)),
                _ => None,
            };
            let req = InboundRequest { kind, body, reply };
            shared.inbox.send(Incoming::Request(req)).await.is_ok()
        }
    }
}

/// What a subscription manager keeps: the subjects a watched list asks for, subscribed as a
/// queue group (named after the subject) or not, each read by its own task.
struct Wanted<F> {
    subjects: fn(&str, &[String]) -> Vec<String>,
    queue: bool,
    reader: fn(Arc<Shared>, Subscriber) -> F,
}

/// Keeps exactly the subscriptions `list` asks for: new subjects are subscribed (then
/// flushed, so the server has them), dropped ones end with their reader's task.
async fn keep_subscribed<F>(
    shared: Arc<Shared>,
    mut list: watch::Receiver<Vec<String>>,
    w: Wanted<F>,
) where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut subs: HashMap<String, TaskGuard> = HashMap::new();
    loop {
        let wanted = (w.subjects)(&shared.prefix, &list.borrow_and_update());
        subs.retain(|s, _| wanted.contains(s));
        for subject in wanted {
            if subs.contains_key(&subject) {
                continue;
            }
            let sub = if w.queue {
                (shared.client)
                    .queue_subscribe(subject.clone(), subject.clone())
                    .await
            } else {
                shared.client.subscribe(subject.clone()).await
            };
            match sub {
                Ok(sub) => {
                    let reader = TaskGuard::spawn((w.reader)(shared.clone(), sub));
                    subs.insert(subject, reader);
                }
                Err(e) => tracing::warn!(%subject, error = %e, "cannot subscribe on NATS"),
            }
        }
        if let Err(e) = super::server_has_subscriptions(&shared.client).await {
            tracing::warn!(error = %e, "NATS subscriptions not confirmed");
        }
        if list.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps one queue subscription per served collection: NATS hands each request of the
/// collection's subject to one member of the group of its providers.
pub(super) async fn serve_collections(shared: Arc<Shared>, served: watch::Receiver<Vec<String>>) {
    let subjects = |prefix: &str, names: &[String]| {
        names
            .iter()
            .map(|n| collection_subject(prefix, n))
            .collect()
    };
    let w = Wanted {
        subjects,
        queue: true,
        reader: request_loop,
    };
    keep_subscribed(shared, served, w).await;
}

/// Keeps the subject subscriptions that deliver exactly the node's topic prefixes (see
/// [`event_patterns`]).
pub(super) async fn follow_events(shared: Arc<Shared>, prefixes: watch::Receiver<Vec<String>>) {
    let w = Wanted {
        subjects: event_patterns,
        queue: false,
        reader: event_loop,
    };
    keep_subscribed(shared, prefixes, w).await;
}

/// Hands the events of one subscription to the node, waiting when its inbox is full.
async fn event_loop(shared: Arc<Shared>, mut sub: Subscriber) {
    while let Some(msg) = sub.next().await {
        let Some(ev) = open_event(&shared, &msg.payload) else {
            continue;
        };
        let wanted = shared
            .prefixes
            .borrow()
            .iter()
            .any(|p| topic_matches(p, &ev.topic));
        if wanted && shared.inbox.send(Incoming::Event(ev)).await.is_err() {
            return;
        }
    }
}

/// Unpacks and opens an event payload (a live one or one kept in the stream); malformed or
/// unauthenticated ones are logged and dropped.
pub(super) fn open_event(shared: &Shared, payload: &Bytes) -> Option<crate::medium::Event> {
    let Some(frames) = unpack(payload) else {
        tracing::debug!("NATS event with malformed frames dropped");
        return None;
    };
    match envelope::open_event(shared.key.as_deref(), frames) {
        Ok(ev) => Some(ev),
        Err(why) => {
            tracing::debug!(why, "NATS event dropped");
            None
        }
    }
}
