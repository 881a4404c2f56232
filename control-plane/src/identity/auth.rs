//! Authentication: argon2id passwords, Ed25519-signed JWT access tokens with key ids, rotating
//! refresh tokens stored hashed, and the `Caller` extractor that every protected route takes.

use std::collections::HashMap;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use time::Duration;

use crate::AppState;
use crate::error::ApiError;
use crate::model::{ApiKey, RefreshToken, Role, Session, SigningKey, Store, User, now};
use crate::store::StoreError;

/// JWT issuer claim.
pub const ISSUER: &str = "axon-cp";
/// JWT audience claim for the API.
pub const AUDIENCE: &str = "axon-api";

/// A random password of 24 characters from an unambiguous alphabet.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    use rand::Rng;
    let mut rng = rand::rng();
    (0..24)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Hashes a password with argon2id and a fresh salt (slow on purpose: run off the async threads).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
}

/// Checks a password against a stored PHC string.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Runs argon2 off the async threads, a bounded number at a time: each run holds 19 MiB and a
/// core for tens of milliseconds, so an unbounded flood of logins would exhaust memory and the
/// blocking pool. Past the bound a caller waits briefly, then is told to retry (503).
pub struct PasswordWork {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    wait: std::time::Duration,
}

impl Default for PasswordWork {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::new(cores.clamp(2, 8), std::time::Duration::from_secs(2))
    }
}

impl PasswordWork {
    /// At most `concurrent` runs at once; a caller waits up to `wait` for a turn.
    pub fn new(concurrent: usize, wait: std::time::Duration) -> Self {
        Self {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(concurrent)),
            wait,
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let busy = || {
            ApiError::unavailable("the server is busy checking passwords; try again shortly")
                .retry_after(1)
        };
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|_| ApiError::internal("password hashing failed"))
    }

    /// Checks `password` against a stored PHC string.
    pub async fn verify(&self, hash: String, password: String) -> Result<bool, ApiError> {
        self.run(move || verify_password(&hash, &password)).await
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move || hash_password(&password))
            .await?
            .map_err(|_| ApiError::internal("password hashing failed"))
    }

    #[cfg(test)]
    fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

/// SHA-256 of a secret, hex: how tokens are stored.
pub fn secret_digest(secret: &[u8]) -> String {
    axon_shared::sha256_hex(secret)
}

/// A random secret of 32 bytes, URL-safe base64, with a readable prefix.
pub fn random_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A fresh ULID string.
pub fn new_id() -> String {
    let ms = u64::try_from(now().unix_timestamp())
        .unwrap_or(0)
        .saturating_mul(1000)
        + u64::from(time::OffsetDateTime::now_utc().millisecond());
    axon_shared::Ulid::from_parts(ms, rand::random()).to_string()
}

/// Access-token claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// User id.
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Session id: logging out or changing the password ends it, and with it this token.
    pub sid: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
}

/// Signing and verification keys, by key id.
pub struct JwtKeys {
    current_kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
    /// Tokens whose signature was already checked, by their exact text: a client sends the
    /// same token with every request, and an Ed25519 verification is most of a request's cost.
    /// The time claims are checked again on every use; the keys never change while running.
    verified: std::sync::Mutex<(std::hash::RandomState, VerifiedTokens)>,
}

/// Verified tokens by a seeded hash of their text: the text itself and its claims.
type VerifiedTokens = HashMap<u64, (Box<str>, Claims)>;

/// Verified tokens remembered at most (about 1 KiB each); past that the memory starts over.
const VERIFIED_TOKENS: usize = 10_000;

/// Key setup failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored signing key {kid} is unreadable")]
    BadKey { kid: String },
    #[error("could not generate a signing key")]
    Generate,
}

