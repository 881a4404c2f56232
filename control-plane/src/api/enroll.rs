//! Enrollment: admins create single-use tokens; a new host trades one for a certificate.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axon_shared::{AGENT_PATH, EnrollRequest, EnrollResponse, EnrollmentToken};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::routing::post;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Route;
use super::source_ip;
use crate::AppState;
use crate::error::{ApiError, ApiJson};
use crate::fleet::enrollment;
use crate::fleet::pki::Pki;
use crate::identity::auth::{Caller, new_id, secret_digest};
use crate::model::{Host, now};
use axum::http::Method;

/// Failed enrollments allowed per source address in five minutes.
const ENROLL_BUDGET: u32 = 20;
/// Enrollments handled at once; more wait their turn.
static ENROLL_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(32);
const MAX_CSR_LEN: usize = 16 * 1024;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::POST, "/api/enrollment-tokens", post(create_token)),
        Route::new(Method::POST, axon_shared::ENROLL_PATH, post(enroll)),
    ]
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateToken {
    /// Seconds until the token expires (default 3600, at most 7 days).
    #[serde(default)]
    #[schemars(range(min = 1, max = enrollment::MAX_TTL_SECS))]
    ttl_secs: Option<u64>,
    /// Labels for the host that enrolls with it.
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Serialize, JsonSchema)]
pub(super) struct CreatedToken {
    id: String,
    token: String,
    ca_fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    expires_at: OffsetDateTime,
}

async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, ApiJson<CreatedToken>), ApiError> {
    let req: CreateToken = super::optional_json(&super::body_bytes(body)?)?;
    let ttl = req.ttl_secs.unwrap_or(enrollment::DEFAULT_TTL_SECS);
    let created = enrollment::create(
        &state.store,
        state.pki.ca_fingerprint(),
        &caller.id,
        ttl,
        req.labels,
    )
    .map_err(|e| match e {
        enrollment::TokenError::Store(e) => e.into(),
        other => ApiError::bad_request(other.to_string()),
    })?;
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("enrollment_token.create", "ok")
            .caller(&caller)
            .target(&created.id),
    );
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedToken {
            id: created.id,
            token: created.token,
            ca_fingerprint: axon_shared::hex_encode(&state.pki.ca_fingerprint()),
            expires_at: created.expires_at,
        }),
    ))
}

/// The agent URL: configured, or the host the caller used to reach the API with the agent
/// listener's port.
fn agent_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.agent_url {
        return url.clone();
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    format!("wss://{name}:{}{AGENT_PATH}", state.config.agent_port)
}

async fn enroll(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, ApiJson<EnrollResponse>), ApiError> {
    let ip_key = format!("enroll-ip:{}", source_ip(&info));
    // Only refused tokens count. A fleet rolled out from behind one address enrolls many
    // hosts at once: they wait for a slot instead of being refused, and the failures are
    // checked again once a slot is theirs, so guesses in parallel get at most the slots'
    // worth past the budget (tokens carry 128 random bits; the budget guards the work).
    state.limiter.check(&[&ip_key], ENROLL_BUDGET)?;
    let _slot = ENROLL_SLOTS
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("enrollment is shutting down"))?;
    state.limiter.check(&[&ip_key], ENROLL_BUDGET)?;
    let outcome = enroll_checked(&state, &info, &headers, req).await;
    if matches!(&outcome, Err(e) if e.status == StatusCode::UNAUTHORIZED) {
        state.limiter.count(&ip_key);
    }
    outcome
}

async fn enroll_checked(
    state: &AppState,
    info: &ConnectInfo<SocketAddr>,
    headers: &HeaderMap,
    req: EnrollRequest,
) -> Result<(StatusCode, ApiJson<EnrollResponse>), ApiError> {
    let refuse = |message: &str| {
        tracing::warn!(ip = %source_ip(info), reason = message, "enrollment refused");
        ApiError::unauthorized(message)
    };
    let token = EnrollmentToken::parse(&req.token)
        .map_err(|_| refuse("the enrollment token is malformed"))?;
    if token.ca_fingerprint != state.pki.ca_fingerprint() {
        return Err(refuse(
            "the enrollment token was issued by another control plane",
        ));
    }
    if req.csr_pem.len() > MAX_CSR_LEN {
        return Err(ApiError::bad_request(
            "the certificate signing request is too large",
        ));
    }
    let hostname = req.hostname.trim();
    if hostname.is_empty() || hostname.len() > 253 || hostname.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "hostname must be 1 to 253 printable characters",
        ));
    }
    let digest = secret_digest(&token.secret);
    if state.store.enroll_tokens.get(&digest)?.is_none() {
        return Err(refuse(
            "the enrollment token is unknown or was already used",
        ));
    }
    // A bad CSR is the caller's mistake and must not burn the token, so check it before taking.
    let csr = Pki::parse_csr(&req.csr_pem).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // Taking the record is the single-use check: of two concurrent requests, one gets it.
    let Some(record) = state.store.enroll_tokens.take(&digest)? else {
        return Err(refuse(
            "the enrollment token is unknown or was already used",
        ));
    };
    if record.expires_at < now() {
        state.store.db.flush().await?;
        return Err(refuse("the enrollment token has expired"));
    }
    let host_id = new_id();
    let issued = match state
        .pki
        .sign_agent(&csr, &host_id, state.config.cert_lifetime)
    {
        Ok(issued) => issued,
        Err(e) => {
            // Our failure, not the caller's: give the token back.
            state
                .store
                .enroll_tokens
                .put(&secret_digest(&token.secret), &record)?;
            state.store.db.flush().await?;
            tracing::error!(error = %e, "signing an agent certificate failed");
            return Err(ApiError::internal("could not sign the certificate"));
        }
    };
    let host = Host {
        id: host_id.clone(),
        hostname: hostname.to_owned(),
        labels: record.labels,
        facts: None,
        capabilities: Default::default(),
        model_servers: Default::default(),
        model_urls: Default::default(),
        agent_version: None,
        first_seen: now(),
        last_seen: None,
        online: false,
        remote_addr: Some(source_ip(info).to_string()),
        cert_serial: issued.info.serial.clone(),
        cert_not_after: OffsetDateTime::from_unix_timestamp(issued.info.not_after)
            .unwrap_or_else(|_| now()),
        revoked_at: None,
        tenant_id: None,
    };
    state.store.hosts.put(&host_id, &host)?;
    state.store.db.flush().await?;
    tracing::info!(host = %host_id, hostname = %host.hostname, token = %record.id, "host enrolled");
    Ok((
        StatusCode::CREATED,
        ApiJson(EnrollResponse {
            host_id,
            cert_pem: issued.pem,
            ca_pem: state.pki.ca_pem().to_owned(),
            agent_url: agent_url(state, headers),
            not_after: u64::try_from(issued.info.not_after).unwrap_or(0),
        }),
    ))
}
