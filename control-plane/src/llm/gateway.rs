//! The gateway: resolves a model or alias to an ordered plan of upstreams, tries them in turn
//! while nothing has reached the client (fail-over only before the first byte), relays the
//! answer chunk by chunk, and leaves one usage record per call, whatever its end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use rand::Rng;

use super::config::{FLEET_OLLAMA, FLEET_SD, LlmConfig, Timeouts};
use super::fleet::{FleetDirectory, FleetPick};
use super::health::{Health, InFlight, Skip, Upstream};
use super::limits::{Meter, Subject};
use super::metrics::LlmMetrics;
use super::provider::{
    AnswerMeta, ChatDecoder, Emit, LlmProvider, ProviderKind, Whole, read_error,
};
use super::routes::{Alias, RouteTable, Strategy, Target};
use super::transport::{HttpReply, Transport, TransportError};
use super::usage::{Outcome, UsageLog, UsageRecord, day_of};
use super::wire::{ChatRequest, EmbeddingsRequest, ImageRequest, LlmError, Usage, unix_now};
use super::{deepseek, gemini, ollama, openai, sdwebui};
use crate::model::LlmLimits;
use crate::store::{Db, StoreError};

/// Largest whole (non-streamed) answer read from an upstream.
const MAX_WHOLE: usize = 32 << 20;
/// Largest error body read from an upstream.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Calls in flight on one fleet host before it no longer counts as having headroom.
pub const HOST_HEADROOM: u64 = 8;

/// A configured cloud (or fixed-address) provider.
struct Provider {
    dialect: Arc<dyn LlmProvider>,
    transport: Transport,
    timeouts: Timeouts,
    models: Vec<String>,
}

pub fn dialect(kind: ProviderKind) -> Arc<dyn LlmProvider> {
    match kind {
        ProviderKind::Openai => Arc::new(openai::OpenAi::default()),
        ProviderKind::Deepseek => Arc::new(deepseek::DeepSeek),
        ProviderKind::Gemini => Arc::new(gemini::Gemini),
        ProviderKind::Ollama => Arc::new(ollama::Ollama),
        ProviderKind::Sdwebui => Arc::new(sdwebui::SdWebUi),
    }
}

/// Who is calling, for limits and usage.
#[derive(Debug, Clone)]
pub struct Metered {
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub key_limits: Option<LlmLimits>,
    pub tenant_limits: Option<LlmLimits>,
}

/// One upstream a request may go to.
#[derive(Clone)]
pub struct Candidate {
    /// `provider/model` as the price table and usage name it.
    pub label: String,
    /// `openai`, `ollama@<host id>`, ...
    pub upstream: String,
    /// The model name the upstream knows.
    pub model: String,
    pub dialect: Arc<dyn LlmProvider>,
    pub transport: Transport,
    pub timeouts: Timeouts,
    pub host_id: Option<String>,
    pub health: Arc<Upstream>,
}

/// What a call needs from its request.
#[derive(Clone, Copy)]
pub enum Job<'a> {
    Chat(&'a ChatRequest),
    Embed(&'a EmbeddingsRequest),
    Image(&'a ImageRequest),
}

impl Job<'_> {
    fn endpoint(&self) -> &'static str {
        match self {
            Self::Chat(_) => "chat",
            Self::Embed(_) => "embeddings",
            Self::Image(_) => "images",
        }
    }
    fn stream(&self) -> bool {
        matches!(self, Self::Chat(r) if r.stream)
    }
    fn prompt_tokens(&self) -> u64 {
        match self {
            Self::Chat(r) => r.estimated_prompt_tokens(),
            Self::Embed(r) => r
                .input
                .list()
                .iter()
                .map(|s| s.len() as u64)
                .sum::<u64>()
                .div_ceil(4),
            Self::Image(r) => (r.prompt.len() as u64).div_ceil(4),
        }
    }
}

/// The LLM gateway's state.
pub struct Gateway {
    providers: HashMap<String, Provider>,
    pub routes: RouteTable,
    pub health: Health,
    pub usage: Arc<UsageLog>,
    pub meter: Meter,
    pub metrics: LlmMetrics,
    pub fleet: Arc<dyn FleetDirectory>,
    fleet_timeouts: Timeouts,
}

/// The gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Client(String),
}

