//! Group commit in the embedded store: writes that share a transaction still get their own
//! results, a failing write leaves the others (and its own record) as they were, and the store
//! closes its file when its last handle is dropped.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use zeroservices_core::query::Update;
use zeroservices_core::resources::Collection;
use zeroservices_core::store::{EmbeddedStore, GroupCommit};
use zeroservices_core::Error;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("zs-group-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Many writers at once, with a wait so that they surely share batches: each one gets its own
/// answer, conflicts and bad updates fail alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_one_batch_get_their_own_results() {
    let dir = temp_dir("results");
    let store = EmbeddedStore::open_with(
        &dir,
        GroupCommit {
            max_batch: 64,
            max_wait: Duration::from_millis(5),
        },
    )
    .expect("open");
    let power = Arc::new(store.collection("power"));
    power
        .create(Some("text".into()), json!({"name": "a", "n": 0}))
        .await
        .expect("seed");

    let mut tasks = Vec::new();
    for i in 0..32 {
        let p = power.clone();
        tasks.push(tokio::spawn(async move {
            (
                "unique",
                p.create(Some(format!("u{i}")), json!({"i": i})).await.err(),
            )
        }));
        let p = power.clone();
        tasks.push(tokio::spawn(async move {
            (
                "same",
                p.create(Some("same".into()), json!({"i": i})).await.err(),
            )
        }));
        let p = power.clone();
        let update = if i % 2 == 0 {
            // $inc of a string: refused by the update, after it was read in the batch
            Update::parse(&json!({"$inc": {"name": 1}, "$set": {"half": true}})).expect("parse")
        } else {
            Update::parse(&json!({"$inc": {"n": 1}})).expect("parse")
        };
        tasks.push(tokio::spawn(async move {
            let kind = if i % 2 == 0 { "bad patch" } else { "patch" };
            (kind, p.patch("text", &update).await.err())
        }));
    }
    let (mut same_ok, mut same_conflict) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            ("unique", None) | ("patch", None) => {}
            ("same", None) => same_ok += 1,
            ("same", Some(Error::Conflict(_))) => same_conflict += 1,
            ("bad patch", Some(Error::BadRequest(_))) => {}
            (kind, e) => panic!("{kind}: unexpected {e:?}"),
        }
    }
    assert_eq!((same_ok, same_conflict), (1, 31));
    for i in 0..32 {
        let r = power
            .get(&format!("u{i}"))
            .await
            .expect("unique create kept");
        assert_eq!(r.resource_data, json!({"i": i}));
    }
    // 16 good increments, and nothing of the 16 refused patches (not even their $set)
    let text = power.get("text").await.expect("get");
    assert_eq!(text.resource_data, json!({"name": "a", "n": 16}));
    drop((power, store));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Dropping the last handle closes the database: it can be reopened at once, with every
/// acknowledged write in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_right_after_drop_finds_every_acknowledged_write() {
    let dir = temp_dir("reopen");
    for round in 0..3 {
        let store = EmbeddedStore::open(&dir).expect("reopen at once");
        let power = Arc::new(store.collection("power"));
        let writers: Vec<_> = (0..50)
            .map(|i| {
                let p = power.clone();
                tokio::spawn(async move {
                    p.create(Some(format!("r{round}-{i}")), json!({"i": i}))
                        .await
                })
            })
            .collect();
        for w in writers {
            w.await.expect("task").expect("create");
        }
        let all = power.list(&Default::default()).await.expect("list");
        assert_eq!(all.total, 50 * (round + 1));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One write at a time (a single-threaded caller): each commits alone and is readable at once.
#[tokio::test(flavor = "current_thread")]
async fn a_lone_write_commits_on_its_own() {
    let dir = temp_dir("lone");
    let store = EmbeddedStore::open(&dir).expect("open");
    let power = store.collection("power");
    for i in 0..20 {
        power
            .create(Some(format!("l{i}")), json!({"i": i}))
            .await
            .expect("create");
        let r = power
            .get(&format!("l{i}"))
            .await
            .expect("visible after ack");
        assert_eq!(r.resource_data, json!({"i": i}));
    }
    drop((power, store));
    let _ = std::fs::remove_dir_all(&dir);
}
