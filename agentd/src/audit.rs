//! The agent's tamper-evident audit trail: every privileged action and every refusal is one
//! JSONL line, fsynced, carrying the hash of the line before it, so an edited, deleted or
//! reordered line breaks the chain, and the chain's head is signed apart from the files, so
//! lines cut off the end are caught too (`agentd audit verify`). Files rotate by size; the
//! chain continues across files. The files are written by a thread of their own that commits
//! records in groups, so no async thread waits on a disk sync.
//!
//! The trail is also the spool: each record is sent to the control plane as a sequenced event
//! and counts as delivered only when the control plane acknowledges it. The highest
//! acknowledged number is kept in `audit.acked`; on every connection the agent sends what
//! follows it, newest records from memory and older ones read back from the files, so records
//! survive disconnects and restarts and are replayed in order without a second store.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axon_shared::{AuditRecord, Requester};
use axon_trail::{TrailConfig, TrailError, TrailFile, Writer};
use tokio::sync::Notify;

/// Name of the current audit file in the state dir.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// The highest sequence number the control plane acknowledged (decimal text).
pub const ACKED_FILE: &str = "audit.acked";
/// Held (flock) by the agentd that uses the state dir.
pub const LOCK_FILE: &str = "agentd.lock";
/// Rotate the current file past this size.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 10 << 20;
/// Rotated files kept (`audit.jsonl.1` is the newest).
const KEEP_ROTATED: u32 = 5;
/// Records queued for the writer; more wait for room.
const QUEUE: usize = 1024;
/// Unacknowledged records kept in memory; older ones are read back from the files.
const CACHED: usize = 256;
/// Where earlier releases kept unacknowledged records (a sled database); removed on open.
const OLD_SPOOL: &str = "spool";

/// The trail could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Trail(#[from] TrailError),
    #[error("{0}")]
    Spool(String),
}

/// The trail's layout in a state dir.
pub fn trail_config(dir: &Path, max_file_bytes: u64) -> TrailConfig {
    TrailConfig::new(dir, AUDIT_FILE, max_file_bytes, KEEP_ROTATED)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The trail of one agent.
pub struct Auditor {
    writer: Writer<AuditRecord>,
    config: TrailConfig,
    spool: Arc<Mutex<Spool>>,
    acked_path: PathBuf,
    _lock: File,
    /// Wakes the link when records are spooled.
    pub spooled: Arc<Notify>,
}

/// What the control plane has not acknowledged yet.
#[derive(Debug, Default)]
struct Spool {
    acked: u64,
    /// The newest record written.
    head: u64,
    /// The newest unacknowledged records, in order, at most [`CACHED`].
    recent: VecDeque<AuditRecord>,
}

/// Takes the state dir's lock: two agents on one trail would fork its chain.
fn lock(dir: &Path) -> Result<File, AuditError> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AuditError::Spool(format!("{}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::Spool(format!(
            "{} is in use by another agentd",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(AuditError::Spool(format!("{}: {e}", path.display())))
        }
    }
}

fn read_acked(path: &Path) -> Result<Option<u64>, AuditError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            text.trim().parse().map(Some).map_err(|_| {
                AuditError::Spool(format!("{}: not a sequence number", path.display()))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::Spool(format!("{}: {e}", path.display()))),
    }
}

/// Replaces the mark atomically. Not synced: a mark lost in a crash only means records are
/// sent again, and the control plane keeps each number once.
fn write_acked(path: &Path, seq: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("acked.tmp");
    std::fs::write(&tmp, format!("{seq}\n"))?;
    std::fs::rename(&tmp, path)
}

impl Auditor {
    /// Opens the trail in `dir` (the state dir), continuing its chain, and starts its writer.
    pub fn open(dir: &Path, max_file_bytes: u64) -> Result<Self, AuditError> {
        let lock = lock(dir)?;
        let config = trail_config(dir, max_file_bytes);
        let (trail, opened) = TrailFile::open::<AuditRecord>(config.clone())?;
        let head = trail.head().map_or(0, |(seq, _)| seq);
        let acked_path = dir.join(ACKED_FILE);
        let acked = match read_acked(&acked_path)? {
            // A mark past the head belongs to a trail that was since cut or replaced.
            Some(seq) => seq.min(head),
            None => {
                // No mark: everything kept is sent (the control plane keeps each number once).
                let old = dir.join(OLD_SPOOL);
                if old.is_dir() {
                    tracing::info!(path = %old.display(), "the spool of an earlier release is no longer used: the trail is sent again from its start and the spool removed");
                    if let Err(e) = std::fs::remove_dir_all(&old) {
                        tracing::warn!(path = %old.display(), error = %e, "cannot remove the old spool");
                    }
                }
                0
            }
        };
        let spool = Arc::new(Mutex::new(Spool {
            acked,
            head,
            recent: VecDeque::new(),
        }));
        let spooled = Arc::new(Notify::new());
        let (sink, wake) = (spool.clone(), spooled.clone());
        let writer = Writer::start(
            trail,
            QUEUE,
            Box::new(move |records: &[AuditRecord]| {
                let mut spool = sink.lock().unwrap_or_else(|p| p.into_inner());
                for record in records {
                    spool.head = record.seq;
                    if spool.recent.len() == CACHED {
                        spool.recent.pop_front();
                    }
                    spool.recent.push_back(record.clone());
                }
                drop(spool);
                wake.notify_one();
                Ok(())
            }),
        );
        let auditor = Self {
            writer,
            config,
            spool,
            acked_path,
            _lock: lock,
            spooled,
        };
        if let Some((last, head)) = opened.cut {
            auditor.writer.submit(Self::build(
                "audit.cut",
                "alert",
                AUDIT_FILE,
                &Requester::default(),
                &format!(
                    "the trail ended at record {last} but its signed head was record {head}: records were cut off the end"
                ),
            ));
        }
        Ok(auditor)
    }

