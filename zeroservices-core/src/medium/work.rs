//! Work queues: events a medium keeps durably for a group of workers, each handed to one
//! member of the group and kept until that member acknowledges it (NATS JetStream). Media
//! without durable storage have none; workers then follow events and catch up by listing.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::Event;
use crate::task::TaskGuard;

/// What a worker says about an event it was handed.
#[async_trait]
pub trait WorkAck: Send + Sync + fmt::Debug {
    /// Handled (or not for this group): never handed out again.
    async fn done(&self);
    /// Not handled now: hand it out again after `delay`.
    async fn retry(&self, delay: Duration);
    /// Still being handled: do not hand it to another member yet.
    async fn progress(&self);
}

/// One event of a work queue, with its acknowledgement.
#[derive(Debug)]
pub struct WorkItem {
    /// The event.
    pub event: Event,
    /// How to acknowledge it.
    pub ack: Box<dyn WorkAck>,
}

/// A group's work queue as one worker reads it; stops reading when dropped.
#[derive(Debug)]
pub struct WorkQueue {
    rx: mpsc::Receiver<WorkItem>,
    _reader: TaskGuard,
}

impl WorkQueue {
    /// A queue fed through `rx` by the task `reader` owns.
    #[cfg_attr(not(any(feature = "zmq", feature = "nats")), allow(dead_code))]
    pub(crate) fn new(rx: mpsc::Receiver<WorkItem>, reader: TaskGuard) -> WorkQueue {
        WorkQueue {
            rx,
            _reader: reader,
        }
    }

    /// The next event; `None` once the medium stopped.
    pub async fn recv(&mut self) -> Option<WorkItem> {
        self.rx.recv().await
    }
}
