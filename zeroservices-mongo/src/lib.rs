//! # ZeroServices MongoDB backend
//!
//! [`MongoCollection`] stores a collection in MongoDB with the official driver, like the
//! original's `MongoDBCollection("power", "db")`. It passes the shared backend conformance
//! suite (`zeroservices-testkit`, one test per case).
//!
//! # Layout
//! - `store`: [`MongoStore`] (client + database) and [`MongoCollection`] (the `Collection` impl);
//!   `store/server.rs`: what the server runs (pushed-down lists, counts, server-side patches).
//! - `pushdown`: what of a list query MongoDB runs (filters, sorts, projections translated
//!   exactly, or left to the node).
//! - `recent`: the documents a collection remembers for one-round-trip patches.
//! - `convert`: JSON ↔ BSON, ids (string or ObjectId), the version field, and error mapping.
//!
//! Arrows point down: `store` → `pushdown`, `recent` → `convert` → `zeroservices_core`.
//!
//! Stored layout: the resource data's fields at the top level of the document; `_id` is the
//! resource id — generated ids are ObjectIds (shown as 24 hex digits), client-chosen ids are
//! strings. A 24-hex-digit id in a request finds either form.
//!
//! ```no_run
//! # async fn demo() -> zeroservices_core::Result<()> {
//! use std::sync::Arc;
//! use zeroservices_core::CollectionSpec;
//! use zeroservices_mongo::MongoStore;
//!
//! let store = MongoStore::connect("mongodb://127.0.0.1:27017/power_db").await?;
//! let spec = CollectionSpec::new("power", Arc::new(store.collection("power")));
//! # drop(spec); Ok(()) }
//! ```

mod convert;
mod pushdown;
mod recent;
mod store;

pub use store::{MongoCollection, MongoStore};

/// The MongoDB driver this crate is built on, for [`MongoStore::from_client`].
pub use mongodb;
