//! The console's way into the JSON API: `/app/api/<rest>` is `/api/<rest>` for a signed-in
//! browser. The API itself never reads the session cookie; this layer, in front of the router,
//! checks the cookie, the request's origin and its CSRF token, then hands the request to the
//! same routes with the browser's user as the caller. Roles, scopes, tenancy, limits and audit
//! are the API's, unchanged: the console cannot do what its user could not do with a token.
//!
//! Checks, in order: a live browser session (401); for a WebSocket upgrade, an `Origin` of
//! this server (browsers always send one there, and cannot add headers); for every other
//! request, the session's token in `X-Axon-CSRF` (a header another site cannot set without a
//! CORS preflight we never grant) and, where the browser says where the request came from
//! (`Origin`, `Sec-Fetch-Site`), that it came from here (403).

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

use super::session;
use crate::AppState;
use crate::error::ApiError;
use crate::identity::auth::Caller;

/// Where the console's API requests go.
pub const PREFIX: &str = "/app/api/";
/// The header carrying the session's CSRF token.
pub const CSRF_HEADER: &str = "x-axon-csrf";

/// The caller behind a bridged request, for the policy layer (set only by this layer).
#[derive(Clone)]
pub struct Bridged(pub Caller);

/// The layer; wraps the whole router so the rewritten path is routed afresh.
pub async fn bridge(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(rest) = request.uri().path().strip_prefix(PREFIX) else {
        return next.run(request).await;
    };
    let target = match request.uri().query() {
        Some(q) => format!("/api/{rest}?{q}"),
        None => format!("/api/{rest}"),
    };
    match admit(&state, &request) {
        Ok(mut caller) => {
            caller.ip = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            let Ok(uri) = target.parse::<Uri>() else {
                return ApiError::bad_request("invalid path").into_response();
            };
            *request.uri_mut() = uri;
            let headers = request.headers_mut();
            headers.remove(header::COOKIE);
            headers.remove(header::AUTHORIZATION);
            headers.remove(CSRF_HEADER);
            request.extensions_mut().insert(Bridged(caller));
            let mut response = next.run(request).await;
            response
                .headers_mut()
                .entry(header::CACHE_CONTROL)
                .or_insert(HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => e.into_response(),
    }
}

fn admit(state: &AppState, request: &Request) -> Result<Caller, ApiError> {
    let headers = request.headers();
    let signed = session::signed_in(state, headers)?
        .ok_or_else(|| ApiError::unauthorized("not signed in; sign in at /app"))?;
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        if !session::same_origin(state, headers) {
            return Err(ApiError::forbidden(
                "live updates are for pages of this site only",
            ));
        }
        return Ok(signed.caller());
    }
    let token = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !session::tokens_match(&signed.browser.csrf, token) {
        return Err(ApiError::forbidden(
            "the request's security token does not match; reload the page and try again",
        ));
    }
    let origin = headers.contains_key(header::ORIGIN);
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let here = match (origin, fetch_site) {
        (false, None) => false,
        (true, _) if !session::same_origin(state, headers) => false,
        (_, Some(site)) => site == "same-origin",
        (true, None) => true,
    };
    if !here {
        return Err(ApiError::forbidden(
            "this request was not sent from a page of this site",
        ));
    }
    Ok(signed.caller())
}
