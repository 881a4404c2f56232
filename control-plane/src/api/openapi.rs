//! `GET /api/openapi.json`: an OpenAPI 3.1 document of the whole API. For every route of the
//! policy table it gives who may call it, its path, query and header parameters, its request
//! body, and each answer by status code with its content type. JSON Schemas (2020-12) are
//! generated with schemars from the types the handlers deserialize and serialize; the table
//! in [`operations`] names those types, and a test checks that it covers exactly the routes
//! the router serves.

use std::sync::OnceLock;

use axon_shared::{
    CommandInfo, ContainerStats, EnrollRequest, EnrollResponse, ExecResult, FsEntry, ImageInfo,
    ServiceActed, ServiceInfo, ServiceLogs,
};
use axum::http::Method;
use axum::routing::get;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::{
    Route, auth, catalog, deploys, enroll, files, hosts, keys, llm, orders, portal, services,
    telemetry, tenants, users, webhooks,
};

use crate::error::ApiJson;
use crate::identity::policy::{Access, RULES};
use crate::model::GpuAlert;

/// The optimistic-concurrency header of order writes.
const IF_MATCH: &[(&str, &str)] = &[(
    "If-Match",
    "Write only if the order is still at this version (its ETag); 412 otherwise.",
)];

pub fn routes() -> Vec<Route> {
    vec![Route::new(Method::GET, "/api/openapi.json", get(document))]
}

async fn document() -> ApiJson<Value> {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    ApiJson(DOCUMENT.get_or_init(build).clone())
}

/// Makes a type's schema (a `$ref` to it in `components.schemas`, or inline for simple types).
type SchemaOf = fn(&mut SchemaGenerator) -> Schema;

fn of<T: JsonSchema + ?Sized>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// The object schema itself, never a `$ref`: query structs become one parameter per field.
fn fields<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    T::json_schema(generator)
}