impl Gateway {
    pub fn open(
        config: &LlmConfig,
        db: &Db,
        fleet: Arc<dyn FleetDirectory>,
    ) -> Result<Self, GatewayError> {
        let mut providers = HashMap::new();
        for spec in &config.providers {
            let client =
                super::transport::client(Duration::from_millis(spec.timeouts.connect_ms.max(1)))
                    .map_err(GatewayError::Client)?;
            let mut auth = Vec::new();
            if let Some(key) = &spec.api_key {
                match spec.kind {
                    ProviderKind::Gemini => auth.push(("x-goog-api-key", key.expose().to_owned())),
                    _ => auth.push(("authorization", format!("Bearer {}", key.expose()))),
                }
            }
            providers.insert(
                spec.name.clone(),
                Provider {
                    dialect: dialect(spec.kind),
                    transport: Transport::Http {
                        client,
                        base: spec.base_url.clone(),
                        auth,
                    },
                    timeouts: spec.timeouts,
                    models: spec.models.clone(),
                },
            );
        }
        let routes = RouteTable::open(db, &config.seed_aliases, &config.seed_prices)?;
        let usage = UsageLog::open(db)?;
        let meter = Meter::default();
        let now = now_ms();
        let today = day_of(now);
        let month_start = format!("{}-01", &today[..7]);
        meter.load(&usage.daily(&month_start, &today)?, &today);
        Ok(Self {
            providers,
            routes,
            health: Health::default(),
            usage,
            meter,
            metrics: LlmMetrics::default(),
            fleet,
            fleet_timeouts: config.fleet_timeouts,
        })
    }

