//! Deploy channels: a ready order (estado `listo`, QA `ok`) goes to WhatsApp through an n8n
//! workflow, to social networks through Ayrshare, or to a Telegram chat. See docs/deploys.md.
//!
//! - A deploy is recorded before it happens: one write appends a `pending` event to the
//!   order's `deploy_history` and stages an at-most-once outbox delivery; the outbox's worker
//!   hands it to the channel's courier, and every state the delivery reaches is written to
//!   the event in the same transaction (`success`, `failed`, or `unknown`).
//! - The idempotency key is made of the order, the channel and the SHA-256 of what is sent: a
//!   second click while one is in flight is refused, one after a success answers the same
//!   event without sending, and an attempt a crash cut short is checked with the service
//!   (Ayrshare's `GET /post/:id`) or left `unknown` for a person to resolve — never re-sent.
//! - Retries (with backoff) only for 429, 5xx and no answer; 401, 403 and a missing chat fail
//!   at once. Secrets never reach events, logs or errors: couriers build authenticated URLs
//!   and headers only at send time, and scrub everything they keep.

pub mod config;
mod http;
pub mod links;
mod social;
mod telegram;
mod whatsapp;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use self::config::{DeployConfig, Setup};
use super::blueprint::ProductType;
use super::book::{Book, BookError, Outgoing, summary};
use super::orders::{DeployEvent, Estado, Order, QaStatus};
use super::outbox::{Courier, Delivery, DeliveryState, Outbox, Sent, Verdict};
use crate::identity::auth::new_id;
use crate::model::{Tenant, now};
use crate::store::{Db, StoreError, Tree, Writes};

/// How long a live check of a service is reused.
const PROBE_TTL: Duration = Duration::from_secs(30);

/// A deploy channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Whatsapp,
    Social,
    Telegram,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Self::Whatsapp, Self::Social, Self::Telegram];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Whatsapp => "whatsapp",
            Self::Social => "social",
            Self::Telegram => "telegram",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// The outbox's target kind.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Whatsapp => "deploy.whatsapp",
            Self::Social => "deploy.social",
            Self::Telegram => "deploy.telegram",
        }
    }

    /// The product types this channel ships.
    pub fn serves(self) -> &'static [ProductType] {
        match self {
            Self::Whatsapp => &[ProductType::WhatsappAutopilot],
            Self::Social => &[ProductType::SocialAutopilot],
            Self::Telegram => &[ProductType::TelegramBot],
        }
    }
}

/// What an admin may add to a deploy.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Send again content that was already deployed successfully (a new idempotency key).
    #[serde(default)]
    pub repeat: bool,
    /// Social only: these networks instead of the deliverable's `platforms` (and instead of
    /// "the ones that failed last time").
    #[serde(default)]
    pub platforms: Option<Vec<String>>,
}

