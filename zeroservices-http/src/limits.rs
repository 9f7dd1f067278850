//! Oversized bodies: a request whose `Content-Length` exceeds the limit is answered 413 before
//! the handler runs. Its body is read and discarded first (up to [`DRAIN_CAP`] bytes, within
//! [`DRAIN_TIME`]), because closing a connection with unread data makes the kernel send a
//! reset that can destroy the 413 before a client without `Expect: 100-continue` reads it.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::error::ApiError;

/// Largest body drained before answering 413; bigger ones just close the connection.
pub(crate) const DRAIN_CAP: u64 = 64 * 1024 * 1024;
/// Longest time spent draining.
pub(crate) const DRAIN_TIME: Duration = Duration::from_secs(10);

pub(crate) async fn reject_oversized(
    State(limit): State<usize>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(len) = declared.filter(|l| *l > limit as u64) else {
        return next.run(req).await;
    };
    if len <= DRAIN_CAP {
        let mut stream = req.into_body().into_data_stream();
        let drain = async { while let Some(Ok(_)) = stream.next().await {} };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    }
    let mut resp = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("request body over {limit} bytes"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
