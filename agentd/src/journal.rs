//! Unit logs from the journal, read by running `journalctl` the way whitelisted commands run:
//! fixed arguments (the unit name checked by systemd's rules and passed as `--unit=`), no
//! shell, an empty environment, stdin closed, output capped and the process killed on timeout.
//! Following uses the cursor of the last line read, so no line is lost or repeated between
//! the tail and the live part.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axon_shared::LogLine;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long reading the tail may take.
const TAIL_TIMEOUT: Duration = Duration::from_secs(20);
/// The most bytes of journalctl output read for one tail.
const MAX_OUTPUT: usize = 16 << 20;

/// Reading the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the journal cannot be read: {0}")]
    Unavailable(String),
    #[error("journalctl did not finish within {0} s")]
    Timeout(u64),
}

/// Where the journal is and how to read it.
#[derive(Debug, Clone)]
pub struct Journal {
    pub journalctl: PathBuf,
    /// `--directory`; `None` reads the system journal.
    pub directory: Option<PathBuf>,
}

impl Journal {
    fn command(&self, unit: &str) -> Command {
        let mut cmd = Command::new(&self.journalctl);
        cmd.env_clear()
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_PAGER", "")
            .args(["--no-pager", "--quiet", "--output=json"])
            .arg("--output-fields=MESSAGE,PRIORITY")
            .arg(format!("--unit={unit}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if let Some(dir) = &self.directory {
            cmd.arg("--directory").arg(dir);
        }
        cmd
    }

    fn spawn(&self, mut cmd: Command) -> Result<Child, JournalError> {
        cmd.spawn()
            .map_err(|e| JournalError::Unavailable(format!("{}: {e}", self.journalctl.display())))
    }

    /// The last `lines` lines of `unit` (already checked as a unit name); with `live`, then
    /// every new line until `until` or the receiver goes away.
    pub async fn logs(
        &self,
        unit: &str,
        lines: u32,
        live: Option<(mpsc::Sender<LogLine>, tokio::time::Instant)>,
    ) -> Result<(Vec<LogLine>, bool), JournalError> {
        let mut cmd = self.command(unit);
        cmd.arg(format!("--lines={lines}"));
        let mut child = self.spawn(cmd)?;
        let stdout = child.stdout.take().ok_or_else(|| {
            JournalError::Unavailable("journalctl's output is not readable".into())
        })?;
        let mut reader = BufReader::new(stdout);
        let mut out = Vec::new();
        let mut cursor = None;
        let mut read = 0usize;
        let reading = async {
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = reader.read_until(b'\n', &mut buf).await.unwrap_or(0);
                read += n;
                if n == 0 || read > MAX_OUTPUT {
                    break;
                }
                if let Some((line, c)) = parse(&buf) {
                    out.push(line);
                    cursor = Some(c);
                }
            }
        };
        if tokio::time::timeout(TAIL_TIMEOUT, reading).await.is_err() {
            let _ = child.start_kill();
            return Err(JournalError::Timeout(TAIL_TIMEOUT.as_secs()));
        }
        if read > MAX_OUTPUT {
            // Stopped reading: journalctl would block on a full pipe.
            let _ = child.start_kill();
        }
        let status = tokio::time::timeout(Duration::from_secs(2), child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        if out.is_empty() && status.is_some_and(|s| !s.success()) {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = (&mut e).take(4096).read_to_string(&mut err).await;
            }
            return Err(JournalError::Unavailable(err.trim().to_owned()));
        }
        let truncated = crate::docker::trim_to_budget(&mut out);
        if let Some((tx, until)) = live {
            // The tail goes first, then what follows it.
            for line in std::mem::take(&mut out) {
                if tx.send(line).await.is_err() {
                    return Ok((Vec::new(), truncated));
                }
            }
            self.follow(unit, cursor, tx, until).await?;
        }
        Ok((out, truncated))
    }

    async fn follow(
        &self,
        unit: &str,
        cursor: Option<String>,
        tx: mpsc::Sender<LogLine>,
        until: tokio::time::Instant,
    ) -> Result<(), JournalError> {
        let mut cmd = self.command(unit);
        cmd.arg("--follow");
        match cursor {
            Some(c) => cmd.arg(format!("--after-cursor={c}")),
            None => cmd.arg("--lines=0"),
        };
        let mut child = self.spawn(cmd)?;
        let stdout = child.stdout.take().ok_or_else(|| {
            JournalError::Unavailable("journalctl's output is not readable".into())
        })?;
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            tokio::select! {
                n = reader.read_until(b'\n', &mut buf) => {
                    if n.unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some((line, _)) = parse(&buf)
                        && tx.send(line).await.is_err()
                    {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(until) => break,
                _ = tx.closed() => break,
            }
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        Ok(())
    }
}

/// One line of `journalctl --output=json`: the entry and its cursor. MESSAGE is a string, or
/// an array of bytes when it is not UTF-8.
fn parse(line: &[u8]) -> Option<(LogLine, String)> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let cursor = v["__CURSOR"].as_str()?.to_owned();
    if cursor.starts_with('-') {
        return None;
    }
    let message = match &v["MESSAGE"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(bytes) => {
            let bytes: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => String::new(),
    };
    let ts_ms = v["__REALTIME_TIMESTAMP"]
        .as_str()
        .and_then(|t| t.parse::<u64>().ok())
        .map(|us| us / 1000);
    let priority = v["PRIORITY"].as_str().and_then(|p| p.parse::<u8>().ok());
    Some((
        LogLine {
            ts_ms,
            stream: None,
            priority,
            message: message.chars().take(16 * 1024).collect(),
        },
        cursor,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_json_lines_parse_with_binary_messages() {
        let (line, cursor) = parse(
            br#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1700000000123456","PRIORITY":"6","MESSAGE":"hello"}"#,
        )
        .expect("line");
        assert_eq!(cursor, "s=1;i=2");
        assert_eq!(line.ts_ms, Some(1_700_000_000_123));
        assert_eq!(line.priority, Some(6));
        assert_eq!(line.message, "hello");
        let (line, _) = parse(br#"{"__CURSOR":"c","MESSAGE":[104,105,255]}"#).expect("binary line");
        assert_eq!(line.message, "hi\u{fffd}");
        assert!(parse(b"not json").is_none());
        assert!(parse(br#"{"MESSAGE":"no cursor"}"#).is_none());
        assert!(parse(br#"{"__CURSOR":"--follow","MESSAGE":"x"}"#).is_none());
    }
}