/// A deploy refused, or a step that failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("cannot deploy: the order is in estado {0}; a deploy needs estado listo")]
    NotReady(&'static str),
    #[error("cannot deploy: QA is {0}; a deploy needs qa_status ok")]
    QaNotOk(&'static str),
    #[error("the {channel} channel does not ship {product} orders; it ships {served}")]
    WrongProduct {
        channel: &'static str,
        product: &'static str,
        served: String,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error(
        "a {channel} deploy of this order is already in flight (deploy {id}); wait for its outcome"
    )]
    InFlight { channel: &'static str, id: String },
    #[error(
        "the outcome of {channel} deploy {id} is unknown; check the channel and resolve that deploy before sending again"
    )]
    Unresolved { channel: &'static str, id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("no deploy {0} on this order")]
    NoDeploy(String),
    #[error("deploy {id} is {status}; only an unknown deploy is resolved by hand")]
    NotUnknown { id: String, status: String },
    /// Not an error to the caller: the same content was already deployed.
    #[error("already deployed")]
    Replay(Box<DeployEvent>),
    #[error(transparent)]
    Book(#[from] BookError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A deploy accepted (or found already done).
#[derive(Debug, Clone)]
pub struct Started {
    pub event: DeployEvent,
    /// `true`: the same content was deployed before; nothing was sent.
    pub replayed: bool,
    pub order: Order,
}

/// The last success or failure of a channel.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EventRef {
    pub order_id: String,
    pub deploy_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    pub at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a channel's deploys have done, written with the events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ChannelRecord {
    last_success: Option<EventRef>,
    last_failure: Option<EventRef>,
}

/// A service's rate limit as its answers last showed it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// When the service said calls may resume (after a 429).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::model::Rfc3339>")]
    pub reset_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A channel's health, for `GET /api/integrations/{channel}/health`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Health {
    pub channel: Channel,
    /// `disabled`, `misconfigured`, `unreachable` or `healthy`.
    pub status: &'static str,
    /// What is wrong, or how to turn the channel on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub last_success: Option<EventRef>,
    pub last_failure: Option<EventRef>,
    pub rate_limit: Option<RateLimit>,
    /// Social: the networks linked to the Ayrshare account (`GET /user`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platforms: Option<Vec<String>>,
    /// Telegram: the bot's username (`getMe`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bot: Option<String>,
    /// Deploys of this channel waiting in the outbox.
    pub in_flight: usize,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    pub checked_at: OffsetDateTime,
}

/// What a live check of a service found.
#[derive(Debug, Clone, Default)]
struct Probe {
    /// `Some((status, reason))` when not healthy.
    problem: Option<(&'static str, String)>,
    platforms: Option<Vec<String>>,
    bot: Option<String>,
}

/// What the couriers share: settings, the HTTP client, the records they write.
pub(crate) struct Shared {
    config: DeployConfig,
    client: reqwest::Client,
    orders: Tree<Order>,
    tenants: Tree<Tenant>,
    outbox: Weak<Outbox>,
    channels: Tree<ChannelRecord>,
    rates: Tree<RateLimit>,
    secrets: Vec<String>,
}

impl Shared {
    fn scrub(&self, text: &str) -> String {
        http::scrub(text, &self.secrets)
    }

    fn note_rate(&self, channel: Channel, update: impl FnOnce(&mut RateLimit)) {
        let result = self.rates.get(channel.as_str()).and_then(|r| {
            let mut r = r.unwrap_or_else(|| RateLimit {
                limit: None,
                remaining: None,
                reset_at: None,
                updated_at: now(),
            });
            update(&mut r);
            r.updated_at = now();
            self.rates.put(channel.as_str(), &r)
        });
        if let Err(e) = result {
            tracing::warn!(channel = channel.as_str(), error = %e, "deploy: the rate-limit state could not be stored");
        }
    }

    /// One live-check call, at most 10 s; `Err` is the probe to report when no answer came.
    async fn probe_call(
        &self,
        request: reqwest::RequestBuilder,
        service: &str,
    ) -> Result<http::Answer, Probe> {
        http::call(request, self.config.timeout.min(Duration::from_secs(10)))
            .await
            .map_err(|e| Probe {
                problem: Some(("unreachable", format!("{service}: {e}"))),
                ..Probe::default()
            })
    }

    fn tenant(&self, id: Option<&str>) -> Option<Tenant> {
        id.and_then(|id| self.tenants.get(id).ok().flatten())
    }
}

/// One channel's courier, registered with the outbox.
struct ChannelCourier {
    channel: Channel,
    shared: Arc<Shared>,
}

impl Courier for ChannelCourier {
    fn send<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Sent> {
        Box::pin(async move {
            if let Some(why) = self.shared.config.unusable(self.channel) {
                return Sent {
                    status: None,
                    verdict: Verdict::Failed,
                    error: Some(why),
                    result: None,
                };
            }
            let content = &delivery.payload["content"];
            let mut sent = match self.channel {
                Channel::Whatsapp => whatsapp::send(&self.shared, delivery, content).await,
                Channel::Social => social::send(&self.shared, delivery, content).await,
                Channel::Telegram => telegram::send(&self.shared, content).await,
            };
            sent.error = sent.error.map(|e| self.shared.scrub(&e));
            if let Some(result) = &mut sent.result {
                http::scrub_json(result, &self.shared.secrets);
            }
            sent
        })
    }

    fn check<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Option<Sent>> {
        Box::pin(async move {
            match self.channel {
                Channel::Social => social::check(&self.shared, delivery).await,
                // Neither n8n nor the Bot API can say whether an earlier call was acted on.
                Channel::Whatsapp | Channel::Telegram => None,
            }
        })
    }

    fn settle(&self, writes: &mut Writes, delivery: &Delivery) -> Result<(), StoreError> {
        settle(&self.shared, self.channel, writes, delivery)
    }

    fn max_attempts(&self) -> u32 {
        self.shared.config.attempts
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let base = self.shared.config.retry_delay;
        let doubled = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(12));
        let jitter: f64 = rand::random_range(0.8..1.2);
        doubled.min(Duration::from_secs(600)).mul_f64(jitter)
    }
}

/// The event's status for a delivery's state.
fn status_of(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending => "pending",
        DeliveryState::Delivered => "success",
        DeliveryState::Failed => "failed",
        DeliveryState::Unknown => "unknown",
    }
}

