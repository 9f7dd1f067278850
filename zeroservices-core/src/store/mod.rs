//! Built-in collection backends: [`MemoryCollection`] (volatile) and the embedded persistent
//! store [`EmbeddedStore`] (redb; the default of the CLI and examples).

#[cfg(feature = "embedded")]
mod embedded;
mod memory;

#[cfg(feature = "embedded")]
pub use self::embedded::{EmbeddedCollection, EmbeddedStore, GroupCommit};
pub use self::memory::MemoryCollection;
