//! `/api/orders`: orders, their actions, production plans, notes and the builder's artifacts;
//! `/api/schemas/...`: the JSON Schemas of blueprints and plans.
//!
//! Staff see every order; a client sees its tenant's (a client without a tenant, the legacy
//! orders) and gets [`ClientOrder`], a type without internal fields. Another tenant's order
//! answers 404 exactly like a missing one. Writes take `If-Match: "<version>"` and answer 412
//! when the order moved on; every answer with an order carries its `ETag`.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Route, audit_ok, optional_json};
use crate::AppState;
use crate::agency::blueprint::{self, AgentBlueprint, ProductType};
use crate::agency::book::{Actor, BookError, Outgoing, new_order};
use crate::agency::builder::{self, ChecklistItem};
use crate::agency::orders::{Action, ClientOrder, Estado, Filter, Order, PlanHistory, PlanVersion};
use crate::agency::plan::{self, ProductionPlan};
use crate::agency::planner::PlanError;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::identity::auth::{Caller, new_id};
use crate::llm::gateway::Metered;
use crate::model::now;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/api/orders", get(list)),
        Route::new(Method::POST, "/api/orders", post(create)),
        Route::new(Method::GET, "/api/orders/{id}", get(show)),
        Route::new(
            Method::PATCH,
            "/api/orders/{id}",
            axum::routing::patch(update),
        ),
        Route::new(Method::POST, "/api/orders/{id}/actions/{action}", post(act)),
        Route::new(Method::GET, "/api/orders/{id}/plan", get(plans)),
        Route::new(Method::POST, "/api/orders/{id}/plan", post(generate_plan)),
        Route::new(
            Method::PUT,
            "/api/orders/{id}/plan",
            axum::routing::put(write_plan),
        ),
        Route::new(Method::POST, "/api/orders/{id}/notes", post(add_note)),
        Route::new(Method::GET, "/api/orders/{id}/artifacts", get(artifacts)),
        Route::new(
            Method::GET,
            "/api/orders/{id}/artifacts/archive",
            get(archive),
        ),
        Route::new(
            Method::GET,
            "/api/schemas/agent-blueprint.json",
            get(blueprint_schema),
        ),
        Route::new(
            Method::GET,
            "/api/schemas/production-plan.json",
            get(plan_schema),
        ),
    ]
}

impl From<BookError> for ApiError {
    fn from(e: BookError) -> Self {
        let message = e.to_string();
        match e {
            BookError::NoOrder(_) | BookError::NoProduct(_) => ApiError::not_found(message),
            BookError::Invalid(_) => ApiError::bad_request(message),
            BookError::Stale { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                axon_shared::ErrorCode::Conflict,
                message,
            ),
            BookError::Forbidden { .. } => ApiError::forbidden(message),
            BookError::Transition { .. } => ApiError::conflict(message),
            BookError::Busy => ApiError::unavailable(message),
            BookError::Store(e) => e.into(),
        }
    }
}

fn actor(caller: &Caller) -> Actor {
    Actor {
        id: caller.id.clone(),
        role: caller.role,
    }
}

/// The order if the caller may see it; 404 otherwise, the same as a missing one.
pub(super) fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<Order, ApiError> {
    let order = state.agency.book.get(id)?;
    if !caller.can_see(order.tenant_id.as_deref()) {
        return Err(BookError::NoOrder(id.to_owned()).into());
    }
    Ok(order)
}

/// `If-Match: "7"` (or `7`, `W/"7"`) → 7.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse().map(Some).map_err(|_| {
        ApiError::bad_request("If-Match must be the order's version, as in If-Match: \"3\"")
    })
}

/// `ETag: "<version>"`.
fn set_etag(headers: &mut HeaderMap, version: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        headers.insert(header::ETAG, v);
    }
}

fn tagged<T: Serialize>(status: StatusCode, version: u64, body: T) -> Response {
    let mut response = (status, ApiJson(body)).into_response();
    set_etag(response.headers_mut(), version);
    response
}

/// An order as the caller may see it.
fn view(caller: &Caller, status: StatusCode, order: &Order) -> Response {
    if caller.is_client() {
        tagged(status, order.version, ClientOrder::from(order))
    } else {
        tagged(status, order.version, order)
    }
}

