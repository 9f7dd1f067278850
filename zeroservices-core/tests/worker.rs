//! Workers: run on matching events, and catch up on start (and periodically) on resources that
//! match but were created while no worker was running.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use zeroservices_core::{
    discovery::{MemoryDiscovery, MemoryDiscoveryBus},
    medium::MemoryNetwork,
    query::ListQuery,
    store::MemoryCollection,
    CollectionSpec, Node, Worker,
};

async fn wait_all_done(node: &Node, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let q = ListQuery {
            filter: serde_json::from_value(json!({"status": "done"})).expect("filter"),
            limit: Some(0),
            ..ListQuery::default()
        };
        if node
            .collection("power")
            .list(&q)
            .await
            .map(|p| p.total)
            .unwrap_or(0)
            == n
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not all {n} powers done after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_late_catches_up_then_follows_events() {
    let (net, bus) = (MemoryNetwork::new(), MemoryDiscoveryBus::new());
    let service = Node::builder("power")
        .memory(&net)
        .discovery(MemoryDiscovery::new(&bus))
        .heartbeat(Duration::from_millis(50))
        .collection(CollectionSpec::new(
            "power",
            Arc::new(MemoryCollection::new()),
        ))
        .start()
        .await
        .unwrap();
    // Created while no worker exists: only the catch-up can see them.
    for v in 0..20 {
        service
            .collection("power")
            .create(None, json!({"value": v, "status": "pending"}))
            .await
            .unwrap();
    }
    let worker_node = Node::builder("worker")
        .memory(&net)
        .discovery(MemoryDiscovery::new(&bus))
        .heartbeat(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let _w = Worker::new(&worker_node)
        .catch_up_every(Duration::from_millis(200))
        .rule("power", json!({"status": "pending"}), move |ctx| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                let v = ctx.resource.resource_data["value"].as_i64().unwrap_or(0);
                ctx.node
                    .collection("power")
                    .patch(
                        &ctx.resource.resource_id,
                        json!({"$set": {"status": "done", "result": v * v}}),
                    )
                    .await?;
                Ok(())
            }
        })
        .unwrap()
        .start();
    wait_all_done(&service, 20).await;
    // New ones are handled through events.
    for v in 20..30 {
        service
            .collection("power")
            .create(None, json!({"value": v, "status": "pending"}))
            .await
            .unwrap();
    }
    wait_all_done(&service, 30).await;
    let all = service
        .collection("power")
        .list(&ListQuery::default())
        .await
        .unwrap();
    for r in all.items {
        let v = r.resource_data["value"].as_i64().unwrap();
        assert_eq!(r.resource_data["result"].as_i64(), Some(v * v));
    }
    // Each resource was worked on once or, rarely, twice (an event and a catch-up racing):
    // never 3 times and never missed.
    let n = runs.load(Ordering::Relaxed);
    assert!(
        (30..=40).contains(&n),
        "callback ran {n} times for 30 resources"
    );
}
