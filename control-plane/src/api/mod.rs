//! The REST API: one router per resource, merged here, with the shared error shape for
//! unknown routes and oversized bodies.

mod audit;
pub(crate) mod auth;
pub(crate) mod catalog;
pub(crate) mod deploys;
mod enroll;
mod files;
mod hosts;
mod keys;
pub mod llm;
pub mod metrics;
mod openapi;
pub(crate) mod orders;
mod portal;
mod services;
mod sse;
mod telemetry;
mod tenants;
mod users;
mod webhooks;
mod ws;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};

use crate::AppState;
use crate::error::{ApiError, ApiJson};

/// Records a successful change by `caller` in the audit trail.
pub(crate) fn audit_ok(
    state: &AppState,
    caller: &crate::identity::auth::Caller,
    action: &str,
    target: &str,
) {
    state.audit.record(
        state
            .audit
            .event(action, "ok")
            .caller(caller)
            .target(target),
    );
}

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// One route: its method, its path as registered, and its handler.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    handler: MethodRouter<AppState>,
}

impl Route {
    pub fn new(method: Method, path: &'static str, handler: MethodRouter<AppState>) -> Self {
        Self {
            method,
            path,
            handler,
        }
    }
}

/// Every route the API serves. The router is built from this list and the policy table must
/// name each of them (a test compares the two).
pub fn routes() -> Vec<Route> {
    let mut all = vec![
        Route::new(Method::GET, "/healthz", get(healthz)),
        Route::new(Method::GET, "/readyz", get(readyz)),
    ];
    for module in [
        auth::routes(),
        enroll::routes(),
        hosts::routes(),
        files::routes(),
        services::routes(),
        telemetry::routes(),
        metrics::routes(),
        tenants::routes(),
        users::routes(),
        keys::routes(),
        llm::routes(),
        portal::routes(),
        orders::routes(),
        deploys::routes(),
        catalog::routes(),
        audit::routes(),
        webhooks::routes(),
        openapi::routes(),
        ws::routes(),
        crate::console::routes(),
    ] {
        all.extend(module);
    }
    all
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let mut by_path: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for route in routes() {
        let entry = by_path.remove(route.path).unwrap_or_default();
        by_path.insert(route.path, entry.merge(route.handler));
    }
    let mut router = Router::new();
    for (path, handler) in by_path {
        router = router.route(path, handler);
    }
    let router = router
        // Inside the policy layer: a caller learns of a full disk only once allowed.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard_changes,
        ))
        // Applies to matched routes only; unknown paths fall through to the 404 below.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::identity::policy::enforce,
        ))
        // Outside the policy layer, so refusals are counted too.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                axon_shared::ErrorCode::BadRequest,
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .layer(axum::middleware::from_fn(close_when_body_unread))
        .layer(axum::middleware::from_fn(openai_errors))
        .with_state(state.clone());
    // The console's bridge rewrites `/app/api/...` before routing, so it wraps the router
    // whole: an outer router with no routes hands everything to its fallback, the API.
    Router::new()
        .fallback_service(router)
        .layer(axum::middleware::from_fn_with_state(
            state,
            crate::console::bridge::bridge,
        ))
}

/// A change through the API (not a sign-in, not the LLM gateway) is refused while the data dir
/// is nearly full, and acknowledged only once its audit records are on disk: a change whose
/// record could not be written is answered 503, not 2xx.
async fn guard_changes(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    let path = request.uri().path();
    let change = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) && path.starts_with("/api/")
        && !path.starts_with("/api/auth/");
    if !change {
        return next.run(request).await;
    }
    if let Err(low) = state.space.check() {
        return ApiError::unavailable(low.to_string())
            .retry_after(30)
            .into_response();
    }
    let mark = state.audit.mark();
    let response = next.run(request).await;
    if response.status().is_success() && !state.audit.written_since(mark).await {
        return ApiError::unavailable(
            "the change was made but its audit record could not be written (see the log); it is not acknowledged",
        )
        .into_response();
    }
    response
}

/// A request body read to its end sets `read`.
struct TrackedBody {
    inner: axum::body::BodyDataStream,
    read: Arc<AtomicBool>,
}

impl futures_util::Stream for TrackedBody {
    type Item = Result<axum::body::Bytes, axum::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let next = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if matches!(next, std::task::Poll::Ready(None)) {
            self.read.store(true, Ordering::Relaxed);
        }
        next
    }
}

/// An answer given before the request body was read (a refusal, an unknown route or method, a
/// handler that takes no body) makes hyper close the connection once the answer is written,
/// unless the body happened to be in already. `Connection: close` says so; without it a
/// client may send its next request down the closing connection and lose it.
async fn close_when_body_unread(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0);
    if !has_body {
        return next.run(request).await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        axum::body::Body::from_stream(TrackedBody {
            inner: body.into_data_stream(),
            read: read.clone(),
        })
    });
    let mut response = next.run(request).await;
    if !read.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Headers on every answer: no MIME sniffing; over TLS, HSTS; and answers to requests that
