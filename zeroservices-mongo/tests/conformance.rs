//! The shared backend conformance suite on MongoDB: against `MONGODB_URI` when it is set (a
//! real MongoDB), otherwise against `nx-27017` (MongoDB wire protocol over SQLite) started here
//! from the workspace's `.venv` on a free loopback port. One database per run, dropped at the
//! end.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroservices_core::testkit::collection_conformance;
use zeroservices_core::Collection;
use zeroservices_mongo::MongoStore;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_collection_passes_the_backend_suite() {
    let db = format!("zs_conformance_{}", std::process::id());
    let srv = server(&db);
    let store = MongoStore::connect(&srv.uri).await.expect("connect");
    let n = Arc::new(AtomicU64::new(0));
    let s2 = store.clone();
    let cases = collection_conformance(Box::new(move |()| {
        let c = s2.collection(&format!("c{}", n.fetch_add(1, Ordering::Relaxed)));
        Box::pin(async move { Arc::new(c) as Arc<dyn Collection> })
    }))
    .await;
    eprintln!("Mongo backend: {cases} conformance cases passed");
    store.drop_database().await.expect("drop test database");
    assert!(cases >= 80, "only {cases} cases ran");
}
