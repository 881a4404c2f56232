//! The durable outbox: everything the control plane sends to another service is recorded here
//! first, in the same transaction as the change it reports, then delivered by one worker.
//!
//! - A delivery is staged into the caller's [`Writes`] (`stage_event`, `stage_direct`), so it
//!   exists exactly when the caller's own change does; the caller then calls [`Outbox::wake`].
//! - The worker sends due deliveries (at most [`CONCURRENCY`] at once, [`CALL_TIMEOUT`] each),
//!   writes and flushes every state change, and sleeps until the next one is due or it is
//!   woken. Before a send it marks the delivery as being sent; a process that dies mid-send
//!   leaves that mark, and the next start records the interrupted attempt and sends again
//!   with the same idempotency key. A receiver may thus see a delivery twice, never silently:
//!   the attempts list says so, and receivers dedup on `Idempotency-Key`.
//! - Answers: 2xx delivered; 410 Gone fails at once and turns the subscription off; 408, 429,
//!   5xx, timeouts and connection errors are retried with exponential backoff and jitter (or
//!   after `Retry-After`), up to [`MAX_ATTEMPTS`]; any other answer (4xx, or a 3xx, since
//!   redirects are not followed) is a refusal, retried up to [`MAX_REFUSED_ATTEMPTS`] in case it
//!   was a passing misconfiguration (an n8n workflow not yet active answers 404).
//! - Delivered and failed records are kept for the listing, pruned past [`KEEP_FINISHED`] or
//!   30 days.
//!
//! Targets are generic (`kind` + URL): webhook subscriptions and the builder are signed POSTs;
//! a kind with a registered [`Courier`] (the deploy channels) is sent, classified and settled
//! by it. A delivery staged *at most once* is never sent again after a stop cut its attempt
//! short: its courier asks the service what happened, and if the service cannot tell, the
//! delivery ends `unknown` for a person to decide.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::webhooks::{self, Subscription};
use crate::identity::auth::new_id;
use crate::store::{Db, StoreError, Tree, Writes};

/// Attempts before a retryable failure (408, 429, 5xx, no answer) is given up.
pub const MAX_ATTEMPTS: u32 = 8;
/// Attempts before a refusal (another 4xx, a 3xx) is given up.
pub const MAX_REFUSED_ATTEMPTS: u32 = 3;
/// Attempts kept on a record, the newest.
pub const KEEP_ATTEMPTS: usize = 20;
/// Deliveries in flight at once.
pub const CONCURRENCY: usize = 8;
/// Longest wait for one answer, body included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait after the first failure; doubled after each, up to `MAX_DELAY`.
pub const FIRST_DELAY: Duration = Duration::from_secs(30);
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 60);
/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Delivered and failed records kept, the newest.
pub const KEEP_FINISHED: usize = 10_000;
/// Delivered and failed records older than this are pruned.
const KEEP_FINISHED_FOR: time::Duration = time::Duration::days(30);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The most of an answer's body read; of that, a short excerpt is kept.
const BODY_CAP: usize = 64 * 1024;
const EXCERPT_CHARS: usize = 200;
/// A delivery whose state could not be written waits this long before the next try.
const STORE_COOLDOWN: Duration = Duration::from_secs(5);

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Target {
    /// `webhook` (a subscription), or a configured target such as `builder`.
    pub kind: String,
    /// For `webhook`: the subscription, whose URL and secret are read when it is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
    /// Where it was (or will be) sent.
    pub url: String,
}

/// The kind of target a subscription's deliveries have.
pub const WEBHOOK: &str = "webhook";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx answer came.
    Delivered,
    /// Given up; `POST /api/outbox/{id}/retry` puts it back.
    Failed,
    /// An at-most-once delivery whose attempt a stop cut short and whose service could not
    /// say what happened: never sent again by itself.
    Unknown,
}

/// One try at sending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Attempt {
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    pub at: OffsetDateTime,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// What went wrong, briefly (an excerpt of the answer, a timeout, a refused connection).
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One message to one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Delivery {
    /// Time-ordered; also the `X-Axon-Delivery` header.
    pub id: String,
    /// The same on every attempt, across restarts and manual retries.
    pub idempotency_key: String,
    /// e.g. `order.created`.
    pub event: String,
    pub target: Target,
    /// The event's data (the body's `data` field).
    pub payload: Value,
    pub tenant_id: Option<String>,
    pub state: DeliveryState,
    /// Attempts made since it was staged or last retried by hand.
    pub attempt_count: u32,
    /// The newest attempts, oldest first (at most 20).
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due (pending deliveries).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::model::Rfc3339>")]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::model::Rfc3339>")]
    pub delivered_at: Option<OffsetDateTime>,
    /// Set while an attempt is under way; left behind by a process that died mid-send.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<crate::model::Rfc3339>")]
    pub sending_since: Option<OffsetDateTime>,
    /// Never sent again after an interrupted attempt (deploys).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub at_most_once: bool,
    /// What the service answered, as its courier read it (post ids, message ids); no secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

impl Delivery {
    /// The body sent: `{"id", "event", "created_at", "tenant_id", "data"}`.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            id: &'a str,
            event: &'a str,
            #[serde(with = "time::serde::rfc3339")]
            created_at: OffsetDateTime,
            tenant_id: Option<&'a str>,
            data: &'a Value,
        }
        serde_json::to_vec(&Body {
            id: &self.id,
            event: &self.event,
            created_at: self.created_at,
            tenant_id: self.tenant_id.as_deref(),
            data: &self.payload,
        })
        .unwrap_or_default()
    }

    fn push_attempt(&mut self, attempt: Attempt) {
        self.attempts.push(attempt);
        if self.attempts.len() > KEEP_ATTEMPTS {
            let excess = self.attempts.len() - KEEP_ATTEMPTS;
            self.attempts.drain(..excess);
        }
        self.attempt_count = self.attempt_count.saturating_add(1);
    }
}

