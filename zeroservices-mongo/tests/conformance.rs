//! The shared backend conformance suite on MongoDB: against `MONGODB_URI` when it is set (a
//! real MongoDB), otherwise against `nx-27017` (MongoDB wire protocol over SQLite) started here
//! from the workspace's `.venv` on a free loopback port. One database per run, dropped at the
//! end.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroservices_core::Collection;
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
        .list(&zeroservices_core::ListQuery::default())
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
