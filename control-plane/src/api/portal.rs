//! `/api/portal/{slug}`: a tenant's client portal — its profile and its hosts, read-only.
//! Clients see only their own tenant; any other slug answers 404 as if it did not exist.

use axum::extract::State;
use axum::routing::get;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use super::Route;
use crate::AppState;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::identity::auth::Caller;
use axum::http::Method;

pub fn routes() -> Vec<Route> {
    vec![Route::new(Method::GET, "/api/portal/{slug}", get(portal))]
}

#[derive(Serialize, JsonSchema)]
struct PortalHost {
    id: String,
    hostname: String,
    online: bool,
    capabilities: axon_shared::Capabilities,
}

#[derive(Serialize, JsonSchema)]
pub(super) struct Portal {
    slug: String,
    name: String,
    welcome: Option<Value>,
    branding: Option<Value>,
    contact: Option<Value>,
    hosts: Vec<PortalHost>,
}

async fn portal(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
) -> Result<ApiJson<Portal>, ApiError> {
    let not_found = || ApiError::not_found(format!("no portal named {slug}"));
    let id = state.store.tenant_slugs.get(&slug)?.ok_or_else(not_found)?;
    if !caller.can_see(Some(&id)) {
        return Err(not_found());
    }
    let tenant = state.store.tenants.get(&id)?.ok_or_else(not_found)?;
    let hosts = state
        .store
        .hosts
        .values()?
        .into_iter()
        .filter(|h| h.tenant_id.as_deref() == Some(id.as_str()) && h.revoked_at.is_none())
        .map(|h| PortalHost {
            online: state.hub.is_online(&h.id),
            id: h.id,
            hostname: h.hostname,
            capabilities: h.capabilities,
        })
        .collect();
    let setting = |key: &str| tenant.settings.get(key).cloned();
    Ok(ApiJson(Portal {
        welcome: setting("welcome"),
        branding: setting("branding"),
        contact: setting("contact"),
        slug: tenant.slug,
        name: tenant.name,
        hosts,
    }))
}
