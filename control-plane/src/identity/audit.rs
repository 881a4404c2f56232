//! The control plane's audit trail: who did what to which object, from where, and how it
//! ended — logins, refusals, key and token changes, every admin change.
//!
//! Records are appended, fsynced, to `<data-dir>/audit.jsonl` (one JSON line each, rotated by
//! size, the chain's head signed apart from the files, as agentd's trail) and indexed in a
//! sled tree keyed by sequence number for the API's filters. The file is the source of truth:
//! the chain continues from it, and records it holds that the index lacks (a crash between
//! the two writes) are indexed again on open. Each record carries the SHA-256 of the previous
//! one, so removing or editing a record breaks the chain (`verify`).
//!
//! Records are written by a thread of their own in groups (one sync for many), so handlers
//! never wait on the disk, and unauthenticated refusals are counted per source address: the
//! first of a minute is recorded at once, the rest as one record with their count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axon_trail::{TrailConfig, TrailFile, Writer};

use serde::Deserialize;
use time::OffsetDateTime;

use crate::identity::auth::Caller;
use crate::model::{Role, now};
use crate::store::{Db, StoreError, Tree};

pub use crate::model::AuditRecord as Record;

/// A record being built.
#[derive(Debug, Clone, Default)]
pub struct Event {
    action: String,
    outcome: String,
    actor: String,
    actor_role: Option<Role>,
    tenant_id: Option<String>,
    target: String,
    source_ip: Option<String>,
    reason: Option<String>,
    host: Option<(String, u64)>,
    count: Option<u64>,
}

axon_shared::chained_record!(Record);

impl Event {
    pub fn count(mut self, count: u64) -> Self {
        self.count = Some(count);
        self
    }
    pub fn host(mut self, host_id: &str, seq: u64) -> Self {
        self.host = Some((host_id.to_owned(), seq));
        self
    }
    pub fn actor_role_name(mut self, role: &str) -> Self {
        self.actor_role = serde_json::from_value(serde_json::Value::String(role.to_owned())).ok();
        self
    }
    pub fn tenant(mut self, tenant: Option<&str>) -> Self {
        self.tenant_id = tenant.map(str::to_owned);
        self
    }
    pub fn source_ip(mut self, ip: Option<&str>) -> Self {
        self.source_ip = ip.map(str::to_owned);
        self
    }
    pub fn caller(mut self, caller: &Caller) -> Self {
        self.actor = caller.id.clone();
        self.actor_role = Some(caller.role);
        self.tenant_id = caller.tenant_id.clone();
        if let Some(ip) = caller.ip {
            self.source_ip = Some(ip.to_string());
        }
        self
    }
    pub fn actor(mut self, id: &str, role: Role, tenant: Option<&str>) -> Self {
        self.actor = id.to_owned();
        self.actor_role = Some(role);
        self.tenant_id = tenant.map(str::to_owned);
        self
    }
    pub fn actor_id(mut self, id: &str) -> Self {
        self.actor = id.to_owned();
        self
    }
    pub fn target(mut self, target: &str) -> Self {
        self.target = target.chars().take(256).collect();
        self
    }
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.source_ip = Some(ip.to_string());
        self
    }
    pub fn maybe_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.source_ip = ip.map(|i| i.to_string());
        self
    }
    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.chars().take(512).collect());
        self
    }
}

/// Filters of `GET /api/audit`; all optional, combined with AND.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub tenant_id: Option<String>,
    pub target: Option<String>,
    /// Only records reported by this host.
    pub host: Option<String>,
    /// RFC 3339; records at or after.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::model::Rfc3339>")]
    pub since: Option<OffsetDateTime>,
    /// RFC 3339; records before.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::model::Rfc3339>")]
    pub until: Option<OffsetDateTime>,
    /// Only records with a smaller sequence number (paging backwards).
    pub before: Option<u64>,
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<usize>,
}

impl Filter {
    fn matches(&self, r: &Record) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.actor, &r.actor)
            && self
                .action
                .as_deref()
                .is_none_or(|a| r.action == a || (a.ends_with('.') && r.action.starts_with(a)))
            && eq(&self.outcome, &r.outcome)
            && eq(&self.target, &r.target)
            && self
                .host
                .as_deref()
                .is_none_or(|h| r.host_id.as_deref() == Some(h))
            && self
                .tenant_id
                .as_deref()
                .is_none_or(|t| r.tenant_id.as_deref() == Some(t))
            && self.since.is_none_or(|s| r.time >= s)
            && self.until.is_none_or(|u| r.time < u)
    }
}

