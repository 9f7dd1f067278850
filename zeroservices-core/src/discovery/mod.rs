//! Discovery tells a node who else is in the cluster: [`MulticastDiscovery`] on a LAN (zero
//! configuration), [`StaticDiscovery`] from seed endpoints where multicast does not pass,
//! [`NatsDiscovery`] on the NATS medium, and
//! [`MemoryDiscovery`] for in-process tests.
//!
//! A discovery re-announces the node every heartbeat, reports every announcement it hears as a
//! [`Heard`], and says `bye` when the node shuts down. Deciding that a silent peer is gone is
//! the [`Directory`](crate::Directory)'s job, not the discovery's.

mod memory;
mod multicast;
#[cfg(feature = "nats")]
mod nats;
mod static_seed;

pub use self::memory::{MemoryDiscovery, MemoryDiscoveryBus};
pub use self::multicast::{MulticastConfig, MulticastDiscovery};
#[cfg(feature = "nats")]
pub use self::nats::NatsDiscovery;
pub use self::static_seed::StaticDiscovery;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::directory::Directory;
use crate::error::Result;
use crate::protocol::Announcement;

/// An announcement as heard by a discovery.
#[derive(Debug, Clone)]
pub struct Heard {
    /// What the peer said.
    pub announcement: Announcement,
    /// Source address of the datagram, when known; used for endpoints announced as `0.0.0.0`.
    pub source: Option<IpAddr>,
    /// `true` when heard from the peer itself (refreshes its liveness); `false` when relayed by
    /// another node (only introduces a peer not yet known).
    pub direct: bool,
}

/// What a running discovery gets from its node.
#[derive(Debug)]
pub struct DiscoveryContext {
    /// This node's current announcement (changes when collections are registered).
    pub me: watch::Receiver<Announcement>,
    /// Where heard announcements go. Bounded: when the node lags, announcements wait.
    pub heard: mpsc::Sender<Heard>,
    /// Announce period.
    pub heartbeat: Duration,
    /// Fires when the node shuts down; the discovery then says `bye` and returns.
    pub shutdown: CancellationToken,
    /// The node's directory (static discovery announces to every known peer too).
    pub directory: Directory,
    /// When set, announcements are sealed with this key and unauthenticated ones dropped.
    pub cluster_key: Option<std::sync::Arc<crate::ClusterKey>>,
    /// The node's medium (static discovery announces through it).
    pub medium: std::sync::Arc<dyn crate::medium::Medium>,
}

/// A way of finding peers. Object-safe; the node runs it in a task it owns.
#[async_trait]
pub trait Discovery: Send + Sync + fmt::Debug + 'static {
    /// Announces and listens until `ctx.shutdown` fires, then says `bye` and returns.
    async fn run(self: Box<Self>, ctx: DiscoveryContext) -> Result<()>;
}

/// No discovery: a lone node, or peers added by hand.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDiscovery;

#[async_trait]
impl Discovery for NoDiscovery {
    async fn run(self: Box<Self>, ctx: DiscoveryContext) -> Result<()> {
        ctx.shutdown.cancelled().await;
        Ok(())
    }
}
