//! On a medium with work queues (NATS JetStream) a job is never dropped when its claim is
//! refused (issue 25, point 3): an event for a resource whose job is running, here or on
//! another worker of the group, comes back after that job (NAK with a delay), and a stopping
//! worker hands its jobs back at once instead of leaving them to expire.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zeroservices_core::medium::NatsConfig;
use zeroservices_core::{store::MemoryCollection, CollectionSpec, Node, Worker};
use zeroservices_testkit::nats::NatsServer;

async fn node(url: &str, name: &str, power: bool) -> Node {
    let mut b = Node::builder(name)
        .nats(NatsConfig::new([url]))
        .heartbeat(Duration::from_millis(200));
    if power {
        b = b.collection(CollectionSpec::new(
            "power",
            Arc::new(MemoryCollection::new()),
        ));
    }
    let n = b.start().await.expect("node on NATS");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !power && n.directory().providers("power").is_empty() {
        assert!(
            Instant::now() < deadline,
            "{name}: no provider of power after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n
}

/// Waits (at most `limit`) until the power `id` satisfies `done`; its data at the end.
async fn wait_for(c: &Node, id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let data = c
            .collection("power")
            .get(id)
            .await
            .expect("get")
            .resource_data;
        if done(&data) {
            return data;
        }
        assert!(Instant::now() < deadline, "after {limit:?}, {id} is {data}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_a_resource_whose_job_runs_is_not_dropped() {
    let nats = NatsServer::start();
    let url = nats.url();
    let service = node(&url, "service", true).await;
    let calls = Arc::new(AtomicUsize::new(0));
    // Two workers of one group. The job of a power without a value does nothing (there is
    // nothing to square yet), slowly; one with a value is squared.
    let mut workers = Vec::new();
    for i in 0..2 {
        let n = node(&url, &format!("worker{i}"), false).await;
        let calls = calls.clone();
        let w = Worker::new(&n)
            .lease(Duration::from_secs(2))
            .rule("power", json!({"status": "pending"}), move |ctx| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    let data = &ctx.resource.resource_data;
                    let Some(v) = data["value"].as_i64() else {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                        return Ok(());
                    };
                    let done = json!({"$set": {"status": "done", "result": v * v}});
                    ctx.node
                        .collection("power")
                        .patch(&ctx.resource.resource_id, done)
                        .await?;
                    Ok(())
                }
            })
            .expect("rule")
            .start();
        workers.push((n, w));
    }
    let power = service.collection("power");
    power
        .create(Some("p"), json!({"status": "pending"}))
        .await
        .expect("create");
    // The first job has claimed it (and sleeps) when the value arrives.
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no job started after 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    power
        .patch("p", json!({"$set": {"value": 7}}))
        .await
        .expect("patch");
    let data = wait_for(&service, "p", Duration::from_secs(20), |d| {
        d["status"] == "done"
    })
    .await;
    assert_eq!(data["result"], 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_hands_its_job_back_at_once() {
    let nats = NatsServer::start();
    let url = nats.url();
    let service = node(&url, "service", true).await;
    // A worker whose job never ends, with a long lease: without a hand-back, the job would
    // wait 30 s for the lease and the acknowledgement deadline.
    let stuck = node(&url, "stuck", false).await;
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let w = Worker::new(&stuck)
        .lease(Duration::from_secs(30))
        .rule("power", json!({"status": "pending"}), move |_ctx| {
            s.fetch_add(1, Ordering::SeqCst);
            futures::future::pending::<zeroservices_core::Result<()>>()
        })
        .expect("rule")
        .start();
    service
        .collection("power")
        .create(Some("p"), json!({"status": "pending", "value": 3}))
        .await
        .expect("create");
    let deadline = Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the stuck job did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stop_at = Instant::now();
    w.stop();
    let healthy = node(&url, "healthy", false).await;
    let _w2 = Worker::new(&healthy)
        .lease(Duration::from_secs(30))
        .rule("power", json!({"status": "pending"}), |ctx| async move {
            let v = ctx.resource.resource_data["value"].as_i64().unwrap_or(0);
            let done = json!({"$set": {"status": "done", "result": v * v}});
            ctx.node
                .collection("power")
                .patch(&ctx.resource.resource_id, done)
                .await?;
            Ok(())
        })
        .expect("rule")
        .start();
    let data = wait_for(&service, "p", Duration::from_secs(10), |d| {
        d["status"] == "done"
    })
    .await;
    assert_eq!(data["result"], 9);
    println!("done {:?} after the stop", stop_at.elapsed());
    drop(stuck);
}
