//! Typed bodies of the operations and of the enrollment API.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Operation names.
pub mod op {
    /// Agent → control plane, first frame: [`super::Hello`], answered by [`super::Welcome`].
    pub const HELLO: &str = "hello";
    /// Control plane → agent: a round trip, answered by [`super::Pong`].
    pub const PING: &str = "ping";
    /// Agent → control plane: [`super::CertRenew`], answered by [`super::CertRenewed`].
    pub const CERT_RENEW: &str = "cert.renew";
    /// Control plane → agent: no body, answered by a list of [`super::CommandInfo`].
    pub const EXEC_LIST: &str = "exec.list";
    /// Control plane → agent: [`super::ExecRun`], answered by [`super::ExecResult`].
    pub const EXEC_RUN: &str = "exec.run";
    /// Control plane → agent, all with an [`super::FsOp`] body: the file jail's verbs.
    /// `fs.list` → [`super::FsListing`]; `fs.stat` → [`super::FsEntry`]; `fs.read` →
    /// [`super::FsContent`]; `fs.write` → [`super::FsEntry`]; the rest → [`super::FsEntry`] of
    /// the result (or `null` for delete).
    pub const FS_LIST: &str = "fs.list";
    pub const FS_STAT: &str = "fs.stat";
    pub const FS_READ: &str = "fs.read";
    pub const FS_WRITE: &str = "fs.write";
    pub const FS_MKDIR: &str = "fs.mkdir";
    pub const FS_RENAME: &str = "fs.rename";
    pub const FS_DELETE: &str = "fs.delete";
    pub const FS_CHMOD: &str = "fs.chmod";
    /// Control plane → agent: [`super::ServiceOp`]; answered by a list of [`super::ServiceInfo`].
    pub const SERVICE_LIST: &str = "service.list";
    /// Control plane → agent: [`super::ServiceOp`]; answered by one [`super::ServiceInfo`].
    pub const SERVICE_GET: &str = "service.get";
    /// Control plane → agent: [`super::ServiceOp`] with an action; answered by
    /// [`super::ServiceActed`].
    pub const SERVICE_ACT: &str = "service.act";
    /// Control plane → agent: [`super::ServiceOp`] with `lines` / `follow`; answered by
    /// [`super::ServiceLogs`]. With `follow`, new lines come first as `log` chunks.
    pub const SERVICE_LOGS: &str = "service.logs";
    /// Control plane → agent: [`super::ServiceOp`] (Docker); answered by one
    /// [`super::ContainerStats`]. With `follow`, samples come first as `stats` chunks.
    pub const SERVICE_STATS: &str = "service.stats";
    /// Control plane → agent: [`super::ContainerRun`]; answered by the new container's
    /// [`super::ServiceInfo`].
    pub const CONTAINER_RUN: &str = "container.run";
    /// Control plane → agent: no body; answered by a list of [`super::ImageInfo`].
    pub const IMAGE_LIST: &str = "image.list";
    /// Control plane → agent: [`super::ImagePull`]; answered by the pulled [`super::ImageInfo`].
    pub const IMAGE_PULL: &str = "image.pull";
    /// Control plane → agent: [`super::Cancel`]; stops a following request (logs, stats).
    pub const CANCEL: &str = "request.cancel";
    /// Control plane → agent: [`super::EventAck`]; every event up to `seq` is stored.
    pub const EVENT_ACK: &str = "event.ack";
    /// Control plane → agent: [`super::LlmForward`]; answered by [`super::LlmForwarded`] as
    /// soon as the model server's status and headers are in, then its body follows as chunks
    /// of the same id (see [`super::stream`]), flow-controlled by `stream.ack`.
    pub const LLM_FORWARD: &str = "llm.forward";
    /// Control plane → agent: [`super::StreamAck`]. A notification: the agent sends no answer.
    pub const STREAM_ACK: &str = "stream.ack";
}

/// The `stream` names of an `llm.forward` answer's chunks.
pub mod stream {
    /// A piece of the model server's body.
    pub const BODY: &str = "body";
    /// The final chunk of a body that failed midway; `data` says why.
    pub const ERROR: &str = "error";
}

/// Event topics.
pub mod topic {
    /// An [`super::AuditRecord`] of the agent's own trail.
    pub const AUDIT: &str = "audit";
    /// A change in a jail root: `{"path": "<root>/<rel>", "kind": "create|modify|remove|rename|other|overflow"}`.
    /// Live only, not replayed.
    pub const WATCH: &str = "watch";
    /// A service changed: a [`super::ServiceEvent`]. Live only, not replayed.
    pub const SERVICE: &str = "service";
    /// A [`crate::MetricsSample`] of the host, at the agent's interval. Live only.
    pub const METRICS: &str = "metrics";
    /// The host's [`crate::ModelServers`] changed (also sent once per connection).
    pub const MODELS: &str = "models";
    /// The host's [`super::Capabilities`] changed (a bus or engine appeared or went away).
    /// Live only; the hello of the next connection carries them too.
    pub const CAPABILITIES: &str = "capabilities";
}

