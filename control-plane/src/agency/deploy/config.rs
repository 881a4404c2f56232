//! The deploy channels' settings, read from the environment. A channel that is half set up does
//! not stop the control plane: it reports `misconfigured` with what is missing, and its deploys
//! are refused with the same sentence.

use std::fmt;
use std::time::Duration;

/// A value that must never be printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a channel stands before any call is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setup {
    /// Off; the sentence says how to turn it on.
    Disabled(String),
    /// On but unusable; the sentence says what is wrong.
    Misconfigured(String),
    Ready,
}

/// WhatsApp through an n8n webhook.
#[derive(Debug, Clone, Default)]
pub struct WhatsappConfig {
    pub url: Option<String>,
    /// Header auth as n8n's "Header Auth" credential expects it: name and value.
    pub header: Option<(String, Secret)>,
    pub problem: Option<String>,
}

/// Social networks through Ayrshare.
#[derive(Debug, Clone)]
pub struct SocialConfig {
    pub enabled: bool,
    pub api_key: Option<Secret>,
    pub base_url: String,
    pub problem: Option<String>,
}

/// Telegram through the Bot API.
#[derive(Debug, Clone)]
pub struct TelegramConfig {
    pub enabled: bool,
    pub token: Option<Secret>,
    pub base_url: String,
    pub default_chat_id: Option<String>,
    pub problem: Option<String>,
}

/// The settings of all three channels and of their calls.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    pub whatsapp: WhatsappConfig,
    pub social: SocialConfig,
    pub telegram: TelegramConfig,
    /// Longest wait for one call to a service, answer included.
    pub timeout: Duration,
    /// Attempts before a retryable failure (429, 5xx, no answer) is given up.
    pub attempts: u32,
    /// The wait after the first retryable failure; doubled after each.
    pub retry_delay: Duration,
    /// Base of the artifact download links put in WhatsApp deploys (`AXON_PUBLIC_URL`); the
    /// API listener's own address when unset.
    pub public_url: Option<String>,
}

pub const AYRSHARE_BASE_URL: &str = "https://api.ayrshare.com/api";
pub const TELEGRAM_BASE_URL: &str = "https://api.telegram.org";

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            whatsapp: WhatsappConfig::default(),
            social: SocialConfig {
                enabled: false,
                api_key: None,
                base_url: AYRSHARE_BASE_URL.into(),
                problem: None,
            },
            telegram: TelegramConfig {
                enabled: false,
                token: None,
                base_url: TELEGRAM_BASE_URL.into(),
                default_chat_id: None,
                problem: None,
            },
            timeout: Duration::from_secs(30),
            attempts: 5,
            retry_delay: Duration::from_secs(5),
            public_url: None,
        }
    }
}

fn flag(value: Option<String>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// An http(s) base URL without a trailing slash, or why not.
fn base_url(name: &str, value: &str) -> Result<String, String> {
    let value = value.trim().trim_end_matches('/');
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(value.to_owned())
        }
        _ => Err(format!("{name} must be an http(s) URL")),
    }
}

impl DeployConfig {
    /// Reads the settings through `get`. Bad call limits are an error (the process should not
    /// start); a channel's own problems are kept for its health and its deploys.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut config = Self::default();
        let nonempty = |name: &str| get(name).filter(|v| !v.trim().is_empty());

        if let Some(url) = nonempty("N8N_WHATSAPP_DEPLOY_WEBHOOK_URL") {
            match base_url("N8N_WHATSAPP_DEPLOY_WEBHOOK_URL", &url) {
                Ok(_) => config.whatsapp.url = Some(url.trim().to_owned()),
                Err(e) => config.whatsapp.problem = Some(e),
            }
        }
        match (
            nonempty("N8N_WHATSAPP_DEPLOY_HEADER_NAME"),
            get("N8N_WHATSAPP_DEPLOY_HEADER_VALUE").filter(|v| !v.is_empty()),
        ) {
            (Some(name), Some(value)) => {
                let name = name.trim().to_owned();
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || reqwest::header::HeaderValue::from_str(&value).is_err()
                {
                    config.whatsapp.problem = Some(
                        "N8N_WHATSAPP_DEPLOY_HEADER_NAME / _VALUE are not a valid HTTP header"
                            .into(),
                    );
                } else {
                    config.whatsapp.header = Some((name, Secret::new(value)));
                }
            }
            (None, None) => {}
            _ => {
                config.whatsapp.problem = Some(
                    "set both N8N_WHATSAPP_DEPLOY_HEADER_NAME and N8N_WHATSAPP_DEPLOY_HEADER_VALUE, or neither"
                        .into(),
                )
            }
        }

