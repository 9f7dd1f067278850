//! The `lists` workload: queries run by the store (issue "queries run by the store").
//!
//! - `lists embedded [N]`: an embedded store with N resources (default 1 000 000; 1% have
//!   `status: "pending"`, `value` runs 0..N). The same queries without an index, then after
//!   `status` and `value` are indexed (built from the stored records): `{"status":"pending"}`
//!   limit 100, and `{"value": {"$gte": a, "$lt": a + 1000}}` sorted by `-value`, limit 10.
//! - `lists mongo URI [N]`: a MongoDB collection of N documents (default 100 000); a range filter
//!   with limit 10 as the MongoDB store runs it (on the server) beside the path before (every
//!   document read, then filtered in the node), counting the documents each reads from the server
//!   (the driver's command monitoring).
//!
//! Timings are of `Collection::list` in this process (the store's work, no HTTP); samples of the
//! two variants of a query alternate so that drift hits both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::event::{command::CommandEvent, EventHandler};
use serde_json::{json, Value};
use zeroservices_core::query::Sort;
use zeroservices_core::resources::list_in_memory;
use zeroservices_core::{query::ListQuery, resources::Collection, store::EmbeddedStore};
use zeroservices_mongo::MongoStore;

use crate::stats::{emit, summary};

fn pending(i: u64) -> bool {
    i % 100 == 7
}

fn record(i: u64) -> Value {
    let status = if pending(i) { "pending" } else { "done" };
    json!({"status": status, "value": i, "name": format!("meter-{i:07}"), "watts": 1500})
}

async fn time_list(c: &dyn Collection, q: &ListQuery) -> anyhow::Result<(Duration, u64)> {
    let t = Instant::now();
    let page = c.list(q).await?;
    Ok((t.elapsed(), page.total))
}

