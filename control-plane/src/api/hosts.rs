//! The fleet registry: list, show, revoke, ping.

use std::collections::BTreeMap;

use axon_shared::{Capabilities, CommandInfo, ExecResult, ExecRun, HostFacts, Pong, op};
use axum::extract::State;
use axum::routing::{delete, get, patch, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Route;
use crate::AppState;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::fleet::LinkError;
use crate::identity::auth::Caller;
use crate::model::{Host, now};
use axum::http::Method;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/api/hosts", get(list)),
        Route::new(Method::GET, "/api/hosts/{id}", get(show)),
        Route::new(Method::PATCH, "/api/hosts/{id}", patch(update)),
        Route::new(Method::DELETE, "/api/hosts/{id}", delete(revoke)),
        Route::new(Method::POST, "/api/hosts/{id}/ping", post(ping)),
        Route::new(Method::GET, "/api/hosts/{id}/commands", get(commands)),
        Route::new(Method::POST, "/api/hosts/{id}/exec", post(exec)),
    ]
}

/// A host as the API shows it.
#[derive(Serialize, JsonSchema)]
pub(super) struct HostView {
    id: String,
    hostname: String,
    /// `online`, `offline` or `revoked`.
    #[schemars(extend("enum" = ["online", "offline", "revoked"]))]
    status: &'static str,
    online: bool,
    labels: BTreeMap<String, String>,
    facts: Option<HostFacts>,
    capabilities: Capabilities,
    agent_version: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::model::Rfc3339>")]
    last_seen: Option<OffsetDateTime>,
    remote_addr: Option<String>,
    cert_serial: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    cert_not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::model::Rfc3339>")]
    revoked_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<String>,
    /// Ollama and SDXL as the agent found them last.
    model_servers: axon_shared::ModelServers,
    /// Direct addresses of the model servers, when an admin set them.
    #[serde(skip_serializing_if = "crate::model::ModelUrls::is_empty")]
    model_urls: crate::model::ModelUrls,
}

fn view(state: &AppState, h: Host) -> HostView {
    let online = h.revoked_at.is_none() && state.hub.is_online(&h.id);
    HostView {
        status: match (h.revoked_at.is_some(), online) {
            (true, _) => "revoked",
            (false, true) => "online",
            (false, false) => "offline",
        },
        online,
        id: h.id,
        hostname: h.hostname,
        labels: h.labels,
        facts: h.facts,
        capabilities: h.capabilities,
        agent_version: h.agent_version,
        first_seen: h.first_seen,
        last_seen: h.last_seen,
        remote_addr: h.remote_addr,
        cert_serial: h.cert_serial,
        cert_not_after: h.cert_not_after,
        revoked_at: h.revoked_at,
        tenant_id: h.tenant_id,
        model_servers: h.model_servers,
        model_urls: h.model_urls,
    }
}

/// The host `id` as `caller` may see it: another tenant's host looks missing.
pub(crate) fn find(state: &AppState, caller: &Caller, id: &str) -> Result<Host, ApiError> {
    state
        .store
        .hosts
        .get(id)?
        .filter(|h| caller.can_see(h.tenant_id.as_deref()))
        .ok_or_else(|| ApiError::not_found(format!("no host with id {id}")))
}

/// The host `id` for an operation on it: visible to `caller` and not revoked.
pub(crate) fn find_usable(state: &AppState, caller: &Caller, id: &str) -> Result<Host, ApiError> {
    let host = find(state, caller, id)?;
    if host.revoked_at.is_some() {
        return Err(ApiError::conflict("the host is revoked"));
    }
    Ok(host)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HostPatch {
    /// Replaces the labels whole.
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "super::double_option")]
    tenant_id: Option<Option<String>>,
    /// Replaces the direct model-server addresses whole (`{}` clears them: the gateway then
    /// goes through the agent's link).
    model_urls: Option<crate::model::ModelUrls>,
}

