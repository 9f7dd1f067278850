//! The shared backend conformance suite on MongoDB: against `MONGODB_URI` when it is set (a
//! real MongoDB), otherwise against `nx-27017` (MongoDB wire protocol over SQLite) started here
//! from the workspace's `.venv` on a free loopback port. One database per run, dropped at the
//! end.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroservices_core::resources::Collection;
use zeroservices_mongo::MongoStore;
use zeroservices_testkit::CollectionFactory;

/// A MongoDB-compatible server for the test: nx-27017 killed on drop, or an external one.
struct Server {
    uri: String,
    child: Option<Child>,
    _dir: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = &self._dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn server(db: &str) -> Server {
    if let Ok(uri) = std::env::var("MONGODB_URI") {
        let base = uri.trim_end_matches('/');
        eprintln!("running the Mongo suite against MONGODB_URI");
        return Server {
            uri: format!("{base}/{db}"),
            child: None,
            _dir: None,
        };
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let exe = std::env::var_os("ZS_PYTHON")
        .map(|p| PathBuf::from(p).with_file_name("nx-27017"))
        .unwrap_or_else(|| root.join(".venv/bin/nx-27017"));
    assert!(
        exe.exists(),
        "nx-27017 missing at {}: run ./scripts/test (it installs it into .venv) or set MONGODB_URI",
        exe.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let dir = std::env::temp_dir().join(format!("zs-nx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("data dir");
    let child = Command::new(&exe)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--data-dir",
        ])
        .arg(&dir)
        .arg("--log-file")
        .arg(dir.join("nx.log"))
        .arg("--pid-file")
        .arg(dir.join("nx.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nx-27017");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nx-27017 did not listen within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("running the Mongo suite against nx-27017 on 127.0.0.1:{port}");
    Server {
        uri: format!("mongodb://127.0.0.1:{port}/{db}"),
        child: Some(child),
        _dir: Some(dir),
    }
}

/// At most this many conformance tests run at once, each with its own server: a dozen
/// nx-27017 processes starting together on a small, busy machine answer too slowly.
const AT_ONCE: usize = 2;

/// A place among the [`AT_ONCE`] tests running; given back when dropped.
struct Turn;

static RUNNING: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

impl Turn {
    /// Waits for a place (blocking: called before the test's first await).
    fn take() -> Turn {
        let (count, freed) = &RUNNING;
        let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= AT_ONCE {
            n = freed.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
        Turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let (count, freed) = &RUNNING;
        *count.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        freed.notify_one();
    }
}

/// Collections of a fresh database on a server of its own (nx-27017 stopped, its data removed,
/// when the factory is dropped at the end of the test).
fn mongo() -> CollectionFactory {
    let turn = Arc::new(Turn::take());
    static RUN: AtomicU64 = AtomicU64::new(0);
    let db = format!(
        "zs_conformance_{}_{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    );
    let srv = Arc::new(server(&db));
    let n = Arc::new(AtomicU64::new(0));
    Box::new(move || {
        let _ = &turn; // held for as long as the factory lives
        let (srv, n) = (srv.clone(), n.clone());
        Box::pin(async move {
            let store = MongoStore::connect(&srv.uri).await.expect("connect");
            let c = store.collection(&format!("c{}", n.fetch_add(1, Ordering::Relaxed)));
            Arc::new(c) as Arc<dyn Collection>
        })
    })
}

mod conformance {
    zeroservices_testkit::collection_suite!(super::mongo());
}

/// Two nodes (two collection handles, each with its own remembered documents) and a program
/// writing without ZeroServices share one MongoDB collection: no patch is applied to a stale
/// state, whoever wrote last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_from_remembered_state_never_apply_to_a_stale_one() {
    use mongodb::bson::doc;
    use serde_json::json;
    use zeroservices_core::query::Update;

    let db = format!("zs_recent_{}", std::process::id());
    let srv = server(&db);
    let store = MongoStore::connect(&srv.uri).await.expect("connect");
    let (a, b) = (store.collection("shared"), store.collection("shared"));
    let inc = Update::parse(&json!({"$inc": {"n": 1}})).expect("update");

    // A creates and remembers; B and A take turns: each time the other's state is newer.
    let r = a.create(None, json!({"n": 0})).await.expect("create");
    let id = r.resource_id;
    for round in 0..10 {
        let (first, second) = if round % 2 == 0 { (&b, &a) } else { (&a, &b) };
        first.patch(&id, &inc).await.expect("patch");
        second.patch(&id, &inc).await.expect("patch");
    }
    assert_eq!(
        a.get(&id).await.expect("get").resource_data,
        json!({"n": 20})
    );

    // Concurrent patches through both handles: every increment lands exactly once.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (id, inc) = (id.clone(), inc.clone());
        tasks.push(tokio::spawn(async move { c.patch(&id, &inc).await }));
    }
    for t in tasks {
        t.await.expect("join").expect("concurrent patch");
    }
    assert_eq!(
        b.get(&id).await.expect("get").resource_data,
        json!({"n": 60})
    );

    // A type change by the other node: the remembered state would refuse `$inc`, the stored
    // one accepts it.
    let to_text = Update::parse(&json!({"$set": {"n": "x"}})).expect("update");
    a.patch(&id, &to_text).await.expect("set text");
    let to_num = Update::parse(&json!({"$set": {"n": 5}})).expect("update");
    b.patch(&id, &to_num).await.expect("set number");
    let r = a
        .patch(&id, &inc)
        .await
        .expect("inc after the other node's change");
    assert_eq!(r.resource_data, json!({"n": 6}));

    // A program without ZeroServices replaces the document and drops `_v`: the remembered
    // version no longer matches, the stored state is patched.
    let raw = mongodb::Client::with_uri_str(&srv.uri)
        .await
        .expect("driver");
    let coll = raw
        .database(&db)
        .collection::<mongodb::bson::Document>("shared");
    let oid = mongodb::bson::oid::ObjectId::parse_str(&id).expect("generated ids are ObjectIds");
    coll.replace_one(doc! {"_id": oid}, doc! {"n": 100})
        .await
        .expect("foreign write");
    let r = a.patch(&id, &inc).await.expect("patch after foreign write");
    assert_eq!(r.resource_data, json!({"n": 101}));
    assert_eq!(
        b.get(&id).await.expect("get").resource_data,
        json!({"n": 101})
    );

    // Deleted and created again through B under the same id: A's remembered copy of the
    // deleted document must not match the new one (that would bring the old data back).
    a.create(Some("again".into()), json!({"n": 0}))
        .await
        .expect("create");
    a.get("again").await.expect("A remembers it");
    b.delete("again").await.expect("delete");
    b.create(Some("again".into()), json!({"n": 100}))
        .await
        .expect("recreate");
    let r = a
        .patch("again", &inc)
        .await
        .expect("patch the new document");
    assert_eq!(
        r.resource_data,
        json!({"n": 101}),
        "a stale remembered copy was written over the recreated document"
    );

    // Deleted through B: A's remembered state must not resurrect or patch it.
    b.delete(&id).await.expect("delete");
    let err = a
        .patch(&id, &inc)
        .await
        .expect_err("patch of a deleted resource");
    assert!(
        matches!(err, zeroservices_core::Error::NotFound(_)),
        "{err:?}"
    );
    store.drop_database().await.expect("drop test database");
}

/// A declared unique index is made before the first write and enforced: a duplicate is a
/// `Conflict`, other values still go in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_indexes_are_made_and_enforced() {
    use serde_json::json;

    let db = format!("zs_indexes_{}", std::process::id());
    let srv = server(&db);
    let store = MongoStore::connect(&srv.uri).await.expect("connect");
    let users = store
        .collection("users")
        .index(json!({"email": 1}), true)
        .expect("index");
    users
        .create(None, json!({"email": "ada@example.org"}))
        .await
        .expect("first create also makes the index");
    let dup = users
        .create(None, json!({"email": "ada@example.org"}))
        .await
        .expect_err("duplicate email");
    assert!(
        matches!(dup, zeroservices_core::Error::Conflict(_)),
        "{dup:?}"
    );
    users
        .create(None, json!({"email": "bob@example.org"}))
        .await
        .expect("another email");
    let page = users
        .list(&zeroservices_core::query::ListQuery::default())
        .await
        .expect("list");
    assert_eq!(page.total, 2);

    let raw = mongodb::Client::with_uri_str(&srv.uri)
        .await
        .expect("driver");
    let names = raw
        .database(&db)
        .collection::<mongodb::bson::Document>("users")
        .list_index_names()
        .await
        .expect("index names");
    assert!(names.len() >= 2, "indexes: {names:?}");
    store.drop_database().await.expect("drop test database");
}

mod pushdown_agrees {
    //! Property test: lists on MongoDB (filters, sorts, pages and projections partly or wholly
    //! run by the server) give what the memory store gives, on documents mixing every JSON
    //! type at the queried fields.

    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use serde_json::{json, Value};
    use zeroservices_core::query::{Projection, Sort, Update};
    use zeroservices_core::{query::ListQuery, resources::Collection, store::MemoryCollection};
    use zeroservices_mongo::MongoStore;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-3i64..3).prop_map(Value::from),
            prop::sample::select(vec![0.5, -1.5, 2.0]).prop_map(Value::from),
            prop::sample::select(vec!["", "a", "b", "B", "é", "a b"]).prop_map(Value::from),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => scalar(),
            1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::from),
            1 => scalar().prop_map(|x| json!({"x": x})),
        ]
    }

    fn doc_of(v: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
        prop::collection::btree_map(prop::sample::select(vec!["a", "b", "n"]), v, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    }

    /// Documents of one case: mixed types, or (so that whole queries run on the server) only
    /// numbers, or only strings, at the queried fields.
    fn numbers() -> BoxedStrategy<Value> {
        prop_oneof![(-3i64..3).prop_map(Value::from), Just(json!(0.5))].boxed()
    }

    fn strings() -> BoxedStrategy<Value> {
        prop::sample::select(vec!["", "a", "b", "B", "é"])
            .prop_map(Value::from)
            .boxed()
    }

    /// A filter on top-level fields comparing with operands of one kind.
    fn typed_filter(operand: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
        let path = prop::sample::select(vec!["a", "b", "n"]);
        let op = prop::sample::select(vec!["$gt", "$gte", "$lt", "$lte", "$eq"]);
        let leaf = (path, op, operand.clone())
            .prop_map(|(p, op, v)| json!({ p: { op: v } }))
            .boxed();
        let set =
            prop::collection::vec(operand.clone(), 0..3).prop_map(|v| json!({"a": {"$in": v}}));
        prop_oneof![
            leaf.clone(),
            set,
            operand.prop_map(|v| json!({ "n": v })),
            (leaf.clone(), leaf.clone()).prop_map(|(x, y)| json!({"$or": [x, y]})),
            (leaf.clone(), leaf).prop_map(|(x, y)| json!({"b": x["b"].clone(), "$nor": [y]})),
        ]
    }

    /// Operands the server can be given: numbers and strings.
    fn typed() -> impl Strategy<Value = Value> {
        prop_oneof![
            (-3i64..3).prop_map(Value::from),
            Just(json!(0.5)),
            prop::sample::select(vec!["", "a", "b", "é"]).prop_map(Value::from),
        ]
    }

    fn condition() -> impl Strategy<Value = Value> {
        prop_oneof![
            typed(),
            (
                prop::sample::select(vec!["$gt", "$gte", "$lt", "$lte", "$eq"]),
                typed()
            )
                .prop_map(|(op, v)| json!({ op: v })),
            prop::collection::vec(typed(), 0..3).prop_map(|v| json!({"$in": v})),
            scalar(),
            value(),
            (
                prop::sample::select(vec!["$eq", "$gt", "$gte", "$lt", "$lte", "$ne"]),
                scalar()
            )
                .prop_map(|(op, v)| json!({ op: v })),
            (scalar(), scalar()).prop_map(|(a, b)| json!({"$gte": a, "$lt": b})),
            prop::collection::vec(scalar(), 0..3).prop_map(|v| json!({"$in": v})),
            prop::collection::vec(scalar(), 0..3).prop_map(|v| json!({"$nin": v})),
            any::<bool>().prop_map(|b| json!({"$exists": b})),
        ]
    }

    fn leaf() -> impl Strategy<Value = Value> {
        let path = prop::sample::select(vec!["a", "b", "n", "a.x"]);
        (path, condition()).prop_map(|(p, c)| json!({ p: c }))
    }

    fn filter() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({})),
            leaf(),
            (leaf(), leaf()).prop_map(|(x, y)| json!({"$and": [x, y]})),
            (leaf(), leaf()).prop_map(|(x, y)| json!({"$or": [x, y]})),
            leaf().prop_map(|x| json!({"$nor": [x]})),
        ]
    }

    /// Conditions the MongoDB store keeps in the node ($ne, $nin, $exists, equality with null,
    /// arrays or documents, dotted paths): safe on any server, whatever the documents hold.
    fn node_filter() -> impl Strategy<Value = Value> {
        let path = prop::sample::select(vec!["a", "b", "n", "a.x"]);
        let cond = prop_oneof![
            (prop::sample::select(vec!["$ne", "$nin"]), scalar()).prop_map(|(op, v)| {
                if op == "$nin" {
                    json!({ op: [v] })
                } else {
                    json!({ op: v })
                }
            }),
            any::<bool>().prop_map(|b| json!({"$exists": b})),
            Just(Value::Null),
            value().prop_filter("arrays, documents", |v| v.is_array() || v.is_object()),
        ];
        let leaf = (path, cond).prop_map(|(p, c)| json!({ p: c }));
        let dotted = (typed()).prop_map(|v| json!({"a.x": {"$gte": v}}));
        prop_oneof![
            leaf.clone(),
            dotted,
            (leaf.clone(), leaf.clone()).prop_map(|(x, y)| json!({"$or": [x, y]})),
            leaf.prop_map(|x| json!({"$nor": [x]})),
        ]
    }

    /// Documents and a filter: mixed types with filters kept in the node (with any filter on a
    /// real MongoDB, `MONGODB_URI`: nx-27017 has no type bracketing and no array membership in
    /// counts), or (so that whole queries run on the server) only numbers, or only strings,
    /// with filters comparing the same kind, alone or beside a condition kept in the node.
    fn docs_and_filter(real_mongo: bool) -> impl Strategy<Value = (Vec<Value>, Value)> {
        let mixed = if real_mongo {
            filter().boxed()
        } else {
            node_filter().boxed()
        };
        let partly = |f: BoxedStrategy<Value>| {
            prop_oneof![
                3 => f.clone(),
                1 => (f, scalar()).prop_map(|(f, v)| json!({"$and": [f, {"b": {"$ne": v}}]})),
            ]
        };
        prop_oneof![
            (prop::collection::vec(doc_of(value()), 0..7), mixed),
            (
                prop::collection::vec(doc_of(numbers()), 0..7),
                partly(typed_filter(numbers()).boxed())
            ),
            (
                prop::collection::vec(doc_of(strings()), 0..7),
                partly(typed_filter(strings()).boxed())
            ),
        ]
    }

    /// Patches of the fields the documents hold: `$set`, `$unset`, `$inc` (integers and
    /// fractions), and an array operator (always applied by the node).
    fn update() -> impl Strategy<Value = Value> {
        let path = prop::sample::select(vec!["a", "b", "n"]);
        prop_oneof![
            (path.clone(), value()).prop_map(|(p, v)| json!({"$set": { p: v }})),
            path.clone().prop_map(|p| json!({"$unset": { p: "" }})),
            (path.clone(), -2i64..3).prop_map(|(p, n)| json!({"$inc": { p: n }})),
            path.clone().prop_map(|p| json!({"$inc": { p: 0.5 }})),
            (path.clone(), value()).prop_map(|(p, v)| json!({ p: v })),
            (path, scalar()).prop_map(|(p, v)| json!({"$push": { p: v }})),
        ]
    }

    fn resource(r: &zeroservices_core::resources::Resource) -> Value {
        json!({"id": r.resource_id, "data": r.resource_data})
    }

    /// A patch's result as JSON (objects compare whatever the order of their fields).
    fn outcome(r: zeroservices_core::Result<zeroservices_core::resources::Resource>) -> Value {
        match r {
            Ok(r) => resource(&r),
            Err(e) => json!({"error": e.code()}),
        }
    }

    /// A list's result as JSON.
    fn page(r: zeroservices_core::Result<zeroservices_core::resources::ListPage>) -> Value {
        match r {
            Ok(p) => {
                json!({"items": p.items.iter().map(resource).collect::<Vec<_>>(), "total": p.total})
            }
            Err(e) => json!({"error": e.code()}),
        }
    }

    #[test]
    fn mongo_lists_agree_with_memory() {
        // Debug builds of the driver's futures are deep: a larger stack than a test thread's.
        std::thread::Builder::new()
            .stack_size(32 << 20)
            .spawn(run)
            .expect("thread")
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
    }

    fn run() {
        let _turn = super::Turn::take();
        let srv = super::server(&format!("zs_agree_{}", std::process::id()));
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let store = rt.block_on(MongoStore::connect(&srv.uri)).expect("connect");
        let mut runner = TestRunner::new(Config {
            cases: 300,
            ..Config::default()
        });
        let case = std::sync::atomic::AtomicU64::new(0);
        let real_mongo = std::env::var_os("MONGODB_URI").is_some();
        let strategy = (
            docs_and_filter(real_mongo),
            prop::sample::select(vec!["", "a", "-a", "b,-n", "-n", "a.x"]),
            0u64..3,
            prop::option::of(0u64..4),
            prop::sample::select(vec!["", "a", "a,n", "a.x"]),
            prop::collection::vec(update(), 0..3),
        );
        let outcome = runner.run(
            &strategy,
            |((docs, f), sort, skip, limit, fields, updates)| {
                rt.block_on(async {
                    let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mongo = store.collection(&format!("p{n}"));
                    let memory = MemoryCollection::new();
                    for (i, d) in docs.iter().enumerate() {
                        let id = format!("{i:02}");
                        memory
                            .create(Some(id.clone()), d.clone())
                            .await
                            .expect("memory create");
                        mongo
                            .create(Some(id), d.clone())
                            .await
                            .expect("mongo create");
                    }
                    // An invalid filter cannot be made into a query: no store sees one.
                    let Ok(filter) = serde_json::from_value(f.clone()) else {
                        return Ok(());
                    };
                    let q = ListQuery {
                        filter,
                        sort: Sort::parse(sort).expect("sort"),
                        skip,
                        limit,
                        fields: Projection::parse(fields).expect("fields"),
                    };
                    let want = page(memory.list(&q).await);
                    let got = page(mongo.list(&q).await);
                    prop_assert_eq!(
                        want,
                        got,
                        "filter {} sort {:?} skip {} limit {:?} fields {:?}",
                        f,
                        sort,
                        skip,
                        limit,
                        fields
                    );
                    // Patches (on the server where they translate) give what the memory store gives.
                    for (i, u) in updates.iter().enumerate() {
                        let Ok(u) = Update::parse(u) else { continue };
                        let id = format!("{:02}", i % docs.len().max(1));
                        let want = outcome(memory.patch(&id, &u).await);
                        let got = outcome(mongo.patch(&id, &u).await);
                        prop_assert_eq!(want, got, "patch {} of {}", u.document(), id);
                    }
                    let all = ListQuery::default();
                    let want = page(memory.list(&all).await);
                    let got = page(mongo.list(&all).await);
                    prop_assert_eq!(want, got, "after patches");
                    Ok(())
                })
            },
        );
        let _ = rt.block_on(store.drop_database());
        if let Err(e) = outcome {
            panic!("{e}");
        }
    }
}

