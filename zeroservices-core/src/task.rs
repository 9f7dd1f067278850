//! Ownership of background tasks: a task lives exactly as long as the guard that owns it.

use tokio::task::JoinHandle;

/// Aborts its task when dropped, so no background task outlives its owner.
#[derive(Debug)]
pub(crate) struct TaskGuard(JoinHandle<()>);

impl TaskGuard {
    /// Spawns `fut` on the current runtime, owned by the returned guard.
    pub(crate) fn spawn<F>(fut: F) -> TaskGuard
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        TaskGuard(tokio::spawn(fut))
    }

    /// True once the task has ended (finished, panicked or aborted).
    #[cfg_attr(not(feature = "zmq"), allow(dead_code))]
    pub(crate) fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
