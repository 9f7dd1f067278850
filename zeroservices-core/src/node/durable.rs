//! A durable identity: a node given a state directory ([`crate::NodeBuilder::state_dir`])
//! keeps its `node_id` and continues its `seq` across restarts, SIGKILL included.
//!
//! `node.json` in the directory holds the node id and a *reservation*: a seq no event has
//! gone past. Before an event takes a seq above it, the node moves it one block further and
//! makes that durable (written to a temporary file, fsynced, renamed, directory fsynced). A
//! restarted node starts above the reservation, so a seq never repeats; a crash skips the
//! rest of a block, which hubs see as a hole: a client resuming from before it gets `resync`.
//!
//! Only one process may use a directory at a time (the embedded store, whose directory it
//! normally is, holds a lock on its file).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Seqs reserved at a time.
pub(crate) const SEQ_BLOCK: u64 = 1 << 20;
const FILE: &str = "node.json";

#[derive(Serialize, Deserialize)]
struct Saved {
    node_id: String,
    seq_reserved: u64,
}

/// Where a node's identity lives, and the seq its reservation reaches.
#[derive(Debug)]
pub(crate) struct Durable {
    dir: PathBuf,
    node_id: String,
    /// Seqs reserved at a time ([`SEQ_BLOCK`] but in tests).
    pub(crate) block: u64,
    /// No event took a seq above it (written before it is used).
    pub(crate) reserved: std::sync::atomic::AtomicU64,
    /// The last reservation could not be saved: events wait and writes are refused until it
    /// is (see `events::reserve`).
    pub(crate) failing: std::sync::atomic::AtomicBool,
}

impl Durable {
    /// Loads the identity of `dir` (a new one when there is none) and reserves the next block.
    /// Answers it with the last seq the previous runs may have used.
    pub(crate) fn open(dir: &Path, block: u64) -> Result<(Durable, u64)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let (node_id, used) = match std::fs::read(&path) {
            Ok(bytes) => {
                let s: Saved = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Storage(format!("{} is not a node identity: {e}", path.display()))
                })?;
                (s.node_id, s.seq_reserved)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (uuid::Uuid::new_v4().simple().to_string(), 0)
            }
            Err(e) => return Err(e.into()),
        };
        let d = Durable {
            dir: dir.to_owned(),
            node_id,
            block: block.max(1),
            reserved: std::sync::atomic::AtomicU64::new(used),
            failing: std::sync::atomic::AtomicBool::new(false),
        };
        d.reserve(used.saturating_add(d.block))?;
        Ok((d, used))
    }

    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Makes `upto` the durable reservation (blocking file I/O: a few milliseconds per block).
    pub(crate) fn reserve(&self, upto: u64) -> Result<()> {
        let body = serde_json::to_vec(&Saved {
            node_id: self.node_id.clone(),
            seq_reserved: upto,
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(FILE))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        self.reserved
            .store(upto, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_stays_and_seqs_never_repeat_across_reopens() {
        let dir = std::env::temp_dir().join(format!("zs-durable-{}", uuid::Uuid::new_v4()));
        let (a, used_a) = Durable::open(&dir, SEQ_BLOCK).expect("first");
        assert_eq!(used_a, 0);
        let id = a.node_id().to_owned();
        drop(a);
        let (b, used_b) = Durable::open(&dir, SEQ_BLOCK).expect("second");
        assert_eq!(b.node_id(), id);
        assert_eq!(
            used_b, SEQ_BLOCK,
            "the second run starts past the first's block"
        );
        std::fs::write(dir.join(FILE), b"garbage").expect("write");
        assert!(
            Durable::open(&dir, SEQ_BLOCK).is_err(),
            "a corrupt file is an error, not a new id"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