    /// Names of the configured cloud providers, with their listed models.
    pub fn providers(&self) -> Vec<(String, ProviderKind, Vec<String>)> {
        let mut out: Vec<_> = self
            .providers
            .iter()
            .map(|(n, p)| (n.clone(), p.dialect.kind(), p.models.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every model name a caller may use: aliases, listed provider models, fleet models.
    pub fn model_names(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .routes
            .aliases()
            .keys()
            .map(|a| (a.clone(), "axon-alias".to_owned()))
            .collect();
        for (name, _, models) in self.providers() {
            for m in models {
                out.push((format!("{name}/{m}"), name.clone()));
            }
        }
        for m in self.fleet.models() {
            out.push((m, "axon-fleet".to_owned()));
        }
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    /// Checks and counts the call against the caller's limits.
    pub fn admit(&self, who: &Metered) -> Result<(), LlmError> {
        let mut subjects: Vec<(Subject, &LlmLimits)> = Vec::new();
        if let (Some(key), Some(limits)) = (&who.key_id, &who.key_limits) {
            subjects.push((Subject::Key(key.clone()), limits));
        }
        if let (Some(tenant), Some(limits)) = (&who.tenant_id, &who.tenant_limits) {
            subjects.push((Subject::Tenant(tenant.clone()), limits));
        }
        if subjects.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        self.meter.admit(&subjects, now, &day_of(now)).map_err(|r| {
            LlmError::new(StatusCode::TOO_MANY_REQUESTS, r.message)
                .code(r.code)
                .retry_after(r.retry_after_secs)
        })
    }

    /// The ordered upstreams for `model` (a model or an alias).
    pub fn plan(&self, model: &str, job: Job<'_>) -> Result<Vec<Candidate>, LlmError> {
        if let Some(alias) = self.routes.alias(model) {
            return self.plan_alias(&alias, job);
        }
        let Some((provider, name)) = model.split_once('/') else {
            return Err(unknown_model(model));
        };
        let (mut plan, busy) = self.candidates(provider, name)?;
        plan.extend(busy);
        if plan.is_empty() {
            return Err(no_upstream(model));
        }
        Ok(plan)
    }

    fn plan_alias(&self, alias: &Alias, job: Job<'_>) -> Result<Vec<Candidate>, LlmError> {
        let mut targets: Vec<&Target> = alias.targets.iter().collect();
        if let Job::Chat(req) = job {
            let needed = req.estimated_prompt_tokens() + u64::from(req.max_tokens.unwrap_or(0));
            let fits = |t: &&Target| {
                let Some(p) = self.routes.price(&t.model) else {
                    return true;
                };
                p.context_tokens.is_none_or(|c| c >= needed)
                    && (req.tools.is_empty() || p.tools != Some(false))
                    && (!req.has_images || p.vision != Some(false))
            };
            targets.retain(fits);
            if targets.is_empty() {
                return Err(LlmError::invalid(format!(
                    "no route of '{}' can serve this request (about {needed} tokens of context{}{})",
                    alias.name,
                    if req.tools.is_empty() { "" } else { ", tools" },
                    if req.has_images { ", images" } else { "" },
                ))
                .code("no_route"));
            }
        }
        let mut groups: Vec<(&Target, Vec<Candidate>)> = Vec::new();
        // Busy fleet hosts of every route, in the routes' order: the last resort.
        let mut busy = Vec::new();
        for t in &targets {
            let Some((provider, name)) = t.model.split_once('/') else {
                continue;
            };
            // A route whose provider is not configured here is skipped, not fatal.
            if let Ok((ready, b)) = self.candidates(provider, name) {
                busy.extend(b);
                if !ready.is_empty() {
                    groups.push((t, ready));
                }
            }
        }
        match alias.strategy {
            Strategy::Priority => {}
            Strategy::Weighted => {
                let total: u32 = groups.iter().map(|(t, _)| t.weight).sum();
                if total > 0 {
                    let mut pick = rand::rng().random_range(0..total);
                    let mut chosen = 0;
                    for (i, (t, _)) in groups.iter().enumerate() {
                        if pick < t.weight {
                            chosen = i;
                            break;
                        }
                        pick -= t.weight;
                    }
                    let first = groups.remove(chosen);
                    groups.insert(0, first);
                }
            }
            Strategy::LeastOutstanding => groups
                .sort_by_key(|(_, c)| c.iter().map(|c| c.health.in_flight()).min().unwrap_or(0)),
            Strategy::Latency => groups.sort_by_key(|(_, c)| {
                c.iter()
                    .filter_map(|c| c.health.ewma())
                    .min()
                    .unwrap_or(Duration::ZERO)
            }),
            Strategy::Cheapest => {
                let cost = |t: &Target| {
                    self.routes
                        .price(&t.model)
                        .map_or(f64::INFINITY, |p| p.input_per_mtok + p.output_per_mtok)
                };
                // Equal prices: a fleet GPU with the model loaded first (it is listed first
                // within its group by `candidates`).
                groups.sort_by(|a, b| {
                    cost(a.0)
                        .partial_cmp(&cost(b.0))
                        .unwrap_or(std::cmp::Ordering::Equal)
                        .then_with(|| {
                            let fleet =
                                |g: &Vec<Candidate>| g.first().is_some_and(|c| c.host_id.is_some());
                            fleet(&b.1).cmp(&fleet(&a.1))
                        })
                });
            }
        }
        let mut plan: Vec<Candidate> = groups.into_iter().flat_map(|(_, c)| c).collect();
        plan.extend(busy);
        if plan.is_empty() {
            return Err(no_upstream(&alias.name));
        }
        Ok(plan)
    }

    /// The upstreams of one `provider/model`: the provider, or fleet hosts with headroom
    /// (first) and fleet hosts with the model loaded but busy (second), ranked once.
    fn candidates(
        &self,
        provider: &str,
        model: &str,
    ) -> Result<(Vec<Candidate>, Vec<Candidate>), LlmError> {
        if provider == FLEET_OLLAMA || provider == FLEET_SD {
            let in_flight = |h: &str| self.health.get(&fleet_upstream(provider, h)).in_flight();
            let picks = if provider == FLEET_OLLAMA {
                self.fleet.ollama(model, &in_flight)
            } else {
                self.fleet.sd(model, &in_flight)
            };
            let to = |list: Vec<FleetPick>| -> Vec<Candidate> {
                list.into_iter()
                    .map(|p| self.fleet_candidate(provider, model, p))
                    .collect()
            };
            return Ok((to(picks.ready), to(picks.busy)));
        }
        let Some(p) = self.providers.get(provider) else {
            return Err(unknown_model(&format!("{provider}/{model}")));
        };
        if model.is_empty() || model.len() > 200 {
            return Err(
                LlmError::invalid("the model name after the provider is 1 to 200 bytes")
                    .param("model"),
            );
        }
        let candidate = Candidate {
            label: format!("{provider}/{model}"),
            upstream: provider.to_owned(),
            model: model.to_owned(),
            dialect: p.dialect.clone(),
            transport: p.transport.clone(),
            timeouts: p.timeouts,
            host_id: None,
            health: self.health.get(provider),
        };
        Ok((vec![candidate], Vec::new()))
    }

    fn fleet_candidate(&self, provider: &str, model: &str, pick: FleetPick) -> Candidate {
        let upstream = fleet_upstream(provider, &pick.host_id);
        let kind = if provider == FLEET_OLLAMA {
            ProviderKind::Ollama
        } else {
            ProviderKind::Sdwebui
        };
        Candidate {
            label: format!("{provider}/{model}"),
            model: pick.model.clone(),
            dialect: dialect(kind),
            transport: pick.transport,
            timeouts: self.fleet_timeouts,
            host_id: Some(pick.host_id),
            health: self.health.get(&upstream),
            upstream,
        }
    }
}

pub fn fleet_upstream(provider: &str, host: &str) -> String {
    format!("{provider}@{host}")
}

fn unknown_model(model: &str) -> LlmError {
    LlmError::new(
        StatusCode::NOT_FOUND,
        format!(
            "the model '{model}' does not exist here: use provider/model (e.g. openai/gpt-4o-mini, ollama/llama3.2) or an alias; GET /v1/models lists them"
        ),
    )
    .code("model_not_found")
    .param("model")
}

fn no_upstream(model: &str) -> LlmError {
    LlmError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("no upstream can serve '{model}' now (no configured provider, or no online host has the model)"),
    )
    .code("no_upstream")
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why an attempt failed, and whether the next upstream may be tried.
struct Failed {
    error: LlmError,
    /// Another upstream may be tried (nothing reached the client, the fault is not the request's).
    retryable: bool,
    /// Counts against the upstream's health.
    upstream_fault: bool,
    retry_after: Option<Duration>,
}

impl Failed {
    fn upstream(status: StatusCode, message: String, retry_after: Option<Duration>) -> Self {
        Self {
            error: LlmError::new(status, message).code("upstream_error"),
            retryable: true,
            upstream_fault: true,
            retry_after,
        }
    }
}

/// What an attempt produced.
enum Answer {
    Whole(Whole),
    Stream {
        reply: HttpReply,
        decoder: Box<dyn ChatDecoder>,
        pending: Vec<Emit>,
    },
}

/// Measures and records one call.
struct Meterer {
    gateway: Arc<Gateway>,
    who: Metered,
    endpoint: &'static str,
    requested: String,
    stream: bool,
    started: Instant,
    /// Time spent waiting on upstreams (excluded from the overhead).
    upstream_wait: Duration,
    attempts: u32,
    prompt_estimate: u64,
}

impl Meterer {
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        candidate: Option<&Candidate>,
        usage: Option<Usage>,
        text: usize,
        ttft: Option<Duration>,
        overhead: Duration,
        outcome: Outcome,
        status: u16,
        error: Option<String>,
    ) {
        let estimated = usage.is_none() && (outcome == Outcome::Ok || text > 0);
        let usage = usage.unwrap_or_else(|| {
            if outcome == Outcome::Ok || text > 0 {
                Usage::new(self.prompt_estimate, (text as u64).div_ceil(4), 0)
            } else {
                Usage::default()
            }
        });
        // A call that never reached an upstream is not labelled with whatever model name the
        // client made up (labels and roll-up rows stay bounded).
        let label = candidate.map_or_else(|| "none".to_owned(), |c| c.label.clone());
        let cost = self
            .gateway
            .routes
            .price(&label)
            .map_or(0.0, |p| p.cost(&usage));
        let now = now_ms();
        let record = UsageRecord {
            id: crate::identity::auth::new_id(),
            ts_ms: now,
            tenant_id: self.who.tenant_id.clone(),
            key_id: self.who.key_id.clone(),
            user_id: self.who.user_id.clone(),
            endpoint: self.endpoint.to_owned(),
            requested: self.requested.clone(),
            model: label,
            upstream: candidate.map_or_else(|| "none".to_owned(), |c| c.upstream.clone()),
            host_id: candidate.and_then(|c| c.host_id.clone()),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            estimated,
            cost_usd: cost,
            ttft_ms: ttft.map(|d| d.as_millis() as u64),
            duration_ms: self.started.elapsed().as_millis() as u64,
            overhead_us: overhead.as_micros() as u64,
            stream: self.stream,
            attempts: self.attempts,
            outcome,
            status,
            error,
        };
        let mut subjects = Vec::new();
        if let Some(k) = &self.who.key_id {
            subjects.push(Subject::Key(k.clone()));
        }
        if let Some(t) = &self.who.tenant_id {
            subjects.push(Subject::Tenant(t.clone()));
        }
        self.gateway.meter.spend(
            &subjects,
            usage.prompt_tokens + usage.completion_tokens,
            cost,
            now,
            &day_of(now),
        );
        self.gateway.metrics.observe(&record);
        self.gateway.usage.submit(record);
    }
}

/// Handles one call end to end: plan, attempts, answer, usage.
pub async fn serve(
    gateway: Arc<Gateway>,
    who: Metered,
    model: &str,
    job: Job<'_>,
    started: Instant,
) -> Response {
    let mut meter = Meterer {
        gateway: gateway.clone(),
        who,
        endpoint: job.endpoint(),
        requested: model.chars().take(200).collect(),
        stream: job.stream(),
        started,
        upstream_wait: Duration::ZERO,
        attempts: 0,
        prompt_estimate: job.prompt_tokens(),
    };
    let fail = |meter: &Meterer, e: LlmError, outcome: Outcome, candidate: Option<&Candidate>| {
        let overhead = meter.started.elapsed().saturating_sub(meter.upstream_wait);
        meter.record(
            candidate,
            None,
            0,
            None,
            overhead,
            outcome,
            e.status.as_u16(),
            Some(e.message.clone()),
        );
        let mut response = axum::response::IntoResponse::into_response(e);
        if let Some(c) = candidate {
            set_headers(&mut response, c, overhead);
        }
        response
    };
    if let Err(e) = gateway.admit(&meter.who) {
        return fail(&meter, e, Outcome::Limited, None);
    }
    let plan = match gateway.plan(model, job) {
        Ok(p) => p,
        Err(e) => return fail(&meter, e, Outcome::Invalid, None),
    };
    let mut last: Option<(Failed, Candidate)> = None;
    let mut skipped: Option<Skip> = None;
    let mut checked: Option<LlmError> = None;
    for candidate in &plan {
        if let Job::Chat(req) = job
            && let Err(e) = candidate.dialect.check_chat(req)
        {
            checked = Some(e);
            continue;
        }
        if let Err(skip) = candidate.health.admit(Instant::now()) {
            skipped = Some(match (skipped, skip) {
                (Some(Skip::RetryAfter(a)), Skip::RetryAfter(b)) => Skip::RetryAfter(a.min(b)),
                (_, s) => s,
            });
            continue;
        }
        meter.attempts += 1;
        let flight = candidate.health.start();
        let attempt_start = Instant::now();
        let meta = AnswerMeta {
            id: format!("chatcmpl-{}", crate::identity::auth::new_id()),
            created: unix_now(),
            model: candidate.label.clone(),
        };
        let outcome = attempt(candidate, job, &meta).await;
        meter.upstream_wait += attempt_start.elapsed();
        match outcome {
            Ok(Answer::Whole(whole)) => {
                candidate.health.success(attempt_start.elapsed());
                drop(flight);
                let overhead = meter.started.elapsed().saturating_sub(meter.upstream_wait);
                meter.record(
                    Some(candidate),
                    whole.usage,
                    whole.text,
                    Some(meter.started.elapsed()),
                    overhead,
                    Outcome::Ok,
                    200,
                    None,
                );
                let mut response = Response::new(Body::from(whole.body));
                response.headers_mut().insert(
                    axum::http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                set_headers(&mut response, candidate, overhead);
                return response;
            }
            Ok(Answer::Stream {
                reply,
                decoder,
                pending,
            }) => {
                let first_event = attempt_start.elapsed();
                let include_usage = matches!(job, Job::Chat(r) if r.include_usage);
                let overhead = meter.started.elapsed().saturating_sub(meter.upstream_wait);
                return stream_response(StreamState {
                    reply,
                    decoder,
                    pending,
                    out: Vec::new(),
                    candidate: candidate.clone(),
                    meter,
                    flight: Some(flight),
                    include_usage,
                    meta,
                    usage: None,
                    text: 0,
                    finished: false,
                    done: false,
                    ended: false,
                    deadline: attempt_start + candidate.timeouts.total(),
                    first_event,
                    overhead,
                    attempt_start,
                });
            }
            Err(failed) => {
                if failed.upstream_fault {
                    candidate.health.failure(
                        &failed.error.message,
                        failed.retry_after,
                        Instant::now(),
                    );
                } else {
                    candidate.health.abandon();
                }
                tracing::info!(upstream = %candidate.upstream, model = %candidate.label, error = %failed.error.message, retryable = failed.retryable, "LLM attempt failed");
                if !failed.retryable {
                    let e = failed.error.clone();
                    let outcome = if e.status.is_client_error() {
                        Outcome::Invalid
                    } else {
                        Outcome::UpstreamError
                    };
                    return fail(&meter, e, outcome, Some(candidate));
                }
                last = Some((failed, candidate.clone()));
            }
        }
    }
    if let Some((failed, candidate)) = last {
        let mut e = failed.error;
        if meter.attempts > 1 {
            e.message = format!(
                "{} upstreams failed; the last: {}",
                meter.attempts, e.message
            );
        }
        return fail(&meter, e, Outcome::UpstreamError, Some(&candidate));
    }
    if let Some(e) = checked {
        return fail(&meter, e, Outcome::Invalid, None);
    }
    let e = match skipped {
        Some(Skip::RetryAfter(wait)) => LlmError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "every upstream for this model asked us to wait; retry later",
        )
        .code("upstream_rate_limited")
        .retry_after(wait.as_secs_f64().ceil() as u64),
        Some(Skip::Open(wait)) => LlmError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "every upstream for this model is failing (circuit open); retry later",
        )
        .code("upstream_unavailable")
        .retry_after(wait.as_secs_f64().ceil().max(1.0) as u64),
        None => no_upstream(model),
    };
    fail(&meter, e, Outcome::UpstreamError, None)
}

fn set_headers(response: &mut Response, c: &Candidate, overhead: Duration) {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&c.upstream) {
        headers.insert("x-axon-upstream", v);
    }
    if let Ok(v) = HeaderValue::from_str(&c.label) {
        headers.insert("x-axon-model", v);
    }
    headers.insert(
        "x-axon-overhead-us",
        HeaderValue::from(overhead.as_micros() as u64),
    );
}

/// One try at one upstream, up to the first event of a stream or the whole answer.
async fn attempt(c: &Candidate, job: Job<'_>, meta: &AnswerMeta) -> Result<Answer, Failed> {
    let request_error = |e: LlmError| Failed {
        error: e,
        retryable: false,
        upstream_fault: false,
        retry_after: None,
    };
    let call = match job {
        Job::Chat(req) => c.dialect.chat_call(req, &c.model),
        Job::Embed(req) => c.dialect.embed_call(req, &c.model),
        Job::Image(req) => c.dialect.image_call(req, &c.model),
    }
    .map_err(request_error)?;
    let t = c.timeouts;
    let deadline = Instant::now() + t.total();
    let mut reply = match tokio::time::timeout(t.first_byte(), c.transport.send(call)).await {
        Err(_) => {
            return Err(Failed::upstream(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "{} did not answer within {} ms",
                    c.upstream, t.first_byte_ms
                ),
                None,
            ));
        }
        Ok(Err(e)) => return Err(transport_failed(c, &e)),
        Ok(Ok(reply)) => reply,
    };
    if !(200..300).contains(&reply.status) {
        return Err(status_failed(c, &mut reply, t.idle()).await);
    }
    let wait = || {
        t.idle()
            .min(deadline.saturating_duration_since(Instant::now()))
    };
    if !job.stream() {
        let mut body = Vec::new();
        loop {
            match tokio::time::timeout(wait(), reply.next()).await {
                Err(_) => {
                    return Err(Failed::upstream(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("{} stalled while answering", c.upstream),
                        None,
                    ));
                }
                Ok(Err(e)) => return Err(transport_failed(c, &e)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(piece))) => {
                    if body.len() + piece.len() > MAX_WHOLE {
                        return Err(Failed::upstream(
                            StatusCode::BAD_GATEWAY,
                            format!("{} sent an answer over {MAX_WHOLE} bytes", c.upstream),
                            None,
                        ));
                    }
                    body.extend_from_slice(&piece);
                }
            }
        }
        let whole = match job {
            Job::Chat(req) => c.dialect.chat_whole(req, meta, &body),
            Job::Embed(_) => c.dialect.embed_whole(&c.label, &body),
            Job::Image(_) => c.dialect.image_whole(&body),
        }
        .map_err(|e| {
            Failed::upstream(
                StatusCode::BAD_GATEWAY,
                format!("{}: {e}", c.upstream),
                None,
            )
        })?;
        return Ok(Answer::Whole(whole));
    }
    let Job::Chat(req) = job else {
        return Err(request_error(LlmError::invalid("only chat streams")));
    };
    let mut decoder = c.dialect.chat_stream(req, meta);
    let mut pending = Vec::new();
    loop {
        match tokio::time::timeout(wait(), reply.next()).await {
            Err(_) => {
                return Err(Failed::upstream(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("{} sent no content within {} ms", c.upstream, t.idle_ms),
                    None,
                ));
            }
            Ok(Err(e)) => return Err(transport_failed(c, &e)),
            Ok(Ok(None)) => {
                decoder.finish(&mut pending).map_err(|e| {
                    Failed::upstream(
                        StatusCode::BAD_GATEWAY,
                        format!("{}: {e}", c.upstream),
                        None,
                    )
                })?;
                if pending
                    .iter()
                    .any(|e| matches!(e, Emit::Done | Emit::Finish(_)))
                {
                    return Ok(Answer::Stream {
                        reply,
                        decoder,
                        pending,
                    });
                }
                return Err(Failed::upstream(
                    StatusCode::BAD_GATEWAY,
                    format!("{}'s stream ended before any content", c.upstream),
                    None,
                ));
            }
            Ok(Ok(Some(piece))) => {
                decoder.push(&piece, &mut pending).map_err(|e| {
                    Failed::upstream(
                        StatusCode::BAD_GATEWAY,
                        format!("{}: {e}", c.upstream),
                        None,
                    )
                })?;
                if pending
                    .iter()
                    .any(|e| matches!(e, Emit::Chunk { .. } | Emit::Done))
                {
                    return Ok(Answer::Stream {
                        reply,
                        decoder,
                        pending,
                    });
                }
            }
        }
    }
}

