//! The REST API: one router per resource, merged here, with the shared error shape for
//! unknown routes and oversized bodies.

mod audit;
pub(crate) mod auth;
mod enroll;
mod files;
mod hosts;
mod keys;
pub mod metrics;
mod openapi;
mod portal;
mod services;
mod sse;
mod telemetry;
mod tenants;
mod users;
mod ws;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};
use serde_json::json;

use crate::AppState;
use crate::error::{ApiError, ApiJson};

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
        portal::routes(),
        audit::routes(),
        openapi::routes(),
        ws::routes(),
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
    router
        // Applies to matched routes only; unknown paths fall through to the 404 below.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::policy::enforce,
        ))
        // Outside the policy layer, so refusals are counted too.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: axon_shared::ErrorCode::BadRequest,
                message: "method not allowed on this endpoint".into(),
            }
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
        .with_state(state)
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
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return ApiError::too_large(format!(
            "request body is larger than {MAX_BODY_BYTES} bytes"
        ))
        .into_response();
    }
    next.run(request).await
}

async fn healthz() -> impl IntoResponse {
    ApiJson(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    state
        .store
        .db
        .check()
        .map_err(|_| ApiError::unavailable("the store does not answer"))?;
    Ok(ApiJson(
        json!({"status": "ready", "agents_connected": state.hub.len()}),
    ))
}

/// A raw body, with its rejections (too large, unreadable) in the API's error shape.
pub fn body_bytes(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("request body is too large")
        } else {
            ApiError::bad_request(e.body_text())
        }
    })
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

/// Counts failures per key in a fixed window and refuses further attempts once a key
/// exceeds its budget (login and enrollment guessing).
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    const WINDOW: Duration = Duration::from_secs(300);
    const MAX_ENTRIES: usize = 100_000;

    /// Refuses when `key` failed `budget` times within the window.
    pub fn check(&self, key: &str, budget: u32) -> Result<(), ApiError> {
        let map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some((start, count)) if start.elapsed() < Self::WINDOW && *count >= budget => {
                let wait = Self::WINDOW.saturating_sub(start.elapsed()).as_secs() + 1;
                Err(ApiError::rate_limited(format!(
                    "too many failed attempts; try again in {wait} s"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Records one failure for `key`.
    pub fn fail(&self, key: &str) {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::MAX_ENTRIES {
            map.retain(|_, (start, _)| start.elapsed() < Self::WINDOW);
        }
        let entry = map.entry(key.to_owned()).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= Self::WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    /// Forgets `key` (after a success).
    pub fn clear(&self, key: &str) {
        self.windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimiter;

    /// Every served route has exactly one rule and every rule names a served route.
    #[test]
    fn policy_table_and_router_agree() {
        let served: Vec<(String, &str)> = super::routes()
            .iter()
            .map(|r| (r.method.to_string(), r.path))
            .collect();
        for (method, path) in &served {
            assert!(
                crate::policy::lookup(method, path).is_some(),
                "route {method} {path} has no access rule"
            );
        }
        for rule in crate::policy::RULES {
            assert!(
                served
                    .iter()
                    .any(|(m, p)| m == rule.method && *p == rule.path),
                "rule {} {} names no route",
                rule.method,
                rule.path
            );
        }
        assert_eq!(served.len(), crate::policy::RULES.len());
    }

    #[test]
    fn limiter_refuses_after_budget_and_clears() {
        let limiter = RateLimiter::default();
        for _ in 0..3 {
            assert!(limiter.check("k", 3).is_ok());
            limiter.fail("k");
        }
        let refused = limiter.check("k", 3).expect_err("over budget");
        assert_eq!(refused.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(limiter.check("other", 3).is_ok());
        limiter.clear("k");
        assert!(limiter.check("k", 3).is_ok());
    }
}
