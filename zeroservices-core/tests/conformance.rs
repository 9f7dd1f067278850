//! The shared conformance cases on the built-in media and backends: one test per case per
//! medium or backend (`zeroservices-testkit`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use zeroservices_core::medium::{Inbox, Medium, NatsConfig, NatsMedium};
use zeroservices_core::{
    medium::{MemoryMedium, MemoryNetwork, ZmqConfig, ZmqMedium},
    resources::Collection,
    store::EmbeddedStore,
};
use zeroservices_testkit::{collection_factory, CollectionFactory, MediumFactory};

fn memory_medium() -> MediumFactory {
    let net = MemoryNetwork::new();
    Box::new(move |key| {
        let net = net.clone();
        Box::pin(async move {
            let (m, i) = MemoryMedium::attach_with_key(&net, key);
            Ok((Arc::new(m) as Arc<dyn Medium>, i as Inbox))
        })
    })
}

fn zmq_medium() -> MediumFactory {
    Box::new(|key| {
        Box::pin(async move {
            let (m, i) = ZmqMedium::bind(ZmqConfig {
                cluster_key: key,
                ..ZmqConfig::loopback()
            })
            .await?;
            Ok((Arc::new(m) as Arc<dyn Medium>, i))
        })
    })
}

/// NATS media on a server of their own (killed when the factory is dropped).
fn nats_medium() -> MediumFactory {
    let server = Arc::new(zeroservices_testkit::nats::NatsServer::start());
    Box::new(move |key| {
        let server = server.clone();
        Box::pin(async move {
            let mut cfg = NatsConfig::new([server.url()]);
            cfg.cluster_key = key;
            let (m, i) = NatsMedium::connect(cfg).await?;
            Ok((Arc::new(m) as Arc<dyn Medium>, i))
        })
    })
}

/// Collections of one embedded store in a fresh directory (removed when the store is dropped
/// with the factory).
fn embedded() -> CollectionFactory {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "zs-conformance-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let store = EmbeddedStore::open(&dir).expect("open store");
    // The directory's name is no longer needed once the file is open.
    let _ = std::fs::remove_dir_all(&dir);
    let counter = AtomicU64::new(0);
    collection_factory(move || {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        Arc::new(store.collection(&format!("c{n}"))) as Arc<dyn Collection>
    })
}

/// Embedded collections with secondary indexes on the fields the suite filters and sorts on:
/// lists answered or narrowed by an index must give what a full read gives.
fn embedded_indexed() -> CollectionFactory {
    let plain = embedded();
    Box::new(move || {
        let made = plain();
        Box::pin(async move {
            let c = made.await;
            for path in [
                "status",
                "score",
                "age",
                "tags",
                "addr.city",
                "name",
                "items.n",
                "n",
                "value",
            ] {
                c.ensure_index(path).await.expect("index");
            }
            c
        })
    })
}

mod memory_medium {
    zeroservices_testkit::medium_suite!(super::memory_medium());
}

mod zmq_medium {
    zeroservices_testkit::medium_suite!(super::zmq_medium());
}

mod nats_medium {
    zeroservices_testkit::medium_suite!(super::nats_medium());
}

mod memory_collection {
    zeroservices_testkit::collection_suite!(zeroservices_testkit::collection_factory(|| {
        std::sync::Arc::new(zeroservices_core::store::MemoryCollection::new())
    }));
}

mod embedded_collection {
    zeroservices_testkit::collection_suite!(super::embedded());
}

mod embedded_indexed_collection {
    zeroservices_testkit::collection_suite!(super::embedded_indexed());
}
