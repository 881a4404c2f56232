//! Service management as the host allows it: who may act on which unit is the host owner's
//! decision (`[[allow]]` in the config, `--allow KIND:ACTIONS:PATTERN` on the command line).
//! By default everything may be listed and nothing may be acted on.

use std::time::Duration;

use axon_shared::{ServiceActed, ServiceInfo};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::units::{Systemd, UnitError};

/// How long an action's job may take.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(90);
const ACTIONS: &[&str] = &["start", "stop", "restart", "reload", "enable", "disable"];

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// `systemd`.
    pub kind: String,
    /// Actions allowed, or `*` for all.
    pub actions: Vec<String>,
    /// Unit names allowed: a glob with `*` and `?`.
    pub pattern: String,
}

impl AllowRule {
    /// Parses `KIND:ACTIONS:PATTERN`, e.g. `systemd:start,stop,restart:web-*.service`.
    pub fn parse_flag(text: &str) -> Result<Self, String> {
        let mut parts = text.splitn(3, ':');
        let (Some(kind), Some(actions), Some(pattern)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("--allow {text:?}: expected KIND:ACTIONS:PATTERN"));
        };
        let rule = Self {
            kind: kind.to_owned(),
            actions: actions.split(',').map(str::to_owned).collect(),
            pattern: pattern.to_owned(),
        };
        rule.check()?;
        Ok(rule)
    }

    /// Refuses unknown kinds, actions and empty patterns.
    pub fn check(&self) -> Result<(), String> {
        if self.kind != "systemd" {
            return Err(format!(
                "allow rule kind {:?}: only systemd is supported",
                self.kind
            ));
        }
        if let Some(bad) = self
            .actions
            .iter()
            .find(|a| *a != "*" && !ACTIONS.contains(&a.as_str()))
        {
            return Err(format!(
                "allow rule action {bad:?}: use {} or *",
                ACTIONS.join(", ")
            ));
        }
        if self.pattern.is_empty() {
            return Err("allow rule pattern is empty".into());
        }
        Ok(())
    }

    fn allows(&self, kind: &str, action: &str, name: &str) -> bool {
        self.kind == kind
            && self.actions.iter().any(|a| a == "*" || a == action)
            && glob(&self.pattern, name)
    }
}

/// `*` matches any run (also empty), `?` one character; everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A service operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{action} on {name} is not allowed on this host")]
    NotAllowed { action: String, name: String },
    #[error("service kind {0:?} is not supported")]
    Kind(String),
    #[error(transparent)]
    Unit(#[from] UnitError),
}

/// Service management of one host.
pub struct Services {
    rules: Vec<AllowRule>,
    bus: Option<String>,
    systemd: Mutex<Option<std::sync::Arc<Systemd>>>,
    /// Finished systemd jobs (unit, result), for live subscribers.
    jobs: tokio::sync::broadcast::Sender<(String, String)>,
}

fn info(kind: &str, u: crate::units::UnitInfo) -> ServiceInfo {
    ServiceInfo {
        kind: kind.to_owned(),
        name: u.name,
        description: u.description,
        load_state: u.load_state,
        active_state: u.active_state,
        sub_state: u.sub_state,
        main_pid: None,
        memory_bytes: None,
        cpu_nsec: None,
        active_since: None,
        last_result: None,
    }
}

impl Services {
    /// `bus`: the system bus address (`None`: the default, honouring `DBUS_SYSTEM_BUS_ADDRESS`).
    pub fn new(rules: Vec<AllowRule>, bus: Option<String>) -> Self {
        Self {
            rules,
            bus,
            systemd: Mutex::new(None),
            jobs: tokio::sync::broadcast::channel(256).0,
        }
    }

