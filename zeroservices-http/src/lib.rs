//! # ZeroServices HTTP
//!
//! An HTTP node that turns every collection of the cluster — local or on any discovered node —
//! into REST routes and a live websocket feed.
//!
//! # Layout
//! - `rest`: `GET /`, list/create/get/patch/delete and custom actions on `/{c}` routes.
//! - `calls`: what every route's resource request goes through: authorization, read rules,
//!   metrics.
//! - `realtime`: `/realtime` websocket with prefix subscriptions, overflow `resync` and resume.
//! - `ops`: `/health`, `/metrics`, `/openapi.json`.
//! - `admin`: the operator's page at `/_admin/` (needs the grant `_admin/read`).
//! - [`auth`]: the [`Auth`] trait, [`AllowAll`], [`BasicAuth`], [`JwtAuth`] (HS256, RS256).
//! - [`error`]: [`ApiError`], the one error → status + JSON mapping.
//! - `origin`: which browser origins may call (CORS), 403 for state changes from others.
//! - `outgoing`: what `/realtime` sends, as one `ServerMessage` type.
//!
//! ```no_run
//! use zeroservices_core::{Node, NodeType, discovery::MulticastDiscovery};
//! use zeroservices_http::{HttpConfig, serve};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let node = Node::builder("api").node_type(NodeType::Api).discovery(MulticastDiscovery::default()).start().await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5001").await?;
//! serve(listener, node.handle(), HttpConfig::default(), None, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! node.shutdown().await;
//! # Ok(()) }
//! ```

mod admin;
pub mod auth;
mod calls;
pub mod error;
mod idempotency;
mod limits;
mod live;
mod ops;
mod origin;
mod outgoing;
mod rate_limit;
mod realtime;
mod rest;
mod server;
mod traced;
mod visibility;

pub use admin::ADMIN_COLLECTION;
pub use auth::{AllowAll, Auth, BasicAuth, JwtAuth, Principal};
pub use error::ApiError;
pub use ops::Metrics;
pub use origin::origin_allowed;
pub use rate_limit::{RateLimit, MAX_KEYS as RATE_LIMIT_MAX_KEYS};
pub use realtime::{CONNECTION_QUEUE, MAX_SINCE, MAX_TOPICS, REPLAY_BYTES, REPLAY_CAPACITY};
pub use visibility::ReadRule;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use zeroservices_core::NodeHandle;

/// Routes of the HTTP node that no collection may take: pass them to
/// `NodeBuilder::reserve_names` on every node of a cluster this crate serves (the CLI does).
pub const RESERVED_ROUTES: &[&str] = &["realtime", "health", "metrics", "openapi.json"];

/// HTTP node settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Browser origins allowed besides the node's own and local development servers (see
    /// [`origin_allowed`]); `*` allows every origin, without credentials.
    pub cors_origins: Vec<String>,
    /// Largest request body (bytes); larger is 413. Default 1 MiB.
    pub body_limit: usize,
    /// Who may do what (default: everyone everything).
    pub auth: Arc<dyn Auth>,
    /// Events a websocket connection may fall behind before it gets a `resync`.
    pub ws_queue: usize,
    /// Events kept for resuming websocket clients.
    pub replay_capacity: usize,
    /// Bytes of events kept for resuming websocket clients (default 64 MiB).
    pub replay_bytes: usize,
    /// Longest time a client may take to send a request's headers (default 10 s); the
    /// connection is closed after it.
    pub header_timeout: Duration,
    /// Longest time a client may take to send a request's body (default 30 s): 408 after it.
    pub body_timeout: Duration,
    /// Longest wait, at shutdown, for the requests in progress (default 30 s).
    pub shutdown_timeout: Duration,
    /// Per-user read rules by collection (see [`ReadRule`]): what each user may see.
    pub read_rules: HashMap<String, ReadRule>,
    /// Requests each user (or, without credentials, each client IP) may make (see
    /// [`RateLimit`]); `None` (the default): no limit.
    pub rate_limit: Option<RateLimit>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            cors_origins: Vec::new(),
            body_limit: 1024 * 1024,
            auth: Arc::new(AllowAll),
            ws_queue: CONNECTION_QUEUE,
            replay_capacity: REPLAY_CAPACITY,
            replay_bytes: REPLAY_BYTES,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            read_rules: HashMap::new(),
            rate_limit: None,
        }
    }
}

