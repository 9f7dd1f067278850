//! Property test: the memory and embedded backends agree on random documents, queries, sorts,
//! pages, projections, updates and deletes (the embedded store round-trips everything through
//! redb), and so does an embedded collection with secondary indexes (some declared before the
//! records are written, some built from them), before and after the records change.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};
use zeroservices_core::query::{Filter, Projection, Sort, Update};
use zeroservices_core::{
    query::ListQuery,
    resources::Collection,
    store::{EmbeddedStore, MemoryCollection},
};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        (-5.0f64..5.0).prop_map(|f| json!((f * 4.0).round() / 4.0)),
        prop::sample::select(vec!["a", "b", "ab", "B", "hello world"]).prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map(prop::sample::select(vec!["x", "y"]), inner, 0..2)
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
        ]
    })
}

fn doc() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(vec!["a", "b", "c", "n"]),
        value(),
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

fn path() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "n", "a.x", "b.y", "c.0", "n.x.y"])
        .prop_map(str::to_owned)
}

fn condition() -> impl Strategy<Value = Value> {
    prop_oneof![
        scalar(),
        (
            prop::sample::select(vec!["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]),
            scalar()
        )
            .prop_map(|(op, v)| json!({ op: v })),
        prop::collection::vec(scalar(), 0..3).prop_map(|v| json!({"$in": v})),
        prop::collection::vec(scalar(), 0..3).prop_map(|v| json!({"$nin": v})),
        any::<bool>().prop_map(|b| json!({"$exists": b})),
        (scalar(), scalar()).prop_map(|(a, b)| json!({"$gte": a, "$lt": b})),
        (scalar(), scalar()).prop_map(|(a, b)| json!({"$gt": a, "$ne": b})),
        Just(json!({"$regex": "^a", "$options": "i"})),
        (prop::sample::select(vec!["$gt", "$lt"]), scalar())
            .prop_map(|(op, v)| json!({"$not": { op: v }})),
    ]
}

fn filter() -> impl Strategy<Value = Value> {
    let leaf = (path(), condition()).prop_map(|(p, c)| json!({ p: c }));
    leaf.prop_recursive(2, 6, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"$and": v})),
            prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"$or": v})),
            prop::collection::vec(inner, 1..3).prop_map(|v| json!({"$nor": v})),
        ]
    })
}

fn update() -> impl Strategy<Value = Value> {
    prop_oneof![
        (path(), value()).prop_map(|(p, v)| json!({"$set": { p: v }})),
        path().prop_map(|p| json!({"$unset": { p: "" }})),
        (path(), -3i64..3).prop_map(|(p, n)| json!({"$inc": { p: n }})),
        (path(), scalar()).prop_map(|(p, v)| json!({"$push": { p: v }})),
        (path(), scalar()).prop_map(|(p, v)| json!({"$addToSet": { p: v }})),
        (path(), scalar()).prop_map(|(p, v)| json!({"$pull": { p: v }})),
    ]
}

fn outcome<T: std::fmt::Debug>(r: zeroservices_core::Result<T>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("err {}", e.code()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, .. ProptestConfig::default() })]

    #[test]
    fn memory_and_embedded_agree(
        docs in prop::collection::vec(doc(), 0..8),
        f in prop_oneof![filter(), Just(json!({}))],
        sort in prop::sample::select(vec!["", "a", "-a", "n,-b", "a.x,c", "c.0"]),
        skip in 0u64..4,
        limit in prop::option::of(0u64..5),
        fields in prop::sample::select(vec!["", "a", "a.x,b"]),
        upd in update(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("zs-prop-{}-{}", std::process::id(), rand_id()));
            let store = EmbeddedStore::open(&dir).unwrap();
            let memory: Arc<dyn Collection> = Arc::new(MemoryCollection::new());
            let embedded: Arc<dyn Collection> = Arc::new(store.collection("t"));
            let indexed: Arc<dyn Collection> = Arc::new(store.collection("i"));
            for p in ["a", "a.x", "c.0"] {
                indexed.ensure_index(p).await.unwrap();
            }
            let all = [memory, embedded, indexed];
            for (i, d) in docs.iter().enumerate() {
                let id = format!("{i:02}");
                let want = outcome(all[0].create(Some(id.clone()), d.clone()).await);
                for c in &all[1..] {
                    prop_assert_eq!(&want, &outcome(c.create(Some(id.clone()), d.clone()).await));
                }
            }
            for p in ["n", "b", "c"] {
                all[2].ensure_index(p).await.unwrap();
            }
            // An invalid filter never reaches a store: it cannot be made into a query.
            let Ok(filter) = Filter::parse(&f) else { return Ok(()) };
            let q = ListQuery { filter, sort: Sort::parse(sort).unwrap(), skip, limit, fields: Projection::parse(fields).unwrap() };
            let agree = |step: &'static str| {
                let (all, q, f) = (&all, &q, &f);
                async move {
                    let want = outcome(all[0].list(q).await);
                    for c in &all[1..] {
                        prop_assert_eq!(&want, &outcome(c.list(q).await), "{} list {} sort {:?}", step, f, q.sort);
                    }
                    Ok(())
                }
            };
            agree("created").await?;
            if let Ok(u) = Update::parse(&upd) {
                for i in 0..docs.len() {
                    let id = format!("{i:02}");
                    let want = outcome(all[0].patch(&id, &u).await);
                    for c in &all[1..] {
                        prop_assert_eq!(&want, &outcome(c.patch(&id, &u).await), "patch {}", upd);
                    }
                }
                agree("patched").await?;
            }
            if !docs.is_empty() {
                for c in &all {
                    c.delete("00").await.unwrap();
                }
                agree("deleted").await?;
            }
            drop(all);
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
            Ok(())
        })?;
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Few distinct values, so that filters on an indexed field match several records.
fn small() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!(null),
        json!(0),
        json!(1),
        json!(1.0),
        json!(2.5),
        json!(-1),
        json!("x"),
        json!("y"),
        json!(""),
        json!(true),
        json!(false),
        json!([1, 2]),
        json!(["x", 1]),
        json!([]),
        json!({"x": 1}),
        json!([{"x": 1}, {"x": 2}]),
    ])
}

