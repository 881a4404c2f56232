//! The command whitelist: the host owner lists, in agentd's own config, the commands the
//! control plane may run — an absolute binary, fixed arguments and typed parameter slots —
//! and nothing else can run. The control plane names a command and supplies parameter values;
//! it never sends argv.
//!
//! A command runs with no shell, a cleared environment (plus an explicit allowlist), stdin
//! closed, in its own process group that is killed whole on timeout, when its output passes the
//! cap, and when it exits (so background children cannot outlive it).

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axon_shared::{CommandInfo, ExecResult, ParamSchema};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest timeout a command may have.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest output cap a command may have, per stream.
pub const MAX_OUTPUT_CAP: usize = 256 * 1024;
/// Longest parameter value accepted for string slots.
const MAX_STRING_PARAM: usize = 4096;

/// A command entry as written in the TOML config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// Name the control plane uses: `[a-z0-9][a-z0-9._-]*`, at most 64.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Absolute path of the program.
    pub binary: PathBuf,
    /// Arguments; `{param}` inside an argument is replaced by that parameter's checked value.
    #[serde(default)]
    pub args: Vec<String>,
    /// Parameter slots by name.
    #[serde(default)]
    pub params: BTreeMap<String, ParamSchema>,
    /// e.g. "10s" (default), at most 10 minutes.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Bytes kept of each of stdout and stderr (default 64 KiB, at most 16 MiB).
    #[serde(default)]
    pub output_cap: Option<usize>,
    /// Run as this user (name or uid), and optionally `user:group`.
    #[serde(default)]
    pub run_as: Option<String>,
    /// Working directory (default `/`).
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Names of agentd's environment variables passed through (default none).
    #[serde(default)]
    pub env: Vec<String>,
}

/// A checked, ready-to-run command.
#[derive(Debug, Clone)]
pub struct Command {
    pub name: String,
    pub description: String,
    pub binary: PathBuf,
    args: Vec<Vec<Piece>>,
    params: BTreeMap<String, Slot>,
    pub timeout: Duration,
    pub output_cap: usize,
    run_as: Option<(u32, u32)>,
    working_dir: PathBuf,
    env: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Param(String),
}

#[derive(Debug, Clone)]
struct Slot {
    schema: ParamSchema,
    pattern: Option<Regex>,
}

/// A config entry is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("command {name:?}: {reason}")]
pub struct SpecError {
    pub name: String,
    pub reason: String,
}

/// A request to run a command is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExecError {
    #[error("command {0:?} is not allowed on this host")]
    NotAllowed(String),
    #[error("parameter {param:?}: {reason}")]
    BadParam { param: String, reason: String },
    #[error("command {0:?} is not installed on this host")]
    Unavailable(String),
    #[error("cannot start {binary}: {reason}")]
    Spawn { binary: String, reason: String },
}

use crate::names::valid_name;

fn valid_env_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_uppercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// Splits an argument template into text and `{param}` pieces.
fn parse_template(arg: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in argument {arg:?}"))?;
        let name = &rest[open + 1..open + close];
        if !valid_name(name) {
            return Err(format!(
                "invalid placeholder {{{name}}} in argument {arg:?}"
            ));
        }
        pieces.push(Piece::Param(name.to_owned()));
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("stray '}}' in argument {arg:?}"));
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Ok(pieces)
}

/// Looks up `user[:group]` (names or numeric ids) in passwd/group files under `etc`.
pub fn resolve_run_as(spec: &str, etc: &Path) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || f[2] == user));
    let (uid, primary_gid) = match entry {
        Some(f) => (
            f[2].parse::<u32>()
                .map_err(|_| format!("bad uid for {user}"))?,
            f[3].parse::<u32>()
                .map_err(|_| format!("bad gid for {user}"))?,
        ),
        None => return Err(format!("no such user {user:?}")),
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => {
            let groups = std::fs::read_to_string(etc.join("group")).unwrap_or_default();
            groups
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && (f[0] == g || f[2] == g))
                .and_then(|f| f[2].parse::<u32>().ok())
                .ok_or_else(|| format!("no such group {g:?}"))?
        }
    };
    Ok((uid, gid))
}

