//! `/api/webhooks` and `/api/outbox`: webhook subscriptions, their deliveries, and everything
//! the outbox holds (admin only). A subscription's secret is answered only by creation and
//! rotation.

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, patch, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Route, audit_ok};
use crate::AppState;
use crate::agency::outbox::{Delivery, DeliveryState, Retried};
use crate::agency::webhooks::{self, EventName, Subscription};
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::identity::auth::{Caller, new_id};
use crate::model::now;
use crate::store::Writes;

/// Longest description.
const MAX_DESCRIPTION_CHARS: usize = 500;
/// Most events named by one subscription.
const MAX_EVENTS: usize = 16;
/// Default and largest page of deliveries.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/api/webhooks", get(list)),
        Route::new(Method::POST, "/api/webhooks", post(create)),
        Route::new(Method::GET, "/api/webhooks/{id}", get(show)),
        Route::new(Method::PATCH, "/api/webhooks/{id}", patch(update)),
        Route::new(Method::DELETE, "/api/webhooks/{id}", delete(remove)),
        Route::new(
            Method::POST,
            "/api/webhooks/{id}/rotate-secret",
            post(rotate_secret),
        ),
        Route::new(Method::POST, "/api/webhooks/{id}/ping", post(ping)),
        Route::new(
            Method::GET,
            "/api/webhooks/{id}/deliveries",
            get(deliveries),
        ),
        Route::new(Method::GET, "/api/outbox", get(outbox)),
        Route::new(Method::POST, "/api/outbox/{id}/retry", post(retry)),
    ]
}

/// A subscription as listed: everything but its secret.
#[derive(Serialize, JsonSchema)]
pub(super) struct SubscriptionView {
    id: String,
    url: String,
    /// Event names, or `*` for all.
    events: Vec<String>,
    description: String,
    active: bool,
    /// Why the control plane turned it off (the receiver answered 410 Gone).
    disabled_reason: Option<String>,
    created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::model::Rfc3339")]
    updated_at: OffsetDateTime,
    /// Deliveries that reached the receiver.
    delivered: u64,
    /// Deliveries given up on.
    failed: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::model::Rfc3339>")]
    last_delivery_at: Option<OffsetDateTime>,
    last_status: Option<u16>,
}

impl From<Subscription> for SubscriptionView {
    fn from(s: Subscription) -> Self {
        Self {
            id: s.id,
            url: s.url,
            events: s.events,
            description: s.description,
            active: s.active,
            disabled_reason: s.disabled_reason,
            created_by: s.created_by,
            created_at: s.created_at,
            updated_at: s.updated_at,
            delivered: s.delivered,
            failed: s.failed,
            last_delivery_at: s.last_delivery_at,
            last_status: s.last_status,
        }
    }
}

/// A subscription with its secret: the answer of creation and rotation only.
#[derive(Serialize, JsonSchema)]
pub(super) struct SubscriptionWithSecret {
    /// The HMAC-SHA256 key of `X-Axon-Signature`; shown this once.
    secret: String,
    #[serde(flatten)]
    view: SubscriptionView,
}

impl From<Subscription> for SubscriptionWithSecret {
    fn from(s: Subscription) -> Self {
        Self {
            secret: s.secret.clone(),
            view: s.into(),
        }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSubscription {
    /// Where deliveries are POSTed: http or https, no credentials in it. Loopback and private
    /// addresses are allowed.
    #[schemars(length(min = 1, max = 2000))]
    url: String,
    /// The events to send (`*`: all).
    #[schemars(length(min = 1, max = 16))]
    events: Vec<EventName>,
    #[serde(default)]
    #[schemars(length(max = 500))]
    description: String,
    /// Off: nothing is staged for it. Default on.
    #[serde(default)]
    active: Option<bool>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SubscriptionPatch {
    #[schemars(length(min = 1, max = 2000))]
    url: Option<String>,
    #[schemars(length(min = 1, max = 16))]
    events: Option<Vec<EventName>>,
    #[schemars(length(max = 500))]
    description: Option<String>,
    /// Turning it on again clears `disabled_reason`.
    active: Option<bool>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliveriesQuery {
    /// At most this many, newest first (default 50, at most 500).
    #[schemars(range(min = 1, max = 500))]
    limit: Option<usize>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct OutboxQuery {
    /// Only deliveries in this state.
    state: Option<DeliveryState>,
    /// At most this many, newest first (default 50, at most 500).
    #[schemars(range(min = 1, max = 500))]
    limit: Option<usize>,
}

fn check_url(url: &str) -> Result<(), ApiError> {
    webhooks::check_url(url)
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn check_events(events: &[EventName]) -> Result<Vec<String>, ApiError> {
    if events.is_empty() || events.len() > MAX_EVENTS {
        return Err(ApiError::bad_request(format!(
            "events must name 1 to {MAX_EVENTS} events, or \"*\""
        )));
    }
    let mut names: Vec<String> = events.iter().map(|e| e.as_str().to_owned()).collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn check_description(text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.chars().count() > MAX_DESCRIPTION_CHARS || text.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} printable characters"
        )));
    }
    Ok(text.to_owned())
}

fn limit(asked: Option<usize>) -> Result<usize, ApiError> {
    match asked {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        ))),
    }
}

fn find(state: &AppState, id: &str) -> Result<Subscription, ApiError> {
    state
        .outbox
        .subscriptions
        .get(id)?
        .ok_or_else(|| ApiError::not_found(format!("no webhook subscription with id {id}")))
}

/// Subscriptions kept at most.
pub const MAX_SUBSCRIPTIONS: usize = 500;

