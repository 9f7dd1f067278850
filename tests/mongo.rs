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

fn send(method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
    let req = ureq::request(method, url).timeout(Duration::from_secs(15));
    let r = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let read = |r: ureq::Response| {
        serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null)
    };
    match r {
        Ok(r) => (r.status(), read(r)),
        Err(ureq::Error::Status(s, r)) => (s, read(r)),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// Node B remembers a document; node A deletes and recreates it under the same id; B's next
/// patch must apply to the recreated document, never write B's stale copy back (versions of
/// a recreated document never repeat the deleted one's).
#[test]
fn a_stale_copy_on_another_node_never_resurrects_a_deleted_document() {
    let dir = std::env::temp_dir().join(format!("zs-mongo-stale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let _db = start_nx(port, &dir);
    let uri = format!("mongodb://127.0.0.1:{port}/stale");
    let (ha, hb) = (free_port(), free_port());
    let _a = serve(&uri, ha);
    let _b = serve(&uri, hb);
    let (a, b) = (
        format!("http://127.0.0.1:{ha}/power"),
        format!("http://127.0.0.1:{hb}/power"),
    );
    let create = r#"{"resource_id": "x", "resource_data": {"n": 1}}"#;
    assert_eq!(send("POST", &a, Some(create)).0, 201);
    // B reads it, and so remembers it with its version (the first one).
    let (st, v) = send("GET", &format!("{b}/x"), None);
    assert_eq!(
        (st, v["resource_data"]["n"].clone()),
        (200, Value::from(1)),
        "{v}"
    );
    assert_eq!(send("DELETE", &format!("{a}/x"), None).0, 204);
    let recreate = r#"{"resource_id": "x", "resource_data": {"n": 100}}"#;
    assert_eq!(send("POST", &a, Some(recreate)).0, 201);
    let (st, v) = send(
        "PATCH",
        &format!("{b}/x"),
        Some(r#"{"$set": {"again": true}}"#),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["resource_data"]["n"], 100,
        "B wrote its stale copy back: {v}"
    );
    let (_, v) = send("GET", &format!("{a}/x"), None);
    assert_eq!(v["resource_data"]["n"], 100, "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two providers of one MongoDB database share their idempotency records: a create sent to
/// one with a key, retried through the other, is made once and answered the same; the key
/// with another body is refused there too.
#[test]
fn idempotency_keys_are_shared_by_the_providers_of_one_database() {
    let dir = std::env::temp_dir().join(format!("zs-mongo-idem-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let _db = start_nx(port, &dir);
    let uri = format!("mongodb://127.0.0.1:{port}/idem");
    let (ha, hb) = (free_port(), free_port());
    let _a = serve(&uri, ha);
    let _b = serve(&uri, hb);
    let keyed = |http: u16, body: &str| -> (u16, Value) {
        let r = ureq::post(&format!("http://127.0.0.1:{http}/power"))
            .timeout(Duration::from_secs(15))
            .set("Idempotency-Key", "order-1")
            .send_string(body);
        let read = |r: ureq::Response| {
            serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null)
        };
        match r {
            Ok(r) => (r.status(), read(r)),
            Err(ureq::Error::Status(s, r)) => (s, read(r)),
            Err(e) => panic!("POST: {e}"),
        }
    };
    let first = keyed(ha, r#"{"value": 7}"#);
    assert_eq!(first.0, 201, "{}", first.1);
    let retry = keyed(hb, r#"{"value": 7}"#);
    assert_eq!(retry, first, "the other provider answers the first answer");
    let (_, list) = send("GET", &format!("http://127.0.0.1:{hb}/power"), None);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let other = keyed(hb, r#"{"value": 8}"#);
    assert_eq!(other.0, 422, "{}", other.1);
    let _ = std::fs::remove_dir_all(&dir);
}