/// Name of the trail's current file in the data dir.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// Rotate the file past this size; the index keeps every record regardless.
const MAX_FILE_BYTES: u64 = 64 << 20;
/// Rotated files kept.
const KEEP_ROTATED: u32 = 10;
/// Records queued for the writer; past that `record` waits for room.
const QUEUE: usize = 4096;
/// Unauthenticated refusals from one address are summed over this window.
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Addresses counted at once; past that they share one count.
const MAX_REFUSAL_SOURCES: usize = 10_000;
/// How long a reader waits for records queued before it.
const SETTLE: Duration = Duration::from_secs(2);
/// How long a change waits for its audit record to be written before it is refused.
const CONFIRM: Duration = Duration::from_secs(10);
/// Per host, the sequence number of the last record of its own trail kept here.
pub const AGENT_AUDIT_SEQ: &str = "agent_audit_seq";

/// Notes an agent's record as kept, with its index entry, so a record whose acknowledgement
/// was lost (a crash, a full disk after the write) is recognised when the agent sends it
/// again, and is kept once.
fn note_host_seq(seqs: &Tree<u64>, record: &Record) -> Result<(), StoreError> {
    if let (Some(host), Some(seq)) = (&record.host_id, record.host_seq)
        && seqs.get(host)?.is_none_or(|last| last < seq)
    {
        seqs.put(host, &seq)?;
    }
    Ok(())
}

/// The trail's layout in a data dir.
pub fn trail_config(data_dir: &std::path::Path) -> TrailConfig {
    TrailConfig::new(data_dir, AUDIT_FILE, MAX_FILE_BYTES, KEEP_ROTATED)
}

/// Refusals counted in the current window of one source.
struct Refusals {
    started: Instant,
    /// Refusals after the first one, not yet recorded.
    more: u64,
    last_route: String,
    last_reason: String,
}

/// The trail.
pub struct Audit {
    tree: Tree<Record>,
    writer: Writer<Record>,
    refusals: Mutex<HashMap<Option<IpAddr>, Refusals>>,
}

fn key(seq: u64) -> String {
    format!("{seq:020}")
}

impl Audit {
    /// Opens the trail: its files in `data_dir`, the index in `db`.
    pub fn open(
        db: &Db,
        data_dir: &std::path::Path,
        live: crate::live::Live,
    ) -> Result<Self, StoreError> {
        let tree: Tree<Record> = db.tree("audit")?;
        let host_seqs: Tree<u64> = db.tree(AGENT_AUDIT_SEQ)?;
        let file_error = |e: axon_trail::TrailError| StoreError::File {
            path: data_dir.join(AUDIT_FILE),
            source: std::io::Error::other(e.to_string()),
        };
        let (mut trail, opened) =
            TrailFile::open::<Record>(trail_config(data_dir)).map_err(file_error)?;
        let indexed = tree.last()?;
        let indexed_seq = indexed.as_ref().map_or(0, |r| r.seq);
        let file_seq = trail.head().map_or(0, |(seq, _)| seq);
        if file_seq > indexed_seq {
            let missing: Vec<Record> = trail.records_after(indexed_seq).map_err(file_error)?;
            tracing::warn!(
                records = missing.len(),
                "audit records in the file but not in the index: indexed again"
            );
            for record in &missing {
                tree.put(&key(record.seq), record)?;
                note_host_seq(&host_seqs, record)?;
            }
        } else if let Some(last) = indexed.filter(|r| r.seq > file_seq) {
            // An index from before the file existed (or a file that was lost): numbers go on
            // from the index, never repeat.
            trail.adopt_head(last.seq, &last.hash);
        }
        let index = tree.clone();
        let writer = Writer::start(
            trail,
            QUEUE,
            Box::new(move |records: &[Record]| {
                for record in records {
                    index
                        .put(&key(record.seq), record)
                        .map_err(|e| e.to_string())?;
                    note_host_seq(&host_seqs, record).map_err(|e| e.to_string())?;
                    tracing::info!(target: "audit", seq = record.seq, action = %record.action, outcome = %record.outcome, actor = %record.actor, object = %record.target, "audit");
                    live.publish(crate::live::LiveEvent::Audit {
                        record: Box::new(record.clone()),
                    });
                }
                Ok(())
            }),
        );
        let audit = Self {
            tree,
            writer,
            refusals: Mutex::new(HashMap::new()),
        };
        if let Some((last, head)) = opened.cut {
            audit.record(audit.event("audit.cut", "alert").target(AUDIT_FILE).reason(&format!(
                "the file ended at record {last} but its signed head was record {head}: records were cut off the end"
            )));
        }
        Ok(audit)
    }