async fn list(State(state): State<AppState>) -> Result<ApiJson<Vec<SubscriptionView>>, ApiError> {
    let subs = state.outbox.subscriptions.values()?;
    Ok(ApiJson(subs.into_iter().map(Into::into).collect()))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewSubscription>,
) -> Result<(StatusCode, ApiJson<SubscriptionWithSecret>), ApiError> {
    check_url(&req.url)?;
    let events = check_events(&req.events)?;
    let description = check_description(&req.description)?;
    // Every event is matched against every subscription: their number is bounded.
    if state.outbox.subscriptions.len() >= MAX_SUBSCRIPTIONS {
        return Err(ApiError::conflict(format!(
            "at most {MAX_SUBSCRIPTIONS} webhook subscriptions; remove one first"
        )));
    }
    let stamp = now();
    let sub = Subscription {
        id: new_id(),
        url: req.url,
        events,
        description,
        active: req.active.unwrap_or(true),
        disabled_reason: None,
        secret: webhooks::new_secret(),
        created_at: stamp,
        created_by: caller.id.clone(),
        updated_at: stamp,
        delivered: 0,
        failed: 0,
        last_delivery_at: None,
        last_status: None,
    };
    if !state.outbox.subscriptions.insert_new(&sub.id, &sub)? {
        return Err(ApiError::conflict("a subscription with this id exists"));
    }
    state.store.db.flush().await?;
    audit_ok(&state, &caller, "webhook.create", &sub.id);
    Ok((StatusCode::CREATED, ApiJson(sub.into())))
}

async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<SubscriptionView>, ApiError> {
    Ok(ApiJson(find(&state, &id)?.into()))
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<SubscriptionPatch>,
) -> Result<ApiJson<SubscriptionView>, ApiError> {
    find(&state, &id)?;
    if let Some(url) = &patch.url {
        check_url(url)?;
    }
    let events = patch.events.as_deref().map(check_events).transpose()?;
    let description = patch
        .description
        .as_deref()
        .map(check_description)
        .transpose()?;
    let updated = state
        .outbox
        .subscriptions
        .update(&id, |s| {
            if let Some(url) = &patch.url {
                s.url = url.clone();
            }
            if let Some(events) = &events {
                s.events = events.clone();
            }
            if let Some(description) = &description {
                s.description = description.clone();
            }
            if let Some(active) = patch.active {
                s.active = active;
                if active {
                    s.disabled_reason = None;
                }
            }
            s.updated_at = now();
        })?
        .ok_or_else(|| ApiError::not_found(format!("no webhook subscription with id {id}")))?;
    state.store.db.flush().await?;
    audit_ok(&state, &caller, "webhook.update", &id);
    Ok(ApiJson(updated.into()))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if state.outbox.subscriptions.take(&id)?.is_none() {
        return Err(ApiError::not_found(format!(
            "no webhook subscription with id {id}"
        )));
    }
    state.store.db.flush().await?;
    // Its pending deliveries fail at their next attempt; the records stay for the listing.
    audit_ok(&state, &caller, "webhook.delete", &id);
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<SubscriptionWithSecret>, ApiError> {
    let secret = webhooks::new_secret();
    let updated = state
        .outbox
        .subscriptions
        .update(&id, |s| {
            s.secret = secret.clone();
            s.updated_at = now();
        })?
        .ok_or_else(|| ApiError::not_found(format!("no webhook subscription with id {id}")))?;
    state.store.db.flush().await?;
    audit_ok(&state, &caller, "webhook.rotate_secret", &id);
    Ok(ApiJson(updated.into()))
}

async fn ping(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, ApiJson<Delivery>), ApiError> {
    let sub = find(&state, &id)?;
    if !sub.active {
        return Err(ApiError::conflict(
            "the subscription is disabled; turn it on first",
        ));
    }
    let mut writes = Writes::new();
    let delivery = state.outbox.stage_ping(&mut writes, &sub)?;
    if !writes.apply()? {
        return Err(ApiError::conflict(
            "the delivery could not be staged; try again",
        ));
    }
    state.store.db.flush().await?;
    state.outbox.wake();
    audit_ok(&state, &caller, "webhook.ping", &id);
    Ok((StatusCode::ACCEPTED, ApiJson(delivery)))
}

async fn deliveries(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<Vec<Delivery>>, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let limit = limit(query.limit)?;
    find(&state, &id)?;
    Ok(ApiJson(state.outbox.list(None, Some(&id), limit)?))
}

async fn outbox(
    State(state): State<AppState>,
    query: Result<Query<OutboxQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<Vec<Delivery>>, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let limit = limit(query.limit)?;
    Ok(ApiJson(state.outbox.list(query.state, None, limit)?))
}

async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Delivery>, ApiError> {
    match state.outbox.retry(&id)? {
        Retried::Requeued(delivery) => {
            state.store.db.flush().await?;
            state.outbox.wake();
            audit_ok(&state, &caller, "outbox.retry", &id);
            Ok(ApiJson(*delivery))
        }
        Retried::NotFound => Err(ApiError::not_found(format!("no delivery with id {id}"))),
        Retried::AtMostOnce => Err(ApiError::conflict(
            "a deploy is sent again from its order (POST /api/orders/{id}/deploy/{channel}), where its conditions are checked",
        )),
        Retried::NotFailed(s) => Err(ApiError::conflict(format!(
            "only a failed delivery can be retried; this one is {}",
            match s {
                DeliveryState::Pending => "pending",
                DeliveryState::Delivered => "delivered",
                DeliveryState::Failed => "failed",
                DeliveryState::Unknown =>
                    "unknown (an interrupted send the service could not account for; resolve it where it was made)",
            }
        ))),
    }
}