impl Command {
    /// Checks a config entry once, at load.
    pub fn from_spec(spec: CommandSpec, etc: &Path) -> Result<Self, SpecError> {
        let err = |reason: String| SpecError {
            name: spec.name.clone(),
            reason,
        };
        if !valid_name(&spec.name) {
            return Err(err(
                "name must be 1 to 64 of [a-z0-9._-], starting alphanumeric".into(),
            ));
        }
        let absolute_clean = spec.binary.is_absolute()
            && spec
                .binary
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !absolute_clean {
            return Err(err(format!(
                "binary {} must be an absolute path without '..'",
                spec.binary.display()
            )));
        }
        let timeout = match &spec.timeout {
            Some(t) => axon_shared::parse_duration(t).map_err(err)?,
            None => Duration::from_secs(10),
        };
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(err("timeout must be between 1 ms and 10 minutes".into()));
        }
        let output_cap = spec.output_cap.unwrap_or(64 * 1024);
        if output_cap == 0 || output_cap > MAX_OUTPUT_CAP {
            return Err(err("output_cap must be between 1 byte and 256 KiB".into()));
        }
        let mut params = BTreeMap::new();
        for (name, schema) in &spec.params {
            let pattern = match schema {
                ParamSchema::String { pattern, max_len } => {
                    if *max_len == 0 || *max_len > MAX_STRING_PARAM {
                        return Err(err(format!(
                            "parameter {name}: max_len must be 1 to {MAX_STRING_PARAM}"
                        )));
                    }
                    // Checked alone first: a pattern such as `[a-z]+)|(.*` is only valid once
                    // wrapped, and would then match anything.
                    let bad = |e: regex::Error| err(format!("parameter {name}: bad pattern: {e}"));
                    Regex::new(pattern).map_err(bad)?;
                    Some(Regex::new(&format!("^(?:{pattern})$")).map_err(bad)?)
                }
                ParamSchema::Enum { values } if values.is_empty() => {
                    return Err(err(format!("parameter {name}: an enum needs values")));
                }
                ParamSchema::Integer { min, max } if min > max => {
                    return Err(err(format!("parameter {name}: min is above max")));
                }
                _ => None,
            };
            params.insert(
                name.clone(),
                Slot {
                    schema: schema.clone(),
                    pattern,
                },
            );
        }
        let args = spec
            .args
            .iter()
            .map(|a| parse_template(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let used: Vec<&String> = args
            .iter()
            .flatten()
            .filter_map(|p| match p {
                Piece::Param(n) => Some(n),
                Piece::Text(_) => None,
            })
            .collect();
        if let Some(unknown) = used.iter().find(|n| !params.contains_key(n.as_str())) {
            return Err(err(format!(
                "argument uses {{{unknown}}}, which is not a declared parameter"
            )));
        }
        if let Some(unused) = params.keys().find(|n| !used.contains(n)) {
            return Err(err(format!(
                "parameter {unused} is declared but no argument uses it"
            )));
        }
        if let Some(bad) = spec.env.iter().find(|n| !valid_env_name(n)) {
            return Err(err(format!("invalid environment variable name {bad:?}")));
        }
        let run_as = spec
            .run_as
            .as_deref()
            .map(|r| resolve_run_as(r, etc))
            .transpose()
            .map_err(err)?;
        let working_dir = spec
            .working_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/"));
        if !working_dir.is_absolute() {
            return Err(err("working_dir must be absolute".into()));
        }
        Ok(Self {
            name: spec.name,
            description: spec.description,
            binary: spec.binary,
            args,
            params,
            timeout,
            output_cap,
            run_as,
            working_dir,
            env: spec.env,
        })
    }

    /// The command as the control plane sees it.
    pub fn info(&self) -> CommandInfo {
        CommandInfo {
            name: self.name.clone(),
            description: self.description.clone(),
            params: self
                .params
                .iter()
                .map(|(k, s)| (k.clone(), s.schema.clone()))
                .collect(),
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            output_cap: self.output_cap,
            available: self.binary.is_file(),
        }
    }

    /// Checks every value against its slot and renders argv (without the binary).
    pub fn render(&self, values: &BTreeMap<String, Value>) -> Result<Vec<String>, ExecError> {
        if let Some(extra) = values.keys().find(|k| !self.params.contains_key(*k)) {
            return Err(ExecError::BadParam {
                param: extra.clone(),
                reason: "not a parameter of this command".into(),
            });
        }
        let mut checked = HashMap::new();
        for (name, slot) in &self.params {
            let value = values.get(name).ok_or_else(|| ExecError::BadParam {
                param: name.clone(),
                reason: "missing".into(),
            })?;
            let text = check_value(slot, value).map_err(|reason| ExecError::BadParam {
                param: name.clone(),
                reason,
            })?;
            checked.insert(name.as_str(), text);
        }
        Ok(self
            .args
            .iter()
            .map(|pieces| {
                pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Text(t) => t.as_str(),
                        Piece::Param(n) => {
                            checked.get(n.as_str()).map(String::as_str).unwrap_or("")
                        }
                    })
                    .collect::<String>()
            })
            .collect())
    }
}