/// Writes a delivery's new state onto its order's deploy event (and, once it is final, the
/// channel's last outcome and a `deploy.finished` webhook), into `writes`.
fn settle(
    shared: &Shared,
    channel: Channel,
    writes: &mut Writes,
    delivery: &Delivery,
) -> Result<(), StoreError> {
    let Some(order_id) = delivery.payload["order_id"].as_str() else {
        return Ok(());
    };
    let Some(seen) = shared.orders.get_snapshot(order_id)? else {
        return Ok(());
    };
    let mut order = seen.value.clone();
    let Some(event) = order
        .deploy_history
        .iter_mut()
        .find(|e| e.id == delivery.id)
    else {
        return Ok(());
    };
    let at = now();
    event.status = status_of(delivery.state).to_owned();
    event.updated_at = at;
    let last = delivery.attempts.last();
    event.error = match delivery.state {
        DeliveryState::Delivered => None,
        _ => last.and_then(|a| a.error.clone()),
    };
    if let Some(Value::Object(result)) = &delivery.result {
        for (k, v) in result {
            event.details.insert(k.clone(), v.clone());
        }
    }
    event
        .details
        .insert("attempts".into(), json!(delivery.attempt_count));
    match last.and_then(|a| a.status) {
        Some(s) => event.details.insert("http_status".into(), json!(s)),
        None => event.details.remove("http_status"),
    };
    match (delivery.state, delivery.next_attempt_at) {
        (DeliveryState::Pending, Some(next)) => {
            let next = next
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            event.details.insert("next_attempt_at".into(), json!(next));
        }
        _ => {
            event.details.remove("next_attempt_at");
        }
    }
    let event = event.clone();
    order.version = seen.value.version + 1;
    order.updated_at = at;
    writes.replace(&shared.orders, order_id, &seen, &order)?;
    if delivery.state != DeliveryState::Pending {
        let mut record = shared.channels.get(channel.as_str())?.unwrap_or_default();
        let reference = EventRef {
            order_id: order.id.clone(),
            deploy_id: event.id.clone(),
            at,
            error: event.error.clone(),
        };
        if delivery.state == DeliveryState::Delivered {
            record.last_success = Some(reference);
        } else {
            record.last_failure = Some(reference);
        }
        writes.put(&shared.channels, channel.as_str(), &record)?;
        if let Some(outbox) = shared.outbox.upgrade() {
            outbox.stage_event(
                writes,
                "deploy.finished",
                order.tenant_id.as_deref(),
                json!({ "order": summary(&order), "deploy": event }),
            )?;
        }
    }
    Ok(())
}