impl JwtKeys {
    /// Creates a new signing key in the store.
    pub fn generate(store: &Store) -> Result<(), KeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
        let key = SigningKey {
            kid: new_id(),
            pkcs8: STANDARD.encode(pkcs8.as_ref()),
            created_at: now(),
        };
        store.signing_keys.put(&key.kid, &key)?;
        Ok(())
    }

    /// Loads the stored keys: the newest signs; an older key still verifies until every token
    /// it can have signed has expired (its successor's age exceeds `access_ttl`), so rotating
    /// never logs anyone out and a retired key stops working soon after.
    pub fn load(store: &Store, access_ttl: std::time::Duration) -> Result<Self, KeyError> {
        let mut keys = store.signing_keys.values()?;
        if keys.is_empty() {
            Self::generate(store)?;
            keys = store.signing_keys.values()?;
        }
        keys.sort_by_key(|k| k.created_at);
        let grace =
            Duration::try_from(access_ttl).unwrap_or(Duration::minutes(15)) + Duration::minutes(1);
        let mut decoding = HashMap::new();
        let mut newest = None;
        for (i, key) in keys.iter().enumerate() {
            let retired = keys
                .get(i + 1)
                .is_some_and(|successor| successor.created_at + grace < now());
            let bad = || KeyError::BadKey {
                kid: key.kid.clone(),
            };
            let der = STANDARD.decode(&key.pkcs8).map_err(|_| bad())?;
            let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| bad())?;
            if !retired {
                decoding.insert(
                    key.kid.clone(),
                    DecodingKey::from_ed_der(pair.public_key().as_ref()),
                );
            }
            newest = Some((key.kid.clone(), EncodingKey::from_ed_der(&der)));
        }
        let (current_kid, encoding) = newest.ok_or(KeyError::Generate)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        Ok(Self {
            current_kid,
            encoding,
            decoding,
            validation,
            verified: std::sync::Mutex::new((std::hash::RandomState::new(), HashMap::new())),
        })
    }

    /// Signs an access token for `user` in session `sid`.
    pub fn issue(&self, user: &User, sid: &str, ttl: Duration) -> Result<String, ApiError> {
        let now = now().unix_timestamp();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user.id.clone(),
            role: user.role,
            tenant: user.tenant_id.clone(),
            sid: sid.to_owned(),
            exp: now + ttl.whole_seconds(),
            nbf: now,
            iat: now,
            jti: new_id(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.current_kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|e| {
            tracing::error!(error = %e, "signing an access token failed");
            ApiError::internal("could not sign the access token")
        })
    }

    /// Verifies signature, algorithm, key id, issuer, audience and time claims. A token seen
    /// before skips the signature (same text, same keys) but not the time claims.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        use std::hash::BuildHasher;
        let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let h = cache.0.hash_one(token);
        if let Some((text, claims)) = cache.1.get(&h)
            && **text == *token
        {
            return self.in_time(claims).then(|| claims.clone());
        }
        drop(cache);
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::EdDSA {
            return None;
        }
        let key = self.decoding.get(header.kid.as_deref()?)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .ok()?
            .claims;
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.1.len() >= VERIFIED_TOKENS {
            cache.1.clear();
        }
        cache.1.insert(h, (token.into(), claims.clone()));
        Some(claims)
    }

    /// `exp` and `nbf` against now, with the same leeway as the full check.
    fn in_time(&self, claims: &Claims) -> bool {
        let now = now().unix_timestamp();
        let leeway = self.validation.leeway as i64;
        claims.exp > now - leeway && claims.nbf <= now + leeway
    }
}

/// Starts a session for `user` (a successful login).
pub fn start_session(
    store: &Store,
    user: &User,
    source_ip: Option<String>,
    ttl: Duration,
) -> Result<Session, StoreError> {
    let session = Session {
        id: new_id(),
        user_id: user.id.clone(),
        source_ip,
        created_at: now(),
        expires_at: now() + ttl,
    };
    store.sessions.put(&session.id, &session)?;
    Ok(session)
}

