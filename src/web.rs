//! What the example pages load besides themselves: the JavaScript client (`clients/js`,
//! compiled into the binary) and, for React pages without a bundler, React's UMD builds from
//! `examples/todo/node_modules` plus a tiny module that hands the page's `window.React` to the
//! client's hooks (an import map sends `"react"` there).
//!
//! ```
//! let routes: axum::Router = zeroservices::web::client_routes("/ui");
//! # drop(routes);
//! ```

use std::path::PathBuf;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The client library, as served to pages.
pub const CLIENT_JS: &str = include_str!("../clients/js/src/index.js");
/// Its React hooks (they import `"react"`).
pub const CLIENT_REACT_JS: &str = include_str!("../clients/js/src/react.js");
/// `"react"` for pages that load React's UMD build: the hooks the client needs, from
/// `window.React`.
const REACT_SHIM: &str =
    "const R = window.React;\nexport const { useEffect, useState } = R;\nexport default R;\n";

fn js(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/javascript")], body).into_response()
}

async fn vendor(file: &'static str) -> Response {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/todo/node_modules")
        .join(file);
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/javascript")], bytes).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} missing: run `npm ci` in examples/todo", path.display()),
        )
            .into_response(),
    }
}

/// Under `prefix`: `client.js`, `client-react.js`, `react-shim.js`, `vendor/react.js` and
/// `vendor/react-dom.js`, in a router of any state `S` (to merge into the page's own).
pub fn client_routes<S: Clone + Send + Sync + 'static>(prefix: &str) -> Router<S> {
    Router::new()
        .route(
            &format!("{prefix}/client.js"),
            get(|| async { js(CLIENT_JS) }),
        )
        .route(
            &format!("{prefix}/client-react.js"),
            get(|| async { js(CLIENT_REACT_JS) }),
        )
        .route(
            &format!("{prefix}/react-shim.js"),
            get(|| async { js(REACT_SHIM) }),
        )
        .route(
            &format!("{prefix}/vendor/react.js"),
            get(|| vendor("react/umd/react.production.min.js")),
        )
        .route(
            &format!("{prefix}/vendor/react-dom.js"),
            get(|| vendor("react-dom/umd/react-dom.production.min.js")),
        )
}
