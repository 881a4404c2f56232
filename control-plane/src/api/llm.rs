//! The LLM gateway's HTTP edge: the OpenAI-compatible `/v1` routes (errors in OpenAI's shape)
//! and the admin routes `/api/llm/...` for aliases, prices, upstream health and usage.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Route;
use crate::AppState;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::identity::auth::{Caller, Via};
use crate::llm::gateway::{self, Job, Metered};
use crate::llm::health::UpstreamReport;
use crate::llm::provider::ProviderKind;
use crate::llm::routes::{Alias, Price, Strategy, Target};
use crate::llm::usage::{GroupBy, Totals, UsageRecord, UsageRow, aggregate, day_of};
use crate::llm::wire::{ChatRequest, EmbeddingsRequest, ImageRequest, LlmError};

/// Largest `/v1` request body: conversations may carry images as base64.
pub const MAX_LLM_BODY_BYTES: usize = 16 << 20;

pub fn routes() -> Vec<Route> {
    let big = || DefaultBodyLimit::max(MAX_LLM_BODY_BYTES);
    vec![
        Route::new(
            Method::POST,
            "/v1/chat/completions",
            post(chat).layer(big()),
        ),
        Route::new(
            Method::POST,
            "/v1/embeddings",
            post(embeddings).layer(big()),
        ),
        Route::new(
            Method::POST,
            "/v1/images/generations",
            post(images).layer(big()),
        ),
        Route::new(Method::GET, "/v1/models", get(models)),
        Route::new(Method::GET, "/api/llm/routes", get(list_routes)),
        Route::new(Method::PUT, "/api/llm/routes/{alias}", put(put_route)),
        Route::new(
            Method::DELETE,
            "/api/llm/routes/{alias}",
            delete(delete_route),
        ),
        Route::new(Method::GET, "/api/llm/prices", get(list_prices)),
        Route::new(Method::PUT, "/api/llm/prices", put(put_prices)),
        Route::new(Method::GET, "/api/llm/upstreams", get(upstreams)),
        Route::new(Method::GET, "/api/llm/usage", get(usage)),
        Route::new(Method::GET, "/api/llm/usage/records", get(usage_records)),
    ]
}

/// The request body of `/v1/chat/completions`, as documented (other OpenAI fields pass
/// through to OpenAI-compatible upstreams).
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub(super) struct ChatBody {
    /// `provider/model` (e.g. `openai/gpt-4o-mini`, `ollama/llama3.2`) or an alias.
    model: String,
    /// The conversation: `{role, content}` objects; content is text or parts.
    #[schemars(length(min = 1))]
    messages: Vec<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    tools: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    #[serde(default)]
    response_format: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
}

/// An OpenAI `chat.completion` (or, streamed, `chat.completion.chunk` events).
#[derive(Serialize, JsonSchema)]
#[allow(dead_code)] // the documented shape; upstream answers pass through
pub(super) struct Completion {
    id: String,
    object: String,
    created: u64,
    model: String,
    choices: Vec<serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The request body of `/v1/embeddings`.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub(super) struct EmbeddingsBody {
    model: String,
    /// A string or an array of strings.
    input: serde_json::Value,
    #[serde(default)]
    dimensions: Option<u32>,
}

/// An OpenAI embeddings list.
#[derive(Serialize, JsonSchema)]
#[allow(dead_code)] // the documented shape; upstream answers pass through
pub(super) struct EmbeddingList {
    object: String,
    data: Vec<serde_json::Map<String, serde_json::Value>>,
    model: String,
}

/// The request body of `/v1/images/generations`.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub(super) struct ImageBody {
    prompt: String,
    /// `sd/<checkpoint>` or an alias; default `sd/default` (any SD host).
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    n: Option<u32>,
    /// `WIDTHxHEIGHT`.
    #[serde(default)]
    size: Option<String>,
    /// Only `b64_json`.
    #[serde(default)]
    response_format: Option<String>,
}

/// Generated images, as base64 PNG.
#[derive(Serialize, JsonSchema)]
#[allow(dead_code)] // the documented shape; upstream answers pass through
pub(super) struct Images {
    created: u64,
    data: Vec<ImageData>,
}

#[derive(Serialize, JsonSchema)]
#[allow(dead_code)] // the documented shape; upstream answers pass through
struct ImageData {
    b64_json: String,
}

/// OpenAI's error shape, used by every `/v1` answer.
#[derive(Serialize, JsonSchema)]
#[allow(dead_code)]
pub(super) struct OpenAiError {
    error: OpenAiErrorDetail,
}

#[derive(Serialize, JsonSchema)]
#[allow(dead_code)]
struct OpenAiErrorDetail {
    message: String,
    #[serde(rename = "type")]
    kind: String,
    param: Option<String>,
    code: Option<String>,
}

/// Whether the request says its body is JSON.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

fn not_json() -> LlmError {
    LlmError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "send the body as JSON, with the header Content-Type: application/json",
    )
}

