//! The power page in a real browser: headless Chromium driven over WebDriver (chromedriver)
//! adds a power through the form and sees its row turn done with the right result, and sees a
//! row created by a separate HTTP client appear without a reload (saves `target/power-ui.png`);
//! the React page of pending powers on the client library's `useLiveQuery`; the React todo page
//! in sync across tabs. Both example pages run on the client library (`clients/js`).

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::{example, free_port, root, spawn, spawn_ready};
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    base: String,
    session: String,
}

fn wd(method: &str, url: &str, body: Option<Value>) -> Value {
    let req = ureq::request(method, url).timeout(Duration::from_secs(30));
    let res = match body {
        Some(b) => req.send_string(&b.to_string()),
        None => req.call(),
    };
    let text = match res {
        Ok(r) => r.into_string().unwrap_or_default(),
        Err(ureq::Error::Status(code, r)) => panic!(
            "WebDriver {method} {url}: {code} {}",
            r.into_string().unwrap_or_default()
        ),
        Err(e) => panic!("WebDriver {method} {url}: {e}"),
    };
    serde_json::from_str::<Value>(&text)
        .map(|v| v["value"].clone())
        .unwrap_or(Value::Null)
}

impl Driver {
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        wd(
            method,
            &format!("{}/session/{}{path}", self.base, self.session),
            body,
        )
    }
    fn script(&self, js: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
    }
    fn element(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }
    fn rows(&self) -> Vec<Vec<String>> {
        let v = self.script("return Array.from(document.querySelectorAll('#rows tr')).map(tr => Array.from(tr.children).map(td => td.textContent));");
        serde_json::from_value(v).unwrap_or_default()
    }
}

/// chromedriver on a free port and a headless Chromium session; both end with the guard.
fn start_browser() -> (common::Proc, Driver, std::path::PathBuf) {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} missing: .ci/run installs chromium and chromium-driver"
        );
    }
    let dport = free_port();
    let mut dc = Command::new("/usr/bin/chromedriver");
    dc.arg(format!("--port={dport}"));
    let driver = spawn("chromedriver", dc);
    let base = format!("http://127.0.0.1:{dport}");
    common::eventually("chromedriver to listen", Duration::from_secs(10), || {
        ureq::get(&format!("{base}/status")).call().ok().map(|_| ())
    });
    let profile = std::env::temp_dir().join(format!("zs-chrome-{}-{dport}", std::process::id()));
    let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1000,800", format!("--user-data-dir={}", profile.display())]}}}});
    let created = wd("POST", &format!("{base}/session"), Some(caps));
    let session = created["sessionId"]
        .as_str()
        .expect("session id")
        .to_owned();
    (driver, Driver { base, session }, profile)
}

fn screenshot(d: &Driver, name: &str) {
    let shot = d.cmd("GET", "/screenshot", None);
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().expect("base64 PNG"))
        .expect("decode");
    assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
    let out = target_dir().join(name);
    std::fs::write(&out, png).expect("write screenshot");
    eprintln!("screenshot: {}", out.display());
}