/// A store whose client counts the documents the server sends back (the driver's command
/// monitoring: `find` first batches and `getMore` next batches).
async fn counted_store(uri: &str) -> (MongoStore, Arc<AtomicU64>) {
    use zeroservices_mongo::mongodb::event::{command::CommandEvent, EventHandler};
    use zeroservices_mongo::mongodb::{bson::Bson, options::ClientOptions, Client};
    let read = Arc::new(AtomicU64::new(0));
    let counter = read.clone();
    let mut opts = ClientOptions::parse(uri).await.expect("uri");
    opts.command_event_handler = Some(EventHandler::callback(move |e: CommandEvent| {
        // Counts are aggregations answering one document of their own: not counted.
        if let CommandEvent::Succeeded(s) = e {
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
        }
    }));
    let db = opts.default_database.clone().expect("database in the URI");
    let client = Client::with_options(opts).expect("client");
    (MongoStore::from_client(client, &db), read)
}

/// A filter, sort and page MongoDB can run exactly reads only the page from the server; one it
/// cannot (a `$regex`) reads the candidates and still answers the same kind of page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_down_page_reads_only_its_documents() {
    use serde_json::json;
    use zeroservices_core::query::ListQuery;
    use zeroservices_core::query::Sort;

    let _turn = Turn::take();
    let srv = server(&format!("zs_pushdown_{}", std::process::id()));
    let (store, read) = counted_store(&srv.uri).await;
    let c = store.collection("power");
    for i in 0..300 {
        let status = if i % 3 == 0 { "pending" } else { "done" };
        c.create(
            None,
            json!({"value": i, "status": status, "name": format!("p{i}")}),
        )
        .await
        .expect("create");
    }
    let reads = |q: ListQuery| {
        let (c, read) = (&c, &read);
        async move {
            let before = read.load(Ordering::Relaxed);
            let page = c.list(&q).await.expect("list");
            (page, read.load(Ordering::Relaxed) - before)
        }
    };
    let q = ListQuery {
        filter: serde_json::from_value(
            json!({"value": {"$gte": 100, "$lt": 200}, "status": "pending"}),
        )
        .expect("filter"),
        sort: Sort::parse("-value").expect("sort"),
        skip: 2,
        limit: Some(10),
        ..ListQuery::default()
    };
    let (page, n) = reads(q).await;
    assert_eq!(page.total, 33);
    let values: Vec<i64> = page
        .items
        .iter()
        .map(|r| r.resource_data["value"].as_i64().expect("value"))
        .collect();
    assert_eq!(values, (0..10).map(|k| 192 - 3 * k).collect::<Vec<_>>());
    assert!(n <= 10, "a pushed-down page of 10 read {n} documents");
    // Untranslatable: the server narrows with what translates (status), the node does the rest.
    let q = ListQuery {
        filter: serde_json::from_value(json!({"status": "pending", "name": {"$regex": "^p1"}}))
            .expect("filter"),
        limit: Some(5),
        ..ListQuery::default()
    };
    let (page, n) = reads(q).await;
    let want = (0..300)
        .filter(|i| i % 3 == 0 && format!("p{i}").starts_with("p1"))
        .count() as u64;
    assert_eq!(page.total, want);
    assert_eq!(page.items.len(), 5);
    assert_eq!(n, 100, "the server sends the 100 pending documents");
    let _ = store.drop_database().await;
}