fn check_value(slot: &Slot, value: &Value) -> Result<String, String> {
    match &slot.schema {
        ParamSchema::Enum { values } => {
            let v = value.as_str().ok_or("must be a string")?;
            if values.iter().any(|allowed| allowed == v) {
                Ok(v.to_owned())
            } else {
                Err(format!("must be one of {}", values.join(", ")))
            }
        }
        ParamSchema::Integer { min, max } => {
            let v = value.as_i64().ok_or("must be an integer")?;
            if (*min..=*max).contains(&v) {
                Ok(v.to_string())
            } else {
                Err(format!("must be between {min} and {max}"))
            }
        }
        ParamSchema::String { max_len, .. } => {
            let v = value.as_str().ok_or("must be a string")?;
            if v.len() > *max_len {
                return Err(format!("longer than {max_len} bytes"));
            }
            plain_text(v)?;
            match &slot.pattern {
                Some(re) if re.is_match(v) => Ok(v.to_owned()),
                _ => Err("does not match the allowed pattern".into()),
            }
        }
        ParamSchema::Unit => {
            let v = value.as_str().ok_or("must be a string")?;
            check_unit_name(v)?;
            Ok(v.to_owned())
        }
    }
}

/// Refuses what a value must never carry whatever its pattern says: emptiness, a leading `-`
/// (option injection), control characters (newlines, NUL, escapes).
fn plain_text(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    if v.starts_with('-') {
        return Err("must not start with '-'".into());
    }
    if v.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "target",
    "timer",
    "mount",
    "automount",
    "path",
    "slice",
    "scope",
    "device",
    "swap",
];

/// systemd's unit name rules (`unit_name_is_valid`): at most 255 bytes, `[A-Za-z0-9:_.\\-]`
/// plus one optional `@` for templates and instances, a known type suffix.
pub fn check_unit_name(name: &str) -> Result<(), String> {
    plain_text(name)?;
    if name.len() > 255 {
        return Err("a unit name is at most 255 bytes".into());
    }
    let (stem, suffix) = name
        .rsplit_once('.')
        .ok_or("a unit name needs a type suffix such as .service")?;
    if !UNIT_SUFFIXES.contains(&suffix) {
        return Err(format!("unknown unit type .{suffix}"));
    }
    if stem.is_empty() {
        return Err("empty unit name".into());
    }
    if stem.matches('@').count() > 1 {
        return Err("at most one '@' in a unit name".into());
    }
    let ok = stem
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":_.\\-@".contains(&b));
    if !ok {
        return Err("a unit name may contain only A-Z a-z 0-9 : _ . \\ - @".into());
    }
    if stem.starts_with('@') {
        return Err("a unit name cannot start with '@'".into());
    }
    Ok(())
}