fn transport_failed(c: &Candidate, e: &TransportError) -> Failed {
    Failed::upstream(
        StatusCode::BAD_GATEWAY,
        format!("{}: {e}", c.upstream),
        None,
    )
}

async fn status_failed(c: &Candidate, reply: &mut HttpReply, idle: Duration) -> Failed {
    let body = tokio::time::timeout(idle, reply.read_all(MAX_ERROR_BODY))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let upstream = read_error(&body);
    let retry_after = reply
        .retry_after
        .or(upstream.retry_after)
        .map(Duration::from_secs);
    let said = if upstream.message.is_empty() {
        format!("HTTP {}", reply.status)
    } else {
        upstream.message.clone()
    };
    match reply.status {
        // The request itself is wrong: the client hears the upstream's words, and no other
        // upstream is tried (a context-length error must not silently become a smaller model).
        400 | 413 | 422 => {
            let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_REQUEST);
            let mut e = LlmError::new(status, said);
            e.code = upstream
                .code
                .clone()
                .or_else(|| Some("upstream_rejected".into()));
            Failed {
                error: e,
                retryable: false,
                upstream_fault: false,
                retry_after: None,
            }
        }
        // The model is not on this upstream: another may have it.
        404 => Failed {
            error: LlmError::new(StatusCode::NOT_FOUND, format!("{}: {said}", c.upstream))
                .code("model_not_found"),
            retryable: true,
            upstream_fault: false,
            retry_after: None,
        },
        // Our credentials for the upstream: the client's request is fine, so it must not see
        // a 401 (its SDK would blame its own key).
        401 | 403 => Failed::upstream(
            StatusCode::BAD_GATEWAY,
            format!("{} refused the gateway's credentials: {said}", c.upstream),
            None,
        ),
        429 => {
            let mut f = Failed::upstream(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{} is rate limiting: {said}", c.upstream),
                retry_after,
            );
            f.error.code = Some("upstream_rate_limited".into());
            if let Some(r) = retry_after {
                f.error.retry_after = Some(r.as_secs().max(1));
            }
            f
        }
        s => Failed::upstream(
            if s == 503 {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            },
            format!("{} failed with HTTP {s}: {said}", c.upstream),
            retry_after,
        ),
    }
}

