//! In-process discovery over a broadcast channel, for tests on [`MemoryMedium`](crate::MemoryMedium).

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{Discovery, DiscoveryContext, Heard};
use crate::error::Result;
use crate::protocol::{AnnounceKind, Announcement};

/// The shared "multicast group" of in-process nodes.
#[derive(Debug, Clone)]
pub struct MemoryDiscoveryBus(broadcast::Sender<Announcement>);

impl MemoryDiscoveryBus {
    /// A new bus. Listeners that lag behind miss announcements, like datagrams.
    pub fn new() -> MemoryDiscoveryBus {
        MemoryDiscoveryBus(broadcast::channel(1024).0)
    }
}

impl Default for MemoryDiscoveryBus {
    fn default() -> Self {
        Self::new()
    }
}

/// Discovery through a [`MemoryDiscoveryBus`].
#[derive(Debug)]
pub struct MemoryDiscovery(MemoryDiscoveryBus);

impl MemoryDiscovery {
    /// Discovery on `bus`.
    pub fn new(bus: &MemoryDiscoveryBus) -> MemoryDiscovery {
        MemoryDiscovery(bus.clone())
    }
}

#[async_trait]
impl Discovery for MemoryDiscovery {
    async fn run(self: Box<Self>, mut ctx: DiscoveryContext) -> Result<()> {
        let bus = self.0 .0;
        let mut rx = bus.subscribe();
        let mut tick = tokio::time::interval(ctx.heartbeat);
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = tick.tick() => { let _ = bus.send(ctx.me.borrow().clone()); }
                _ = ctx.me.changed() => { let _ = bus.send(ctx.me.borrow_and_update().clone()); }
                got = rx.recv() => match got {
                    Ok(a) => {
                        if a.node_id != ctx.me.borrow().node_id {
                            let h = Heard { announcement: a, source: None, direct: true };
                            if ctx.heard.send(h).await.is_err() { break; }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "memory discovery lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        let mut bye = ctx.me.borrow().clone();
        bye.kind = AnnounceKind::Bye;
        // No listener left is fine: nobody needs the bye then.
        let _ = bus.send(bye);
        Ok(())
    }
}
