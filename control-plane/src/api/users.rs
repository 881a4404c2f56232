//! `/api/users`: accounts and their roles (admin only).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Route;
use super::auth::{UserView, check_new_password};
use super::double_option;
use crate::AppState;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::identity::auth::{Caller, end_user_sessions, new_id};
use crate::init::{generate_password, valid_email};
use crate::model::{Role, User, now};
use axum::http::Method;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/api/users", get(list)),
        Route::new(Method::POST, "/api/users", post(create)),
        Route::new(Method::GET, "/api/users/{id}", get(show)),
        Route::new(Method::PATCH, "/api/users/{id}", patch(update)),
        Route::new(Method::DELETE, "/api/users/{id}", delete(remove)),
        Route::new(Method::POST, "/api/users/{id}/disable", post(disable)),
        Route::new(Method::POST, "/api/users/{id}/enable", post(enable)),
        Route::new(
            Method::POST,
            "/api/users/{id}/reset-password",
            post(reset_password),
        ),
    ]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    role: Option<Role>,
    tenant_id: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    #[schemars(email, length(max = 254))]
    email: String,
    #[serde(default)]
    #[schemars(length(max = 200))]
    name: String,
    #[schemars(length(min = super::auth::MIN_PASSWORD_LEN, max = super::auth::MAX_PASSWORD_LEN))]
    password: String,
    role: Role,
    #[serde(default)]
    tenant_id: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UserPatch {
    #[schemars(length(max = 200))]
    name: Option<String>,
    #[schemars(email, length(max = 254))]
    email: Option<String>,
    role: Option<Role>,
    #[serde(default, deserialize_with = "double_option")]
    tenant_id: Option<Option<String>>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResetRequest {
    /// The new password; absent: one is generated and answered once.
    #[schemars(length(min = super::auth::MIN_PASSWORD_LEN, max = super::auth::MAX_PASSWORD_LEN))]
    password: Option<String>,
}

#[derive(Serialize, JsonSchema)]
pub(super) struct ResetResult {
    /// Present when the password was generated: shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    sessions_ended: usize,
}

fn find(state: &AppState, id: &str) -> Result<User, ApiError> {
    state
        .store
        .users
        .get(id)?
        .ok_or_else(|| ApiError::not_found(format!("no user with id {id}")))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name must be at most 200 printable characters",
        ));
    }
    Ok(())
}

/// Clients belong to exactly one existing tenant; staff belong to none.
fn check_tenancy(state: &AppState, role: Role, tenant: Option<&str>) -> Result<(), ApiError> {
    match (role, tenant) {
        (Role::Client, None) => Err(ApiError::bad_request("a client user needs a tenant_id")),
        (Role::Client, Some(t)) => match state.store.tenants.get(t)? {
            Some(_) => Ok(()),
            None => Err(ApiError::bad_request(format!("no tenant with id {t}"))),
        },
        (_, Some(_)) => Err(ApiError::bad_request(
            "only client users belong to a tenant",
        )),
        (_, None) => Ok(()),
    }
}

/// Refuses a change that would leave no enabled admin.
fn keep_an_admin(state: &AppState, changing: &User) -> Result<(), ApiError> {
    if changing.role != Role::Admin || changing.disabled {
        return Ok(());
    }
    let others = state
        .store
        .users
        .values()?
        .into_iter()
        .filter(|u| u.role == Role::Admin && !u.disabled && u.id != changing.id)
        .count();
    if others == 0 {
        return Err(ApiError::conflict("this is the last enabled admin"));
    }
    Ok(())
}

async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<Vec<UserView>>, ApiError> {
    let Query(q) = query.map_err(ApiError::from)?;
    let users = state.store.users.values()?;
    Ok(ApiJson(
        users
            .iter()
            .filter(|u| q.role.is_none_or(|r| u.role == r))
            .filter(|u| q.tenant_id.is_none() || u.tenant_id == q.tenant_id)
            .map(UserView::from)
            .collect(),
    ))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewUser>,
) -> Result<(StatusCode, ApiJson<UserView>), ApiError> {
    caller.require_session()?;
    let email = req.email.trim().to_lowercase();
    if !valid_email(&email) {
        return Err(ApiError::bad_request("email is not a valid address"));
    }
    check_name(&req.name)?;
    check_new_password(&req.password)?;
    check_tenancy(&state, req.role, req.tenant_id.as_deref())?;
    let stamp = now();
    let user = User {
        id: new_id(),
        email: email.clone(),
        name: req.name,
        password_hash: state.passwords.hash(req.password).await?,
        role: req.role,
        tenant_id: req.tenant_id,
        disabled: false,
        demo_tag: None,
        created_at: stamp,
        updated_at: stamp,
    };
    if !state.store.create_user(&user)? {
        return Err(ApiError::conflict(format!(
            "a user with email {email} exists"
        )));
    }
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("user.create", "ok")
            .caller(&caller)
            .target(&user.id)
            .reason(&format!("role {:?}", user.role)),
    );
    Ok((StatusCode::CREATED, ApiJson((&user).into())))
}

