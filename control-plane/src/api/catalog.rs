//! `/api/catalog`: the agent products clients order from (admins write, staff read);
//! `/api/factory/stats` and `/api/admin/seed-demo`: the factory's figures and its demo data.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{Route, audit_ok};
use crate::AppState;
use crate::agency::blueprint::{AgentBlueprint, ProductType};
use crate::agency::catalog::CatalogItem;
use crate::agency::demo::{self, DemoReport};
use crate::agency::stats::{self, FactoryStats};
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::identity::auth::{Caller, new_id};
use crate::model::now;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/api/catalog", get(list)),
        Route::new(Method::POST, "/api/catalog", post(create)),
        Route::new(Method::GET, "/api/catalog/{id}", get(show)),
        Route::new(
            Method::PATCH,
            "/api/catalog/{id}",
            axum::routing::patch(update),
        ),
        Route::new(
            Method::DELETE,
            "/api/catalog/{id}",
            axum::routing::delete(remove),
        ),
        Route::new(Method::GET, "/api/factory/stats", get(factory_stats)),
        Route::new(Method::POST, "/api/admin/seed-demo", post(seed_demo)),
        Route::new(
            Method::DELETE,
            "/api/admin/seed-demo",
            axum::routing::delete(remove_demo),
        ),
    ]
}

fn check_tenants(state: &AppState, tenants: &Option<Vec<String>>) -> Result<(), ApiError> {
    for t in tenants.iter().flatten() {
        if state.store.tenants.get(t)?.is_none() {
            return Err(ApiError::bad_request(format!("tenants: no tenant {t}")));
        }
    }
    Ok(())
}

async fn list(State(state): State<AppState>) -> Result<ApiJson<Vec<CatalogItem>>, ApiError> {
    Ok(ApiJson(state.agency.book.catalog.values()?))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewProduct {
    name: String,
    #[serde(default)]
    description: String,
    product_type: ProductType,
    /// Default: the product type's standard blueprint.
    base_blueprint: Option<AgentBlueprint>,
    price_cents: u64,
    /// Default `EUR`.
    currency: Option<String>,
    /// Tenant ids that see it; absent: every tenant.
    tenants: Option<Vec<String>>,
    /// Default true.
    active: Option<bool>,
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewProduct>,
) -> Result<(StatusCode, ApiJson<CatalogItem>), ApiError> {
    check_tenants(&state, &req.tenants)?;
    let stamp = now();
    let item = CatalogItem {
        id: new_id(),
        base_blueprint: req
            .base_blueprint
            .unwrap_or_else(|| AgentBlueprint::base_for(req.product_type, &req.name)),
        name: req.name.trim().to_owned(),
        description: req.description.trim().to_owned(),
        product_type: req.product_type,
        price_cents: req.price_cents,
        currency: req.currency.unwrap_or_else(|| "EUR".into()),
        tenants: req.tenants,
        active: req.active.unwrap_or(true),
        demo_tag: None,
        created_at: stamp,
        updated_at: stamp,
    };
    item.check().map_err(ApiError::bad_request)?;
    state.agency.book.catalog.put(&item.id, &item)?;
    state.store.db.flush().await?;
    audit_ok(&state, &caller, "catalog.create", &item.id);
    Ok((StatusCode::CREATED, ApiJson(item)))
}

async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<CatalogItem>, ApiError> {
    Ok(ApiJson(state.agency.book.product(&id)?))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ProductPatch {
    name: Option<String>,
    description: Option<String>,
    product_type: Option<ProductType>,
    base_blueprint: Option<AgentBlueprint>,
    price_cents: Option<u64>,
    currency: Option<String>,
    /// `null`: every tenant.
    #[serde(default, deserialize_with = "super::double_option")]
    tenants: Option<Option<Vec<String>>>,
    active: Option<bool>,
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<ProductPatch>,
) -> Result<ApiJson<CatalogItem>, ApiError> {
    if let Some(t) = &patch.tenants {
        check_tenants(&state, t)?;
    }
    let mut item = state.agency.book.product(&id)?;
    if let Some(v) = patch.name {
        item.name = v.trim().to_owned();
    }
    if let Some(v) = patch.description {
        item.description = v.trim().to_owned();
    }
    if let Some(v) = patch.product_type {
        item.product_type = v;
    }
    if let Some(v) = patch.base_blueprint {
        item.base_blueprint = v;
    }
    if let Some(v) = patch.price_cents {
        item.price_cents = v;
    }
    if let Some(v) = patch.currency {
        item.currency = v;
    }
    if let Some(v) = patch.tenants {
        item.tenants = v;
    }
    if let Some(v) = patch.active {
        item.active = v;
    }
    item.updated_at = now();
    item.check().map_err(ApiError::bad_request)?;
    state.agency.book.catalog.put(&id, &item)?;
    state.store.db.flush().await?;
    audit_ok(&state, &caller, "catalog.update", &id);
    Ok(ApiJson(item))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if state.agency.book.catalog.take(&id)?.is_none() {
        return Err(ApiError::not_found(format!("no catalog product {id}")));
    }
    state.store.db.flush().await?;
    audit_ok(&state, &caller, "catalog.delete", &id);
    Ok(StatusCode::NO_CONTENT)
}

async fn factory_stats(State(state): State<AppState>) -> Result<ApiJson<FactoryStats>, ApiError> {
    Ok(ApiJson(factory_figures(&state)?))
}

/// The factory's figures now (the API's answer and the console's dashboard).
pub(crate) fn factory_figures(state: &AppState) -> Result<FactoryStats, ApiError> {
    let orders = state.agency.book.orders.values()?;
    let catalog = state.agency.book.catalog.values()?;
    let names: HashMap<String, String> = state
        .store
        .tenants
        .values()?
        .into_iter()
        .map(|t| (t.id, t.name))
        .collect();
    Ok(stats::compute(&orders, &catalog, &names, now()))
}

fn demo_failed(e: demo::DemoError) -> ApiError {
    match e {
        demo::DemoError::Store(e) => e.into(),
        demo::DemoError::Hash => ApiError::internal(e.to_string()),
    }
}

async fn seed_demo(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<DemoReport>, ApiError> {
    let worker = state.clone();
    let staff = caller.id.clone();
    // Password hashing and many small writes: off the async threads.
    let report =
        tokio::task::spawn_blocking(move || demo::seed(&worker.store, &worker.agency.book, &staff))
            .await
            .map_err(|_| ApiError::internal("the demo seeder stopped"))?
            .map_err(demo_failed)?;
    audit_ok(
        &state,
        &caller,
        "demo.seed",
        &format!("{} created", report.created.len()),
    );
    Ok(ApiJson(report))
}

async fn remove_demo(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<DemoReport>, ApiError> {
    let worker = state.clone();
    let report =
        tokio::task::spawn_blocking(move || demo::remove(&worker.store, &worker.agency.book))
            .await
            .map_err(|_| ApiError::internal("the demo remover stopped"))?
            .map_err(demo_failed)?;
    audit_ok(
        &state,
        &caller,
        "demo.remove",
        &format!("{} removed", report.removed.len()),
    );
    Ok(ApiJson(report))
}
