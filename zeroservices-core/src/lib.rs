//! # ZeroServices core
//!
//! Nodes that find each other with zero configuration, talk over ZeroMQ, serve collections,
//! broadcast every change as an event and run workers on matching events.
//!
//! # Quick start
//!
//! The FOSDEM power demo in one process: a node serving the `power` collection, and a worker
//! that squares `value` for every power in status `pending`. Here the node sits on an
//! in-process network; [`Node::builder`] without [`NodeBuilder::memory`] uses ZeroMQ (on
//! loopback unless a [`ClusterKey`] is set), and a [`discovery::MulticastDiscovery`] or
//! [`discovery::StaticDiscovery`] lets nodes of other processes and hosts find it.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use serde_json::json;
//! use zeroservices_core::{CollectionSpec, Node, Worker, store::MemoryCollection, medium::MemoryNetwork};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> zeroservices_core::Result<()> {
//! let node = Node::builder("power-service")
//!     .memory(&MemoryNetwork::new())
//!     .collection(CollectionSpec::new("power", Arc::new(MemoryCollection::new())))
//!     .start()
//!     .await?;
//! let _worker = Worker::new(&node)
//!     .rule("power", json!({"status": "pending"}), |ctx| async move {
//!         let v = ctx.resource.resource_data["value"].as_i64().unwrap_or(0);
//!         let done = json!({"$set": {"status": "done", "result": v * v}});
//!         ctx.node.collection("power").patch(&ctx.resource.resource_id, done).await?;
//!         Ok(())
//!     })?
//!     .start();
//! let mut events = node.subscribe("power.patch");
//! let power = node.collection("power");
//! let created = power.create(None, json!({"value": 7, "status": "pending"})).await?;
//! // The worker's patch arrives as an event; then the power is done.
//! tokio::time::timeout(Duration::from_secs(10), events.recv()).await.ok().flatten();
//! let now = power.get(&created.resource_id).await?;
//! assert_eq!(now.resource_data["result"], 49);
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! One path per public type. At the root: the node and what runs on it.
//! - [`Node`] (the owner, from [`NodeBuilder::start`]) and [`NodeHandle`] (what hooks, workers
//!   and servers hold), with the [`Service`] hooks, [`CollectionSpec`] and [`CollectionClient`].
//! - [`Worker`]: rules that run a callback on matching resources.
//! - [`Directory`]: who is alive, what they provide, round-trip times.
//! - [`Error`], and the optional shared [`ClusterKey`] authenticating every frame and datagram.
//!
//! Each subsystem in its module:
//! - [`medium`]: moving bytes between nodes — [`medium::ZmqMedium`], [`medium::NatsMedium`],
//!   [`medium::MemoryMedium`], and what a medium written in another crate needs (reply bodies,
//!   topic matching, [`medium::MessageKind`], the optional capability traits). The wire format
//!   itself is private; docs/protocol.md describes it.
//! - [`discovery`]: finding peers — [`discovery::MulticastDiscovery`],
//!   [`discovery::StaticDiscovery`], [`discovery::MemoryDiscovery`].
//! - [`resources`]: collections, resource requests, change events, custom actions, schemas.
//! - [`query`]: the filter/update/sort/projection language shared by every backend.
//! - [`store`]: [`store::MemoryCollection`] and the embedded persistent [`store::EmbeddedStore`].
//!
//! # Features
//! `zmq` (the ZeroMQ medium: libzmq, built with a C++ compiler), `nats` (the NATS medium and
//! NATS discovery) and `embedded` (the embedded store) are on by default. A NATS-only user:
//! `default-features = false, features = ["nats"]`.

// One path per public type: the node, its owner and handle, workers, errors and the directory
// are at the root; each subsystem's types are in its module (`medium::ZmqConfig`,
// `store::MemoryCollection`, `query::ListQuery`, `resources::Action`, `discovery::NoDiscovery`).
mod cluster_key;
mod directory;
pub mod discovery;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod medium;
mod node;
mod protocol;
pub mod query;
pub mod resources;
pub mod store;
mod task;
pub mod trace;
mod worker;

pub use cluster_key::ClusterKey;
pub use directory::{Directory, PeerInfo};
pub use error::{Error, Result};
pub use node::{
    ActionContext, ActionFn, CollectionClient, CollectionSpec, Node, NodeBuilder, NodeHandle,
    PeerEvent, Service, ShutdownReport, Subscription, Tap, TapFn, MAX_LEASE, MAX_LEASES,
};
pub use protocol::{AnnounceKind, Announcement, Endpoints, NodeType, PROTOCOL_VERSION};
pub use worker::{WorkContext, Worker, WorkerHandle};
