//! The Docker engine over its local socket (bollard; `DOCKER_HOST` honoured): containers as
//! services, their logs and stats, images, and running a container from a local image. Names
//! are checked before they reach a URL; nothing is ever pulled unless asked for.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axon_shared::{
    ContainerRun, ContainerStats, ImageInfo, LogLine, PortInfo, ServiceActed, ServiceEvent,
    ServiceInfo,
};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerStatsResponse, HostConfig, Mount, MountType, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters as q;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// How long one engine call may take; following calls are bounded by their callers.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most lines one log answer holds.
pub const MAX_LOG_LINES: u32 = 10_000;
const MAX_LINE_BYTES: usize = 16 * 1024;

/// A Docker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the Docker engine is not reachable: {0}")]
    Unavailable(String),
    #[error("container {0} not found")]
    NotFound(String),
    #[error("image {0} not found on this host")]
    NoImage(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the Docker engine refused: {0}")]
    Conflict(String),
    #[error("the Docker engine failed: {0}")]
    Failed(String),
    #[error("the Docker engine did not answer within {0} s")]
    Timeout(u64),
}

impl EngineError {
    fn from_bollard(e: bollard::errors::Error, what: &str) -> Self {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => match status_code {
                404 if message.contains("image") || message.contains("No such image") => {
                    Self::NoImage(what.to_owned())
                }
                404 => Self::NotFound(what.to_owned()),
                400 => Self::BadRequest(message),
                409 => Self::Conflict(message),
                _ => Self::Failed(format!("{status_code}: {message}")),
            },
            B::JsonDataError { message, .. } => Self::Failed(message),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// Capabilities every run drops.
pub const DROPPED_CAPABILITIES: &[&str] = &["MKNOD", "SETUID", "SETGID", "FSETID", "SETFCAP"];

/// A container name or id as Docker accepts them (also what keeps it a single URL segment).
pub fn check_name(name: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadRequest(format!(
            "{name:?} is not a container name: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}

/// An image reference: `name[:tag]` or `name@sha256:...`, registry and path included.
pub fn check_image(image: &str) -> Result<(), EngineError> {
    let ok = !image.is_empty()
        && image.len() <= 255
        && image.as_bytes()[0].is_ascii_alphanumeric()
        && !image.contains("..")
        && !image.contains("//")
        && image.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/' | b':' | b'@')
        });
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadRequest(format!(
            "{image:?} is not an image reference"
        )))
    }
}

async fn bounded<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, EngineError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r.map_err(|e| EngineError::from_bollard(e, what)),
        Err(_) => Err(EngineError::Timeout(CALL_TIMEOUT.as_secs())),
    }
}

/// The unit model's states for a Docker state: running is active, a non-zero exit or a dead
/// container is failed, everything else inactive.
fn active_state(state: &str, exit_code: Option<i64>) -> &'static str {
    match state {
        "running" | "restarting" | "paused" => "active",
        "dead" => "failed",
        "exited" if exit_code.is_some_and(|c| c != 0) => "failed",
        _ => "inactive",
    }
}

/// The exit code in a status line such as `Exited (137) 2 minutes ago`.
fn exit_code_of(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest.split(')').next()?.parse().ok()
}

fn labels(map: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    map.unwrap_or_default().into_iter().collect()
}

fn rfc3339_secs(text: &str) -> Option<u64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp()).ok().filter(|s| *s > 0)
}

/// The Docker engine.
pub struct DockerEngine {
    docker: Docker,
}

