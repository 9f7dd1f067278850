//! An HTTP node in process for route tests: a node on a memory network (no socket, no
//! discovery) and its router, called with `oneshot` (axum's testing pattern).

#![allow(dead_code)] // each test binary uses part of it

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use base64::Engine;
use serde_json::Value;
use tower::ServiceExt;
use zeroservices_core::discovery::NoDiscovery;
use zeroservices_core::medium::MemoryNetwork;
use zeroservices_core::{store::MemoryCollection, CollectionSpec, Node};
use zeroservices_http::{app, AppState, HttpConfig};

/// A node serving `collections` behind the generated routes.
pub(crate) struct Api {
    pub(crate) router: Router,
    pub(crate) node: Node,
}

/// An answer: status, headers, JSON body (`Null` when empty, a string when not JSON).
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl Answer {
    /// A header's value as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the error shape `{"error": {"code", "message"}}` with this status and code.
    pub(crate) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "status of {}", self.body);
        assert_eq!(self.body["error"]["code"], code, "error body {}", self.body);
        assert!(self.body["error"]["message"].is_string(), "{}", self.body);
    }
}

/// A node hosting `specs` with `cfg`.
pub(crate) async fn start_with(specs: Vec<CollectionSpec>, cfg: HttpConfig) -> Api {
    let mut b = Node::builder("api")
        .memory(&MemoryNetwork::new())
        .discovery(NoDiscovery)
        .reserve_names(zeroservices_http::RESERVED_ROUTES);
    for s in specs {
        b = b.collection(s);
    }
    let node = b.start().await.expect("node");
    let router = app(AppState::new(&node, &cfg), &cfg);
    Api { router, node }
}

/// A node hosting the memory collections `names` with the default configuration.
pub(crate) async fn start(names: &[&str]) -> Api {
    let specs = names
        .iter()
        .map(|n| CollectionSpec::new(n, Arc::new(MemoryCollection::new())))
        .collect();
    start_with(specs, HttpConfig::default()).await
}

/// `Authorization` for `user` whose password is `<user>-pass`.
pub(crate) fn basic(user: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{user}-pass"));
    format!("Basic {b64}")
}

impl Api {
    /// One request: `body` as raw bytes (`None`: empty), `headers` added.
    pub(crate) async fn raw(
        &self,
        method: &str,
        uri: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_vec()));
        let res = self
            .router
            .clone()
            .oneshot(req.body(body).expect("request"))
            .await
            .expect("response");
        let (status, headers) = (res.status(), res.headers().clone());
        let bytes = axum::body::to_bytes(res.into_body(), 16 << 20)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A request with a JSON body (`None`: empty), anonymous.
    pub(crate) async fn json(&self, method: &str, uri: &str, body: Option<Value>) -> Answer {
        let text = body.map(|b| b.to_string());
        self.raw(method, uri, text.as_deref().map(str::as_bytes), &[])
            .await
    }

    /// A request as `user` (Basic, password `<user>-pass`) with a JSON body.
    pub(crate) async fn as_user(
        &self,
        user: &str,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> Answer {
        let text = body.map(|b| b.to_string());
        let auth = basic(user);
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        self.raw(method, uri, text.as_deref().map(str::as_bytes), &headers)
            .await
    }
}