/// Paging of `GET /api/hosts`: without `limit`, every host. Other parameters are ignored
/// (`?tenant_id=` never widens what a client sees).
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub(super) struct ListQuery {
    /// At most this many hosts (1 to 1,000); the answer's `x-axon-next` header holds the
    /// `after` of the next page while there is one.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
    /// Hosts whose id sorts after this one (the previous page's last id).
    #[serde(default)]
    after: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let axum::extract::Query(q) = query.map_err(ApiError::from)?;
    let visible = |h: &crate::model::Host| caller.can_see(h.tenant_id.as_deref());
    let Some(limit) = q.limit else {
        if q.after.is_some() {
            return Err(ApiError::bad_request("after needs a limit"));
        }
        let hosts = state.store.hosts.values()?;
        let all: Vec<HostView> = hosts
            .into_iter()
            .filter(|h| visible(h))
            .map(|h| view(&state, h))
            .collect();
        return Ok(ApiJson(all).into_response());
    };
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: 1 to 1000"));
    }
    // One more than asked tells whether another page follows.
    let mut page = state
        .store
        .hosts
        .scan(q.after.as_deref(), limit + 1, |h| visible(h))?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next = more.then(|| page.last().map(|h| h.id.clone())).flatten();
    let body: Vec<HostView> = page.into_iter().map(|h| view(&state, h)).collect();
    let mut response = ApiJson(body).into_response();
    if let Some(v) = next.and_then(|n| axum::http::HeaderValue::from_str(&n).ok()) {
        response.headers_mut().insert("x-axon-next", v);
    }
    Ok(response)
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<HostView>, ApiError> {
    Ok(ApiJson(view(&state, find(&state, &caller, &id)?)))
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<HostView>, ApiError> {
    find(&state, &caller, &id)?;
    let host = state
        .store
        .hosts
        .update(&id, |h| {
            if h.revoked_at.is_none() {
                h.revoked_at = Some(now());
            }
            h.online = false;
        })?
        .ok_or_else(|| ApiError::not_found(format!("no host with id {id}")))?;
    // Refuse new handshakes first, then cut the live link.
    state.revocations.revoke_host(&id);
    state.telemetry.forget(&id);
    state.store.db.flush().await?;
    if let Some(conn) = state.hub.get(&id) {
        conn.kill();
    }
    state.audit.record(
        state
            .audit
            .event("host.revoke", "ok")
            .caller(&caller)
            .target(&id),
    );
    Ok(ApiJson(view(&state, host)))
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<HostPatch>,
) -> Result<ApiJson<HostView>, ApiError> {
    find(&state, &caller, &id)?;
    if let Some(labels) = &patch.labels
        && (labels.len() > 32
            || labels.iter().any(|(k, v)| {
                k.is_empty()
                    || k.len() > 128
                    || v.len() > 128
                    || k.chars().chain(v.chars()).any(char::is_control)
            }))
    {
        return Err(ApiError::bad_request(
            "labels: at most 32, keys 1 to 128 and values up to 128 printable characters",
        ));
    }
    if let Some(urls) = &patch.model_urls {
        urls.check().map_err(ApiError::bad_request)?;
    }
    if let Some(Some(tenant)) = &patch.tenant_id
        && state.store.tenants.get(tenant)?.is_none()
    {
        return Err(ApiError::bad_request(format!("no tenant with id {tenant}")));
    }
    let host = state
        .store
        .hosts
        .update(&id, |h| {
            if let Some(labels) = &patch.labels {
                h.labels = labels.clone();
            }
            if let Some(tenant) = &patch.tenant_id {
                h.tenant_id = tenant.clone();
            }
            if let Some(urls) = &patch.model_urls {
                h.model_urls = urls.clone();
            }
        })?
        .ok_or_else(|| ApiError::not_found(format!("no host with id {id}")))?;
    state.llm.fleet.refresh();
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("host.update", "ok")
            .caller(&caller)
            .target(&id),
    );
    Ok(ApiJson(view(&state, host)))
}

#[derive(Serialize, JsonSchema)]
pub(super) struct PingResult {
    host_id: String,
    /// Round trip through the agent link, milliseconds.
    rtt_ms: f64,
    agent_time_ms: u64,
}

