//! # ZeroServices
//!
//! Resource-oriented async microservices: nodes discover each other by UDP multicast (or seed
//! endpoints), talk over ZeroMQ, serve collections persisted in an embedded store or MongoDB,
//! broadcast every change as an event, run workers on matching events, and expose a generated
//! REST API plus a live websocket feed.
//!
//! # Layout
//! - [`core`]: re-export of `zeroservices-core` (nodes, media, discovery, resources, workers).
//! - [`http`]: re-export of `zeroservices-http` (REST, `/realtime`, health, metrics, OpenAPI).
//! - [`options`]: the command-line settings shared by the `zeroservices` binary and the examples
//!   (store, discovery, sockets) and how they build a node.
//! - [`config`]: `--config FILE` (TOML) for `serve`.
//! - [`skeleton`]: `zeroservices new NAME`, a project skeleton.
//! - [`web`]: the JavaScript client (and React) as the example pages load them.
//! - `src/main.rs`: the `zeroservices` CLI (`serve`, `sniff`, `nodes`, `new`).
//!
//! # Features
//! All on by default. `zmq`, `nats` (media), `embedded` (the redb store), `http` (REST and
//! websocket: [`http`]), `mongo` (the MongoDB store), and `cli` (the binary and the modules it
//! shares with the examples, which needs all the others). A library user who wants NATS only
//! builds neither libzmq nor redb nor MongoDB's driver:
//! `zeroservices = { version = "0.1", default-features = false, features = ["nats"] }`.

pub use zeroservices_core as core;
#[cfg(feature = "http")]
pub use zeroservices_http as http;
#[cfg(feature = "mongo")]
pub use zeroservices_mongo as mongo;

/// The README, whose Rust example is compiled (and type-checked) with the doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[cfg(feature = "cli")]
pub mod config;
#[cfg(feature = "cli")]
pub mod options;
#[cfg(feature = "cli")]
pub mod skeleton;
#[cfg(feature = "cli")]
pub mod web;
