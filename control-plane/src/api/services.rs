//! One service model across hosts: `GET /api/hosts/{id}/services?kind=systemd|docker`, one
//! service, its actions and logs, plus what only containers have (run, remove, stats, images).
//! What may be acted on is the host's decision; the agent refuses the rest (403).

use std::time::Duration;

use axon_shared::{
    ContainerRun, ContainerStats, ImageInfo, ImagePull, MountSpec, PortSpec, ServiceActed,
    ServiceInfo, ServiceLogs, ServiceOp, op,
};
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::Route;
use super::hosts::link_error;
use crate::AppState;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::fleet::LinkError;
use crate::identity::auth::Caller;

/// How long the API waits for an action: the agent gives systemd's job 90 s.
const ACTION_WAIT: Duration = Duration::from_secs(100);
/// How long the API waits for a pull: the agent gives it ten minutes.
const PULL_WAIT: Duration = Duration::from_secs(630);
/// How long the API waits for logs and stats: the agent may take an inspect and a read of up
/// to 30 s each from the engine, or a bus check and 20 s of journalctl.
const READ_WAIT: Duration = Duration::from_secs(70);
/// How long a followed stream may last unless the caller says less.
const FOLLOW_SECS: u32 = 300;
const MAX_FOLLOW_SECS: u32 = 3600;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/api/hosts/{id}/services", get(list)),
        Route::new(
            Method::GET,
            "/api/hosts/{id}/services/{kind}/{name}",
            get(show),
        ),
        Route::new(
            Method::DELETE,
            "/api/hosts/{id}/services/{kind}/{name}",
            delete(remove),
        ),
        Route::new(
            Method::POST,
            "/api/hosts/{id}/services/{kind}/{name}/{action}",
            post(act),
        ),
        Route::new(
            Method::GET,
            "/api/hosts/{id}/services/{kind}/{name}/logs",
            get(logs),
        ),
        Route::new(
            Method::GET,
            "/api/hosts/{id}/services/{kind}/{name}/stats",
            get(stats),
        ),
        Route::new(Method::POST, "/api/hosts/{id}/containers", post(run)),
        Route::new(Method::GET, "/api/hosts/{id}/images", get(images)),
        Route::new(Method::POST, "/api/hosts/{id}/images/pull", post(pull)),
    ]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    #[serde(default)]
    kind: Option<String>,
    /// Docker: stopped containers too. systemd: installed unit files that are not loaded
    /// too (`load_state` `not-loaded`).
    #[serde(default)]
    all: Option<bool>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsQuery {
    /// The last N lines (default 100, at most 10,000).
    #[serde(default)]
    #[schemars(range(max = 10_000))]
    lines: Option<u32>,
    /// Keep the answer open as a `text/event-stream` of new lines.
    #[serde(default)]
    follow: Option<bool>,
    /// How long to follow, seconds (default 300, at most 3,600).
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_FOLLOW_SECS))]
    follow_secs: Option<u32>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StatsQuery {
    /// `sse`: a `text/event-stream` of samples, about one a second.
    #[serde(default)]
    #[schemars(extend("enum" = ["sse"]))]
    stream: Option<String>,
    /// How long to stream, seconds (default 300, at most 3,600).
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_FOLLOW_SECS))]
    follow_secs: Option<u32>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveQuery {
    /// Remove a running container too.
    #[serde(default)]
    force: Option<bool>,
}

/// A run request as the API takes it (the requester comes from the token).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RunBody {
    name: String,
    image: String,
    #[serde(default)]
    cmd: Vec<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    ports: Vec<PortSpec>,
    #[serde(default)]
    restart: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    mounts: Vec<MountSpec>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PullBody {
    image: String,
}

fn query<T: DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(ApiError::from)
}

async fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    super::hosts::find_usable(state, caller, id).map(|_| ())
}

fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(value)
        .map_err(|e| ApiError::internal(format!("the agent's answer is malformed: {e}")))
}

async fn call<T: DeserializeOwned>(
    state: &AppState,
    id: &str,
    op: &str,
    body: &impl serde::Serialize,
) -> Result<T, ApiError> {
    call_within(state, id, op, body, state.config.agent_timeout).await
}

async fn call_within<T: DeserializeOwned>(
    state: &AppState,
    id: &str,
    op: &str,
    body: &impl serde::Serialize,
    wait: Duration,
) -> Result<T, ApiError> {
    let value = state
        .hub
        .call(id, op, body, wait)
        .await
        .map_err(link_error)?;
    decode(value)
}

