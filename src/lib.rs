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

pub use zeroservices_core as core;
pub use zeroservices_http as http;

/// The README, whose Rust example is compiled (and type-checked) with the doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod config;
pub mod options;
pub mod skeleton;
pub mod web;