/// A committed stream's state, driven by the response body.
struct StreamState {
    reply: HttpReply,
    decoder: Box<dyn ChatDecoder>,
    pending: Vec<Emit>,
    out: Vec<u8>,
    candidate: Candidate,
    meter: Meterer,
    flight: Option<InFlight>,
    include_usage: bool,
    meta: AnswerMeta,
    usage: Option<Usage>,
    text: usize,
    finished: bool,
    done: bool,
    /// The record is written.
    ended: bool,
    deadline: Instant,
    first_event: Duration,
    overhead: Duration,
    attempt_start: Instant,
}

impl StreamState {
    fn close(&mut self, outcome: Outcome, error: Option<String>) {
        if self.ended {
            return;
        }
        self.ended = true;
        match outcome {
            Outcome::Ok => self.candidate.health.success(self.first_event),
            Outcome::Cut => self.candidate.health.failure(
                error.as_deref().unwrap_or("stream cut"),
                None,
                Instant::now(),
            ),
            _ => self.candidate.health.abandon(),
        }
        self.flight.take();
        self.meter.record(
            Some(&self.candidate),
            self.usage,
            self.text,
            Some(self.overhead + self.first_event),
            self.overhead,
            outcome,
            200,
            error,
        );
        let _ = self.attempt_start;
    }

