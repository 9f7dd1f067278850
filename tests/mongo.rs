//! The MongoDB store end to end: create through the HTTP API of a node on `--store mongodb://`,
//! see the document with a plain pymongo client in the right database and collection, restart
//! the node, stop the database (requests fail fast with 503, the node stays up) and bring it
//! back (the node recovers by itself). The server is nx-27017 from `.venv`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::nx::{start_nx, venv_bin};
use common::{bin, free_port, spawn_ready, Proc};
use serde_json::Value;

fn serve(uri: &str, http: u16) -> Proc {
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "mongo-node",
        "--collection",
        "power",
        "--store",
        uri,
        "--discovery",
        "none",
        "--bind",
        "127.0.0.1",
    ]);
    c.args(["--http", &format!("127.0.0.1:{http}")]);
    spawn_ready("mongo-node", c)
}

fn status_of(url: &str) -> (u16, Value) {
    match ureq::get(url).timeout(Duration::from_secs(15)).call() {
        Ok(r) => (
            r.status(),
            serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null),
        ),
        Err(ureq::Error::Status(s, r)) => (
            s,
            serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null),
        ),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

#[test]
fn http_on_mongo_visible_to_pymongo_survives_restarts_and_database_outages() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("zs-mongo-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let nx = start_nx(port, &dir);
    let uri = format!("mongodb://127.0.0.1:{port}/zs_e2e");
    let http = free_port();
    let node = serve(&uri, http);
    let base = format!("http://127.0.0.1:{http}");

    let r = ureq::post(&format!("{base}/power"))
        .send_string(r#"{"value": 7, "status": "pending"}"#)
        .expect("create");
    assert_eq!(r.status(), 201);
    let created: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    let id = created["resource_id"].as_str().unwrap().to_owned();
    assert_eq!(
        id.len(),
        24,
        "generated ids are ObjectIds shown as hex: {id}"
    );
    ureq::post(&format!("{base}/power"))
        .send_string(r#"{"resource_id": "named", "resource_data": {"value": 1}}"#)
        .expect("create named");

    // A plain pymongo client sees the documents, data at the top level, in zs_e2e.power.
    let script = format!(
        "import json; from pymongo import MongoClient; from bson import ObjectId\n\
         c = MongoClient('127.0.0.1', {port}, serverSelectionTimeoutMS=5000)\n\
         a = c['zs_e2e']['power'].find_one({{'_id': ObjectId('{id}')}})\n\
         b = c['zs_e2e']['power'].find_one({{'_id': 'named'}})\n\
         print(json.dumps({{'a': {{'value': a['value'], 'status': a['status']}}, 'b': b['value']}}))"
    );
    let out = Command::new(venv_bin("python"))
        .args(["-c", &script])
        .output()
        .expect("pymongo");
    assert!(
        out.status.success(),
        "pymongo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("pymongo output");
    assert_eq!(
        seen,
        serde_json::json!({"a": {"value": 7, "status": "pending"}, "b": 1})
    );

    // Restart the node: the resource is still served.
    drop(node);
    let node = serve(&uri, http);
    let (s, v) = status_of(&format!("{base}/power/{id}"));
    assert_eq!(
        (s, &v["resource_data"]["value"]),
        (200, &serde_json::json!(7))
    );

    // Stop the database: fast 503, the node stays up.
    drop(nx);
    let start = Instant::now();
    let (s, v) = status_of(&format!("{base}/power/{id}"));
    let took = start.elapsed();
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "unavailable");
    assert!(took < Duration::from_secs(5), "503 took {took:?}");
    let (s, _) = status_of(&format!("{base}/health"));
    assert_eq!(s, 200, "node down with its database");

    // Bring it back on the same data: the node recovers by itself.
    let _nx = start_nx(port, &dir);
    common::eventually(
        "the node to serve again after the database came back",
        Duration::from_secs(20),
        || (status_of(&format!("{base}/power/{id}")).0 == 200).then_some(()),
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