/// What `retry` found.
#[derive(Debug)]
pub enum Retried {
    Requeued(Box<Delivery>),
    NotFound,
    /// Only failed deliveries go back to pending.
    NotFailed(DeliveryState),
    /// A deploy goes again through its order, where its preconditions are checked.
    AtMostOnce,
}

/// How an attempt ended, for the next state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Try again, after `Retry-After` if the receiver sent one.
    Retry(Option<Duration>),
    /// Any other answer: a few more tries.
    Refused,
    /// A permanent refusal (bad credentials, a chat that does not exist): fail at once.
    Failed,
    /// 410: never again, and the subscription goes off.
    Gone,
    /// Nowhere to send it (the subscription is gone or off).
    Undeliverable,
    /// An interrupted at-most-once attempt the service could not account for.
    Unknown,
}

/// One attempt's end, as a courier reports it.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The service's HTTP status, when it answered.
    pub status: Option<u16>,
    pub verdict: Verdict,
    /// What went wrong, in a sentence, without secrets.
    pub error: Option<String>,
    /// What the service said, for the record (ids, per-platform results).
    pub result: Option<Value>,
}

/// Sends one kind of delivery in its service's own format instead of a signed webhook POST,
/// and keeps the records that follow its state.
pub trait Courier: Send + Sync {
    /// One attempt.
    fn send<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Sent>;
    /// After a stop cut an attempt short: what the service says happened, or `None` when it
    /// cannot tell (the delivery then ends `unknown`).
    fn check<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Option<Sent>>;
    /// Stages, into the same transaction as the delivery's new state, the writes that follow
    /// it (an order's deploy event).
    fn settle(&self, writes: &mut Writes, delivery: &Delivery) -> Result<(), StoreError>;
    /// Attempts before a retryable failure is given up.
    fn max_attempts(&self) -> u32 {
        MAX_ATTEMPTS
    }
    /// The wait after `attempts` failed attempts.
    fn backoff(&self, attempts: u32) -> Duration {
        backoff(attempts)
    }
}

/// The outbox: its records, the subscriptions, and the worker's wake-up.
pub struct Outbox {
    db: Db,
    /// id → delivery.
    pub deliveries: Tree<Delivery>,
    /// id → when it is due (unix ms), for pending deliveries only.
    pending: Tree<u64>,
    pub subscriptions: Tree<Subscription>,
    wake: Notify,
    /// Signing secrets of configured targets, by kind.
    direct_secrets: Mutex<HashMap<String, String>>,
    /// Finished attempts by target kind and outcome, since the start.
    counts: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Couriers by target kind.
    couriers: std::sync::RwLock<HashMap<String, Arc<dyn Courier>>>,
}

fn unix_ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn later(t: OffsetDateTime, by: Duration) -> OffsetDateTime {
    t + time::Duration::try_from(by).unwrap_or(time::Duration::HOUR)
}

/// The wait after `attempts` attempts that all failed: 30 s doubled each time, capped at 30
/// minutes, then scaled by a random 0.8 to 1.2 (and capped again), so receivers coming back
/// are not hit by every sender at once. Eight attempts span about an hour.
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    let base = FIRST_DELAY.saturating_mul(1u32 << doublings).min(MAX_DELAY);
    let jitter: f64 = rand::random_range(0.8..1.2);
    base.mul_f64(jitter).min(MAX_DELAY)
}