impl DockerEngine {
    /// Connects to the local engine (`DOCKER_HOST`, else `/var/run/docker.sock`) and agrees on
    /// an API version with it.
    pub async fn connect() -> Result<Self, EngineError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let docker = bounded("engine", docker.negotiate_version()).await?;
        bounded("engine", docker.ping()).await?;
        Ok(Self { docker })
    }

    /// Containers: running ones, or `all`.
    pub async fn list(&self, all: bool) -> Result<Vec<ServiceInfo>, EngineError> {
        let options = q::ListContainersOptionsBuilder::new().all(all).build();
        let listed = bounded("containers", self.docker.list_containers(Some(options))).await?;
        let mut out: Vec<ServiceInfo> = listed
            .into_iter()
            .map(|c| {
                let name = c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default();
                let state = c.state.map(|s| s.to_string()).unwrap_or_default();
                let status = c.status.unwrap_or_default();
                let exit = exit_code_of(&status);
                let image = c.image.unwrap_or_default();
                let mut info = ServiceInfo::new("docker", &name, &image);
                info.load_state = "loaded".into();
                info.active_state = active_state(&state, exit).into();
                info.sub_state = state;
                info.last_result = exit.map(|c| format!("exit {c}"));
                info.id = c.id;
                info.image = Some(image);
                info.status = Some(status);
                info.ports = c
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| PortInfo {
                        container_port: p.private_port,
                        protocol: p
                            .typ
                            .map(|t| t.to_string())
                            .filter(|t| !t.is_empty())
                            .unwrap_or_else(|| "tcp".into()),
                        host_port: p.public_port,
                        host_ip: p.ip.filter(|i| !i.is_empty()),
                    })
                    .collect();
                info.labels = labels(c.labels);
                info.created = c.created.and_then(|t| u64::try_from(t).ok());
                info
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One container in detail.
    pub async fn inspect(&self, name: &str) -> Result<ServiceInfo, EngineError> {
        check_name(name)?;
        let c = bounded(
            name,
            self.docker
                .inspect_container(name, None::<q::InspectContainerOptions>),
        )
        .await?;
        let state = c.state.unwrap_or_default();
        let sub = state.status.map(|s| s.to_string()).unwrap_or_default();
        let config = c.config.unwrap_or_default();
        let image = config.image.unwrap_or_default();
        let shown = c.name.unwrap_or_default();
        let mut info = ServiceInfo::new("docker", shown.trim_start_matches('/'), &image);
        info.load_state = "loaded".into();
        let running = state.running.unwrap_or(false);
        info.active_state =
            active_state(&sub, (!running).then_some(state.exit_code).flatten()).to_owned();
        info.sub_state = sub;
        info.main_pid = state
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        info.active_since = state.started_at.as_deref().and_then(rfc3339_secs);
        info.last_result = (!running)
            .then_some(state.exit_code)
            .flatten()
            .map(|c| format!("exit {c}"));
        info.id = c.id;
        info.image = Some(image);
        if let Some(error) = state.error.filter(|e| !e.is_empty()) {
            info.last_result = Some(format!("error: {error}"));
        }
        info.labels = labels(config.labels);
        info.created = c.created.as_deref().and_then(rfc3339_secs);
        info.ports = c
            .network_settings
            .and_then(|n| n.ports)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(key, bindings)| {
                let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
                let port: u16 = port.parse().unwrap_or(0);
                let proto = proto.to_owned();
                let bindings = bindings.unwrap_or_default();
                if bindings.is_empty() {
                    return vec![PortInfo {
                        container_port: port,
                        protocol: proto,
                        host_port: None,
                        host_ip: None,
                    }];
                }
                bindings
                    .into_iter()
                    .map(|b| PortInfo {
                        container_port: port,
                        protocol: proto.clone(),
                        host_port: b.host_port.and_then(|p| p.parse().ok()),
                        host_ip: b.host_ip.filter(|i| !i.is_empty()),
                    })
                    .collect()
            })
            .collect();
        info.ports.sort_by_key(|p| (p.container_port, p.host_port));
        Ok(info)
    }

    /// start / stop / restart / remove. Starting a running container or stopping a stopped
    /// one is done, as with systemd.
    /// `id` is the container's id as inspected (so a container replaced under the same name
    /// meanwhile is not touched); `name` is how the answer names it.
    pub async fn act(
        &self,
        id: &str,
        name: &str,
        action: &str,
        force: bool,
    ) -> Result<ServiceActed, EngineError> {
        check_name(id)?;
        let outcome = match action {
            "start" => {
                bounded(
                    name,
                    self.docker
                        .start_container(id, None::<q::StartContainerOptions>),
                )
                .await
            }
            "stop" => {
                let options = q::StopContainerOptionsBuilder::new().t(10).build();
                bounded(name, self.docker.stop_container(id, Some(options))).await
            }
            "restart" => {
                let options = q::RestartContainerOptionsBuilder::new().t(10).build();
                bounded(name, self.docker.restart_container(id, Some(options))).await
            }
            "remove" => {
                let options = q::RemoveContainerOptionsBuilder::new()
                    .force(force)
                    .v(true)
                    .build();
                bounded(name, self.docker.remove_container(id, Some(options))).await
            }
            other => {
                return Err(EngineError::BadRequest(format!(
                    "{other} is not an action on containers"
                )));
            }
        };
        // 304: already started / already stopped.
        match outcome {
            Ok(()) => {}
            Err(EngineError::Failed(m)) if m.starts_with("304") => {}
            Err(e) => return Err(e),
        }
        if action == "remove" {
            return Ok(ServiceActed {
                kind: "docker".into(),
                name: name.to_owned(),
                action: action.to_owned(),
                job_result: "done".into(),
                active_state: "inactive".into(),
                sub_state: "removed".into(),
            });
        }
        let after = self.inspect(id).await?;
        Ok(ServiceActed {
            kind: "docker".into(),
            name: name.to_owned(),
            action: action.to_owned(),
            job_result: "done".into(),
            active_state: after.active_state,
            sub_state: after.sub_state,
        })
    }

    /// The last `lines` lines; with `live`, then every new line until `until` or the
    /// receiver goes away.
    pub async fn logs(
        &self,
        name: &str,
        lines: u32,
        live: Option<(mpsc::Sender<LogLine>, tokio::time::Instant)>,
    ) -> Result<(Vec<LogLine>, bool), EngineError> {
        check_name(name)?;
        // Fails clearly for a missing container before any stream starts.
        self.inspect(name).await?;
        let tail = lines.min(MAX_LOG_LINES).to_string();
        // Taken before the tail is read: a line written meanwhile is followed, not lost (the
        // engine's `since` is in whole seconds; lines of the tail that come again are skipped).
        let since = i32::try_from(crate::clock::unix_ms() / 1000).unwrap_or(i32::MAX);
        let options = q::LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .tail(&tail)
            .build();
        let mut stream = self.docker.logs(name, Some(options));
        let mut out = Vec::new();
        let read_all = async {
            while let Some(item) = stream.next().await {
                out.push(log_line(
                    item.map_err(|e| EngineError::from_bollard(e, name))?,
                ));
            }
            Ok::<_, EngineError>(())
        };
        tokio::time::timeout(CALL_TIMEOUT, read_all)
            .await
            .map_err(|_| EngineError::Timeout(CALL_TIMEOUT.as_secs()))??;
        let truncated = crate::loglines::trim_to_budget(&mut out);
        if let Some((tx, until)) = live {
            // Lines up to the tail's last moment come again from `since`: skip them.
            let last_ts = out.last().and_then(|l| l.ts_ms).unwrap_or(0);
            let at_last: std::collections::HashSet<String> = out
                .iter()
                .filter(|l| l.ts_ms == Some(last_ts))
                .map(|l| l.message.clone())
                .collect();
            // The tail goes first, then what follows.
            for line in std::mem::take(&mut out) {
                if tx.send(line).await.is_err() {
                    return Ok((Vec::new(), truncated));
                }
            }
            let options = q::LogsOptionsBuilder::new()
                .stdout(true)
                .stderr(true)
                .timestamps(true)
                .follow(true)
                .since(since)
                .build();
            let mut stream = self.docker.logs(name, Some(options));
            loop {
                tokio::select! {
                    item = stream.next() => match item {
                        Some(Ok(piece)) => {
                            let line = log_line(piece);
                            let ts = line.ts_ms.unwrap_or(u64::MAX);
                            let repeat = ts < last_ts || (ts == last_ts && at_last.contains(&line.message));
                            if !repeat && tx.send(line).await.is_err() {
                                break;
                            }
                        }
                        _ => break,
                    },
                    _ = tokio::time::sleep_until(until) => break,
                    _ = tx.closed() => break,
                }
            }
        }
        Ok((out, truncated))
    }

    /// One resource sample (the engine takes about a second to measure CPU use).
    pub async fn stats(&self, name: &str) -> Result<ContainerStats, EngineError> {
        check_name(name)?;
        self.inspect(name).await?;
        let options = q::StatsOptionsBuilder::new().stream(false).build();
        let mut stream = self.docker.stats(name, Some(options));
        let sample = tokio::time::timeout(CALL_TIMEOUT, stream.next())
            .await
            .map_err(|_| EngineError::Timeout(CALL_TIMEOUT.as_secs()))?
            .ok_or_else(|| EngineError::Failed("no stats sample".into()))?
            .map_err(|e| EngineError::from_bollard(e, name))?;
        Ok(to_stats(name, &sample))
    }

    /// A sample about every second until `until` or the receiver goes away.
    pub async fn stats_stream(
        &self,
        name: &str,
        tx: mpsc::Sender<ContainerStats>,
        until: tokio::time::Instant,
    ) -> Result<(), EngineError> {
        check_name(name)?;
        self.inspect(name).await?;
        let options = q::StatsOptionsBuilder::new().stream(true).build();
        let mut stream = self.docker.stats(name, Some(options));
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(sample)) => {
                        if tx.send(to_stats(name, &sample)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(Err(e)) => return Err(EngineError::from_bollard(e, name)),
                    None => return Ok(()),
                },
                _ = tokio::time::sleep_until(until) => return Ok(()),
                _ = tx.closed() => return Ok(()),
            }
        }
    }

    /// Images on the host.
    pub async fn images(&self) -> Result<Vec<ImageInfo>, EngineError> {
        let listed = bounded(
            "images",
            self.docker
                .list_images(Some(q::ListImagesOptionsBuilder::new().build())),
        )
        .await?;
        let mut out: Vec<ImageInfo> = listed
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                size_bytes: u64::try_from(i.size).unwrap_or(0),
                created: u64::try_from(i.created).unwrap_or(0),
                labels: i.labels.into_iter().collect(),
            })
            .collect();
        out.sort_by(|a, b| a.tags.cmp(&b.tags).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Pulls an image from its registry (only ever on request).
    pub async fn pull(&self, image: &str, within: Duration) -> Result<ImageInfo, EngineError> {
        check_image(image)?;
        let (from, tag) = split_tag(image);
        let mut options = q::CreateImageOptionsBuilder::new().from_image(from);
        if let Some(tag) = tag {
            options = options.tag(tag);
        }
        let mut stream = self.docker.create_image(Some(options.build()), None, None);
        let pulling = async {
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| EngineError::from_bollard(e, image))?;
                if let Some(error) = info.error_detail.and_then(|d| d.message) {
                    return Err(EngineError::Failed(error));
                }
            }
            Ok(())
        };
        tokio::time::timeout(within, pulling)
            .await
            .map_err(|_| EngineError::Timeout(within.as_secs()))?
            .map_err(|e| match e {
                EngineError::NotFound(_) => EngineError::NoImage(image.to_owned()),
                other => other,
            })?;
        let inspected = bounded(image, self.docker.inspect_image(image)).await?;
        Ok(ImageInfo {
            id: inspected.id.unwrap_or_default(),
            tags: inspected.repo_tags.unwrap_or_default(),
            size_bytes: inspected
                .size
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0),
            created: inspected
                .created
                .as_deref()
                .and_then(rfc3339_secs)
                .unwrap_or(0),
            labels: labels(inspected.config.and_then(|c| c.labels)),
        })
    }

    /// Creates and starts a container from a local image. `mounts` are already checked
    /// against the host's roots.
    pub async fn run(
        &self,
        spec: &ContainerRun,
        mounts: Vec<(String, String, bool)>,
    ) -> Result<ServiceInfo, EngineError> {
        check_name(&spec.name)?;
        check_image(&spec.image)?;
        // Only local images: a run never pulls.
        if let Err(e) = bounded(&spec.image, self.docker.inspect_image(&spec.image)).await {
            return Err(match e {
                EngineError::NotFound(_) | EngineError::NoImage(_) => {
                    EngineError::NoImage(spec.image.clone())
                }
                other => other,
            });
        }
        let body = create_body(spec, mounts)?;
        let options = q::CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        bounded(
            &spec.name,
            self.docker.create_container(Some(options), body),
        )
        .await?;
        let started = bounded(
            &spec.name,
            self.docker
                .start_container(&spec.name, None::<q::StartContainerOptions>),
        )
        .await;
        if let Err(e) = started {
            // Leave nothing half made behind.
            let options = q::RemoveContainerOptionsBuilder::new().force(true).build();
            let _ = self
                .docker
                .remove_container(&spec.name, Some(options))
                .await;
            return Err(e);
        }
        self.inspect(&spec.name).await
    }

    /// Container events until the engine's stream ends.
    pub async fn follow_events(&self, tx: &tokio::sync::broadcast::Sender<ServiceEvent>) {
        let mut filters = HashMap::new();
        filters.insert("type", vec!["container"]);
        let options = q::EventsOptionsBuilder::new().filters(&filters).build();
        let mut stream = self.docker.events(Some(options));
        while let Some(Ok(event)) = stream.next().await {
            let Some(action) = event.action else { continue };
            // exec_*, health_status, top and attach events are noise for a service view.
            let action = action.split(':').next().unwrap_or_default().to_owned();
            if action.starts_with("exec_")
                || matches!(
                    action.as_str(),
                    "top" | "attach" | "health_status" | "resize"
                )
            {
                continue;
            }
            let attrs = event.actor.and_then(|a| a.attributes).unwrap_or_default();
            let name = attrs.get("name").cloned().unwrap_or_default();
            let (active, sub) = match action.as_str() {
                "start" | "restart" | "unpause" => ("active", "running"),
                "die" => {
                    let code = attrs.get("exitCode").and_then(|c| c.parse::<i64>().ok());
                    (active_state("exited", code), "exited")
                }
                "stop" => ("inactive", "exited"),
                // A signal need not stop it: the state is left to the `die` that may follow.
                "pause" => ("active", "paused"),
                "create" => ("inactive", "created"),
                "destroy" => ("inactive", "removed"),
                _ => ("", ""),
            };
            let _ = tx.send(ServiceEvent {
                kind: "docker".into(),
                name,
                job_result: None,
                active_state: (!active.is_empty()).then(|| active.to_owned()),
                sub_state: (!sub.is_empty()).then(|| sub.to_owned()),
                action: Some(action),
            });
        }
    }
}