#[test]
fn the_per_user_todo_page_stays_in_sync_and_users_never_see_each_others_items() {
    assert!(
        root()
            .join("examples/todo/node_modules/react/umd/react.production.min.js")
            .exists(),
        "React is not installed: run `npm ci` in examples/todo (.ci/run does)"
    );
    let (_app, http) = start_example("todo");
    let (_driver, d, profile) = start_browser();
    d.cmd(
        "POST",
        "/url",
        Some(json!({"url": format!("http://127.0.0.1:{http}/todo/")})),
    );
    common::eventually("the todo page to go live", Duration::from_secs(10), || {
        (d.script("return (document.getElementById('status') || {}).textContent;") == "live")
            .then_some(())
    });
    let input = d.element("input.new");
    for title in ["write tests", "ship it"] {
        d.cmd(
            "POST",
            &format!("/element/{input}/value"),
            Some(json!({"text": format!("{title}\u{E007}")})),
        );
    }
    let titles = || -> Vec<String> {
        serde_json::from_value(d.script("return Array.from(document.querySelectorAll('li label')).map(l => l.textContent).sort();")).unwrap_or_default()
    };
    common::eventually("two todos to be listed", Duration::from_secs(10), || {
        (titles() == ["ship it", "write tests"]).then_some(())
    });
    // Toggle one: the server's patch event marks it completed.
    d.script("Array.from(document.querySelectorAll('li')).find(li => li.textContent.includes('write tests')).querySelector('.toggle').click();");
    common::eventually(
        "the toggled todo to be completed and the count to drop",
        Duration::from_secs(10),
        || {
            let done = d.script("return document.querySelectorAll('li.completed').length;");
            let count = d.script("return document.querySelector('.count').textContent;");
            (done == json!(1) && count == json!("1 item left")).then_some(())
        },
    );
    // Another client of alice's adds one: it appears without a reload; the server stored what
    // the page did.
    let base = format!("http://127.0.0.1:{http}/todos");
    let (alice, bob) = (todo_token(http, "alice"), todo_token(http, "bob"));
    let r = ureq::post(&base)
        .set("authorization", &format!("Bearer {alice}"))
        .send_string(r#"{"title": "from curl", "completed": false}"#)
        .expect("POST");
    assert_eq!(r.status(), 201);
    common::eventually("the curl todo to appear", Duration::from_secs(10), || {
        titles().contains(&"from curl".to_string()).then_some(())
    });
    let list = |token: &str, query: &str| -> Value {
        let r = ureq::get(&format!("{base}{query}"))
            .set("authorization", &format!("Bearer {token}"))
            .call()
            .expect("GET");
        serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null)
    };
    let stored = list(&alice, "?where=%7B%22completed%22:true%7D");
    assert_eq!(stored.as_array().map(Vec::len), Some(1), "{stored}");
    assert_eq!(stored[0]["resource_data"]["title"], "write tests");
    // The schema rejects what the page would never send.
    let bad = ureq::post(&base)
        .set("authorization", &format!("Bearer {alice}"))
        .send_string(r#"{"title": ""}"#);
    assert!(
        matches!(bad, Err(ureq::Error::Status(422, _))),
        "empty title accepted"
    );

    // Bob's todos never reach alice's page (realtime), nor her REST list, and back.
    let r = ureq::post(&base)
        .set("authorization", &format!("Bearer {bob}"))
        .send_string(r#"{"title": "bob's secret", "completed": false}"#)
        .expect("POST as bob");
    assert_eq!(r.status(), 201);
    // Absence, checked against a later marker: alice's next todo comes through the same
    // event stream after bob's, so once it is on her page, bob's would be too.
    let r = ureq::post(&base)
        .set("authorization", &format!("Bearer {alice}"))
        .send_string(r#"{"title": "after bob's", "completed": false}"#)
        .expect("POST marker as alice");
    assert_eq!(r.status(), 201);
    common::eventually(
        "alice's marker todo to appear",
        Duration::from_secs(10),
        || titles().contains(&"after bob's".to_string()).then_some(()),
    );
    assert!(
        !titles().contains(&"bob's secret".to_string()),
        "bob's todo reached alice's page"
    );
    let alices = list(&alice, "").to_string();
    assert!(!alices.contains("bob's secret"), "{alices}");
    d.cmd(
        "POST",
        "/url",
        Some(json!({"url": format!("http://127.0.0.1:{http}/todo/?user=bob")})),
    );
    common::eventually(
        "bob's page to show only bob's todo",
        Duration::from_secs(10),
        || (titles() == ["bob's secret"]).then_some(()),
    );
    let bobs = list(&bob, "").to_string();
    assert!(
        !bobs.contains("write tests") && !bobs.contains("from curl"),
        "{bobs}"
    );
    screenshot(&d, "todo-ui.png");
    d.cmd("DELETE", "", None);
    let _ = std::fs::remove_dir_all(&profile);
}

/// A token of the todo example's demo user `user`.
fn todo_token(http: u16, user: &str) -> String {
    let r = ureq::post(&format!("http://127.0.0.1:{http}/todo/login"))
        .set("content-type", "application/json")
        .send_string(&json!({"user": user, "password": user}).to_string())
        .expect("login");
    let v: Value =
        serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null);
    v["token"].as_str().expect("token").to_owned()
}

/// An example on a free port, alone (no discovery) with the memory store, once it is ready.
fn start_example(name: &str) -> (common::Proc, u16) {
    let http = free_port();
    let mut c = Command::new(example(name));
    c.args([
        "--discovery",
        "none",
        "--store",
        "memory",
        "--http",
        &format!("127.0.0.1:{http}"),
        "--bind",
        "127.0.0.1",
    ]);
    let p = spawn_ready(name, c);
    (p, http)
}

fn target_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("exe");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

#[test]
fn the_power_page_updates_live_in_headless_chromium() {
    let (_demo, http) = start_example("power");

    let (_driver, d, profile) = start_browser();

    d.cmd(
        "POST",
        "/url",
        Some(json!({"url": format!("http://127.0.0.1:{http}/ui/")})),
    );
    common::eventually("the page to go live", Duration::from_secs(10), || {
        (d.script("return document.getElementById('state').textContent;") == "live").then_some(())
    });
    d.script("window.__loaded_once = true;");

    // Add a power through the form.
    let input = d.element("#value");
    d.cmd(
        "POST",
        &format!("/element/{input}/value"),
        Some(json!({"text": "12"})),
    );
    let submit = d.element("#submit");
    d.cmd("POST", &format!("/element/{submit}/click"), Some(json!({})));
    common::eventually(
        "the form's power to turn done with 144",
        Duration::from_secs(10),
        || {
            d.rows().into_iter().find(|r| {
                r.get(1).map(String::as_str) == Some("12")
                    && r.get(2).map(String::as_str) == Some("done")
                    && r.get(3).map(String::as_str) == Some("144")
            })
        },
    );

    // A power created by another client appears without a reload.
    let r = ureq::post(&format!("http://127.0.0.1:{http}/power"))
        .send_string(r#"{"value": 5, "status": "pending"}"#)
        .expect("POST");
    let v: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    let id = v["resource_id"].as_str().unwrap().to_owned();
    common::eventually(
        "the curl-created row to appear and turn done",
        Duration::from_secs(10),
        || {
            d.rows().into_iter().find(|r| {
                r.first() == Some(&id)
                    && r.get(2).map(String::as_str) == Some("done")
                    && r.get(3).map(String::as_str) == Some("25")
            })
        },
    );
    assert_eq!(
        d.script("return window.__loaded_once === true;"),
        json!(true),
        "the page reloaded"
    );

    screenshot(&d, "power-ui.png");
    d.cmd("DELETE", "", None);
    let _ = std::fs::remove_dir_all(&profile);
}

/// The React page on the client library's `useLiveQuery(power, {where: {status: "pending"}})`:
/// a power created by curl appears, and leaves when a worker (started afterwards, so the
/// page is seen to hold it first) marks it done.
#[test]
fn a_react_live_query_page_shows_pending_powers_until_the_worker_is_done() {
    let router = free_port();
    let mut svc = Command::new(example("power"));
    svc.args([
        "--role",
        "service",
        "--store",
        "memory",
        "--discovery",
        "none",
    ]);
    svc.args(["--bind", "127.0.0.1", "--router-port", &router.to_string()]);
    svc.args(["--heartbeat-ms", "200"]);
    let _svc = spawn_ready("power-service", svc);
    let http = free_port();
    let seed = format!("static:127.0.0.1:{router}");
    let mut api = Command::new(example("power"));
    api.args(["--role", "api", "--discovery", &seed, "--bind", "127.0.0.1"]);
    api.args([
        "--http",
        &format!("127.0.0.1:{http}"),
        "--heartbeat-ms",
        "200",
    ]);
    let _api = spawn_ready("power-api", api);

    let (_driver, d, profile) = start_browser();
    d.cmd(
        "POST",
        "/url",
        Some(json!({"url": format!("http://127.0.0.1:{http}/ui/pending.html")})),
    );
    let shown = || -> Vec<String> {
        serde_json::from_value(d.script(
            "return Array.from(document.querySelectorAll('#pending li')).map(li => li.dataset.id);",
        ))
        .unwrap_or_default()
    };
    common::eventually(
        "the page to render its list",
        Duration::from_secs(10),
        || (d.script("return !!document.getElementById('pending');") == json!(true)).then_some(()),
    );
    let id = common::eventually(
        "the API node to serve power",
        Duration::from_secs(10),
        || {
            let r = ureq::post(&format!("http://127.0.0.1:{http}/power"))
                .send_string(r#"{"value": 7, "status": "pending"}"#)
                .ok()?;
            let v: Value = serde_json::from_str(&r.into_string().ok()?).ok()?;
            v["resource_id"].as_str().map(str::to_owned)
        },
    );
    common::eventually(
        "the pending power on the page",
        Duration::from_secs(10),
        || shown().contains(&id).then_some(()),
    );
    let mut w = Command::new(example("power"));
    w.args([
        "--role",
        "worker",
        "--discovery",
        &seed,
        "--bind",
        "127.0.0.1",
    ]);
    w.args(["--heartbeat-ms", "200", "--catch-up-ms", "200"]);
    let _worker = spawn_ready("power-worker", w);
    common::eventually(
        "the power to leave once done",
        Duration::from_secs(15),
        || (!shown().contains(&id)).then_some(()),
    );
    screenshot(&d, "power-pending.png");
    d.cmd("DELETE", "", None);
    let _ = std::fs::remove_dir_all(&profile);
}

/// `zeroservices serve` of `power` on its own memory store, HTTP off, at `router`;
/// `seed`: another node's router port to find.
fn provider(name: &str, router: u16, seed: Option<u16>) -> common::Proc {
    let mut c = Command::new(common::bin());
    c.args([
        "serve",
        "--name",
        name,
        "--no-http",
        "--collection",
        "power",
    ]);
    c.args([
        "--store",
        "memory",
        "--bind",
        "127.0.0.1",
        "--heartbeat-ms",
        "200",
    ]);
    c.args(["--router-port", &router.to_string()]);
    match seed {
        Some(p) => c.args(["--discovery", &format!("static:127.0.0.1:{p}")]),
        None => c.args(["--discovery", "none"]),
    };
    spawn_ready(name, c)
}

/// The admin page of an API node in Chromium: the nodes with their state and RTT, `power`
/// with its provider, its store and the node that refused it (its own store would split the
/// data); a create made by another client shows in the live tail and moves the event rate; the
/// data browser lists with a `where` filter. Saves `target/admin-ui.png`.
#[test]
fn the_admin_page_shows_the_cluster_and_its_events_live() {
    let router = free_port();
    let _first = provider("provider", router, None);
    let _second = provider("late-provider", free_port(), Some(router));
    let http = free_port();
    let mut api = Command::new(common::bin());
    api.args([
        "serve",
        "--name",
        "api",
        "--http",
        &format!("127.0.0.1:{http}"),
    ]);
    api.args(["--discovery", &format!("static:127.0.0.1:{router}")]);
    api.args(["--bind", "127.0.0.1", "--heartbeat-ms", "200"]);
    let _api = spawn_ready("api", api);
    let base = format!("http://127.0.0.1:{http}");
    let create = |value: u64| {
        ureq::post(&format!("{base}/power"))
            .send_string(&json!({"value": value, "status": "pending"}).to_string())
            .ok()
            .filter(|r| r.status() == 201)
            .map(|_| ())
    };
    common::eventually(
        "the API node to route power",
        Duration::from_secs(10),
        || create(1),
    );

    let (_driver, d, profile) = start_browser();
    d.cmd(
        "POST",
        "/url",
        Some(json!({"url": format!("{base}/_admin/")})),
    );
    let table = |id: &str| -> Vec<Vec<String>> {
        serde_json::from_value(d.script(&format!(
            "return Array.from(document.querySelectorAll('#{id} tbody tr')).map(tr => Array.from(tr.children).map(td => td.textContent));"
        )))
        .unwrap_or_default()
    };
    let nodes = common::eventually(
        "three nodes, the peers up with an RTT",
        Duration::from_secs(15),
        || {
            let rows = table("nodes");
            let up = rows
                .iter()
                .filter(|r| r[2] == "up" && r[3].ends_with(" ms"))
                .count();
            (rows.len() == 3 && up == 2).then_some(rows)
        },
    );
    let names: Vec<&str> = nodes.iter().map(|r| r[0].as_str()).collect();
    assert!(
        names.contains(&"api") && names.contains(&"late-provider"),
        "{nodes:?}"
    );
    let power = common::eventually(
        "power with its provider and its refusal",
        Duration::from_secs(15),
        || {
            table("collections")
                .into_iter()
                .find(|r| r[0] == "power" && !r[3].is_empty())
        },
    );
    assert_eq!(power[1], "provider", "{power:?}");
    assert!(
        power[2].starts_with("memory:"),
        "the memory store's identity: {power:?}"
    );
    assert!(power[3].starts_with("late-provider:"), "{power:?}");

    // A create by another client: in the live tail, and counted in the rate.
    common::eventually("the live feed to be open", Duration::from_secs(10), || {
        create(42)?;
        let tail = table("tail");
        tail.iter()
            .any(|r| r[1].starts_with("power.create.") && r[4].contains("42"))
            .then_some(())
    });
    common::eventually("an event rate for power", Duration::from_secs(10), || {
        let rate: f64 = table("collections")
            .iter()
            .find(|r| r[0] == "power")
            .and_then(|r| r[4].parse().ok())?;
        (rate > 0.0).then_some(())
    });

    // The data browser speaks the list language.
    d.script("document.getElementById('b-where').value = '{\"value\": {\"$gte\": 42}}'; document.getElementById('b-sort').value = '-value'; document.querySelector('#browse button').click();");
    let rows = common::eventually("the filtered list", Duration::from_secs(10), || {
        let rows = table("b-rows");
        (!rows.is_empty()).then_some(rows)
    });
    assert!(
        rows.iter().all(|r| r[1].contains("\"value\":42")),
        "{rows:?}"
    );
    let total: String =
        serde_json::from_value(d.script("return document.getElementById('b-total').textContent;"))
            .unwrap_or_default();
    assert!(total.ends_with(&format!("of {}", rows.len())), "{total}");
    d.cmd(
        "POST",
        "/window/rect",
        Some(json!({"width": 1200, "height": 1000})),
    );
    screenshot(&d, "admin-ui.png");
    d.cmd("DELETE", "", None);
    let _ = std::fs::remove_dir_all(&profile);
}