fn refused_by_host(e: &LinkError) -> bool {
    matches!(e, LinkError::Refused { error, .. } if error.code == axon_shared::ErrorCode::Forbidden)
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<Vec<ServiceInfo>>, ApiError> {
    let q = query(q)?;
    visible(&state, &caller, &id).await?;
    let body = ServiceOp {
        kind: q.kind.unwrap_or_else(|| "systemd".into()),
        all: q.all.unwrap_or(false),
        ..ServiceOp::default()
    };
    call(&state, &id, op::SERVICE_LIST, &body)
        .await
        .map(ApiJson)
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, kind, name)): ApiPath<(String, String, String)>,
) -> Result<ApiJson<ServiceInfo>, ApiError> {
    visible(&state, &caller, &id).await?;
    let body = ServiceOp {
        kind,
        name,
        ..ServiceOp::default()
    };
    call(&state, &id, op::SERVICE_GET, &body).await.map(ApiJson)
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, kind, name)): ApiPath<(String, String, String)>,
    q: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<ServiceActed>, ApiError> {
    let q = query(q)?;
    if kind != "docker" {
        return Err(ApiError::bad_request(
            "only containers can be removed; units are disabled instead",
        ));
    }
    run_action(
        &state,
        &caller,
        &id,
        &kind,
        &name,
        "remove",
        q.force.unwrap_or(false),
    )
    .await
}

async fn act(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, kind, name, action)): ApiPath<(String, String, String, String)>,
) -> Result<ApiJson<ServiceActed>, ApiError> {
    run_action(&state, &caller, &id, &kind, &name, &action, false).await
}

async fn run_action(
    state: &AppState,
    caller: &Caller,
    id: &str,
    kind: &str,
    name: &str,
    action: &str,
    force: bool,
) -> Result<ApiJson<ServiceActed>, ApiError> {
    visible(state, caller, id).await?;
    let request_id = crate::identity::auth::new_id();
    let body = ServiceOp {
        kind: kind.to_owned(),
        name: name.to_owned(),
        action: action.to_owned(),
        force,
        requested_by: caller.requester(&request_id),
        ..ServiceOp::default()
    };
    let outcome = state
        .hub
        .call(id, op::SERVICE_ACT, &body, ACTION_WAIT)
        .await;
    let target = format!("{id} {kind}/{name}");
    // The action is the caller's text: only known names become part of the action name.
    let audit_action = if axon_shared::SERVICE_ACTIONS.contains(&action) {
        action
    } else {
        "unknown"
    };
    let event = |o: &str| {
        state
            .audit
            .event(&format!("host.service.{audit_action}"), o)
            .caller(caller)
            .target(&target)
    };
    let value = match outcome {
        Ok(v) => v,
        Err(e) => {
            let outcome = if refused_by_host(&e) {
                "denied"
            } else {
                "error"
            };
            state.audit.record(event(outcome).reason(&e.to_string()));
            return Err(link_error(e));
        }
    };
    let acted: ServiceActed = decode(value)?;
    if acted.job_result != "done" {
        state
            .audit
            .record(event("failed").reason(&format!("job {}", acted.job_result)));
        return Err(ApiError::conflict(format!(
            "{action} of {name} failed: systemd's job result is {:?}, the unit is {} ({})",
            acted.job_result, acted.active_state, acted.sub_state
        )));
    }
    state.audit.record(event("ok"));
    Ok(ApiJson(acted))
}

async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, kind, name)): ApiPath<(String, String, String)>,
    q: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    visible(&state, &caller, &id).await?;
    let lines = q.lines.unwrap_or(100);
    if lines > 10_000 {
        return Err(ApiError::bad_request("lines: at most 10000"));
    }
    let follow = q.follow.unwrap_or(false);
    let follow_secs = follow_secs(q.follow_secs)?;
    let body = ServiceOp {
        kind,
        name,
        lines: Some(lines),
        follow,
        follow_secs: follow.then_some(follow_secs),
        ..ServiceOp::default()
    };
    if !follow {
        let logs: ServiceLogs =
            call_within(&state, &id, op::SERVICE_LOGS, &body, READ_WAIT).await?;
        return Ok(ApiJson(logs).into_response());
    }
    let wait = Duration::from_secs(u64::from(follow_secs) + 60);
    Ok(stream_call(
        state,
        id,
        op::SERVICE_LOGS,
        body,
        wait,
        line_event,
        |v| {
            // Every line went out as a `line` event, the tail first; the result says whether
            // older lines were left out.
            let logs: ServiceLogs = decode(v)?;
            Ok(serde_json::json!({ "truncated": logs.truncated }))
        },
    ))
}

