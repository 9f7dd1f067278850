//! The JetStream side of the NATS medium: one stream keeps every event published on
//! `<prefix>.ev.>` (bounded by age, count and bytes; the oldest go first). Events are published
//! with plain NATS publishes that the stream captures, so publishing costs no round trip.
//!
//! - History: a realtime hub that starts reads the last events through an ordered consumer,
//!   so clients resume across any restart from the stream instead of getting `resync`.
//! - Work queues: a worker group shares one durable pull consumer filtered on its collection;
//!   the server hands each event to one member and hands it out again when it is not
//!   acknowledged in time. A member that was down finds its group's place kept.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::Client;
use async_trait::async_trait;
use futures::StreamExt as _;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::inbound::open_event;
use super::subjects::encode_token;
use super::{JetStreamMode, NatsConfig, Shared};
use crate::error::{Error, Result};
use crate::medium::{Event, WorkAck, WorkItem, WorkQueue};
use crate::task::TaskGuard;

/// Longest a history read may take before the hub starts with what it has.
const HISTORY_LIMIT: Duration = Duration::from_secs(10);

/// Events a work queue's reader holds ahead of the worker.
const WORK_AHEAD: usize = 256;

/// The events stream of a cluster.
#[derive(Debug)]
pub(super) struct Events {
    js: Context,
    name: String,
}

fn js_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Transport(format!("JetStream {what}: {e}"))
}

impl Events {
    /// Makes the stream if it does not exist, unless JetStream is off; in `Auto` mode a server
    /// without JetStream means no stream.
    pub(super) async fn open(client: &Client, cfg: &NatsConfig) -> Result<Option<Events>> {
        if cfg.jetstream == JetStreamMode::Off {
            return Ok(None);
        }
        let js = jetstream::new(client.clone());
        let name = cfg.stream_name();
        let config = Config {
            name: name.clone(),
            subjects: vec![format!("{}.ev.>", cfg.prefix)],
            max_age: cfg.stream_max_age,
            max_messages: cfg.stream_max_msgs,
            max_bytes: cfg.stream_max_bytes,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            num_replicas: cfg.replicas.max(1),
            ..Config::default()
        };
        // The first node makes the stream; later ones use it as it is (its limits and
        // replicas are changed with the NATS tools, never silently by a node that starts
        // with other flags).
        let made = js
            .get_or_create_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        match (made, cfg.jetstream) {
            (Ok(()), _) => Ok(Some(Events { js, name })),
            (Err(e), JetStreamMode::On) => Err(js_err("stream", e)),
            (Err(e), _) => {
                tracing::warn!(error = %e, "no JetStream on this NATS server: events are not kept (resumes after a restart get resync, workers catch up by listing)");
                Ok(None)
            }
        }
    }

    /// The last `max` events of the stream, oldest first.
    pub(super) async fn history(&self, shared: &Shared, max: usize) -> Result<Vec<Event>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut stream = self
            .js
            .get_stream(&self.name)
            .await
            .map_err(|e| js_err("stream", e))?;
        let state = stream
            .info()
            .await
            .map_err(|e| js_err("info", e))?
            .state
            .clone();
        if state.messages == 0 {
            return Ok(Vec::new());
        }
        let last = state.last_sequence;
        let start = last
            .saturating_sub(max as u64 - 1)
            .max(state.first_sequence);
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| js_err("consumer", e))?;
        let mut messages = consumer.messages().await.map_err(|e| js_err("read", e))?;
        let mut out = Vec::with_capacity(max.min(65_536));
        let read = async {
            while let Some(m) = messages.next().await {
                let m = m.map_err(|e| js_err("read", e))?;
                let seq = m.info().map(|i| i.stream_sequence).unwrap_or(last);
                if let Some(ev) = open_event(shared, &m.payload) {
                    out.push(ev);
                }
                if seq >= last {
                    break;
                }
            }
            Ok::<(), Error>(())
        };
        match tokio::time::timeout(HISTORY_LIMIT, read).await {
            Ok(r) => r?,
            Err(_) => tracing::warn!(
                read = out.len(),
                "reading the event history took too long; starting with part of it"
            ),
        }
        Ok(out)
    }

    /// The work queue of `group` on `collection`'s events (see the module doc).
    pub(super) async fn work_queue(
        &self,
        shared: &Arc<Shared>,
        group: &str,
        collection: &str,
        ack_wait: Duration,
    ) -> Result<WorkQueue> {
        let digest = Sha256::digest(group.as_bytes());
        let durable: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let durable = format!("zsw_{durable}");
        let config = pull::Config {
            durable_name: Some(durable.clone()),
            description: Some(format!("zeroservices worker group {group}")),
            filter_subject: format!("{}.ev.{}.>", shared.prefix, encode_token(collection)),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            max_ack_pending: 4096,
            ..Default::default()
        };
        let stream = self
            .js
            .get_stream(&self.name)
            .await
            .map_err(|e| js_err("stream", e))?;
        let consumer = stream
            .get_or_create_consumer(&durable, config)
            .await
            .map_err(|e| js_err("consumer", e))?;
        let (tx, rx) = mpsc::channel(WORK_AHEAD);
        let reader = TaskGuard::spawn(read_work(shared.clone(), consumer, tx));
        Ok(WorkQueue::new(rx, reader))
    }
}

/// Feeds a work queue from its consumer, starting over after a broken read (a server lost,
/// the consumer moved to another server).
async fn read_work(
    shared: Arc<Shared>,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    tx: mpsc::Sender<WorkItem>,
) {
    loop {
        match consumer.messages().await {
            Ok(mut messages) => {
                while let Some(m) = messages.next().await {
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::debug!(error = %e, "work queue read");
                            continue;
                        }
                    };
                    let (m, acker) = m.split();
                    let ack = Box::new(NatsAck(acker));
                    let Some(event) = open_event(&shared, &m.payload) else {
                        ack.term().await;
                        continue;
                    };
                    if tx.send(WorkItem { event, ack }).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "work queue unavailable; retrying"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A JetStream acknowledgement.
struct NatsAck(Acker);

impl std::fmt::Debug for NatsAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatsAck")
    }
}

impl NatsAck {
    async fn send(&self, kind: AckKind) {
        if let Err(e) = self.0.ack_with(kind).await {
            tracing::debug!(error = %e, "JetStream acknowledgement not sent (the event comes back)");
        }
    }

    /// Never to be handed out again (it cannot be read).
    async fn term(&self) {
        self.send(AckKind::Term).await;
    }
}

#[async_trait]
impl WorkAck for NatsAck {
    async fn done(&self) {
        self.send(AckKind::Ack).await;
    }
    async fn retry(&self, delay: Duration) {
        self.send(AckKind::Nak(Some(delay))).await;
    }
    async fn progress(&self) {
        self.send(AckKind::Progress).await;
    }
}