/// Makes the writes so far durable, then lets the outbox send what they staged.
async fn commit(state: &AppState) -> Result<(), ApiError> {
    state.store.db.flush().await?;
    state.outbox.wake();
    Ok(())
}

/// List filters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OrderQuery {
    estado: Option<Estado>,
    /// A tenant id, or `legacy` for orders without a tenant (staff only).
    tenant_id: Option<String>,
    product_type: Option<ProductType>,
    /// Words in the title, brief or id.
    q: Option<String>,
    demo_tag: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–100 (default 50).
    limit: Option<usize>,
}

#[derive(Serialize, JsonSchema)]
pub(super) struct OrderPage {
    items: Vec<Order>,
    next_cursor: Option<String>,
}

/// A page of orders as clients see them.
#[derive(Serialize, JsonSchema)]
pub(super) struct ClientOrderPage {
    pub items: Vec<ClientOrder>,
    pub next_cursor: Option<String>,
}

impl OrderQuery {
    fn filter(&self, caller: &Caller) -> Result<Filter, ApiError> {
        let text = self.q.as_deref().map(|q| q.trim().to_lowercase());
        if text.as_ref().is_some_and(|t| t.chars().count() > 200) {
            return Err(ApiError::bad_request("q must be at most 200 characters"));
        }
        let tenant = match self.tenant_id.as_deref() {
            None => None,
            Some(_) if caller.is_client() => {
                return Err(ApiError::bad_request(
                    "tenant_id is not a filter for clients: they see their own tenant",
                ));
            }
            Some("legacy") => Some(None),
            Some(t) => Some(Some(t.to_owned())),
        };
        Ok(Filter {
            estado: self.estado,
            tenant,
            product_type: self.product_type,
            text: text.filter(|t| !t.is_empty()),
            demo_tag: self.demo_tag.clone(),
        })
    }
}

pub(super) fn page(
    state: &AppState,
    caller: &Caller,
    query: &OrderQuery,
    only_tenant: Option<&str>,
) -> Result<crate::agency::book::Page, ApiError> {
    let filter = query.filter(caller)?;
    Ok(state.agency.book.list(
        &filter,
        |o| {
            caller.can_see(o.tenant_id.as_deref())
                && only_tenant.is_none_or(|t| o.tenant_id.as_deref() == Some(t))
        },
        query.cursor.as_deref(),
        query.limit.unwrap_or(50),
    )?)
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<OrderQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let page = page(&state, &caller, &query, None)?;
    Ok(if caller.is_client() {
        ApiJson(ClientOrderPage {
            items: page.items.iter().map(ClientOrder::from).collect(),
            next_cursor: page.next_cursor,
        })
        .into_response()
    } else {
        ApiJson(OrderPage {
            items: page.items,
            next_cursor: page.next_cursor,
        })
        .into_response()
    })
}

/// A new order as staff write it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewOrder {
    /// The client organisation; absent for a legacy order.
    tenant_id: Option<String>,
    /// Starts the order from this product (its type and base blueprint).
    catalog_item_id: Option<String>,
    /// Required without `catalog_item_id`.
    product_type: Option<ProductType>,
    title: String,
    #[serde(default)]
    brief: String,
    agent_blueprint: Option<AgentBlueprint>,
    #[serde(default)]
    deliverable_metadata: Map<String, Value>,
}

/// A new order as a client writes it: from a catalog product, with a title and a brief.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientNewOrder {
    pub catalog_item_id: String,
    pub title: String,
    #[serde(default)]
    pub brief: String,
}