/// Acknowledges every event with a sequence number up to `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventAck {
    pub seq: u64,
}

/// One record of the agent's tamper-evident audit trail (a line of its JSONL file, and the
/// body of an `audit` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Per-agent sequence number, from 1, no gaps.
    pub seq: u64,
    /// RFC 3339 UTC.
    pub time: String,
    /// e.g. `exec.run`, `fs.write`, `agent.start`.
    pub action: String,
    /// `ok`, `denied` or `error`.
    pub outcome: String,
    /// What it was about: a command name, a jail path.
    pub target: String,
    /// Who asked, as the control plane said.
    #[serde(default)]
    pub requested_by: Requester,
    /// A short human detail (exit code, reason of a refusal).
    #[serde(default)]
    pub detail: String,
    /// SHA-256 (hex) of the previous record's line; zeros for the first record.
    pub prev_hash: String,
    /// SHA-256 (hex) of this record serialised with `hash` empty.
    pub hash: String,
}

/// A file-jail operation: `path` is `<root name>/<relative path>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsOp {
    pub path: String,
    /// Destination of `fs.rename`, in the same root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// First byte of `fs.read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Bytes wanted by `fs.read` (capped by the agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// New content of `fs.write`, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_b64: Option<String>,
    /// `fs.write` only succeeds if the current content has this etag (or `*`: any, or
    /// `none`: the file must not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_match: Option<String>,
    /// Permission bits for `fs.chmod` (setuid, setgid and sticky are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// `fs.delete` of a non-empty directory, `fs.mkdir` of missing parents.
    #[serde(default)]
    pub recursive: bool,
    #[serde(default)]
    pub requested_by: Requester,
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FsKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One file or directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FsEntry {
    /// Path as addressed, `<root>/<relative>`.
    pub path: String,
    pub kind: FsKind,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Last modification, seconds since the Unix epoch.
    pub modified: i64,
    /// SHA-256 of the content (files only, when returned by read or write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// A directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsListing {
    pub path: String,
    pub entries: Vec<FsEntry>,
    /// More entries exist than the agent returns in one listing.
    pub truncated: bool,
}

/// A range of a file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsContent {
    pub entry: FsEntry,
    pub offset: u64,
    /// The bytes, base64.
    pub content_b64: String,
}

/// Who asked for an operation, carried to the agent for its audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requester {
    /// User or API key id.
    pub actor: String,
    /// The caller's role, e.g. `operator`.
    pub role: String,
    /// The caller's tenant, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Address the API request came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// Id of the API request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Runs a whitelisted command by name with typed parameters (never raw argv).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRun {
    /// Name of a command in the host's whitelist.
    pub command: String,
    /// Values for the command's parameter slots.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, serde_json::Value>,
    /// Who asked.
    #[serde(default)]
    pub requested_by: Requester,
    /// Also send the output as `chunk` frames while the command runs (omitted when false, so
    /// agents that predate it still accept the request).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// How a whitelisted command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecResult {
    /// Exit status, when the process exited on its own.
    pub exit_code: Option<i32>,
    /// Signal that ended the process, when it was killed.
    pub signal: Option<i32>,
    /// Standard output up to the cap (UTF-8, invalid bytes replaced).
    pub stdout: String,
    /// Standard error up to the cap.
    pub stderr: String,
    /// Output beyond the cap was dropped (and the command stopped).
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The command ran past its timeout and its process group was killed.
    pub timed_out: bool,
    /// Wall time from spawn to exit.
    pub duration_ms: u64,
}

/// A parameter slot of a whitelisted command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ParamSchema {
    /// One of a fixed list of strings.
    Enum { values: Vec<String> },
    /// An integer in `[min, max]`.
    Integer { min: i64, max: i64 },
    /// A string matching `pattern` (anchored) of at most `max_len` bytes, never starting
    /// with `-` and without control characters.
    String { pattern: String, max_len: usize },
    /// A systemd unit name, checked by systemd's own rules.
    Unit,
}

/// A whitelisted command as the host describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandInfo {
    pub name: String,
    pub description: String,
    /// Parameter slots by name.
    pub params: std::collections::BTreeMap<String, ParamSchema>,
    pub timeout_ms: u64,
    /// Bytes kept of each of stdout and stderr.
    pub output_cap: usize,
    /// The binary exists on the host.
    pub available: bool,
}

