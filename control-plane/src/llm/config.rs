//! The gateway's settings: cloud providers (from the environment or a providers file), and the
//! aliases and prices a file seeds into the store (admins manage them through the API after).
//! Keys are held in [`Secret`], which never prints.

use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::provider::ProviderKind;

/// An upstream credential: never printed, never serialised.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Per-upstream time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Opening the connection.
    pub connect_ms: u64,
    /// From sending the request to the upstream's status and headers.
    pub first_byte_ms: u64,
    /// Between two pieces of a streamed answer.
    pub idle_ms: u64,
    /// The whole call.
    pub total_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            first_byte_ms: 60_000,
            idle_ms: 60_000,
            total_ms: 600_000,
        }
    }
}

impl Timeouts {
    /// Fleet model servers may load a model from disk before answering.
    pub fn fleet() -> Self {
        Self {
            first_byte_ms: 300_000,
            idle_ms: 120_000,
            ..Self::default()
        }
    }
    pub fn first_byte(&self) -> Duration {
        Duration::from_millis(self.first_byte_ms)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
    pub fn total(&self) -> Duration {
        Duration::from_millis(self.total_ms)
    }
}

/// A cloud or fixed-address upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// The prefix of its models: `<name>/<model>`.
    pub name: String,
    pub kind: ProviderKind,
    /// e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Environment variable holding the key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Models listed by `/v1/models` (any model name is passed on).
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub timeouts: Timeouts,
}

/// The providers file: `--llm-config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmFile {
    #[serde(default)]
    pub providers: Vec<ProviderSpec>,
    #[serde(default)]
    pub aliases: Vec<super::routes::Alias>,
    #[serde(default)]
    pub prices: Vec<super::routes::Price>,
}

/// The gateway's settings, resolved.
#[derive(Debug, Clone, Default)]
pub struct LlmConfig {
    pub providers: Vec<ProviderSpec>,
    pub seed_aliases: Vec<super::routes::Alias>,
    pub seed_prices: Vec<super::routes::Price>,
    /// Time limits for fleet model servers.
    pub fleet_timeouts: Timeouts,
}

/// The settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LlmConfigError {
    #[error("cannot read the LLM config {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("the LLM config {path} is invalid: {error}")]
    Parse { path: String, error: String },
    #[error("LLM provider {name:?}: {reason}")]
    Provider { name: String, reason: String },
}