    fn build(
        action: &str,
        outcome: &str,
        target: &str,
        requested_by: &Requester,
        detail: &str,
    ) -> AuditRecord {
        AuditRecord {
            seq: 0,
            time: now_rfc3339(),
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            target: target.chars().take(1024).collect(),
            requested_by: requested_by.clone(),
            detail: detail.chars().take(1024).collect(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// Appends one record (synced) and spools it for the control plane. Waits for room in the
    /// writer's queue, so a flood of records slows its senders, not the agent.
    pub async fn record(
        &self,
        action: &str,
        outcome: &str,
        target: &str,
        requested_by: &Requester,
        detail: &str,
    ) -> Result<AuditRecord, AuditError> {
        let record = Self::build(action, outcome, target, requested_by, detail);
        Ok(self.writer.write(record).await?)
    }

    /// Records and logs a failure to record: the action itself goes on.
    pub async fn note(
        &self,
        action: &str,
        outcome: &str,
        target: &str,
        requested_by: &Requester,
        detail: &str,
    ) {
        if let Err(e) = self
            .record(action, outcome, target, requested_by, detail)
            .await
        {
            tracing::error!(error = %e, %action, %target, "AUDIT RECORD NOT WRITTEN");
        }
    }

    /// Unacknowledged records after `after`, in order, at most `limit`: from memory when
    /// it holds them, else read back from the files.
    pub fn pending(&self, after: u64, limit: usize) -> Vec<AuditRecord> {
        let (from, head) = {
            let spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
            let from = after.max(spool.acked);
            if from >= spool.head {
                return Vec::new();
            }
            if spool.recent.front().is_some_and(|r| r.seq <= from + 1) {
                return spool
                    .recent
                    .iter()
                    .filter(|r| r.seq > from)
                    .take(limit)
                    .cloned()
                    .collect();
            }
            (from, spool.head)
        };
        // A rotation between listing the files and reading them can skip a file: read again.
        for _ in 0..3 {
            let records: Vec<AuditRecord> = match axon_trail::read_after(&self.config, from, limit)
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read unacknowledged audit records back");
                    return Vec::new();
                }
            };
            let Some(first) = records.first().map(|r| r.seq) else {
                return records;
            };
            if first == from + 1 || first > head {
                return records;
            }
            let oldest = axon_trail::oldest_seq::<AuditRecord>(&self.config);
            if oldest == Some(first) {
                tracing::warn!(
                    from = from + 1,
                    to = first - 1,
                    "audit records were rotated away before the control plane acknowledged them"
                );
                return records;
            }
        }
        Vec::new()
    }

    /// The control plane stored everything up to `seq`. Returns how many records that
    /// acknowledged.
    pub fn ack(&self, seq: u64) -> Result<usize, AuditError> {
        let mut spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
        let seq = seq.min(spool.head);
        if seq <= spool.acked {
            return Ok(0);
        }
        let removed = (seq - spool.acked) as usize;
        spool.acked = seq;
        while spool.recent.front().is_some_and(|r| r.seq <= seq) {
            spool.recent.pop_front();
        }
        write_acked(&self.acked_path, seq)
            .map_err(|e| AuditError::Spool(format!("{}: {e}", self.acked_path.display())))?;
        Ok(removed)
    }

    /// Number of records waiting for the control plane.
    pub fn spooled_len(&self) -> usize {
        let spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
        spool.head.saturating_sub(spool.acked) as usize
    }
}

/// Checks one trail file's chain. Returns the number of records.
pub fn verify(path: &Path) -> Result<usize, AuditError> {
    Ok(axon_trail::verify_file::<AuditRecord>(path)?)
}

/// Checks the whole trail in a state dir (rotated files and the signed head included).
pub fn verify_trail(dir: &Path) -> Result<axon_trail::Verified, AuditError> {
    Ok(axon_trail::verify::<AuditRecord>(&trail_config(
        dir,
        DEFAULT_MAX_FILE_BYTES,
    ))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Requester {
        Requester {
            actor: "u1".into(),
            role: "operator".into(),
            ..Requester::default()
        }
    }

    async fn write(audit: &Auditor, n: usize) {
        for i in 0..n {
            audit
                .record("exec.run", "ok", &format!("cmd{i}"), &who(), "exit 0")
                .await
                .expect("record");
        }
    }

    fn seqs(audit: &Auditor) -> Vec<u64> {
        audit.pending(0, 100).iter().map(|r| r.seq).collect()
    }

    #[tokio::test]
    async fn chain_continues_across_reopen_and_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("open");
            write(&audit, 5).await;
        }
        let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("reopen");
        let next = audit
            .record("fs.write", "denied", "www/x", &who(), "read-only")
            .await
            .expect("record");
        assert_eq!(next.seq, 6);
        drop(audit);
        assert_eq!(verify(&dir.path().join(AUDIT_FILE)).expect("valid"), 6);
        assert_eq!(verify_trail(dir.path()).expect("valid").head, Some(6));
    }

