//! Service management as the host allows it: who may act on which unit or container is the
//! host owner's decision (`[[allow]]` in the config, `--allow KIND:ACTIONS:PATTERN` on the
//! command line). By default everything may be listed, inspected and its logs read, and
//! nothing may be acted on.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axon_shared::{
    ContainerRun, ContainerStats, ImageInfo, LogLine, ServiceActed, ServiceEvent, ServiceInfo,
    ServiceLogs,
};
use serde::Deserialize;
use tokio::sync::{Mutex, broadcast, mpsc};

use crate::docker::{DockerEngine, EngineError};
use crate::journal::{Journal, JournalError};
use crate::units::{Systemd, UnitError};

/// How soon a follower dials systemd or the engine again after losing it, doubling up to
/// the most while it stays away (a host without either costs next to nothing).
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How long an action's job may take.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(90);
const ACTIONS: &[&str] = &["start", "stop", "restart", "reload", "enable", "disable"];
const DOCKER_ACTIONS: &[&str] = &["start", "stop", "restart", "remove", "run", "pull"];
/// How long a pull may take.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// `systemd` or `docker`.
    pub kind: String,
    /// Actions allowed, or `*` for all.
    pub actions: Vec<String>,
    /// Unit or container names allowed: a glob with `*` and `?`. For Docker also
    /// `label:KEY=GLOB`, matching containers by a label (and images by name for `pull`).
    pub pattern: String,
}

