//! `/api/api-keys`: keys for automation such as n8n and scripts (admin only).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Route;
use crate::AppState;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::identity::auth::{API_KEY_PREFIX, Caller, new_id, secret_digest};
use crate::identity::policy::{Access, RULES};
use crate::model::{ApiKey, LlmLimits, Role, now};
use axum::http::Method;

const MAX_KEY_LIFETIME_SECS: u64 = 2 * 365 * 86_400;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/api/api-keys", get(list)),
        Route::new(Method::POST, "/api/api-keys", post(create)),
        Route::new(Method::DELETE, "/api/api-keys/{id}", delete(revoke)),
        Route::new(Method::PATCH, "/api/api-keys/{id}", patch(change)),
    ]
}

#[derive(Serialize, JsonSchema)]
pub(super) struct KeyView {
    id: String,
    name: String,
    prefix: String,
    role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<String>,
    scopes: Vec<String>,
    created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::model::Rfc3339>")]
    expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::model::Rfc3339>")]
    last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::model::Rfc3339>")]
    revoked_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_limits: Option<LlmLimits>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            role: k.role,
            tenant_id: k.tenant_id,
            scopes: k.scopes,
            created_by: k.created_by,
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            llm_limits: k.llm_limits,
        }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    #[schemars(length(min = 1, max = 100))]
    name: String,
    role: Role,
    #[serde(default)]
    tenant_id: Option<String>,
    /// Scopes such as `hosts:read`, `hosts:*` or `*`.
    #[schemars(length(min = 1, max = 64))]
    scopes: Vec<String>,
    /// Seconds until the key expires; none: it lives until revoked.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_KEY_LIFETIME_SECS))]
    expires_in_secs: Option<u64>,
    /// Limits on the key's use of the LLM gateway (`/v1/...`, scope `llm:invoke`).
    #[serde(default)]
    llm_limits: Option<LlmLimits>,
}

/// A change to a key: its LLM limits (null removes them).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyChange {
    llm_limits: Option<LlmLimits>,
}

#[derive(Serialize, JsonSchema)]
pub(super) struct CreatedKey {
    /// The key itself: shown once, stored only as a hash.
    key: String,
    #[serde(flatten)]
    view: KeyView,
}

/// Every scope some rule asks for.
pub fn known_scopes() -> Vec<&'static str> {
    let mut scopes: Vec<&str> = RULES
        .iter()
        .filter_map(|r| match r.access {
            Access::Roles(_, scope) => Some(scope),
            Access::Public => None,
        })
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    scopes
}

fn check_scope(scope: &str) -> bool {
    let known = known_scopes();
    scope == "*"
        || known.contains(&scope)
        || scope
            .strip_suffix(":*")
            .is_some_and(|res| known.iter().any(|k| k.split(':').next() == Some(res)))
}

async fn list(State(state): State<AppState>) -> Result<ApiJson<Vec<KeyView>>, ApiError> {
    let keys = state.store.api_keys.values()?;
    Ok(ApiJson(keys.into_iter().map(Into::into).collect()))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewKey>,
) -> Result<(StatusCode, ApiJson<CreatedKey>), ApiError> {
    caller.require_session()?;
    let key_limits = req.llm_limits.clone();
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name must be 1 to 100 printable characters",
        ));
    }
    if req.scopes.is_empty() || req.scopes.len() > 64 {
        return Err(ApiError::bad_request(
            "scopes: give 1 to 64, e.g. [\"hosts:read\"] or [\"*\"]",
        ));
    }
    if let Some(bad) = req.scopes.iter().find(|s| !check_scope(s)) {
        return Err(ApiError::bad_request(format!(
            "unknown scope {bad:?}; known: {}",
            known_scopes().join(", ")
        )));
    }
    match (req.role, &req.tenant_id) {
        (Role::Client, None) => {
            return Err(ApiError::bad_request("a client key needs a tenant_id"));
        }
        (Role::Client, Some(t)) if state.store.tenants.get(t)?.is_none() => {
            return Err(ApiError::bad_request(format!("no tenant with id {t}")));
        }
        (Role::Admin | Role::Operator | Role::Viewer, Some(_)) => {
            return Err(ApiError::bad_request("only client keys belong to a tenant"));
        }
        _ => {}
    }
    let expires_at = match req.expires_in_secs {
        Some(0) => return Err(ApiError::bad_request("expires_in_secs must be positive")),
        Some(s) if s > MAX_KEY_LIFETIME_SECS => {
            return Err(ApiError::bad_request(
                "expires_in_secs is at most two years",
            ));
        }
        Some(s) => Some(now() + time::Duration::seconds(i64::try_from(s).unwrap_or(0))),
        None => None,
    };
    if let Some(limits) = &key_limits {
        limits.check().map_err(ApiError::bad_request)?;
    }
    let secret: [u8; 32] = rand::random();
    let text = format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let digest = secret_digest(text.as_bytes());
    let key = ApiKey {
        id: new_id(),
        name: name.to_owned(),
        prefix: text.chars().take(API_KEY_PREFIX.len() + 6).collect(),
        role: req.role,
        tenant_id: req.tenant_id,
        scopes: req.scopes,
        created_by: caller.id.clone(),
        created_at: now(),
        expires_at,
        last_used_at: None,
        revoked_at: None,
        llm_limits: req.llm_limits,
    };
    state.store.api_keys.put(&digest, &key)?;
    state.store.api_key_ids.put(&key.id, &digest)?;
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("api_key.create", "ok")
            .caller(&caller)
            .target(&key.id)
            .reason(&format!(
                "role {:?}, scopes {}",
                key.role,
                key.scopes.join(" ")
            )),
    );
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedKey {
            key: text,
            view: key.into(),
        }),
    ))
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<KeyView>, ApiError> {
    let not_found = || ApiError::not_found(format!("no API key with id {id}"));
    let digest = state.store.api_key_ids.get(&id)?.ok_or_else(not_found)?;
    let key = state
        .store
        .api_keys
        .update(&digest, |k| {
            if k.revoked_at.is_none() {
                k.revoked_at = Some(now());
            }
        })?
        .ok_or_else(not_found)?;
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("api_key.revoke", "ok")
            .caller(&caller)
            .target(&id),
    );
    Ok(ApiJson(key.into()))
}

async fn change(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<KeyChange>,
) -> Result<ApiJson<KeyView>, ApiError> {
    if let Some(limits) = &req.llm_limits {
        limits.check().map_err(ApiError::bad_request)?;
    }
    let not_found = || ApiError::not_found(format!("no API key with id {id}"));
    let digest = state.store.api_key_ids.get(&id)?.ok_or_else(not_found)?;
    let key = state
        .store
        .api_keys
        .update(&digest, |k| k.llm_limits = req.llm_limits.clone())?
        .ok_or_else(not_found)?;
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("api_key.change", "ok")
            .caller(&caller)
            .target(&id)
            .reason(&format!(
                "llm_limits {}",
                serde_json::to_string(&key.llm_limits).unwrap_or_default()
            )),
    );
    Ok(ApiJson(key.into()))
}