/// Ends a session: its access tokens stop working at once and its refresh tokens are deleted
/// (found through the session's index, not by a scan).
pub fn end_session(store: &Store, sid: &str) -> Result<(), StoreError> {
    store.sessions.take(sid)?;
    let (from, to) = (format!("{sid}/"), format!("{sid}0"));
    for (_, digest) in store.session_refresh.range(&from, &to)? {
        store.refresh_tokens.take(&digest)?;
    }
    store.session_refresh.remove_range(&from, &to)?;
    Ok(())
}

/// The live session `sid`, if it has not ended or expired.
pub fn live_session(store: &Store, sid: &str) -> Result<Option<Session>, StoreError> {
    Ok(store.sessions.get(sid)?.filter(Session::is_live))
}

/// What a cleanup pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub sessions: usize,
    pub refresh_tokens: usize,
    pub enroll_tokens: usize,
}

/// Removes expired sessions (with their refresh tokens), refresh tokens that expired or whose
/// session is gone, and expired enrollment tokens.
pub fn clean_expired(store: &Store) -> Result<Cleaned, StoreError> {
    let mut cleaned = Cleaned::default();
    for session in store.sessions.values()? {
        if !session.is_live() {
            end_session(store, &session.id)?;
            cleaned.sessions += 1;
        }
    }
    let now = now();
    for (digest, token) in store.refresh_tokens.entries()? {
        if token.expires_at < now || store.sessions.get(&token.family)?.is_none() {
            store.refresh_tokens.take(&digest)?;
            store
                .session_refresh
                .take(&format!("{}/{digest}", token.family))?;
            cleaned.refresh_tokens += 1;
        }
    }
    for (digest, token) in store.enroll_tokens.entries()? {
        if token.expires_at < now {
            store.enroll_tokens.take(&digest)?;
            cleaned.enroll_tokens += 1;
        }
    }
    Ok(cleaned)
}

/// Ends every session of a user (password change, disable, delete, role or tenant change).
pub fn end_user_sessions(store: &Store, user_id: &str) -> Result<usize, StoreError> {
    let mut ended = 0;
    for session in store.sessions.values()? {
        if session.user_id == user_id {
            end_session(store, &session.id)?;
            ended += 1;
        }
    }
    Ok(ended)
}

/// Issues a refresh token in session `sid` and stores its digest.
pub fn issue_refresh(
    store: &Store,
    user_id: &str,
    sid: &str,
    ttl: Duration,
) -> Result<String, StoreError> {
    let token = random_secret("axr_");
    let digest = secret_digest(token.as_bytes());
    store
        .session_refresh
        .put(&format!("{sid}/{digest}"), &digest)?;
    store.refresh_tokens.put(
        &digest,
        &RefreshToken {
            user_id: user_id.to_owned(),
            family: sid.to_owned(),
            expires_at: now() + ttl,
            used: false,
        },
    )?;
    Ok(token)
}

/// What redeeming a refresh token found.
#[derive(Debug)]
pub enum Redeemed {
    /// Valid: rotate it.
    Fresh(RefreshToken),
    /// Already exchanged once: someone else holds a copy; the session was ended.
    Reused(RefreshToken),
    /// Unknown, expired, or its session has ended.
    Invalid,
}

/// Exchanges a refresh token once. Reuse of an exchanged token ends its whole session.
pub fn redeem_refresh(store: &Store, token: &str) -> Result<Redeemed, StoreError> {
    let key = secret_digest(token.as_bytes());
    let mut was_used = false;
    let Some(record) = store.refresh_tokens.update(&key, |r| {
        was_used = r.used;
        r.used = true;
    })?
    else {
        return Ok(Redeemed::Invalid);
    };
    if was_used {
        tracing::warn!(user = %record.user_id, session = %record.family, "refresh token reused; ending its session");
        end_session(store, &record.family)?;
        return Ok(Redeemed::Reused(record));
    }
    if record.expires_at < now() || live_session(store, &record.family)?.is_none() {
        return Ok(Redeemed::Invalid);
    }
    Ok(Redeemed::Fresh(record))
}

