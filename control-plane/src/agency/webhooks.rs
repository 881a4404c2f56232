//! Webhook subscriptions: which receivers (n8n workflows and the like) get which of the
//! agency's events, and how each delivery is signed so a receiver can tell it came from us.
//! See docs/webhooks.md for the receiver's side.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Every event a subscription may ask for (`*` asks for all of them).
pub const EVENTS: &[&str] = &[
    "order.created",
    "order.state_changed",
    "order.plan_ready",
    "deploy.finished",
    "ping",
];

/// Longest receiver URL.
pub const MAX_URL_CHARS: usize = 2000;

/// The `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("axon-webhooks/", env!("CARGO_PKG_VERSION"));

/// An event a subscription asks for, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EventName {
    #[serde(rename = "order.created")]
    OrderCreated,
    #[serde(rename = "order.state_changed")]
    OrderStateChanged,
    #[serde(rename = "order.plan_ready")]
    OrderPlanReady,
    #[serde(rename = "deploy.finished")]
    DeployFinished,
    #[serde(rename = "ping")]
    Ping,
    /// Every event.
    #[serde(rename = "*")]
    All,
}

impl EventName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderCreated => "order.created",
            Self::OrderStateChanged => "order.state_changed",
            Self::OrderPlanReady => "order.plan_ready",
            Self::DeployFinished => "deploy.finished",
            Self::Ping => "ping",
            Self::All => "*",
        }
    }
}

/// A receiver and the events it wants.
#[derive(Clone, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub url: String,
    /// Event names, or `*`.
    pub events: Vec<String>,
    pub description: String,
    pub active: bool,
    /// Why the control plane turned it off (the receiver answered 410 Gone).
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// The HMAC key: shown once at creation and rotation, never listed.
    pub secret: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Deliveries that reached the receiver.
    #[serde(default)]
    pub delivered: u64,
    /// Deliveries given up on.
    #[serde(default)]
    pub failed: u64,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_delivery_at: Option<OffsetDateTime>,
    /// The status of the last answer, if one came.
    #[serde(default)]
    pub last_status: Option<u16>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("active", &self.active)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Whether a delivery of `event` goes to this receiver.
    pub fn wants(&self, event: &str) -> bool {
        self.active && self.events.iter().any(|e| e == "*" || e == event)
    }
}

/// A fresh signing secret: 32 random bytes, URL-safe base64, with a readable prefix.
pub fn new_secret() -> String {
    crate::identity::auth::random_secret("whsec_")
}

/// Why a receiver URL was refused. The messages never repeat the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("url must be at most {MAX_URL_CHARS} characters")]
    TooLong,
    #[error("url must not contain spaces or control characters")]
    Whitespace,
    #[error("url is not a valid absolute URL")]
    Unparsable,
    #[error("url must use http or https")]
    Scheme,
    #[error("url must name a host")]
    NoHost,
    #[error("url must not carry a user name or password; use the signature to authenticate")]
    Credentials,
    #[error("url must not have a #fragment")]
    Fragment,
}

/// Checks a receiver URL. Loopback and private addresses are allowed on purpose: only admins
/// set these, and n8n often runs on the same machine.
pub fn check_url(url: &str) -> Result<reqwest::Url, UrlError> {
    if url.chars().count() > MAX_URL_CHARS {
        return Err(UrlError::TooLong);
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlError::Whitespace);
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| UrlError::Unparsable)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlError::Scheme);
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlError::Credentials);
    }
    if parsed.fragment().is_some() {
        return Err(UrlError::Fragment);
    }
    Ok(parsed)
}

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: the `X-Axon-Signature` header. The
/// key is the secret's text as given (prefix included).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("v1={}", axon_shared::hex_encode(context.sign().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed apart from this code, with Python's standard library:
    /// `hmac.new(b"whsec_test", b"1700000000." + body, hashlib.sha256).hexdigest()`.
    const KNOWN: &str = "v1=e1ff67f79a30203e54eebc6c7ebf5655259eb6767ea6f0decd3e9198c5e4f759";

    #[test]
    fn signature_matches_an_independent_computation() {
        let body = br#"{"id":"01J0000000000000000000000","event":"ping","data":{}}"#;
        assert_eq!(signature("whsec_test", 1_700_000_000, body), KNOWN);
        assert_ne!(signature("whsec_other", 1_700_000_000, body), KNOWN);
        assert_ne!(signature("whsec_test", 1_700_000_001, body), KNOWN);
    }

    #[test]
    fn receiver_urls_are_checked() {
        for good in [
            "https://n8n.example.com/webhook/3f1c",
            "http://127.0.0.1:5678/webhook/orders",
            "http://localhost/hook?x=1",
            "http://[::1]:8080/",
            "http://10.0.0.7/hook",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        for (bad, why) in [
            (long.as_str(), UrlError::TooLong),
            ("https://example.com/a b", UrlError::Whitespace),
            ("https://example.com/\n", UrlError::Whitespace),
            ("example.com/hook", UrlError::Unparsable),
            ("", UrlError::Unparsable),
            ("ftp://example.com/", UrlError::Scheme),
            ("file:///etc/passwd", UrlError::Scheme),
            ("javascript:alert(1)", UrlError::Scheme),
            ("https://user:pass@example.com/", UrlError::Credentials),
            ("https://token@example.com/", UrlError::Credentials),
            ("https://example.com/#frag", UrlError::Fragment),
        ] {
            assert_eq!(check_url(bad).err(), Some(why), "{bad}");
        }
    }

    #[test]
    fn subscriptions_match_their_events_while_active() {
        let mut sub = Subscription {
            id: "s".into(),
            url: "http://127.0.0.1/".into(),
            events: vec!["order.created".into()],
            description: String::new(),
            active: true,
            disabled_reason: None,
            secret: new_secret(),
            created_at: crate::model::now(),
            created_by: "u".into(),
            updated_at: crate::model::now(),
            delivered: 0,
            failed: 0,
            last_delivery_at: None,
            last_status: None,
        };
        assert!(sub.wants("order.created"));
        assert!(!sub.wants("deploy.finished"));
        assert!(!format!("{sub:?}").contains(&sub.secret));
        sub.events = vec!["*".into()];
        assert!(sub.wants("deploy.finished"));
        sub.active = false;
        assert!(!sub.wants("order.created"));
        assert!(sub.secret.starts_with("whsec_") && sub.secret.len() == 6 + 43);
        for name in EVENTS {
            let parsed: EventName =
                serde_json::from_value(serde_json::Value::String((*name).into())).expect(name);
            assert_eq!(parsed.as_str(), *name);
        }
    }
}