/// What an operation reads from the request body.
enum Body {
    None,
    /// JSON of this type (`ApiJson`); another content type is refused with 415.
    Json(SchemaOf),
    /// JSON of this type or an empty body (all defaults), whatever the content type.
    OptionalJson(SchemaOf),
    /// The raw bytes, whatever the content type; the document names this one.
    Bytes(&'static str),
}

/// The successful answer of an operation.
enum Answer {
    Json(u16, SchemaOf),
    /// JSON, or a `text/event-stream` of these events when the query asks for one (the text
    /// says how).
    JsonOrEvents(SchemaOf, &'static [&'static str], &'static str),
    NoContent,
    /// A body in a content type other than JSON; the text describes it.
    Bytes(&'static str, &'static str),
    /// `101 Switching Protocols`; the text describes the protocol.
    Upgrade(&'static str),
    /// JSON, or with `"stream": true` in the body a `text/event-stream` of `data:` events.
    JsonOrSse(SchemaOf, &'static str),
}

/// One operation as the handler implements it.
struct Operation {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    query: Option<SchemaOf>,
    /// Request headers the handler reads: name and meaning.
    headers: &'static [(&'static str, &'static str)],
    body: Body,
    answer: Answer,
    /// Error statuses beyond those the route's shape implies: 401 and 403 for protected
    /// routes, 400 for path, query or body input, 413 for a body and 415 for a JSON one.
    errors: &'static [u16],
    /// Errors in OpenAI's shape (the `/v1` routes).
    openai: bool,
}

/// What an operation on a host's agent can answer besides its own errors: the host is
/// revoked (409) or offline (503), the agent is slow (504), its answer too large (413), or it
/// refused the request with one of its codes (400, 403, 404, 409, 429, 503, 504; any other
/// code as 502).
const AGENT: &[u16] = &[400, 403, 404, 409, 413, 429, 502, 503, 504];

const fn op(method: &'static str, path: &'static str, summary: &'static str) -> Operation {
    Operation {
        method,
        path,
        summary,
        query: None,
        headers: &[],
        body: Body::None,
        answer: Answer::NoContent,
        errors: &[],
        openai: false,
    }
}

impl Operation {
    fn query(mut self, query: SchemaOf) -> Self {
        self.query = Some(query);
        self
    }
    fn headers(mut self, headers: &'static [(&'static str, &'static str)]) -> Self {
        self.headers = headers;
        self
    }
    fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }
    fn answer(mut self, answer: Answer) -> Self {
        self.answer = answer;
        self
    }
    fn ok(self, schema: SchemaOf) -> Self {
        self.answer(Answer::Json(200, schema))
    }
    fn created(self, schema: SchemaOf) -> Self {
        self.answer(Answer::Json(201, schema))
    }
    fn errors(mut self, errors: &'static [u16]) -> Self {
        self.errors = errors;
        self
    }
    fn openai(mut self) -> Self {
        self.openai = true;
        self
    }
}

/// What a gateway call can answer besides input errors: an unknown model (404), a limit or an
/// upstream's rate limit (429), upstreams failing (502, 503) or too slow (504).
const GATEWAY: &[u16] = &[404, 429, 502, 503, 504];

/// Every operation of the API with the types its handler uses.
fn operations() -> Vec<Operation> {
    use Answer::{JsonOrEvents, Upgrade};
    use Body::{Bytes, Json, OptionalJson};
    vec![
        op("GET", "/healthz", "Liveness: the process answers").ok(of::<super::Health>),
        op("GET", "/readyz", "Readiness: the store answers a read")
            .ok(of::<super::Ready>)
            .errors(&[503]),
        op("GET", "/api/openapi.json", "This document").ok(of::<Map<String, Value>>),
        op("POST", "/api/auth/login", "Log in: a new session's tokens")
            .body(Json(of::<auth::LoginRequest>))
            .ok(of::<auth::TokenPair>)
            .errors(&[401, 429, 503]),
        op(
            "POST",
            "/api/auth/refresh",
            "Trade a refresh token for new tokens",
        )
        .body(Json(of::<auth::RefreshRequest>))
        .ok(of::<auth::TokenPair>)
        .errors(&[401, 429, 503]),
        op("POST", "/api/auth/logout", "End the caller's session").errors(&[400]),
        op(
            "POST",
            "/api/enroll",
            "A new host trades a token and a CSR for a certificate",
        )
        .body(Json(of::<EnrollRequest>))
        .created(of::<EnrollResponse>)
        .errors(&[401, 429, 503]),
        op("GET", "/api/me", "The caller: its user, or its API key").ok(of::<auth::Me>),
        op(
            "POST",
            "/api/me/password",
            "Change the caller's password; ends its sessions",
        )
        .body(Json(of::<auth::PasswordChange>))
        .errors(&[429, 503]),
        op(
            "POST",
            "/api/enrollment-tokens",
            "Create a single-use enrollment token",
        )
        .body(OptionalJson(of::<enroll::CreateToken>))
        .created(of::<enroll::CreatedToken>),
        op("GET", "/api/hosts", "The hosts the caller may see, all or by pages (limit, after; x-axon-next)")
            .query(fields::<hosts::ListQuery>)
            .ok(of::<Vec<hosts::HostView>>)
            .errors(&[400]),
        op("GET", "/api/hosts/{id}", "One host")
            .ok(of::<hosts::HostView>)
            .errors(&[404]),
        op(
            "PATCH",
            "/api/hosts/{id}",
            "Change a host's labels or tenant",
        )
        .body(Json(of::<hosts::HostPatch>))
        .ok(of::<hosts::HostView>)
        .errors(&[404]),
        op(
            "DELETE",
            "/api/hosts/{id}",
            "Revoke a host: its link is cut, its certificates refused",
        )
        .ok(of::<hosts::HostView>)
        .errors(&[404]),
        op(
            "POST",
            "/api/hosts/{id}/ping",
            "Round trip through the host's agent",
        )
        .ok(of::<hosts::PingResult>)
        .errors(AGENT),
        op(
            "GET",
            "/api/hosts/{id}/commands",
            "The host's whitelisted commands",
        )
        .ok(of::<Vec<CommandInfo>>)
        .errors(AGENT),
        op(
            "GET",
            "/api/hosts/{id}/files",
            "Stat a path; list it if it is a directory",
        )
        .query(fields::<files::PathQuery>)
        .ok(of::<files::Listing>)
        .errors(AGENT),
        op(
            "DELETE",
            "/api/hosts/{id}/files",
            "Delete a file or directory",
        )
        .query(fields::<files::PathQuery>)
        .errors(AGENT),
        op(
            "GET",
            "/api/hosts/{id}/files/content",
            "Read a file (a range of it)",
        )
        .query(fields::<files::PathQuery>)
        .answer(Answer::Bytes(
            "application/octet-stream",
            "The bytes. `ETag` is the content's SHA-256 and `x-axon-file-size` the whole \
                 file's size.",
        ))
        .errors(AGENT),
        op("PUT", "/api/hosts/{id}/files/content", "Write a file whole")
            .query(fields::<files::PathQuery>)
            .headers(&[
                ("If-Match", "Write only if the file's etag is this one."),
                (
                    "If-None-Match",
                    "`*`: write only if the file does not exist.",
                ),
            ])
            .body(Bytes("application/octet-stream"))
            .ok(of::<FsEntry>)
            .errors(AGENT),
        op("POST", "/api/hosts/{id}/files/mkdir", "Create a directory")
            .body(Json(of::<files::MkdirBody>))
            .created(of::<FsEntry>)
            .errors(AGENT),
        op(
            "POST",
            "/api/hosts/{id}/files/rename",
            "Rename within one root",
        )
        .body(Json(of::<files::RenameBody>))
        .ok(of::<FsEntry>)
        .errors(AGENT),
        op(
            "POST",
            "/api/hosts/{id}/files/chmod",
            "Change permission bits",
        )
        .body(Json(of::<files::ChmodBody>))
        .ok(of::<FsEntry>)
        .errors(AGENT),
        op("POST", "/api/hosts/{id}/exec", "Run a whitelisted command")
            .query(fields::<hosts::ExecQuery>)
            .body(Json(of::<hosts::ExecBody>))
            .answer(JsonOrEvents(
                of::<ExecResult>,
                &["output", "result", "error", "lagged"],
                "How the command ended. With `?stream=sse`, a `text/event-stream`: `output` \
                 events (`{\"stream\": \"stdout\"|\"stderr\", \"data\": \"...\"}`) while it \
                 runs, then one `result` event (this JSON) or one `error` event (the error \
                 shape).",
            ))
            .errors(AGENT),
        op("GET", "/api/tenants", "Every tenant").ok(of::<Vec<tenants::TenantView>>),
        op("POST", "/api/tenants", "Create a tenant")
            .body(Json(of::<tenants::NewTenant>))
            .created(of::<tenants::TenantView>)
            .errors(&[409]),
        op("GET", "/api/tenants/{id}", "One tenant")
            .ok(of::<tenants::TenantView>)
            .errors(&[404]),
        op("PATCH", "/api/tenants/{id}", "Change a tenant")
            .body(Json(of::<tenants::TenantPatch>))
            .ok(of::<tenants::TenantView>)
            .errors(&[404, 409]),
        op(
            "DELETE",
            "/api/tenants/{id}",
            "Delete a tenant that has nothing left",
        )
        .errors(&[404, 409]),
        op("GET", "/api/users", "Users, filtered")
            .query(fields::<users::ListQuery>)
            .ok(of::<Vec<auth::UserView>>),
        op("POST", "/api/users", "Create a user (user sessions only)")
            .body(Json(of::<users::NewUser>))
            .created(of::<auth::UserView>)
            .errors(&[409, 503]),
        op("GET", "/api/users/{id}", "One user")
            .ok(of::<auth::UserView>)
            .errors(&[404]),
        op(
            "PATCH",
            "/api/users/{id}",
            "Change a user (user sessions only)",
        )
        .body(Json(of::<users::UserPatch>))
        .ok(of::<auth::UserView>)
        .errors(&[404, 409]),
        op("DELETE", "/api/users/{id}", "Delete a user").errors(&[404, 409]),
        op(
            "POST",
            "/api/users/{id}/disable",
            "Disable a user; ends its sessions",
        )
        .ok(of::<auth::UserView>)
        .errors(&[404, 409]),
        op("POST", "/api/users/{id}/enable", "Enable a user")
            .ok(of::<auth::UserView>)
            .errors(&[404]),
        op(
            "POST",
            "/api/users/{id}/reset-password",
            "Set or generate a user's password",
        )
        .body(OptionalJson(of::<users::ResetRequest>))
        .ok(of::<users::ResetResult>)
        .errors(&[404, 503]),
        op("GET", "/api/api-keys", "Every API key").ok(of::<Vec<keys::KeyView>>),
        op(
            "POST",
            "/api/api-keys",
            "Create an API key (user sessions only)",
        )
        .body(Json(of::<keys::NewKey>))
        .created(of::<keys::CreatedKey>),
        op("DELETE", "/api/api-keys/{id}", "Revoke an API key")
            .ok(of::<keys::KeyView>)
            .errors(&[404]),
        op("GET", "/api/portal/{slug}", "A tenant's client portal")
            .ok(of::<portal::Portal>)
            .errors(&[404]),
        op(
            "GET",
            "/api/portal/{slug}/catalog",
            "The products a tenant's clients may order",
        )
        .ok(of::<Vec<crate::agency::catalog::ClientCatalogItem>>)
        .errors(&[404]),
        op(
            "GET",
            "/api/portal/{slug}/orders",
            "A tenant's orders, newest first",
        )
        .query(fields::<portal::PortalQuery>)
        .ok(of::<orders::ClientOrderPage>)
        .errors(&[404]),
        op(
            "POST",
            "/api/portal/{slug}/orders",
            "Order from the catalog",
        )
        .body(Json(of::<orders::ClientNewOrder>))
        .created(of::<crate::agency::orders::ClientOrder>)
        .errors(&[404]),
        op(
            "GET",
            "/api/portal/{slug}/orders/{id}",
            "One of the tenant's orders",
        )
        .ok(of::<crate::agency::orders::ClientOrder>)
        .errors(&[404]),
        op(
            "GET",
            "/api/orders",
            "Orders, newest first (clients get their tenant's, without internal fields)",
        )
        .query(fields::<orders::OrderQuery>)
        .ok(of::<orders::OrderPage>),
        op(
            "POST",
            "/api/orders",
            "Create an order (clients: catalog_item_id, title and brief only)",
        )
        .body(Json(of::<orders::NewOrder>))
        .created(of::<crate::agency::orders::Order>)
        .errors(&[404]),
        op("GET", "/api/orders/{id}", "One order")
            .ok(of::<crate::agency::orders::Order>)
            .errors(&[404]),
        op("PATCH", "/api/orders/{id}", "Change an order's content")
            .headers(IF_MATCH)
            .body(Json(of::<orders::OrderPatch>))
            .ok(of::<crate::agency::orders::Order>)
            .errors(&[404, 412]),
        op(
            "POST",
            "/api/orders/{id}/actions/{action}",
            "Move an order: approve_plan, submit_qa, qa_pass, qa_reject, deliver, cancel, reopen",
        )
        .headers(IF_MATCH)
        .body(OptionalJson(of::<orders::ActionRequest>))
        .ok(of::<crate::agency::orders::Order>)
        .errors(&[404, 409, 412]),
        op("GET", "/api/orders/{id}/plan", "The order's plan versions")
            .ok(of::<crate::agency::orders::PlanHistory>)
            .errors(&[404]),
        op(
            "POST",
            "/api/orders/{id}/plan",
            "Generate a plan version through the LLM gateway",
        )
        .created(of::<orders::PlanAdded>)
        .errors(&[404, 409, 429, 502, 503, 504]),
        op(
            "PUT",
            "/api/orders/{id}/plan",
            "Write a plan version by hand",
        )
        .headers(IF_MATCH)
        .body(Json(of::<crate::agency::plan::ProductionPlan>))
        .created(of::<orders::PlanAdded>)
        .errors(&[404, 412]),
        op("POST", "/api/orders/{id}/notes", "Add an internal note")
            .body(Json(of::<orders::NewNote>))
            .created(of::<crate::agency::orders::Order>)
            .errors(&[404]),
        op(
            "GET",
            "/api/orders/{id}/artifacts",
            "The builder's checklist and files for the order",
        )
        .ok(of::<orders::Artifacts>)
        .errors(&[404]),
        op(
            "GET",
            "/api/orders/{id}/artifacts/archive",
            "The built artifacts as one archive",
        )
        .answer(Answer::Bytes(
            "application/x-tar",
            "A tar archive of the artifacts under `order-<id>/`; the same blueprint and plan \
             always give the same bytes.",
        ))
        .errors(&[404]),
        op(
            "POST",
            "/api/orders/{id}/deploy/{channel}",
            "Deploy a ready order to whatsapp, social or telegram (recorded, then sent by the outbox)",
        )
        .body(OptionalJson(of::<crate::agency::deploy::DeployRequest>))
        .answer(Answer::Json(202, of::<deploys::Deployed>))
        .errors(&[404, 409, 422, 503]),
        op(
            "POST",
            "/api/orders/{id}/deploys/{deploy_id}/resolve",
            "Settle by hand a deploy whose outcome is unknown",
        )
        .body(Json(of::<deploys::Resolution>))
        .ok(of::<crate::agency::orders::Order>)
        .errors(&[404, 409]),
        op(
            "GET",
            "/api/integrations",
            "The deploy channels' health",
        )
        .ok(of::<Vec<crate::agency::deploy::Health>>),
        op(
            "GET",
            "/api/integrations/{channel}/health",
            "One deploy channel's health: setup, a live check, last outcomes, rate limit",
        )
        .ok(of::<crate::agency::deploy::Health>)
        .errors(&[404]),
        op(
            "GET",
            "/api/artifacts/{token}",
            "An order's artifacts through a signed, expiring link (given to n8n with a WhatsApp deploy)",
        )
        .query(fields::<deploys::ArtifactQuery>)
        .answer(Answer::Bytes(
            "application/x-tar",
            "The artifacts' archive, or with `file` one of its files.",
        ))
        .errors(&[404]),
        op(
            "GET",
            "/api/schemas/agent-blueprint.json",
            "JSON Schema of agent blueprints",
        )
        .ok(of::<Value>),
        op(
            "GET",
            "/api/schemas/production-plan.json",
            "JSON Schema of production plans",
        )
        .ok(of::<Value>),
        op("GET", "/api/catalog", "Every catalog product")
            .ok(of::<Vec<crate::agency::catalog::CatalogItem>>),
        op("POST", "/api/catalog", "Create a catalog product")
            .body(Json(of::<catalog::NewProduct>))
            .created(of::<crate::agency::catalog::CatalogItem>),
        op("GET", "/api/catalog/{id}", "One catalog product")
            .ok(of::<crate::agency::catalog::CatalogItem>)
            .errors(&[404]),
        op("PATCH", "/api/catalog/{id}", "Change a catalog product")
            .body(Json(of::<catalog::ProductPatch>))
            .ok(of::<crate::agency::catalog::CatalogItem>)
            .errors(&[404]),
        op("DELETE", "/api/catalog/{id}", "Delete a catalog product").errors(&[404]),
        op("GET", "/api/factory/stats", "Factory figures")
            .ok(of::<crate::agency::stats::FactoryStats>),
        op(
            "POST",
            "/api/admin/seed-demo",
            "Load the demo data (idempotent)",
        )
        .ok(of::<crate::agency::demo::DemoReport>),
        op("DELETE", "/api/admin/seed-demo", "Remove the demo data")
            .ok(of::<crate::agency::demo::DemoReport>),
        op("GET", "/api/audit", "The audit trail, newest first")
            .query(fields::<crate::identity::audit::Filter>)
            .ok(of::<Vec<crate::identity::audit::Record>>),
        op("GET", "/api/ws", "Live events over a WebSocket")
            .answer(Upgrade(
                "Switching Protocols: a WebSocket (subprotocol `axon.v1`) of live events as \
                 JSON text messages, each with a `type`. The client may send \
                 `{\"hosts\": [...], \"types\": [...]}` to narrow them. A request that is not \
                 a WebSocket upgrade gets 400.",
            ))
            .errors(&[400]),
        op(
            "GET",
            "/api/hosts/{id}/services",
            "The host's systemd units or containers",
        )
        .query(fields::<services::ListQuery>)
        .ok(of::<Vec<ServiceInfo>>)
        .errors(AGENT),
        op(
            "GET",
            "/api/hosts/{id}/services/{kind}/{name}",
            "One service",
        )
        .ok(of::<ServiceInfo>)
        .errors(AGENT),
        op("GET", "/metrics", "Prometheus exposition").answer(Answer::Bytes(
            "text/plain; version=0.0.4",
            "The control plane's figures and every host's latest sample, in the Prometheus \
             text format 0.0.4.",
        )),
        op(
            "DELETE",
            "/api/hosts/{id}/services/{kind}/{name}",
            "Remove a container",
        )
        .query(fields::<services::RemoveQuery>)
        .ok(of::<ServiceActed>)
        .errors(AGENT),
        op(
            "POST",
            "/api/hosts/{id}/services/{kind}/{name}/{action}",
            "Act on a service",
        )
        .ok(of::<ServiceActed>)
        .errors(AGENT),
        op(
            "GET",
            "/api/hosts/{id}/services/{kind}/{name}/logs",
            "A service's last log lines",
        )
        .query(fields::<services::LogsQuery>)
        .answer(JsonOrEvents(
            of::<ServiceLogs>,
            &["line", "result", "error", "lagged"],
            "The last lines. With `?follow=true`, a `text/event-stream`: one `line` event \
                 per line (its text), then one `result` event (`{\"truncated\": bool}`) or one \
                 `error` event (the error shape).",
        ))
        .errors(AGENT),
        op(
            "GET",
            "/api/hosts/{id}/services/{kind}/{name}/stats",
            "A container's resource use",
        )
        .query(fields::<services::StatsQuery>)
        .answer(JsonOrEvents(
            of::<ContainerStats>,
            &["sample", "result", "error", "lagged"],
            "One sample. With `?stream=sse`, a `text/event-stream`: `sample` events (this \
                 JSON), about one a second, then one `result` or `error` event.",
        ))
        .errors(AGENT),
        op(
            "POST",
            "/api/hosts/{id}/containers",
            "Run a container from a local image",
        )
        .body(Json(of::<services::RunBody>))
        .created(of::<ServiceInfo>)
        .errors(AGENT),
        op("GET", "/api/hosts/{id}/images", "The host's images")
            .ok(of::<Vec<ImageInfo>>)
            .errors(AGENT),
        op("POST", "/api/hosts/{id}/images/pull", "Pull an image")
            .body(Json(of::<services::PullBody>))
            .ok(of::<ImageInfo>)
            .errors(AGENT),
        op("GET", "/api/hosts/{id}/metrics", "A host's metric series")
            .query(fields::<telemetry::MetricsQuery>)
            .ok(of::<telemetry::HostMetrics>)
            .errors(&[404]),
        op(
            "GET",
            "/api/hosts/{id}/gpu-alerts",
            "A host's GPU faults, newest first",
        )
        .query(fields::<telemetry::AlertsQuery>)
        .ok(of::<Vec<GpuAlert>>)
        .errors(&[404]),
        op(
            "POST",
            "/api/hosts/{id}/gpu-alerts/{alert}/ack",
            "Acknowledge a GPU fault",
        )
        .ok(of::<GpuAlert>)
        .errors(&[404]),
        op("GET", "/", "The public site's landing page (HTML)")
            .query(fields::<crate::console::PageQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The landing page.")),
        op("GET", "/privacy", "The privacy policy (HTML)")
            .query(fields::<crate::console::PageQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The privacy policy.")),
        op("GET", "/terms", "The terms of service (HTML)")
            .query(fields::<crate::console::PageQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The terms of service.")),
        op("GET", "/data-deletion", "How to have one's data deleted (HTML)")
            .query(fields::<crate::console::PageQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The data-deletion page.")),
        op(
            "GET",
            "/assets/{file}",
            "An embedded stylesheet, script or image, by its content-hashed name",
        )
        .answer(Answer::Bytes(
            "text/css",
            "The file, with its own content type, cacheable for a year.",
        ))
        .errors(&[404]),
        op("GET", "/app", "The staff console: its overview, or the sign-in form (HTML)")
            .query(fields::<crate::console::PageQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page.")),
        op("GET", "/app/fleet", "The console's fleet overview, by pages with filters, staff only (HTML)")
            .query(fields::<crate::console::fleet::FleetQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page, or the sign-in form."))
            .errors(&[400, 403]),
        op("GET", "/app/orders", "The agency console's orders, staff only (HTML)")
            .query(fields::<crate::console::orders::OrdersQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page, or the sign-in form."))
            .errors(&[403]),
        op("GET", "/app/orders/{id}", "One order in the agency console, staff only (HTML)")
            .query(fields::<crate::console::app::OrderQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page, or the sign-in form."))
            .errors(&[403, 404]),
        op("GET", "/app/hosts/{id}", "A host in the console: live charts, facts, capabilities, model servers; staff only (HTML)")
            .query(fields::<crate::console::PageQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page, or the sign-in form."))
            .errors(&[403, 404]),
        op("GET", "/app/hosts/{id}/services", "A host's services and containers with actions and followed logs; staff only (HTML)")
            .query(fields::<crate::console::PageQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page, or the sign-in form."))
            .errors(&[403, 404]),
        op("GET", "/app/hosts/{id}/files", "A host's files inside its jail: browse, edit, upload, download; staff only (HTML)")
            .query(fields::<crate::console::app::FilesQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page, or the sign-in form."))
            .errors(&[403, 404]),
        op("GET", "/app/hosts/{id}/commands", "A host's whitelisted commands with typed parameters and streamed output; staff only (HTML)")
            .query(fields::<crate::console::PageQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page, or the sign-in form."))
            .errors(&[403, 404]),
        op("GET", "/app/enroll", "Enrollment tokens and the one-line agentd enroll command; admins only (HTML)")
            .query(fields::<crate::console::PageQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page, or the sign-in form."))
            .errors(&[403]),
        op("GET", "/app/factory", "The factory dashboard: orders by state, tenant and product, weekly throughput, the demo seeder; staff only (HTML)")
            .query(fields::<crate::console::PageQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page, or the sign-in form."))
            .errors(&[403]),
        op("GET", "/app/catalog", "The catalog, changed by admins; staff only (HTML)")
            .query(fields::<crate::console::PageQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page, or the sign-in form."))
            .errors(&[403]),
        op("GET", "/app/llm", "The LLM gateway: usage per tenant and model, upstream health, routes; staff only (HTML)")
            .query(fields::<crate::console::PageQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page, or the sign-in form."))
            .errors(&[403]),
        op("GET", "/app/integrations", "Deploy channels' health, webhook subscriptions and deliveries; staff only (HTML)")
            .query(fields::<crate::console::PageQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page, or the sign-in form."))
            .errors(&[403]),
        op("GET", "/app/access", "Users, tenants and API keys; admins only (HTML)")
            .query(fields::<crate::console::PageQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page, or the sign-in form."))
            .errors(&[403]),
        op("GET", "/app/audit", "The audit trail with filters; admins only (HTML)")
            .query(fields::<crate::console::admin::AuditQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The page, or the sign-in form."))
            .errors(&[400, 403]),
        op("POST", "/app/csp-report", "A browser's Content-Security-Policy violation report (logged and counted)")
            .answer(Answer::NoContent)
            .errors(&[413]),
        op(
            "POST",
            "/app/orders/{id}/deploy/{channel}",
            "Deploy from the console (admin; field csrf; same-origin only); 303 back to the order",
        )
        .answer(Answer::Bytes(
            "text/html; charset=utf-8",
            "The order's page with the refusal (409, 422, 503); 303 when accepted.",
        ))
        .errors(&[400, 401, 403, 404, 415]),
        op("GET", "/portal/{slug}", "A tenant's client portal (HTML; its client or an admin)")
            .query(fields::<crate::console::portal::PortalQuery>)
            .answer(Answer::Bytes("text/html; charset=utf-8", "The portal, or the sign-in form."))
            .errors(&[404]),
        op(
            "POST",
            "/portal/{slug}/orders",
            "Order from the portal's catalog (fields product, title, brief, csrf; same-origin only); 303 back",
        )
        .answer(Answer::Bytes(
            "text/html; charset=utf-8",
            "The portal with the order's error (422); 303 on success.",
        ))
        .errors(&[400, 401, 403, 404, 415]),
        op(
            "POST",
            "/app/login",
            "Sign in from the console's form (fields email, password, csrf; same-origin only); 303 to /app with the session cookie",
        )
        .answer(Answer::Bytes(
            "text/html; charset=utf-8",
            "The form again with its error (401, 429); 303 on success.",
        ))
        .errors(&[400, 403, 415]),
        op(
            "POST",
            "/app/logout",
            "End the browser's session (field csrf; same-origin only); 303 to /app",
        )
        .answer(Answer::Bytes("text/html; charset=utf-8", "303 to /app."))
        .errors(&[400, 401, 403, 415]),
        op("GET", "/api/fleet/summary", "The fleet at a glance").ok(of::<telemetry::Summary>),
        op(
            "GET",
            "/api/webhooks",
            "Webhook subscriptions (without secrets)",
        )
        .ok(of::<Vec<webhooks::SubscriptionView>>),
        op(
            "POST",
            "/api/webhooks",
            "Subscribe a receiver; the answer shows its secret once",
        )
        .body(Json(of::<webhooks::NewSubscription>))
        .created(of::<webhooks::SubscriptionWithSecret>),
        op("GET", "/api/webhooks/{id}", "One subscription")
            .ok(of::<webhooks::SubscriptionView>)
            .errors(&[404]),
        op(
            "PATCH",
            "/api/webhooks/{id}",
            "Change a subscription's URL, events, description or state",
        )
        .body(Json(of::<webhooks::SubscriptionPatch>))
        .ok(of::<webhooks::SubscriptionView>)
        .errors(&[404]),
        op(
            "DELETE",
            "/api/webhooks/{id}",
            "Remove a subscription; its deliveries stay listed",
        )
        .errors(&[404]),
        op(
            "POST",
            "/api/webhooks/{id}/rotate-secret",
            "A new signing secret, shown once",
        )
        .ok(of::<webhooks::SubscriptionWithSecret>)
        .errors(&[404]),
        op(
            "POST",
            "/api/webhooks/{id}/ping",
            "Send a `ping` event to this subscription",
        )
        .answer(Answer::Json(202, of::<crate::agency::outbox::Delivery>))
        .errors(&[404, 409]),
        op(
            "GET",
            "/api/webhooks/{id}/deliveries",
            "A subscription's deliveries, newest first, with their attempts",
        )
        .query(fields::<webhooks::DeliveriesQuery>)
        .ok(of::<Vec<crate::agency::outbox::Delivery>>)
        .errors(&[404]),
        op(
            "GET",
            "/api/outbox",
            "Everything the outbox holds, newest first",
        )
        .query(fields::<webhooks::OutboxQuery>)
        .ok(of::<Vec<crate::agency::outbox::Delivery>>),
        op(
            "POST",
            "/api/outbox/{id}/retry",
            "Put a failed delivery back to pending (same idempotency key)",
        )
        .ok(of::<crate::agency::outbox::Delivery>)
        .errors(&[404, 409]),
        op(
            "PATCH",
            "/api/api-keys/{id}",
            "Change an API key's LLM limits",
        )
        .body(Json(of::<keys::KeyChange>))
        .ok(of::<keys::KeyView>)
        .errors(&[404]),
        op(
            "POST",
            "/v1/chat/completions",
            "Chat completion (OpenAI-compatible)",
        )
        .body(Json(of::<llm::ChatBody>))
        .answer(Answer::JsonOrSse(
            of::<llm::Completion>,
            "A `chat.completion`. With `\"stream\": true`, a `text/event-stream` of \
                 `data: <chat.completion.chunk>` events ending with `data: [DONE]`; a stream \
                 that breaks mid-way ends with a `data: {\"error\": ...}` event instead. The \
                 headers `x-axon-upstream`, `x-axon-model` and `x-axon-overhead-us` name the \
                 upstream that answered and the gateway's own time.",
        ))
        .errors(GATEWAY)
        .openai(),
        op("POST", "/v1/embeddings", "Embeddings (OpenAI-compatible)")
            .body(Json(of::<llm::EmbeddingsBody>))
            .ok(of::<llm::EmbeddingList>)
            .errors(GATEWAY)
            .openai(),
        op(
            "POST",
            "/v1/images/generations",
            "Images from a fleet SD WebUI, as b64_json",
        )
        .body(Json(of::<llm::ImageBody>))
        .ok(of::<llm::Images>)
        .errors(GATEWAY)
        .openai(),
        op("GET", "/v1/models", "Models and aliases the caller may use")
            .ok(of::<llm::ModelList>)
            .openai(),
        op(
            "GET",
            "/api/llm/routes",
            "Aliases, providers and fleet models",
        )
        .ok(of::<llm::RoutesView>),
        op(
            "PUT",
            "/api/llm/routes/{alias}",
            "Create or replace an alias",
        )
        .body(Json(of::<llm::AliasBody>))
        .ok(of::<crate::llm::routes::Alias>),
        op("DELETE", "/api/llm/routes/{alias}", "Remove an alias").errors(&[404]),
        op("GET", "/api/llm/prices", "The price table").ok(of::<Vec<crate::llm::routes::Price>>),
        op("PUT", "/api/llm/prices", "Replace the price table")
            .body(Json(of::<llm::PricesBody>))
            .ok(of::<Vec<crate::llm::routes::Price>>),
        op(
            "GET",
            "/api/llm/upstreams",
            "Each upstream's health and circuit",
        )
        .ok(of::<Vec<crate::llm::health::UpstreamReport>>),
        op(
            "GET",
            "/api/llm/usage",
            "LLM usage, aggregated (clients: their tenant)",
        )
        .query(fields::<llm::UsageQuery>)
        .ok(of::<llm::UsageReport>),
        op(
            "GET",
            "/api/llm/usage/records",
            "LLM calls, newest first (clients: their tenant)",
        )
        .query(fields::<llm::RecordsQuery>)
        .ok(of::<Vec<crate::llm::usage::UsageRecord>>),
    ]
}

/// The body of every error answer: `ApiError` writes it (a test below checks they agree).
/// Outside that test only its schema is used.
#[derive(JsonSchema)]
#[cfg_attr(test, derive(serde::Deserialize))]
#[cfg_attr(not(test), allow(dead_code))]
#[serde(deny_unknown_fields)]
struct Error {
    error: ErrorDetail,
}

#[derive(JsonSchema)]
#[cfg_attr(test, derive(serde::Deserialize))]
#[cfg_attr(not(test), allow(dead_code))]
#[serde(deny_unknown_fields)]
struct ErrorDetail {
    code: axon_shared::ErrorCode,
    /// A sentence for people.
    message: String,
}

/// Error statuses: the name of their entry in `components.responses`, and what they mean.
const ERRORS: &[(u16, &str, &str)] = &[
    (
        400,
        "BadRequest",
        "The request does not fit: malformed JSON, a bad parameter, or a value out of range.",
    ),
    (
        401,
        "Unauthorized",
        "No valid credentials (for login and enrollment: wrong ones).",
    ),
    (
        403,
        "Forbidden",
        "The caller's role or API-key scope does not allow this, or the host refused it.",
    ),
    (
        404,
        "NotFound",
        "No such object, or one the caller may not see.",
    ),
    (
        409,
        "Conflict",
        "The request conflicts with the current state: a taken name, the last admin, a \
         revoked host, a failed service job.",
    ),
    (
        413,
        "TooLarge",
        "The body, or the answer, is over its size limit.",
    ),
    (
        415,
        "UnsupportedMediaType",
        "The body was not sent as `application/json`.",
    ),
    (
        429,
        "RateLimited",
        "Too many attempts; `Retry-After` says when to try again.",
    ),
    (502, "BadGateway", "The agent failed in a way of its own."),
    (
        503,
        "Unavailable",
        "Something needed does not answer: the host is offline, the store failed, the data \
         directory is nearly full, or the server is busy (`Retry-After`).",
    ),
    (504, "Timeout", "The agent did not answer in time."),
];

/// The document.
pub fn build() -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    });
    // Requests are described as the handlers read them, answers as they are written (a field
    // with a default is optional in the one, always present in the other).
    let mut requests = settings.clone().for_deserialize().into_generator();
    let mut answers = settings.for_serialize().into_generator();
    let error = of::<Error>(&mut answers).to_value();
    let openai_error = of::<llm::OpenAiError>(&mut answers).to_value();

    let mut built = Vec::new();
    for operation in operations() {
        let rule = RULES
            .iter()
            .find(|r| r.method == operation.method && r.path == operation.path);
        let Some(rule) = rule else {
            continue;
        };
        let mut op = Map::new();
        op.insert(
            "operationId".into(),
            json!(format!("{} {}", rule.method.to_lowercase(), rule.path)),
        );
        op.insert("summary".into(), json!(operation.summary));
        let mut statuses: Vec<u16> = operation.errors.to_vec();
        let mut input = false;

        let mut params: Vec<Value> = path_params(rule.path);
        input |= !params.is_empty();
        if let Some(query) = operation.query {
            params.extend(query_params(query(&mut requests)));
            input = true;
        }
        for (name, description) in operation.headers {
            params.push(json!({"name": name, "in": "header", "required": false,
                "description": description, "schema": {"type": "string"}}));
        }
        let body = match operation.body {
            Body::None => None,
            Body::Json(schema) => {
                statuses.extend([413, 415]);
                Some(json!({"required": true, "content": {
                    "application/json": {"schema": schema(&mut requests)}}}))
            }
            Body::OptionalJson(schema) => {
                statuses.push(413);
                Some(json!({"required": false,
                    "description": "Empty for all defaults.",
                    "content": {"application/json": {"schema": schema(&mut requests)}}}))
            }
            Body::Bytes(content_type) => {
                statuses.push(413);
                Some(json!({"required": true, "content": {
                    content_type: {"schema": {"type": "string", "format": "binary"}}}}))
            }
        };
        input |= body.is_some();
        if input {
            statuses.push(400);
        }

        let mut responses = Map::new();
        let (status, answer) = answer(&operation.answer, &mut answers);
        responses.insert(status.to_string(), answer);
        match rule.access {
            Access::Public => {
                op.insert("security".into(), json!([]));
                op.insert("description".into(), json!("Public."));
            }
            Access::Roles(roles, scope) => {
                statuses.extend([401, 403]);
                let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                op.insert("security".into(), json!([{"bearer": []}]));
                op.insert(
                    "description".into(),
                    json!(format!(
                        "Roles: {}. API-key scope: {scope}.",
                        names.join(", ")
                    )),
                );
                op.insert("x-axon-roles".into(), json!(names));
                op.insert("x-axon-scope".into(), json!(scope));
            }
        }
        // A change is refused while the data dir is nearly full, and not acknowledged when
        // its audit record cannot be written (`guard_changes`).
        if rule.method != "GET"
            && rule.path.starts_with("/api/")
            && !rule.path.starts_with("/api/auth/")
        {
            statuses.push(503);
        }
        statuses.sort_unstable();
        statuses.dedup();
        let dialect = if operation.openai { "OpenAi" } else { "" };
        for status in statuses {
            if let Some((_, name, _)) = ERRORS.iter().find(|(s, _, _)| *s == status) {
                responses.insert(
                    status.to_string(),
                    json!({"$ref": format!("#/components/responses/{dialect}{name}")}),
                );
            }
        }
        op.insert("responses".into(), Value::Object(responses));
        built.push((rule, params, body, op));
    }

    // A type whose two descriptions differ is named apart on the request side.
    let mut request_schemas = requests.take_definitions(true);
    let mut schemas = answers.take_definitions(true);
    let mut renamed = Vec::new();
    for (name, schema) in &request_schemas {
        if schemas.get(name).is_some_and(|other| other != schema) {
            let mut new = format!("{name}Input");
            while schemas.contains_key(&new) || request_schemas.contains_key(&new) {
                new.push('_');
            }
            renamed.push((name.clone(), new));
        }
    }
    for (old, new) in &renamed {
        if let Some(schema) = request_schemas.remove(old) {
            request_schemas.insert(new.clone(), schema);
        }
    }
    for schema in request_schemas.values_mut() {
        rename_refs(schema, &renamed);
    }
    schemas.append(&mut request_schemas);

    let mut paths = Map::new();
    for (rule, mut params, mut body, mut op) in built {
        for param in &mut params {
            rename_refs(param, &renamed);
        }
        if let Some(body) = &mut body {
            rename_refs(body, &renamed);
            op.insert("requestBody".into(), body.clone());
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        let entry = paths
            .entry(rule.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[rule.method.to_lowercase()] = Value::Object(op);
    }

    let mut responses = Map::new();
    for (status, name, description) in ERRORS {
        for (dialect, schema) in [("", &error), ("OpenAi", &openai_error)] {
            let mut response = json!({"description": description, "content": {
                "application/json": {"schema": schema}}});
            if matches!(status, 429 | 503) {
                response["headers"] = json!({"Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer", "minimum": 0}}});
            }
            responses.insert(format!("{dialect}{name}"), response);
        }
    }

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Axon control plane API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every error answers `{\"error\": {\"code\": \"snake_case\", \"message\": \"...\"}}` with its status."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "JWT access token or API key (axk_...)"}
            },
            "schemas": schemas,
            "responses": responses,
        }
    })
}

fn answer(answer: &Answer, answers: &mut SchemaGenerator) -> (u16, Value) {
    match answer {
        Answer::Json(status, schema) => (
            *status,
            json!({"description": match status { 201 => "Created.", 202 => "Accepted.", _ => "OK." },
                "content": {"application/json": {"schema": schema(answers)}}}),
        ),
        // In OpenAPI 3.1 the schema of an event stream is that of one event.
        Answer::JsonOrEvents(schema, events, description) => (
            200,
            json!({"description": format!("{description} A `lagged` event (its data the number \
                    of events missed) says the stream fell behind."),
                "content": {
                "application/json": {"schema": schema(answers)},
                "text/event-stream": {"schema": {
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"enum": events},
                        "data": {"type": "string"},
                        "id": {"type": "string"},
                        "retry": {"type": "integer"}}}}}}),
        ),
        Answer::NoContent => (204, json!({"description": "Done; no body."})),
        Answer::Bytes(content_type, description) => (
            200,
            json!({"description": description, "content": {
                *content_type: {"schema": {"type": "string"}}}}),
        ),
        Answer::Upgrade(description) => (101, json!({"description": description})),
        Answer::JsonOrSse(schema, description) => (
            200,
            json!({"description": description, "content": {
                "application/json": {"schema": schema(answers)},
                "text/event-stream": {"schema": {"type": "string"}}}}),
        ),
    }
}

/// `{name}` segments of a route, each a required string.
fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect()
}

/// One query parameter per field of the query struct's schema.
fn query_params(schema: Schema) -> Vec<Value> {
    let schema = schema.to_value();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, field)| {
            let mut field = field.clone();
            let description = field.as_object_mut().and_then(|f| f.remove("description"));
            without_null(&mut field);
            let mut param = json!({"name": name, "in": "query",
                "required": required.contains(&name.as_str()), "schema": field});
            if let Some(description) = description {
                param["description"] = description;
            }
            param
        })
        .collect()
}

/// A query string has no `null`: an absent parameter is how a field is left out.
fn without_null(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if object.get("default") == Some(&Value::Null) {
        object.remove("default");
    }
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            object.insert("type".into(), only);
        }
    }
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(alternatives)) = object.get_mut(key) else {
            continue;
        };
        alternatives.retain(|a| a.get("type") != Some(&json!("null")));
        if alternatives.len() == 1
            && let Some(Value::Object(only)) = alternatives.pop()
        {
            object.remove(key);
            object.extend(only);
        }
    }
}

/// Points `$ref`s at renamed schemas.
fn rename_refs(value: &mut Value, renamed: &[(String, String)]) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "$ref"
                    && let Value::String(target) = v
                    && let Some((_, new)) = renamed
                        .iter()
                        .find(|(old, _)| *target == format!("#/components/schemas/{old}"))
                {
                    *target = format!("#/components/schemas/{new}");
                } else {
                    rename_refs(v, renamed);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_refs(v, renamed)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every served route has exactly one description and every description a route.
    #[test]
    fn table_describes_exactly_the_served_routes() {
        let described: Vec<(&str, &str)> =
            operations().iter().map(|o| (o.method, o.path)).collect();
        for route in super::super::routes() {
            let method = route.method.to_string();
            let count = described
                .iter()
                .filter(|(m, p)| *m == method && *p == route.path)
                .count();
            assert_eq!(
                count, 1,
                "{method} {} is described {count} times",
                route.path
            );
        }
        for (method, path) in &described {
            assert!(
                RULES.iter().any(|r| r.method == *method && r.path == *path),
                "{method} {path} is described but has no rule"
            );
        }
        assert_eq!(described.len(), RULES.len());
    }

    #[test]
    fn every_operation_has_its_schemas_and_statuses() {
        let doc = build();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("operations") {
                operations += 1;
                let responses = op["responses"].as_object().expect("responses");
                assert!(
                    responses.keys().any(|s| s.starts_with('2') || s == "101"),
                    "{method} {path} has no success answer"
                );
                if op["security"] != json!([]) {
                    assert!(responses.contains_key("401") && responses.contains_key("403"));
                }
                if path.contains('{') {
                    assert!(responses.contains_key("400"), "{method} {path}");
                }
            }
        }
        assert_eq!(operations, RULES.len());
        // Every reference points at a schema that is there.
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"").skip(1) {
            let target = &reference[..reference.find('"').expect("end of ref")];
            if let Some(name) = target.strip_prefix("#/components/schemas/") {
                assert!(schemas.contains_key(name), "{target} is missing");
            } else {
                let name = target
                    .strip_prefix("#/components/responses/")
                    .expect("a component");
                assert!(doc["components"]["responses"].get(name).is_some());
            }
        }
        // Samples of the types the handlers use.
        let login = &doc["paths"]["/api/auth/login"]["post"];
        assert_eq!(
            login["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/LoginRequest"
        );
        assert_eq!(
            schemas["LoginRequest"]["required"],
            json!(["email", "password"])
        );
        let audit = &doc["paths"]["/api/audit"]["get"]["parameters"];
        let limit = audit
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "limit"))
            .expect("limit");
        assert_eq!(limit["in"], "query");
        assert_eq!(limit["required"], false);
        assert_eq!(limit["schema"]["type"], "integer");
        let metrics = &doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
        assert!(metrics.get("text/plain; version=0.0.4").is_some());
        let exec = &doc["paths"]["/api/hosts/{id}/exec"]["post"]["responses"]["200"]["content"];
        assert!(exec.get("text/event-stream").is_some());
        assert!(doc["paths"]["/api/ws"]["get"]["responses"]["101"].is_object());
    }

    /// The `Error` schema is the shape `ApiError` writes.
    #[tokio::test]
    async fn error_schema_matches_what_api_error_writes() {
        use axum::response::IntoResponse;
        let response = crate::error::ApiError::conflict("taken").into_response();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: Error = serde_json::from_slice(&bytes).expect("the Error shape");
        assert_eq!(body.error.code, axon_shared::ErrorCode::Conflict);
        assert_eq!(body.error.message, "taken");
    }
}