    /// Follows systemd's finished jobs for as long as the agent runs, reconnecting after bus
    /// failures; a host without systemd just waits.
    pub fn spawn_job_follower(self: &std::sync::Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(systemd) = Systemd::connect(this.bus.as_deref()).await {
                    let _ = systemd.follow_jobs(this.jobs.clone()).await;
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        });
    }

    /// A subscription to finished jobs (unit, result).
    pub fn jobs(&self) -> tokio::sync::broadcast::Receiver<(String, String)> {
        self.jobs.subscribe()
    }

    /// Whether the host's rules allow `action` on `name`.
    pub fn allowed(&self, kind: &str, action: &str, name: &str) -> bool {
        self.rules.iter().any(|r| r.allows(kind, action, name))
    }

    async fn systemd(&self) -> Result<std::sync::Arc<Systemd>, ServiceError> {
        let mut slot = self.systemd.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let s = std::sync::Arc::new(Systemd::connect(self.bus.as_deref()).await?);
        *slot = Some(s.clone());
        Ok(s)
    }

    async fn reset(&self) {
        *self.systemd.lock().await = None;
    }

    fn check_kind(kind: &str) -> Result<(), ServiceError> {
        if kind == "systemd" {
            Ok(())
        } else {
            Err(ServiceError::Kind(kind.to_owned()))
        }
    }

    pub async fn list(&self, kind: &str) -> Result<Vec<ServiceInfo>, ServiceError> {
        Self::check_kind(kind)?;
        let result = self.systemd().await?.list().await;
        if result.is_err() {
            self.reset().await;
        }
        Ok(result?.into_iter().map(|u| info(kind, u)).collect())
    }

    pub async fn get(&self, kind: &str, name: &str) -> Result<ServiceInfo, ServiceError> {
        Self::check_kind(kind)?;
        crate::exec::check_unit_name(name).map_err(|_| UnitError::NotFound(name.to_owned()))?;
        let systemd = self.systemd().await?;
        let result = systemd.state(name).await;
        if matches!(result, Err(UnitError::Unavailable(_))) {
            self.reset().await;
        }
        let mut out = info(kind, result?);
        if let Ok(d) = systemd.detail(name).await {
            out.main_pid = d.main_pid;
            out.memory_bytes = d.memory_bytes;
            out.cpu_nsec = d.cpu_nsec;
            out.active_since = d.active_since;
            out.last_result = d.last_result;
        }
        Ok(out)
    }

    pub async fn act(
        &self,
        kind: &str,
        name: &str,
        action: &str,
    ) -> Result<ServiceActed, ServiceError> {
        Self::check_kind(kind)?;
        if !ACTIONS.contains(&action)
            || crate::exec::check_unit_name(name).is_err()
            || !self.allowed(kind, action, name)
        {
            return Err(ServiceError::NotAllowed {
                action: action.to_owned(),
                name: name.to_owned(),
            });
        }
        let result = self
            .systemd()
            .await?
            .act(name, action, ACTION_TIMEOUT)
            .await;
        if matches!(result, Err(UnitError::Unavailable(_))) {
            self.reset().await;
        }
        let outcome = result?;
        Ok(ServiceActed {
            kind: kind.to_owned(),
            name: name.to_owned(),
            action: action.to_owned(),
            job_result: outcome.job_result,
            active_state: outcome.active_state,
            sub_state: outcome.sub_state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob("web-*.service", "web-1.service"));
        assert!(glob("*", "anything"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("web-*.service", "web-1.socket"));
        assert!(!glob("web-*", "xweb-1"));
        assert!(!glob("a?c", "ac"));
    }

    #[test]
    fn rules_default_to_nothing_and_parse_strictly() {
        let none = Services::new(Vec::new(), None);
        assert!(!none.allowed("systemd", "start", "nginx.service"));
        let rule = AllowRule::parse_flag("systemd:start,stop:web-*.service").expect("rule");
        let s = Services::new(vec![rule], None);
        assert!(s.allowed("systemd", "start", "web-a.service"));
        assert!(!s.allowed("systemd", "restart", "web-a.service"));
        assert!(!s.allowed("systemd", "start", "db.service"));
        for bad in [
            "systemd:start",
            "docker:*:x",
            "systemd:kill:x",
            "systemd:start:",
        ] {
            assert!(AllowRule::parse_flag(bad).is_err(), "{bad}");
        }
    }
}