async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, kind, name)): ApiPath<(String, String, String)>,
    q: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    visible(&state, &caller, &id).await?;
    let sse = match q.stream.as_deref() {
        None => false,
        Some("sse") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "stream={other}: only sse is supported"
            )));
        }
    };
    let follow_secs = follow_secs(q.follow_secs)?;
    let body = ServiceOp {
        kind,
        name,
        follow: sse,
        follow_secs: sse.then_some(follow_secs),
        ..ServiceOp::default()
    };
    if !sse {
        let sample: ContainerStats =
            call_within(&state, &id, op::SERVICE_STATS, &body, READ_WAIT).await?;
        return Ok(ApiJson(sample).into_response());
    }
    let wait = Duration::from_secs(u64::from(follow_secs) + 60);
    Ok(stream_call(
        state,
        id,
        op::SERVICE_STATS,
        body,
        wait,
        sample_event,
        Ok,
    ))
}

fn follow_secs(asked: Option<u32>) -> Result<u32, ApiError> {
    match asked {
        None => Ok(FOLLOW_SECS),
        Some(s) if (1..=MAX_FOLLOW_SECS).contains(&s) => Ok(s),
        Some(_) => Err(ApiError::bad_request(format!(
            "follow_secs: 1 to {MAX_FOLLOW_SECS}"
        ))),
    }
}

async fn run(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RunBody>,
) -> Result<Response, ApiError> {
    visible(&state, &caller, &id).await?;
    let request_id = crate::identity::auth::new_id();
    let spec = ContainerRun {
        name: body.name,
        image: body.image,
        cmd: body.cmd,
        env: body.env,
        ports: body.ports,
        restart: body.restart,
        labels: body.labels,
        mounts: body.mounts,
        requested_by: caller.requester(&request_id),
    };
    let target = format!("{id} docker/{}", spec.name);
    let outcome = state
        .hub
        .call(&id, op::CONTAINER_RUN, &spec, ACTION_WAIT)
        .await;
    let event = |o: &str| {
        state
            .audit
            .event("host.container.run", o)
            .caller(&caller)
            .target(&target)
    };
    match outcome {
        Ok(v) => {
            let info: ServiceInfo = decode(v)?;
            state
                .audit
                .record(event("ok").reason(&format!("image {}", spec.image)));
            Ok((StatusCode::CREATED, ApiJson(info)).into_response())
        }
        Err(e) => {
            let outcome = if refused_by_host(&e) {
                "denied"
            } else {
                "error"
            };
            state.audit.record(event(outcome).reason(&e.to_string()));
            Err(link_error(e))
        }
    }
}

async fn images(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Vec<ImageInfo>>, ApiError> {
    visible(&state, &caller, &id).await?;
    call(&state, &id, op::IMAGE_LIST, &serde_json::json!({}))
        .await
        .map(ApiJson)
}

async fn pull(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PullBody>,
) -> Result<ApiJson<ImageInfo>, ApiError> {
    visible(&state, &caller, &id).await?;
    let request_id = crate::identity::auth::new_id();
    let target = format!(
        "{id} image {}",
        body.image.chars().take(256).collect::<String>()
    );
    let request = ImagePull {
        image: body.image,
        requested_by: caller.requester(&request_id),
    };
    let outcome = state
        .hub
        .call(&id, op::IMAGE_PULL, &request, PULL_WAIT)
        .await;
    let event = |o: &str| {
        state
            .audit
            .event("host.image.pull", o)
            .caller(&caller)
            .target(&target)
    };
    match outcome {
        Ok(v) => {
            state.audit.record(event("ok"));
            decode(v).map(ApiJson)
        }
        Err(e) => {
            let outcome = if refused_by_host(&e) {
                "denied"
            } else {
                "error"
            };
            state.audit.record(event(outcome).reason(&e.to_string()));
            Err(link_error(e))
        }
    }
}

/// Answers with a `text/event-stream` of the request's chunks as `item` events, then
/// `result` (the answer, through `finish`) or `error`. When the client leaves, the agent is
/// told to stop.
fn stream_call(
    state: AppState,
    host: String,
    operation: &'static str,
    body: ServiceOp,
    wait: Duration,
    item: fn(&str, &str) -> Option<axum::response::sse::Event>,
    finish: impl FnOnce(serde_json::Value) -> Result<serde_json::Value, ApiError> + Send + 'static,
) -> Response {
    let request_id = crate::identity::auth::new_id();
    let call = {
        let (state, host, request_id) = (state.clone(), host.clone(), request_id.clone());
        async move {
            state
                .hub
                .call_as(&host, request_id, operation, &body, wait)
                .await
        }
    };
    super::sse::relay(
        state,
        host,
        request_id,
        call,
        item,
        super::sse::OnLeave::Cancel,
        move |outcome| outcome.map_err(link_error).and_then(finish),
    )
}

fn line_event(_stream: &str, data: &str) -> Option<axum::response::sse::Event> {
    Some(
        axum::response::sse::Event::default()
            .event("line")
            .data(data),
    )
}

fn sample_event(_stream: &str, data: &str) -> Option<axum::response::sse::Event> {
    Some(
        axum::response::sse::Event::default()
            .event("sample")
            .data(data),
    )
}