    /// Starts an event.
    pub fn event(&self, action: &str, outcome: &str) -> Event {
        Event {
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            ..Event::default()
        }
    }

    fn build(event: Event) -> Record {
        Record {
            seq: 0,
            time: now(),
            action: event.action,
            outcome: event.outcome,
            actor: event.actor,
            actor_role: event.actor_role,
            tenant_id: event.tenant_id,
            target: event.target,
            source_ip: event.source_ip,
            reason: event.reason,
            host_id: event.host.as_ref().map(|h| h.0.clone()),
            host_seq: event.host.map(|h| h.1),
            count: event.count,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// Queues an event for the writer; false when the writer has stopped (logged). Waits
    /// only while the writer's queue is full.
    pub fn record(&self, event: Event) -> bool {
        let queued = self.writer.submit(Self::build(event));
        if !queued {
            tracing::error!("AUDIT RECORD LOST: the audit writer has stopped");
        }
        queued
    }

    /// Writes an event and waits until it is synced and indexed (records whose loss must be
    /// noticed, such as agents' records that are acknowledged afterwards).
    pub async fn write(&self, event: Event) -> bool {
        match self.writer.write(Self::build(event)).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "AUDIT RECORD NOT WRITTEN");
                false
            }
        }
    }

    /// An unauthenticated request was refused. The first refusal from an address in a window
    /// is recorded at once; the rest are counted and recorded as one when the window ends.
    pub fn unauthenticated(&self, ip: Option<IpAddr>, route: &str, reason: &str) {
        let mut windows = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let source = if windows.contains_key(&ip) || windows.len() < MAX_REFUSAL_SOURCES {
            ip
        } else {
            None
        };
        if let Some(w) = windows.get_mut(&source)
            && w.started.elapsed() < REFUSAL_WINDOW
        {
            w.more += 1;
            w.last_route = route.chars().take(256).collect();
            w.last_reason = reason.chars().take(256).collect();
            return;
        }
        let fresh = Refusals {
            started: Instant::now(),
            more: 0,
            last_route: String::new(),
            last_reason: String::new(),
        };
        let ended = windows.insert(source, fresh);
        drop(windows);
        if let Some(ended) = ended {
            self.refusal_summary(source, &ended);
        }
        self.record(
            self.event("access.unauthenticated", "denied")
                .maybe_ip(ip)
                .target(route)
                .reason(reason),
        );
    }

    /// The record of a window's refusals after its first one, if there were any.
    fn refusal_summary(&self, source: Option<IpAddr>, window: &Refusals) {
        if window.more == 0 {
            return;
        }
        self.record(
            self.event("access.unauthenticated", "denied")
                .maybe_ip(source)
                .target(&window.last_route)
                .reason(&format!(
                    "{} more like it within a minute; the last: {}",
                    window.more, window.last_reason
                ))
                .count(window.more),
        );
    }

    /// Records the counts of windows that have ended (`all`: of every window, at shutdown).
    pub fn flush_refusals(&self, all: bool) {
        let ended: Vec<(Option<IpAddr>, Refusals)> = self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extract_if(|_, w| all || w.started.elapsed() >= REFUSAL_WINDOW)
            .collect();
        for (source, window) in &ended {
            self.refusal_summary(*source, window);
        }
    }

    /// Waits until records queued before the call are indexed (read-your-writes).
    pub async fn settled(&self) {
        self.writer.settled(SETTLE).await;
    }

    /// Marks this moment, for [`Audit::written_since`].
    pub fn mark(&self) -> axon_trail::Mark {
        self.writer.mark()
    }

    /// Waits for the records queued so far; true when they are on disk and none failed
    /// since `mark`. A change is acknowledged only once its record is.
    pub async fn written_since(&self, mark: axon_trail::Mark) -> bool {
        self.writer.written_since(mark, CONFIRM).await
    }

    /// Records matching `filter`, newest first.
    pub fn query(&self, filter: &Filter) -> Result<Vec<Record>, StoreError> {
        let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
        let upper = filter.before.map(key);
        self.tree
            .scan_rev(upper.as_deref(), limit, |r| filter.matches(r))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether the trail is empty.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Checks the index's whole chain; returns the sequence number of the first broken
    /// record.
    pub fn verify(&self) -> Result<Option<u64>, StoreError> {
        verify_index(&self.tree)
    }
}

