//! The agent's tamper-evident audit trail: every privileged action and every refusal is one
//! JSONL line, fsynced, carrying the hash of the line before it, so an edited, deleted or
//! reordered line breaks the chain (`agentd audit verify` names the first broken line). Files
//! rotate by size; the chain continues across files.
//!
//! Each record is also put in a sled spool and sent to the control plane as a sequenced event;
//! it leaves the spool only when the control plane acknowledges it, so records survive
//! disconnects and restarts and are replayed in order.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axon_shared::{AuditRecord, Requester};
use tokio::sync::Notify;

/// Name of the current audit file in the state dir.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// Rotate the current file past this size.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 10 << 20;
/// Rotated files kept (`audit.jsonl.1` is the newest).
const KEEP_ROTATED: u32 = 5;
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The trail could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit spool: {0}")]
    Spool(#[from] sled::Error),
    #[error("audit file {path} line {line}: {reason}")]
    Broken {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// SHA-256 (hex) of the record with `hash` empty.
pub fn record_hash(record: &AuditRecord) -> String {
    let mut unsigned = record.clone();
    unsigned.hash = String::new();
    let bytes = serde_json::to_vec(&unsigned).unwrap_or_default();
    axon_shared::hex_encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes).as_ref())
}

struct Head {
    file: File,
    size: u64,
    seq: u64,
    last_hash: String,
}

/// The trail of one agent.
pub struct Auditor {
    dir: PathBuf,
    max_file_bytes: u64,
    head: Mutex<Head>,
    spool: sled::Tree,
    _db: sled::Db,
    /// Wakes the link when a record is spooled.
    pub spooled: Notify,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The last record of a file, if any.
fn last_record(path: &Path) -> Result<Option<AuditRecord>, AuditError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let mut last = None;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        // A line torn by a crash mid-append stays in the file (verify reports it); the chain
        // continues from the last whole record.
        match serde_json::from_str(&line) {
            Ok(record) => last = Some(record),
            Err(e) => {
                tracing::warn!(path = %path.display(), line = i + 1, error = %e, "unreadable audit line")
            }
        }
    }
    Ok(last)
}

