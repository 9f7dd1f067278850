//! The `zeroservices` command: `sniff --json` sees events created through HTTP, and the
//! embedded store keeps what was acknowledged across SIGKILL.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{bin, free_port, spawn, spawn_ready, Proc};
use serde_json::{json, Value};

fn post(base: &str, body: &str) -> Value {
    let r = ureq::post(&format!("{base}/power"))
        .send_string(body)
        .expect("POST");
    assert_eq!(r.status(), 201);
    serde_json::from_str(&r.into_string().expect("body")).expect("JSON")
}

fn serve(store: &str, router: u16, http: u16) -> Proc {
    serve_with(store, router, http, &[])
}

fn serve_with(store: &str, router: u16, http: u16, extra: &[&str]) -> Proc {
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "cli",
        "--collection",
        "power",
        "--store",
        store,
        "--discovery",
        "none",
    ]);
    c.args([
        "--bind",
        "127.0.0.1",
        "--router-port",
        &router.to_string(),
        "--http",
        &format!("127.0.0.1:{http}"),
    ]);
    c.args(extra);
    spawn_ready("serve", c)
}

#[test]
fn sniff_json_prints_events_created_through_http() {
    let (router, http) = (free_port(), free_port());
    let _node = serve("memory", router, http);
    let base = format!("http://127.0.0.1:{http}");
    let mut c = Command::new(bin());
    c.args([
        "sniff",
        "--json",
        "--topic",
        "power",
        "--bind",
        "127.0.0.1",
        "--discovery",
        &format!("static:127.0.0.1:{router}"),
        "--heartbeat-ms",
        "200",
    ]);
    let sniffer = spawn("sniff", c);
    // The sniffer needs a moment to discover the node and subscribe: keep creating until it
    // prints, then check the line's shape.
    let line = common::eventually("sniff to print an event", Duration::from_secs(10), || {
        post(&base, r#"{"value": 1}"#);
        sniffer.lines.recv_timeout(Duration::from_millis(200)).ok()
    });
    let v: Value = serde_json::from_str(&line).expect("sniff --json prints JSON lines");
    let topic = v["topic"].as_str().expect("topic");
    assert!(topic.starts_with("power.create."), "{v}");
    assert_eq!(v["event"]["action"], "create");
    assert_eq!(v["event"]["resource_data"], json!({"value": 1}));
    assert_eq!(
        topic,
        format!(
            "power.create.{}",
            v["event"]["resource_id"].as_str().unwrap()
        )
    );
    // a patch shows up too
    let id = post(&base, r#"{"value": 2}"#)["resource_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ureq::request("PATCH", &format!("{base}/power/{id}"))
        .send_string(r#"{"value": 3}"#)
        .expect("PATCH");
    common::eventually("the patch event", Duration::from_secs(5), || {
        let l = sniffer
            .lines
            .recv_timeout(Duration::from_millis(200))
            .ok()?;
        let v: Value = serde_json::from_str(&l).ok()?;
        (v["topic"] == format!("power.patch.{id}")).then_some(())
    });
}

#[test]
fn embedded_store_keeps_acknowledged_resources_across_sigkill() {
    let dir = std::env::temp_dir().join(format!("zs-cli-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = format!("embedded:{}", dir.join("nested/data").display());
    let (router, http) = (free_port(), free_port());
    let node = serve(&store, router, http);
    let base = format!("http://127.0.0.1:{http}");
    let ids: Vec<String> = (0..50)
        .map(|i| {
            post(&base, &format!(r#"{{"value": {i}}}"#))["resource_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    node.signal(9);
    drop(node);
    let _again = serve(&store, router, http);
    for (i, id) in ids.iter().enumerate() {
        let r = ureq::get(&format!("{base}/power/{id}"))
            .call()
            .expect("GET after restart");
        let v: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
        assert_eq!(v["resource_data"]["value"], i, "{v}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// GET `path` → (X-Total-Count, the `value` of each item).
fn values(base: &str, path: &str) -> (u64, Vec<i64>) {
    let r = ureq::get(&format!("{base}{path}"))
        .call()
        .expect("GET list");
    let total = r
        .header("X-Total-Count")
        .and_then(|t| t.parse().ok())
        .expect("X-Total-Count");
    let v: Value = serde_json::from_str(&r.into_string().expect("body")).expect("JSON");
    let items = v.as_array().expect("a list answers an array");
    let values = items
        .iter()
        .map(|i| i["resource_data"]["value"].as_i64().expect("value"))
        .collect();
    (total, values)
}

#[test]
fn an_index_declared_on_existing_records_answers_like_a_full_read() {
    let dir = std::env::temp_dir().join(format!("zs-cli-index-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = format!("embedded:{}", dir.display());
    let (router, http) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{http}");
    let mut node = serve(&store, router, http);
    let mut ids = Vec::new();
    for i in 0..60 {
        let status = if i % 2 == 0 { "pending" } else { "done" };
        let r = post(&base, &format!(r#"{{"value": {i}, "status": "{status}"}}"#));
        ids.push(r["resource_id"].as_str().expect("id").to_owned());
    }
    node.signal(15);
    assert_eq!(node.wait_exit(Duration::from_secs(10)), Some(0));
    drop(node);

    let _indexed = serve_with(
        &store,
        router,
        http,
        &["--index", "power.status", "--index", "power.value"],
    );
    let pending = r#"/power?where=%7B%22status%22%3A%22pending%22%7D"#;
    assert_eq!(values(&base, pending).0, 30);
    let range = "/power?where=%7B%22value%22%3A%7B%22%24gte%22%3A10%2C%22%24lt%22%3A20%7D%7D&sort=-value&limit=3";
    assert_eq!(values(&base, range), (10, vec![19, 18, 17]));
    // Writes keep the index in step: one pending record done, one deleted.
    ureq::request("PATCH", &format!("{base}/power/{}", ids[0]))
        .send_string(r#"{"$set": {"status": "done"}}"#)
        .expect("PATCH");
    ureq::delete(&format!("{base}/power/{}", ids[2]))
        .call()
        .expect("DELETE");
    assert_eq!(values(&base, pending).0, 28);
    ureq::request("PATCH", &format!("{base}/power/{}", ids[19]))
        .send_string(r#"{"$set": {"value": 100}}"#)
        .expect("PATCH");
    assert_eq!(values(&base, range), (9, vec![18, 17, 16]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_index_flag_is_refused_before_start() {
    for (flag, says) in [("nodot", "COLLECTION.PATH"), ("other.x", "not served")] {
        let out = Command::new(bin())
            .args([
                "serve",
                "--collection",
                "power",
                "--store",
                "memory",
                "--discovery",
                "none",
                "--index",
                flag,
            ])
            .output()
            .expect("run serve");
        assert!(!out.status.success(), "--index {flag} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "--index {flag}: {err}");
    }
}

/// What one writer of the SIGKILL test got acknowledged: (id, last acknowledged patch number,
/// last attempted patch number).
type Acked = Vec<(String, u64, u64)>;

/// One writer: creates a resource, then patches two fields together (`a` and `b` to the same
/// number) a few times, then the next resource; until the node dies or the bounds are reached.
fn writer(base: String, client: usize, count: &std::sync::atomic::AtomicUsize) -> Acked {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let started = std::time::Instant::now();
    let mut acked = Acked::new();
    for k in 0..5_000 {
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        let body = format!(r#"{{"client": {client}, "k": {k}, "a": 0, "b": 0}}"#);
        let Ok(r) = agent.post(&format!("{base}/power")).send_string(&body) else {
            break;
        };
        let Some(id) = r
            .into_string()
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|v| v["resource_id"].as_str().map(str::to_owned))
        else {
            break;
        };
        acked.push((id.clone(), 0, 0));
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for n in 1..=3u64 {
            if let Some(last) = acked.last_mut() {
                last.2 = n;
            }
            let patch = format!(r#"{{"$set": {{"a": {n}, "b": {n}}}}}"#);
            if agent
                .request("PATCH", &format!("{base}/power/{id}"))
                .send_string(&patch)
                .is_err()
            {
                return acked;
            }
            if let Some(last) = acked.last_mut() {
                last.1 = n;
            }
        }
    }
    acked
}

#[test]
fn group_commit_keeps_every_acknowledged_write_across_sigkill_under_load() {
    let dir = std::env::temp_dir().join(format!("zs-cli-group-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = format!("embedded:{}", dir.display());
    let (router, http) = (free_port(), free_port());
    let node = serve(&store, router, http);
    let base = format!("http://127.0.0.1:{http}");
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..32)
        .map(|c| {
            let (base, count) = (base.clone(), count.clone());
            std::thread::spawn(move || writer(base, c, &count))
        })
        .collect();
    // Kill it in the middle of the load: once 64 creates were acknowledged, however long that
    // takes on a loaded machine (the writers stop by themselves after 20 s).
    common::eventually("64 acknowledged creates", Duration::from_secs(20), || {
        (count.load(std::sync::atomic::Ordering::Relaxed) >= 64).then_some(())
    });
    node.signal(9);
    let acked: Vec<Acked> = writers
        .into_iter()
        .map(|w| w.join().expect("writer"))
        .collect();
    drop(node);
    let total: usize = acked.iter().map(Vec::len).sum();
    assert!(
        total >= 32,
        "only {total} creates were acknowledged before the kill"
    );

    let _again = serve(&store, router, http);
    for (id, done, tried) in acked.iter().flatten() {
        let r = ureq::get(&format!("{base}/power/{id}"))
            .call()
            .unwrap_or_else(|e| panic!("acknowledged create {id} lost: {e}"));
        let v: Value = serde_json::from_str(&r.into_string().expect("body")).expect("JSON");
        let (a, b) = (&v["resource_data"]["a"], &v["resource_data"]["b"]);
        assert_eq!(a, b, "half-applied patch: {v}");
        let a = a.as_u64().expect("a");
        // The last acknowledged patch is there; the one in flight at the kill may be too.
        assert!(
            a == *done || a == *tried,
            "{id}: a = {a}, acknowledged {done}, tried {tried}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_refuses_a_collection_named_like_an_http_route() {
    for name in ["health", "realtime", "metrics", "openapi.json"] {
        let out = Command::new(bin())
            .args([
                "serve",
                "--no-http",
                "--store",
                "memory",
                "--discovery",
                "none",
            ])
            .args(["--collection", name])
            .output()
            .expect("run serve");
        assert!(!out.status.success(), "{name} accepted");
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(
            why.contains("reserved") || why.contains("invalid collection name"),
            "{name}: {why}"
        );
    }
}

/// `--config FILE`: its settings apply; a `ZEROSERVICES_*` variable beats the file, and a flag
/// beats both.
#[test]
fn config_file_settings_yield_to_variables_and_flags() {
    let file = common::TempFile::new(
        "serve.toml",
        "name = \"from-file\"\nstore = \"memory\"\nno-http = true\ndiscovery = \"none\"\ncollections = [\"power\"]\n",
    );
    let name_of = |env: Option<&str>, flag: Option<&str>| -> String {
        let mut c = Command::new(bin());
        c.args(["serve", "--config", &file.arg()]);
        if let Some(n) = flag {
            c.args(["--name", n]);
        }
        if let Some(n) = env {
            c.env("ZEROSERVICES_NAME", n);
        }
        let node = common::spawn("serve", c);
        let line = node.wait_line("\"ready\"", Duration::from_secs(10));
        let v: Value = serde_json::from_str(&line).expect("ready JSON");
        v["name"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(name_of(None, None), "from-file");
    assert_eq!(name_of(Some("from-env"), None), "from-env");
    assert_eq!(name_of(Some("from-env"), Some("from-flag")), "from-flag");
}
