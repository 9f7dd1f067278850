//! Group commit: every write of an [`super::EmbeddedStore`] goes to one committer thread, which
//! runs the writes that queued while its previous commit was flushing as one redb transaction,
//! and acknowledges all of them with that transaction's single fsync.
//!
//! Each write still gets its own result: a write whose own checks fail (conflict, not found, a
//! bad update) fails before it changes anything, so it fails alone and the others commit. A write
//! that fails inside redb (I/O, a full disk) leaves the transaction in an unknown state: the whole
//! batch is then aborted and every write in it fails. No write is answered before the commit that
//! holds it returned, and answers go out in commit order.
//!
//! The thread is owned by the store: it stops when the last handle of the store is dropped, after
//! answering what it holds.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::sync::oneshot;

use super::tables::Tables;
use crate::error::{Error, Result};

/// Bounds of one group commit (see [`super::EmbeddedStore::open_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// Most writes in one transaction (default 256). Writes beyond it wait for the next commit.
    pub max_batch: usize,
    /// How long the committer waits for more writes after the first one of a batch (default
    /// zero: a batch is what queued during the previous commit, so a lone write waits for its
    /// own fsync only). Waiting makes batches larger but holds every write of the batch that
    /// long; on a fast disk it lowers throughput (measured: 150 µs took 32 connections from
    /// ~40k to ~30k creates/s), so raise it only for a disk whose flushes are slow.
    pub max_wait: Duration,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            max_batch: 256,
            max_wait: Duration::ZERO,
        }
    }
}

/// Writes waiting for the committer; senders wait when it is full.
const QUEUE: usize = 4096;

/// What a write does inside the batch's transaction (`None`: there is none, it does nothing). It
/// answers whether the transaction is still sound (`false` after a storage error), and what to do
/// once the commit is known.
type Write = Box<dyn FnOnce(Option<&mut Tables<'_>>) -> (bool, Finish) + Send>;
/// Called with the outcome of the commit (the storage error's message if it failed): sends the
/// write's answer.
type Finish = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// The handle of the committer thread. Dropping it closes the queue and waits for the thread to
/// answer what it holds (at most one commit), so the database file is closed when it returns.
#[derive(Debug)]
pub(super) struct Committer {
    queue: Option<mpsc::Sender<Write>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    pub(super) fn start(db: Arc<Database>, options: GroupCommit) -> Result<Committer> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("zs-embedded-commit".into())
            .spawn(move || run(&db, rx, options))
            .map_err(|e| Error::Internal(format!("cannot start the store's committer: {e}")))?;
        Ok(Committer {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Runs `f` in the next group commit and answers its result once that commit is durable.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tables<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let stopped = || Error::Storage("the store's committer has stopped".into());
        let queue = self.queue.as_ref().ok_or_else(stopped)?;
        let (reply, answer) = oneshot::channel();
        let write: Write = Box::new(move |tx| {
            let outcome = tx.map(f);
            let sound = !matches!(outcome, Some(Err(Error::Storage(_) | Error::Internal(_))));
            let finish: Finish = Box::new(move |committed| {
                let answer = match (committed, outcome) {
                    (Ok(()), Some(outcome)) => outcome,
                    (Err(e), _) => Err(Error::Storage(e.to_owned())),
                    (Ok(()), None) => Err(stopped()),
                };
                // The caller may have gone (its request timed out); the write stands.
                let _ = reply.send(answer);
            });
            (sound, finish)
        });
        queue.send(write).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the embedded store's committer panicked");
            }
        }
    }
}

/// The committer's loop: a batch, one transaction, one commit, answers; until the queue closes.
fn run(db: &Database, mut rx: mpsc::Receiver<Write>, options: GroupCommit) {
    let max_batch = options.max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    while collect(&mut rx, &mut batch, max_batch, options.max_wait) {
        commit(db, &mut batch);
    }
}

/// How often the committer looks for more writes while it waits (a timer of the async runtime
/// would round `max_wait` up to a millisecond).
const POLL: Duration = Duration::from_micros(20);

/// Waits for a first write, then takes what is queued (and what comes within `max_wait`), up to
/// `max_batch`. `false` once the queue is closed and empty.
fn collect(
    rx: &mut mpsc::Receiver<Write>,
    batch: &mut Vec<Write>,
    max_batch: usize,
    max_wait: Duration,
) -> bool {
    let Some(first) = rx.blocking_recv() else {
        return false;
    };
    batch.push(first);
    let deadline = Instant::now() + max_wait;
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(w) => batch.push(w),
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                std::thread::sleep(POLL.min(deadline - now));
            }
            Err(TryRecvError::Disconnected) => break,
        }
    }
    true
}

/// One transaction for the whole batch; every write is answered with the commit's outcome.
fn commit(db: &Database, batch: &mut Vec<Write>) {
    let size = batch.len();
    let tx = match db.begin_write() {
        Ok(tx) => tx,
        Err(e) => {
            let e = e.to_string();
            tracing::error!(error = %e, writes = size, "cannot open a write transaction");
            for w in batch.drain(..) {
                let (_, finish) = w(None);
                finish(Err(&e));
            }
            return;
        }
    };
    let mut finishers = Vec::with_capacity(size);
    let mut sound = true;
    let mut tables = Tables::new(&tx);
    for w in batch.drain(..) {
        // A panicking write drops its reply, so its caller gets an error; the transaction may
        // be half-changed, so the batch is not committed.
        match catch_unwind(AssertUnwindSafe(|| w(Some(&mut tables)))) {
            Ok((ok, finish)) => {
                sound &= ok;
                finishers.push(finish);
            }
            Err(_) => {
                tracing::error!("a write panicked in the embedded store");
                sound = false;
            }
        }
    }
    drop(tables);
    let outcome = if sound {
        tx.commit().map_err(|e| e.to_string())
    } else {
        if let Err(e) = tx.abort() {
            tracing::warn!(error = %e, "aborting a failed batch");
        }
        Err(
            "a write of the same group commit failed in the store; nothing of it was written"
                .into(),
        )
    };
    if let Err(e) = &outcome {
        tracing::error!(error = %e, writes = size, "group commit failed");
    }
    for finish in finishers {
        finish(outcome.as_ref().map(|_| ()).map_err(String::as_str));
    }
}