/// Creates a client's order in `tenant` from a catalog product.
pub(crate) async fn create_for_client(
    state: &AppState,
    caller: &Caller,
    tenant: Option<&str>,
    req: ClientNewOrder,
) -> Result<Order, ApiError> {
    let not_found = || ApiError::not_found(format!("no catalog product {}", req.catalog_item_id));
    let item = state
        .agency
        .book
        .catalog
        .get(&req.catalog_item_id)?
        .filter(|c| c.visible_to(tenant))
        .ok_or_else(not_found)?;
    Order::check_content(&req.title, &req.brief, &Map::new()).map_err(ApiError::bad_request)?;
    let order = new_order(
        new_id(),
        tenant.map(str::to_owned),
        &caller.id,
        item.product_type,
        Some(item.id.clone()),
        &req.title,
        &req.brief,
        item.base_blueprint.clone(),
    );
    state.agency.book.create(&order)?;
    commit(state).await?;
    audit_ok(state, caller, "order.create", &order.id);
    Ok(order)
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let bad = |e: serde_json::Error| {
        ApiError::bad_request(format!("the JSON body does not fit this endpoint: {e}"))
    };
    if caller.is_client() {
        let req: ClientNewOrder = serde_json::from_value(body).map_err(bad)?;
        let tenant = caller.tenant_id.clone();
        let order = create_for_client(&state, &caller, tenant.as_deref(), req).await?;
        return Ok(view(&caller, StatusCode::CREATED, &order));
    }
    let req: NewOrder = serde_json::from_value(body).map_err(bad)?;
    if let Some(t) = &req.tenant_id
        && state.store.tenants.get(t)?.is_none()
    {
        return Err(ApiError::bad_request(format!("no tenant {t}")));
    }
    let item = match &req.catalog_item_id {
        Some(id) => Some(
            state
                .agency
                .book
                .product(id)
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        None => None,
    };
    let product_type = match (&item, req.product_type) {
        (Some(item), None) => item.product_type,
        (Some(item), Some(p)) if p == item.product_type => p,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "product_type differs from the catalog product's",
            ));
        }
        (None, Some(p)) => p,
        (None, None) => {
            return Err(ApiError::bad_request(
                "give a product_type or a catalog_item_id",
            ));
        }
    };
    Order::check_content(&req.title, &req.brief, &req.deliverable_metadata)
        .map_err(ApiError::bad_request)?;
    let blueprint = match (req.agent_blueprint, &item) {
        (Some(b), _) => b,
        (None, Some(item)) => item.base_blueprint.clone(),
        (None, None) => AgentBlueprint::base_for(product_type, &req.title),
    };
    blueprint
        .check()
        .map_err(|e| ApiError::bad_request(format!("agent_blueprint: {e}")))?;
    let mut order = new_order(
        new_id(),
        req.tenant_id,
        &caller.id,
        product_type,
        item.map(|i| i.id),
        &req.title,
        &req.brief,
        blueprint,
    );
    order.deliverable_metadata = req.deliverable_metadata;
    state.agency.book.create(&order)?;
    commit(&state).await?;
    audit_ok(&state, &caller, "order.create", &order.id);
    Ok(view(&caller, StatusCode::CREATED, &order))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let order = visible(&state, &caller, &id)?;
    Ok(view(&caller, StatusCode::OK, &order))
}

/// What staff may change directly. `estado`, `qa_status`, `tenant_id`, `deploy_history` and
/// the rest change only through actions and the deploy channels; naming them is refused.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OrderPatch {
    title: Option<String>,
    brief: Option<String>,
    /// Only while the order is `nuevo`.
    product_type: Option<ProductType>,
    agent_blueprint: Option<AgentBlueprint>,
    deliverable_metadata: Option<Map<String, Value>>,
    /// Replaces the demo tag (`null` clears it).
    #[serde(default, deserialize_with = "super::double_option")]
    demo_tag: Option<Option<String>>,
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<OrderPatch>,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    visible(&state, &caller, &id)?;
    if let Some(b) = &patch.agent_blueprint {
        b.check()
            .map_err(|e| ApiError::bad_request(format!("agent_blueprint: {e}")))?;
    }
    if let Some(Some(tag)) = &patch.demo_tag
        && (tag.is_empty() || tag.len() > 100)
    {
        return Err(ApiError::bad_request(
            "demo_tag must have 1 to 100 characters",
        ));
    }
    let order = state.agency.book.change(&id, expected, |order| {
        if let Some(t) = &patch.title {
            order.title = t.trim().to_owned();
        }
        if let Some(b) = &patch.brief {
            order.brief = b.trim().to_owned();
        }
        if let Some(p) = patch.product_type
            && p != order.product_type
        {
            if order.estado != Estado::Nuevo {
                return Err(BookError::Invalid(
                    "product_type can change only while the order is nuevo".into(),
                ));
            }
            order.product_type = p;
        }
        if let Some(b) = &patch.agent_blueprint {
            order.agent_blueprint = b.clone();
        }
        if let Some(m) = &patch.deliverable_metadata {
            order.deliverable_metadata = m.clone();
        }
        if let Some(tag) = &patch.demo_tag {
            order.demo_tag = tag.clone();
        }
        Order::check_content(&order.title, &order.brief, &order.deliverable_metadata)
            .map_err(BookError::Invalid)?;
        Ok(Vec::new())
    })?;
    commit(&state).await?;
    audit_ok(&state, &caller, "order.update", &id);
    Ok(view(&caller, StatusCode::OK, &order))
}

