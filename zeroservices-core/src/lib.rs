//! # ZeroServices core
//!
//! Nodes that find each other with zero configuration, talk over ZeroMQ, serve collections,
//! broadcast every change as an event and run workers on matching events.
//!
//! # Layout
//! - [`protocol`]: the wire format (announcements, frames, replies, topics); see docs/protocol.md.
//! - [`medium`]: moving bytes between nodes — [`ZmqMedium`], [`NatsMedium`], [`MemoryMedium`].
//! - [`discovery`]: finding peers — [`MulticastDiscovery`], [`StaticDiscovery`], [`MemoryDiscovery`].
//! - [`directory`]: who is alive, what they provide, round-trip times.
//! - [`node`]: the [`Node`] tying it together, with the [`Service`] hooks.
//! - [`resources`]: collections, resource requests, change events, custom actions, schemas.
//! - [`query`]: the filter/update/sort/projection language shared by every backend.
//! - [`store`]: [`MemoryCollection`] and the embedded persistent [`EmbeddedStore`].
//! - [`worker`]: rules that run a callback on matching resources.
//! - `cluster_key`: the optional shared [`ClusterKey`] authenticating every frame and datagram.
//! - [`error`]: the [`Error`] type.

mod cluster_key;
pub mod directory;
pub mod discovery;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod medium;
pub mod node;
pub mod protocol;
pub mod query;
pub mod resources;
pub mod store;
mod task;
pub mod worker;

pub use cluster_key::ClusterKey;
pub use directory::{Directory, PeerInfo};
pub use discovery::{
    Discovery, MemoryDiscovery, MemoryDiscoveryBus, MulticastConfig, MulticastDiscovery,
    NoDiscovery, StaticDiscovery,
};
pub use error::{Error, Result};
pub use medium::{
    Event, Medium, MemoryMedium, MemoryNetwork, NatsConfig, NatsMedium, ZmqConfig, ZmqMedium,
};
pub use node::{
    ActionContext, ActionFn, CollectionClient, CollectionSpec, Node, NodeBuilder, PeerEvent,
    Service, Subscription, Tap, TapFn, MAX_LEASE, MAX_LEASES,
};
pub use protocol::{Announcement, NodeType};
pub use query::ListQuery;
pub use resources::{Action, Collection, ListPage, Resource, ResourceEvent, ResourceRequest};
pub use store::{EmbeddedStore, GroupCommit, MemoryCollection};
pub use worker::{Worker, WorkerHandle};