/// carried credentials are never stored by a cache.
async fn security_headers(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let credentials = request.headers().contains_key(header::AUTHORIZATION);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if credentials {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if !state.config.insecure_http {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// Refuses a body whose declared length is over the limit before reading any of it (bodies
/// without a length are cut off by `DefaultBodyLimit` while reading).
async fn refuse_declared_oversize(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = if request.uri().path().starts_with("/v1/") {
        llm::MAX_LLM_BODY_BYTES
    } else {
        MAX_BODY_BYTES
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::too_large(format!("request body is larger than {limit} bytes"))
            .into_response();
    }
    next.run(request).await
}

/// Under `/v1/` every error answer is in OpenAI's shape, so SDKs read it: refusals of the
/// policy layer, unknown routes and methods, and oversized bodies included.
async fn openai_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let openai = request.uri().path().starts_with("/v1/");
    let response = next.run(request).await;
    if !openai {
        return response;
    }
    match response.extensions().get::<ApiError>() {
        Some(e) => crate::llm::wire::LlmError::from(e.clone()).into_response(),
        None => response,
    }
}

/// `GET /healthz`: the process answers.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct Health {
    #[schemars(extend("const" = "ok"))]
    status: &'static str,
}

/// `GET /readyz`: the store answers too.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct Ready {
    #[schemars(extend("const" = "ready"))]
    status: &'static str,
    agents_connected: usize,
}

async fn healthz() -> ApiJson<Health> {
    ApiJson(Health { status: "ok" })
}

async fn readyz(State(state): State<AppState>) -> Result<ApiJson<Ready>, ApiError> {
    state
        .store
        .db
        .check()
        .map_err(|_| ApiError::unavailable("the store does not answer"))?;
    Ok(ApiJson(Ready {
        status: "ready",
        agents_connected: state.hub.len(),
    }))
}

/// A raw body, with its rejections (too large, unreadable) in the API's error shape.
pub fn body_bytes(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(ApiError::from)
}

/// Reads an optional JSON body: empty means all defaults.
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// For PATCH bodies: absent field → `None`, `null` → `Some(None)`, value → `Some(Some(v))`.
pub fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(de).map(Some)
}

/// The caller's address (the TCP peer; Axon does not trust forwarding headers).
pub fn source_ip(info: &ConnectInfo<SocketAddr>) -> IpAddr {
    info.0.ip()
}

