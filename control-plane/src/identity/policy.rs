//! Authorization in one place: every route of the API has exactly one rule here saying who may
//! call it and which API-key scope it needs. The `enforce` layer applies the table to every
//! matched route before its handler runs; a route with no rule is refused (and fails the
//! role × route test, which walks this same table).
//!
//! Tenant confinement (a client sees only its tenant's records) is the handlers' job, through
//! `Caller::can_see`, because it depends on the record.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;
use crate::identity::auth::authenticate;
use crate::model::Role;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed (login, enrollment, health).
    Public,
    /// Any authenticated caller of these roles, holding `scope` if it is an API key.
    Roles(&'static [Role], &'static str),
}

/// One route's rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub method: &'static str,
    /// The route as registered, e.g. `/api/hosts/{id}`.
    pub path: &'static str,
    pub access: Access,
}

use Role::{Admin as A, Client as C, Operator as O, Viewer as V};

const ALL: &[Role] = &[A, O, V, C];
const STAFF: &[Role] = &[A, O, V];
const ADMIN: &[Role] = &[A];

const fn rule(method: &'static str, path: &'static str, access: Access) -> Rule {
    Rule {
        method,
        path,
        access,
    }
}

/// The table. Keep it sorted by path; every route in the router appears exactly once.
pub const RULES: &[Rule] = &[
    // The public site and its assets.
    rule("GET", "/", Access::Public),
    rule("GET", "/privacy", Access::Public),
    rule("GET", "/terms", Access::Public),
    rule("GET", "/data-deletion", Access::Public),
    rule("GET", "/assets/{file}", Access::Public),
    // The console authenticates browsers itself, by its session cookie (never a bearer
    // token), and checks Origin and CSRF tokens on its form posts.
    rule("GET", "/app", Access::Public),
    rule("GET", "/app/fleet", Access::Public),
    rule("GET", "/app/orders", Access::Public),
    rule("GET", "/app/orders/{id}", Access::Public),
    rule("GET", "/app/hosts/{id}", Access::Public),
    rule("GET", "/app/hosts/{id}/services", Access::Public),
    rule("GET", "/app/hosts/{id}/files", Access::Public),
    rule("GET", "/app/hosts/{id}/commands", Access::Public),
    rule("GET", "/app/enroll", Access::Public),
    rule("GET", "/app/factory", Access::Public),
    rule("GET", "/app/catalog", Access::Public),
    rule("GET", "/app/llm", Access::Public),
    rule("GET", "/app/integrations", Access::Public),
    rule("GET", "/app/access", Access::Public),
    rule("GET", "/app/audit", Access::Public),
    // Browsers post violation reports without credentials; nothing in them is trusted.
    rule("POST", "/app/csp-report", Access::Public),
    rule("POST", "/app/orders/{id}/deploy/{channel}", Access::Public),
    rule("GET", "/portal/{slug}", Access::Public),
    rule("POST", "/portal/{slug}/orders", Access::Public),
    rule("POST", "/app/login", Access::Public),
    rule("POST", "/app/logout", Access::Public),
    rule("GET", "/healthz", Access::Public),
    rule("GET", "/readyz", Access::Public),
    rule("GET", "/api/openapi.json", Access::Public),
    rule("POST", "/api/auth/login", Access::Public),
    rule("POST", "/api/auth/refresh", Access::Public),
    rule("POST", "/api/auth/logout", Access::Roles(ALL, "session")),
    rule("POST", "/api/enroll", Access::Public),
    rule("GET", "/api/me", Access::Roles(ALL, "me")),
    rule("POST", "/api/me/password", Access::Roles(ALL, "session")),
    rule(
        "POST",
        "/api/enrollment-tokens",
        Access::Roles(ADMIN, "hosts:enroll"),
    ),
    rule("GET", "/api/hosts", Access::Roles(ALL, "hosts:read")),
    rule("GET", "/api/hosts/{id}", Access::Roles(ALL, "hosts:read")),
    rule(
        "PATCH",
        "/api/hosts/{id}",
        Access::Roles(ADMIN, "hosts:write"),
    ),
    rule(
        "DELETE",
        "/api/hosts/{id}",
        Access::Roles(ADMIN, "hosts:write"),
    ),
    rule(
        "POST",
        "/api/hosts/{id}/ping",
        Access::Roles(&[A, O], "hosts:operate"),
    ),
    rule(
        "GET",
        "/api/hosts/{id}/commands",
        Access::Roles(STAFF, "hosts:read"),
    ),
    rule(
        "GET",
        "/api/hosts/{id}/files",
        Access::Roles(STAFF, "files:read"),
    ),
    rule(
        "DELETE",
        "/api/hosts/{id}/files",
        Access::Roles(&[A, O], "files:write"),
    ),
    rule(
        "GET",
        "/api/hosts/{id}/files/content",
        Access::Roles(&[A, O], "files:read"),
    ),
    rule(
        "PUT",
        "/api/hosts/{id}/files/content",
        Access::Roles(&[A, O], "files:write"),
    ),
    rule(
        "POST",
        "/api/hosts/{id}/files/mkdir",
        Access::Roles(&[A, O], "files:write"),
    ),
    rule(
        "POST",
        "/api/hosts/{id}/files/rename",
        Access::Roles(&[A, O], "files:write"),
    ),
    rule(
        "POST",
        "/api/hosts/{id}/files/chmod",
        Access::Roles(&[A, O], "files:write"),
    ),
    rule(
        "POST",
        "/api/hosts/{id}/exec",
        Access::Roles(&[A, O], "hosts:exec"),
    ),
    rule("GET", "/api/tenants", Access::Roles(ADMIN, "tenants:read")),
    rule(
        "POST",
        "/api/tenants",
        Access::Roles(ADMIN, "tenants:write"),
    ),
    rule(
        "GET",
        "/api/tenants/{id}",
        Access::Roles(ADMIN, "tenants:read"),
    ),
    rule(
        "PATCH",
        "/api/tenants/{id}",
        Access::Roles(ADMIN, "tenants:write"),
    ),
    rule(
        "DELETE",
        "/api/tenants/{id}",
        Access::Roles(ADMIN, "tenants:write"),
    ),
    rule("GET", "/api/users", Access::Roles(ADMIN, "users:read")),
    rule("POST", "/api/users", Access::Roles(ADMIN, "users:write")),
    rule("GET", "/api/users/{id}", Access::Roles(ADMIN, "users:read")),
    rule(
        "PATCH",
        "/api/users/{id}",
        Access::Roles(ADMIN, "users:write"),
    ),
    rule(
        "DELETE",
        "/api/users/{id}",
        Access::Roles(ADMIN, "users:write"),
    ),
    rule(
        "POST",
        "/api/users/{id}/disable",
        Access::Roles(ADMIN, "users:write"),
    ),
    rule(
        "POST",
        "/api/users/{id}/enable",
        Access::Roles(ADMIN, "users:write"),
    ),
    rule(
        "POST",
        "/api/users/{id}/reset-password",
        Access::Roles(ADMIN, "users:write"),
    ),
    rule("GET", "/api/api-keys", Access::Roles(ADMIN, "keys:read")),
    rule("POST", "/api/api-keys", Access::Roles(ADMIN, "keys:write")),
    rule(
        "DELETE",
        "/api/api-keys/{id}",
        Access::Roles(ADMIN, "keys:write"),
    ),
    rule(
        "GET",
        "/api/portal/{slug}",
        Access::Roles(&[A, C], "portal:read"),
    ),
    rule(
        "GET",
        "/api/portal/{slug}/catalog",
        Access::Roles(&[A, C], "portal:read"),
    ),
    rule(
        "GET",
        "/api/portal/{slug}/orders",
        Access::Roles(&[A, C], "portal:read"),
    ),
    rule(
        "POST",
        "/api/portal/{slug}/orders",
        Access::Roles(&[A, C], "portal:write"),
    ),
    rule(
        "GET",
        "/api/portal/{slug}/orders/{id}",
        Access::Roles(&[A, C], "portal:read"),
    ),
    // Orders: clients see their tenant's (as client views) and may order and cancel; the
    // transition table in agency/orders.rs decides each action by role and state.
    rule("GET", "/api/orders", Access::Roles(ALL, "orders:read")),
    rule(
        "POST",
        "/api/orders",
        Access::Roles(&[A, O, C], "orders:write"),
    ),
    rule("GET", "/api/orders/{id}", Access::Roles(ALL, "orders:read")),
    rule(
        "PATCH",
        "/api/orders/{id}",
        Access::Roles(&[A, O], "orders:write"),
    ),
    rule(
        "POST",
        "/api/orders/{id}/actions/{action}",
        Access::Roles(&[A, O, C], "orders:write"),
    ),
    rule(
        "GET",
        "/api/orders/{id}/plan",
        Access::Roles(STAFF, "orders:read"),
    ),
    rule(
        "POST",
        "/api/orders/{id}/plan",
        Access::Roles(&[A, O], "orders:plan"),
    ),
    rule(
        "PUT",
        "/api/orders/{id}/plan",
        Access::Roles(&[A, O], "orders:write"),
    ),
    rule(
        "POST",
        "/api/orders/{id}/notes",
        Access::Roles(&[A, O], "orders:write"),
    ),
    rule(
        "GET",
        "/api/orders/{id}/artifacts",
        Access::Roles(STAFF, "orders:read"),
    ),
    rule(
        "GET",
        "/api/orders/{id}/artifacts/archive",
        Access::Roles(&[A, O], "orders:read"),
    ),
    rule(
        "POST",
        "/api/orders/{id}/deploy/{channel}",
        Access::Roles(ADMIN, "orders:deploy"),
    ),
    rule(
        "POST",
        "/api/orders/{id}/deploys/{deploy_id}/resolve",
        Access::Roles(ADMIN, "orders:deploy"),
    ),
    rule(
        "GET",
        "/api/integrations",
        Access::Roles(STAFF, "integrations:read"),
    ),
    rule(
        "GET",
        "/api/integrations/{channel}/health",
        Access::Roles(STAFF, "integrations:read"),
    ),
    // The signed, expiring token in the path is the grant (links handed to n8n).
    rule("GET", "/api/artifacts/{token}", Access::Public),
    rule("GET", "/api/schemas/agent-blueprint.json", Access::Public),
    rule("GET", "/api/schemas/production-plan.json", Access::Public),
    rule("GET", "/api/catalog", Access::Roles(STAFF, "catalog:read")),
    rule(
        "POST",
        "/api/catalog",
        Access::Roles(ADMIN, "catalog:write"),
    ),
    rule(
        "GET",
        "/api/catalog/{id}",
        Access::Roles(STAFF, "catalog:read"),
    ),
    rule(
        "PATCH",
        "/api/catalog/{id}",
        Access::Roles(ADMIN, "catalog:write"),
    ),
    rule(
        "DELETE",
        "/api/catalog/{id}",
        Access::Roles(ADMIN, "catalog:write"),
    ),
    rule(
        "GET",
        "/api/factory/stats",
        Access::Roles(STAFF, "factory:read"),
    ),
    rule(
        "POST",
        "/api/admin/seed-demo",
        Access::Roles(ADMIN, "admin:demo"),
    ),
    rule(
        "DELETE",
        "/api/admin/seed-demo",
        Access::Roles(ADMIN, "admin:demo"),
    ),
    rule("GET", "/api/audit", Access::Roles(ADMIN, "audit:read")),
    rule(
        "GET",
        "/api/webhooks",
        Access::Roles(ADMIN, "webhooks:read"),
    ),
    rule(
        "POST",
        "/api/webhooks",
        Access::Roles(ADMIN, "webhooks:write"),
    ),
    rule(
        "GET",
        "/api/webhooks/{id}",
        Access::Roles(ADMIN, "webhooks:read"),
    ),
    rule(
        "PATCH",
        "/api/webhooks/{id}",
        Access::Roles(ADMIN, "webhooks:write"),
    ),
    rule(
        "DELETE",
        "/api/webhooks/{id}",
        Access::Roles(ADMIN, "webhooks:write"),
    ),
    rule(
        "POST",
        "/api/webhooks/{id}/rotate-secret",
        Access::Roles(ADMIN, "webhooks:write"),
    ),
    rule(
        "POST",
        "/api/webhooks/{id}/ping",
        Access::Roles(ADMIN, "webhooks:write"),
    ),
    rule(
        "GET",
        "/api/webhooks/{id}/deliveries",
        Access::Roles(ADMIN, "webhooks:read"),
    ),
    rule("GET", "/api/outbox", Access::Roles(ADMIN, "webhooks:read")),
    rule(
        "POST",
        "/api/outbox/{id}/retry",
        Access::Roles(ADMIN, "webhooks:write"),
    ),
    rule("GET", "/api/ws", Access::Roles(STAFF, "live:read")),
    rule(
        "GET",
        "/api/hosts/{id}/services",
        Access::Roles(STAFF, "services:read"),
    ),
    rule(
        "GET",
        "/api/hosts/{id}/services/{kind}/{name}",
        Access::Roles(STAFF, "services:read"),
    ),
    rule(
        "GET",
        "/api/hosts/{id}/metrics",
        Access::Roles(ALL, "hosts:read"),
    ),
    rule(
        "GET",
        "/api/hosts/{id}/gpu-alerts",
        Access::Roles(STAFF, "hosts:read"),
    ),
    rule(
        "POST",
        "/api/hosts/{id}/gpu-alerts/{alert}/ack",
        Access::Roles(&[A, O], "hosts:operate"),
    ),
    rule(
        "GET",
        "/api/fleet/summary",
        Access::Roles(STAFF, "hosts:read"),
    ),
    rule("GET", "/metrics", Access::Roles(STAFF, "metrics:read")),
    rule(
        "DELETE",
        "/api/hosts/{id}/services/{kind}/{name}",
        Access::Roles(&[A, O], "services:operate"),
    ),
    rule(
        "POST",
        "/api/hosts/{id}/services/{kind}/{name}/{action}",
        Access::Roles(&[A, O], "services:operate"),
    ),
    rule(
        "GET",
        "/api/hosts/{id}/services/{kind}/{name}/logs",
        Access::Roles(STAFF, "services:read"),
    ),
    rule(
        "GET",
        "/api/hosts/{id}/services/{kind}/{name}/stats",
        Access::Roles(STAFF, "services:read"),
    ),
    rule(
        "POST",
        "/api/hosts/{id}/containers",
        Access::Roles(&[A, O], "services:operate"),
    ),
    rule(
        "GET",
        "/api/hosts/{id}/images",
        Access::Roles(STAFF, "services:read"),
    ),
    rule(
        "POST",
        "/api/hosts/{id}/images/pull",
        Access::Roles(&[A, O], "services:operate"),
    ),
    rule(
        "PATCH",
        "/api/api-keys/{id}",
        Access::Roles(ADMIN, "keys:write"),
    ),
    // The OpenAI-compatible gateway: every role may call it; a client is metered to its tenant.
    rule(
        "POST",
        "/v1/chat/completions",
        Access::Roles(ALL, "llm:invoke"),
    ),
    rule("POST", "/v1/embeddings", Access::Roles(ALL, "llm:invoke")),
    rule(
        "POST",
        "/v1/images/generations",
        Access::Roles(ALL, "llm:invoke"),
    ),
    rule("GET", "/v1/models", Access::Roles(ALL, "llm:invoke")),
    rule("GET", "/api/llm/routes", Access::Roles(STAFF, "llm:read")),
    rule(
        "PUT",
        "/api/llm/routes/{alias}",
        Access::Roles(ADMIN, "llm:admin"),
    ),
    rule(
        "DELETE",
        "/api/llm/routes/{alias}",
        Access::Roles(ADMIN, "llm:admin"),
    ),
    rule("GET", "/api/llm/prices", Access::Roles(STAFF, "llm:read")),
    rule("PUT", "/api/llm/prices", Access::Roles(ADMIN, "llm:admin")),
    rule(
        "GET",
        "/api/llm/upstreams",
        Access::Roles(STAFF, "llm:read"),
    ),
    rule("GET", "/api/llm/usage", Access::Roles(ALL, "llm:usage")),
    rule(
        "GET",
        "/api/llm/usage/records",
        Access::Roles(ALL, "llm:usage"),
    ),
];

