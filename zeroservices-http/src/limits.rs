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
