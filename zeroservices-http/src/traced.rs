//! One span per HTTP request when the node traces (see `zeroservices_core::trace`): the child
//! of the caller's W3C `traceparent` header when it sends one, and the parent of the resource
//! requests the route makes. A node built without tracing has no such layer at all.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use zeroservices_core::trace;

/// The span's name: the method and the route, its collection segment filled in
/// (`POST /power`, `PATCH /power/{id}`).
fn name(req: &Request) -> String {
    let path = req.uri().path();
    let route = match req.extensions().get::<MatchedPath>() {
        Some(m) => {
            let c = path.split('/').nth(1).unwrap_or("");
            m.as_str().replacen("{c}", c, 1)
        }
        None => path.to_owned(),
    };
    format!("{} {route}", req.method())
}

pub(crate) async fn layer(req: Request, next: Next) -> Response {
    let parent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let span = trace::span(&name(&req), "server", parent.as_deref());
    next.run(req).instrument(span).await
}
