//! `/_admin/`: served from the binary (page, script, the JavaScript client), the cluster's
//! state as JSON, only to callers with the admin grant and only to the node's own origin.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use zeroservices_core::store::MemoryCollection;
use zeroservices_core::CollectionSpec;
use zeroservices_http::{BasicAuth, HttpConfig};

fn specs() -> Vec<CollectionSpec> {
    vec![CollectionSpec::new(
        "power",
        Arc::new(MemoryCollection::new()),
    )]
}

#[tokio::test]
async fn the_page_its_assets_and_the_state_are_served() {
    let api = common::start_with(specs(), HttpConfig::default()).await;
    let page = api.raw("GET", "/_admin/", None, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    let csp = page.header("content-security-policy").expect("CSP");
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let html = page.body.as_str().expect("html text");
    assert!(
        html.contains("/_admin/admin.js") && !html.contains("http"),
        "no CDN: {html}"
    );
    let client = api.raw("GET", "/_admin/client.js", None, &[]).await;
    assert!(client
        .body
        .as_str()
        .expect("js")
        .contains("export function createClient"));
    let script = api.raw("GET", "/_admin/admin.js", None, &[]).await;
    assert!(script
        .body
        .as_str()
        .expect("js")
        .contains("from \"/_admin/client.js\""));
    let moved = api.raw("GET", "/_admin", None, &[]).await;
    assert_eq!(moved.status, StatusCode::PERMANENT_REDIRECT);

    let state = api.json("GET", "/_admin/api/state", None).await;
    assert_eq!(state.status, StatusCode::OK);
    let me = &state.body["nodes"][0];
    assert_eq!(me["state"], "self");
    assert_eq!(me["collections"], serde_json::json!(["power"]));
    let power = &state.body["collections"][0];
    assert_eq!(power["name"], "power");
    assert_eq!(power["providers"][0]["node_id"], me["node_id"]);
    assert!(
        power["providers"][0]["store"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "store identity shown: {power}"
    );
}

#[tokio::test]
async fn only_an_admin_grant_opens_it() {
    let auth = BasicAuth::new()
        .user("root", "root-pass", &[("*", "*")])
        .user("ops", "ops-pass", &[("_admin", "read")])
        .user("alice", "alice-pass", &[("power", "*")]);
    let cfg = HttpConfig {
        auth: Arc::new(auth),
        ..HttpConfig::default()
    };
    let api = common::start_with(specs(), cfg).await;
    for path in ["/_admin/", "/_admin/api/state", "/_admin/client.js"] {
        let anon = api.raw("GET", path, None, &[]).await;
        assert_eq!(anon.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            anon.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Basic")),
            "a browser asks for credentials"
        );
        let alice = common::basic("alice");
        let a = api
            .raw("GET", path, None, &[("authorization", &alice)])
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path} without the grant");
        for user in ["root", "ops"] {
            let creds = common::basic(user);
            let ok = api
                .raw("GET", path, None, &[("authorization", &creds)])
                .await;
            assert_eq!(ok.status, StatusCode::OK, "{path} as {user}");
        }
    }
}

#[tokio::test]
async fn other_origins_are_refused() {
    let api = common::start_with(specs(), HttpConfig::default()).await;
    let host = ("host", "admin.example:5001");
    let foreign = api
        .raw(
            "GET",
            "/_admin/api/state",
            None,
            &[host, ("origin", "https://evil.example")],
        )
        .await;
    foreign.assert_error(403, "forbidden");
    let cross = api
        .raw(
            "GET",
            "/_admin/api/state",
            None,
            &[host, ("sec-fetch-site", "cross-site")],
        )
        .await;
    cross.assert_error(403, "forbidden");
    // Even a local development origin, allowed on the API, is not the admin page's own.
    let local = api
        .raw(
            "GET",
            "/_admin/api/state",
            None,
            &[host, ("origin", "http://localhost:3000")],
        )
        .await;
    local.assert_error(403, "forbidden");
    let own = api
        .raw(
            "GET",
            "/_admin/api/state",
            None,
            &[
                host,
                ("origin", "http://admin.example:5001"),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await;
    assert_eq!(own.status, StatusCode::OK);
}