/// SHA-256 of `value`'s JSON, in hex.
fn sha256_hex(bytes: &[u8]) -> String {
    axon_shared::hex_encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// What a channel will send, before it is recorded.
pub(crate) struct Content {
    /// The service's request (or, for n8n, the documented payload without per-deploy ids).
    pub body: Value,
    /// What the content hash covers, when not the whole body (links that expire).
    pub hashed: Option<Value>,
    /// Recorded on the event from the start (chat used and where it came from, platforms).
    pub details: Map<String, Value>,
    /// Where it goes, without secrets, for the outbox listing.
    pub display_url: String,
}

/// The deploy channels.
pub struct Deployer {
    shared: Arc<Shared>,
    pub links: links::Links,
    probes: Mutex<HashMap<Channel, (Instant, Probe)>>,
}

impl Deployer {
    /// Opens the channels' records and registers a courier with the outbox for every channel
    /// that is set up.
    pub fn open(
        db: &Db,
        config: DeployConfig,
        orders: Tree<Order>,
        tenants: Tree<Tenant>,
        outbox: &Arc<Outbox>,
    ) -> Result<Self, StoreError> {
        let client = http::client(config.timeout).unwrap_or_default();
        let shared = Arc::new(Shared {
            secrets: config.secrets(),
            client,
            orders,
            tenants,
            outbox: Arc::downgrade(outbox),
            channels: db.tree("deploy_channels")?,
            rates: db.tree("deploy_rate_limits")?,
            config,
        });
        let deployer = Self {
            links: links::Links::open(db)?,
            shared,
            probes: Mutex::default(),
        };
        // Every channel gets a courier, set up or not, so a deploy staged before a restart
        // that turned its channel off still ends (failed) on its order.
        for channel in Channel::ALL {
            outbox.register(
                channel.kind(),
                Arc::new(ChannelCourier {
                    channel,
                    shared: deployer.shared.clone(),
                }),
            );
        }
        Ok(deployer)
    }

    pub fn setup(&self, channel: Channel) -> Setup {
        self.shared.config.setup(channel)
    }

    /// Checks the order and the channel, records a `pending` event and stages the call, all in
    /// one write. The caller flushes and wakes the outbox.
    pub fn start(
        &self,
        book: &Book,
        order_id: &str,
        actor: &str,
        channel: Channel,
        request: &DeployRequest,
    ) -> Result<Started, DeployError> {
        let order = book.get(order_id)?;
        check_ready(&order, channel)?;
        if let Some(why) = self.shared.config.unusable(channel) {
            return Err(DeployError::Unavailable(why));
        }
        let tenant = self.shared.tenant(order.tenant_id.as_deref());
        let result = book.change_as(order_id, None, |order: &mut Order| {
            check_ready(order, channel)?;
            // Built from the order as this write sees it, so what is sent is what is recorded.
            let content = match channel {
                Channel::Whatsapp => {
                    whatsapp::content(&self.shared, &self.links, order, tenant.as_ref())
                }
                Channel::Social => {
                    social::content(&self.shared.config.social.base_url, order, request)
                }
                Channel::Telegram => {
                    telegram::content(&self.shared.config.telegram, order, tenant.as_ref())
                }
            }
            .map_err(DeployError::Invalid)?;
            let hash = sha256_hex(
                &serde_json::to_vec(content.hashed.as_ref().unwrap_or(&content.body))
                    .unwrap_or_default(),
            );
            let mine = || {
                order
                    .deploy_history
                    .iter()
                    .filter(|e| e.channel == channel.as_str())
            };
            if let Some(e) = mine().find(|e| e.status == "pending") {
                return Err(DeployError::InFlight {
                    channel: channel.as_str(),
                    id: e.id.clone(),
                });
            }
            if let Some(e) = mine().find(|e| e.status == "unknown") {
                return Err(DeployError::Unresolved {
                    channel: channel.as_str(),
                    id: e.id.clone(),
                });
            }
            let same = mine()
                .filter(|e| e.content_hash.as_deref() == Some(hash.as_str()))
                .count();
            if !request.repeat
                && let Some(done) = mine()
                    .filter(|e| e.content_hash.as_deref() == Some(hash.as_str()))
                    .rfind(|e| e.status == "success")
            {
                return Err(DeployError::Replay(Box::new(done.clone())));
            }
            let id = new_id();
            let key = sha256_hex(
                format!("{}\n{}\n{hash}\n{same}", order.id, channel.as_str()).as_bytes(),
            )[..40]
                .to_owned();
            let mut body = content.body.clone();
            if channel == Channel::Whatsapp
                && let Value::Object(map) = &mut body
            {
                map.insert("deploy_id".into(), json!(id));
                map.insert("idempotency_key".into(), json!(key));
            }
            let mut details = content.details.clone();
            details.insert("idempotency_key".into(), json!(key));
            details.insert("attempts".into(), json!(0));
            let at = now();
            let event = DeployEvent {
                id: id.clone(),
                channel: channel.as_str().to_owned(),
                status: "pending".into(),
                created_at: at,
                updated_at: at,
                requested_by: Some(actor.to_owned()),
                content_hash: Some(hash.clone()),
                error: None,
                details,
            };
            order.deploy_history.push(event);
            if order.deploy_history.len() > super::orders::MAX_DEPLOY_EVENTS {
                order.deploy_history.remove(0);
            }
            Ok(vec![Outgoing::Deploy {
                id,
                kind: channel.kind(),
                url: content.display_url.clone(),
                payload: json!({
                    "order_id": order.id,
                    "channel": channel.as_str(),
                    "content": body,
                }),
                idempotency_key: key,
            }])
        });
        match result {
            Ok(order) => {
                let event =
                    order.deploy_history.last().cloned().ok_or_else(|| {
                        DeployError::Invalid("the deploy was not recorded".into())
                    })?;
                Ok(Started {
                    event,
                    replayed: false,
                    order,
                })
            }
            Err(DeployError::Replay(event)) => Ok(Started {
                event: *event,
                replayed: true,
                order: book.get(order_id)?,
            }),
            Err(e) => Err(e),
        }
    }

    /// Settles by hand a deploy whose outcome was unknown: `success` or `failed`.
    pub fn resolve(
        &self,
        book: &Book,
        order_id: &str,
        deploy_id: &str,
        actor: &str,
        success: bool,
        reason: Option<&str>,
    ) -> Result<Order, DeployError> {
        book.change_as(order_id, None, |order: &mut Order| {
            let event = order
                .deploy_history
                .iter_mut()
                .find(|e| e.id == deploy_id)
                .ok_or_else(|| DeployError::NoDeploy(deploy_id.to_owned()))?;
            if event.status != "unknown" {
                return Err(DeployError::NotUnknown {
                    id: deploy_id.to_owned(),
                    status: event.status.clone(),
                });
            }
            event.status = if success { "success" } else { "failed" }.to_owned();
            event.updated_at = now();
            event.details.insert("resolved_by".into(), json!(actor));
            if let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) {
                let reason: String = reason.chars().take(1000).collect();
                event.details.insert("resolution".into(), json!(reason));
            }
            Ok(Vec::new())
        })
    }

    /// The channel's health: its setup, a live check of the service (cached for 30 s), its
    /// last outcomes and rate-limit state.
    pub async fn health(&self, channel: Channel, outbox: &Outbox) -> Result<Health, StoreError> {
        let record = self
            .shared
            .channels
            .get(channel.as_str())?
            .unwrap_or_default();
        let mut health = Health {
            channel,
            status: "healthy",
            reason: None,
            last_success: record.last_success,
            last_failure: record.last_failure,
            rate_limit: self.shared.rates.get(channel.as_str())?,
            platforms: None,
            bot: None,
            in_flight: outbox.pending_of(channel.kind())?,
            checked_at: now(),
        };
        match self.setup(channel) {
            Setup::Disabled(why) => {
                health.status = "disabled";
                health.reason = Some(why);
                return Ok(health);
            }
            Setup::Misconfigured(why) => {
                health.status = "misconfigured";
                health.reason = Some(why);
                return Ok(health);
            }
            Setup::Ready => {}
        }
        let probe = self.probe(channel).await;
        if let Some((status, reason)) = probe.problem {
            health.status = status;
            health.reason = Some(reason);
        }
        health.platforms = probe.platforms;
        health.bot = probe.bot;
        health.rate_limit = self.shared.rates.get(channel.as_str())?;
        Ok(health)
    }

    async fn probe(&self, channel: Channel) -> Probe {
        if let Some((at, probe)) = self
            .probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&channel)
            && at.elapsed() < PROBE_TTL
        {
            return probe.clone();
        }
        let mut probe = match channel {
            // An n8n webhook has no side-effect-free check: calling it would run the workflow.
            Channel::Whatsapp => Probe::default(),
            Channel::Social => social::probe(&self.shared).await,
            Channel::Telegram => telegram::probe(&self.shared).await,
        };
        if let Some((_, reason)) = &mut probe.problem {
            *reason = self.shared.scrub(reason);
        }
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel, (Instant::now(), probe.clone()));
        probe
    }
}

