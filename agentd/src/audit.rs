//! The agent's tamper-evident audit trail: every privileged action and every refusal is one
//! JSONL line, fsynced, carrying the hash of the line before it, so an edited, deleted or
//! reordered line breaks the chain, and the chain's head is signed apart from the files, so
//! lines cut off the end are caught too (`agentd audit verify`). Files rotate by size; the
//! chain continues across files. The files are written by a thread of their own that commits
//! records in groups, so no async thread waits on a disk sync.
//!
//! Each record is also put in a sled spool and sent to the control plane as a sequenced event;
//! it leaves the spool only when the control plane acknowledges it, so records survive
//! disconnects and restarts and are replayed in order. The file is written first: on open,
//! records in the file that neither reached the spool nor were acknowledged are spooled again,
//! so a crash between the two never leaves a gap the control plane would wait on.

use std::path::Path;
use std::sync::Arc;

use axon_shared::{AuditRecord, Requester};
use axon_trail::{TrailConfig, TrailError, TrailFile, Writer};
use tokio::sync::Notify;

/// Name of the current audit file in the state dir.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// Rotate the current file past this size.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 10 << 20;
/// Rotated files kept (`audit.jsonl.1` is the newest).
const KEEP_ROTATED: u32 = 5;
/// Records queued for the writer; more wait for room.
const QUEUE: usize = 1024;
/// Key of the highest acknowledged sequence number in the spool's meta tree.
const ACKED: &[u8] = b"acked";

/// The trail could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Trail(#[from] TrailError),
    #[error("audit spool: {0}")]
    Spool(#[from] sled::Error),
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
    spool: sled::Tree,
    meta: sled::Tree,
    _db: sled::Db,
    /// Wakes the link when records are spooled.
    pub spooled: Arc<Notify>,
}

/// Opens the spool, waiting briefly for a previous holder in this process to let go of sled's
/// file lock (it is released by a background thread after the last handle drops).
fn open_spool(path: &Path) -> Result<sled::Db, AuditError> {
    let mut attempt = 0;
    loop {
        // Writes are flushed by the audit writer, once per group; sled's own periodic
        // flusher would wake (and fsync) twice a second on an idle host.
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

fn seq_of(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

fn spool_insert(spool: &sled::Tree, record: &AuditRecord) -> Result<(), sled::Error> {
    spool.insert(
        record.seq.to_be_bytes(),
        serde_json::to_vec(record).unwrap_or_default(),
    )?;
    Ok(())
}

impl Auditor {
    /// Opens the trail in `dir` (the state dir), continuing its chain, and starts its writer.
    pub fn open(dir: &Path, max_file_bytes: u64) -> Result<Self, AuditError> {
        let (trail, opened) = TrailFile::open::<AuditRecord>(trail_config(dir, max_file_bytes))?;
        let db = open_spool(&dir.join("spool"))?;
        let spool = db.open_tree("audit")?;
        let meta = db.open_tree("audit_meta")?;
        let head = trail.head().map_or(0, |(seq, _)| seq);
        let spooled_last = spool.last()?.and_then(|(k, _)| seq_of(&k)).unwrap_or(0);
        let acked = match meta.get(ACKED)?.and_then(|v| seq_of(&v)) {
            Some(seq) => seq,
            // Spools from before the mark: what is spooled was not acknowledged, and with an
            // empty spool everything was.
            None => match spool.first()?.and_then(|(k, _)| seq_of(&k)) {
                Some(first) => first - 1,
                None => head,
            },
        };
        let from = acked.max(spooled_last);
        if head > from {
            let missing: Vec<AuditRecord> = trail.records_after(from)?;
            tracing::warn!(
                records = missing.len(),
                after = from,
                "audit records in the file but not in the spool: spooled again"
            );
            for record in &missing {
                spool_insert(&spool, record)?;
            }
            spool.flush()?;
        }
        let spooled = Arc::new(Notify::new());
        let (sink, wake) = (spool.clone(), spooled.clone());
        let writer = Writer::start(
            trail,
            QUEUE,
            Box::new(move |records: &[AuditRecord]| {
                for record in records {
                    spool_insert(&sink, record).map_err(|e| e.to_string())?;
                }
                sink.flush().map_err(|e| e.to_string())?;
                wake.notify_one();
                Ok(())
            }),
        );
        let auditor = Self {
            writer,
            spool,
            meta,
            _db: db,
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

    /// Spooled records after `after`, in order, at most `limit`.
    pub fn pending(&self, after: u64, limit: usize) -> Vec<AuditRecord> {
        self.spool
            .range((after + 1).to_be_bytes()..)
            .take(limit)
            .filter_map(|item| item.ok())
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    /// The control plane stored everything up to `seq`: drop it from the spool. Not synced
    /// here: the writer's next group sync covers it, and a record acknowledged but spooled
    /// again after a crash is only sent twice (the control plane keeps each number once).
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
        let acked = self.meta.get(ACKED)?.and_then(|v| seq_of(&v)).unwrap_or(0);
        if seq > acked {
            self.meta.insert(ACKED, &seq.to_be_bytes())?;
        }
        Ok(removed)
    }

    /// Number of records waiting for the control plane.
    pub fn spooled_len(&self) -> usize {
        self.spool.len()
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

    /// A crash after the file sync and before the spool insert: the spool lacks the newest
    /// records. Reopening spools them from the file, so the control plane sees no gap.
    #[tokio::test]
    async fn records_missing_from_the_spool_are_rebuilt_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("open");
            write(&audit, 5).await;
            audit.ack(2).expect("ack");
            // Cut the spool after record 3, as a crash between the two writes would.
            for seq in [4u64, 5] {
                audit.spool.remove(seq.to_be_bytes()).expect("cut");
            }
            audit.spool.flush().expect("flush");
            assert_eq!(seqs(&audit), [3]);
        }
        let audit = Auditor::open(dir.path(), DEFAULT_MAX_FILE_BYTES).expect("reopen");
        assert_eq!(seqs(&audit), [3, 4, 5]);
        let rebuilt = audit.pending(3, 10);
        assert_eq!(rebuilt[0].target, "cmd3");
        assert_eq!(rebuilt[1].prev_hash, rebuilt[0].hash);
        // The next record follows on.
        let next = audit
            .record("agent.start", "ok", "", &who(), "")
            .await
            .expect("record");
        assert_eq!(next.seq, 6);
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
