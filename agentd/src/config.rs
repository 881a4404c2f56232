//! agentd's configuration: defaults, then a TOML file, then `AGENTD_*` variables and flags
//! (the command line applies the last two).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::exec::{CommandSpec, Whitelist, default_specs};
use crate::jail::RootSpec;
use crate::services::AllowRule;

/// Settings of `agentd run`.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where enrollment stored the key, certificate, CA and identity.
    pub state_dir: PathBuf,
    /// Overrides the URL received at enrollment.
    pub agent_url: Option<String>,
    /// First reconnect delay ceiling.
    pub backoff_initial: Duration,
    /// Largest reconnect delay ceiling.
    pub backoff_max: Duration,
    /// Largest frame accepted from the control plane.
    pub max_frame_bytes: usize,
    /// Offer the built-in safe commands (uptime, df, free, systemctl status, ...).
    pub default_commands: bool,
    /// The host owner's own whitelisted commands.
    pub commands: Vec<CommandSpec>,
    /// Where users and groups for `run_as` are looked up (`/etc`).
    pub etc_dir: PathBuf,
    /// Directories the control plane may reach through the file jail.
    pub jails: Vec<RootSpec>,
    /// Which service actions the control plane may run, on which units.
    pub allow: Vec<AllowRule>,
    /// D-Bus system bus address (default: the system bus, or `DBUS_SYSTEM_BUS_ADDRESS`).
    pub system_bus: Option<String>,
    /// `journalctl`, run for unit logs.
    pub journalctl: PathBuf,
    /// A journal directory to read instead of the system journal (`journalctl --directory`).
    pub journal_dir: Option<PathBuf>,
    /// How often capabilities are detected again (a bus or engine may come or go), and model
    /// servers looked for.
    pub capabilities_interval: Duration,
    /// How often a host sample is taken and sent.
    pub metrics_interval: Duration,
    /// Include the busiest processes in samples.
    pub top_processes: bool,
    /// Where Ollama listens.
    pub ollama_address: String,
    /// Where the Automatic1111 / SDXL web UI listens.
    pub sdxl_address: String,
    /// Let the control plane reach the model servers through the link (allowlisted paths).
    pub model_forwarding: bool,
    /// How long a model server may take to answer a forwarded request with its headers.
    pub model_header_timeout: Duration,
}

impl AgentConfig {
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            agent_url: None,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_frame_bytes: axon_shared::DEFAULT_MAX_FRAME,
            default_commands: true,
            commands: Vec::new(),
            etc_dir: PathBuf::from("/etc"),
            jails: Vec::new(),
            allow: Vec::new(),
            system_bus: None,
            journalctl: PathBuf::from("/usr/bin/journalctl"),
            journal_dir: None,
            capabilities_interval: Duration::from_secs(30),
            metrics_interval: Duration::from_secs(5),
            top_processes: false,
            ollama_address: "127.0.0.1:11434".into(),
            sdxl_address: "127.0.0.1:7860".into(),
            model_forwarding: true,
            model_header_timeout: Duration::from_secs(300),
        }
    }

    /// The settings of forwarding to the model servers.
    pub fn forwarding(&self) -> crate::forward::ForwardConfig {
        crate::forward::ForwardConfig {
            enabled: self.model_forwarding,
            ollama: self.ollama_address.clone(),
            sdxl: self.sdxl_address.clone(),
            header_timeout: self.model_header_timeout,
            ..Default::default()
        }
    }

    /// The command whitelist this configuration allows.
    pub fn whitelist(&self) -> Result<Whitelist, ConfigError> {
        let mut specs = if self.default_commands {
            default_specs()
        } else {
            Vec::new()
        };
        // An entry of the host owner's with a default's name replaces the default.
        specs.retain(|d| !self.commands.iter().any(|c| c.name == d.name));
        specs.extend(self.commands.iter().cloned());
        Whitelist::new(specs, &self.etc_dir).map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

/// The TOML file's shape; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub state_dir: Option<PathBuf>,
    pub agent_url: Option<String>,
    /// e.g. "1s"
    pub backoff_initial: Option<String>,
    /// e.g. "60s"
    pub backoff_max: Option<String>,
    pub max_frame_bytes: Option<usize>,
    /// Offer the built-in safe commands (default true).
    pub default_commands: Option<bool>,
    /// Whitelisted commands, as `[[commands]]` tables.
    #[serde(default)]
    pub commands: Vec<CommandSpec>,
    /// File-jail roots, as `[[jails]]` tables.
    #[serde(default)]
    pub jails: Vec<RootSpec>,
    /// Service allow rules, as `[[allow]]` tables.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    pub system_bus: Option<String>,
    pub journalctl: Option<PathBuf>,
    pub journal_dir: Option<PathBuf>,
    /// e.g. "30s"
    pub capabilities_interval: Option<String>,
    /// e.g. "5s"
    pub metrics_interval: Option<String>,
    pub top_processes: Option<bool>,
    pub ollama_address: Option<String>,
    pub sdxl_address: Option<String>,
    /// Forward the control plane's requests to the model servers (default true).
    pub model_forwarding: Option<bool>,
    /// e.g. "300s"
    pub model_header_timeout: Option<String>,
}