/// The whitelist of one host.
#[derive(Debug, Clone, Default)]
pub struct Whitelist {
    commands: Vec<Arc<Command>>,
}

impl Whitelist {
    /// Builds the whitelist from config entries; names must be unique.
    pub fn new(specs: Vec<CommandSpec>, etc: &Path) -> Result<Self, SpecError> {
        let mut commands: Vec<Arc<Command>> = Vec::new();
        for spec in specs {
            let cmd = Command::from_spec(spec, etc)?;
            if commands.iter().any(|c| c.name == cmd.name) {
                return Err(SpecError {
                    name: cmd.name,
                    reason: "defined twice".into(),
                });
            }
            commands.push(Arc::new(cmd));
        }
        Ok(Self { commands })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Command>> {
        self.commands.iter().find(|c| c.name == name).cloned()
    }

    pub fn infos(&self) -> Vec<CommandInfo> {
        self.commands.iter().map(|c| c.info()).collect()
    }

    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }
}

/// The first existing path among `candidates` (defaults differ between distributions).
fn first_existing(candidates: &[&str]) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(candidates[0]))
}

/// The commands every agent offers unless its config turns them off. None of them can read or
/// write a file of the caller's choosing or start a pager: parameters are typed, options are
/// fixed, and `--` ends option parsing before any value.
pub fn default_specs() -> Vec<CommandSpec> {
    let unit = || BTreeMap::from([("unit".to_owned(), ParamSchema::Unit)]);
    let spec = |name: &str, description: &str, binary: PathBuf, args: &[&str]| CommandSpec {
        name: name.into(),
        description: description.into(),
        binary,
        args: args.iter().map(|s| s.to_string()).collect(),
        params: BTreeMap::new(),
        timeout: None,
        output_cap: None,
        run_as: None,
        working_dir: None,
        env: Vec::new(),
    };
    let mut status = spec(
        "systemctl-status",
        "systemctl status of one unit",
        first_existing(&["/usr/bin/systemctl", "/bin/systemctl"]),
        &["status", "--no-pager", "--lines=20", "--", "{unit}"],
    );
    status.params = unit();
    let mut journal = spec(
        "journalctl-unit",
        "the last N journal lines of one unit",
        first_existing(&["/usr/bin/journalctl", "/bin/journalctl"]),
        &["--no-pager", "--quiet", "--lines={lines}", "--unit={unit}"],
    );
    journal.params = unit();
    journal.params.insert(
        "lines".into(),
        ParamSchema::Integer {
            min: 1,
            max: 10_000,
        },
    );
    journal.output_cap = Some(MAX_OUTPUT_CAP);
    vec![
        spec(
            "uptime",
            "uptime and load averages",
            first_existing(&["/usr/bin/uptime", "/bin/uptime"]),
            &[],
        ),
        spec(
            "df",
            "disk usage of local file systems",
            first_existing(&["/usr/bin/df", "/bin/df"]),
            &["--human-readable", "--local"],
        ),
        spec(
            "free",
            "memory and swap usage",
            first_existing(&["/usr/bin/free", "/bin/free"]),
            &["--mebi"],
        ),
        status,
        journal,
        spec(
            "docker-ps",
            "running containers",
            first_existing(&["/usr/bin/docker", "/usr/local/bin/docker"]),
            &["ps", "--no-trunc"],
        ),
        spec(
            "nvidia-smi",
            "GPU status",
            first_existing(&["/usr/bin/nvidia-smi", "/usr/local/bin/nvidia-smi"]),
            &[],
        ),
    ]
}

