//! Operations endpoints: `/health`, `/metrics` (Prometheus text) and `/openapi.json`.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Counters behind `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    // A blocking (parking_lot) Mutex: one map update per request; never held across an await.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<([u64; BUCKETS.len()], u64, f64)>,
    pub(crate) ws_connections: AtomicI64,
    pub(crate) events_published: AtomicU64,
    pub(crate) events_delivered: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
}

impl Metrics {
    pub(crate) fn observe_request(
        &self,
        collection: &str,
        action: &str,
        status: u16,
        took: Duration,
    ) {
        // Custom action names come from clients: bucket unknown ones to bound the label set.
        let action = match action {
            "list" | "create" | "get" | "patch" | "delete" | "add_link" => action,
            _ => "custom",
        };
        *self
            .requests
            .lock()
            .entry((collection.to_owned(), action.to_owned(), status))
            .or_insert(0) += 1;
        let secs = took.as_secs_f64();
        let mut l = self.latency.lock();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                l.0[i] += 1;
            }
        }
        l.1 += 1;
        l.2 += secs;
    }
}

/// `GET /health`.
pub(crate) async fn health(State(st): State<AppState>) -> Json<Value> {
    let me = st.node.announcement();
    let directory = st.node.directory();
    let known = directory.peers();
    let peers: Vec<Value> = known
        .iter()
        .map(|p| {
            let a = &p.announcement;
            json!({
                "name": a.name, "node_id": a.node_id, "node_type": a.node_type, "collections": a.collections,
                "rtt_ms": p.rtt.map(|r| r.as_secs_f64() * 1000.0),
                "last_seen_ms": p.last_seen.elapsed().as_millis() as u64,
                "down": p.down,
            })
        })
        .collect();
    let problems = problems(&st, directory, &known);
    Json(json!({
        "status": if problems.is_empty() { "ok" } else { "degraded" },
        "problems": problems,
        "node": {"name": me.name, "node_id": me.node_id, "node_type": me.node_type, "collections": me.collections, "endpoints": me.endpoints},
        "peers": peers,
    }))
}

/// How recent a store failure still makes the node degraded.
const FAILURE_MEMORY: std::time::Duration = std::time::Duration::from_secs(30);

/// What is failing: local stores that failed lately, peers whose connection broke, and
/// collections seen in the cluster with no live provider left.
fn problems(
    st: &AppState,
    directory: &zeroservices_core::Directory,
    peers: &[zeroservices_core::PeerInfo],
) -> Vec<String> {
    let mut out: Vec<String> = st
        .node
        .failing_collections(FAILURE_MEMORY)
        .into_iter()
        .map(|c| {
            format!(
                "store of {c} failed in the last {}s",
                FAILURE_MEMORY.as_secs()
            )
        })
        .collect();
    for p in peers.iter().filter(|p| p.down) {
        out.push(format!("peer {} is unreachable", p.announcement.name));
    }
    let local = st.node.local_collections();
    for c in directory.seen_collections() {
        if !local.contains(&c) && directory.providers(&c).is_empty() {
            out.push(format!("no live provider of {c}"));
        }
    }
    out
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let m = &st.metrics;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP zeroservices_http_requests_total Resource requests by collection, action and status.");
    let _ = writeln!(out, "# TYPE zeroservices_http_requests_total counter");
    for ((c, a, s), n) in m.requests.lock().iter() {
        let c = c.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(out, "zeroservices_http_requests_total{{collection=\"{c}\",action=\"{a}\",status=\"{s}\"}} {n}");
    }
    let (buckets, count, sum) = *m.latency.lock();
    let _ = writeln!(
        out,
        "# HELP zeroservices_http_request_duration_seconds Resource request latency."
    );
    let _ = writeln!(
        out,
        "# TYPE zeroservices_http_request_duration_seconds histogram"
    );
    for (b, n) in BUCKETS.iter().zip(buckets) {
        let _ = writeln!(
            out,
            "zeroservices_http_request_duration_seconds_bucket{{le=\"{b}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "zeroservices_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "zeroservices_http_request_duration_seconds_sum {sum}");
    let _ = writeln!(
        out,
        "zeroservices_http_request_duration_seconds_count {count}"
    );
    let gauges = [
        (
            "zeroservices_websocket_connections",
            "gauge",
            m.ws_connections.load(Ordering::Relaxed).to_string(),
        ),
        (
            "zeroservices_events_published_total",
            "counter",
            m.events_published.load(Ordering::Relaxed).to_string(),
        ),
        (
            "zeroservices_events_delivered_total",
            "counter",
            m.events_delivered.load(Ordering::Relaxed).to_string(),
        ),
        (
            "zeroservices_events_dropped_total",
            "counter",
            m.events_dropped.load(Ordering::Relaxed).to_string(),
        ),
        (
            "zeroservices_known_peers",
            "gauge",
            st.node.directory().peers().len().to_string(),
        ),
    ];
    for (name, kind, v) in gauges {
        let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {v}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// `GET /openapi.json`: the collections known right now.
pub(crate) async fn openapi(State(st): State<AppState>) -> Json<Value> {
    let mut names: Vec<String> = st.node.local_collections();
    names.extend(st.node.directory().live_collections());
    names.sort();
    names.dedup();
    let err = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let res = json!({"description": "resource", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Resource"}}}});
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let key = json!({"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 255},
        "description": "a retry with the same key within 24 h answers the first answer and changes nothing"});
    let mut paths = serde_json::Map::new();
    for c in &names {
        paths.insert(format!("/{c}"), json!({
            "get": {"summary": format!("List {c}"), "parameters": [
                {"name": "where", "in": "query", "schema": {"type": "string"}, "description": "JSON filter"},
                {"name": "sort", "in": "query", "schema": {"type": "string"}},
                {"name": "skip", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 10000}},
                {"name": "fields", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "resources", "headers": {"X-Total-Count": {"schema": {"type": "integer"}}},
                    "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Resource"}}}}}, "400": err}},
            "post": {"summary": format!("Create in {c}"), "parameters": [key], "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"201": res, "400": err, "409": err, "422": err, "503": err}},
        }));
        paths.insert(format!("/{c}/{{id}}"), json!({
            "parameters": [id],
            "get": {"responses": {"200": res, "404": err}},
            "patch": {"parameters": [key], "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}, "responses": {"200": res, "400": err, "404": err, "422": err}},
            "delete": {"parameters": [key], "responses": {"204": {"description": "deleted"}, "404": err}},
        }));
    }
    Json(json!({
        "openapi": "3.0.3",
        "info": {"title": "ZeroServices API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {
            "Resource": {"type": "object", "required": ["resource_id", "resource_data"], "properties": {"resource_id": {"type": "string"}, "resource_data": {"type": "object"}}},
            "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
        }},
    }))
}
