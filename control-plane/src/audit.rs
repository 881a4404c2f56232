//! The control plane's audit trail: who did what to which object, from where, and how it
//! ended — logins, refusals, key and token changes, every admin change.
//!
//! Records are appended, fsynced, to `<data-dir>/audit.jsonl` (one JSON line each, the same
//! lines as agentd's trail format) and indexed in a sled tree keyed by sequence number for the
//! API's filters. Each record carries the SHA-256 of the previous one, so removing or editing a
//! record breaks the chain (`verify`).

use std::net::IpAddr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::model::{Role, now};
use crate::store::{Db, StoreError, Tree};

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// e.g. `auth.login`, `user.create`, `access.forbidden`, `host.exec`.
    pub action: String,
    /// `ok`, `denied`, `throttled` or `error` (the link failed).
    pub outcome: String,
    /// User or API key id; empty for anonymous callers.
    pub actor: String,
    pub actor_role: Option<Role>,
    /// The actor's tenant (clients), not the target's.
    pub tenant_id: Option<String>,
    /// What the action was about (a user id, a slug, a route, an email).
    pub target: String,
    pub source_ip: Option<String>,
    pub reason: Option<String>,
    /// For records reported by an agent: the host, and the record's number in its own trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_seq: Option<u64>,
    /// SHA-256 (hex) of the previous record; zeros for the first.
    pub prev_hash: String,
    /// SHA-256 (hex) of this record with `hash` empty.
    pub hash: String,
}

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
}

impl Event {
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
#[derive(Debug, Clone, Default, Deserialize)]
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
    pub since: Option<OffsetDateTime>,
    /// RFC 3339; records before.
    #[serde(default, with = "time::serde::rfc3339::option")]
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

/// The trail.
pub struct Audit {
    tree: Tree<Record>,
    /// The append-only JSONL file, when the trail has one (tests may run without).
    file: Option<Mutex<std::fs::File>>,
    live: crate::live::Live,
    /// Next sequence number and the hash of the last record; appends are serialised.
    head: Mutex<(u64, String)>,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn key(seq: u64) -> String {
    format!("{seq:020}")
}

fn digest(record: &Record) -> String {
    let mut unsigned = record.clone();
    unsigned.hash = String::new();
    let bytes = serde_json::to_vec(&unsigned).unwrap_or_default();
    crate::auth::secret_digest(&bytes)
}

impl Audit {
    /// Opens the trail: the index in `db`, the JSONL file at `jsonl` (created if missing).
    pub fn open_with_file(
        db: &Db,
        jsonl: &std::path::Path,
        live: crate::live::Live,
    ) -> Result<Self, StoreError> {
        let mut audit = Self::open(db, live)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(jsonl)
            .map_err(|e| StoreError::File {
                path: jsonl.to_owned(),
                source: e,
            })?;
        audit.file = Some(Mutex::new(file));
        Ok(audit)
    }

    /// Opens the trail in `db` only.
    pub fn open(db: &Db, live: crate::live::Live) -> Result<Self, StoreError> {
        let tree: Tree<Record> = db.tree("audit")?;
        let head = match tree.last()? {
            Some(last) => (last.seq + 1, last.hash),
            None => (1, GENESIS.to_owned()),
        };
        Ok(Self {
            tree,
            file: None,
            live,
            head: Mutex::new(head),
        })
    }

    /// Starts an event.
    pub fn event(&self, action: &str, outcome: &str) -> Event {
        Event {
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            ..Event::default()
        }
    }

    /// Appends an event; false (and logged) when it could not be stored.
    pub fn record(&self, event: Event) -> bool {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = Record {
            seq: head.0,
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
            prev_hash: head.1.clone(),
            hash: String::new(),
        };
        record.hash = digest(&record);
        tracing::info!(target: "audit", seq = record.seq, action = %record.action, outcome = %record.outcome, actor = %record.actor, object = %record.target, "audit");
        if let Some(file) = &self.file {
            use std::io::Write;
            let mut line = serde_json::to_vec(&record).unwrap_or_default();
            line.push(b'\n');
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = f.write_all(&line).and_then(|()| f.sync_data()) {
                tracing::error!(error = %e, action = %record.action, "AUDIT RECORD LOST: audit.jsonl write failed");
                return false;
            }
        }
        match self.tree.put(&key(record.seq), &record) {
            Ok(()) => {
                *head = (record.seq + 1, record.hash.clone());
                self.live.publish(crate::live::LiveEvent::Audit {
                    record: Box::new(record),
                });
                true
            }
            Err(e) => {
                tracing::error!(error = %e, action = %record.action, "AUDIT RECORD LOST: store write failed");
                false
            }
        }
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

    /// Checks the whole chain; returns the sequence number of the first broken record.
    pub fn verify(&self) -> Result<Option<u64>, StoreError> {
        let mut prev = GENESIS.to_owned();
        for record in self.tree.values()? {
            if record.prev_hash != prev || digest(&record) != record.hash {
                return Ok(Some(record.seq));
            }
            prev = record.hash;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_verifies_and_detects_tampering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("db");
        let jsonl = dir.path().join("audit.jsonl");
        let audit =
            Audit::open_with_file(&db, &jsonl, crate::live::Live::default()).expect("audit");
        for i in 0..5 {
            audit.record(audit.event("user.create", "ok").target(&format!("u{i}")));
        }
        assert_eq!(audit.verify().expect("verify"), None);
        let found = audit
            .query(&Filter {
                target: Some("u3".into()),
                ..Filter::default()
            })
            .expect("query");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].seq, 4);
        let newest = audit
            .query(&Filter {
                limit: Some(2),
                ..Filter::default()
            })
            .expect("query");
        assert_eq!(newest.iter().map(|r| r.seq).collect::<Vec<_>>(), [5, 4]);
        let page = audit
            .query(&Filter {
                before: Some(4),
                ..Filter::default()
            })
            .expect("query");
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 2, 1]);

        // Reopening continues the chain.
        drop(audit);
        let audit =
            Audit::open_with_file(&db, &jsonl, crate::live::Live::default()).expect("reopen");
        audit.record(audit.event("user.delete", "ok"));
        assert_eq!(audit.verify().expect("verify"), None);
        // The JSONL file holds the same records, in order, one per line.
        let lines: Vec<Record> = std::fs::read_to_string(&jsonl)
            .expect("jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).expect("record"))
            .collect();
        assert_eq!(
            lines.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(
            lines.last().map(|r| r.hash.clone()),
            audit
                .query(&Filter::default())
                .expect("q")
                .first()
                .map(|r| r.hash.clone())
        );

        let tree: Tree<Record> = db.tree("audit").expect("tree");
        let mut third = tree.get(&key(3)).expect("get").expect("record");
        third.target = "someone-else".into();
        tree.put(&key(3), &third).expect("tamper");
        assert_eq!(audit.verify().expect("verify"), Some(3));
    }
}