/// `$inc` runs on the server (one atomic write each): concurrent increments of one document
/// never conflict and none is lost; the version still moves, so a remembered copy is never
/// written back over them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_run_on_the_server_without_conflicts() {
    use serde_json::json;
    use zeroservices_core::query::Update;

    let _turn = Turn::take();
    let srv = server(&format!("zs_inc_{}", std::process::id()));
    let store = MongoStore::connect(&srv.uri).await.expect("connect");
    let c = Arc::new(store.collection("power"));
    c.create(Some("hot".into()), json!({"n": 0, "name": "x"}))
        .await
        .expect("create");
    let inc = Update::parse(&json!({"$inc": {"n": 1}})).expect("update");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (c, inc) = (c.clone(), inc.clone());
        tasks.spawn(async move {
            for _ in 0..20 {
                c.patch("hot", &inc).await.expect("no conflict");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task");
    }
    assert_eq!(c.get("hot").await.expect("get").resource_data["n"], 320);
    // A patch the node applies (a $push) starts from the stored state, increments included.
    let push = Update::parse(&json!({"$push": {"tags": "a"}})).expect("update");
    let r = c.patch("hot", &push).await.expect("push");
    assert_eq!(
        r.resource_data,
        json!({"n": 320, "name": "x", "tags": ["a"]})
    );
    let _ = store.drop_database().await;
}