async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<UserView>, ApiError> {
    Ok(ApiJson((&find(&state, &id)?).into()))
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<ApiJson<UserView>, ApiError> {
    caller.require_session()?;
    let _serial = state.user_changes.lock().await;
    let user = find(&state, &id)?;
    if let Some(name) = &patch.name {
        check_name(name)?;
    }
    let role = patch.role.unwrap_or(user.role);
    let tenant = match &patch.tenant_id {
        Some(t) => t.clone(),
        None => user.tenant_id.clone(),
    };
    check_tenancy(&state, role, tenant.as_deref())?;
    if role != Role::Admin {
        keep_an_admin(&state, &user)?;
    }
    let new_email = match &patch.email {
        Some(e) => {
            let e = e.trim().to_lowercase();
            if !valid_email(&e) {
                return Err(ApiError::bad_request("email is not a valid address"));
            }
            (e != user.email).then_some(e)
        }
        None => None,
    };
    if let Some(email) = &new_email {
        if !state.store.user_emails.insert_new(email, &user.id)? {
            return Err(ApiError::conflict(format!(
                "a user with email {email} exists"
            )));
        }
        state.store.user_emails.take(&user.email)?;
    }
    let access_changed = role != user.role || tenant != user.tenant_id;
    let updated = state
        .store
        .users
        .update(&id, |u| {
            if let Some(name) = &patch.name {
                u.name = name.clone();
            }
            if let Some(email) = &new_email {
                u.email = email.clone();
            }
            u.role = role;
            u.tenant_id = tenant.clone();
            u.updated_at = now();
        })?
        .ok_or_else(|| ApiError::not_found(format!("no user with id {id}")))?;
    if access_changed {
        end_user_sessions(&state.store, &id)?;
    }
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("user.update", "ok")
            .caller(&caller)
            .target(&id),
    );
    Ok(ApiJson((&updated).into()))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let _serial = state.user_changes.lock().await;
    let user = find(&state, &id)?;
    keep_an_admin(&state, &user)?;
    end_user_sessions(&state.store, &id)?;
    state.store.users.take(&id)?;
    state.store.user_emails.take(&user.email)?;
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("user.delete", "ok")
            .caller(&caller)
            .target(&id),
    );
    Ok(StatusCode::NO_CONTENT)
}

async fn set_disabled(
    state: AppState,
    caller: Caller,
    id: String,
    disabled: bool,
) -> Result<ApiJson<UserView>, ApiError> {
    let _serial = state.user_changes.lock().await;
    let user = find(&state, &id)?;
    if disabled {
        keep_an_admin(&state, &user)?;
    }
    let updated = state
        .store
        .users
        .update(&id, |u| {
            u.disabled = disabled;
            u.updated_at = now();
        })?
        .ok_or_else(|| ApiError::not_found(format!("no user with id {id}")))?;
    if disabled {
        end_user_sessions(&state.store, &id)?;
    }
    state.store.db.flush().await?;
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    state
        .audit
        .record(state.audit.event(action, "ok").caller(&caller).target(&id));
    Ok(ApiJson((&updated).into()))
}

async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<UserView>, ApiError> {
    set_disabled(state, caller, id, true).await
}

async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<UserView>, ApiError> {
    set_disabled(state, caller, id, false).await
}

async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<ApiJson<ResetResult>, ApiError> {
    caller.require_session()?;
    find(&state, &id)?;
    let req: ResetRequest = super::optional_json(&super::body_bytes(body)?)?;
    let generated = req.password.is_none().then(generate_password);
    let password = req.password.or(generated.clone()).unwrap_or_default();
    check_new_password(&password)?;
    let hash = state.passwords.hash(password).await?;
    state.store.users.update(&id, |u| {
        u.password_hash = hash.clone();
        u.updated_at = now();
    })?;
    let ended = end_user_sessions(&state.store, &id)?;
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("user.reset_password", "ok")
            .caller(&caller)
            .target(&id),
    );
    Ok(ApiJson(ResetResult {
        password: generated,
        sessions_ended: ended,
    }))
}