fn small_doc() -> impl Strategy<Value = Value> {
    (prop::option::of(small()), prop::option::of(small())).prop_map(|(a, b)| {
        let mut m = serde_json::Map::new();
        if let Some(a) = a {
            m.insert("a".into(), a);
        }
        if let Some(b) = b {
            m.insert("b".into(), b);
        }
        Value::Object(m)
    })
}

fn small_condition() -> impl Strategy<Value = Value> {
    prop_oneof![
        small(),
        (
            prop::sample::select(vec!["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]),
            small()
        )
            .prop_map(|(op, v)| json!({ op: v })),
        (small(), small()).prop_map(|(a, b)| json!({"$gt": a, "$lte": b})),
        prop::collection::vec(small(), 0..3).prop_map(|v| json!({"$in": v})),
    ]
}

fn small_filter() -> impl Strategy<Value = Value> {
    let path = prop::sample::select(vec!["a", "a.x", "b"]);
    prop_oneof![
        Just(json!({})),
        (path.clone(), small_condition()).prop_map(|(p, c)| json!({ p: c })),
        (small_condition(), small_condition())
            .prop_map(|(c, d)| json!({"$and": [{"a": c}, {"a": d}]})),
        (small_condition(), small_condition()).prop_map(|(c, d)| json!({"a": c, "b": d})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// Indexed lists (exact answers, narrowed candidates, sorted scans) against memory, on
    /// fields with few values, through creates, patches that move records between values, and
    /// deletes.
    #[test]
    fn indexed_lists_agree_with_memory(
        docs in prop::collection::vec(small_doc(), 0..14),
        f in small_filter(),
        sort in prop::sample::select(vec!["", "a", "-a", "b", "a,-b", "-a.x"]),
        skip in 0u64..3,
        limit in prop::option::of(0u64..6),
        moves in prop::collection::vec((0usize..14, prop::option::of(small())), 0..6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("zs-prop-ix-{}-{}", std::process::id(), rand_id()));
            let store = EmbeddedStore::open(&dir).unwrap();
            let memory: Arc<dyn Collection> = Arc::new(MemoryCollection::new());
            let indexed: Arc<dyn Collection> = Arc::new(store.collection("i"));
            indexed.ensure_index("a").await.unwrap();
            for (i, d) in docs.iter().enumerate() {
                memory.create(Some(format!("{i:02}")), d.clone()).await.unwrap();
                indexed.create(Some(format!("{i:02}")), d.clone()).await.unwrap();
            }
            indexed.ensure_index("a.x").await.unwrap();
            let Ok(filter) = Filter::parse(&f) else { return Ok(()) };
            let q = ListQuery { filter, sort: Sort::parse(sort).unwrap(), skip, limit, fields: Projection::default() };
            prop_assert_eq!(outcome(memory.list(&q).await), outcome(indexed.list(&q).await), "created: {} sort {}", f, sort);
            for (i, to) in &moves {
                let id = format!("{i:02}");
                let u = match to {
                    Some(v) => Update::parse(&json!({"$set": {"a": v}})).unwrap(),
                    None => Update::parse(&json!({"$unset": {"a": ""}})).unwrap(),
                };
                prop_assert_eq!(outcome(memory.patch(&id, &u).await), outcome(indexed.patch(&id, &u).await));
            }
            prop_assert_eq!(outcome(memory.list(&q).await), outcome(indexed.list(&q).await), "moved: {} sort {}", f, sort);
            for i in (0..docs.len()).step_by(3) {
                let id = format!("{i:02}");
                prop_assert_eq!(outcome(memory.delete(&id).await), outcome(indexed.delete(&id).await));
            }
            prop_assert_eq!(outcome(memory.list(&q).await), outcome(indexed.list(&q).await), "deleted: {} sort {}", f, sort);
            drop(indexed);
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
            Ok(())
        })?;
    }
}
