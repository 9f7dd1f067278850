//! Property test: the memory and embedded backends agree on random documents, queries, sorts,
//! pages, projections and updates (the embedded store round-trips everything through redb).

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};
use zeroservices_core::query::{Projection, Sort, Update};
use zeroservices_core::{Collection, EmbeddedStore, ListQuery, MemoryCollection};

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
        f in filter(),
        sort in prop::sample::select(vec!["", "a", "-a", "n,-b", "a.x,c"]),
        skip in 0u64..4,
        limit in prop::option::of(0u64..5),
        fields in prop::sample::select(vec!["", "a", "a.x,b"]),
        upd in update(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("zs-prop-{}-{}", std::process::id(), rand_id()));
            let embedded: Arc<dyn Collection> = Arc::new(EmbeddedStore::open(&dir).unwrap().collection("t"));
            let memory: Arc<dyn Collection> = Arc::new(MemoryCollection::new());
            for (i, d) in docs.iter().enumerate() {
                let id = format!("{i:02}");
                prop_assert_eq!(outcome(memory.create(Some(id.clone()), d.clone()).await), outcome(embedded.create(Some(id), d.clone()).await));
            }
            let q = ListQuery { filter: f.clone(), sort: Sort::parse(sort).unwrap(), skip, limit, fields: Projection::parse(fields).unwrap() };
            prop_assert_eq!(outcome(memory.list(&q).await), outcome(embedded.list(&q).await), "list {}", f);
            if let Ok(u) = Update::parse(&upd) {
                for i in 0..docs.len() {
                    let id = format!("{i:02}");
                    prop_assert_eq!(outcome(memory.patch(&id, &u).await), outcome(embedded.patch(&id, &u).await), "patch {}", upd);
                }
                let all = ListQuery::default();
                prop_assert_eq!(outcome(memory.list(&all).await), outcome(embedded.list(&all).await));
            }
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