/// Reserved prefixes: the fleet's Ollama and SD WebUI servers.
pub const FLEET_OLLAMA: &str = "ollama";
pub const FLEET_SD: &str = "sd";

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl LlmConfig {
    /// Reads the optional file, then adds the providers whose keys the environment holds
    /// (`OPENAI_API_KEY`, `GEMINI_API_KEY`, `DEEPSEEK_API_KEY`, base URLs overridable with
    /// `*_BASE_URL`). A file's provider of the same name wins.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, LlmConfigError> {
        let parsed = match file {
            None => LlmFile::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| LlmConfigError::Read {
                    path: path.display().to_string(),
                    error,
                })?;
                toml::from_str(&text).map_err(|e| LlmConfigError::Parse {
                    path: path.display().to_string(),
                    error: e.to_string(),
                })?
            }
        };
        let mut providers = parsed.providers;
        for (name, kind, default_base) in [
            ("openai", ProviderKind::Openai, "https://api.openai.com/v1"),
            (
                "gemini",
                ProviderKind::Gemini,
                "https://generativelanguage.googleapis.com/v1beta",
            ),
            (
                "deepseek",
                ProviderKind::Deepseek,
                "https://api.deepseek.com",
            ),
        ] {
            let upper = name.to_ascii_uppercase();
            let Some(key) = env(&format!("{upper}_API_KEY")).filter(|k| !k.trim().is_empty())
            else {
                continue;
            };
            if providers.iter().any(|p| p.name == name) {
                continue;
            }
            providers.push(ProviderSpec {
                name: name.into(),
                kind,
                base_url: env(&format!("{upper}_BASE_URL"))
                    .filter(|u| !u.trim().is_empty())
                    .unwrap_or_else(|| default_base.into()),
                api_key: Some(Secret::new(key.trim())),
                api_key_env: None,
                models: Vec::new(),
                timeouts: Timeouts::default(),
            });
        }
        for p in &mut providers {
            let bad = |reason: &str| LlmConfigError::Provider {
                name: p.name.clone(),
                reason: reason.into(),
            };
            if !valid_name(&p.name) {
                return Err(bad("names are 1-32 of [a-z0-9_-]"));
            }
            if p.name == FLEET_OLLAMA || p.name == FLEET_SD {
                return Err(bad("this name is the fleet's; choose another"));
            }
            if !(p.base_url.starts_with("https://") || p.base_url.starts_with("http://")) {
                return Err(bad("base_url must be an http:// or https:// URL"));
            }
            p.base_url = p.base_url.trim_end_matches('/').to_owned();
            if p.api_key.is_none()
                && let Some(var) = &p.api_key_env
            {
                p.api_key = env(var).map(Secret::new);
            }
            if p.timeouts.first_byte_ms == 0 || p.timeouts.idle_ms == 0 || p.timeouts.total_ms == 0
            {
                return Err(bad("timeouts must be positive"));
            }
        }
        let mut names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(LlmConfigError::Provider {
                name: w[0].into(),
                reason: "defined twice".into(),
            });
        }
        for alias in &parsed.aliases {
            alias.check().map_err(|reason| LlmConfigError::Provider {
                name: alias.name.clone(),
                reason,
            })?;
        }
        Ok(Self {
            providers,
            seed_aliases: parsed.aliases,
            seed_prices: parsed.prices,
            fleet_timeouts: Timeouts::fleet(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_the_environment_make_providers_and_never_print() {
        let env = |name: &str| match name {
            "OPENAI_API_KEY" => Some("sk-secret".to_owned()),
            "DEEPSEEK_API_KEY" => Some("ds-secret".to_owned()),
            "DEEPSEEK_BASE_URL" => Some("http://127.0.0.1:9/".to_owned()),
            _ => None,
        };
        let config = LlmConfig::load(None, &env).expect("config");
        let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["openai", "deepseek"]);
        assert_eq!(config.providers[1].base_url, "http://127.0.0.1:9");
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("sk-secret") && !printed.contains("ds-secret"),
            "{printed}"
        );
    }

    #[test]
    fn a_file_defines_providers_aliases_and_prices() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("llm.toml");
        std::fs::write(
            &path,
            r#"
[[providers]]
name = "vllm"
kind = "openai"
base_url = "http://10.0.0.5:8000/v1"
api_key_env = "VLLM_KEY"
models = ["qwen2.5-7b"]
timeouts = { first_byte_ms = 1000 }

[[aliases]]
name = "fast"
strategy = "weighted"
targets = [{ model = "vllm/qwen2.5-7b", weight = 3 }, { model = "openai/gpt-4o-mini" }]

[[prices]]
model = "openai/gpt-4o-mini"
input_per_mtok = 0.15
output_per_mtok = 0.6
"#,
        )
        .expect("write");
        let env = |name: &str| (name == "VLLM_KEY").then(|| "k".to_owned());
        let config = LlmConfig::load(Some(&path), &env).expect("config");
        assert_eq!(
            config.providers[0].api_key.as_ref().map(Secret::expose),
            Some("k")
        );
        assert_eq!(config.providers[0].timeouts.first_byte_ms, 1000);
        assert_eq!(config.providers[0].timeouts.idle_ms, 60_000);
        assert_eq!(config.seed_aliases[0].targets[0].weight, 3);
        assert_eq!(config.seed_aliases[0].targets[1].weight, 1);
        assert_eq!(config.seed_prices.len(), 1);
        std::fs::write(
            &path,
            "[[providers]]\nname = \"ollama\"\nkind = \"ollama\"\nbase_url = \"http://x\"\n",
        )
        .expect("write");
        assert!(LlmConfig::load(Some(&path), &env).is_err());
        std::fs::write(
            &path,
            "[[providers]]\nname = \"x\"\nkind = \"openai\"\nbase_url = \"http://x\"\nsecret = 1\n",
        )
        .expect("write");
        assert!(LlmConfig::load(Some(&path), &env).is_err());
    }
}
