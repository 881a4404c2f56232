//! Usage: one record per call (tenant, key, model, upstream, host, tokens, cost, latency,
//! outcome), appended through a channel to a writer task that stores them in batches with a
//! daily roll-up per (day, tenant, key, model, upstream) that `/api/llm/usage` aggregates. The
//! request path never waits on the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use crate::store::{Db, StoreError, Tree};

/// How a call ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A complete answer.
    Ok,
    /// The request was refused as invalid (by the gateway or the upstream).
    Invalid,
    /// Every upstream tried failed before answering.
    UpstreamError,
    /// The answer broke off after it had started reaching the client.
    Cut,
    /// The client went away before the end.
    ClientClosed,
    /// A rate limit or budget refused the call.
    Limited,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Invalid => "invalid",
            Self::UpstreamError => "upstream_error",
            Self::Cut => "cut",
            Self::ClientClosed => "client_closed",
            Self::Limited => "limited",
        }
    }
}

/// One call.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UsageRecord {
    /// Time-ordered id (ULID).
    pub id: String,
    /// Milliseconds since the epoch.
    pub ts_ms: u64,
    /// The tenant metered (a client key's or user's tenant; none for staff).
    pub tenant_id: Option<String>,
    /// The API key, when the caller used one.
    pub key_id: Option<String>,
    /// The user, when the caller used a session.
    pub user_id: Option<String>,
    /// `chat`, `embeddings` or `images`.
    pub endpoint: String,
    /// The model or alias as asked.
    pub requested: String,
    /// `provider/model` that answered (or was tried last).
    pub model: String,
    /// The upstream that answered: `openai`, `ollama@<host id>`, ...
    pub upstream: String,
    /// The fleet host that answered, for GPU upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    /// The counts are the gateway's estimate: the upstream gave none.
    pub estimated: bool,
    pub cost_usd: f64,
    /// Time to the first byte of the answer sent to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    pub duration_ms: u64,
    /// Time spent in the gateway itself.
    pub overhead_us: u64,
    pub stream: bool,
    /// Upstreams tried (more than one after a fail-over).
    pub attempts: u32,
    pub outcome: Outcome,
    /// HTTP status answered.
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One roll-up row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Totals {
    pub requests: u64,
    pub failed: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    /// Requests whose tokens were estimated.
    pub estimated: u64,
    pub cost_usd: f64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.failed += other.failed;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_tokens += other.cached_tokens;
        self.estimated += other.estimated;
        self.cost_usd += other.cost_usd;
    }

    fn of(r: &UsageRecord) -> Self {
        Self {
            requests: 1,
            failed: u64::from(r.outcome != Outcome::Ok),
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cached_tokens: r.cached_tokens,
            estimated: u64::from(r.estimated),
            cost_usd: r.cost_usd,
        }
    }
}

/// The roll-up's key fields, in key order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DailyKey {
    pub day: String,
    pub tenant: String,
    pub key: String,
    pub model: String,
    pub upstream: String,
}

impl DailyKey {
    fn encode(&self) -> String {
        [
            &self.day,
            &self.tenant,
            &self.key,
            &self.model,
            &self.upstream,
        ]
        .map(|s| s.as_str())
        .join("\u{1f}")
    }

    fn decode(s: &str) -> Option<Self> {
        let mut it = s.split('\u{1f}');
        Some(Self {
            day: it.next()?.into(),
            tenant: it.next()?.into(),
            key: it.next()?.into(),
            model: it.next()?.into(),
            upstream: it.next()?.into(),
        })
    }
}