fn split_tag(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    match image.rsplit_once(':') {
        // A colon inside the last path segment is a tag; before it, a registry port.
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (image, None),
    }
}

fn log_line(piece: bollard::container::LogOutput) -> LogLine {
    use bollard::container::LogOutput as L;
    let (stream, bytes) = match piece {
        L::StdErr { message } => ("stderr", message),
        L::StdOut { message } | L::Console { message } => ("stdout", message),
        L::StdIn { message } => ("stdin", message),
    };
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_LINE_BYTES)]).into_owned();
    let text = text.trim_end_matches(['\n', '\r']);
    // With timestamps, each line starts with an RFC 3339 time and a space.
    let (ts_ms, message) = match text.split_once(' ') {
        Some((ts, rest)) => {
            match time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339) {
                Ok(t) => (
                    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok(),
                    rest,
                ),
                Err(_) => (None, text),
            }
        }
        None => (None, text),
    };
    LogLine {
        ts_ms,
        stream: Some(stream.to_owned()),
        priority: None,
        message: message.to_owned(),
    }
}

fn to_stats(name: &str, s: &ContainerStatsResponse) -> ContainerStats {
    let cpu = s.cpu_stats.clone().unwrap_or_default();
    let pre = s.precpu_stats.clone().unwrap_or_default();
    let total = |c: &bollard::models::ContainerCpuStats| {
        c.cpu_usage
            .as_ref()
            .and_then(|u| u.total_usage)
            .unwrap_or(0)
    };
    let cpu_delta = total(&cpu).saturating_sub(total(&pre)) as f64;
    let system_delta = cpu
        .system_cpu_usage
        .unwrap_or(0)
        .saturating_sub(pre.system_cpu_usage.unwrap_or(0)) as f64;
    let cpus = f64::from(cpu.online_cpus.unwrap_or(1).max(1));
    let cpu_percent = if system_delta > 0.0 {
        cpu_delta / system_delta * cpus * 100.0
    } else {
        0.0
    };
    let memory = s.memory_stats.clone().unwrap_or_default();
    // As `docker stats` shows it: usage less the page cache.
    let cache = memory
        .stats
        .as_ref()
        .and_then(|m| m.get("inactive_file").or_else(|| m.get("cache")).copied())
        .unwrap_or(0);
    let (mut rx, mut tx) = (0, 0);
    for n in s.networks.as_ref().into_iter().flat_map(|n| n.values()) {
        rx += n.rx_bytes.unwrap_or(0);
        tx += n.tx_bytes.unwrap_or(0);
    }
    let (mut read, mut write) = (0, 0);
    for entry in s
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref())
        .into_iter()
        .flatten()
    {
        match entry.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => read += entry.value.unwrap_or(0),
            Some("write") => write += entry.value.unwrap_or(0),
            _ => {}
        }
    }
    ContainerStats {
        name: name.to_owned(),
        ts_ms: crate::clock::unix_ms(),
        cpu_percent: (cpu_percent * 100.0).round() / 100.0,
        memory_bytes: memory.usage.unwrap_or(0).saturating_sub(cache),
        memory_limit_bytes: memory.limit.filter(|l| *l > 0 && *l < u64::MAX / 2),
        net_rx_bytes: rx,
        net_tx_bytes: tx,
        block_read_bytes: read,
        block_write_bytes: write,
        pids: s.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0),
    }
}