/// Shared state of the HTTP handlers (one reference count to bump per request).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// What an [`AppState`] shares (its fields are private to this crate).
#[doc(hidden)]
#[derive(Debug)]
pub struct Shared {
    pub(crate) node: NodeHandle,
    pub(crate) auth: Arc<dyn Auth>,
    pub(crate) hub: Arc<realtime::Hub>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) read_rules: Arc<HashMap<String, ReadRule>>,
    /// Feeds `hub`; removed with the state.
    _tap: zeroservices_core::Tap,
    /// Loads the medium's history into `hub` at start.
    _prefill: Option<realtime::Prefill>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// State for `node`; taps the node's events into the realtime hub for as long as the
    /// state (or a clone of it) lives.
    pub fn new(node: &NodeHandle, cfg: &HttpConfig) -> AppState {
        let hub = Arc::new(realtime::Hub::new(
            cfg.ws_queue,
            cfg.replay_capacity,
            cfg.replay_bytes,
        ));
        let metrics = Arc::new(Metrics::default());
        // The tap's callback holds the hub and the metrics, not the state: dropping the last
        // state (which removes the tap) can then never happen inside the callback.
        let tap = realtime::tap(node, hub.clone(), metrics.clone());
        let prefill = realtime::Prefill::start(node, hub.clone(), cfg.replay_capacity);
        AppState(Arc::new(Shared {
            node: node.clone(),
            auth: cfg.auth.clone(),
            hub,
            metrics,
            read_rules: Arc::new(cfg.read_rules.clone()),
            _tap: tap,
            _prefill: prefill,
        }))
    }
}

/// The router of an HTTP node (without a socket, so tests can call it directly).
pub fn app(st: AppState, cfg: &HttpConfig) -> Router {
    let cors = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(Any)
        .expose_headers([
            axum::http::header::LOCATION,
            axum::http::HeaderName::from_static("x-total-count"),
        ]);
    let extra = Arc::new(cfg.cors_origins.clone());
    let cors = if extra.iter().any(|o| o == "*") {
        cors.allow_origin(Any)
    } else {
        let list = extra.clone();
        cors.allow_origin(AllowOrigin::predicate(
            move |origin: &HeaderValue, parts| {
                let host = parts
                    .headers
                    .get(axum::http::header::HOST)
                    .and_then(|h| h.to_str().ok());
                origin
                    .to_str()
                    .is_ok_and(|o| origin::origin_allowed(o, host, &list))
            },
        ))
    };
    let api = Router::new()
        .route("/", get(rest::index))
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/realtime", get(realtime::handler))
        // Each route also with a trailing slash, as the original's clients send them.
        .route("/{c}", get(rest::list).post(rest::create))
        .route("/{c}/", get(rest::list).post(rest::create))
        .route("/{c}/{id}", resource_routes())
        .route("/{c}/{id}/", resource_routes())
        .route("/{c}/{id}/{action}", post(rest::resource_action))
        .route("/{c}/{id}/{action}/", post(rest::resource_action));
    // A span per request only in a process that traces: otherwise not even the layer.
    let api = match zeroservices_core::trace::enabled() {
        true => api.route_layer(axum::middleware::from_fn(traced::layer)),
        false => api,
    };
    let routes = api
        .merge(admin::routes(st.clone()))
        .fallback(rest::fallback)
        .with_state(st)
        .layer(DefaultBodyLimit::max(cfg.body_limit))
        .layer(axum::middleware::from_fn({
            let (timeout, limit) = (cfg.body_timeout, cfg.body_limit);
            move |req, next| limits::read_body_within(timeout, limit, req, next)
        }))
        .layer(limits::RejectOversizedLayer {
            limit: cfg.body_limit,
        });
    rate_limited(routes, cfg)
        .layer(axum::middleware::from_fn(move |req, next| {
            origin::guard(extra.clone(), req, next)
        }))
        .layer(cors)
}

/// `router` behind the rate limit, if one is set (see [`RateLimit`]); as it is otherwise, so
/// a node without a limit pays nothing for it.
fn rate_limited(router: Router, cfg: &HttpConfig) -> Router {
    let Some(limit) = cfg.rate_limit else {
        return router;
    };
    let limiter = Arc::new(rate_limit::Limiter::new(limit));
    let auth = cfg.auth.clone();
    router.layer(axum::middleware::from_fn(move |req, next| {
        rate_limit::guard(limiter.clone(), auth.clone(), req, next)
    }))
}

/// Serves the HTTP node on `listener` until `shutdown` completes, then lets the requests in
/// progress finish (at most [`HttpConfig::shutdown_timeout`]) and returns; call
/// [`zeroservices_core::Node::shutdown`] after it. `extra` routes (such as a page under `/ui/`) are merged with
/// the generated ones; they must not reuse a generated route (`/`, `/health`, …) — axum
/// refuses overlapping routes.
pub async fn serve(
    listener: TcpListener,
    node: NodeHandle,
    cfg: HttpConfig,
    extra: Option<Router>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let st = AppState::new(&node, &cfg);
    let mut router = app(st, &cfg);
    if let Some(extra) = extra {
        router = extra.merge(router);
    }
    server::run(
        listener,
        router,
        cfg.header_timeout,
        cfg.shutdown_timeout,
        shutdown,
    )
    .await
}

/// `GET`/`PATCH`/`DELETE`/`POST` on `/{c}/{id}`.
fn resource_routes() -> axum::routing::MethodRouter<AppState> {
    get(rest::resource)
        .patch(rest::resource)
        .delete(rest::resource)
        .post(rest::resource)
}