async fn ping(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<PingResult>, ApiError> {
    find_usable(&state, &caller, &id)?;
    let started = std::time::Instant::now();
    let body = state
        .hub
        .call(
            &id,
            op::PING,
            &serde_json::Value::Null,
            state.config.agent_timeout,
        )
        .await
        .map_err(link_error)?;
    let rtt = started.elapsed();
    let pong: Pong = serde_json::from_value(body)
        .map_err(|e| ApiError::internal(format!("the agent's pong is malformed: {e}")))?;
    Ok(ApiJson(PingResult {
        host_id: id,
        rtt_ms: rtt.as_secs_f64() * 1000.0,
        agent_time_ms: pong.agent_time_ms,
    }))
}

async fn commands(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Vec<CommandInfo>>, ApiError> {
    find_usable(&state, &caller, &id)?;
    let body = state
        .hub
        .call(
            &id,
            op::EXEC_LIST,
            &serde_json::Value::Null,
            state.config.agent_timeout,
        )
        .await
        .map_err(link_error)?;
    let list = serde_json::from_value(body)
        .map_err(|e| ApiError::internal(format!("the agent's command list is malformed: {e}")))?;
    Ok(ApiJson(list))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ExecBody {
    command: String,
    #[serde(default)]
    params: BTreeMap<String, serde_json::Value>,
}

/// How long the API waits for a command: the agent caps commands at ten minutes.
const EXEC_WAIT: std::time::Duration = std::time::Duration::from_secs(630);

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ExecQuery {
    /// `sse`: answer with a `text/event-stream` of `output` events, then one `result` (or
    /// `error`) event.
    #[serde(default)]
    #[schemars(extend("enum" = ["sse"]))]
    stream: Option<String>,
}

async fn exec(
    State(state): State<AppState>,
    caller: Caller,
    info: axum::extract::ConnectInfo<std::net::SocketAddr>,
    ApiPath(id): ApiPath<String>,
    query: Result<axum::extract::Query<ExecQuery>, axum::extract::rejection::QueryRejection>,
    ApiJson(body): ApiJson<ExecBody>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let axum::extract::Query(query) = query.map_err(ApiError::from)?;
    let sse = match query.stream.as_deref() {
        None => false,
        Some("sse") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "stream={other}: only sse is supported"
            )));
        }
    };
    find_usable(&state, &caller, &id)?;
    let request_id = crate::identity::auth::new_id();
    let run = ExecRun {
        command: body.command.clone(),
        params: body.params,
        requested_by: caller.requester(&request_id),
        stream: sse,
    };
    let audit = ExecAudit {
        state: state.clone(),
        caller,
        ip: info.0.ip(),
        target: format!("{id} {}", body.command),
        request_id: request_id.clone(),
    };
    if !sse {
        let outcome = state
            .hub
            .call_as(&id, request_id, op::EXEC_RUN, &run, EXEC_WAIT)
            .await;
        return audit.finish(outcome).map(|r| ApiJson(r).into_response());
    }
    let call = {
        let (state, id, request_id) = (state.clone(), id.clone(), request_id.clone());
        async move {
            state
                .hub
                .call_as(&id, request_id, op::EXEC_RUN, &run, EXEC_WAIT)
                .await
        }
    };
    fn output(stream: &str, data: &str) -> Option<axum::response::sse::Event> {
        axum::response::sse::Event::default()
            .event("output")
            .json_data(serde_json::json!({"stream": stream, "data": data}))
            .ok()
    }
    // A client that leaves does not stop the command; it is still audited.
    Ok(super::sse::relay(
        state,
        id,
        request_id,
        call,
        output,
        super::sse::OnLeave::Finish,
        move |outcome| audit.finish(outcome),
    ))
}

/// Audits an exec and turns its outcome into the API's result.
struct ExecAudit {
    state: AppState,
    caller: Caller,
    ip: std::net::IpAddr,
    target: String,
    request_id: String,
}

impl ExecAudit {
    fn finish(
        &self,
        outcome: Result<serde_json::Value, LinkError>,
    ) -> Result<ExecResult, ApiError> {
        let event = |outcome: &str| {
            self.state
                .audit
                .event("host.exec", outcome)
                .caller(&self.caller)
                .ip(self.ip)
                .target(&self.target)
        };
        match outcome {
            Ok(body) => {
                let result: ExecResult = serde_json::from_value(body).map_err(|e| {
                    ApiError::internal(format!("the agent's exec result is malformed: {e}"))
                })?;
                self.state.audit.record(event("ok").reason(&format!(
                    "request {}, exit {:?}, timed out {}",
                    self.request_id, result.exit_code, result.timed_out
                )));
                Ok(result)
            }
            Err(e) => {
                let denied = matches!(&e, LinkError::Refused { .. });
                self.state.audit.record(
                    event(if denied { "denied" } else { "error" })
                        .reason(&format!("request {}: {e}", self.request_id)),
                );
                Err(link_error(e))
            }
        }
    }
}

/// Maps a link failure to the API's error shape.
pub fn link_error(e: LinkError) -> ApiError {
    match &e {
        LinkError::Offline { .. } | LinkError::Closed { .. } => {
            ApiError::unavailable(e.to_string())
        }
        LinkError::Timeout { .. } => ApiError::timeout(e.to_string()),
        LinkError::TooLarge { .. } => ApiError::too_large(e.to_string()),
        LinkError::Refused { error, .. } => ApiError::new(
            match error.code {
                axon_shared::ErrorCode::Forbidden => axum::http::StatusCode::FORBIDDEN,
                axon_shared::ErrorCode::NotFound => axum::http::StatusCode::NOT_FOUND,
                axon_shared::ErrorCode::BadRequest => axum::http::StatusCode::BAD_REQUEST,
                axon_shared::ErrorCode::RateLimited => axum::http::StatusCode::TOO_MANY_REQUESTS,
                axon_shared::ErrorCode::Conflict => axum::http::StatusCode::CONFLICT,
                axon_shared::ErrorCode::TooLarge => axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                axon_shared::ErrorCode::Unavailable => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                axon_shared::ErrorCode::Timeout => axum::http::StatusCode::GATEWAY_TIMEOUT,
                _ => axum::http::StatusCode::BAD_GATEWAY,
            },
            error.code,
            e.to_string(),
        ),
    }
}
