//! Login, refresh, logout, the caller's own profile and password.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::Route;
use super::source_ip;
use crate::AppState;
use crate::error::{ApiError, ApiJson};
use crate::identity::auth::{
    Caller, Redeemed, Via, end_session, end_user_sessions, hash_password, issue_refresh,
    redeem_refresh, start_session,
};
use crate::model::{Role, User, now};
use axum::http::Method;

/// Failed logins allowed per source address and per account in five minutes.
const LOGIN_BUDGET: u32 = 10;
/// Longest password accepted (argon2 work grows with input; nobody types more).
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Shortest password accepted for new passwords.
pub const MIN_PASSWORD_LEN: usize = 12;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::POST, "/api/auth/login", post(login)),
        Route::new(Method::POST, "/api/auth/refresh", post(refresh)),
        Route::new(Method::POST, "/api/auth/logout", post(logout)),
        Route::new(Method::GET, "/api/me", get(me)),
        Route::new(Method::POST, "/api/me/password", post(change_password)),
    ]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginRequest {
    #[schemars(email, length(max = 254))]
    email: String,
    #[schemars(length(max = MAX_PASSWORD_LEN))]
    password: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RefreshRequest {
    refresh_token: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordChange {
    current_password: String,
    #[schemars(length(min = MIN_PASSWORD_LEN, max = MAX_PASSWORD_LEN))]
    new_password: String,
}

/// A user as the API shows it (never the hash).
#[derive(Serialize, JsonSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role,
            tenant_id: u.tenant_id.clone(),
            disabled: u.disabled,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[derive(Serialize, JsonSchema)]
pub(super) struct TokenPair {
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    expires_in: u64,
    user: UserView,
}

fn ttl(d: std::time::Duration, fallback: Duration) -> Duration {
    Duration::try_from(d).unwrap_or(fallback)
}

fn tokens(state: &AppState, user: &User, sid: &str) -> Result<TokenPair, ApiError> {
    let access_ttl = ttl(state.config.access_ttl, Duration::minutes(15));
    let refresh_ttl = ttl(state.config.refresh_ttl, Duration::days(30));
    Ok(TokenPair {
        access_token: state.jwt.issue(user, sid, access_ttl)?,
        refresh_token: issue_refresh(&state.store, &user.id, sid, refresh_ttl)?,
        token_type: "Bearer",
        expires_in: state.config.access_ttl.as_secs(),
        user: user.into(),
    })
}

async fn login(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<ApiJson<TokenPair>, ApiError> {
    let ip = source_ip(&info);
    let user = check_credentials(&state, ip, &req.email, req.password).await?;
    let session = open_session(&state, &user, ip)?;
    let pair = tokens(&state, &user, &session.id)?;
    state.store.db.flush().await?;
    audit_login(&state, &user, ip, &session.id);
    Ok(ApiJson(pair))
}

/// The account `email` if `password` is its own and it is enabled; every attempt is counted
/// per address and per account (refused with 429 past the budget) and refusals are audited.
/// The API's login and the console's share it.
pub(crate) async fn check_credentials(
    state: &AppState,
    ip: std::net::IpAddr,
    email: &str,
    password: String,
) -> Result<User, ApiError> {
    // Malformed input is refused before it costs a limiter entry or an argon2 run.
    let email = email.trim().to_lowercase();
    if !crate::init::valid_email(&email) {
        return Err(ApiError::bad_request(
            "email must be an address of at most 254 characters",
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::bad_request("password is too long"));
    }
    let ip_key = format!("login-ip:{ip}");
    let account_key = format!("login-account:{email}");
    // The attempt is counted before the password is checked, so parallel guesses cannot
    // all pass the check while the first ones are still hashing.
    if let Err(e) = state
        .limiter
        .reserve(&[&ip_key, &account_key], LOGIN_BUDGET)
    {
        state.audit.record(
            state
                .audit
                .event("auth.login", "throttled")
                .ip(ip)
                .target(&email)
                .reason(&e.message),
        );
        return Err(e);
    }
    let refund = || {
        state.limiter.refund(&ip_key);
        state.limiter.refund(&account_key);
    };
    let user = match state.store.user_by_email(&email) {
        Ok(user) => user,
        Err(e) => {
            refund();
            return Err(e.into());
        }
    };
    // Verify against a fixed hash when the user does not exist, so timing does not tell.
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(dummy_hash);
    let matches = match state.passwords.verify(hash, password).await {
        Ok(matches) => matches,
        Err(e) => {
            // Never checked: the attempt does not count.
            refund();
            return Err(e);
        }
    };
    let user = match user {
        Some(user) if matches && !user.disabled => user,
        other => {
            let reason = match other {
                Some(u) if u.disabled && matches => "account disabled",
                Some(_) => "wrong password",
                None => "unknown account",
            };
            state.audit.record(
                state
                    .audit
                    .event("auth.login", "denied")
                    .ip(ip)
                    .target(&email)
                    .reason(reason),
            );
            return Err(ApiError::unauthorized("wrong email or password"));
        }
    };
    state.limiter.refund(&ip_key);
    state.limiter.clear(&account_key);
    Ok(user)
}

/// Starts a login session for `user` (the caller flushes, then audits with `audit_login`).
pub(crate) fn open_session(
    state: &AppState,
    user: &User,
    ip: std::net::IpAddr,
) -> Result<crate::model::Session, ApiError> {
    let refresh_ttl = ttl(state.config.refresh_ttl, Duration::days(30));
    Ok(start_session(
        &state.store,
        user,
        Some(ip.to_string()),
        refresh_ttl,
    )?)
}

pub(crate) fn audit_login(state: &AppState, user: &User, ip: std::net::IpAddr, sid: &str) {
    state.audit.record(
        state
            .audit
            .event("auth.login", "ok")
            .actor(&user.id, user.role, user.tenant_id.as_deref())
            .ip(ip)
            .target(sid),
    );
}

async fn refresh(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<ApiJson<TokenPair>, ApiError> {
    let ip = source_ip(&info);
    let ip_key = format!("refresh-ip:{ip}");
    state.limiter.reserve(&[&ip_key], LOGIN_BUDGET)?;
    let invalid =
        || ApiError::unauthorized("the refresh token is invalid, expired or already used");
    let record = match redeem_refresh(&state.store, req.refresh_token.trim())? {
        Redeemed::Fresh(record) => {
            state.limiter.refund(&ip_key);
            record
        }
        Redeemed::Reused(record) => {
            state.store.db.flush().await?;
            state.audit.record(
                state
                    .audit
                    .event("auth.refresh_reuse", "denied")
                    .ip(ip)
                    .target(&record.family)
                    .reason("an already rotated refresh token was presented; its session was ended")
                    .actor_id(&record.user_id),
            );
            return Err(invalid());
        }
        Redeemed::Invalid => {
            state.store.db.flush().await?;
            return Err(invalid());
        }
    };
    let user = state
        .store
        .users
        .get(&record.user_id)?
        .filter(|u| !u.disabled)
        .ok_or_else(invalid)?;
    let pair = tokens(&state, &user, &record.family)?;
    state.store.db.flush().await?;
    Ok(ApiJson(pair))
}

async fn logout(State(state): State<AppState>, caller: Caller) -> Result<StatusCode, ApiError> {
    let Via::Session { sid } = &caller.via else {
        return Err(ApiError::bad_request(
            "API keys have no session; revoke the key instead",
        ));
    };
    end_session(&state.store, sid)?;
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("auth.logout", "ok")
            .caller(&caller)
            .target(sid),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/me`: the user, or the API key the request came with.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
pub(super) enum Me {
    User(UserView),
    ApiKey {
        api_key_id: String,
        role: Role,
        tenant_id: Option<String>,
    },
}

async fn me(State(state): State<AppState>, caller: Caller) -> Result<ApiJson<Me>, ApiError> {
    match caller.user_id() {
        Some(id) => {
            let user = state
                .store
                .users
                .get(id)?
                .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
            Ok(ApiJson(Me::User(UserView::from(&user))))
        }
        None => Ok(ApiJson(Me::ApiKey {
            api_key_id: caller.id,
            role: caller.role,
            tenant_id: caller.tenant_id,
        })),
    }
}

/// Checks a new password's length.
pub fn check_new_password(password: &str) -> Result<(), ApiError> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN || password.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::bad_request(format!(
            "a password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    let Some(user_id) = caller.user_id() else {
        return Err(ApiError::bad_request("API keys have no password"));
    };
    let user = state
        .store
        .users
        .get(user_id)?
        .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
    check_new_password(&req.new_password)?;
    let guess_key = format!("password-change:{}", user.id);
    state.limiter.reserve(&[&guess_key], 5)?;
    let ok = match state
        .passwords
        .verify(user.password_hash.clone(), req.current_password)
        .await
    {
        Ok(ok) => ok,
        Err(e) => {
            state.limiter.refund(&guess_key);
            return Err(e);
        }
    };
    if ok {
        state.limiter.refund(&guess_key);
    } else {
        state.audit.record(
            state
                .audit
                .event("user.password_change", "denied")
                .caller(&caller)
                .target(&user.id)
                .reason("wrong current password"),
        );
        return Err(ApiError::forbidden("the current password is wrong"));
    }
    let new_hash = state.passwords.hash(req.new_password).await?;
    state.store.users.update(&user.id, |u| {
        u.password_hash = new_hash.clone();
        u.updated_at = now();
    })?;
    // Every session ends, this one included: the caller logs in again with the new password.
    end_user_sessions(&state.store, &user.id)?;
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("user.password_change", "ok")
            .caller(&caller)
            .target(&user.id),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// argon2id hash of a random string nobody knows, for the unknown-user path.
fn dummy_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        hash_password(&crate::identity::auth::random_secret("")).unwrap_or_default()
    })
    .clone()
}