/// Checks the chain of the index in `db`.
pub fn verify_index(tree: &Tree<Record>) -> Result<Option<u64>, StoreError> {
    let mut check = axon_shared::chain::ChainCheck::new();
    for record in tree.values()? {
        if check.check(&record).is_err() {
            return Ok(Some(record.seq));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path, db: &Db) -> Audit {
        Audit::open(db, dir, crate::live::Live::default()).expect("audit")
    }

    #[tokio::test]
    async fn chain_verifies_and_detects_tampering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("db")).expect("db");
        let audit = open(dir.path(), &db);
        for i in 0..5 {
            audit.record(audit.event("user.create", "ok").target(&format!("u{i}")));
        }
        audit.settled().await;
        assert_eq!(audit.verify().expect("verify"), None);
        let found = audit
            .query(&Filter {
                target: Some("u3".into()),
                ..Filter::default()
            })
            .expect("query");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].seq, 4);
        let page = audit
            .query(&Filter {
                before: Some(4),
                ..Filter::default()
            })
            .expect("query");
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 2, 1]);

        // Reopening continues the chain.
        drop(audit);
        let audit = open(dir.path(), &db);
        assert!(audit.write(audit.event("user.delete", "ok")).await);
        assert_eq!(audit.verify().expect("verify"), None);
        // The file holds the same records, in order, and verifies up to its signed head.
        let verified = axon_trail::verify::<Record>(&trail_config(dir.path())).expect("file");
        assert_eq!((verified.records, verified.head), (6, Some(6)));

        let tree: Tree<Record> = db.tree("audit").expect("tree");
        let mut third = tree.get(&key(3)).expect("get").expect("record");
        third.target = "someone-else".into();
        tree.put(&key(3), &third).expect("tamper");
        assert_eq!(audit.verify().expect("verify"), Some(3));
    }

    /// A crash after the file sync and before the index write: the head comes from the file
    /// and the missing records are indexed again, so numbers never fork.
    #[tokio::test]
    async fn the_index_is_rebuilt_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("db")).expect("db");
        {
            let audit = open(dir.path(), &db);
            for i in 0..4 {
                assert!(
                    audit
                        .write(audit.event("user.create", "ok").target(&format!("u{i}")))
                        .await
                );
            }
        }
        let tree: Tree<Record> = db.tree("audit").expect("tree");
        tree.take(&key(4)).expect("cut");
        tree.take(&key(3)).expect("cut");
        let audit = open(dir.path(), &db);
        assert!(audit.write(audit.event("user.delete", "ok")).await);
        let seqs: Vec<u64> = audit
            .query(&Filter::default())
            .expect("query")
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, [5, 4, 3, 2, 1]);
        assert_eq!(audit.verify().expect("verify"), None);
        drop(audit);
        assert!(axon_trail::verify::<Record>(&trail_config(dir.path())).is_ok());
    }

    /// Refusals from one address within a window become one record plus one with the count
    /// of the rest; nothing is silently dropped.
    #[tokio::test]
    async fn unauthenticated_refusals_are_counted_per_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("db")).expect("db");
        let audit = open(dir.path(), &db);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..500 {
            audit.unauthenticated(Some(a), "GET /api/hosts", "missing token");
        }
        audit.unauthenticated(Some(b), "GET /api/users", "bad token");
        audit.settled().await;
        assert_eq!(audit.len(), 2, "one record per source so far");
        audit.flush_refusals(true);
        audit.settled().await;
        let records = audit
            .query(&Filter {
                action: Some("access.unauthenticated".into()),
                ..Filter::default()
            })
            .expect("query");
        let from_a: u64 = records
            .iter()
            .filter(|r| r.source_ip.as_deref() == Some("192.0.2.1"))
            .map(|r| r.count.unwrap_or(1))
            .sum();
        assert_eq!(from_a, 500);
        assert_eq!(records.len(), 3);
    }
}