/// The agent's introduction, sent as the first request on every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Protocol version the agent speaks.
    pub protocol: u32,
    /// agentd's version (semver).
    pub agent_version: String,
    /// Facts about the host.
    pub host: HostFacts,
    /// What the agent found on the host at start.
    pub capabilities: Capabilities,
}

/// Facts about a host, gathered by the agent at start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostFacts {
    /// Hostname as the kernel reports it.
    pub hostname: String,
    /// Distribution name, e.g. `Debian GNU/Linux`.
    pub os: String,
    /// Distribution version, e.g. `12`.
    pub os_version: String,
    /// Kernel release, e.g. `6.1.0-18-amd64`.
    pub kernel: String,
    /// CPU architecture, e.g. `x86_64`.
    pub arch: String,
    /// Number of logical CPUs.
    pub cpus: u32,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Boot time, seconds since the Unix epoch.
    pub boot_time: u64,
}

/// What the agent detected on its host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// systemd answered on the system bus.
    pub systemd: bool,
    /// The Docker engine answered on its socket.
    pub docker: bool,
    /// NVML loaded and initialised.
    pub nvml: bool,
    /// An `nvidia-smi` binary is present.
    pub nvidia_smi: bool,
    /// Something listens on Ollama's port (127.0.0.1:11434).
    pub ollama: bool,
    /// Something listens on the Stable Diffusion web UI's port (127.0.0.1:7860).
    pub sdxl: bool,
}

/// The control plane's acceptance of a hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// Protocol version the control plane will speak on this connection.
    pub protocol: u32,
    /// The host id, as named in the agent's certificate.
    pub host_id: String,
    /// The control plane's version.
    pub server_version: String,
    /// Seconds between liveness pings; a peer silent for three intervals is gone.
    pub ping_interval_secs: u64,
    /// Largest frame the control plane accepts, in bytes.
    pub max_frame_bytes: usize,
}

/// Answer to `ping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pong {
    /// The agent's clock when it answered, milliseconds since the Unix epoch.
    pub agent_time_ms: u64,
}

/// The agent asks for a fresh certificate for the key it already holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRenew {
    /// PKCS#10 request in PEM, signed by the agent's key.
    pub csr_pem: String,
}

/// A newly issued agent certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRenewed {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: u64,
}

/// `POST /api/enroll` body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The enrollment token, as the admin received it.
    pub token: String,
    /// PKCS#10 request in PEM, made on the host; the private key never leaves it.
    pub csr_pem: String,
    /// The host's name, for the registry.
    pub hostname: String,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("token", &"<redacted>")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// `POST /api/enroll` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollResponse {
    /// The id the host is known by.
    pub host_id: String,
    /// The host's certificate, PEM.
    pub cert_pem: String,
    /// The control plane's CA certificate, PEM; its SHA-256 must match the token's.
    pub ca_pem: String,
    /// Where the agent dials: `wss://host:port/agent/v1`.
    pub agent_url: String,
    /// End of the certificate's validity, seconds since the Unix epoch.
    pub not_after: u64,
}

/// A service request: `kind` is `systemd` or `docker`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOp {
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// For `service.act`: `start`, `stop`, `restart`, `reload`, `enable`, `disable` (systemd);
    /// `start`, `stop`, `restart`, `remove` (docker).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// `service.list` of Docker: stopped containers too.
    #[serde(default, skip_serializing_if = "is_false")]
    pub all: bool,
    /// `service.act` remove: also a running container.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
    /// `service.logs`: the last N lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u32>,
    /// `service.logs` / `service.stats`: keep sending as chunks until cancelled or
    /// `follow_secs` pass.
    #[serde(default, skip_serializing_if = "is_false")]
    pub follow: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_secs: Option<u32>,
    #[serde(default)]
    pub requested_by: Requester,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A published port of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortInfo {
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// One service: a systemd unit or a Docker container. Containers map to the unit model as
/// `active_state` active (running), failed (exited non-zero, dead) or inactive, with Docker's
/// own state in `sub_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceInfo {
    pub kind: String,
    pub name: String,
    /// The unit's description; a container's image.
    pub description: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// systemd: `enabled`, `disabled`, `static`, ... where the unit has a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_file_state: Option<String>,
    /// Details of one service (absent in listings): main process id (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_pid: Option<u32>,
    /// Memory in use, bytes, where systemd accounts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU time used, nanoseconds, where systemd accounts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_nsec: Option<u64>,
    /// When the unit last became active, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_since: Option<u64>,
    /// The result of the last run: `success`, `exit-code`, `signal`, `timeout`, ... (systemd);
    /// `exit <code>` (docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    /// Docker: the container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Docker: the image the container runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Docker: its status line, e.g. `Up 3 minutes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortInfo>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Docker: when the container was created, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// The actions the host's rules allow on this service (`start`, `stop`, ...); the
    /// caller's role decides too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_actions: Vec<String>,
}