    /// The next bytes for the client; `None` at the end.
    async fn next(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        loop {
            self.drain_pending();
            if self.done {
                return Some(self.finish_ok());
            }
            if !self.out.is_empty() {
                return Some(Bytes::from(std::mem::take(&mut self.out)));
            }
            let wait = self
                .candidate
                .timeouts
                .idle()
                .min(self.deadline.saturating_duration_since(Instant::now()));
            let step: Result<(), String> = match tokio::time::timeout(wait, self.reply.next()).await
            {
                Err(_) => Err(format!(
                    "{} stopped sending for {} ms mid-answer",
                    self.candidate.upstream,
                    wait.as_millis()
                )),
                Ok(Err(e)) => Err(format!("{}: {e}", self.candidate.upstream)),
                Ok(Ok(None)) => match self.decoder.finish(&mut self.pending) {
                    Ok(()) => {
                        self.drain_pending();
                        if self.finished || self.done {
                            return Some(self.finish_ok());
                        }
                        Err(format!(
                            "{}'s stream ended before the answer was complete",
                            self.candidate.upstream
                        ))
                    }
                    Err(e) => Err(format!("{}: {e}", self.candidate.upstream)),
                },
                Ok(Ok(Some(piece))) => match self.decoder.push(&piece, &mut self.pending) {
                    Ok(()) => continue,
                    Err(e) => Err(format!("{}: {e}", self.candidate.upstream)),
                },
            };
            let Err(message) = step else { continue };
            // Mid-stream failure: an error event, and never `[DONE]`.
            let message = format!("the answer broke off mid-stream: {message}");
            let error =
                LlmError::new(StatusCode::BAD_GATEWAY, message.clone()).code("stream_interrupted");
            let mut bytes = std::mem::take(&mut self.out);
            bytes.extend_from_slice(b"data: ");
            bytes.extend_from_slice(error.body().as_bytes());
            bytes.extend_from_slice(b"\n\n");
            self.close(Outcome::Cut, Some(message));
            return Some(Bytes::from(bytes));
        }
    }

