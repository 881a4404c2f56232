//! `GET /api/audit`: the control plane's audit trail, newest first, with filters.

use axum::extract::{Query, State};
use axum::routing::get;

use super::Route;
use crate::AppState;
use crate::error::{ApiError, ApiJson};
use crate::identity::audit::{Filter, Record};
use axum::http::Method;

pub fn routes() -> Vec<Route> {
    vec![Route::new(Method::GET, "/api/audit", get(list))]
}

async fn list(
    State(state): State<AppState>,
    query: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<Vec<Record>>, ApiError> {
    let Query(filter) = query.map_err(ApiError::from)?;
    // Records queued before this request are part of the answer.
    state.audit.settled().await;
    Ok(ApiJson(state.audit.query(&filter)?))
}