    #[tokio::test]
    async fn spool_replays_until_acknowledged_and_survives_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("open");
            write(&audit, 4).await;
            assert_eq!(seqs(&audit), [1, 2, 3, 4]);
            assert_eq!(audit.ack(2).expect("ack"), 2);
        }
        let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("reopen");
        assert_eq!(seqs(&audit), [3, 4]);
        assert_eq!(audit.pending(3, 100).len(), 1);
        audit.ack(4).expect("ack");
        assert_eq!(audit.spooled_len(), 0);
        drop(audit);
        // Acknowledged records are not spooled again from the file.
        let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("reopen");
        assert_eq!(audit.spooled_len(), 0);
    }

    /// More unacknowledged records than memory holds: the older ones are read back from the
    /// files, in order, without a gap, across a reopen.
    #[tokio::test]
    async fn records_beyond_memory_are_read_back_from_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = CACHED + 40;
        {
            let audit = Auditor::open(dir.path(), 64 << 10).expect("open");
            write(&audit, n).await;
            assert!(
                dir.path().join(format!("{AUDIT_FILE}.1")).exists(),
                "rotated"
            );
            audit.ack(3).expect("ack");
            let mut after = 3;
            let mut seen = Vec::new();
            loop {
                let batch = audit.pending(after, 64);
                let Some(last) = batch.last() else { break };
                after = last.seq;
                seen.extend(batch.iter().map(|r| r.seq));
            }
            assert_eq!(seen, (4..=n as u64).collect::<Vec<_>>());
            assert_eq!(audit.spooled_len(), n - 3);
        }
        let audit = Auditor::open(dir.path(), 64 << 10).expect("reopen");
        let first = audit.pending(0, 2);
        assert_eq!(first.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(first[1].prev_hash, first[0].hash);
        assert_eq!(audit.ack(n as u64).expect("ack"), n - 3);
        assert!(audit.pending(0, 64).is_empty());
    }

    /// Unacknowledged records rotated out of the files: sending starts at the oldest record
    /// kept (the control plane records the gap) instead of waiting for records that are gone.
    #[tokio::test]
    async fn records_rotated_away_unacknowledged_leave_a_gap_not_a_stall() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = Auditor::open(dir.path(), 2 << 10).expect("open");
        write(&audit, CACHED + 100).await;
        let oldest = axon_trail::oldest_seq::<AuditRecord>(&audit.config).expect("oldest");
        assert!(oldest > 1, "rotation dropped the first records");
        let pending = audit.pending(0, 3);
        assert_eq!(pending[0].seq, oldest);
    }

    /// Two agents on one state dir would fork the chain: the second is refused, and the dir
    /// is free again once the first closes.
    #[tokio::test]
    async fn a_state_dir_is_used_by_one_agent_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("open");
        let refused = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES)
            .err()
            .expect("refused");
        assert!(refused.to_string().contains("in use"), "{refused}");
        drop(first);
        Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("free again");
    }

    /// The sled spool of an earlier release: removed, and the trail is sent from its start.
    #[tokio::test]
    async fn the_spool_of_an_earlier_release_is_replaced_by_the_trail() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("open");
            write(&audit, 3).await;
        }
        let old = dir.path().join(OLD_SPOOL);
        std::fs::create_dir(&old).expect("mkdir");
        std::fs::write(old.join("db"), b"sled").expect("write");
        std::fs::remove_file(dir.path().join(ACKED_FILE)).ok();
        let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("reopen");
        assert!(!old.exists());
        assert_eq!(seqs(&audit), [1, 2, 3]);
    }

    /// Lines cut off the end of the file: reopening records the cut (so it reaches the control
    /// plane) and the chain continues after the signed head.
    #[tokio::test]
    async fn a_cut_trail_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(AUDIT_FILE);
        {
            let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("open");
            write(&audit, 4).await;
            audit.ack(4).expect("ack");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let kept: Vec<&str> = text.lines().take(2).collect();
        std::fs::write(&path, kept.join("\n") + "\n").expect("cut");
        assert!(verify_trail(dir.path()).is_err());
        let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("reopen");
        let pending = {
            let mut found = Vec::new();
            for _ in 0..100 {
                found = audit.pending(4, 10);
                if !found.is_empty() {
                    break;
                }
                audit.spooled.notified().await;
            }
            found
        };
        assert_eq!(pending[0].action, "audit.cut");
        assert_eq!(pending[0].seq, 5);
        assert!(pending[0].detail.contains("record 2"), "{:?}", pending[0]);
    }
}