    fn drain_pending(&mut self) {
        for emit in std::mem::take(&mut self.pending) {
            match emit {
                Emit::Chunk { json, text } => {
                    self.text += text;
                    self.out.extend_from_slice(b"data: ");
                    self.out.extend_from_slice(&json);
                    self.out.extend_from_slice(b"\n\n");
                }
                Emit::Usage(u) => self.usage = Some(u),
                Emit::Finish(_) => self.finished = true,
                Emit::Done => self.done = true,
            }
        }
    }

    fn finish_ok(&mut self) -> Bytes {
        let mut bytes = std::mem::take(&mut self.out);
        if self.include_usage {
            let usage = self.usage.unwrap_or_else(|| {
                Usage::new(
                    self.meter.prompt_estimate,
                    (self.text as u64).div_ceil(4),
                    0,
                )
            });
            let chunk = serde_json::json!({
                "id": self.meta.id,
                "object": "chat.completion.chunk",
                "created": self.meta.created,
                "model": self.meta.model,
                "choices": [],
                "usage": usage.to_openai(),
            });
            bytes.extend_from_slice(b"data: ");
            bytes.extend_from_slice(chunk.to_string().as_bytes());
            bytes.extend_from_slice(b"\n\n");
        }
        bytes.extend_from_slice(b"data: [DONE]\n\n");
        self.close(Outcome::Ok, None);
        Bytes::from(bytes)
    }
}

impl Drop for StreamState {
    fn drop(&mut self) {
        // The client went away mid-answer: dropping the reply closes the upstream request.
        if !self.ended {
            self.close(
                Outcome::ClientClosed,
                Some("the client closed the stream".into()),
            );
        }
    }
}

fn stream_response(state: StreamState) -> Response {
    let upstream = state.candidate.clone();
    let overhead = state.overhead;
    let body = futures_util::stream::unfold(state, |mut state| async move {
        let bytes = state.next().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(bytes), state))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    set_headers(&mut response, &upstream, overhead);
    response
}