/// How the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A user's access token in a live session.
    Session { sid: String },
    /// An API key with these scopes.
    ApiKey { scopes: Vec<String> },
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User id, or API key id for keys.
    pub id: String,
    pub role: Role,
    /// The tenant the caller is confined to (clients), or an admin's own tenant (none).
    pub tenant_id: Option<String>,
    pub via: Via,
    /// Address the request came from (the TCP peer).
    pub ip: Option<std::net::IpAddr>,
}

impl Caller {
    /// Whether an API key caller holds `scope` (users hold every scope of their role).
    pub fn has_scope(&self, scope: &str) -> bool {
        match &self.via {
            Via::Session { .. } => true,
            Via::ApiKey { scopes } => scopes.iter().any(|s| scope_matches(s, scope)),
        }
    }

    /// Whether this caller sees only one tenant's records.
    pub fn is_client(&self) -> bool {
        self.role == Role::Client
    }

    /// Whether a record with `tenant` is visible to this caller: staff see all; clients see
    /// their tenant's records (a client with no tenant sees only records with no tenant).
    pub fn can_see(&self, tenant: Option<&str>) -> bool {
        !self.is_client() || self.tenant_id.as_deref() == tenant
    }

    /// Refuses identity management (users, keys) through an API key: a key must not be able
    /// to mint credentials wider than itself.
    pub fn require_session(&self) -> Result<(), ApiError> {
        match self.via {
            Via::Session { .. } => Ok(()),
            Via::ApiKey { .. } => Err(ApiError::forbidden(
                "managing users and API keys needs a user session, not an API key",
            )),
        }
    }

    /// Who is asking, as carried to an agent for its audit trail, with a fresh request id.
    pub fn requester(&self, request_id: &str) -> axon_shared::Requester {
        axon_shared::Requester {
            actor: self.id.clone(),
            role: self.role.as_str().to_owned(),
            tenant_id: self.tenant_id.clone(),
            source_ip: self.ip.map(|ip| ip.to_string()),
            request_id: Some(request_id.to_owned()),
        }
    }

    /// The user id behind the call, if a user (not a key) is calling.
    pub fn user_id(&self) -> Option<&str> {
        matches!(self.via, Via::Session { .. }).then_some(self.id.as_str())
    }
}

/// `granted` covers `wanted`: equal, `*`, or `resource:*` for `resource:action`.
pub fn scope_matches(granted: &str, wanted: &str) -> bool {
    granted == "*"
        || granted == wanted
        || granted
            .strip_suffix(":*")
            .is_some_and(|resource| wanted.split(':').next() == Some(resource))
}

/// Reads and checks the bearer credential of a request.
pub fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    // A console request, already checked by the bridge (cookie, origin, CSRF token).
    if let Some(crate::console::bridge::Bridged(caller)) = parts.extensions.get() {
        return Ok(caller.clone());
    }
    let token = bearer_token(parts)?;
    if token.starts_with(API_KEY_PREFIX) {
        return authenticate_key(state, parts, token);
    }
    let invalid = || ApiError::unauthorized("the access token is invalid or expired");
    let claims = state.jwt.verify(token).ok_or_else(invalid)?;
    let user = state.store.users.get(&claims.sub)?.ok_or_else(invalid)?;
    // A disabled user, one whose role or tenant changed, or a session that ended (logout,
    // password change) loses access at once: every request re-reads both.
    if user.disabled || user.role != claims.role || user.tenant_id != claims.tenant {
        return Err(invalid());
    }
    if live_session(&state.store, &claims.sid)?.is_none() {
        return Err(invalid());
    }
    Ok(Caller {
        id: user.id,
        role: user.role,
        tenant_id: user.tenant_id,
        via: Via::Session { sid: claims.sid },
        ip: peer_ip(parts),
    })
}

/// Subprotocol prefix that carries the token of a browser WebSocket (browsers cannot set
/// `Authorization` on an upgrade): `Sec-WebSocket-Protocol: axon.v1, axon.bearer.<token>`.
pub const WS_BEARER_PREFIX: &str = "axon.bearer.";

