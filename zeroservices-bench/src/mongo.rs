//! MongoDB backend overhead: create, get and patch through `MongoCollection` beside the same
//! operations with the bare driver, in one run, alternating rounds so drift hits both.
//! `patch` is the usual case (the node wrote or read the document last: one compare-and-swap
//! write); `patch_cold` goes through a handle that remembers nothing (read, then write).

use std::time::{Duration, Instant};

use mongodb::bson::{doc, oid::ObjectId, Document};
use mongodb::options::ReturnDocument;
use serde_json::json;
use zeroservices_core::query::Update;
use zeroservices_core::resources::Collection;
use zeroservices_mongo::MongoStore;

use crate::stats::{emit, summary};

pub(crate) async fn run(uri: &str, n: usize) -> anyhow::Result<()> {
    let store = MongoStore::connect(uri).await?;
    let framework = store.collection("bench_framework");
    // The same documents through a handle that remembers none: every patch reads first (the
    // case of a document last written by another node).
    let cold = store.collection("bench_framework").recent(0);
    let client = mongodb::Client::with_uri_str(uri).await?;
    let db = client
        .default_database()
        .unwrap_or_else(|| client.database("zeroservices"));
    let bare: mongodb::Collection<Document> = db.collection("bench_bare");
    let update = Update::parse(&json!({"$inc": {"watts": 1}}))?;
    let (mut fw, mut raw): (Vec<[Duration; 4]>, Vec<[Duration; 4]>) = (Vec::new(), Vec::new());
    for i in 0..n {
        let data =
            json!({"name": "meter-0001", "watts": 1500, "online": true, "site": "lab-a", "i": i});
        // framework
        let t = Instant::now();
        let r = framework.create(None, data.clone()).await?;
        let c = t.elapsed();
        let t = Instant::now();
        framework.get(&r.resource_id).await?;
        let g = t.elapsed();
        let t = Instant::now();
        framework.patch(&r.resource_id, &update).await?;
        let p = t.elapsed();
        let t = Instant::now();
        cold.patch(&r.resource_id, &update).await?;
        fw.push([c, g, p, t.elapsed()]);
        // bare driver, same documents and operations
        let oid = ObjectId::new();
        let mut d = mongodb::bson::to_document(&data)?;
        d.insert("_id", oid);
        let t = Instant::now();
        bare.insert_one(d).await?;
        let c = t.elapsed();
        let t = Instant::now();
        bare.find_one(doc! {"_id": oid}).await?;
        let g = t.elapsed();
        let t = Instant::now();
        bare.find_one_and_update(doc! {"_id": oid}, doc! {"$inc": {"watts": 1}})
            .return_document(ReturnDocument::After)
            .await?;
        let p = t.elapsed();
        let t = Instant::now();
        bare.find_one_and_update(doc! {"_id": oid}, doc! {"$inc": {"watts": 1}})
            .return_document(ReturnDocument::After)
            .await?;
        raw.push([c, g, p, t.elapsed()]);
    }
    let mut out = serde_json::Map::new();
    for (k, op) in ["create", "get", "patch", "patch_cold"].iter().enumerate() {
        let mut a: Vec<Duration> = fw.iter().map(|x| x[k]).collect();
        let mut b: Vec<Duration> = raw.iter().map(|x| x[k]).collect();
        let (ta, tb): (f64, f64) = (
            a.iter().map(Duration::as_secs_f64).sum(),
            b.iter().map(Duration::as_secs_f64).sum(),
        );
        out.insert(op.to_string(), json!({"framework": summary(&mut a), "driver": summary(&mut b), "overhead_pct": (ta / tb - 1.0) * 100.0}));
        eprintln!(
            "{op:<7} framework {:.3} ms/op, driver {:.3} ms/op, overhead {:+.1}%",
            ta * 1000.0 / n as f64,
            tb * 1000.0 / n as f64,
            (ta / tb - 1.0) * 100.0
        );
    }
    emit(json!({"event": "result", "ops": n, "mongo": out}));
    db.drop().await?;
    Ok(())
}
