//! Deploys of ready orders (`POST /api/orders/{id}/deploy/{channel}`, admin), the hand
//! resolution of a deploy whose outcome is unknown, the channels' health
//! (`/api/integrations/...`), and the artifact download links handed to n8n
//! (`GET /api/artifacts/{token}`, public: the signed token is the grant).

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::orders::{render, visible};
use super::{Route, audit_ok, optional_json};
use crate::AppState;
use crate::agency::builder;
use crate::agency::deploy::{Channel, DeployError, DeployRequest, Health};
use crate::agency::orders::DeployEvent;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::identity::auth::Caller;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(
            Method::POST,
            "/api/orders/{id}/deploy/{channel}",
            post(deploy),
        ),
        Route::new(
            Method::POST,
            "/api/orders/{id}/deploys/{deploy_id}/resolve",
            post(resolve),
        ),
        Route::new(Method::GET, "/api/integrations", get(all_health)),
        Route::new(
            Method::GET,
            "/api/integrations/{channel}/health",
            get(health),
        ),
        Route::new(Method::GET, "/api/artifacts/{token}", get(artifact)),
    ]
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        let message = e.to_string();
        match e {
            DeployError::NotReady(_)
            | DeployError::QaNotOk(_)
            | DeployError::InFlight { .. }
            | DeployError::Unresolved { .. }
            | DeployError::NotUnknown { .. } => ApiError::conflict(message),
            DeployError::WrongProduct { .. } | DeployError::Invalid(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                axon_shared::ErrorCode::BadRequest,
                message,
            ),
            DeployError::Unavailable(_) => ApiError::unavailable(message),
            DeployError::NoDeploy(_) => ApiError::not_found(message),
            DeployError::Replay(_) => ApiError::internal("a replay escaped its handler"),
            DeployError::Book(e) => e.into(),
            DeployError::Store(e) => e.into(),
        }
    }
}

fn channel(name: &str) -> Result<Channel, ApiError> {
    Channel::parse(name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no deploy channel {name}; the channels are whatsapp, social and telegram"
        ))
    })
}

/// A deploy accepted, or found already done.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Deployed {
    pub deploy: DeployEvent,
    /// `true`: this content was already deployed; nothing was sent again.
    pub replayed: bool,
    /// The order's version after the deploy was recorded.
    pub order_version: u64,
}

async fn deploy(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, name)): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let channel = channel(&name)?;
    let request: DeployRequest = optional_json(&body)?;
    visible(&state, &caller, &id)?;
    let started = start_deploy(&state, &caller, &id, channel, &request).await?;
    let mut response = (
        StatusCode::ACCEPTED,
        ApiJson(Deployed {
            order_version: started.order.version,
            replayed: started.replayed,
            deploy: started.event,
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", started.order.version)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(response)
}

/// Starts a deploy as `caller` and, unless it is a replay (which sends nothing), makes it
/// durable, wakes the outbox and audits it; a refusal is audited too. The API and the
/// console's deploy buttons both come here.
pub(crate) async fn start_deploy(
    state: &AppState,
    caller: &Caller,
    id: &str,
    channel: Channel,
    request: &DeployRequest,
) -> Result<crate::agency::deploy::Started, ApiError> {
    let started =
        match state
            .agency
            .deployer
            .start(&state.agency.book, id, &caller.id, channel, request)
        {
            Ok(s) => s,
            Err(e) => {
                state.audit.record(
                    state
                        .audit
                        .event("order.deploy", "denied")
                        .caller(caller)
                        .target(&format!("{id} {}", channel.as_str()))
                        .reason(&e.to_string()),
                );
                return Err(e.into());
            }
        };
    if !started.replayed {
        state.store.db.flush().await?;
        state.outbox.wake();
        audit_ok(
            state,
            caller,
            "order.deploy",
            &format!("{id} {} {}", channel.as_str(), started.event.id),
        );
    }
    Ok(started)
}

/// How a person settles a deploy whose outcome is unknown.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    /// `success` (it did reach the channel) or `failed` (it did not; it may be sent again).
    pub status: String,
    /// What was checked.
    #[serde(default)]
    pub reason: Option<String>,
}

async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, deploy_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<Resolution>,
) -> Result<ApiJson<crate::agency::orders::Order>, ApiError> {
    let success = match body.status.as_str() {
        "success" => true,
        "failed" => false,
        _ => return Err(ApiError::bad_request("status must be success or failed")),
    };
    visible(&state, &caller, &id)?;
    let order = state.agency.deployer.resolve(
        &state.agency.book,
        &id,
        &deploy_id,
        &caller.id,
        success,
        body.reason.as_deref(),
    )?;
    state.store.db.flush().await?;
    audit_ok(
        &state,
        &caller,
        "order.deploy_resolve",
        &format!("{id} {deploy_id} {}", body.status),
    );
    Ok(ApiJson(order))
}

async fn health(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<Health>, ApiError> {
    let channel = channel(&name)?;
    Ok(ApiJson(
        state.agency.deployer.health(channel, &state.outbox).await?,
    ))
}

async fn all_health(State(state): State<AppState>) -> Result<ApiJson<Vec<Health>>, ApiError> {
    let deployer = &state.agency.deployer;
    let (w, s, t) = tokio::join!(
        deployer.health(Channel::Whatsapp, &state.outbox),
        deployer.health(Channel::Social, &state.outbox),
        deployer.health(Channel::Telegram, &state.outbox),
    );
    Ok(ApiJson(vec![w?, s?, t?]))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct ArtifactQuery {
    /// One file of the archive, by its path (e.g. `flows/main.json`); the whole archive when
    /// absent.
    #[serde(default)]
    pub file: Option<String>,
}

async fn artifact(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
    Query(query): Query<ArtifactQuery>,
) -> Result<Response, ApiError> {
    let gone = || ApiError::not_found("this download link is unknown or has expired");
    let order_id = state
        .agency
        .deployer
        .links
        .verify(&token, crate::model::now())
        .ok_or_else(gone)?;
    let order = state.agency.book.get(&order_id).map_err(|_| gone())?;
    let files = render(&order)?;
    let (bytes, content_type, name) = match &query.file {
        Some(path) => {
            let file = files
                .into_iter()
                .find(|f| &f.path == path)
                .ok_or_else(|| ApiError::not_found("no such file in this order's artifacts"))?;
            let name = file.path.rsplit('/').next().unwrap_or("file").to_owned();
            let kind = if name.ends_with(".json") {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            (file.bytes, kind, name)
        }
        None => {
            let root = format!("order-{}", order.id.to_lowercase());
            let bytes = builder::archive(&files, &root).map_err(|e| {
                ApiError::internal(format!("the archive could not be written: {e}"))
            })?;
            (bytes, "application/x-tar", format!("{root}.tar"))
        }
    };
    let mut response = Response::new(axum::body::Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