/// What an action may carry.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ActionRequest {
    /// Why (required for `qa_reject`).
    reason: Option<String>,
    /// `approve_plan`: the version approved (default: the latest).
    plan_version: Option<u32>,
}

async fn act(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((id, action)): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ActionRequest = optional_json(&body)?;
    let Some(action) = Action::parse(&action) else {
        let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        return Err(ApiError::not_found(format!(
            "no action {action}; the actions are {}",
            known.join(", ")
        )));
    };
    if req
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 2000)
    {
        return Err(ApiError::bad_request(
            "reason must be at most 2000 characters",
        ));
    }
    let expected = if_match(&headers)?;
    visible(&state, &caller, &id)?;
    let result = state.agency.book.act(
        &id,
        expected,
        &actor(&caller),
        action,
        req.reason.as_deref(),
        req.plan_version,
    );
    let order = match result {
        Ok(order) => order,
        Err(e) => {
            if matches!(
                e,
                BookError::Forbidden { .. } | BookError::Transition { .. }
            ) {
                state.audit.record(
                    state
                        .audit
                        .event(&format!("order.{}", action.as_str()), "denied")
                        .caller(&caller)
                        .target(&id)
                        .reason(&e.to_string()),
                );
            }
            return Err(e.into());
        }
    };
    commit(&state).await?;
    audit_ok(&state, &caller, &format!("order.{}", action.as_str()), &id);
    Ok(view(&caller, StatusCode::OK, &order))
}

async fn plans(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<PlanHistory>, ApiError> {
    Ok(ApiJson(visible(&state, &caller, &id)?.production_plan))
}

/// The plan version just added.
#[derive(Serialize, JsonSchema)]
pub(super) struct PlanAdded {
    order_version: u64,
    /// Model calls it took (1 when the first answer was valid).
    attempts: usize,
    plan: PlanVersion,
}

fn plan_added(order: &Order, attempts: usize) -> Result<Response, ApiError> {
    let plan = order
        .production_plan
        .latest()
        .cloned()
        .ok_or_else(|| ApiError::internal("the plan was not stored"))?;
    Ok(tagged(
        StatusCode::CREATED,
        order.version,
        PlanAdded {
            order_version: order.version,
            attempts,
            plan,
        },
    ))
}

fn stored_plan(
    state: &AppState,
    caller: &Caller,
    id: &str,
    expected: Option<u64>,
    plan: ProductionPlan,
    source: &str,
    model: Option<String>,
) -> Result<Order, ApiError> {
    Ok(state.agency.book.change(id, expected, |order| {
        if matches!(order.estado, Estado::Entregado | Estado::Cancelado) {
            return Err(BookError::Invalid(format!(
                "an order in estado {} takes no new plan",
                order.estado.as_str()
            )));
        }
        let version =
            order
                .production_plan
                .push(plan.clone(), source, model.clone(), &caller.id, now());
        Ok(vec![Outgoing::Event {
            event: "order.plan_ready",
            payload: serde_json::json!({
                "order": crate::agency::book::summary(order),
                "plan_version": version,
                "source": source,
            }),
        }])
    })?)
}

async fn generate_plan(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let order = visible(&state, &caller, &id)?;
    if matches!(order.estado, Estado::Entregado | Estado::Cancelado) {
        return Err(ApiError::conflict(format!(
            "an order in estado {} takes no new plan",
            order.estado.as_str()
        )));
    }
    // Metered to the order's tenant for the usage report; the agency's own work is not held
    // to the tenant's limits.
    let who = Metered {
        tenant_id: order.tenant_id.clone(),
        key_id: None,
        user_id: Some(caller.id.clone()),
        key_limits: None,
        tenant_limits: None,
    };
    let generated = match state.agency.planner.generate(&order, who).await {
        Ok(g) => g,
        Err(e) => {
            state.audit.record(
                state
                    .audit
                    .event("order.plan", "error")
                    .caller(&caller)
                    .target(&id)
                    .reason(&e.to_string()),
            );
            return Err(match e {
                PlanError::Timeout(_) => ApiError::timeout(e.to_string()),
                PlanError::Upstream { status: 429, .. } => ApiError::rate_limited(e.to_string()),
                PlanError::Upstream { status: 404, .. } => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    axon_shared::ErrorCode::Unavailable,
                    format!(
                        "{e} (set AXON_PLAN_MODEL or add a route for the alias {})",
                        state.agency.planner.config.alias
                    ),
                ),
                PlanError::Upstream { .. } | PlanError::Invalid { .. } => ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    axon_shared::ErrorCode::Unavailable,
                    e.to_string(),
                ),
            });
        }
    };
    let order = stored_plan(
        &state,
        &caller,
        &id,
        None,
        generated.plan,
        "llm",
        generated.model,
    )?;
    commit(&state).await?;
    audit_ok(&state, &caller, "order.plan", &id);
    plan_added(&order, generated.attempts)
}