/// A JSON body of type `T`, or the error refusing it.
fn read_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, LlmError> {
    if !is_json(headers) {
        return Err(not_json());
    }
    serde_json::from_slice(body)
        .map_err(|e| LlmError::invalid(format!("the body does not fit this endpoint: {e}")))
}

/// Who is metered for this caller: a key's tenant (or a user's), and both sets of limits.
fn metered(state: &AppState, caller: &Caller) -> Result<Metered, LlmError> {
    let (key_id, user_id, key_limits) = match &caller.via {
        Via::ApiKey { .. } => {
            let limits = match state.store.api_key_ids.get(&caller.id)? {
                Some(digest) => state
                    .store
                    .api_keys
                    .get(&digest)?
                    .and_then(|k| k.llm_limits),
                None => None,
            };
            (Some(caller.id.clone()), None, limits)
        }
        Via::Session { .. } => (None, Some(caller.id.clone()), None),
    };
    let tenant_limits = match &caller.tenant_id {
        Some(t) => state.store.tenants.get(t)?.and_then(|t| t.llm_limits),
        None => None,
    };
    Ok(Metered {
        tenant_id: caller.tenant_id.clone(),
        key_id,
        user_id,
        key_limits,
        tenant_limits,
    })
}

impl From<crate::store::StoreError> for LlmError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

async fn chat(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    if !is_json(&headers) {
        return not_json().into_response();
    }
    let req = match ChatRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    call(&state, &caller, &req.model, Job::Chat(&req), started).await
}

/// Meters the caller and serves the call.
async fn call(
    state: &AppState,
    caller: &Caller,
    model: &str,
    job: Job<'_>,
    started: Instant,
) -> Response {
    match metered(state, caller) {
        Ok(who) => gateway::serve(state.llm.clone(), who, model, job, started).await,
        Err(e) => e.into_response(),
    }
}

async fn embeddings(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let req: EmbeddingsRequest = match read_body(&headers, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = req.check() {
        return e.into_response();
    }
    call(&state, &caller, &req.model, Job::Embed(&req), started).await
}

async fn images(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let req: ImageRequest = match read_body(&headers, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = req.check() {
        return e.into_response();
    }
    let model = req.model.as_deref().unwrap_or("sd/default");
    call(&state, &caller, model, Job::Image(&req), started).await
}

/// `GET /v1/models`.
#[derive(Serialize, JsonSchema)]
pub(super) struct ModelList {
    object: &'static str,
    data: Vec<ModelEntry>,
}

#[derive(Serialize, JsonSchema)]
struct ModelEntry {
    id: String,
    object: &'static str,
    created: u64,
    /// `axon-alias`, `axon-fleet`, or the provider's name.
    owned_by: String,
}

async fn models(State(state): State<AppState>) -> ApiJson<ModelList> {
    let data = state
        .llm
        .model_names()
        .into_iter()
        .map(|(id, owner)| ModelEntry {
            id,
            object: "model",
            created: 0,
            owned_by: owner,
        })
        .collect();
    ApiJson(ModelList {
        object: "list",
        data,
    })
}

/// The routing table as admins see it.
#[derive(Serialize, JsonSchema)]
pub(super) struct RoutesView {
    aliases: Vec<Alias>,
    /// Configured cloud providers (keys are never shown).
    providers: Vec<ProviderView>,
    /// `ollama/<model>` and `sd/<checkpoint>` offered by online hosts.
    fleet_models: Vec<String>,
}

#[derive(Serialize, JsonSchema)]
struct ProviderView {
    name: String,
    kind: ProviderKind,
    models: Vec<String>,
}

async fn list_routes(State(state): State<AppState>) -> ApiJson<RoutesView> {
    ApiJson(RoutesView {
        aliases: state.llm.routes.aliases().values().cloned().collect(),
        providers: state
            .llm
            .providers()
            .into_iter()
            .map(|(name, kind, models)| ProviderView { name, kind, models })
            .collect(),
        fleet_models: state.llm.fleet.models(),
    })
}

/// An alias's routes (its name is in the path).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AliasBody {
    #[serde(default)]
    strategy: Strategy,
    #[schemars(length(min = 1, max = 32))]
    targets: Vec<Target>,
    #[serde(default)]
    description: String,
}

async fn put_route(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<AliasBody>,
) -> Result<ApiJson<Alias>, ApiError> {
    let alias = Alias {
        name,
        strategy: body.strategy,
        targets: body.targets,
        description: body.description,
    };
    alias.check().map_err(ApiError::bad_request)?;
    let created = state.llm.routes.put_alias(alias.clone())?;
    let verb = if created { "created" } else { "replaced" };
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("llm.route.put", "ok")
            .caller(&caller)
            .target(&alias.name)
            .reason(&format!(
                "{verb}: {}",
                alias
                    .targets
                    .iter()
                    .map(|t| t.model.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
    );
    Ok(ApiJson(alias))
}

async fn delete_route(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if !state.llm.routes.remove_alias(&name)? {
        return Err(ApiError::not_found(format!("no alias named {name}")));
    }
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("llm.route.delete", "ok")
            .caller(&caller)
            .target(&name),
    );
    Ok(StatusCode::NO_CONTENT)
}

async fn list_prices(State(state): State<AppState>) -> ApiJson<Vec<Price>> {
    ApiJson(state.llm.routes.prices().values().cloned().collect())
}

/// Rows in the price table at most.
const MAX_PRICES: usize = 2_000;

/// The whole price table.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PricesBody {
    /// At most 2,000 rows: a table of that size fits the 1 MiB body limit.
    #[schemars(length(max = 2000))]
    prices: Vec<Price>,
}

async fn put_prices(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PricesBody>,
) -> Result<ApiJson<Vec<Price>>, ApiError> {
    if body.prices.len() > MAX_PRICES {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_PRICES} prices"
        )));
    }
    for p in &body.prices {
        p.check().map_err(ApiError::bad_request)?;
    }
    let mut models: Vec<&str> = body.prices.iter().map(|p| p.model.as_str()).collect();
    models.sort_unstable();
    if let Some(w) = models.windows(2).find(|w| w[0] == w[1]) {
        return Err(ApiError::bad_request(format!("{} is priced twice", w[0])));
    }
    let count = body.prices.len();
    state.llm.routes.set_prices(body.prices)?;
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("llm.prices.put", "ok")
            .caller(&caller)
            .reason(&format!("{count} prices")),
    );
    Ok(ApiJson(
        state.llm.routes.prices().values().cloned().collect(),
    ))
}