impl Outbox {
    /// Opens the outbox's trees.
    pub fn open(db: &Db) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            deliveries: db.tree("outbox")?,
            pending: db.tree("outbox_pending")?,
            subscriptions: db.tree("webhook_subscriptions")?,
            wake: Notify::new(),
            direct_secrets: Mutex::default(),
            counts: Mutex::default(),
            couriers: Default::default(),
        })
    }

    /// Stages one delivery of `event` for every active subscription that wants it; returns
    /// how many. Nothing is written until the caller applies `writes`; then it calls `wake`.
    pub fn stage_event(
        &self,
        writes: &mut Writes,
        event: &str,
        tenant_id: Option<&str>,
        payload: Value,
    ) -> Result<usize, StoreError> {
        let mut staged = 0;
        for sub in self.subscriptions.values()? {
            if sub.wants(event) {
                let target = Target {
                    kind: WEBHOOK.into(),
                    subscription_id: Some(sub.id),
                    url: sub.url,
                };
                self.stage(writes, target, event, tenant_id, payload.clone(), None)?;
                staged += 1;
            }
        }
        Ok(staged)
    }

    /// Stages one delivery to a configured target (the builder's webhook, a deploy channel);
    /// the caller has checked `url`. Signed with the secret set for `target_kind`, if any.
    /// Returns the delivery's id.
    pub fn stage_direct(
        &self,
        writes: &mut Writes,
        target_kind: &str,
        url: &str,
        event: &str,
        tenant_id: Option<&str>,
        payload: Value,
    ) -> Result<String, StoreError> {
        let target = Target {
            kind: target_kind.into(),
            subscription_id: None,
            url: url.into(),
        };
        Ok(self
            .stage(writes, target, event, tenant_id, payload, None)?
            .id)
    }

    /// Stages one at-most-once delivery to a courier's target kind, under the caller's
    /// idempotency key: after an interrupted attempt it is checked with the service, never
    /// sent again blindly.
    #[allow(clippy::too_many_arguments)]
    pub fn stage_at_most_once(
        &self,
        writes: &mut Writes,
        id: &str,
        target_kind: &str,
        url: &str,
        event: &str,
        tenant_id: Option<&str>,
        payload: Value,
        idempotency_key: &str,
    ) -> Result<Delivery, StoreError> {
        let target = Target {
            kind: target_kind.into(),
            subscription_id: None,
            url: url.into(),
        };
        self.stage(
            writes,
            target,
            event,
            tenant_id,
            payload,
            Some((id.to_owned(), idempotency_key.to_owned())),
        )
    }

    /// Registers the courier of a target kind; before the worker starts.
    pub fn register(&self, kind: &str, courier: Arc<dyn Courier>) {
        self.couriers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind.to_owned(), courier);
    }

    fn courier(&self, kind: &str) -> Option<Arc<dyn Courier>> {
        self.couriers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(kind)
            .cloned()
    }

    /// One delivery.
    pub fn get(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        self.deliveries.get(id)
    }

    /// Stages a `ping` to one subscription, whatever events it asks for.
    pub fn stage_ping(
        &self,
        writes: &mut Writes,
        sub: &Subscription,
    ) -> Result<Delivery, StoreError> {
        let target = Target {
            kind: WEBHOOK.into(),
            subscription_id: Some(sub.id.clone()),
            url: sub.url.clone(),
        };
        let payload = serde_json::json!({
            "subscription_id": sub.id,
            "message": "ping from the Axon control plane",
        });
        self.stage(writes, target, "ping", None, payload, None)
    }

    fn stage(
        &self,
        writes: &mut Writes,
        target: Target,
        event: &str,
        tenant_id: Option<&str>,
        payload: Value,
        at_most_once: Option<(String, String)>,
    ) -> Result<Delivery, StoreError> {
        let (id, key, at_most_once) = match at_most_once {
            Some((id, key)) => (id, key, true),
            None => {
                let id = new_id();
                (id.clone(), id, false)
            }
        };
        let now = OffsetDateTime::now_utc();
        let delivery = Delivery {
            at_most_once,
            idempotency_key: key,
            result: None,
            id,
            event: event.into(),
            target,
            payload,
            tenant_id: tenant_id.map(str::to_owned),
            state: DeliveryState::Pending,
            attempt_count: 0,
            attempts: Vec::new(),
            next_attempt_at: Some(now),
            created_at: now,
            delivered_at: None,
            sending_since: None,
        };
        writes.insert_new(&self.deliveries, &delivery.id, &delivery)?;
        writes.put(&self.pending, &delivery.id, &unix_ms(now))?;
        Ok(delivery)
    }

    /// Tells the worker that deliveries were committed (or changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sets (or with `None` removes) the signing secret of a configured target kind.
    pub fn set_direct_secret(&self, kind: &str, secret: Option<String>) {
        let mut secrets = self
            .direct_secrets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match secret {
            Some(s) => secrets.insert(kind.to_owned(), s),
            None => secrets.remove(kind),
        };
    }

    /// Pending deliveries to targets of `kind`.
    pub fn pending_of(&self, kind: &str) -> Result<usize, StoreError> {
        let mut n = 0;
        for (id, _) in self.pending.entries()? {
            if self
                .deliveries
                .get(&id)?
                .is_some_and(|d| d.target.kind == kind && d.state == DeliveryState::Pending)
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Deliveries waiting for an attempt.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Finished attempts since the start: target kind, outcome (`delivered`, `retried`,
    /// `failed`), count.
    pub fn counts(&self) -> Vec<(String, &'static str, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((kind, outcome), n)| (kind.clone(), *outcome, *n))
            .collect()
    }

    /// Up to `limit` deliveries, newest first, in `state` and to `subscription` if given.
    pub fn list(
        &self,
        state: Option<DeliveryState>,
        subscription: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.deliveries.scan_rev(None, limit, |d| {
            state.is_none_or(|s| d.state == s)
                && subscription.is_none_or(|s| d.target.subscription_id.as_deref() == Some(s))
        })
    }

    /// Puts a failed delivery back to pending, due now, with the same idempotency key and a
    /// fresh count of attempts. The caller flushes and wakes.
    pub fn retry(&self, id: &str) -> Result<Retried, StoreError> {
        loop {
            let Some(seen) = self.deliveries.get_snapshot(id)? else {
                return Ok(Retried::NotFound);
            };
            if seen.value.state != DeliveryState::Failed {
                return Ok(Retried::NotFailed(seen.value.state));
            }
            if seen.value.at_most_once {
                return Ok(Retried::AtMostOnce);
            }
            let now = OffsetDateTime::now_utc();
            let mut delivery = seen.value.clone();
            delivery.state = DeliveryState::Pending;
            delivery.attempt_count = 0;
            delivery.next_attempt_at = Some(now);
            let mut writes = Writes::new();
            writes.replace(&self.deliveries, id, &seen, &delivery)?;
            writes.put(&self.pending, id, &unix_ms(now))?;
            if writes.apply()? {
                return Ok(Retried::Requeued(Box::new(delivery)));
            }
        }
    }

    /// Starts the worker; it stops when `shutdown` turns true, giving sends under way a
    /// moment to finish (those cut off are sent again at the next start).
    pub fn spawn_worker(
        self: Arc<Self>,
        client: reqwest::Client,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tokio::spawn(self.work(client, shutdown))
    }

    async fn work(self: Arc<Self>, client: reqwest::Client, mut shutdown: watch::Receiver<bool>) {
        match self.recover().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deliveries = n,
                "outbox: deliveries cut off by a stop will be sent again"
            ),
            Err(e) => tracing::error!(error = %e, "outbox: recovery failed"),
        }
        self.prune_logged();
        let mut last_prune = Instant::now();
        let mut running = tokio::task::JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut cooling: HashMap<String, Instant> = HashMap::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            cooling.retain(|_, until| *until > Instant::now());
            let busy: HashSet<&str> = in_flight
                .values()
                .map(String::as_str)
                .chain(cooling.keys().map(String::as_str))
                .collect();
            let now = unix_ms(OffsetDateTime::now_utc());
            let (due, next) = match self.due(&busy, now, CONCURRENCY - running.len()) {
                Ok(found) => found,
                Err(e) => {
                    tracing::error!(error = %e, "outbox: cannot read the pending deliveries");
                    (Vec::new(), Some(now + STORE_COOLDOWN.as_millis() as u64))
                }
            };
            drop(busy);
            for id in due {
                let handle = running.spawn(self.clone().attempt(client.clone(), id.clone()));
                in_flight.insert(handle.id(), id);
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                self.prune_logged();
                last_prune = Instant::now();
            }
            let mut sleep = PRUNE_EVERY.saturating_sub(last_prune.elapsed());
            if let Some(next) = next {
                sleep = sleep.min(Duration::from_millis(next.saturating_sub(now)));
            }
            if let Some(until) = cooling.values().min() {
                sleep = sleep.min(until.saturating_duration_since(Instant::now()));
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    let (task, stored) = match done {
                        Ok((task, stored)) => (task, stored),
                        Err(e) => (e.id(), false),
                    };
                    if let Some(id) = in_flight.remove(&task)
                        && !stored
                    {
                        cooling.insert(id, Instant::now() + STORE_COOLDOWN);
                    }
                }
                _ = shutdown.changed() => {}
            }
        }
        let grace = tokio::time::timeout(Duration::from_secs(2), async {
            while running.join_next().await.is_some() {}
        });
        if grace.await.is_err() {
            running.abort_all();
        }
    }

    /// Due deliveries not under way, earliest first, up to `room`; and when the next of the
    /// others falls due.
    fn due(
        &self,
        busy: &HashSet<&str>,
        now: u64,
        room: usize,
    ) -> Result<(Vec<String>, Option<u64>), StoreError> {
        let mut due = Vec::new();
        let mut next: Option<u64> = None;
        for (id, at) in self.pending.entries()? {
            if busy.contains(id.as_str()) {
                continue;
            }
            if at <= now {
                due.push((at, id));
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        due.sort_unstable();
        Ok((due.into_iter().take(room).map(|(_, id)| id).collect(), next))
    }

    /// Records the attempts a previous process cut off and makes those deliveries due now;
    /// an at-most-once delivery is settled with what its service says happened instead, or
    /// ends `unknown`. Drops index entries without a pending delivery. Returns how many
    /// attempts were cut off.
    async fn recover(&self) -> Result<usize, StoreError> {
        let mut cut_off = 0;
        for (id, _) in self.pending.entries()? {
            let Some(seen) = self.deliveries.get_snapshot(&id)? else {
                self.pending.take(&id)?;
                continue;
            };
            if seen.value.state != DeliveryState::Pending {
                self.pending.take(&id)?;
                continue;
            }
            let Some(since) = seen.value.sending_since else {
                continue;
            };
            cut_off += 1;
            if seen.value.at_most_once {
                self.settle_interrupted(&id, &seen.value, since).await?;
                continue;
            }
            let mut delivery = seen.value.clone();
            delivery.sending_since = None;
            delivery.push_attempt(Attempt {
                at: since,
                status: None,
                error: Some("interrupted: the control plane stopped before an answer came".into()),
                duration_ms: 0,
            });
            let now = OffsetDateTime::now_utc();
            delivery.next_attempt_at = Some(now);
            let mut writes = Writes::new();
            writes.replace(&self.deliveries, &id, &seen, &delivery)?;
            writes.put(&self.pending, &id, &unix_ms(now))?;
            if !writes.apply()? {
                cut_off -= 1;
            }
        }
        if cut_off > 0 {
            self.db.flush().await?;
        }
        Ok(cut_off)
    }

    /// Settles an at-most-once delivery whose attempt since `since` never recorded its end:
    /// with what its service says happened, or as `unknown`. It is not sent again.
    async fn settle_interrupted(
        &self,
        id: &str,
        delivery: &Delivery,
        since: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let checked = match self.courier(&delivery.target.kind) {
            Some(courier) => courier.check(delivery).await,
            None => None,
        };
        let attempt = |error: String, status| Attempt {
            at: since,
            status,
            error: Some(error),
            duration_ms: 0,
        };
        match checked {
            Some(sent) => {
                let error = sent
                    .error
                    .clone()
                    .unwrap_or_else(|| "interrupted; the service confirmed the outcome".into());
                self.finish(id, attempt(error, sent.status), sent.verdict, sent.result)
                    .await
            }
            None => {
                let error = "interrupted: the attempt's end was never recorded (a stop, or a \
                             store failure), and the service cannot say whether it acted; not \
                             sent again"
                    .to_owned();
                self.finish(id, attempt(error, None), Verdict::Unknown, None)
                    .await
            }
        }
    }

    fn prune_logged(&self) {
        match self.prune(OffsetDateTime::now_utc()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "outbox: old deliveries pruned"),
            Err(e) => tracing::error!(error = %e, "outbox: prune failed"),
        }
    }

    /// Removes finished deliveries past `KEEP_FINISHED` (oldest first) or older than 30 days.
    fn prune(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let finished: Vec<(String, OffsetDateTime)> = self
            .deliveries
            .entries()?
            .into_iter()
            .filter(|(_, d)| d.state != DeliveryState::Pending)
            .map(|(k, d)| (k, d.created_at))
            .collect();
        let excess = finished.len().saturating_sub(KEEP_FINISHED);
        let cutoff = now - KEEP_FINISHED_FOR;
        let mut removed = 0;
        for (i, (key, created)) in finished.iter().enumerate() {
            if i < excess || *created < cutoff {
                self.deliveries.take(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// One attempt at one delivery; returns its id and whether its state could be written.
    async fn attempt(self: Arc<Self>, client: reqwest::Client, id: String) -> bool {
        match self.try_attempt(&client, &id).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(delivery = %id, error = %e, "outbox: an attempt could not be recorded");
                false
            }
        }
    }

    async fn try_attempt(&self, client: &reqwest::Client, id: &str) -> Result<(), StoreError> {
        let Some(seen) = self.deliveries.get_snapshot(id)? else {
            self.pending.take(id)?;
            return Ok(());
        };
        if seen.value.state != DeliveryState::Pending {
            self.pending.take(id)?;
            return Ok(());
        }
        if seen.value.at_most_once
            && let Some(since) = seen.value.sending_since
        {
            // An earlier attempt's end could not be written: it may have reached the service.
            return self.settle_interrupted(id, &seen.value, since).await;
        }
        let started_at = OffsetDateTime::now_utc();
        let resolved = if seen.value.at_most_once && self.courier(&seen.value.target.kind).is_none()
        {
            Ok(Err("its channel is not configured on this control plane"))
        } else {
            self.resolve(&seen.value.target)
        };
        let (url, secret) = match resolved? {
            Ok(found) => found,
            Err(reason) => {
                let attempt = Attempt {
                    at: started_at,
                    status: None,
                    error: Some(reason.into()),
                    duration_ms: 0,
                };
                return self.finish(id, attempt, Verdict::Undeliverable, None).await;
            }
        };
        let mut sending = seen.value.clone();
        sending.sending_since = Some(started_at);
        sending.target.url = url;
        let mut writes = Writes::new();
        writes.replace(&self.deliveries, id, &seen, &sending)?;
        if !writes.apply()? {
            // Changed meanwhile (a manual retry); the worker reads it again.
            return Ok(());
        }
        self.db.flush().await?;
        let started = Instant::now();
        let sent = match self.courier(&sending.target.kind) {
            Some(courier) => courier.send(&sending).await,
            None => {
                let (status, verdict, error) = send(client, &sending, secret.as_deref()).await;
                Sent {
                    status,
                    verdict,
                    error,
                    result: None,
                }
            }
        };
        let attempt = Attempt {
            at: started_at,
            status: sent.status,
            error: sent.error,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        self.finish(id, attempt, sent.verdict, sent.result).await
    }

    /// The URL and signing secret of a target, or why it cannot be sent.
    #[allow(clippy::type_complexity)]
    fn resolve(
        &self,
        target: &Target,
    ) -> Result<Result<(String, Option<String>), &'static str>, StoreError> {
        if target.kind == WEBHOOK {
            let Some(sub_id) = &target.subscription_id else {
                return Ok(Err("the delivery names no subscription"));
            };
            return Ok(match self.subscriptions.get(sub_id)? {
                None => Err("the subscription was deleted"),
                Some(sub) if !sub.active => Err("the subscription is disabled"),
                Some(sub) => Ok((sub.url, Some(sub.secret))),
            });
        }
        let secret = self
            .direct_secrets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target.kind)
            .cloned();
        Ok(Ok((target.url.clone(), secret)))
    }

    /// Writes the attempt and the state it leads to (with what the courier stages), and
    /// flushes.
    async fn finish(
        &self,
        id: &str,
        attempt: Attempt,
        verdict: Verdict,
        result: Option<Value>,
    ) -> Result<(), StoreError> {
        let status = attempt.status;
        let delivery = loop {
            let Some(seen) = self.deliveries.get_snapshot(id)? else {
                self.pending.take(id)?;
                return Ok(());
            };
            let courier = self.courier(&seen.value.target.kind);
            let max_attempts = courier.as_ref().map_or(MAX_ATTEMPTS, |c| c.max_attempts());
            let wait = |n| {
                courier
                    .as_ref()
                    .map_or_else(|| backoff(n), |c| c.backoff(n))
            };
            let mut delivery = seen.value.clone();
            delivery.sending_since = None;
            delivery.push_attempt(attempt.clone());
            if result.is_some() {
                delivery.result = result.clone();
            }
            let now = OffsetDateTime::now_utc();
            let retry_after = match verdict {
                Verdict::Delivered => {
                    delivery.state = DeliveryState::Delivered;
                    delivery.delivered_at = Some(now);
                    None
                }
                Verdict::Gone | Verdict::Undeliverable | Verdict::Failed => {
                    delivery.state = DeliveryState::Failed;
                    None
                }
                Verdict::Unknown => {
                    delivery.state = DeliveryState::Unknown;
                    None
                }
                Verdict::Retry(after) if delivery.attempt_count < max_attempts => {
                    Some(after.map_or_else(
                        || wait(delivery.attempt_count),
                        |a| a.clamp(Duration::from_secs(1), MAX_RETRY_AFTER),
                    ))
                }
                Verdict::Refused if delivery.attempt_count < MAX_REFUSED_ATTEMPTS => {
                    Some(wait(delivery.attempt_count))
                }
                Verdict::Retry(_) | Verdict::Refused => {
                    delivery.state = DeliveryState::Failed;
                    None
                }
            };
            let mut writes = Writes::new();
            match retry_after {
                Some(wait) => {
                    let at = later(now, wait);
                    delivery.next_attempt_at = Some(at);
                    writes.put(&self.pending, id, &unix_ms(at))?;
                }
                None => {
                    delivery.next_attempt_at = None;
                    writes.remove(&self.pending, id);
                }
            }
            writes.replace(&self.deliveries, id, &seen, &delivery)?;
            if let Some(courier) = &courier {
                courier.settle(&mut writes, &delivery)?;
            }
            if writes.apply()? {
                break delivery;
            }
        };
        self.db.flush().await?;
        let outcome = match delivery.state {
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Pending => "retried",
            DeliveryState::Unknown => "unknown",
        };
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((delivery.target.kind.clone(), outcome))
            .or_default() += 1;
        match delivery.state {
            DeliveryState::Pending => tracing::info!(
                delivery = %id, event = %delivery.event, status = ?status,
                attempts = delivery.attempt_count,
                next = ?delivery.next_attempt_at,
                "outbox: attempt failed; will retry"
            ),
            DeliveryState::Delivered => {
                tracing::debug!(delivery = %id, event = %delivery.event, "outbox: delivered")
            }
            DeliveryState::Failed => tracing::warn!(
                delivery = %id, event = %delivery.event, status = ?status,
                attempts = delivery.attempt_count, "outbox: delivery failed; giving up"
            ),
            DeliveryState::Unknown => tracing::warn!(
                delivery = %id, event = %delivery.event,
                "outbox: an interrupted delivery's outcome is unknown; a person must decide"
            ),
        }
        if let Some(sub_id) = &delivery.target.subscription_id
            && delivery.state != DeliveryState::Pending
        {
            self.subscriptions.update(sub_id, |sub| {
                match delivery.state {
                    DeliveryState::Delivered => sub.delivered += 1,
                    _ => sub.failed += 1,
                }
                sub.last_delivery_at = delivery.delivered_at.or(Some(attempt.at));
                sub.last_status = status;
                if verdict == Verdict::Gone {
                    sub.active = false;
                    sub.disabled_reason = Some("the receiver answered 410 Gone".into());
                    sub.updated_at = crate::model::now();
                }
            })?;
            self.db.flush().await?;
            if verdict == Verdict::Gone {
                tracing::warn!(subscription = %sub_id, "outbox: the receiver answered 410 Gone; subscription disabled");
            }
        }
        Ok(())
    }
}

/// The HTTP client deliveries go through: no proxy, no redirects (a redirect would carry the
/// signed body elsewhere), `CALL_TIMEOUT` per call.
pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(webhooks::USER_AGENT)
        .build()
        .map_err(|e| format!("cannot build the outbox's HTTP client: {e}"))
}

