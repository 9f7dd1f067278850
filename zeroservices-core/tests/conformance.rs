//! Runs the shared conformance suites on the built-in media and backends.

use std::sync::Arc;

use zeroservices_core::medium::{Inbox, Medium};
use zeroservices_core::testkit::{collection_conformance, medium_conformance};
use zeroservices_core::{
    Collection, EmbeddedStore, MemoryCollection, MemoryMedium, MemoryNetwork, ZmqConfig, ZmqMedium,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_medium_passes_the_medium_suite() {
    let net = MemoryNetwork::new();
    let cases = medium_conformance(Box::new(move |key| {
        let net = net.clone();
        Box::pin(async move {
            let (m, i) = MemoryMedium::attach_with_key(&net, key);
            Ok((Arc::new(m) as Arc<dyn Medium>, i as Inbox))
        })
    }))
    .await;
    assert!(cases >= 15, "only {cases} medium cases ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zmq_medium_passes_the_medium_suite() {
    let cases = medium_conformance(Box::new(|key| {
        Box::pin(async move {
            let (m, i) = ZmqMedium::bind(ZmqConfig {
                cluster_key: key,
                ..ZmqConfig::loopback()
            })
            .await?;
            Ok((Arc::new(m) as Arc<dyn Medium>, i))
        })
    }))
    .await;
    assert!(cases >= 15, "only {cases} medium cases ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_collection_passes_the_backend_suite() {
    let cases = collection_conformance(Box::new(|()| {
        Box::pin(async { Arc::new(MemoryCollection::new()) as Arc<dyn Collection> })
    }))
    .await;
    assert!(cases >= 80, "only {cases} backend cases ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_collection_passes_the_backend_suite() {
    let dir = std::env::temp_dir().join(format!("zs-conformance-{}", std::process::id()));
    let store = EmbeddedStore::open(&dir).expect("open store");
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let cases = collection_conformance(Box::new(move |()| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let c = store.collection(&format!("c{n}"));
        Box::pin(async move { Arc::new(c) as Arc<dyn Collection> })
    }))
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(cases >= 80, "only {cases} backend cases ran");
}