/// The rule for a matched route.
pub fn lookup(method: &str, path: &str) -> Option<&'static Rule> {
    // HEAD is GET without a body (the router serves it through the GET handler): same rule.
    let method = if method == "HEAD" { "GET" } else { method };
    RULES.iter().find(|r| r.method == method && r.path == path)
}

/// The layer: finds the route's rule, authenticates, checks role and scope, and hands the
/// caller to the handler through the request's extensions.
pub async fn enforce(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = request.method().as_str().to_owned();
    let Some(rule) = lookup(&method, &path) else {
        tracing::error!(%method, %path, "route has no access rule; refusing");
        return ApiError::forbidden("this route has no access rule").into_response();
    };
    let Access::Roles(roles, scope) = rule.access else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let route = format!("{method} {path}");
    let caller = match authenticate(&parts, &state) {
        Ok(caller) => caller,
        Err(e) => {
            state.audit.unauthenticated(ip, &route, &e.message);
            return e.into_response();
        }
    };
    let refusal = if !roles.contains(&caller.role) {
        Some(ApiError::forbidden(
            "your role does not allow this operation",
        ))
    } else if !caller.has_scope(scope) {
        Some(ApiError::forbidden(format!(
            "this API key lacks the scope {scope}"
        )))
    } else {
        None
    };
    if let Some(e) = refusal {
        state.audit.record(
            state
                .audit
                .event("access.forbidden", "denied")
                .caller(&caller)
                .maybe_ip(ip)
                .target(&route)
                .reason(&e.message),
        );
        return e.into_response();
    }
    parts.extensions.insert(caller);
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_duplicates_and_paths_are_api_shaped() {
        for (i, a) in RULES.iter().enumerate() {
            for b in &RULES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "duplicate rule {} {}",
                    a.method,
                    a.path
                );
            }
            assert!(a.path.starts_with('/'), "{}", a.path);
            if let Access::Roles(roles, scope) = a.access {
                assert!(
                    !roles.is_empty() && !scope.is_empty(),
                    "{} {}",
                    a.method,
                    a.path
                );
            }
        }
    }
}
