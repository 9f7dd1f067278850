//! Built-in collection backends: [`MemoryCollection`] (volatile) and the embedded persistent
//! store [`EmbeddedStore`] (redb; the default of the CLI and examples).

mod embedded;
mod memory;

pub use self::embedded::{EmbeddedCollection, EmbeddedStore, GroupCommit};
pub use self::memory::MemoryCollection;