/// Counts attempts per key in a fixed window and refuses further attempts once a key has used
/// its budget (login, refresh and enrollment guessing). Keys are kept as 64-bit keyed hashes, so
/// a long key costs no more memory than a short one, and the map holds at most `MAX_ENTRIES`.
pub struct RateLimiter {
    windows: Mutex<HashMap<u64, (Instant, u32)>>,
    hasher: std::hash::RandomState,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self {
            windows: Mutex::new(HashMap::new()),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl RateLimiter {
    const WINDOW: Duration = Duration::from_secs(300);
    const MAX_ENTRIES: usize = 100_000;

    fn key(&self, key: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Instant, u32)>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks every key and counts one attempt against each, in one step: of many parallel
    /// attempts only `budget` get through. The attempt stays counted unless it is refunded.
    /// When the map is full of live windows, new keys are refused rather than old ones
    /// forgotten (forgetting would let a flood reset anyone's count).
    pub fn reserve(&self, keys: &[&str], budget: u32) -> Result<(), ApiError> {
        let hashed: Vec<u64> = keys.iter().map(|k| self.key(k)).collect();
        let mut map = self.lock();
        for h in &hashed {
            Self::within(&map, *h, budget)?;
        }
        let missing = hashed.iter().filter(|h| !map.contains_key(h)).count();
        if map.len() + missing > Self::MAX_ENTRIES {
            map.retain(|_, (start, _)| start.elapsed() < Self::WINDOW);
            if map.len() + missing > Self::MAX_ENTRIES {
                return Err(ApiError::unavailable(
                    "too many sign-in attempts are being tracked; try again later",
                )
                .retry_after(60));
            }
        }
        for h in hashed {
            let entry = map.entry(h).or_insert((Instant::now(), 0));
            if entry.0.elapsed() >= Self::WINDOW {
                *entry = (Instant::now(), 0);
            }
            entry.1 += 1;
        }
        Ok(())
    }

    /// Refuses, as `reserve` would, once a key has used its budget; counts nothing.
    pub fn check(&self, keys: &[&str], budget: u32) -> Result<(), ApiError> {
        let map = self.lock();
        for key in keys {
            Self::within(&map, self.key(key), budget)?;
        }
        Ok(())
    }

    /// The refusal when the key `h` has used its budget in the current window.
    fn within(map: &HashMap<u64, (Instant, u32)>, h: u64, budget: u32) -> Result<(), ApiError> {
        match map.get(&h) {
            Some((start, count)) if start.elapsed() < Self::WINDOW && *count >= budget => {
                let wait = Self::WINDOW.saturating_sub(start.elapsed()).as_secs() + 1;
                Err(ApiError::rate_limited(format!(
                    "too many failed attempts; try again in {wait} s"
                ))
                .retry_after(wait))
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed attempt against `key` (a full map forgets expired windows first, and
    /// past that the attempt is not counted: `check` of new keys then relies on `reserve`'s
    /// callers, which refuse).
    pub fn count(&self, key: &str) {
        let h = self.key(key);
        let mut map = self.lock();
        if !map.contains_key(&h) && map.len() >= Self::MAX_ENTRIES {
            map.retain(|_, (start, _)| start.elapsed() < Self::WINDOW);
        }
        if map.contains_key(&h) || map.len() < Self::MAX_ENTRIES {
            let entry = map.entry(h).or_insert((Instant::now(), 0));
            if entry.0.elapsed() >= Self::WINDOW {
                *entry = (Instant::now(), 0);
            }
            entry.1 += 1;
        }
    }

    /// Gives back one attempt counted by `reserve` (it succeeded, or was never checked).
    pub fn refund(&self, key: &str) {
        let h = self.key(key);
        if let Some(entry) = self.lock().get_mut(&h) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }

    /// Forgets `key` (after a success).
    pub fn clear(&self, key: &str) {
        let h = self.key(key);
        self.lock().remove(&h);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimiter;
    use std::time::Instant;

    /// Every served route has exactly one rule and every rule names a served route.
    #[test]
    fn policy_table_and_router_agree() {
        let served: Vec<(String, &str)> = super::routes()
            .iter()
            .map(|r| (r.method.to_string(), r.path))
            .collect();
        for (method, path) in &served {
            assert!(
                crate::identity::policy::lookup(method, path).is_some(),
                "route {method} {path} has no access rule"
            );
        }
        for rule in crate::identity::policy::RULES {
            assert!(
                served
                    .iter()
                    .any(|(m, p)| m == rule.method && *p == rule.path),
                "rule {} {} names no route",
                rule.method,
                rule.path
            );
        }
        assert_eq!(served.len(), crate::identity::policy::RULES.len());
    }

    #[test]
    fn limiter_refuses_after_budget_and_clears() {
        let limiter = RateLimiter::default();
        for _ in 0..3 {
            assert!(limiter.reserve(&["k"], 3).is_ok());
        }
        let refused = limiter.reserve(&["k"], 3).expect_err("over budget");
        assert_eq!(refused.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.retry_after.is_some());
        assert!(limiter.reserve(&["other"], 3).is_ok());
        limiter.refund("k");
        assert!(limiter.reserve(&["k"], 3).is_ok());
        assert!(limiter.reserve(&["k"], 3).is_err());
        limiter.clear("k");
        assert!(limiter.reserve(&["k"], 3).is_ok());
    }

    #[test]
    fn checks_count_nothing_and_failures_count_until_refused() {
        let limiter = RateLimiter::default();
        for _ in 0..10 {
            assert!(limiter.check(&["ip"], 2).is_ok(), "checking counts nothing");
        }
        limiter.count("ip");
        assert!(limiter.check(&["ip"], 2).is_ok());
        limiter.count("ip");
        let refused = limiter.check(&["ip"], 2).expect_err("two failures");
        assert_eq!(refused.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(limiter.check(&["other"], 2).is_ok());
    }

    /// Parallel reservations never exceed the budget: the check and the count are one step.
    #[test]
    fn parallel_reservations_stay_within_budget() {
        let limiter = std::sync::Arc::new(RateLimiter::default());
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(40));
        let handles: Vec<_> = (0..40)
            .map(|_| {
                let (limiter, barrier) = (limiter.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    limiter.reserve(&["ip", "account"], 10).is_ok()
                })
            })
            .collect();
        let granted = handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .filter(|granted| *granted)
            .count();
        assert_eq!(granted, 10);
    }

    /// Long keys cost a fixed size, and a full map refuses new keys instead of forgetting.
    #[test]
    fn keys_are_bounded() {
        let limiter = RateLimiter::default();
        let long = "x".repeat(1 << 20);
        limiter.reserve(&[&long], 10).expect("reserved");
        assert_eq!(limiter.len(), 1);
        {
            let mut map = limiter.lock();
            for i in 0..RateLimiter::MAX_ENTRIES as u64 {
                map.insert(i, (Instant::now(), 1));
            }
        }
        let refused = limiter
            .reserve(&["a new key"], 10)
            .expect_err("map is full");
        assert_eq!(refused.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(limiter.len() <= RateLimiter::MAX_ENTRIES + 1);
    }
}
