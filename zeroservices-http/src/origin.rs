//! Which web pages may call the API from a browser (CORS), and the refusal of state-changing
//! requests from any other page (a form or `fetch` from a foreign site, riding on cached Basic
//! credentials, is cross-site request forgery).
//!
//! Allowed by default: the node's own origin (the page it serves), and local development
//! servers (`http://localhost:*`, `http://127.0.0.1:*`). `--cors-origin ORIGIN` adds one,
//! `--cors-origin '*'` opens the API to every origin (never with credentials). A request
//! without an `Origin` header (curl, another service) is not a browser's and is not affected.
//!
//! ```
//! use zeroservices_http::origin_allowed;
//! assert!(origin_allowed("http://localhost:5173", None, &[]));
//! assert!(origin_allowed("http://api.example:5001", Some("api.example:5001"), &[]));
//! assert!(!origin_allowed("https://evil.example", Some("api.example:5001"), &[]));
//! ```

use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Whether a browser page of `origin` may call a node reached as `host` (the `Host` header),
/// given the configured extra origins (`*` opens to all).
pub fn origin_allowed(origin: &str, host: Option<&str>, extra: &[String]) -> bool {
    if extra.iter().any(|o| o == "*" || o == origin) {
        return true;
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // `null` and other opaque origins
    };
    if !matches!(scheme, "http" | "https") {
        return false;
    }
    if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
        return true; // same origin
    }
    let (hostname, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    scheme == "http" && port_ok && matches!(hostname, "localhost" | "127.0.0.1")
}

/// Refuses, with 403, a state-changing request whose `Origin` is present and not allowed.
pub(crate) async fn guard(
    extra: std::sync::Arc<Vec<String>>,
    req: Request,
    next: Next,
) -> Response {
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok());
            let allowed = origin
                .to_str()
                .is_ok_and(|o| origin_allowed(o, host, &extra));
            if !allowed {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this origin may not change data here (add it with --cors-origin)",
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}