async fn upstreams(State(state): State<AppState>) -> ApiJson<Vec<UpstreamReport>> {
    ApiJson(state.llm.health.report())
}

/// `GET /api/llm/usage` filters; clients always see their own tenant only.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageQuery {
    /// First day, `YYYY-MM-DD` (UTC); default 30 days ago.
    #[schemars(regex(pattern = r"^\d{4}-\d{2}-\d{2}$"))]
    from: Option<String>,
    /// Last day, `YYYY-MM-DD`; default today.
    #[schemars(regex(pattern = r"^\d{4}-\d{2}-\d{2}$"))]
    to: Option<String>,
    /// Comma-separated: `tenant`, `key`, `model`, `upstream`, `day`. Default `tenant,model`.
    group_by: Option<String>,
    /// Staff only: one tenant (`none` for calls without a tenant).
    tenant_id: Option<String>,
}

#[derive(Serialize, JsonSchema)]
pub(super) struct UsageReport {
    from: String,
    to: String,
    group_by: Vec<GroupBy>,
    rows: Vec<UsageRow>,
    total: Totals,
}

fn valid_day(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// The tenant a caller may see usage of: a client's own, or the staff's choice.
fn usage_tenant(caller: &Caller, asked: Option<&str>) -> Option<String> {
    if caller.is_client() {
        return Some(caller.tenant_id.clone().unwrap_or_default());
    }
    asked.map(|t| {
        if t == "none" {
            String::new()
        } else {
            t.to_owned()
        }
    })
}

async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<UsageReport>, ApiError> {
    let Query(q) = query.map_err(ApiError::from)?;
    let now = gateway::now_ms();
    let to = q.to.unwrap_or_else(|| day_of(now));
    let from = q
        .from
        .unwrap_or_else(|| day_of(now.saturating_sub(30 * 86_400_000)));
    if !valid_day(&from) || !valid_day(&to) {
        return Err(ApiError::bad_request("from and to are days: YYYY-MM-DD"));
    }
    if from > to {
        return Err(ApiError::bad_request("from is after to"));
    }
    let group_by: Vec<GroupBy> = q
        .group_by
        .as_deref()
        .unwrap_or("tenant,model")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
                ApiError::bad_request(format!(
                    "group_by: {s:?} is not one of tenant, key, model, upstream, day"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let tenant = usage_tenant(&caller, q.tenant_id.as_deref());
    state
        .llm
        .usage
        .settled(std::time::Duration::from_secs(2))
        .await;
    let rows = state.llm.usage.daily(&from, &to)?;
    let (rows, total) = aggregate(rows, &group_by, tenant.as_deref());
    Ok(ApiJson(UsageReport {
        from,
        to,
        group_by,
        rows,
        total,
    }))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordsQuery {
    /// At most this many, newest first (default 100, at most 1000).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
    /// Staff only: one tenant (`none` for calls without a tenant).
    tenant_id: Option<String>,
}

async fn usage_records(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<Vec<UsageRecord>>, ApiError> {
    let Query(q) = query.map_err(ApiError::from)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit is 1 to 1000"));
    }
    let tenant = usage_tenant(&caller, q.tenant_id.as_deref());
    state
        .llm
        .usage
        .settled(std::time::Duration::from_secs(2))
        .await;
    Ok(ApiJson(state.llm.usage.recent(limit, |r| {
        tenant
            .as_deref()
            .is_none_or(|t| r.tenant_id.as_deref().unwrap_or("") == t)
    })?))
}