async fn write_plan(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(plan): ApiJson<ProductionPlan>,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    visible(&state, &caller, &id)?;
    plan.check().map_err(ApiError::bad_request)?;
    let order = stored_plan(&state, &caller, &id, expected, plan, "staff", None)?;
    commit(&state).await?;
    audit_ok(&state, &caller, "order.plan_edit", &id);
    plan_added(&order, 0)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewNote {
    text: String,
}

async fn add_note(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<NewNote>,
) -> Result<Response, ApiError> {
    visible(&state, &caller, &id)?;
    let order = state.agency.book.note(&id, &actor(&caller), &req.text)?;
    commit(&state).await?;
    audit_ok(&state, &caller, "order.note", &id);
    Ok(view(&caller, StatusCode::CREATED, &order))
}

/// The builder's checklist for an order.
#[derive(Serialize, JsonSchema)]
pub(super) struct Artifacts {
    product_type: ProductType,
    /// Every expected artifact is there.
    complete: bool,
    checklist: Vec<ChecklistItem>,
    /// Every file of the archive, by path.
    files: Vec<ArtifactFile>,
    /// `GET` this for the archive (tar).
    archive: String,
}

#[derive(Serialize, JsonSchema)]
pub(super) struct ArtifactFile {
    path: String,
    bytes: usize,
}

pub(super) fn render(order: &Order) -> Result<Vec<builder::Artifact>, ApiError> {
    builder::render_order(order)
        .map_err(|e| ApiError::bad_request(format!("the blueprint cannot be built: {e}")))
}

async fn artifacts(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Artifacts>, ApiError> {
    let order = visible(&state, &caller, &id)?;
    let files = render(&order)?;
    let checklist = builder::checklist(order.product_type, &files);
    Ok(ApiJson(Artifacts {
        product_type: order.product_type,
        complete: checklist.iter().all(|c| c.present),
        checklist,
        files: files
            .iter()
            .map(|f| ArtifactFile {
                path: f.path.clone(),
                bytes: f.bytes.len(),
            })
            .collect(),
        archive: format!("/api/orders/{}/artifacts/archive", order.id),
    }))
}

async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let order = visible(&state, &caller, &id)?;
    let files = render(&order)?;
    let root = format!("order-{}", order.id.to_lowercase());
    let bytes = builder::archive(&files, &root)
        .map_err(|e| ApiError::internal(format!("the archive could not be written: {e}")))?;
    let mut response = Response::new(axum::body::Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{root}.tar\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    set_etag(headers, order.version);
    Ok(response)
}

async fn blueprint_schema() -> ApiJson<Value> {
    ApiJson(blueprint::schema())
}

async fn plan_schema() -> ApiJson<Value> {
    ApiJson(plan::schema())
}
