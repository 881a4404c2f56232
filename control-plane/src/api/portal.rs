//! `/api/portal/{slug}`: a tenant's client portal — its profile and hosts, its catalog, and
//! its orders (list, detail, and new orders from the catalog). Clients see only their own
//! tenant; any other slug answers 404 as if it did not exist. Answers are client types
//! without internal fields.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Route;
use super::orders::{ClientNewOrder, ClientOrderPage, create_for_client};
use crate::AppState;
use crate::agency::catalog::ClientCatalogItem;
use crate::agency::orders::{ClientOrder, Estado, Filter};
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::identity::auth::Caller;
use axum::http::Method;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/api/portal/{slug}", get(portal)),
        Route::new(Method::GET, "/api/portal/{slug}/catalog", get(catalog)),
        Route::new(Method::GET, "/api/portal/{slug}/orders", get(orders)),
        Route::new(
            Method::POST,
            "/api/portal/{slug}/orders",
            axum::routing::post(order),
        ),
        Route::new(
            Method::GET,
            "/api/portal/{slug}/orders/{id}",
            get(show_order),
        ),
    ]
}

/// The tenant id behind `slug`, if the caller may use its portal.
fn tenant_of(state: &AppState, caller: &Caller, slug: &str) -> Result<String, ApiError> {
    let not_found = || ApiError::not_found(format!("no portal named {slug}"));
    let id = state.store.tenant_slugs.get(slug)?.ok_or_else(not_found)?;
    if !caller.can_see(Some(&id)) {
        return Err(not_found());
    }
    Ok(id)
}

async fn catalog(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
) -> Result<ApiJson<Vec<ClientCatalogItem>>, ApiError> {
    let tenant = tenant_of(&state, &caller, &slug)?;
    Ok(ApiJson(
        state
            .agency
            .book
            .catalog
            .values()?
            .iter()
            .filter(|c| c.visible_to(Some(&tenant)))
            .map(ClientCatalogItem::from)
            .collect(),
    ))
}

async fn orders(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
    query: Result<Query<PortalQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<ClientOrderPage>, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let tenant = tenant_of(&state, &caller, &slug)?;
    let page = state.agency.book.list(
        &Filter {
            estado: query.estado,
            ..Filter::default()
        },
        |o| o.tenant_id.as_deref() == Some(tenant.as_str()),
        query.cursor.as_deref(),
        query.limit.unwrap_or(50),
    )?;
    Ok(ApiJson(ClientOrderPage {
        items: page.items.iter().map(ClientOrder::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Portal list filters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PortalQuery {
    estado: Option<Estado>,
    cursor: Option<String>,
    /// 1–100, default 50.
    limit: Option<usize>,
}

async fn order(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
    ApiJson(req): ApiJson<ClientNewOrder>,
) -> Result<(StatusCode, ApiJson<ClientOrder>), ApiError> {
    let tenant = tenant_of(&state, &caller, &slug)?;
    let order = create_for_client(&state, &caller, Some(&tenant), req).await?;
    Ok((StatusCode::CREATED, ApiJson(ClientOrder::from(&order))))
}

async fn show_order(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((slug, id)): ApiPath<(String, String)>,
) -> Result<ApiJson<ClientOrder>, ApiError> {
    let tenant = tenant_of(&state, &caller, &slug)?;
    let not_found = || ApiError::not_found(format!("no order {id}"));
    let order = state.agency.book.orders.get(&id)?.ok_or_else(not_found)?;
    if order.tenant_id.as_deref() != Some(tenant.as_str()) {
        return Err(not_found());
    }
    Ok(ApiJson(ClientOrder::from(&order)))
}

#[derive(Serialize, JsonSchema)]
struct PortalHost {
    id: String,
    hostname: String,
    online: bool,
    capabilities: axon_shared::Capabilities,
}

#[derive(Serialize, JsonSchema)]
pub(super) struct Portal {
    slug: String,
    name: String,
    welcome: Option<Value>,
    branding: Option<Value>,
    contact: Option<Value>,
    hosts: Vec<PortalHost>,
}

async fn portal(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
) -> Result<ApiJson<Portal>, ApiError> {
    let id = tenant_of(&state, &caller, &slug)?;
    let tenant = state
        .store
        .tenants
        .get(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no portal named {slug}")))?;
    let hosts = state
        .store
        .hosts
        .values()?
        .into_iter()
        .filter(|h| h.tenant_id.as_deref() == Some(id.as_str()) && h.revoked_at.is_none())
        .map(|h| PortalHost {
            online: state.hub.is_online(&h.id),
            id: h.id,
            hostname: h.hostname,
            capabilities: h.capabilities,
        })
        .collect();
    let setting = |key: &str| tenant.settings.get(key).cloned();
    Ok(ApiJson(Portal {
        welcome: setting("welcome"),
        branding: setting("branding"),
        contact: setting("contact"),
        slug: tenant.slug,
        name: tenant.name,
        hosts,
    }))
}