/// The bearer token: from `Authorization`, or for a WebSocket upgrade from its subprotocols.
/// Never from the query string.
fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    if let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        return header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"));
    }
    let upgrade = parts
        .headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        let offered = parts
            .headers
            .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find_map(|p| p.strip_prefix(WS_BEARER_PREFIX));
        if let Some(token) = offered.filter(|t| !t.is_empty()) {
            return Ok(token);
        }
    }
    Err(ApiError::unauthorized(
        "missing Authorization: Bearer token",
    ))
}

/// Prefix of API keys.
pub const API_KEY_PREFIX: &str = "axk_";

fn peer_ip(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

fn authenticate_key(state: &AppState, parts: &Parts, token: &str) -> Result<Caller, ApiError> {
    let invalid = || ApiError::unauthorized("the API key is invalid, expired or revoked");
    let digest = secret_digest(token.as_bytes());
    let key: ApiKey = state.store.api_keys.get(&digest)?.ok_or_else(invalid)?;
    let now = now();
    if key.revoked_at.is_some() || key.expires_at.is_some_and(|e| e < now) {
        return Err(invalid());
    }
    // Recording every use would write on every request; a minute's precision is enough.
    if key
        .last_used_at
        .is_none_or(|t| now - t > Duration::minutes(1))
    {
        let _ = state
            .store
            .api_keys
            .update(&digest, |k| k.last_used_at = Some(now));
    }
    Ok(Caller {
        id: key.id,
        role: key.role,
        tenant_id: key.tenant_id,
        via: Via::ApiKey { scopes: key.scopes },
        ip: peer_ip(parts),
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The policy layer has already authenticated every protected route.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        authenticate(parts, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> User {
        User {
            id: id.into(),
            email: format!("{id}@example.com"),
            name: id.into(),
            role: Role::Operator,
            tenant_id: None,
            password_hash: String::new(),
            disabled: false,
            demo_tag: None,
            created_at: now(),
            updated_at: now(),
        }
    }

    /// A session past its 30 days refuses refresh as it refuses access tokens; cleanup
    /// removes it with its tokens, used and unused, and expired enrollment tokens.
    #[test]
    fn expired_sessions_refuse_refresh_and_are_cleaned_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let alice = user("alice");
        let live = start_session(&store, &alice, None, Duration::days(30)).expect("session");
        let old = start_session(&store, &alice, None, Duration::days(30)).expect("session");
        let live_token = issue_refresh(&store, &alice.id, &live.id, Duration::days(30)).expect("t");
        // The refresh token itself is still valid; only its session has expired.
        let old_token = issue_refresh(&store, &alice.id, &old.id, Duration::days(30)).expect("t");
        store
            .sessions
            .update(&old.id, |s| s.expires_at = now() - Duration::seconds(1))
            .expect("age");
        assert!(matches!(
            redeem_refresh(&store, &old_token).expect("redeem"),
            Redeemed::Invalid
        ));
        store
            .enroll_tokens
            .put(
                "expired",
                &crate::model::EnrollToken {
                    id: "t1".into(),
                    labels: Default::default(),
                    created_by: "alice".into(),
                    created_at: now() - Duration::days(2),
                    expires_at: now() - Duration::days(1),
                },
            )
            .expect("enroll token");
        let cleaned = clean_expired(&store).expect("clean");
        assert_eq!(
            cleaned,
            Cleaned {
                sessions: 1,
                refresh_tokens: 0,
                enroll_tokens: 1
            }
        );
        assert!(store.sessions.get(&old.id).expect("get").is_none());
        assert_eq!(
            store.refresh_tokens.len(),
            1,
            "only the live session's token"
        );
        assert!(matches!(
            redeem_refresh(&store, &live_token).expect("redeem"),
            Redeemed::Fresh(_)
        ));
        // Ending the live session takes its (now used) token through the index.
        end_session(&store, &live.id).expect("end");
        assert_eq!(store.refresh_tokens.len(), 0);
        assert_eq!(store.session_refresh.len(), 0);
    }

    /// Past the bound a caller is told to retry (503 with Retry-After) instead of queueing
    /// without limit; once a run ends the next one goes through.
    #[tokio::test]
    async fn password_work_is_bounded() {
        let work = PasswordWork::new(1, std::time::Duration::from_millis(50));
        let held = work.permits.clone().acquire_owned().await.expect("permit");
        let hash = hash_password("a long enough password").expect("hash");
        let refused = work
            .verify(hash.clone(), "a long enough password".into())
            .await
            .expect_err("no permit free");
        assert_eq!(refused.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.retry_after, Some(1));
        drop(held);
        assert!(
            work.verify(hash, "a long enough password".into())
                .await
                .expect("ran")
        );
        assert_eq!(work.available(), 1);
    }

    #[test]
    fn a_retired_signing_key_stops_verifying_after_the_token_lifetime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let age = |key: &SigningKey, minutes: i64| {
            let mut k = key.clone();
            k.created_at = now() - Duration::minutes(minutes);
            store.signing_keys.put(&k.kid, &k).expect("put");
        };
        JwtKeys::generate(&store).expect("first");
        let first = store.signing_keys.values().expect("keys").remove(0);
        age(&first, 120);
        JwtKeys::generate(&store).expect("second");
        let second = store
            .signing_keys
            .values()
            .expect("keys")
            .into_iter()
            .find(|k| k.kid != first.kid)
            .expect("second");
        // The successor is 5 minutes old: tokens of the first key may still be live.
        age(&second, 5);
        let keys = JwtKeys::load(&store, std::time::Duration::from_secs(900)).expect("load");
        assert!(keys.decoding.contains_key(&first.kid));
        assert_eq!(keys.current_kid, second.kid);
        // An hour later every token of the first key has expired: it is dropped.
        age(&second, 60);
        let keys = JwtKeys::load(&store, std::time::Duration::from_secs(900)).expect("load");
        assert!(!keys.decoding.contains_key(&first.kid));
        assert!(keys.decoding.contains_key(&second.kid));
    }

    #[test]
    fn a_remembered_token_is_still_checked_for_its_text_and_its_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let keys = JwtKeys::load(&store, std::time::Duration::from_secs(900)).expect("load");
        let token = keys
            .issue(&user("u1"), "s1", Duration::minutes(5))
            .expect("token");
        assert_eq!(keys.verify(&token).expect("valid").sub, "u1");
        // Remembered now; a second use answers the same.
        assert_eq!(keys.verify(&token).expect("remembered").sid, "s1");
        // One character changed anywhere is a different text: checked in full, refused.
        for i in [token.len() - 2, token.len() / 2, 10] {
            let mut forged = token.clone().into_bytes();
            forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(forged).expect("ascii");
            assert!(keys.verify(&forged).is_none(), "forged at {i}");
        }
        // The time claims are checked on every use, remembered or not.
        let mut claims = keys.verify(&token).expect("valid");
        assert!(keys.in_time(&claims));
        claims.exp = now().unix_timestamp() - 31;
        assert!(!keys.in_time(&claims));
        claims.exp = now().unix_timestamp() + 60;
        claims.nbf = now().unix_timestamp() + 31;
        assert!(!keys.in_time(&claims));
    }

    #[test]
    fn scopes_match_exactly_by_resource_or_all() {
        assert!(scope_matches("*", "hosts:read"));
        assert!(scope_matches("hosts:read", "hosts:read"));
        assert!(scope_matches("hosts:*", "hosts:write"));
        assert!(!scope_matches("hosts:read", "hosts:write"));
        assert!(!scope_matches("host:*", "hosts:read"));
        assert!(!scope_matches("hosts:*", "hostsx:read"));
        assert!(!scope_matches("", "hosts:read"));
    }
}
