//! Rate limits (`--rate-limit 100/min`), as an API gateway applies them: each caller gets the
//! same budget, counted per user when the request carries valid credentials and per client IP
//! otherwise. A request over it is answered 429 with `Retry-After` (whole seconds) and a JSON
//! error, before anything else runs. `/health`, `/metrics` and CORS preflights are not counted.
//!
//! The budget is a GCRA bucket per key (the `governor` crate): `N` requests at once, then one
//! every `period / N`. Keys whose bucket is full again are dropped once the table holds more
//! than [`MAX_KEYS`], so the table stays bounded whatever the number of clients.
//!
//! The IP is the TCP peer's. A node behind a proxy sees the proxy's address for every
//! anonymous caller; `X-Forwarded-For` is not trusted (any client can set it).

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::auth::{Auth, Principal};
use crate::error::ApiError;
use crate::server::ClientAddr;

/// Keys (users and IPs) tracked before idle ones are dropped.
pub const MAX_KEYS: usize = 100_000;

/// A budget: `requests` per `period`.
///
/// ```
/// use zeroservices_http::RateLimit;
///
/// let r: RateLimit = "600/min".parse().unwrap();
/// assert_eq!((r.requests.get(), r.period.as_secs()), (600, 60));
/// assert!("0/s".parse::<RateLimit>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per period (and at once).
    pub requests: NonZeroU32,
    /// The period.
    pub period: Duration,
}

impl FromStr for RateLimit {
    type Err = String;

    /// `N/s`, `N/min` or `N/h`.
    fn from_str(s: &str) -> Result<RateLimit, String> {
        let bad = || format!("{s:?}: expected N/s, N/min or N/h with N > 0");
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let requests = n
            .trim()
            .parse::<u32>()
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(bad)?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(RateLimit { requests, period })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.requests, self.period.as_secs())
    }
}

/// The limiter of one HTTP node.
pub(crate) struct Limiter {
    buckets: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("keys", &self.buckets.len())
            .finish()
    }
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Limiter {
        // One request every period / N, N at once. A period under N nanoseconds is no limit
        // worth keeping apart from the smallest one.
        let every = (limit.period / limit.requests.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(every)
            .unwrap_or_else(|| Quota::per_second(limit.requests))
            .allow_burst(limit.requests);
        Limiter {
            buckets: DefaultKeyedRateLimiter::dashmap(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request of `key`: `Err(wait)` when it is over its budget.
    fn check(&self, key: String) -> Result<(), Duration> {
        if self.buckets.len() > MAX_KEYS {
            self.buckets.retain_recent();
        }
        self.buckets
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// Whose budget a request spends: the user's with valid credentials, else its IP's.
fn key_of(req: &Request, auth: &dyn Auth) -> String {
    let credentials = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.authenticate(credentials) {
        Ok(Principal::User(u)) => format!("user:{u}"),
        Ok(Principal::Token { subject, .. }) => format!("user:{subject}"),
        _ => match req.extensions().get::<ClientAddr>() {
            Some(ClientAddr(a)) => format!("ip:{}", a.ip()),
            None => "ip:unknown".to_owned(),
        },
    }
}

/// The middleware: 429 with `Retry-After` over the budget, else the request goes on.
pub(crate) async fn guard(
    limiter: Arc<Limiter>,
    auth: Arc<dyn Auth>,
    req: Request,
    next: Next,
) -> Response {
    let exempt = req.method() == axum::http::Method::OPTIONS
        || matches!(req.uri().path(), "/health" | "/metrics");
    if exempt {
        return next.run(req).await;
    }
    match limiter.check(key_of(&req, auth.as_ref())) {
        Ok(()) => next.run(req).await,
        Err(wait) => too_many(wait),
    }
}

fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests: retry in {secs} s"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}