/// `YYYY-MM-DD` of a time in milliseconds (UTC).
pub fn day_of(ts_ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ts_ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// The stored usage and its writer.
pub struct UsageLog {
    records: Tree<UsageRecord>,
    daily: Tree<Totals>,
    queue: mpsc::Sender<UsageRecord>,
    submitted: AtomicU64,
    applied: Arc<AtomicU64>,
    settled: Arc<Notify>,
    stop: Arc<Notify>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How long the writer gathers records before storing them.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// Records kept waiting for the writer before new ones are dropped (and logged).
const QUEUE: usize = 65_536;

impl UsageLog {
    /// Opens the trees and starts the writer task (on the current runtime).
    pub fn open(db: &Db) -> Result<Arc<Self>, StoreError> {
        let records: Tree<UsageRecord> = db.tree("llm_usage")?;
        let daily: Tree<Totals> = db.tree("llm_usage_daily")?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let log = Arc::new(Self {
            records: records.clone(),
            daily: daily.clone(),
            queue: tx,
            submitted: AtomicU64::new(0),
            applied: Arc::new(AtomicU64::new(0)),
            settled: Arc::new(Notify::new()),
            stop: Arc::new(Notify::new()),
            task: std::sync::Mutex::new(None),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let task = handle.spawn(writer(
                rx,
                records,
                daily,
                log.applied.clone(),
                log.settled.clone(),
                log.stop.clone(),
            ));
            *log.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
        Ok(log)
    }

    /// Queues a record; never waits.
    pub fn submit(&self, record: UsageRecord) {
        match self.queue.try_send(record) {
            Ok(()) => {
                self.submitted.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::error!("usage queue full; a usage record was dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!(
                    "usage writer stopped; a record of a call ending at shutdown was dropped"
                );
            }
        }
    }

    /// Stores what is queued and stops the writer, releasing its handles on the store.
    pub async fn shutdown(&self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            self.stop.notify_one();
            let _ = task.await;
        }
    }

    /// Waits until every record queued so far is stored (or `limit` passes).
    pub async fn settled(&self, limit: std::time::Duration) {
        let target = self.submitted.load(Ordering::Relaxed);
        let _ = tokio::time::timeout(limit, async {
            loop {
                let notified = self.settled.notified();
                if self.applied.load(Ordering::Relaxed) >= target {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }

    /// Roll-up rows of days `from..=to` (`YYYY-MM-DD`).
    pub fn daily(&self, from: &str, to: &str) -> Result<Vec<(DailyKey, Totals)>, StoreError> {
        let upper = format!("{to}\u{1f}\u{10ffff}");
        Ok(self
            .daily
            .range(from, &upper)?
            .into_iter()
            .filter_map(|(k, v)| Some((DailyKey::decode(&k)?, v)))
            .collect())
    }

    /// The most recent records, newest first, at most `limit`, that `keep` accepts.
    pub fn recent(
        &self,
        limit: usize,
        keep: impl Fn(&UsageRecord) -> bool,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        self.records.scan_rev(None, limit, keep)
    }
}

async fn writer(
    mut rx: mpsc::Receiver<UsageRecord>,
    records: Tree<UsageRecord>,
    daily: Tree<Totals>,
    applied: Arc<AtomicU64>,
    settled: Arc<Notify>,
    stop: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(256);
    let mut stopping = false;
    while !stopping {
        tokio::select! {
            n = rx.recv_many(&mut batch, 1024) => {
                if n == 0 {
                    break;
                }
                // Gather what arrives in the next moments into the same write: one store
                // batch per interval instead of one per call keeps the writer's CPU off the
                // request path's cores.
                tokio::time::sleep(GATHER).await;
                while batch.len() < 8192 {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
            }
            () = stop.notified() => {
                rx.close();
                while let Ok(r) = rx.try_recv() {
                    batch.push(r);
                }
                stopping = true;
            }
        }
        if batch.is_empty() {
            continue;
        }
        let taken = std::mem::take(&mut batch);
        let n = taken.len() as u64;
        let records = records.clone();
        let daily = daily.clone();
        let stored =
            tokio::task::spawn_blocking(move || store_batch(&records, &daily, &taken)).await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "storing usage records failed"),
            Err(e) => tracing::error!(error = %e, "usage writer task failed"),
        }
        applied.fetch_add(n, Ordering::Relaxed);
        settled.notify_waiters();
    }
}

fn store_batch(
    records: &Tree<UsageRecord>,
    daily: &Tree<Totals>,
    batch: &[UsageRecord],
) -> Result<(), StoreError> {
    records.put_batch(batch.iter().map(|r| (r.id.as_str(), r)))?;
    let mut rollup: BTreeMap<String, Totals> = BTreeMap::new();
    for r in batch {
        let key = DailyKey {
            day: day_of(r.ts_ms),
            tenant: r.tenant_id.clone().unwrap_or_default(),
            key: r.key_id.clone().unwrap_or_default(),
            model: r.model.clone(),
            upstream: r.upstream.clone(),
        };
        rollup.entry(key.encode()).or_default().add(&Totals::of(r));
    }
    for (key, add) in rollup {
        if daily.update(&key, |t| t.add(&add))?.is_none() {
            daily.put(&key, &add)?;
        }
    }
    Ok(())
}

/// What `/api/llm/usage` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Tenant,
    Key,
    Model,
    Upstream,
    Day,
}

/// One aggregated row: the grouped fields, then the totals.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct UsageRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    #[serde(flatten)]
    pub totals: Totals,
}

/// Sums roll-up rows by the chosen fields. `tenant` (Some) keeps only that tenant's rows
/// (`Some("")`: rows without a tenant).
pub fn aggregate(
    rows: Vec<(DailyKey, Totals)>,
    group_by: &[GroupBy],
    tenant: Option<&str>,
) -> (Vec<UsageRow>, Totals) {
    let mut groups: BTreeMap<Vec<String>, Totals> = BTreeMap::new();
    let mut total = Totals::default();
    for (key, totals) in rows {
        if tenant.is_some_and(|t| t != key.tenant) {
            continue;
        }
        let fields: Vec<String> = group_by
            .iter()
            .map(|g| match g {
                GroupBy::Tenant => key.tenant.clone(),
                GroupBy::Key => key.key.clone(),
                GroupBy::Model => key.model.clone(),
                GroupBy::Upstream => key.upstream.clone(),
                GroupBy::Day => key.day.clone(),
            })
            .collect();
        total.add(&totals);
        groups.entry(fields).or_default().add(&totals);
    }
    let rows = groups
        .into_iter()
        .map(|(fields, totals)| {
            let mut row = UsageRow {
                tenant_id: None,
                key_id: None,
                model: None,
                upstream: None,
                day: None,
                totals,
            };
            for (g, v) in group_by.iter().zip(fields) {
                match g {
                    GroupBy::Tenant => row.tenant_id = Some(v),
                    GroupBy::Key => row.key_id = Some(v),
                    GroupBy::Model => row.model = Some(v),
                    GroupBy::Upstream => row.upstream = Some(v),
                    GroupBy::Day => row.day = Some(v),
                }
            }
            row
        })
        .collect();
    (rows, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tenant: Option<&str>, model: &str, tokens: u64, ts_ms: u64) -> UsageRecord {
        UsageRecord {
            id: crate::identity::auth::new_id(),
            ts_ms,
            tenant_id: tenant.map(str::to_owned),
            key_id: Some("k1".into()),
            user_id: None,
            endpoint: "chat".into(),
            requested: model.into(),
            model: model.into(),
            upstream: model.split('/').next().unwrap_or_default().into(),
            host_id: None,
            prompt_tokens: tokens,
            completion_tokens: 1,
            cached_tokens: 0,
            estimated: false,
            cost_usd: 0.5,
            ttft_ms: None,
            duration_ms: 3,
            overhead_us: 10,
            stream: false,
            attempts: 1,
            outcome: Outcome::Ok,
            status: 200,
            error: None,
        }
    }

    #[tokio::test]
    async fn records_roll_up_by_day_and_aggregate() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(dir.path()).expect("db");
        let log = UsageLog::open(&db).expect("open");
        let day1 = 1_767_225_600_000; // 2026-01-01
        let day2 = day1 + 86_400_000;
        log.submit(record(Some("t1"), "openai/a", 10, day1));
        log.submit(record(Some("t1"), "openai/a", 5, day1 + 1000));
        log.submit(record(Some("t2"), "gemini/b", 7, day2));
        log.submit(record(None, "openai/a", 1, day2));
        log.settled(std::time::Duration::from_secs(5)).await;
        let rows = log.daily("2026-01-01", "2026-01-02").expect("daily");
        assert_eq!(rows.len(), 3);
        let (by_tenant, total) = aggregate(rows.clone(), &[GroupBy::Tenant], None);
        assert_eq!(total.requests, 4);
        assert_eq!(total.prompt_tokens, 23);
        let t1 = by_tenant
            .iter()
            .find(|r| r.tenant_id.as_deref() == Some("t1"))
            .expect("t1");
        assert_eq!((t1.totals.requests, t1.totals.prompt_tokens), (2, 15));
        let (only_t2, total) = aggregate(rows.clone(), &[GroupBy::Model, GroupBy::Day], Some("t2"));
        assert_eq!(only_t2.len(), 1);
        assert_eq!(only_t2[0].model.as_deref(), Some("gemini/b"));
        assert_eq!(only_t2[0].day.as_deref(), Some("2026-01-02"));
        assert_eq!(total.requests, 1);
        let one_day = log.daily("2026-01-02", "2026-01-02").expect("daily");
        assert_eq!(aggregate(one_day, &[], None).1.requests, 2);
        let recent = log.recent(2, |_| true).expect("recent");
        assert_eq!(recent.len(), 2);
    }
}