fn queries(n: u64) -> [(&'static str, ListQuery); 2] {
    let low = n / 2;
    [
        (
            "status_pending_limit_100",
            ListQuery {
                filter: serde_json::from_value(json!({"status": "pending"})).expect("filter"),
                limit: Some(100),
                ..ListQuery::default()
            },
        ),
        (
            "value_range_sorted_limit_10",
            ListQuery {
                filter: serde_json::from_value(json!({"value": {"$gte": low, "$lt": low + 1000}}))
                    .expect("filter"),
                sort: Sort::parse("-value").unwrap_or_default(),
                limit: Some(10),
                ..ListQuery::default()
            },
        ),
    ]
}

/// Loads `n` records with 64 writers (group commit batches them).
async fn load(c: &Arc<dyn Collection>, n: u64) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (c, next) = (c.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                c.create(Some(format!("r{i:08}")), record(i)).await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(t.elapsed())
}

pub(crate) async fn embedded(n: u64) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("zs-bench-lists-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = EmbeddedStore::open(&dir)?;
    let c: Arc<dyn Collection> = Arc::new(store.collection("power"));
    let loaded = load(&c, n).await?;
    eprintln!("loaded {n} records in {:.1} s", loaded.as_secs_f64());
    let mut out = serde_json::Map::new();
    let mut plain = Vec::new();
    for (name, q) in queries(n) {
        let mut samples = Vec::new();
        let mut total = 0;
        for _ in 0..3 {
            let (d, t) = time_list(c.as_ref(), &q).await?;
            samples.push(d);
            total = t;
        }
        eprintln!(
            "{name}: no index, total {total}, {:.1} ms",
            samples[1].as_secs_f64() * 1e3
        );
        plain.push((name, q, samples, total));
    }
    let t = Instant::now();
    c.ensure_index("status").await?;
    c.ensure_index("value").await?;
    let built = t.elapsed();
    eprintln!("indexes built in {:.1} s", built.as_secs_f64());
    for (name, q, mut without, total) in plain {
        let mut with = Vec::new();
        for _ in 0..200 {
            let (d, t) = time_list(c.as_ref(), &q).await?;
            anyhow::ensure!(t == total, "{name}: indexed total {t}, full read {total}");
            with.push(d);
        }
        let (a, b) = (summary(&mut without), summary(&mut with));
        let ratio = a["p50_ms"].as_f64().unwrap_or(0.0) / b["p50_ms"].as_f64().unwrap_or(1.0);
        eprintln!(
            "{name}: p50 {:.3} ms indexed vs {:.1} ms without ({ratio:.0}x), total {total}",
            b["p50_ms"], a["p50_ms"]
        );
        out.insert(
            name.into(),
            json!({"total": total, "indexed": b, "no_index": a, "speedup_p50": ratio}),
        );
    }
    emit(
        json!({"event": "result", "workload": "lists-embedded", "records": n,
        "load_s": loaded.as_secs_f64(), "index_build_s": built.as_secs_f64(), "queries": out}),
    );
    drop(c);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A MongoDB store whose client counts the documents `find`/`getMore` replies carry.
async fn counted(uri: &str) -> anyhow::Result<(MongoStore, mongodb::Database, Arc<AtomicU64>)> {
    let read = Arc::new(AtomicU64::new(0));
    let counter = read.clone();
    let mut opts = mongodb::options::ClientOptions::parse(uri).await?;
    opts.command_event_handler = Some(EventHandler::callback(move |e: CommandEvent| {
        let CommandEvent::Succeeded(s) = e else {
            return;
        };
        if s.command_name != "find" && s.command_name != "getMore" {
            return;
        }
        if let Ok(cursor) = s.reply.get_document("cursor") {
            for batch in ["firstBatch", "nextBatch"] {
                if let Some(Bson::Array(docs)) = cursor.get(batch) {
                    counter.fetch_add(docs.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }));
    let name = opts
        .default_database
        .clone()
        .unwrap_or_else(|| "zeroservices".into());
    let client = mongodb::Client::with_options(opts)?;
    Ok((
        MongoStore::from_client(client.clone(), &name),
        client.database(&name),
        read,
    ))
}

pub(crate) async fn mongo(uri: &str, n: u64) -> anyhow::Result<()> {
    let (store, db, read) = counted(uri).await?;
    let raw: mongodb::Collection<Document> = db.collection("bench_lists");
    raw.drop().await?;
    let t = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        let mut d = mongodb::bson::to_document(&record(i))?;
        d.insert("_v", 1_i64);
        batch.push(d);
        if batch.len() == 1000 || i + 1 == n {
            raw.insert_many(std::mem::take(&mut batch)).await?;
        }
    }
    eprintln!("loaded {n} documents in {:.1} s", t.elapsed().as_secs_f64());
    let c = store.collection("bench_lists");
    let low = n / 2;
    let q = ListQuery {
        filter: serde_json::from_value(json!({"value": {"$gte": low, "$lt": low + 1000}}))
            .expect("filter"),
        limit: Some(10),
        ..ListQuery::default()
    };
    let (mut pushed, mut before) = (Vec::new(), Vec::new());
    let (mut read_pushed, mut read_before) = (0, 0);
    for _ in 0..5 {
        let at = read.load(Ordering::Relaxed);
        let (d, total) = time_list(&c, &q).await?;
        read_pushed = read.load(Ordering::Relaxed) - at;
        pushed.push(d);
        // The path before: every document to the node, filtered, sorted and paged there.
        let at = read.load(Ordering::Relaxed);
        let t = Instant::now();
        let docs: Vec<Document> = raw.find(doc! {}).await?.try_collect().await?;
        let rows: Vec<(String, Value)> = docs
            .into_iter()
            .map(|mut d| {
                let id = d.remove("_id").map(|b| b.to_string()).unwrap_or_default();
                d.remove("_v");
                (id, Bson::Document(d).into_relaxed_extjson())
            })
            .collect();
        let page = list_in_memory(rows.iter().map(|(k, v)| (k.as_str(), v)), &q)?;
        before.push(t.elapsed());
        read_before = read.load(Ordering::Relaxed) - at;
        anyhow::ensure!(
            page.total == total,
            "totals differ: {} vs {total}",
            page.total
        );
    }
    let (a, b) = (summary(&mut before), summary(&mut pushed));
    let ratio = a["p50_ms"].as_f64().unwrap_or(0.0) / b["p50_ms"].as_f64().unwrap_or(1.0);
    eprintln!(
        "range limit 10: pushed down p50 {:.1} ms reading {read_pushed} documents; before {:.1} ms reading {read_before} ({ratio:.0}x)",
        b["p50_ms"], a["p50_ms"]
    );
    emit(
        json!({"event": "result", "workload": "lists-mongo", "documents": n,
        "pushed_down": b, "before": a, "speedup_p50": ratio,
        "documents_read": {"pushed_down": read_pushed, "before": read_before}}),
    );
    raw.drop().await?;
    Ok(())
}
