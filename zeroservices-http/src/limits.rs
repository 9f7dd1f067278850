//! Bodies: [`read_body_within`] reads a request's body before its handler runs, within the
//! body timeout (408 otherwise) and the size limit (413).
//!
//! Oversized bodies: a request whose `Content-Length` exceeds the limit is answered 413 before
//! the handler runs. Its body is read and discarded first (up to [`DRAIN_CAP`] bytes, within
//! [`DRAIN_TIME`]), because closing a connection with unread data makes the kernel send a
//! reset that can destroy the 413 before a client without `Expect: 100-continue` reads it.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::{BoxFuture, Either};
use futures::{FutureExt, StreamExt};
use tower::{Layer, Service};

use crate::error::ApiError;

/// Largest body drained before answering 413; bigger ones just close the connection.
pub(crate) const DRAIN_CAP: u64 = 64 * 1024 * 1024;
/// Longest time spent draining.
pub(crate) const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Layer answering 413 for a declared body over `limit` (see the module documentation). A
/// plain `tower` service: requests under the limit go straight to the inner service, with no
/// per-request boxing or cloning.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RejectOversizedLayer {
    pub(crate) limit: usize,
}

impl<S> Layer<S> for RejectOversizedLayer {
    type Service = RejectOversized<S>;
    fn layer(&self, inner: S) -> RejectOversized<S> {
        RejectOversized {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RejectOversized<S> {
    inner: S,
    limit: usize,
}

impl<S> Service<Request> for RejectOversized<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared.filter(|l| *l > self.limit as u64) {
            None => Either::Left(self.inner.call(req)),
            Some(len) => Either::Right(Box::pin(reject(req, len, self.limit).map(Ok))),
        }
    }
}

async fn reject(req: Request, len: u64, limit: usize) -> Response {
    if len <= DRAIN_CAP {
        let mut stream = req.into_body().into_data_stream();
        let drain = async { while let Some(Ok(_)) = stream.next().await {} };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    }
    too_large(limit)
}

/// Reads the whole body of a request that has one within `timeout` (else 408, and the
/// connection closes) and `limit` bytes (else 413), then runs the handler on it. A client that
/// trickles its body can hold a request for `timeout` at most, and so cannot hold a graceful
/// shutdown off. Requests without a body (GET, websocket upgrades) pass untouched.
pub(crate) async fn read_body_within(
    timeout: Duration,
    limit: usize,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if !has_body {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let read = async {
        let mut stream = body.into_data_stream();
        let mut chunks: Vec<bytes::Bytes> = Vec::new();
        let mut len = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request(format!("cannot read body: {e}")).into_response()
            })?;
            len += chunk.len();
            if len > limit {
                return Err(too_large(limit));
            }
            chunks.push(chunk);
        }
        Ok(match chunks.len() {
            1 => chunks.swap_remove(0),
            _ => chunks.concat().into(),
        })
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(resp)) => resp,
        Err(_) => {
            let mut resp = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("request body not received within {timeout:?}"),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

fn too_large(limit: usize) -> Response {
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
