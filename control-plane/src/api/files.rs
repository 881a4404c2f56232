//! The file jail of a host through the API: `?path=<root>/<relative path>`. The agent decides
//! what is reachable; the control plane passes the request, its caller and the bytes along.

use axon_shared::{FsContent, FsEntry, FsKind, FsListing, FsOp, op};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Route;
use super::hosts::link_error;
use crate::AppState;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::identity::auth::Caller;

/// Most bytes one `PUT` writes: the base64 form must fit one link frame.
pub const MAX_WRITE_BYTES: usize = 512 * 1024;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/api/hosts/{id}/files", get(list_or_stat)),
        Route::new(Method::DELETE, "/api/hosts/{id}/files", delete(remove)),
        Route::new(Method::GET, "/api/hosts/{id}/files/content", get(read)),
        Route::new(Method::PUT, "/api/hosts/{id}/files/content", put(write)),
        Route::new(Method::POST, "/api/hosts/{id}/files/mkdir", post(mkdir)),
        Route::new(Method::POST, "/api/hosts/{id}/files/rename", post(rename)),
        Route::new(Method::POST, "/api/hosts/{id}/files/chmod", post(chmod)),
    ]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PathQuery {
    path: String,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    length: Option<u64>,
    #[serde(default)]
    recursive: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MkdirBody {
    path: String,
    #[serde(default)]
    parents: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RenameBody {
    from: String,
    to: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ChmodBody {
    path: String,
    /// Octal digits as a string ("644") or a number.
    mode: ModeValue,
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
enum ModeValue {
    Octal(String),
    Number(u32),
}

#[derive(Serialize, JsonSchema)]
pub(super) struct Listing {
    entry: FsEntry,
    #[serde(skip_serializing_if = "Option::is_none")]
    entries: Option<Vec<FsEntry>>,
    truncated: bool,
}

type QueryResult = Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>;

fn query(q: QueryResult) -> Result<PathQuery, ApiError> {
    q.map(|Query(q)| q).map_err(ApiError::from)
}

/// Sends one jail verb to the host; audits changes and refusals.
async fn call(
    state: &AppState,
    caller: &Caller,
    host: &str,
    verb: &str,
    body: FsOp,
) -> Result<serde_json::Value, ApiError> {
    super::hosts::find_usable(state, caller, host)?;
    let changes = !matches!(verb, op::FS_LIST | op::FS_STAT | op::FS_READ);
    // A rename names both ends.
    let target = match &body.to {
        Some(to) => format!("{host} {} -> {to}", body.path),
        None => format!("{host} {}", body.path),
    };
    let outcome = state
        .hub
        .call(host, verb, &body, state.config.agent_timeout)
        .await;
    let refused = matches!(&outcome, Err(crate::fleet::LinkError::Refused { error, .. }) if error.code == axon_shared::ErrorCode::Forbidden);
    if changes || refused {
        let event = state
            .audit
            .event(
                &format!("host.{verb}"),
                match &outcome {
                    Ok(_) => "ok",
                    Err(_) if refused => "denied",
                    Err(_) => "error",
                },
            )
            .caller(caller)
            .target(&target);
        let event = match &outcome {
            Err(e) => event.reason(&e.to_string()),
            Ok(_) => event,
        };
        state.audit.record(event);
    }
    outcome.map_err(link_error)
}

fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::internal(format!("the agent's answer is malformed: {e}")))
}

async fn list_or_stat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    q: QueryResult,
) -> Result<ApiJson<Listing>, ApiError> {
    let q = query(q)?;
    let op_body = FsOp {
        path: q.path.clone(),
        requested_by: caller.requester(&crate::identity::auth::new_id()),
        ..FsOp::default()
    };
    let entry: FsEntry = parse(call(&state, &caller, &id, op::FS_STAT, op_body.clone()).await?)?;
    if entry.kind != FsKind::Dir {
        return Ok(ApiJson(Listing {
            entry,
            entries: None,
            truncated: false,
        }));
    }
    let listing: FsListing = parse(call(&state, &caller, &id, op::FS_LIST, op_body).await?)?;
    Ok(ApiJson(Listing {
        entry,
        entries: Some(listing.entries),
        truncated: listing.truncated,
    }))
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    q: QueryResult,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let body = FsOp {
        path: q.path,
        offset: q.offset,
        length: q.length,
        requested_by: caller.requester(&crate::identity::auth::new_id()),
        ..FsOp::default()
    };
    let content: FsContent = parse(call(&state, &caller, &id, op::FS_READ, body).await?)?;
    let bytes = STANDARD
        .decode(content.content_b64.as_bytes())
        .map_err(|_| ApiError::internal("the agent sent content that is not base64"))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(tag) = content
        .entry
        .etag
        .as_deref()
        .and_then(|t| HeaderValue::from_str(&format!("\"{t}\"")).ok())
    {
        headers.insert(header::ETAG, tag);
    }
    if let Ok(size) = HeaderValue::from_str(&content.entry.size.to_string()) {
        headers.insert("x-axon-file-size", size);
    }
    Ok((StatusCode::OK, headers, bytes).into_response())
}

async fn write(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    q: QueryResult,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<ApiJson<FsEntry>, ApiError> {
    let q = query(q)?;
    let bytes = super::body_bytes(body)?;
    if bytes.len() > MAX_WRITE_BYTES {
        return Err(ApiError::too_large(format!(
            "one write carries at most {MAX_WRITE_BYTES} bytes"
        )));
    }
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_owned());
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let if_match = match (if_match, if_none_match) {
        (Some(tag), _) => Some(tag),
        (None, Some("*")) => Some("none".to_owned()),
        _ => None,
    };
    let body = FsOp {
        path: q.path,
        content_b64: Some(STANDARD.encode(&bytes)),
        if_match,
        requested_by: caller.requester(&crate::identity::auth::new_id()),
        ..FsOp::default()
    };
    Ok(ApiJson(parse(
        call(&state, &caller, &id, op::FS_WRITE, body).await?,
    )?))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    q: QueryResult,
) -> Result<StatusCode, ApiError> {
    let q = query(q)?;
    let body = FsOp {
        path: q.path,
        recursive: q.recursive,
        requested_by: caller.requester(&crate::identity::auth::new_id()),
        ..FsOp::default()
    };
    call(&state, &caller, &id, op::FS_DELETE, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn mkdir(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<MkdirBody>,
) -> Result<(StatusCode, ApiJson<FsEntry>), ApiError> {
    let body = FsOp {
        path: req.path,
        recursive: req.parents,
        requested_by: caller.requester(&crate::identity::auth::new_id()),
        ..FsOp::default()
    };
    Ok((
        StatusCode::CREATED,
        ApiJson(parse(
            call(&state, &caller, &id, op::FS_MKDIR, body).await?,
        )?),
    ))
}

async fn rename(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RenameBody>,
) -> Result<ApiJson<FsEntry>, ApiError> {
    let body = FsOp {
        path: req.from,
        to: Some(req.to),
        requested_by: caller.requester(&crate::identity::auth::new_id()),
        ..FsOp::default()
    };
    Ok(ApiJson(parse(
        call(&state, &caller, &id, op::FS_RENAME, body).await?,
    )?))
}

async fn chmod(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ChmodBody>,
) -> Result<ApiJson<FsEntry>, ApiError> {
    let mode = match req.mode {
        ModeValue::Number(n) => n,
        ModeValue::Octal(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .map_err(|_| ApiError::bad_request("mode must be octal digits such as \"644\""))?,
    };
    let body = FsOp {
        path: req.path,
        mode: Some(mode),
        requested_by: caller.requester(&crate::identity::auth::new_id()),
        ..FsOp::default()
    };
    Ok(ApiJson(parse(
        call(&state, &caller, &id, op::FS_CHMOD, body).await?,
    )?))
}
