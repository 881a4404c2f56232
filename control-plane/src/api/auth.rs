//! `POST /api/auth/login`, `POST /api/auth/refresh`, `GET /api/me`.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use time::Duration;

use super::source_ip;
use crate::AppState;
use crate::auth::{Caller, issue_refresh, new_id, redeem_refresh, verify_password};
use crate::error::{ApiError, ApiJson};
use crate::model::{Role, User};

/// Failed logins allowed per source address and per account in five minutes.
const LOGIN_BUDGET: u32 = 10;
/// Longest password accepted (argon2 work grows with input; nobody types more).
const MAX_PASSWORD_LEN: usize = 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/me", get(me))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
}

/// A user as the API shows it (never the hash).
#[derive(Serialize)]
pub struct UserView {
    id: String,
    email: String,
    name: String,
    role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<String>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role,
            tenant_id: u.tenant_id.clone(),
        }
    }
}

#[derive(Serialize)]
struct TokenPair {
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    expires_in: u64,
    user: UserView,
}

fn tokens(state: &AppState, user: &User, family: &str) -> Result<TokenPair, ApiError> {
    let access_ttl = Duration::try_from(state.config.access_ttl).unwrap_or(Duration::minutes(15));
    let refresh_ttl = Duration::try_from(state.config.refresh_ttl).unwrap_or(Duration::days(30));
    Ok(TokenPair {
        access_token: state.jwt.issue(user, access_ttl)?,
        refresh_token: issue_refresh(&state.store, &user.id, family, refresh_ttl)?,
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
    let ip_key = format!("login-ip:{}", source_ip(&info));
    let email = req.email.trim().to_lowercase();
    let account_key = format!("login-account:{email}");
    state.limiter.check(&ip_key, LOGIN_BUDGET)?;
    state.limiter.check(&account_key, LOGIN_BUDGET)?;
    if req.password.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::bad_request("password is too long"));
    }
    let user = state.store.user_by_email(&email)?;
    // Verify against a fixed hash when the user does not exist, so timing does not tell.
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(dummy_hash);
    let password = req.password;
    let matches = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
        .await
        .unwrap_or(false);
    let user = match user {
        Some(user) if matches && !user.disabled => user,
        _ => {
            state.limiter.fail(&ip_key);
            state.limiter.fail(&account_key);
            tracing::info!(email = %email, ip = %source_ip(&info), "login failed");
            return Err(ApiError::unauthorized("wrong email or password"));
        }
    };
    state.limiter.clear(&account_key);
    let pair = tokens(&state, &user, &new_id())?;
    state.store.db.flush().await?;
    tracing::info!(user = %user.id, ip = %source_ip(&info), "login");
    Ok(ApiJson(pair))
}

async fn refresh(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<ApiJson<TokenPair>, ApiError> {
    let ip_key = format!("refresh-ip:{}", source_ip(&info));
    state.limiter.check(&ip_key, LOGIN_BUDGET)?;
    let invalid =
        || ApiError::unauthorized("the refresh token is invalid, expired or already used");
    let Some(record) = redeem_refresh(&state.store, req.refresh_token.trim())? else {
        state.limiter.fail(&ip_key);
        state.store.db.flush().await?;
        return Err(invalid());
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

async fn me(caller: Caller) -> ApiJson<UserView> {
    ApiJson((&caller.user).into())
}

/// argon2id hash of a random string nobody knows, for the unknown-user path.
fn dummy_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        crate::auth::hash_password(&crate::auth::random_secret("")).unwrap_or_default()
    })
    .clone()
}
