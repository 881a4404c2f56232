//! One service model across hosts: `GET /api/hosts/{id}/services?kind=systemd`, one service,
//! and actions. What may be acted on is the host's decision; the agent refuses the rest (403).

use axon_shared::{ServiceActed, ServiceInfo, ServiceOp, op};
use axum::extract::{Query, State};
use axum::http::Method;
use axum::routing::{get, post};
use serde::Deserialize;

use super::Route;
use super::hosts::link_error;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath};

/// How long the API waits for an action: the agent gives systemd's job 90 s.
const ACTION_WAIT: std::time::Duration = std::time::Duration::from_secs(100);

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/api/hosts/{id}/services", get(list)),
        Route::new(
            Method::GET,
            "/api/hosts/{id}/services/{kind}/{name}",
            get(show),
        ),
        Route::new(
            Method::POST,
            "/api/hosts/{id}/services/{kind}/{name}/{action}",
            post(act),
        ),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KindQuery {
    #[serde(default)]
    kind: Option<String>,
}

async fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let host = state
        .store
        .hosts
        .get(id)?
        .filter(|h| caller.can_see(h.tenant_id.as_deref()))
        .ok_or_else(|| ApiError::not_found(format!("no host with id {id}")))?;
    if host.revoked_at.is_some() {
        return Err(ApiError::conflict("the host is revoked"));
    }
    Ok(())
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    query: Result<Query<KindQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<Vec<ServiceInfo>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    visible(&state, &caller, &id).await?;
    let body = ServiceOp {
        kind: q.kind.unwrap_or_else(|| "systemd".into()),
        ..ServiceOp::default()
    };
    let value = state
        .hub
        .call(&id, op::SERVICE_LIST, &body, state.config.agent_timeout)
        .await
        .map_err(link_error)?;
    serde_json::from_value(value)
        .map(ApiJson)
        .map_err(|e| ApiError::internal(format!("the agent's service list is malformed: {e}")))
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
    let value = state
        .hub
        .call(&id, op::SERVICE_GET, &body, state.config.agent_timeout)
        .await
        .map_err(link_error)?;
    serde_json::from_value(value)
        .map(ApiJson)
        .map_err(|e| ApiError::internal(format!("the agent's answer is malformed: {e}")))
}

async fn act(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, kind, name, action)): ApiPath<(String, String, String, String)>,
) -> Result<ApiJson<ServiceActed>, ApiError> {
    visible(&state, &caller, &id).await?;
    let request_id = crate::auth::new_id();
    let body = ServiceOp {
        kind: kind.clone(),
        name: name.clone(),
        action: action.clone(),
        requested_by: caller.requester(&request_id),
    };
    let outcome = state
        .hub
        .call(&id, op::SERVICE_ACT, &body, ACTION_WAIT)
        .await;
    let target = format!("{id} {kind}/{name}");
    // The action is the caller's text: only known names become part of the action name.
    let audit_action =
        if ["start", "stop", "restart", "reload", "enable", "disable"].contains(&action.as_str()) {
            action.as_str()
        } else {
            "unknown"
        };
    let event = |o: &str| {
        state
            .audit
            .event(&format!("host.service.{audit_action}"), o)
            .caller(&caller)
            .target(&target)
    };
    let value = match outcome {
        Ok(v) => v,
        Err(e) => {
            let denied = matches!(&e, crate::fleet::LinkError::Refused { error, .. } if error.code == axon_shared::ErrorCode::Forbidden);
            state
                .audit
                .record(event(if denied { "denied" } else { "error" }).reason(&e.to_string()));
            return Err(link_error(e));
        }
    };
    let acted: ServiceActed = serde_json::from_value(value)
        .map_err(|e| ApiError::internal(format!("the agent's answer is malformed: {e}")))?;
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