/// Opens the spool, waiting briefly for a previous holder in this process to let go of sled's
/// file lock (it is released by a background thread after the last handle drops).
fn open_spool(path: &Path) -> Result<sled::Db, AuditError> {
    let mut attempt = 0;
    loop {
        // Every write is flushed where it is made; sled's own periodic flusher would wake
        // (and fsync) twice a second on an idle host.
        let config = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .cache_capacity(4 << 20);
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if attempt < 40
                    && (e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("could not acquire lock")) =>
            {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Auditor {
    /// Opens the trail in `dir` (the state dir), continuing its chain.
    pub fn open(dir: &Path, max_file_bytes: u64) -> Result<Self, AuditError> {
        let path = dir.join(AUDIT_FILE);
        let mut last = last_record(&path)?;
        if last.is_none() {
            last = last_record(&dir.join(format!("{AUDIT_FILE}.1")))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut size = file.metadata().map_err(io(&path))?.len();
        // Never glue a new record onto a torn last line.
        if size > 0 && !std::fs::read(&path).map_err(io(&path))?.ends_with(b"\n") {
            (&file).write_all(b"\n").map_err(io(&path))?;
            size += 1;
        }
        let db = open_spool(&dir.join("spool"))?;
        let spool = db.open_tree("audit")?;
        Ok(Self {
            dir: dir.to_owned(),
            max_file_bytes,
            head: Mutex::new(Head {
                file,
                size,
                seq: last.as_ref().map(|r| r.seq).unwrap_or(0),
                last_hash: last.map(|r| r.hash).unwrap_or_else(|| GENESIS.to_owned()),
            }),
            spool,
            _db: db,
            spooled: Notify::new(),
        })
    }

    /// Appends one record (fsynced) and spools it for the control plane.
    pub fn record(
        &self,
        action: &str,
        outcome: &str,
        target: &str,
        requested_by: &Requester,
        detail: &str,
    ) -> Result<AuditRecord, AuditError> {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = AuditRecord {
            seq: head.seq + 1,
            time: now_rfc3339(),
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            target: target.chars().take(1024).collect(),
            requested_by: requested_by.clone(),
            detail: detail.chars().take(1024).collect(),
            prev_hash: head.last_hash.clone(),
            hash: String::new(),
        };
        record.hash = record_hash(&record);
        let mut line = serde_json::to_vec(&record).unwrap_or_default();
        line.push(b'\n');
        if head.size > 0 && head.size + line.len() as u64 > self.max_file_bytes {
            self.rotate(&mut head)?;
        }
        let path = self.dir.join(AUDIT_FILE);
        head.file.write_all(&line).map_err(io(&path))?;
        head.file.sync_data().map_err(io(&path))?;
        head.size += line.len() as u64;
        head.seq = record.seq;
        head.last_hash = record.hash.clone();
        self.spool.insert(
            record.seq.to_be_bytes(),
            serde_json::to_vec(&record).unwrap_or_default(),
        )?;
        self.spool.flush()?;
        drop(head);
        self.spooled.notify_one();
        Ok(record)
    }

    /// Records and logs a failure to record: the action itself goes on.
    pub fn note(
        &self,
        action: &str,
        outcome: &str,
        target: &str,
        requested_by: &Requester,
        detail: &str,
    ) {
        if let Err(e) = self.record(action, outcome, target, requested_by, detail) {
            tracing::error!(error = %e, %action, %target, "AUDIT RECORD NOT WRITTEN");
        }
    }

    fn rotate(&self, head: &mut Head) -> Result<(), AuditError> {
        for i in (1..KEEP_ROTATED).rev() {
            let from = self.dir.join(format!("{AUDIT_FILE}.{i}"));
            if from.exists() {
                let to = self.dir.join(format!("{AUDIT_FILE}.{}", i + 1));
                std::fs::rename(&from, &to).map_err(io(&from))?;
            }
        }
        let current = self.dir.join(AUDIT_FILE);
        std::fs::rename(&current, self.dir.join(format!("{AUDIT_FILE}.1")))
            .map_err(io(&current))?;
        head.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)
            .map_err(io(&current))?;
        head.size = 0;
        Ok(())
    }

    /// Spooled records after `after`, in order, at most `limit`.
    pub fn pending(&self, after: u64, limit: usize) -> Vec<AuditRecord> {
        self.spool
            .range((after + 1).to_be_bytes()..)
            .take(limit)
            .filter_map(|item| item.ok())
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    /// The control plane stored everything up to `seq`: drop it from the spool.
    pub fn ack(&self, seq: u64) -> Result<usize, AuditError> {
        let mut removed = 0;
        for key in self
            .spool
            .range(..=seq.to_be_bytes())
            .keys()
            .filter_map(Result::ok)
        {
            self.spool.remove(key)?;
            removed += 1;
        }
        self.spool.flush()?;
        Ok(removed)
    }

    /// Number of records waiting for the control plane.
    pub fn spooled_len(&self) -> usize {
        self.spool.len()
    }
}

/// Checks a trail file: every line parses, its hash is right, it names the previous line's
/// hash and its sequence number follows. Returns the number of records.
pub fn verify(path: &Path) -> Result<usize, AuditError> {
    let file = File::open(path).map_err(io(path))?;
    let mut prev: Option<AuditRecord> = None;
    let mut count = 0;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line_no = i + 1;
        let broken = |reason: String| AuditError::Broken {
            path: path.to_owned(),
            line: line_no,
            reason,
        };
        let line = line.map_err(io(path))?;
        let record: AuditRecord =
            serde_json::from_str(&line).map_err(|e| broken(format!("not a record: {e}")))?;
        if record_hash(&record) != record.hash {
            return Err(broken(
                "its content does not match its hash (edited)".into(),
            ));
        }
        if let Some(p) = &prev {
            if record.prev_hash != p.hash {
                return Err(broken(format!(
                    "it does not follow record {} (a record was removed, inserted or reordered)",
                    p.seq
                )));
            }
            if record.seq != p.seq + 1 {
                return Err(broken(format!(
                    "sequence jumps from {} to {}",
                    p.seq, record.seq
                )));
            }
        } else if record.seq == 1 && record.prev_hash != GENESIS {
            return Err(broken("the first record does not start the chain".into()));
        }
        prev = Some(record);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn chain_verifies_and_names_the_first_broken_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let who = Requester {
            actor: "u1".into(),
            role: "operator".into(),
            ..Requester::default()
        };
        {
            let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("open");
            for i in 0..5 {
                audit
                    .record("exec.run", "ok", &format!("cmd{i}"), &who, "exit 0")
                    .expect("record");
            }
        }
        // Reopening continues the chain.
        let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("reopen");
        audit
            .record("fs.write", "denied", "www/x", &who, "read-only")
            .expect("record");
        let path = dir.path().join(AUDIT_FILE);
        assert_eq!(verify(&path).expect("valid"), 6);

        let original = lines(&path);
        let write = |l: &[String]| std::fs::write(&path, l.join("\n") + "\n").expect("write");
        let broken_at = |l: &[String]| match verify(&path) {
            Err(AuditError::Broken { line, .. }) => line,
            other => panic!("expected a broken chain for {l:?}, got {other:?}"),
        };

        let mut edited = original.clone();
        edited[2] = edited[2].replace("cmd2", "cmdX");
        write(&edited);
        assert_eq!(broken_at(&edited), 3);

        let mut deleted = original.clone();
        deleted.remove(3);
        write(&deleted);
        assert_eq!(broken_at(&deleted), 4);

        let mut reordered = original.clone();
        reordered.swap(1, 2);
        write(&reordered);
        assert_eq!(broken_at(&reordered), 2);

        write(&original);
        assert_eq!(verify(&path).expect("restored"), 6);
    }

    #[test]
    fn spool_replays_until_acknowledged_and_survives_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let who = Requester::default();
        {
            let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("open");
            for _ in 0..4 {
                audit
                    .record("agent.start", "ok", "", &who, "")
                    .expect("record");
            }
            assert_eq!(audit.pending(0, 100).len(), 4);
            assert_eq!(audit.ack(2).expect("ack"), 2);
        }
        let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("reopen");
        let seqs: Vec<u64> = audit.pending(0, 100).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [3, 4]);
        assert_eq!(audit.pending(3, 100).len(), 1);
        audit.ack(4).expect("ack");
        assert_eq!(audit.spooled_len(), 0);
    }

    #[test]
    fn a_torn_last_line_does_not_stop_the_agent() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("open");
            audit
                .record("agent.start", "ok", "", &Requester::default(), "")
                .expect("record");
        }
        let path = dir.path().join(AUDIT_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"seq\":2,\"time\":\"20").expect("torn");
        drop(f);
        let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("reopens");
        let next = audit
            .record("agent.start", "ok", "", &Requester::default(), "")
            .expect("record");
        assert_eq!(next.seq, 2);
        // The torn line is evidence: verify names it.
        assert!(matches!(
            verify(&path),
            Err(AuditError::Broken { line: 2, .. })
        ));
    }

    #[test]
    fn rotation_keeps_the_chain_across_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = Auditor::open(dir.path(), 600).expect("open");
        for i in 0..10 {
            audit
                .record(
                    "exec.run",
                    "ok",
                    &format!("c{i}"),
                    &Requester::default(),
                    "",
                )
                .expect("record");
        }
        let current = dir.path().join(AUDIT_FILE);
        let rotated = dir.path().join(format!("{AUDIT_FILE}.1"));
        assert!(rotated.exists(), "rotated");
        assert!(std::fs::metadata(&current).expect("meta").len() <= 600);
        verify(&current).expect("current file verifies");
        verify(&rotated).expect("rotated file verifies");
        let first_current: AuditRecord = serde_json::from_str(&lines(&current)[0]).expect("record");
        let last_rotated: AuditRecord =
            serde_json::from_str(lines(&rotated).last().expect("line")).expect("record");
        assert_eq!(
            first_current.prev_hash, last_rotated.hash,
            "the chain continues across files"
        );
    }
}