/// Runs a checked command with rendered arguments.
/// A piece of output while a command runs: the stream's name and the bytes.
pub type OutputPiece = (&'static str, Vec<u8>);

/// Runs a checked command with rendered arguments; pieces of output go to `live` as they come
/// (within the cap), for streaming.
pub async fn run(
    cmd: &Command,
    argv: Vec<String>,
    live: Option<tokio::sync::mpsc::Sender<OutputPiece>>,
) -> Result<ExecResult, ExecError> {
    if !cmd.binary.is_file() {
        return Err(ExecError::Unavailable(cmd.name.clone()));
    }
    let mut child_cmd = tokio::process::Command::new(&cmd.binary);
    child_cmd
        .args(&argv)
        .env_clear()
        .envs(
            cmd.env
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v))),
        )
        .current_dir(&cmd.working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some((uid, gid)) = cmd.run_as {
        // The standard library drops the supplementary groups itself (setgroups before
        // setuid, while still privileged); a hook of ours would run after setuid and fail.
        child_cmd.uid(uid).gid(gid);
    }
    let started = Instant::now();
    let mut child = child_cmd.spawn().map_err(|e| ExecError::Spawn {
        binary: cmd.binary.display().to_string(),
        reason: e.to_string(),
    })?;
    let pgid = child.id().unwrap_or(0);
    let (over_tx, mut over_rx) = tokio::sync::mpsc::channel::<()>(2);
    let stdout = tokio::spawn(capture(
        child.stdout.take(),
        "stdout",
        cmd.output_cap,
        over_tx.clone(),
        live.clone(),
    ));
    let stderr = tokio::spawn(capture(
        child.stderr.take(),
        "stderr",
        cmd.output_cap,
        over_tx,
        live,
    ));
    let mut timed_out = false;
    let status = tokio::select! {
        status = child.wait() => status.ok(),
        _ = tokio::time::sleep(cmd.timeout) => {
            timed_out = true;
            None
        }
        Some(()) = over_rx.recv() => None,
    };
    // Whatever happened, nothing of the group survives the command: this also releases pipes
    // held open by background children.
    let _ = crate::sys::kill_process_group(pgid);
    let status = match status {
        Some(s) => Some(s),
        None => child.wait().await.ok(),
    };
    // A child that left the group (setsid) may still hold a pipe: stop waiting soon.
    let drain = Duration::from_secs(2);
    let (out, out_cut) = finish_capture(stdout, drain).await;
    let (err, err_cut) = finish_capture(stderr, drain).await;
    use std::os::unix::process::ExitStatusExt;
    Ok(ExecResult {
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        stdout_truncated: out_cut,
        stderr_truncated: err_cut,
        timed_out,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

async fn finish_capture(
    task: tokio::task::JoinHandle<(Vec<u8>, bool)>,
    limit: Duration,
) -> (Vec<u8>, bool) {
    let abort = task.abort_handle();
    match tokio::time::timeout(limit, task).await {
        Ok(result) => result.unwrap_or_default(),
        Err(_) => {
            abort.abort();
            (Vec::new(), true)
        }
    }
}

/// Reads a pipe up to `cap` bytes; past the cap it stops reading and reports, so the command
/// is stopped instead of filling memory.
async fn capture(
    pipe: Option<impl AsyncRead + Unpin>,
    name: &'static str,
    cap: usize,
    over: tokio::sync::mpsc::Sender<()>,
    live: Option<tokio::sync::mpsc::Sender<OutputPiece>>,
) -> (Vec<u8>, bool) {
    let Some(mut pipe) = pipe else {
        return (Vec::new(), false);
    };
    let mut out = Vec::with_capacity(cap.min(64 * 1024));
    let mut buf = [0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return (out, false),
            Ok(n) => {
                let room = cap - out.len();
                let kept = n.min(room);
                if let Some(live) = &live
                    && kept > 0
                {
                    // A slow stream must not stall the command: drop pieces rather than wait.
                    let _ = live.try_send((name, buf[..kept].to_vec()));
                }
                if n > room {
                    out.extend_from_slice(&buf[..room]);
                    let _ = over.send(()).await;
                    return (out, true);
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests;
