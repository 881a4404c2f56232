//! Browser sessions for the console. A login through the console's form starts the same kind
//! of login session as `POST /api/auth/login`, and the browser holds a random secret in an
//! `HttpOnly; Secure; SameSite=Strict` cookie whose SHA-256 names a record of that session.
//! Every request re-reads the session and the user, so a logout, a password change or a
//! disabled account ends the browser's access at once. The JSON API never reads this cookie.
//!
//! State-changing console requests need both an `Origin` of this server and the session's
//! CSRF token in the form; the login form, before any session, uses a double-submit token
//! (a cookie and a form field that must match).

use axum::http::{HeaderMap, HeaderValue, header};

use crate::AppState;
use crate::identity::auth::{live_session, random_secret, secret_digest};
use crate::model::{Session, User};
use crate::store::StoreError;

/// The session cookie.
pub const COOKIE: &str = "axon_session";
/// The login form's double-submit token.
pub const LOGIN_CSRF_COOKIE: &str = "axon_login_csrf";

pub use crate::model::BrowserSession;

/// A signed-in browser.
pub struct Signed {
    pub user: User,
    pub session: Session,
    pub browser: BrowserSession,
    /// The cookie's digest, the record's key.
    pub key: String,
}

impl Signed {
    /// The signed-in user as the API's handlers know callers.
    pub fn caller(&self) -> crate::identity::auth::Caller {
        crate::identity::auth::Caller {
            id: self.user.id.clone(),
            role: self.user.role,
            tenant_id: self.user.tenant_id.clone(),
            via: crate::identity::auth::Via::Session {
                sid: self.session.id.clone(),
            },
            ip: None,
        }
    }
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The signed-in user behind the request's cookie, if its session is live and the user
/// enabled.
pub fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Option<Signed>, StoreError> {
    let Some(secret) = cookie(headers, COOKIE).filter(|s| s.len() <= 128) else {
        return Ok(None);
    };
    let key = secret_digest(secret.as_bytes());
    let records = &state.store.browser_sessions;
    let Some(browser) = records.get(&key)? else {
        return Ok(None);
    };
    let Some(session) = live_session(&state.store, &browser.sid)? else {
        records.take(&key)?;
        return Ok(None);
    };
    match state.store.users.get(&browser.user_id)? {
        Some(user) if !user.disabled && session.user_id == user.id => Ok(Some(Signed {
            user,
            session,
            browser,
            key,
        })),
        _ => Ok(None),
    }
}

/// Records a browser session for `session`; returns the cookie's secret.
pub fn start(state: &AppState, session: &Session) -> Result<String, StoreError> {
    let secret = random_secret("axs_");
    let record = BrowserSession {
        sid: session.id.clone(),
        user_id: session.user_id.clone(),
        csrf: random_secret(""),
    };
    state
        .store
        .browser_sessions
        .put(&secret_digest(secret.as_bytes()), &record)?;
    Ok(secret)
}

/// Forgets a browser session's record.
pub fn forget(state: &AppState, key: &str) -> Result<(), StoreError> {
    state.store.browser_sessions.take(key)?;
    Ok(())
}

/// `Set-Cookie` for `name` = `value`, kept `max_age` seconds (0 deletes it).
pub fn set_cookie(name: &str, value: &str, max_age: i64) -> HeaderValue {
    let text = format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        max_age.max(0)
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// Whether the request's `Origin` is this server (scheme, host and port as the client sent
/// them in `Host`). Browsers send `Origin` on every form post.
pub fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let scheme = if state.config.insecure_http {
        "http"
    } else {
        "https"
    };
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    origin == format!("{scheme}://{host}")
}

/// The signed-in browser behind a console form post, after its checks: the `Origin` is this
/// server (403), a session is live (401), and the form carries its CSRF token (403).
pub fn form_post(
    state: &AppState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<Signed, crate::error::ApiError> {
    use crate::error::ApiError;
    if !same_origin(state, headers) {
        return Err(ApiError::forbidden(
            "this form was not sent from this site; reload the page and try again",
        ));
    }
    let signed =
        signed_in(state, headers)?.ok_or_else(|| ApiError::unauthorized("not signed in"))?;
    if !tokens_match(&signed.browser.csrf, csrf) {
        return Err(ApiError::forbidden(
            "the form's security token does not match; reload the page and try again",
        ));
    }
    Ok(signed)
}

/// Compares two tokens without an early exit.
pub fn tokens_match(a: &str, b: &str) -> bool {
    !a.is_empty()
        && a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x_axon_session=no; axon_session=yes; other=1"),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("yes"));
        assert_eq!(cookie(&headers, "missing"), None);
        let set = set_cookie(COOKIE, "v", 60);
        let text = set.to_str().expect("ascii");
        for part in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(text.contains(part), "{text}");
        }
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd") && !tokens_match("", "") && !tokens_match("a", "ab"));
    }
}