/// Every action on a service, in the order a console offers them.
pub const SERVICE_ACTIONS: [&str; 7] = [
    "start", "stop", "restart", "reload", "enable", "disable", "remove",
];

impl ServiceInfo {
    /// A service with its names and states; every optional field empty.
    pub fn new(kind: &str, name: &str, description: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            name: name.to_owned(),
            description: description.to_owned(),
            load_state: String::new(),
            active_state: String::new(),
            sub_state: String::new(),
            unit_file_state: None,
            main_pid: None,
            memory_bytes: None,
            cpu_nsec: None,
            active_since: None,
            last_result: None,
            id: None,
            image: None,
            status: None,
            ports: Vec::new(),
            labels: Default::default(),
            created: None,
            allowed_actions: Vec::new(),
        }
    }
}

/// How a service action ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceActed {
    pub kind: String,
    pub name: String,
    pub action: String,
    /// systemd's job result: `done`, `failed`, `canceled`, `timeout`, `dependency`, `skipped`;
    /// `done` for Docker actions the engine carried out.
    pub job_result: String,
    pub active_state: String,
    pub sub_state: String,
}

/// A service changed state: a systemd job finished or a unit's state moved on its own, or a
/// Docker container event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEvent {
    pub kind: String,
    pub name: String,
    /// systemd: the finished job's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_state: Option<String>,
    /// Docker: the event's action (`create`, `start`, `die`, `stop`, `destroy`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    /// When it was written, milliseconds since the Unix epoch, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<u64>,
    /// `stdout` or `stderr` (docker); absent for the journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// syslog priority 0–7 (journal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// The text; bytes that are not UTF-8 show as U+FFFD.
    pub message: String,
}

/// The last lines of a service's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceLogs {
    pub kind: String,
    pub name: String,
    pub lines: Vec<LogLine>,
    /// Older lines were left out to keep the answer within its size limit.
    #[serde(default)]
    pub truncated: bool,
}

/// One resource sample of a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerStats {
    pub name: String,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// CPU use since the previous sample, percent of one CPU (200 = two CPUs busy).
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub pids: u64,
}

/// A bind mount for [`ContainerRun`]: `source` must lie in one of the host's file roots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    /// Absolute host path.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A port to publish for [`ContainerRun`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub container_port: u16,
    /// `tcp` (default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Absent: the engine picks a free port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// Default `127.0.0.1`: publishing on every address is a choice the caller makes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// Run a container from an image already on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerRun {
    pub name: String,
    pub image: String,
    /// The command, instead of the image's default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// `no` (default), `always`, `unless-stopped`, `on-failure` or `on-failure:N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountSpec>,
    #[serde(default)]
    pub requested_by: Requester,
}

/// An image on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageInfo {
    pub id: String,
    pub tags: Vec<String>,
    pub size_bytes: u64,
    /// Seconds since the Unix epoch.
    pub created: u64,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Pull an image (only ever on request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePull {
    /// `name[:tag]`, or `name@sha256:...`.
    pub image: String,
    #[serde(default)]
    pub requested_by: Requester,
}

/// Stop a following request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// The request's id.
    pub id: String,
}

/// A model server the agent can forward to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelServerKind {
    /// Ollama.
    Ollama,
    /// The Automatic1111 / SDXL web UI.
    Sdxl,
}

impl ModelServerKind {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ollama => "ollama",
            Self::Sdxl => "sdxl",
        }
    }
}

/// An HTTP request for a model server on the agent's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmForward {
    /// Which of the host's model servers.
    pub server: ModelServerKind,
    /// `GET` or `POST`.
    pub method: String,
    /// One of the agent's allowlisted paths, exactly (no query string).
    pub path: String,
    /// The request body, JSON text (`POST` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// The model server's status and headers; its body follows as chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmForwarded {
    /// The HTTP status the model server answered.
    pub status: u16,
    /// Its `Content-Type` (empty when it sent none).
    pub content_type: String,
    /// Its `Retry-After`, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
}

/// Every chunk of request `id` up to and including `seq` has been consumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamAck {
    /// The request's id.
    pub id: String,
    /// The last chunk consumed.
    pub seq: u64,
}