/// The order's own conditions for a deploy on `channel`.
fn check_ready(order: &Order, channel: Channel) -> Result<(), DeployError> {
    if order.estado != Estado::Listo {
        return Err(DeployError::NotReady(order.estado.as_str()));
    }
    if order.qa_status != QaStatus::Ok {
        return Err(DeployError::QaNotOk(match order.qa_status {
            QaStatus::Pendiente => "pendiente",
            QaStatus::Rechazado => "rechazado",
            QaStatus::Ok => "ok",
        }));
    }
    if !channel.serves().contains(&order.product_type) {
        return Err(DeployError::WrongProduct {
            channel: channel.as_str(),
            product: order.product_type.as_str(),
            served: channel
                .serves()
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(())
}

/// A string field of the deliverable's metadata, trimmed, if set.
pub(crate) fn meta_str<'a>(order: &'a Order, key: &str) -> Option<&'a str> {
    order
        .deliverable_metadata
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The deliverable's `media_urls`, checked to be http(s) URLs.
pub(crate) fn media_urls(order: &Order, max: usize) -> Result<Vec<String>, String> {
    let Some(value) = order.deliverable_metadata.get("media_urls") else {
        return Ok(Vec::new());
    };
    let items = value
        .as_array()
        .ok_or("deliverable_metadata.media_urls must be a list of URLs")?;
    if items.len() > max {
        return Err(format!(
            "deliverable_metadata.media_urls has {} items; at most {max}",
            items.len()
        ));
    }
    items
        .iter()
        .map(|v| {
            let url = v.as_str().map(str::trim).unwrap_or_default();
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    Ok(url.to_owned())
                }
                _ => Err(format!(
                    "deliverable_metadata.media_urls: {} is not an http(s) URL",
                    crate::agency::deploy::http::excerpt(url)
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