fn check_key(key: &str, what: &str) -> Result<(), EngineError> {
    let ok = !key.is_empty()
        && key.len() <= 256
        && !key.as_bytes()[0].is_ascii_digit()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadRequest(format!(
            "{what} {key:?} is not allowed"
        )))
    }
}

fn check_value(value: &str, what: &str) -> Result<(), EngineError> {
    if value.len() > 4096 || value.contains('\0') {
        return Err(EngineError::BadRequest(format!(
            "{what} values are at most 4096 bytes, with no NUL"
        )));
    }
    Ok(())
}

/// The engine's create body for a run: only what [`ContainerRun`] names, so nothing
/// privileged (host network, devices, capabilities) can be asked for.
fn create_body(
    spec: &ContainerRun,
    mounts: Vec<(String, String, bool)>,
) -> Result<ContainerCreateBody, EngineError> {
    if spec.cmd.len() > 64 || spec.env.len() > 128 || spec.labels.len() > 64 {
        return Err(EngineError::BadRequest(
            "at most 64 command words, 128 environment variables and 64 labels".into(),
        ));
    }
    if spec.ports.len() > 32 || mounts.len() > 16 {
        return Err(EngineError::BadRequest(
            "at most 32 ports and 16 mounts".into(),
        ));
    }
    for word in &spec.cmd {
        check_value(word, "command")?;
    }
    for (k, v) in &spec.env {
        if k.contains(['.', '/', '-']) {
            return Err(EngineError::BadRequest(format!(
                "environment variable {k:?} is not allowed"
            )));
        }
        check_key(k, "environment variable")?;
        check_value(v, "environment")?;
    }
    for (k, v) in &spec.labels {
        check_key(k, "label")?;
        check_value(v, "label")?;
    }
    let restart = match spec.restart.as_deref().unwrap_or("no") {
        "no" => None,
        "always" => Some((RestartPolicyNameEnum::ALWAYS, None)),
        "unless-stopped" => Some((RestartPolicyNameEnum::UNLESS_STOPPED, None)),
        "on-failure" => Some((RestartPolicyNameEnum::ON_FAILURE, None)),
        other => match other.strip_prefix("on-failure:").map(str::parse::<u16>) {
            Some(Ok(n)) => Some((RestartPolicyNameEnum::ON_FAILURE, Some(i64::from(n)))),
            _ => {
                return Err(EngineError::BadRequest(format!(
                    "restart {other:?}: use no, always, unless-stopped, on-failure or on-failure:N"
                )));
            }
        },
    };
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &spec.ports {
        let proto = p.protocol.as_deref().unwrap_or("tcp");
        if !matches!(proto, "tcp" | "udp") || p.container_port == 0 {
            return Err(EngineError::BadRequest(format!(
                "port {}/{proto}: use a port above 0 and tcp or udp",
                p.container_port
            )));
        }
        let ip = p.host_ip.as_deref().unwrap_or("127.0.0.1");
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(EngineError::BadRequest(format!(
                "host_ip {ip:?} is not an IP address"
            )));
        }
        let key = format!("{}/{proto}", p.container_port);
        exposed.push(key.clone());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(ip.to_owned()),
                host_port: Some(p.host_port.map(|h| h.to_string()).unwrap_or_default()),
            });
    }
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            restart_policy: restart.map(|(name, n)| RestartPolicy {
                name: Some(name),
                maximum_retry_count: n,
            }),
            mounts: Some(
                mounts
                    .into_iter()
                    .map(|(source, target, read_only)| Mount {
                        typ: Some(MountType::BIND),
                        source: Some(source),
                        target: Some(target),
                        read_only: Some(read_only),
                        ..Mount::default()
                    })
                    .collect(),
            ),
            // A container may write into a jail root on the host: it must not plant device
            // nodes or setuid files there, nor gain privileges through them.
            cap_drop: Some(
                DROPPED_CAPABILITIES
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect(),
            ),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_one_url_segment() {
        for good in ["web", "axon-test-1", "a.b_c", "0abc"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "a?b",
            "-x",
            ".x",
            "a b",
            "a%2fb",
            &"x".repeat(129),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_image("registry:5000/team/app:1.2").is_ok());
        assert!(check_image("app@sha256:abc").is_ok());
        for bad in ["", "../etc", "a b", "a?x", "a//b", "-x"] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
        assert_eq!(
            split_tag("registry:5000/app:1"),
            ("registry:5000/app", Some("1"))
        );
        assert_eq!(split_tag("registry:5000/app"), ("registry:5000/app", None));
    }

    #[test]
    fn states_map_to_the_unit_model() {
        assert_eq!(active_state("running", None), "active");
        assert_eq!(active_state("exited", Some(0)), "inactive");
        assert_eq!(active_state("exited", Some(2)), "failed");
        assert_eq!(exit_code_of("Exited (137) 2 minutes ago"), Some(137));
        assert_eq!(exit_code_of("Up 2 minutes"), None);
    }

    #[test]
    fn run_bodies_refuse_what_they_cannot_express_safely() {
        let mut spec = ContainerRun {
            name: "x".into(),
            image: "img".into(),
            ..ContainerRun::default()
        };
        spec.env.insert("BAD-KEY".into(), "v".into());
        assert!(create_body(&spec, Vec::new()).is_err());
        spec.env.clear();
        spec.restart = Some("sometimes".into());
        assert!(create_body(&spec, Vec::new()).is_err());
        spec.restart = Some("on-failure:3".into());
        spec.ports.push(axon_shared::PortSpec {
            container_port: 80,
            protocol: None,
            host_port: None,
            host_ip: None,
        });
        let body = create_body(&spec, Vec::new()).expect("body");
        let bindings = body
            .host_config
            .and_then(|h| h.port_bindings)
            .expect("ports");
        // Published on loopback unless the caller says otherwise.
        assert_eq!(
            bindings["80/tcp"].as_ref().expect("binding")[0]
                .host_ip
                .as_deref(),
            Some("127.0.0.1")
        );
    }
}
