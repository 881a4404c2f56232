//! Unit logs from the journal, read by running `journalctl` the way whitelisted commands run:
//! fixed arguments (the unit name checked by systemd's rules and passed as `--unit=`), no
//! shell, an empty environment, stdin closed, output capped and the process killed on timeout.
//! Following uses the cursor of the last line read, so no line is lost or repeated between
//! the tail and the live part.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axon_shared::LogLine;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
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

    /// Starts journalctl with its stderr drained in a task of its own (a full stderr pipe
    /// would block it), keeping the first 4 KiB for an error message.
    fn spawn(
        &self,
        mut cmd: Command,
    ) -> Result<(Child, tokio::task::JoinHandle<String>), JournalError> {
        let mut child = cmd.spawn().map_err(|e| {
            JournalError::Unavailable(format!("{}: {e}", self.journalctl.display()))
        })?;
        let stderr = child.stderr.take();
        let drain = tokio::spawn(async move {
            let mut kept = Vec::new();
            if let Some(mut e) = stderr {
                let mut buf = [0u8; 4096];
                while let Ok(n) = e.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let room = MAX_STDERR.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
            String::from_utf8_lossy(&kept).into_owned()
        });
        Ok((child, drain))
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
        let (mut child, stderr) = self.spawn(cmd)?;
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
                let n = read_line_capped(&mut reader, &mut buf).await.unwrap_or(0);
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
            let err = tokio::time::timeout(Duration::from_secs(2), stderr)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(JournalError::Unavailable(err.trim().to_owned()));
        }
        stderr.abort();
        let truncated = crate::loglines::trim_to_budget(&mut out);
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
        let (mut child, stderr) = self.spawn(cmd)?;
        let stdout = child.stdout.take().ok_or_else(|| {
            JournalError::Unavailable("journalctl's output is not readable".into())
        })?;
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            tokio::select! {
                n = read_line_capped(&mut reader, &mut buf) => {
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
        stderr.abort();
        Ok(())
    }
}

/// Longest journal line kept; the rest of a longer line is read and dropped (the entry is
/// then skipped: it no longer parses).
const MAX_LINE: usize = 64 * 1024;
/// journalctl's stderr kept for an error message.
const MAX_STDERR: usize = 4096;

/// Reads one line into `buf`, keeping at most `MAX_LINE` bytes of it. Returns the bytes
/// consumed (0 at the end).
async fn read_line_capped<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(consumed);
        }
        let (len, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = MAX_LINE.saturating_sub(buf.len());
        buf.extend_from_slice(&available[..len.min(room)]);
        reader.consume(len);
        consumed += len;
        if done {
            return Ok(consumed);
        }
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

#[cfg(test)]
mod stream_tests {
    use super::*;

    /// A journalctl that floods stderr and writes an overlong line: stderr is drained (a full
    /// pipe would hang it), the long line is dropped, and the entry after it still comes.
    #[tokio::test]
    async fn stderr_is_drained_and_long_lines_are_capped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("journalctl");
        std::fs::write(
            &fake,
            "#!/bin/sh\nhead -c 1048576 /dev/zero | tr '\\0' e >&2\nhead -c 300000 /dev/zero | tr '\\0' x\necho\necho '{\"__CURSOR\":\"c1\",\"MESSAGE\":\"after\"}'\n",
        )
        .expect("script");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let journal = Journal {
            journalctl: fake,
            directory: None,
        };
        let (lines, _) = journal.logs("x.service", 10, None).await.expect("lines");
        let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["after"]);
    }
}