        config.social.enabled = flag(get("ENABLE_AYRSHARE_SOCIAL"));
        config.social.api_key = nonempty("AYRSHARE_API_KEY").map(|k| Secret::new(k.trim()));
        if let Some(url) = nonempty("AYRSHARE_BASE_URL") {
            match base_url("AYRSHARE_BASE_URL", &url) {
                Ok(url) => config.social.base_url = url,
                Err(e) => config.social.problem = Some(e),
            }
        }
        if config.social.enabled && config.social.api_key.is_none() {
            config.social.problem = Some("AYRSHARE_API_KEY is not set".into());
        }

        config.telegram.enabled = flag(get("ENABLE_TELEGRAM_DEPLOY"));
        if let Some(token) = nonempty("TELEGRAM_BOT_TOKEN") {
            let token = token.trim();
            // `<bot id>:<secret>`; anything else would make a broken (or path-changing) URL.
            let valid = token.split_once(':').is_some_and(|(id, rest)| {
                !id.is_empty()
                    && id.bytes().all(|b| b.is_ascii_digit())
                    && !rest.is_empty()
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
            if valid {
                config.telegram.token = Some(Secret::new(token));
            } else {
                config.telegram.problem =
                    Some("TELEGRAM_BOT_TOKEN does not look like <bot id>:<secret>".into());
            }
        } else if config.telegram.enabled {
            config.telegram.problem = Some("TELEGRAM_BOT_TOKEN is not set".into());
        }
        if let Some(url) = nonempty("TELEGRAM_BASE_URL") {
            match base_url("TELEGRAM_BASE_URL", &url) {
                Ok(url) => config.telegram.base_url = url,
                Err(e) => config.telegram.problem = Some(e),
            }
        }
        config.telegram.default_chat_id =
            nonempty("DEFAULT_TELEGRAM_CHAT_ID").map(|c| c.trim().to_owned());

        if let Some(t) = get("AXON_DEPLOY_TIMEOUT") {
            config.timeout = axon_shared::parse_duration(&t)
                .map_err(|e| format!("AXON_DEPLOY_TIMEOUT: {e}"))?
                .clamp(Duration::from_millis(100), Duration::from_secs(600));
        }
        if let Some(n) = get("AXON_DEPLOY_ATTEMPTS") {
            config.attempts = n
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=20).contains(n))
                .ok_or("AXON_DEPLOY_ATTEMPTS must be a number from 1 to 20")?;
        }
        if let Some(t) = get("AXON_DEPLOY_RETRY_DELAY") {
            config.retry_delay = axon_shared::parse_duration(&t)
                .map_err(|e| format!("AXON_DEPLOY_RETRY_DELAY: {e}"))?
                .clamp(Duration::from_millis(100), Duration::from_secs(3600));
        }
        if let Some(url) = nonempty("AXON_PUBLIC_URL") {
            config.public_url = Some(base_url("AXON_PUBLIC_URL", &url)?);
        }
        Ok(config)
    }

    pub fn whatsapp_setup(&self) -> Setup {
        match (&self.whatsapp.problem, &self.whatsapp.url) {
            (Some(p), _) => Setup::Misconfigured(p.clone()),
            (None, None) => Setup::Disabled(
                "the WhatsApp channel is off: set N8N_WHATSAPP_DEPLOY_WEBHOOK_URL to the n8n workflow's webhook".into(),
            ),
            (None, Some(_)) => Setup::Ready,
        }
    }

    pub fn social_setup(&self) -> Setup {
        if !self.social.enabled {
            return Setup::Disabled(
                "the social channel is off: set ENABLE_AYRSHARE_SOCIAL=true and AYRSHARE_API_KEY"
                    .into(),
            );
        }
        match &self.social.problem {
            Some(p) => Setup::Misconfigured(p.clone()),
            None => Setup::Ready,
        }
    }

    pub fn telegram_setup(&self) -> Setup {
        if !self.telegram.enabled {
            return Setup::Disabled(
                "the Telegram channel is off: set ENABLE_TELEGRAM_DEPLOY=true and TELEGRAM_BOT_TOKEN"
                    .into(),
            );
        }
        match &self.telegram.problem {
            Some(p) => Setup::Misconfigured(p.clone()),
            None => Setup::Ready,
        }
    }

    pub fn setup(&self, channel: super::Channel) -> Setup {
        match channel {
            super::Channel::Whatsapp => self.whatsapp_setup(),
            super::Channel::Social => self.social_setup(),
            super::Channel::Telegram => self.telegram_setup(),
        }
    }

    /// Why a channel cannot send now, in a sentence; `None` when it can.
    pub fn unusable(&self, channel: super::Channel) -> Option<String> {
        match self.setup(channel) {
            Setup::Ready => None,
            Setup::Disabled(why) => Some(why),
            Setup::Misconfigured(why) => Some(format!(
                "the {} channel is misconfigured: {why}",
                channel.as_str()
            )),
        }
    }

    /// Every secret the channels hold, for scrubbing text that leaves them.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((_, v)) = &self.whatsapp.header {
            out.push(v.expose().to_owned());
        }
        if let Some(k) = &self.social.api_key {
            out.push(k.expose().to_owned());
        }
        if let Some(t) = &self.telegram.token {
            out.push(t.expose().to_owned());
        }
        out.retain(|s| s.len() >= 4);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<DeployConfig, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        DeployConfig::from_env(&|name| map.get(name).cloned())
    }

    #[test]
    fn channels_are_off_until_asked_for_and_say_what_is_missing() {
        let c = read(&[]).expect("config");
        assert!(
            matches!(c.whatsapp_setup(), Setup::Disabled(m) if m.contains("N8N_WHATSAPP_DEPLOY_WEBHOOK_URL"))
        );
        assert!(
            matches!(c.social_setup(), Setup::Disabled(m) if m.contains("ENABLE_AYRSHARE_SOCIAL"))
        );
        assert!(
            matches!(c.telegram_setup(), Setup::Disabled(m) if m.contains("ENABLE_TELEGRAM_DEPLOY"))
        );
        // A key without the switch stays off.
        let c = read(&[("AYRSHARE_API_KEY", "k-123456")]).expect("config");
        assert!(matches!(c.social_setup(), Setup::Disabled(_)));

        let c = read(&[
            ("ENABLE_AYRSHARE_SOCIAL", "true"),
            ("ENABLE_TELEGRAM_DEPLOY", "1"),
            ("N8N_WHATSAPP_DEPLOY_WEBHOOK_URL", "ftp://n8n/webhook/x"),
        ])
        .expect("config");
        assert!(
            matches!(c.social_setup(), Setup::Misconfigured(m) if m.contains("AYRSHARE_API_KEY"))
        );
        assert!(
            matches!(c.telegram_setup(), Setup::Misconfigured(m) if m.contains("TELEGRAM_BOT_TOKEN"))
        );
        assert!(matches!(c.whatsapp_setup(), Setup::Misconfigured(m) if m.contains("http")));

        let c = read(&[
            ("ENABLE_TELEGRAM_DEPLOY", "yes"),
            ("TELEGRAM_BOT_TOKEN", "123/../../evil"),
            (
                "N8N_WHATSAPP_DEPLOY_WEBHOOK_URL",
                "http://127.0.0.1:5678/webhook/wa",
            ),
            ("N8N_WHATSAPP_DEPLOY_HEADER_NAME", "X-Auth"),
        ])
        .expect("config");
        assert!(matches!(c.telegram_setup(), Setup::Misconfigured(_)));
        assert!(
            matches!(c.whatsapp_setup(), Setup::Misconfigured(m) if m.contains("HEADER_VALUE"))
        );
    }

    #[test]
    fn a_full_setup_is_ready_and_never_prints_its_secrets() {
        let c = read(&[
            ("ENABLE_AYRSHARE_SOCIAL", "true"),
            ("AYRSHARE_API_KEY", "ayr-secret-key"),
            ("AYRSHARE_BASE_URL", "http://127.0.0.1:9/api/"),
            ("ENABLE_TELEGRAM_DEPLOY", "true"),
            ("TELEGRAM_BOT_TOKEN", "12345:AAbb-cc_DD"),
            (
                "N8N_WHATSAPP_DEPLOY_WEBHOOK_URL",
                "http://127.0.0.1:5678/webhook/wa",
            ),
            ("N8N_WHATSAPP_DEPLOY_HEADER_NAME", "X-N8N-Key"),
            ("N8N_WHATSAPP_DEPLOY_HEADER_VALUE", "n8n-header-secret"),
            ("AXON_DEPLOY_TIMEOUT", "2s"),
        ])
        .expect("config");
        assert_eq!(c.social_setup(), Setup::Ready);
        assert_eq!(c.telegram_setup(), Setup::Ready);
        assert_eq!(c.whatsapp_setup(), Setup::Ready);
        assert_eq!(c.social.base_url, "http://127.0.0.1:9/api");
        assert_eq!(c.timeout, Duration::from_secs(2));
        let printed = format!("{c:?}");
        for secret in ["ayr-secret-key", "12345:AAbb-cc_DD", "n8n-header-secret"] {
            assert!(!printed.contains(secret), "{secret} printed");
            assert!(c.secrets().iter().any(|s| s == secret));
        }
        assert!(read(&[("AXON_DEPLOY_ATTEMPTS", "0")]).is_err());
    }
}
