//! `/api/tenants`: the agency's customers (admin only).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::Route;
use crate::AppState;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::identity::auth::{Caller, new_id};
use crate::model::{Tenant, now};
use axum::http::Method;

/// Largest settings object, serialised.
const MAX_SETTINGS_BYTES: usize = 64 * 1024;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/api/tenants", get(list)),
        Route::new(Method::POST, "/api/tenants", post(create)),
        Route::new(Method::GET, "/api/tenants/{id}", get(show)),
        Route::new(Method::PATCH, "/api/tenants/{id}", patch(update)),
        Route::new(Method::DELETE, "/api/tenants/{id}", delete(remove)),
    ]
}

#[derive(Serialize, JsonSchema)]
pub struct TenantView {
    id: String,
    slug: String,
    name: String,
    settings: Map<String, Value>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    updated_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_limits: Option<crate::model::LlmLimits>,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id,
            slug: t.slug,
            name: t.name,
            settings: t.settings,
            created_at: t.created_at,
            updated_at: t.updated_at,
            llm_limits: t.llm_limits,
        }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTenant {
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$"))]
    slug: String,
    #[schemars(length(min = 1, max = 200))]
    name: String,
    #[serde(default)]
    settings: Map<String, Value>,
    /// Limits on the tenant's use of the LLM gateway, all its keys and users together.
    #[serde(default)]
    llm_limits: Option<crate::model::LlmLimits>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantPatch {
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$"))]
    slug: Option<String>,
    #[schemars(length(min = 1, max = 200))]
    name: Option<String>,
    /// Replaces the settings object whole.
    settings: Option<Map<String, Value>>,
    /// Replaces the LLM limits whole (`{}` removes them).
    llm_limits: Option<crate::model::LlmLimits>,
}

/// Slugs name portal URLs: 2 to 63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn valid_slug(slug: &str) -> bool {
    let bytes = slug.as_bytes();
    (2..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn check(
    slug: Option<&str>,
    name: Option<&str>,
    settings: Option<&Map<String, Value>>,
) -> Result<(), ApiError> {
    if let Some(slug) = slug
        && !valid_slug(slug)
    {
        return Err(ApiError::bad_request(
            "slug must be 2 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
        ));
    }
    if let Some(name) = name {
        let n = name.trim().chars().count();
        if n == 0 || n > 200 || name.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "name must be 1 to 200 printable characters",
            ));
        }
    }
    if let Some(settings) = settings
        && serde_json::to_vec(settings)
            .map(|v| v.len())
            .unwrap_or(usize::MAX)
            > MAX_SETTINGS_BYTES
    {
        return Err(ApiError::too_large("settings are larger than 64 KiB"));
    }
    Ok(())
}

fn find(state: &AppState, id: &str) -> Result<Tenant, ApiError> {
    state
        .store
        .tenants
        .get(id)?
        .ok_or_else(|| ApiError::not_found(format!("no tenant with id {id}")))
}

async fn list(State(state): State<AppState>) -> Result<ApiJson<Vec<TenantView>>, ApiError> {
    let tenants = state.store.tenants.values()?;
    Ok(ApiJson(tenants.into_iter().map(Into::into).collect()))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewTenant>,
) -> Result<(StatusCode, ApiJson<TenantView>), ApiError> {
    check(Some(&req.slug), Some(&req.name), Some(&req.settings))?;
    if let Some(limits) = &req.llm_limits {
        limits.check().map_err(ApiError::bad_request)?;
    }
    let stamp = now();
    let tenant = Tenant {
        id: new_id(),
        slug: req.slug,
        name: req.name.trim().to_owned(),
        settings: req.settings,
        llm_limits: req
            .llm_limits
            .filter(|l| *l != crate::model::LlmLimits::default()),
        demo_tag: None,
        created_at: stamp,
        updated_at: stamp,
    };
    if !state
        .store
        .tenant_slugs
        .insert_new(&tenant.slug, &tenant.id)?
    {
        return Err(ApiError::conflict(format!(
            "the slug {} is taken",
            tenant.slug
        )));
    }
    state.store.tenants.put(&tenant.id, &tenant)?;
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("tenant.create", "ok")
            .caller(&caller)
            .target(&tenant.id),
    );
    Ok((StatusCode::CREATED, ApiJson(tenant.into())))
}

async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<TenantView>, ApiError> {
    Ok(ApiJson(find(&state, &id)?.into()))
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<TenantPatch>,
) -> Result<ApiJson<TenantView>, ApiError> {
    let tenant = find(&state, &id)?;
    check(
        patch.slug.as_deref(),
        patch.name.as_deref(),
        patch.settings.as_ref(),
    )?;
    if let Some(limits) = &patch.llm_limits {
        limits.check().map_err(ApiError::bad_request)?;
    }
    let new_slug = patch.slug.clone().filter(|s| *s != tenant.slug);
    if let Some(slug) = &new_slug {
        if !state.store.tenant_slugs.insert_new(slug, &id)? {
            return Err(ApiError::conflict(format!("the slug {slug} is taken")));
        }
        state.store.tenant_slugs.take(&tenant.slug)?;
    }
    let updated = state
        .store
        .tenants
        .update(&id, |t| {
            if let Some(slug) = &new_slug {
                t.slug = slug.clone();
            }
            if let Some(name) = &patch.name {
                t.name = name.trim().to_owned();
            }
            if let Some(settings) = &patch.settings {
                t.settings = settings.clone();
            }
            if let Some(limits) = &patch.llm_limits {
                t.llm_limits =
                    Some(limits.clone()).filter(|l| *l != crate::model::LlmLimits::default());
            }
            t.updated_at = now();
        })?
        .ok_or_else(|| ApiError::not_found(format!("no tenant with id {id}")))?;
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("tenant.update", "ok")
            .caller(&caller)
            .target(&id),
    );
    Ok(ApiJson(updated.into()))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = find(&state, &id)?;
    let users = state
        .store
        .users
        .values()?
        .into_iter()
        .filter(|u| u.tenant_id.as_deref() == Some(id.as_str()))
        .count();
    let hosts = state
        .store
        .hosts
        .values()?
        .into_iter()
        .filter(|h| h.tenant_id.as_deref() == Some(id.as_str()))
        .count();
    // A client key confined to a deleted tenant would outlive it.
    let keys = state
        .store
        .api_keys
        .values()?
        .into_iter()
        .filter(|k| k.tenant_id.as_deref() == Some(id.as_str()) && k.revoked_at.is_none())
        .count();
    if users > 0 || hosts > 0 || keys > 0 {
        return Err(ApiError::conflict(format!(
            "the tenant still has {users} user(s), {hosts} host(s) and {keys} API key(s); move, delete or revoke them first"
        )));
    }
    state.store.tenants.take(&id)?;
    state.store.tenant_slugs.take(&tenant.slug)?;
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("tenant.delete", "ok")
            .caller(&caller)
            .target(&id),
    );
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::valid_slug;

    #[test]
    fn slug_rules() {
        for good in ["acme", "a1", "acme-gpu-2"] {
            assert!(valid_slug(good), "{good}");
        }
        for bad in [
            "a",
            "-acme",
            "acme-",
            "Acme",
            "ac me",
            "acme_",
            "ac/me",
            "",
            &"a".repeat(64),
        ] {
            assert!(!valid_slug(bad), "{bad}");
        }
    }
}
