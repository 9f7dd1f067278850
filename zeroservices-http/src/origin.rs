//! Which web pages may call the API from a browser (CORS), and the refusal of state-changing
//! requests and websocket handshakes from any other page (a form, a `fetch` or a `WebSocket`
//! from a foreign site, riding on cached Basic credentials, is cross-site request forgery).
//!
//! Allowed by default: the node's own origin (the page it serves), and local development
//! servers (`http://localhost:*`, `http://127.0.0.1:*`). `--cors-origin ORIGIN` adds one,
//! `--cors-origin '*'` opens reads to every origin (CORS without credentials); writes and the
//! websocket stay closed to unlisted origins whenever the request carries credentials. A request
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

/// Whether a request from a browser page of `origin` may change data or open the websocket:
/// the allowed origins, and with `*` any origin only for a request that carries no
/// credentials (no `Authorization`, no `Cookie`): a foreign page must never ride on a user's
/// cached credentials, whatever the CORS setting.
fn may_act(origin: &str, host: Option<&str>, extra: &[String], credentials: bool) -> bool {
    let open = extra.iter().any(|o| o == "*");
    let named: Vec<String> = extra.iter().filter(|o| *o != "*").cloned().collect();
    origin_allowed(origin, host, &named) || (open && !credentials)
}

/// A websocket handshake (a GET that upgrades): it opens a channel that reads data with the
/// caller's credentials, so the origin rule of writes applies to it.
fn is_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Refuses, with 403, a state-changing request or a websocket handshake whose `Origin` is
/// present and not allowed (see [`may_act`]).
pub(crate) async fn guard(
    extra: std::sync::Arc<Vec<String>>,
    req: Request,
    next: Next,
) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe || is_upgrade(&req) {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok());
            let credentials = req.headers().contains_key(header::AUTHORIZATION)
                || req.headers().contains_key(header::COOKIE);
            let allowed = origin
                .to_str()
                .is_ok_and(|o| may_act(o, host, &extra, credentials));
            if !allowed {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this origin may not change data or open the websocket here (add it with --cors-origin)",
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::may_act;

    #[test]
    fn star_opens_only_requests_without_credentials() {
        let star = ["*".to_owned()];
        assert!(may_act("https://evil.example", None, &star, false));
        assert!(!may_act("https://evil.example", None, &star, true));
        assert!(may_act("http://localhost:3000", None, &star, true));
        let named = ["https://app.example".to_owned(), "*".to_owned()];
        assert!(may_act("https://app.example", None, &named, true));
    }
}