impl AllowRule {
    /// Parses `KIND:ACTIONS:PATTERN`, e.g. `systemd:start,stop,restart:web-*.service` or
    /// `docker:*:axon-test-*`.
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
        let known = match self.kind.as_str() {
            "systemd" => ACTIONS,
            "docker" => DOCKER_ACTIONS,
            other => {
                return Err(format!("allow rule kind {other:?}: use systemd or docker"));
            }
        };
        if let Some(bad) = self
            .actions
            .iter()
            .find(|a| *a != "*" && !known.contains(&a.as_str()))
        {
            return Err(format!(
                "allow rule action {bad:?} for {}: use {} or *",
                self.kind,
                known.join(", ")
            ));
        }
        if self.pattern.is_empty() {
            return Err("allow rule pattern is empty".into());
        }
        if let Some(label) = self.pattern.strip_prefix("label:")
            && (self.kind != "docker" || !label.contains('=') || label.starts_with('='))
        {
            return Err(format!(
                "allow rule pattern {:?}: label:KEY=GLOB is for docker rules",
                self.pattern
            ));
        }
        Ok(())
    }

    fn allows(
        &self,
        kind: &str,
        action: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        if self.kind != kind || !self.actions.iter().any(|a| a == "*" || a == action) {
            return false;
        }
        match self.pattern.strip_prefix("label:") {
            Some(label) => {
                let (key, value) = label.split_once('=').unwrap_or((label, "*"));
                labels.get(key).is_some_and(|v| glob(value, v))
            }
            None => glob(&self.pattern, name),
        }
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
    #[error("{0}")]
    Kind(String),
    #[error("mount refused: {0}")]
    Mount(String),
    #[error("too many logs or stats are being followed on this host ({0})")]
    Busy(usize),
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// A directory bind mounts may come from.
#[derive(Debug, Clone)]
pub struct MountRoot {
    pub path: PathBuf,
    pub writable: bool,
}

/// Service management of one host.
pub struct Services {
    rules: Vec<AllowRule>,
    bus: Option<String>,
    systemd: Mutex<Option<Arc<Systemd>>>,
    docker: Mutex<Option<Arc<DockerEngine>>>,
    journal: Journal,
    mount_roots: Vec<MountRoot>,
    /// State changes of units and containers, for live subscribers.
    changes: broadcast::Sender<ServiceEvent>,
    /// Unit-file states as last read, and when; cleared when systemd says files changed.
    file_states: std::sync::Mutex<Option<(std::time::Instant, Arc<FileStates>)>>,
}

type FileStates = std::collections::HashMap<String, String>;

/// How long unit-file states are reused when no change signal arrives (a file edited by
/// hand without a reload is seen after this).
const FILE_STATES_TTL: Duration = Duration::from_secs(30);

fn info(kind: &str, u: crate::units::UnitInfo) -> ServiceInfo {
    let mut info = ServiceInfo::new(kind, &u.name, &u.description);
    info.load_state = u.load_state;
    info.active_state = u.active_state;
    info.sub_state = u.sub_state;
    info.unit_file_state = u.unit_file_state;
    info
}

impl Services {
    /// `bus`: the system bus address (`None`: the default, honouring `DBUS_SYSTEM_BUS_ADDRESS`).
    pub fn new(
        rules: Vec<AllowRule>,
        bus: Option<String>,
        journal: Journal,
        mount_roots: Vec<MountRoot>,
    ) -> Self {
        Self {
            rules,
            bus,
            systemd: Mutex::new(None),
            docker: Mutex::new(None),
            journal,
            mount_roots,
            changes: broadcast::channel(256).0,
            file_states: std::sync::Mutex::new(None),
        }
    }

    /// Follows systemd's jobs and unit state changes and the Docker engine's container events
    /// for as long as the agent runs, reconnecting after failures; a host without either just
    /// keeps looking.
    pub fn spawn_followers(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut wait = RETRY_MIN;
            loop {
                if let Ok(systemd) = Systemd::connect(this.bus.as_deref()).await {
                    let stale = || this.forget_file_states();
                    let _ = systemd.follow_changes(&this.changes, stale).await;
                    wait = RETRY_MIN;
                }
                this.forget_file_states();
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
        });
        let this = self.clone();
        tokio::spawn(async move {
            let mut wait = RETRY_MIN;
            loop {
                if let Ok(engine) = DockerEngine::connect().await {
                    engine.follow_events(&this.changes).await;
                    wait = RETRY_MIN;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
        });
    }

    fn forget_file_states(&self) {
        *self.file_states.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Unit-file states, read again only when stale.
    async fn file_states(&self, systemd: &Systemd) -> Arc<FileStates> {
        let cached = self
            .file_states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((at, states)) = cached
            && at.elapsed() < FILE_STATES_TTL
        {
            return states;
        }
        let states = match systemd.unit_file_states().await {
            Ok(states) => Arc::new(states),
            Err(e) => {
                tracing::warn!(error = %e, "unit-file states unavailable");
                return Arc::default();
            }
        };
        *self.file_states.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), states.clone()));
        states
    }

    /// A subscription to state changes.
    pub fn changes(&self) -> broadcast::Receiver<ServiceEvent> {
        self.changes.subscribe()
    }

    /// Whether the host's rules allow `action` on `name` (with its labels, for containers).
    pub fn allowed(
        &self,
        kind: &str,
        action: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        self.rules
            .iter()
            .any(|r| r.allows(kind, action, name, labels))
    }

    fn refuse(action: &str, name: &str) -> ServiceError {
        ServiceError::NotAllowed {
            action: action.to_owned(),
            name: name.to_owned(),
        }
    }

    async fn systemd(&self) -> Result<Arc<Systemd>, ServiceError> {
        let mut slot = self.systemd.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let s = Arc::new(Systemd::connect(self.bus.as_deref()).await?);
        *slot = Some(s.clone());
        Ok(s)
    }

    async fn docker(&self) -> Result<Arc<DockerEngine>, ServiceError> {
        let mut slot = self.docker.lock().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let d = Arc::new(DockerEngine::connect().await?);
        *slot = Some(d.clone());
        Ok(d)
    }

    /// Drops a connection that failed, so the next call dials again.
    async fn forget<T>(&self, result: &Result<T, ServiceError>) {
        match result {
            Err(ServiceError::Unit(UnitError::Unavailable(_))) => {
                *self.systemd.lock().await = None;
            }
            Err(ServiceError::Engine(EngineError::Unavailable(_) | EngineError::Timeout(_))) => {
                *self.docker.lock().await = None;
            }
            _ => {}
        }
    }

    fn check_kind(kind: &str) -> Result<(), ServiceError> {
        match kind {
            "systemd" | "docker" => Ok(()),
            other => Err(ServiceError::Kind(format!(
                "service kind {other:?} is not supported: use systemd or docker"
            ))),
        }
    }

    pub async fn list(&self, kind: &str, all: bool) -> Result<Vec<ServiceInfo>, ServiceError> {
        Self::check_kind(kind)?;
        let result = async {
            if kind == "docker" {
                return Ok(self.docker().await?.list(all).await?);
            }
            let systemd = self.systemd().await?;
            let units = systemd.list().await?;
            let files = self.file_states(&systemd).await;
            let loaded: std::collections::HashSet<String> =
                units.iter().map(|u| u.name.clone()).collect();
            let mut out: Vec<ServiceInfo> = units
                .into_iter()
                .map(|mut u| {
                    u.unit_file_state = files.get(&u.name).cloned();
                    info(kind, u)
                })
                .collect();
            if all {
                // Installed but not loaded (systemd unloads idle units): what an operator
                // may still start. Templates (`name@.service`) cannot be started as such.
                for (name, state) in files.iter() {
                    if loaded.contains(name) || name.contains("@.") {
                        continue;
                    }
                    out.push(info(
                        kind,
                        crate::units::UnitInfo {
                            name: name.clone(),
                            description: String::new(),
                            load_state: "not-loaded".into(),
                            active_state: "inactive".into(),
                            sub_state: "dead".into(),
                            unit_file_state: Some(state.clone()),
                        },
                    ));
                }
                out.sort_by(|a, b| a.name.cmp(&b.name));
            }
            Ok(out)
        }
        .await;
        self.forget(&result).await;
        result.map(|list| list.into_iter().map(|s| self.with_rights(s)).collect())
    }

    /// The service with the actions the host's rules allow on it.
    fn with_rights(&self, mut info: ServiceInfo) -> ServiceInfo {
        info.allowed_actions = axon_shared::SERVICE_ACTIONS
            .iter()
            .filter(|a| self.allowed(&info.kind, a, &info.name, &info.labels))
            .map(|a| (*a).to_owned())
            .collect();
        info
    }

    pub async fn get(&self, kind: &str, name: &str) -> Result<ServiceInfo, ServiceError> {
        Self::check_kind(kind)?;
        let result = async {
            if kind == "docker" {
                return Ok(self.docker().await?.inspect(name).await?);
            }
            crate::exec::check_unit_name(name).map_err(|_| UnitError::NotFound(name.to_owned()))?;
            let systemd = self.systemd().await?;
            let mut out = info(kind, systemd.state(name).await?);
            if let Ok(d) = systemd.detail(name).await {
                out.main_pid = d.main_pid;
                out.memory_bytes = d.memory_bytes;
                out.cpu_nsec = d.cpu_nsec;
                out.active_since = d.active_since;
                out.last_result = d.last_result;
                out.unit_file_state = d.unit_file_state;
            }
            Ok(out)
        }
        .await;
        self.forget(&result).await;
        result.map(|s| self.with_rights(s))
    }

    pub async fn act(
        &self,
        kind: &str,
        name: &str,
        action: &str,
        force: bool,
    ) -> Result<ServiceActed, ServiceError> {
        Self::check_kind(kind)?;
        let result = async {
            if kind == "docker" {
                if !matches!(action, "start" | "stop" | "restart" | "remove") {
                    return Err(Self::refuse(action, name));
                }
                let engine = self.docker().await?;
                // Rules see the container's own name (not an id or prefix it was asked by),
                // and the action goes to the container inspected, by id.
                let found = engine.inspect(name).await?;
                if !self.allowed(kind, action, &found.name, &found.labels) {
                    return Err(Self::refuse(action, name));
                }
                let id = found.id.unwrap_or_else(|| found.name.clone());
                return Ok(engine.act(&id, &found.name, action, force).await?);
            }
            if !ACTIONS.contains(&action)
                || crate::exec::check_unit_name(name).is_err()
                || !self.allowed(kind, action, name, &BTreeMap::new())
            {
                return Err(Self::refuse(action, name));
            }
            let outcome = self
                .systemd()
                .await?
                .act(name, action, ACTION_TIMEOUT)
                .await;
            if matches!(action, "enable" | "disable") {
                self.forget_file_states();
            }
            let outcome = outcome?;
            Ok(ServiceActed {
                kind: kind.to_owned(),
                name: name.to_owned(),
                action: action.to_owned(),
                job_result: outcome.job_result,
                active_state: outcome.active_state,
                sub_state: outcome.sub_state,
            })
        }
        .await;
        self.forget(&result).await;
        result
    }

    /// The last `lines` log lines; with `live`, new lines follow until `until`.
    pub async fn logs(
        &self,
        kind: &str,
        name: &str,
        lines: u32,
        live: Option<(mpsc::Sender<LogLine>, tokio::time::Instant)>,
    ) -> Result<ServiceLogs, ServiceError> {
        Self::check_kind(kind)?;
        let lines = lines.min(crate::docker::MAX_LOG_LINES);
        let result = async {
            let (lines, truncated) = if kind == "docker" {
                self.docker().await?.logs(name, lines, live).await?
            } else {
                crate::exec::check_unit_name(name)
                    .map_err(|_| UnitError::NotFound(name.to_owned()))?;
                // A unit systemd does not know is 404; without a bus the journal still answers.
                if let Ok(systemd) = self.systemd().await
                    && let Err(UnitError::NotFound(n)) = systemd.state(name).await
                {
                    return Err(UnitError::NotFound(n).into());
                }
                self.journal.logs(name, lines, live).await?
            };
            Ok(ServiceLogs {
                kind: kind.to_owned(),
                name: name.to_owned(),
                lines,
                truncated,
            })
        }
        .await;
        self.forget(&result).await;
        result
    }

    /// One stats sample of a container; with `live`, samples follow until `until`.
    pub async fn stats(
        &self,
        kind: &str,
        name: &str,
        live: Option<(mpsc::Sender<ContainerStats>, tokio::time::Instant)>,
    ) -> Result<Option<ContainerStats>, ServiceError> {
        Self::check_kind(kind)?;
        if kind != "docker" {
            return Err(ServiceError::Kind(
                "stats are for containers; a unit's memory and CPU are in its detail".into(),
            ));
        }
        let result = async {
            let engine = self.docker().await?;
            Ok(match live {
                Some((tx, until)) => {
                    engine.stats_stream(name, tx, until).await?;
                    None
                }
                None => Some(engine.stats(name).await?),
            })
        }
        .await;
        self.forget(&result).await;
        result
    }

    pub async fn images(&self) -> Result<Vec<ImageInfo>, ServiceError> {
        let result = async { Ok(self.docker().await?.images().await?) }.await;
        self.forget(&result).await;
        result
    }

    pub async fn pull(&self, image: &str) -> Result<ImageInfo, ServiceError> {
        crate::docker::check_image(image)?;
        if !self.allowed("docker", "pull", image, &BTreeMap::new()) {
            return Err(Self::refuse("pull", image));
        }
        let result = async { Ok(self.docker().await?.pull(image, PULL_TIMEOUT).await?) }.await;
        self.forget(&result).await;
        result
    }

    /// Runs a container from a local image: its name (or labels) must be allowed for `run`,
    /// and every bind mount must come from one of the host's roots.
    pub async fn run(&self, spec: &ContainerRun) -> Result<ServiceInfo, ServiceError> {
        crate::docker::check_name(&spec.name)?;
        if !self.allowed("docker", "run", &spec.name, &spec.labels) {
            return Err(Self::refuse("run", &spec.name));
        }
        let mut mounts = Vec::new();
        for m in &spec.mounts {
            let source = self.mount_source(Path::new(&m.source), m.read_only)?;
            let target = Path::new(&m.target);
            if !target.is_absolute()
                || target
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
                || m.target.len() > 4096
            {
                return Err(ServiceError::Mount(format!(
                    "target {:?} must be an absolute path without '..'",
                    m.target
                )));
            }
            mounts.push((source, m.target.clone(), m.read_only));
        }
        let result = async { Ok(self.docker().await?.run(spec, mounts).await?) }.await;
        self.forget(&result).await;
        result
    }

    /// A mount source as the engine will see it: an absolute path written without `.`, `..`
    /// or links, resolved step by step beneath the root it names (no component may be a
    /// symlink); a read-only root gives read-only mounts only. A path that is missing, a link
    /// or outside every root gets the same answer, so the check tells nothing of the host.
    fn mount_source(&self, source: &Path, read_only: bool) -> Result<String, ServiceError> {
        let refuse = |why: &str| ServiceError::Mount(format!("{}: {why}", source.display()));
        let unusable = || {
            refuse(
                "is not a file or directory inside one of this host's file roots, written without links, '.' or '..'",
            )
        };
        if !source.is_absolute() {
            return Err(refuse("must be an absolute path"));
        }
        if source
            .components()
            .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
        {
            return Err(unusable());
        }
        let (root_path, writable, rel) = self
            .mount_roots
            .iter()
            .filter_map(|r| {
                let root = std::fs::canonicalize(&r.path).ok()?;
                let rel = source.strip_prefix(&root).ok()?.to_owned();
                Some((root, r.writable, rel))
            })
            .next()
            .ok_or_else(unusable)?;
        let mut dir = cap_std::fs::Dir::open_ambient_dir(&root_path, cap_std::ambient_authority())
            .map_err(|_| unusable())?;
        let parts: Vec<&std::ffi::OsStr> = rel.iter().collect();
        for (i, part) in parts.iter().enumerate() {
            let meta = dir.symlink_metadata(part).map_err(|_| unusable())?;
            if meta.file_type().is_symlink() {
                return Err(unusable());
            }
            if i + 1 < parts.len() {
                // cap-std keeps even a link swapped in after the check beneath the root.
                dir = dir.open_dir(part).map_err(|_| unusable())?;
            }
        }
        if !read_only && !writable {
            return Err(refuse("its root is read-only: mount it read_only"));
        }
        source
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| refuse("is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services(rules: Vec<AllowRule>, mount_roots: Vec<MountRoot>) -> Services {
        let journal = Journal {
            journalctl: "/usr/bin/journalctl".into(),
            directory: None,
        };
        Services::new(rules, None, journal, mount_roots)
    }

    #[test]
    fn docker_rules_match_names_or_labels() {
        let rules = vec![
            AllowRule::parse_flag("docker:*:axon-test-*").expect("rule"),
            AllowRule::parse_flag("docker:restart:label:team=web*").expect("rule"),
        ];
        let s = services(rules, Vec::new());
        let none = BTreeMap::new();
        let web: BTreeMap<String, String> = [("team".to_owned(), "web-1".to_owned())].into();
        assert!(s.allowed("docker", "remove", "axon-test-1", &none));
        assert!(s.allowed("docker", "run", "axon-test-1", &none));
        assert!(!s.allowed("docker", "stop", "prod-db", &none));
        assert!(s.allowed("docker", "restart", "prod-web", &web));
        assert!(!s.allowed("docker", "stop", "prod-web", &web));
    }

    #[test]
    fn mounts_come_only_from_roots_without_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(dir.path()).expect("canonical");
        let (rw, ro, outside) = (base.join("rw"), base.join("ro"), base.join("outside"));
        for d in [&rw, &ro, &outside] {
            std::fs::create_dir(d).expect("mkdir");
        }
        std::os::unix::fs::symlink(&outside, rw.join("link")).expect("symlink");
        let s = services(
            Vec::new(),
            vec![
                MountRoot {
                    path: rw.clone(),
                    writable: true,
                },
                MountRoot {
                    path: ro.clone(),
                    writable: false,
                },
            ],
        );
        assert!(s.mount_source(&rw, false).is_ok());
        assert!(s.mount_source(&ro, true).is_ok());
        assert!(s.mount_source(&ro, false).is_err());
        assert!(s.mount_source(&outside, true).is_err());
        assert!(s.mount_source(&rw.join("link"), true).is_err());
        assert!(s.mount_source(&rw.join("../outside"), true).is_err());
        assert!(s.mount_source(Path::new("rw"), true).is_err());
        assert!(s.mount_source(&rw.join("missing"), true).is_err());
        // A link deeper down, and one answer whether or not the path exists.
        std::fs::create_dir(rw.join("sub")).expect("mkdir");
        std::os::unix::fs::symlink(&outside, rw.join("sub/deep")).expect("symlink");
        std::fs::create_dir(outside.join("x")).expect("mkdir");
        let missing = s
            .mount_source(&rw.join("nothing/here"), true)
            .expect_err("missing");
        let through_link = s
            .mount_source(&rw.join("sub/deep/x"), true)
            .expect_err("link");
        let beyond = s
            .mount_source(&outside.join("x"), true)
            .expect_err("outside");
        let text = |e: ServiceError, p: &Path| e.to_string().replace(&p.display().to_string(), "P");
        assert_eq!(
            text(missing, &rw.join("nothing/here")),
            text(through_link, &rw.join("sub/deep/x"))
        );
        assert_eq!(
            text(beyond, &outside.join("x")),
            text(
                s.mount_source(&rw.join("nothing/here"), true)
                    .expect_err("missing"),
                &rw.join("nothing/here")
            )
        );
        assert!(s.mount_source(&rw.join("sub"), false).is_ok());
    }

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
        let none = services(Vec::new(), Vec::new());
        let no_labels = BTreeMap::new();
        assert!(!none.allowed("systemd", "start", "nginx.service", &no_labels));
        let rule = AllowRule::parse_flag("systemd:start,stop:web-*.service").expect("rule");
        let s = services(vec![rule], Vec::new());
        assert!(s.allowed("systemd", "start", "web-a.service", &no_labels));
        assert!(!s.allowed("systemd", "restart", "web-a.service", &no_labels));
        assert!(!s.allowed("systemd", "start", "db.service", &no_labels));
        // A systemd rule says nothing about containers of the same name.
        assert!(!s.allowed("docker", "start", "web-a.service", &no_labels));
        for bad in [
            "systemd:start",
            "podman:*:x",
            "systemd:kill:x",
            "systemd:remove:x",
            "docker:reload:x",
            "systemd:start:",
            "systemd:start:label:a=b",
            "docker:start:label:novalue",
        ] {
            assert!(AllowRule::parse_flag(bad).is_err(), "{bad}");
        }
    }
}
