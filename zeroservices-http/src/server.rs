//! The HTTP/1.1 server loop: accepts connections, serves the router on each with a header read
//! timeout, and at shutdown stops accepting, lets each connection finish its current request,
//! and closes whatever is still open when the shutdown bound runs out.
//!
//! (`axum::serve` has no header timeout and no bound on its graceful shutdown, so a client that
//! never finishes its headers, or a trickled body, could hold a node's exit off forever.)

use std::future::Future;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// The TCP peer of a request (an extension on every request the server hands to the router).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) std::net::SocketAddr);

/// Serves `router` on `listener` until `shutdown` completes; then waits at most
/// `shutdown_timeout` for the requests in progress (websockets are told by the node's own
/// shutdown) and closes the rest.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let stopping = CancellationToken::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Reap finished connections so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        let service =
            TowerToHyperService::new(router.clone().map_request(move |req: Request<Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ClientAddr(peer));
                req
            }));
        let conn = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stopping = stopping.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => return log_end(r),
                _ = stopping.cancelled() => {}
            }
            // Finish the request in progress, then close (keep-alive ends here).
            conn.as_mut().graceful_shutdown();
            log_end(conn.await);
        });
    }
    drop(listener);
    stopping.cancel();
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(shutdown_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "HTTP connections still busy after {shutdown_timeout:?}: closed"
        );
        connections.shutdown().await;
    }
    Ok(())
}

fn log_end(r: hyper::Result<()>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}
