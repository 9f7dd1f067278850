//! `/_admin/`: the operator's page, served by every HTTP node. Nodes with their state and
//! round-trip time, collections with their providers, store identities and refusals, the live
//! event rate per collection, a data browser speaking the list language and a live event tail.
//! Built on the JavaScript client (`clients/js`), compiled into the binary: no CDN.
//!
//! Same-origin only and behind an admin grant: `_admin/read` (or `*/*`) for the signed-in user.
//! A request whose `Origin` is another page's, or that a browser marks cross-site
//! (`Sec-Fetch-Site`), is refused; the page forbids framing and loads nothing from elsewhere.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use zeroservices_core::resources::Action;

use crate::auth::{Access, Principal};
use crate::error::ApiError;
use crate::AppState;

/// The name grants use for the admin page (`_admin/read`).
pub const ADMIN_COLLECTION: &str = "_admin";

const INDEX_HTML: &str = include_str!("index.html");
const ADMIN_JS: &str = include_str!("admin.js");
const ADMIN_CSS: &str = include_str!("admin.css");
const CLIENT_JS: &str = include_str!("../../../clients/js/src/index.js");

/// What the page's responses carry: nothing from elsewhere, no framing, no sniffing.
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The admin routes, each behind [`guard`].
pub(crate) fn routes(st: AppState) -> Router<AppState> {
    Router::new()
        .route("/_admin", get(|| async { redirect() }))
        .route(
            "/_admin/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/_admin/admin.js",
            get(|| async { asset(ADMIN_JS, "text/javascript") }),
        )
        .route(
            "/_admin/admin.css",
            get(|| async { asset(ADMIN_CSS, "text/css") }),
        )
        .route(
            "/_admin/client.js",
            get(|| async { asset(CLIENT_JS, "text/javascript") }),
        )
        .route("/_admin/api/state", get(state))
        .route_layer(axum::middleware::from_fn_with_state(st, guard))
}

fn redirect() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, "/_admin/")],
    )
        .into_response()
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Whether the request comes from this node's own pages (or from no page at all: a direct
/// navigation, curl).
fn same_origin(req: &Request) -> bool {
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    let Some(origin) = h.get(header::ORIGIN) else {
        return true;
    };
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin.to_str().ok().and_then(|o| o.split_once("://")), host) {
        (Some((scheme, authority)), Some(host)) => {
            matches!(scheme, "http" | "https") && authority.eq_ignore_ascii_case(host)
        }
        _ => false,
    }
}

/// Same origin and an admin grant, or no admin page; its answers carry the page's security
/// headers.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if !same_origin(&req) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the admin page answers its own origin only",
        )
        .into_response();
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let allowed = st
        .auth
        .authenticate(authorization)
        .and_then(|who: Principal| {
            st.auth.authorize(
                &who,
                ADMIN_COLLECTION,
                Access::Action(&Action::Custom("read".into())),
            )
        });
    let mut resp = match allowed {
        Ok(()) => next.run(req).await,
        Err(e) => {
            let unauthorized = e.status() == StatusCode::UNAUTHORIZED;
            let mut r = e.into_response();
            if unauthorized {
                // A browser asks for credentials, then sends them with every request here.
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"zeroservices admin\""),
                );
            }
            r
        }
    };
    let hs = resp.headers_mut();
    hs.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    hs.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    hs.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    hs.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    hs.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /_admin/api/state`: this node and its peers, and the collections of the cluster.
async fn state(State(st): State<AppState>) -> Json<Value> {
    let me = st.node.announcement();
    let mut nodes = vec![json!({
        "name": me.name, "node_id": me.node_id, "node_type": me.node_type,
        "state": "self", "rtt_ms": 0.0, "last_seen_ms": 0,
        "collections": me.collections, "stores": me.stores, "refused": me.refused,
    })];
    let mut all = vec![me];
    for p in st.node.directory().peers() {
        let state = match (p.down, p.rtt) {
            (true, _) => "down",
            (false, Some(_)) => "up",
            (false, None) => "unverified",
        };
        let a = &p.announcement;
        nodes.push(json!({
            "name": a.name, "node_id": a.node_id, "node_type": a.node_type,
            "state": state,
            "rtt_ms": p.rtt.map(|d| d.as_secs_f64() * 1000.0),
            "last_seen_ms": u64::try_from(p.last_seen.elapsed().as_millis()).unwrap_or(u64::MAX),
            "collections": a.collections, "stores": a.stores, "refused": a.refused,
        }));
        all.push(p.announcement);
    }
    let mut names: Vec<String> = all
        .iter()
        .flat_map(|a| a.collections.iter().chain(a.refused.keys()).cloned())
        .collect();
    names.sort();
    names.dedup();
    let collections: Vec<Value> = names
        .iter()
        .map(|c| {
            let providers: Vec<Value> = all
                .iter()
                .filter(|a| a.collections.contains(c))
                .map(|a| json!({"name": a.name, "node_id": a.node_id, "store": a.stores.get(c)}))
                .collect();
            let refused: Vec<Value> = all
                .iter()
                .filter_map(|a| {
                    a.refused
                        .get(c)
                        .map(|why| json!({"name": a.name, "node_id": a.node_id, "reason": why}))
                })
                .collect();
            json!({"name": c, "providers": providers, "refused": refused})
        })
        .collect();
    Json(json!({"node": nodes[0]["name"], "nodes": nodes, "collections": collections}))
}
