//! [`Node`], the owner of a running node: the one value that keeps it running and stops it.
//! Everything else (requests, collections, events) is on [`NodeHandle`], which the owner
//! dereferences to and hands out with [`Node::handle`].

use std::fmt;
use std::ops::Deref;

use tokio_util::sync::CancellationToken;

use super::{NodeBuilder, NodeHandle};

/// A running node, owned: returned by [`NodeBuilder::start`]. It derefs to [`NodeHandle`], so
/// every call of a handle works on it too; [`Node::handle`] gives cheap clones to tasks and
/// servers. Dropping the owner stops the node's tasks at once; [`Node::shutdown`] stops it in
/// order and reports what went wrong.
///
/// ```
/// use std::sync::Arc;
/// use serde_json::json;
/// use zeroservices_core::{CollectionSpec, Node, store::MemoryCollection, medium::MemoryNetwork};
///
/// # #[tokio::main] async fn main() -> zeroservices_core::Result<()> {
/// let node = Node::builder("todo")
///     .memory(&MemoryNetwork::new())
///     .collection(CollectionSpec::new("todos", Arc::new(MemoryCollection::new())))
///     .start()
///     .await?;
/// let todos = node.collection("todos"); // here or on any node of the cluster
/// let t = todos.create(Some("t1"), json!({"title": "write docs"})).await?;
/// assert_eq!(todos.get(&t.resource_id).await?.resource_data["title"], "write docs");
/// let report = node.shutdown().await;
/// assert!(report.is_clean(), "{report:?}");
/// # Ok(()) }
/// ```
pub struct Node {
    handle: NodeHandle,
    stop_on_drop: CancellationToken,
}

impl Node {
    /// Starts configuring a node named `name`.
    pub fn builder(name: &str) -> NodeBuilder {
        NodeBuilder::new(name)
    }

    pub(super) fn own(handle: NodeHandle) -> Node {
        let stop_on_drop = handle.shutdown_token();
        Node {
            handle,
            stop_on_drop,
        }
    }

    /// A cheap handle on this node, for tasks, servers and callbacks. It does not keep the node
    /// running.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Stops the node in order: requests from peers are refused (`shutdown`) while the ones
    /// running finish (at most the request timeout); then the tasks stop (discovery says bye)
    /// after the event publisher sent every queued change, and a task that does not stop
    /// within 2 s is aborted; the medium sends the last events (at most 2 s) and the hosted
    /// stores are flushed. Call it after the HTTP server stopped, so every acknowledged write
    /// has queued its event. The report says which tasks had panicked or were aborted.
    pub async fn shutdown(self) -> ShutdownReport {
        self.handle.stop().await
    }
}

impl Deref for Node {
    type Target = NodeHandle;

    fn deref(&self) -> &NodeHandle {
        &self.handle
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_on_drop.cancel();
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.handle.name())
            .field("node_id", &self.handle.node_id())
            .finish()
    }
}

/// What [`Node::shutdown`] found. Each problem was also logged when found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Node tasks (by name) that had ended in a panic.
    pub panicked: Vec<&'static str>,
    /// Node tasks that did not stop within 2 s and were aborted.
    pub aborted: Vec<&'static str>,
    /// Requests from peers were still running when the request timeout ran out.
    pub requests_unfinished: bool,
    /// Collections whose store failed to flush.
    pub flush_failed: Vec<String>,
}

impl ShutdownReport {
    /// True when nothing went wrong.
    pub fn is_clean(&self) -> bool {
        self.panicked.is_empty()
            && self.aborted.is_empty()
            && !self.requests_unfinished
            && self.flush_failed.is_empty()
    }
}