/// Sends one signed POST; returns the status if an answer came, the verdict and a short error.
async fn send(
    client: &reqwest::Client,
    delivery: &Delivery,
    secret: Option<&str>,
) -> (Option<u16>, Verdict, Option<String>) {
    use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
    let body = delivery.body();
    let timestamp = OffsetDateTime::now_utc().unix_timestamp();
    let mut request = client
        .post(&delivery.target.url)
        .header(CONTENT_TYPE, "application/json")
        .header("X-Axon-Event", &delivery.event)
        .header("X-Axon-Delivery", &delivery.id)
        .header("Idempotency-Key", &delivery.idempotency_key)
        .header("X-Axon-Timestamp", timestamp.to_string());
    if let Some(secret) = secret {
        request = request.header(
            "X-Axon-Signature",
            webhooks::signature(secret, timestamp, &body),
        );
    }
    let mut response = match request.body(body).send().await {
        Ok(r) => r,
        Err(e) => return (None, Verdict::Retry(None), Some(describe(&e))),
    };
    let status = response.status().as_u16();
    if response.status().is_success() {
        return (Some(status), Verdict::Delivered, None);
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::llm::transport::parse_retry_after)
        .map(Duration::from_secs);
    let mut excerpt = Vec::new();
    while excerpt.len() < BODY_CAP {
        match response.chunk().await {
            Ok(Some(piece)) => excerpt.extend_from_slice(&piece),
            Ok(None) | Err(_) => break,
        }
    }
    let text: String = String::from_utf8_lossy(&excerpt)
        .chars()
        .filter(|c| !c.is_control())
        .take(EXCERPT_CHARS)
        .collect();
    let error = Some(if text.trim().is_empty() {
        format!("the receiver answered {status}")
    } else {
        format!("the receiver answered {status}: {}", text.trim())
    });
    let verdict = match status {
        410 => Verdict::Gone,
        408 | 429 | 500..=599 => Verdict::Retry(retry_after),
        _ => Verdict::Refused,
    };
    (Some(status), verdict, error)
}

