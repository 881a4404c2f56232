//! The control plane's typed configuration, validated once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of `axon-cp serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where the store and the PKI live.
    pub data_dir: PathBuf,
    /// Serve the API over plain HTTP (only allowed on a loopback address).
    pub insecure_http: bool,
    /// URL agents dial, given to them at enrollment; derived from the request when unset.
    pub agent_url: Option<String>,
    /// Seconds between liveness pings on the agent link (offline after three missed).
    pub ping_interval: Duration,
    /// Hard limit on one agent-link frame.
    pub max_frame_bytes: usize,
    /// Lifetime of agent certificates.
    pub cert_lifetime: Duration,
    /// Lifetime of access tokens.
    pub access_ttl: Duration,
    /// Lifetime of refresh tokens.
    pub refresh_ttl: Duration,
    /// How long the API waits for an agent's answer.
    pub agent_timeout: Duration,
    /// Port of the agent listener (set from the bound listener).
    pub agent_port: u16,
    /// How long per-minute metrics history is kept.
    pub metrics_retention: Duration,
    /// Below this many free bytes on the data dir, changes are refused (503).
    pub min_free_bytes: u64,
    /// The LLM gateway's providers and seeds.
    pub llm: crate::llm::LlmConfig,
    /// Plans, the builder's webhook.
    pub agency: crate::agency::AgencyConfig,
    /// The public site's contact button.
    pub console: crate::console::ConsoleConfig,
}

impl ServeConfig {
    /// Defaults for a data dir.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            insecure_http: false,
            agent_url: None,
            ping_interval: Duration::from_secs(15),
            max_frame_bytes: axon_shared::DEFAULT_MAX_FRAME,
            cert_lifetime: Duration::from_secs(30 * 86_400),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 86_400),
            agent_timeout: Duration::from_secs(10),
            agent_port: 7443,
            metrics_retention: Duration::from_secs(7 * 86_400),
            min_free_bytes: 64 << 20,
            llm: crate::llm::LlmConfig::default(),
            agency: crate::agency::AgencyConfig::default(),
            console: crate::console::ConsoleConfig::default(),
        }
    }

    /// Checks the settings against the addresses actually bound.
    pub fn validate(&self, api_addr: SocketAddr) -> Result<(), ConfigError> {
        if self.insecure_http && !api_addr.ip().is_loopback() {
            return Err(ConfigError::InsecureNotLoopback { addr: api_addr });
        }
        if self.ping_interval < Duration::from_secs(1) {
            return Err(ConfigError::Invalid("ping interval must be at least 1 s"));
        }
        if self.access_ttl < Duration::from_secs(60) {
            return Err(ConfigError::Invalid(
                "access-token lifetime must be at least 60 s",
            ));
        }
        if self.max_frame_bytes < 4096 {
            return Err(ConfigError::Invalid(
                "max frame size must be at least 4096 bytes",
            ));
        }
        if self.metrics_retention < Duration::from_secs(3600) {
            return Err(ConfigError::Invalid(
                "metrics retention must be at least 1 h",
            ));
        }
        if self.cert_lifetime < Duration::from_secs(60) {
            return Err(ConfigError::Invalid(
                "certificate lifetime must be at least 60 s",
            ));
        }
        Ok(())
    }
}

/// The configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--insecure-http is only allowed on a loopback address, not {addr}")]
    InsecureNotLoopback { addr: SocketAddr },
    #[error("{0}")]
    Invalid(&'static str),
}