/// The configuration file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }

    /// Applies the file's values over `config`.
    pub fn apply(self, config: &mut AgentConfig) -> Result<(), ConfigError> {
        let duration = |s: &str| axon_shared::parse_duration(s).map_err(ConfigError::Invalid);
        if let Some(v) = self.state_dir {
            config.state_dir = v;
        }
        if let Some(v) = self.agent_url {
            config.agent_url = Some(v);
        }
        if let Some(v) = self.backoff_initial {
            config.backoff_initial = duration(&v)?;
        }
        if let Some(v) = self.backoff_max {
            config.backoff_max = duration(&v)?;
        }
        if let Some(v) = self.max_frame_bytes {
            config.max_frame_bytes = v;
        }
        if let Some(v) = self.default_commands {
            config.default_commands = v;
        }
        config.commands.extend(self.commands);
        config.jails.extend(self.jails);
        for rule in &self.allow {
            rule.check().map_err(ConfigError::Invalid)?;
        }
        config.allow.extend(self.allow);
        if let Some(v) = self.system_bus {
            config.system_bus = Some(v);
        }
        if let Some(v) = self.journalctl {
            config.journalctl = v;
        }
        if let Some(v) = self.journal_dir {
            config.journal_dir = Some(v);
        }
        if let Some(v) = self.capabilities_interval {
            config.capabilities_interval = duration(&v)?;
        }
        if let Some(v) = self.metrics_interval {
            config.metrics_interval = duration(&v)?;
        }
        if let Some(v) = self.top_processes {
            config.top_processes = v;
        }
        if let Some(v) = self.ollama_address {
            config.ollama_address = v;
        }
        if let Some(v) = self.sdxl_address {
            config.sdxl_address = v;
        }
        if let Some(v) = self.model_forwarding {
            config.model_forwarding = v;
        }
        if let Some(v) = self.model_header_timeout {
            config.model_header_timeout = duration(&v)?;
        }
        Ok(())
    }
}

impl AgentConfig {
    /// Checks the settings once, before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return Err(ConfigError::Invalid(
                "backoff: initial must be > 0 and not above max".into(),
            ));
        }
        if self.metrics_interval < Duration::from_secs(1)
            || self.metrics_interval > Duration::from_secs(3600)
        {
            return Err(ConfigError::Invalid(
                "metrics_interval must be between 1s and 1h".into(),
            ));
        }
        for (key, addr) in [
            ("ollama_address", &self.ollama_address),
            ("sdxl_address", &self.sdxl_address),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "{key} {addr:?} must be IP:PORT"
                )));
            }
        }
        if self.model_header_timeout < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "model_header_timeout must be at least 1s".into(),
            ));
        }
        if self.capabilities_interval < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "capabilities_interval must be at least 1s".into(),
            ));
        }
        if self.max_frame_bytes < 4096 {
            return Err(ConfigError::Invalid(
                "max frame size must be at least 4096 bytes".into(),
            ));
        }
        if let Some(url) = &self.agent_url
            && !url.starts_with("wss://")
        {
            return Err(ConfigError::Invalid(format!(
                "agent URL {url:?} must start with wss://"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_layers_over_defaults_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agentd.toml");
        std::fs::write(
            &path,
            "backoff_max = \"5s\"\nmax_frame_bytes = 65536\nmodel_forwarding = false\n",
        )
        .expect("write");
        let mut config = AgentConfig::new("/var/lib/agentd".into());
        FileConfig::load(&path)
            .expect("load")
            .apply(&mut config)
            .expect("apply");
        assert_eq!(config.backoff_max, Duration::from_secs(5));
        assert_eq!(config.backoff_initial, Duration::from_secs(1));
        assert_eq!(config.max_frame_bytes, 65536);
        assert!(!config.model_forwarding && !config.forwarding().enabled);
        assert_eq!(config.model_header_timeout, Duration::from_secs(300));
        config.validate().expect("valid");

        std::fs::write(&path, "backof_max = \"5s\"\n").expect("write");
        let err = FileConfig::load(&path).expect_err("typo refused");
        assert!(err.to_string().contains("backof_max"), "{err}");

        let mut bad = AgentConfig::new("/x".into());
        bad.agent_url = Some("ws://plain".into());
        assert!(bad.validate().is_err());
    }
}