/// reqwest's error without its URL.
fn describe(e: &reqwest::Error) -> String {
    let text = if e.is_timeout() {
        format!("no answer within {} s", CALL_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "cannot connect: refused or unreachable".to_owned()
    } else if e.is_builder() {
        "the request could not be built".to_owned()
    } else {
        "the connection failed before an answer came".to_owned()
    };
    text.chars().take(EXCERPT_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_spans_about_an_hour() {
        for attempts in 1..=40 {
            let wait = backoff(attempts);
            assert!(wait <= MAX_DELAY, "{attempts}: {wait:?}");
            assert!(wait >= FIRST_DELAY.mul_f64(0.8), "{attempts}: {wait:?}");
        }
        assert!(backoff(1) <= FIRST_DELAY.mul_f64(1.2));
        assert!(backoff(u32::MAX) <= MAX_DELAY);
        // Seven waits between eight attempts.
        for _ in 0..50 {
            let total: Duration = (1..MAX_ATTEMPTS).map(backoff).sum();
            assert!(
                total >= Duration::from_secs(45 * 60) && total <= Duration::from_secs(75 * 60),
                "{total:?}"
            );
        }
    }

    fn sub(db: &Outbox, id: &str, events: &[&str], active: bool) -> Subscription {
        let sub = Subscription {
            id: id.into(),
            url: format!("http://127.0.0.1:9/{id}"),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            description: String::new(),
            active,
            disabled_reason: None,
            secret: webhooks::new_secret(),
            created_at: crate::model::now(),
            created_by: "u".into(),
            updated_at: crate::model::now(),
            delivered: 0,
            failed: 0,
            last_delivery_at: None,
            last_status: None,
        };
        db.subscriptions.put(id, &sub).expect("put");
        sub
    }

    /// Staged deliveries land with the caller's writes, one per matching active subscription,
    /// and a failed one goes back to pending with its key.
    #[tokio::test]
    async fn staging_follows_the_callers_transaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("db");
        let outbox = Outbox::open(&db).expect("outbox");
        sub(&outbox, "a", &["order.created"], true);
        sub(&outbox, "b", &["*"], true);
        sub(&outbox, "c", &["order.created"], false);
        sub(&outbox, "d", &["deploy.finished"], true);
        let records: Tree<u32> = db.tree("records").expect("tree");

        let mut writes = Writes::new();
        writes.put(&records, "r", &1).expect("stage");
        let n = outbox
            .stage_event(
                &mut writes,
                "order.created",
                Some("t1"),
                serde_json::json!({"n": 1}),
            )
            .expect("stage");
        assert_eq!(n, 2);
        assert!(outbox.deliveries.is_empty(), "nothing before apply");
        assert!(writes.apply().expect("apply"));
        assert_eq!(outbox.deliveries.len(), 2);
        assert_eq!(outbox.pending_count(), 2);
        let listed = outbox.list(None, Some("b"), 10).expect("list");
        assert_eq!(listed.len(), 1);
        let d = &listed[0];
        assert_eq!(d.idempotency_key, d.id);
        assert_eq!(d.tenant_id.as_deref(), Some("t1"));
        let body: Value = serde_json::from_slice(&d.body()).expect("json");
        assert_eq!(body["event"], "order.created");
        assert_eq!(body["data"]["n"], 1);
        assert_eq!(body["id"], d.id.as_str());

        // A direct target, then a give-up and a manual retry.
        let mut writes = Writes::new();
        let id = outbox
            .stage_direct(
                &mut writes,
                "builder",
                "http://127.0.0.1:9/b",
                "order.plan_ready",
                None,
                Value::Null,
            )
            .expect("stage");
        assert!(writes.apply().expect("apply"));
        let attempt = Attempt {
            at: OffsetDateTime::now_utc(),
            status: Some(404),
            error: Some("the receiver answered 404".into()),
            duration_ms: 3,
        };
        for _ in 0..MAX_REFUSED_ATTEMPTS {
            outbox
                .finish(&id, attempt.clone(), Verdict::Refused, None)
                .await
                .expect("finish");
        }
        let failed = outbox.deliveries.get(&id).expect("get").expect("there");
        assert_eq!(failed.state, DeliveryState::Failed);
        assert_eq!(failed.attempts.len(), MAX_REFUSED_ATTEMPTS as usize);
        assert_eq!(outbox.pending_count(), 2);
        match outbox.retry(&id).expect("retry") {
            Retried::Requeued(d) => {
                assert_eq!(d.state, DeliveryState::Pending);
                assert_eq!(d.idempotency_key, id);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(outbox.pending_count(), 3);
        assert!(matches!(
            outbox.retry(&id).expect("retry"),
            Retried::NotFailed(DeliveryState::Pending)
        ));
        assert!(matches!(
            outbox.retry("nope").expect("retry"),
            Retried::NotFound
        ));
    }

    /// A delivery cut off mid-send is recorded as interrupted and due again at once.
    #[tokio::test]
    async fn an_interrupted_send_is_recorded_and_resent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("db");
        let outbox = Outbox::open(&db).expect("outbox");
        let mut writes = Writes::new();
        let id = outbox
            .stage_direct(
                &mut writes,
                "builder",
                "http://127.0.0.1:9/",
                "ping",
                None,
                Value::Null,
            )
            .expect("stage");
        assert!(writes.apply().expect("apply"));
        outbox
            .deliveries
            .update(&id, |d| d.sending_since = Some(OffsetDateTime::now_utc()))
            .expect("update");
        assert_eq!(outbox.recover().await.expect("recover"), 1);
        let d = outbox.deliveries.get(&id).expect("get").expect("there");
        assert_eq!(d.sending_since, None);
        assert_eq!(d.attempts.len(), 1);
        assert!(
            d.attempts[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("interrupted"))
        );
        let (due, _) = outbox
            .due(&HashSet::new(), unix_ms(OffsetDateTime::now_utc()) + 1, 8)
            .expect("due");
        assert_eq!(due, vec![id]);
    }

    #[test]
    fn attempts_are_bounded() {
        let mut d = Delivery {
            id: "x".into(),
            idempotency_key: "x".into(),
            event: "ping".into(),
            target: Target {
                kind: "builder".into(),
                subscription_id: None,
                url: "http://127.0.0.1/".into(),
            },
            payload: Value::Null,
            tenant_id: None,
            state: DeliveryState::Pending,
            attempt_count: 0,
            attempts: Vec::new(),
            next_attempt_at: None,
            created_at: OffsetDateTime::now_utc(),
            delivered_at: None,
            sending_since: None,
            at_most_once: false,
            result: None,
        };
        for i in 0..50u64 {
            d.push_attempt(Attempt {
                at: OffsetDateTime::now_utc(),
                status: None,
                error: None,
                duration_ms: i,
            });
        }
        assert_eq!(d.attempts.len(), KEEP_ATTEMPTS);
        assert_eq!(d.attempt_count, 50);
        assert_eq!(d.attempts[KEEP_ATTEMPTS - 1].duration_ms, 49);
    }

    /// Counts sends and records every state it settles; `check` is what the service "knows".
    struct Recorder {
        sends: std::sync::atomic::AtomicUsize,
        answer: Verdict,
        check: Option<Verdict>,
        settled: Mutex<Vec<DeliveryState>>,
    }

    impl Recorder {
        fn new(answer: Verdict, check: Option<Verdict>) -> Arc<Self> {
            Arc::new(Self {
                sends: Default::default(),
                answer,
                check,
                settled: Mutex::default(),
            })
        }
        fn sends(&self) -> usize {
            self.sends.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn settled(&self) -> Vec<DeliveryState> {
            self.settled.lock().expect("lock").clone()
        }
    }

    impl Courier for Recorder {
        fn send<'a>(&'a self, _: &'a Delivery) -> BoxFuture<'a, Sent> {
            self.sends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let verdict = self.answer;
            Box::pin(async move {
                Sent {
                    status: Some(500),
                    verdict,
                    error: Some("scripted".into()),
                    result: Some(serde_json::json!({"remote": "r1"})),
                }
            })
        }
        fn check<'a>(&'a self, _: &'a Delivery) -> BoxFuture<'a, Option<Sent>> {
            let check = self.check;
            Box::pin(async move {
                check.map(|verdict| Sent {
                    status: Some(200),
                    verdict,
                    error: None,
                    result: Some(serde_json::json!({"checked": true})),
                })
            })
        }
        fn settle(&self, _: &mut Writes, d: &Delivery) -> Result<(), StoreError> {
            self.settled.lock().expect("lock").push(d.state);
            Ok(())
        }
        fn max_attempts(&self) -> u32 {
            2
        }
        fn backoff(&self, _: u32) -> Duration {
            Duration::from_millis(10)
        }
    }

    fn stage_once(outbox: &Outbox, kind: &str) -> String {
        let id = new_id();
        let mut writes = Writes::new();
        outbox
            .stage_at_most_once(
                &mut writes,
                &id,
                kind,
                "http://127.0.0.1:9/x",
                "order.deploy",
                None,
                Value::Null,
                &format!("key-{id}"),
            )
            .expect("stage");
        assert!(writes.apply().expect("apply"));
        id
    }

    /// What a process that died mid-send leaves behind.
    fn cut_off(outbox: &Outbox, id: &str) {
        let seen = outbox
            .deliveries
            .get_snapshot(id)
            .expect("get")
            .expect("some");
        let mut d = seen.value.clone();
        d.sending_since = Some(OffsetDateTime::now_utc());
        let mut writes = Writes::new();
        writes
            .replace(&outbox.deliveries, id, &seen, &d)
            .expect("replace");
        assert!(writes.apply().expect("apply"));
    }

    /// An at-most-once delivery cut off mid-send is settled by what its service says, or
    /// ends `unknown` — and is never sent again; an ordinary one is sent again.
    #[tokio::test]
    async fn an_interrupted_at_most_once_delivery_is_checked_and_never_resent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("db");
        let outbox = Outbox::open(&db).expect("outbox");
        let blind = Recorder::new(Verdict::Delivered, None);
        let knowing = Recorder::new(Verdict::Delivered, Some(Verdict::Delivered));
        outbox.register("deploy.blind", blind.clone());
        outbox.register("deploy.knowing", knowing.clone());

        let a = stage_once(&outbox, "deploy.blind");
        let b = stage_once(&outbox, "deploy.knowing");
        let c = stage_once(&outbox, "deploy.gone");
        let plain = {
            let mut writes = Writes::new();
            let id = outbox
                .stage_direct(
                    &mut writes,
                    "builder",
                    "http://127.0.0.1:9/b",
                    "e",
                    None,
                    Value::Null,
                )
                .expect("stage");
            assert!(writes.apply().expect("apply"));
            id
        };
        for id in [&a, &b, &c, &plain] {
            cut_off(&outbox, id);
        }
        assert_eq!(outbox.recover().await.expect("recover"), 4);

        let get = |id: &str| outbox.get(id).expect("get").expect("some");
        let a = get(&a);
        assert_eq!(a.state, DeliveryState::Unknown);
        assert!(
            a.attempts[0]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("not sent again")
        );
        assert_eq!(blind.settled(), vec![DeliveryState::Unknown]);
        let b = get(&b);
        assert_eq!(b.state, DeliveryState::Delivered);
        assert_eq!(b.result, Some(serde_json::json!({"checked": true})));
        assert_eq!(knowing.settled(), vec![DeliveryState::Delivered]);
        // A channel no longer configured cannot be asked: unknown too.
        assert_eq!(get(&c).state, DeliveryState::Unknown);
        assert_eq!(blind.sends() + knowing.sends(), 0, "nothing was sent again");
        // Only the ordinary delivery is due again.
        let (due, _) = outbox
            .due(&HashSet::new(), unix_ms(OffsetDateTime::now_utc()) + 1, 8)
            .expect("due");
        assert_eq!(due, vec![plain.clone()]);
        assert_eq!(get(&plain).state, DeliveryState::Pending);
        // And an unknown one is not retried by hand through the outbox.
        assert!(matches!(
            outbox.retry(&a.id).expect("retry"),
            Retried::NotFailed(DeliveryState::Unknown)
        ));
        // The worker meeting a mark left by an attempt whose end could not be written (a
        // store failure, not a stop) treats it the same way.
        let d = stage_once(&outbox, "deploy.blind");
        cut_off(&outbox, &d);
        let client = http_client().expect("client");
        outbox.try_attempt(&client, &d).await.expect("attempt");
        assert_eq!(get(&d).state, DeliveryState::Unknown);
        assert_eq!(blind.sends(), 0);
    }

    /// A courier's limits apply: retryable answers up to its attempts, a permanent failure at
    /// once; every state is settled with the delivery.
    #[tokio::test]
    async fn couriers_set_the_attempts_and_see_every_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("db");
        let outbox = Outbox::open(&db).expect("outbox");
        let flaky = Recorder::new(Verdict::Retry(None), None);
        let refused = Recorder::new(Verdict::Failed, None);
        outbox.register("deploy.flaky", flaky.clone());
        outbox.register("deploy.refused", refused.clone());
        let client = http_client().expect("client");

        let id = stage_once(&outbox, "deploy.flaky");
        outbox.try_attempt(&client, &id).await.expect("attempt");
        let d = outbox.get(&id).expect("get").expect("some");
        assert_eq!(d.state, DeliveryState::Pending);
        assert_eq!(d.result, Some(serde_json::json!({"remote": "r1"})));
        outbox.try_attempt(&client, &id).await.expect("attempt");
        let d = outbox.get(&id).expect("get").expect("some");
        assert_eq!(
            d.state,
            DeliveryState::Failed,
            "the courier allows two attempts"
        );
        assert_eq!(flaky.sends(), 2);
        assert_eq!(
            flaky.settled(),
            vec![DeliveryState::Pending, DeliveryState::Failed]
        );
        assert!(matches!(
            outbox.retry(&id).expect("retry"),
            Retried::AtMostOnce
        ));

        let id = stage_once(&outbox, "deploy.refused");
        outbox.try_attempt(&client, &id).await.expect("attempt");
        assert_eq!(
            outbox.get(&id).expect("get").expect("some").state,
            DeliveryState::Failed
        );
        assert_eq!(refused.sends(), 1);
        assert_eq!(refused.settled(), vec![DeliveryState::Failed]);
    }
}
