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
