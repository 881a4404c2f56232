//! Identity and tenancy against the real axon-cp process: the role × route matrix from the
//! policy table itself, tenant isolation, sessions, API keys, JWT attacks, audit.

use std::collections::HashMap;

use axon_control_plane::identity::policy::{Access, RULES};
use axon_e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

const MISSING_ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

struct World {
    cp: ControlPlane,
    admin: String,
    acme: String,
    globex: String,
}

async fn world() -> World {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let acme = cp.create_tenant(&admin, "acme").await;
    let globex = cp.create_tenant(&admin, "globex").await;
    cp.create_user(&admin, "op@axon.test", "operator", None)
        .await;
    cp.create_user(&admin, "viewer@axon.test", "viewer", None)
        .await;
    cp.create_user(&admin, "client@acme.test", "client", Some(&acme))
        .await;
    cp.create_user(&admin, "client@globex.test", "client", Some(&globex))
        .await;
    World {
        cp,
        admin,
        acme,
        globex,
    }
}

fn role_email(role: &str) -> &'static str {
    match role {
        "admin" => ADMIN_EMAIL,
        "operator" => "op@axon.test",
        "viewer" => "viewer@axon.test",
        _ => "client@acme.test",
    }
}

fn password(role: &str) -> &'static str {
    if role == "admin" {
        ADMIN_PASSWORD
    } else {
        USER_PASSWORD
    }
}

/// An independent statement of the most sensitive rules, so a wrong edit of the table itself
/// fails too (the matrix below only proves the server enforces the table).
#[test]
fn management_routes_are_admin_only() {
    for rule in RULES {
        let management = [
            "/api/users",
            "/api/tenants",
            "/api/api-keys",
            "/api/audit",
            "/api/enrollment-tokens",
            "/api/webhooks",
            "/api/outbox",
            "/api/admin/",
        ]
        .iter()
        .any(|p| rule.path.starts_with(p))
            || (rule.path == "/api/hosts/{id}" && rule.method != "GET")
            || (rule.path.starts_with("/api/catalog") && rule.method != "GET");
        if management {
            match rule.access {
                Access::Roles(roles, _) => assert_eq!(
                    roles,
                    [axon_control_plane::model::Role::Admin],
                    "{} {} must be admin-only",
                    rule.method,
                    rule.path
                ),
                Access::Public => panic!("{} {} must not be public", rule.method, rule.path),
            }
        }
    }
}

/// Who may reach each route, stated from the product's intent and written apart from the
/// policy table: the matrix below takes its expectations from here, so a wrong edit of the
/// table fails. `None`: public.
fn intended_roles(method: &str, path: &str) -> Option<&'static [&'static str]> {
    const EVERYONE: &[&str] = &["admin", "operator", "viewer", "client"];
    const STAFF: &[&str] = &["admin", "operator", "viewer"];
    const OPERATORS: &[&str] = &["admin", "operator"];
    const ADMIN: &[&str] = &["admin"];
    let reads = method == "GET";
    let public = [
        "/",
        "/privacy",
        "/terms",
        "/data-deletion",
        "/assets/{file}",
        // The console's door: it authenticates browsers by their own session cookie.
        "/app",
        "/app/fleet",
        "/app/orders",
        "/app/orders/{id}",
        "/app/orders/{id}/deploy/{channel}",
        "/app/hosts/{id}",
        "/app/hosts/{id}/services",
        "/app/hosts/{id}/files",
        "/app/hosts/{id}/commands",
        "/app/enroll",
        "/app/factory",
        "/app/catalog",
        "/app/llm",
        "/app/integrations",
        "/app/access",
        "/app/audit",
        "/app/csp-report",
        "/app/login",
        // The client portal's pages: the console's cookie decides who sees which.
        "/portal/{slug}",
        "/portal/{slug}/orders",
        "/app/logout",
        "/healthz",
        "/readyz",
        "/api/openapi.json",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/enroll",
    ];
    // JSON Schemas of blueprints and plans are documentation; artifact links carry their own
    // signed, expiring grant (they are handed to n8n).
    if public.contains(&path)
        || path.starts_with("/api/schemas/")
        || path == "/api/artifacts/{token}"
    {
        return None;
    }
    let management = [
        "/api/users",
        "/api/tenants",
        "/api/api-keys",
        "/api/audit",
        "/api/enrollment-tokens",
        "/api/webhooks",
        "/api/outbox",
        "/api/admin/",
    ];
    Some(if management.iter().any(|m| path.starts_with(m)) {
        ADMIN
    } else if path.starts_with("/api/catalog") {
        // Staff read the catalog; admins price and publish it; clients see theirs in the portal.
        if reads { STAFF } else { ADMIN }
    } else if path.starts_with("/api/orders") {
        // Clients follow their tenant's orders, order, and cancel a new one; what happens
        // inside production (plans, artifacts, notes, edits) is staff's.
        match (method, path) {
            // Shipping to a client's channels is the admins' call.
            (_, "/api/orders/{id}/deploy/{channel}")
            | (_, "/api/orders/{id}/deploys/{deploy_id}/resolve") => ADMIN,
            ("GET", "/api/orders" | "/api/orders/{id}") => EVERYONE,
            ("POST", "/api/orders" | "/api/orders/{id}/actions/{action}") => {
                &["admin", "operator", "client"]
            }
            ("GET", "/api/orders/{id}/artifacts/archive") => OPERATORS,
            _ if reads => STAFF,
            _ => OPERATORS,
        }
    } else if path.starts_with("/v1/") || path.starts_with("/api/llm/usage") {
        // The LLM gateway serves every role; each is metered to its own tenant and sees only
        // that tenant's usage.
        EVERYONE
    } else if path.starts_with("/api/llm/") && !reads {
        // Routes, aliases and prices are the admins' to change.
        ADMIN
    } else if path.starts_with("/api/portal/") {
        &["admin", "client"]
    } else if ["/api/auth/logout", "/api/me", "/api/me/password"].contains(&path)
        || (reads && ["/api/hosts", "/api/hosts/{id}", "/api/hosts/{id}/metrics"].contains(&path))
    {
        // A client sees its tenant's hosts and their metrics, nothing it could act on.
        EVERYONE
    } else if path == "/api/hosts/{id}" {
        ADMIN
    } else if path == "/api/hosts/{id}/files/content" {
        // File contents are operators' business, even to read.
        OPERATORS
    } else if reads {
        STAFF
    } else {
        OPERATORS
    })
}

/// The intent table and the policy table agree route by route, and clients reach none of
/// exec, files, services, containers, audit, the live socket or Prometheus.
#[test]
fn the_policy_table_matches_the_intended_roles() {
    for rule in RULES {
        let intended = intended_roles(rule.method, rule.path);
        match (rule.access, intended) {
            (Access::Public, None) => {}
            (Access::Roles(roles, _), Some(intended)) => {
                let names: Vec<String> = roles
                    .iter()
                    .map(|r| {
                        serde_json::to_value(r)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    })
                    .collect();
                assert_eq!(names, intended, "{} {}", rule.method, rule.path);
            }
            (access, intended) => panic!(
                "{} {}: table says {access:?}, intent says {intended:?}",
                rule.method, rule.path
            ),
        }
        let sensitive = [
            "/exec",
            "/files",
            "/services",
            "/containers",
            "/images",
            "/audit",
        ]
        .iter()
        // Under /api only: the gateway's /v1/images generates pictures, it is not a host's.
        .any(|part| rule.path.starts_with("/api/") && rule.path.contains(part))
            || ["/api/ws", "/metrics", "/api/fleet/summary"].contains(&rule.path);
        if sensitive {
            assert!(
                !intended.is_some_and(|roles| roles.contains(&"client")),
                "clients must not reach {} {}",
                rule.method,
                rule.path
            );
        }
    }
}

#[tokio::test]
async fn role_route_matrix_follows_the_policy_table() {
    let w = world().await;
    let methods: HashMap<&str, Method> = [
        ("GET", Method::GET),
        ("POST", Method::POST),
        ("PATCH", Method::PATCH),
        ("DELETE", Method::DELETE),
        ("PUT", Method::PUT),
    ]
    .into();
    for rule in RULES {
        let path = rule
            .path
            .replace("{id}", MISSING_ID)
            .replace("{slug}", "acme");
        let method = methods[rule.method].clone();
        let body = matches!(rule.method, "POST" | "PATCH" | "PUT").then(|| json!({}));
        let intended = intended_roles(rule.method, rule.path);
        // Anonymous callers.
        let (status, _) = w.cp.call(method.clone(), &path, None, body.clone()).await;
        match intended {
            None => {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "public {} {} answered {status}",
                    rule.method,
                    rule.path
                );
                continue;
            }
            Some(_) => assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "anonymous {} {}",
                rule.method,
                rule.path
            ),
        }
        let allowed = intended.unwrap_or_default();
        for role in ["admin", "operator", "viewer", "client"] {
            // A fresh session per call: some routes (logout, password change) end it.
            let token = w.cp.login_as(role_email(role), password(role)).await["access_token"]
                .as_str()
                .expect("token")
                .to_owned();
            let (status, body_out) =
                w.cp.call(method.clone(), &path, Some(&token), body.clone())
                    .await;
            let may = allowed.contains(&role);
            if may {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{role} may {} {} but got {status}: {body_out}",
                    rule.method,
                    rule.path
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} must not {} {}: {body_out}",
                    rule.method,
                    rule.path
                );
                assert_eq!(body_out["error"]["code"], "forbidden");
            }
        }
    }
    // The published document lists exactly the table.
    let (status, doc) =
        w.cp.call(Method::GET, "/api/openapi.json", None, None)
            .await;
    assert_eq!(status, StatusCode::OK);
    let mut listed = 0;
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("ops").keys() {
            assert!(
                RULES
                    .iter()
                    .any(|r| r.path == path && r.method.eq_ignore_ascii_case(method)),
                "{method} {path}"
            );
            listed += 1;
        }
    }
    assert_eq!(listed, RULES.len());
}

#[tokio::test]
async fn api_keys_are_confined_by_role_scope_expiry_and_revocation() {
    let w = world().await;
    let make = |role: &str, scopes: Value, extra: Value| {
        let mut body = json!({"name": "n8n", "role": role, "scopes": scopes});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    let (status, created) =
        w.cp.call(
            Method::POST,
            "/api/api-keys",
            Some(&w.admin),
            Some(make("viewer", json!(["hosts:read"]), json!({}))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().expect("key").to_owned();
    assert!(key.starts_with("axk_"));
    let (status, _) = w.cp.call(Method::GET, "/api/hosts", Some(&key), None).await;
    assert_eq!(status, StatusCode::OK);
    // Out of role, and out of scope.
    let (status, _) = w.cp.call(Method::GET, "/api/users", Some(&key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, op_key) =
        w.cp.call(
            Method::POST,
            "/api/api-keys",
            Some(&w.admin),
            Some(make("operator", json!(["hosts:read"]), json!({}))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) =
        w.cp.call(
            Method::POST,
            &format!("/api/hosts/{MISSING_ID}/ping"),
            op_key["key"].as_str(),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("hosts:operate")
    );

    // The list shows no secret, and usage is recorded.
    let (_, keys) =
        w.cp.call(Method::GET, "/api/api-keys", Some(&w.admin), None)
            .await;
    let listed = keys
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["id"] == created["id"])
        .expect("listed")
        .clone();
    assert!(listed.get("key").is_none());
    assert!(listed["last_used_at"].is_string(), "{listed}");
    assert!(key.starts_with(listed["prefix"].as_str().expect("prefix")));

    // Bad requests.
    for bad in [
        make("viewer", json!(["nonsense:read"]), json!({})),
        make("viewer", json!([]), json!({})),
        make("client", json!(["*"]), json!({})),
        make("viewer", json!(["*"]), json!({"tenant_id": w.acme})),
        make("viewer", json!(["*"]), json!({"expires_in_secs": 0})),
    ] {
        let (status, body) =
            w.cp.call(
                Method::POST,
                "/api/api-keys",
                Some(&w.admin),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    // Revoked and expired keys stop working.
    let (status, _) =
        w.cp.call(
            Method::DELETE,
            &format!("/api/api-keys/{}", created["id"].as_str().expect("id")),
            Some(&w.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = w.cp.call(Method::GET, "/api/hosts", Some(&key), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, short) =
        w.cp.call(
            Method::POST,
            "/api/api-keys",
            Some(&w.admin),
            Some(make("viewer", json!(["*"]), json!({"expires_in_secs": 1}))),
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, _) =
        w.cp.call(Method::GET, "/api/hosts", short["key"].as_str(), None)
            .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) =
        w.cp.call(Method::GET, "/api/hosts", Some("axk_forged"), None)
            .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Even an admin key cannot mint credentials: that needs a user session.
    let (_, root_key) =
        w.cp.call(
            Method::POST,
            "/api/api-keys",
            Some(&w.admin),
            Some(make("admin", json!(["*"]), json!({}))),
        )
        .await;
    let root_key = root_key["key"].as_str().expect("key").to_owned();
    let (status, _) =
        w.cp.call(Method::GET, "/api/users", Some(&root_key), None)
            .await;
    assert_eq!(status, StatusCode::OK, "an admin key reads users");
    let (status, _) =
        w.cp.call(
            Method::POST,
            "/api/api-keys",
            Some(&root_key),
            Some(make("admin", json!(["*"]), json!({}))),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        w.cp.call(
            Method::POST,
            "/api/users",
            Some(&root_key),
            Some(json!({"email": "new@axon.test", "password": USER_PASSWORD, "role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (_, audit) =
        w.cp.call(
            Method::GET,
            "/api/audit?action=api_key.",
            Some(&w.admin),
            None,
        )
        .await;
    let actions: Vec<&str> = audit
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"api_key.create") && actions.contains(&"api_key.revoke"),
        "{actions:?}"
    );
    assert!(
        audit
            .as_array()
            .expect("audit")
            .iter()
            .all(|r| r["source_ip"] == "127.0.0.1"),
        "{audit}"
    );
}

#[tokio::test]
async fn tenants_are_isolated_and_other_tenants_look_missing() {
    let w = world().await;
    let cp = &w.cp;
    // Three hosts: one per tenant, one with none.
    let mut hosts = Vec::new();
    for tenant in [Some(&w.acme), Some(&w.globex), None] {
        let agent = Agent::enroll(cp).await;
        let (status, body) = cp
            .call(
                Method::PATCH,
                &format!("/api/hosts/{}", agent.host_id),
                Some(&w.admin),
                Some(json!({"tenant_id": tenant, "labels": {"gpu": "a100"}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        hosts.push(agent.host_id.clone());
    }
    let acme_client = cp.token_for("client@acme.test").await;
    let (status, list) = cp
        .call(
            Method::GET,
            "/api/hosts?tenant_id=globex",
            Some(&acme_client),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|h| h["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [hosts[0].as_str()],
        "a client sees only its tenant's hosts, whatever the query says"
    );

    let (own_status, _) = cp
        .call(
            Method::GET,
            &format!("/api/hosts/{}", hosts[0]),
            Some(&acme_client),
            None,
        )
        .await;
    assert_eq!(own_status, StatusCode::OK);
    for other in [&hosts[1], &hosts[2]] {
        let (status, body) = cp
            .call(
                Method::GET,
                &format!("/api/hosts/{other}"),
                Some(&acme_client),
                None,
            )
            .await;
        let (missing_status, missing) = cp
            .call(
                Method::GET,
                &format!("/api/hosts/{MISSING_ID}"),
                Some(&acme_client),
                None,
            )
            .await;
        assert_eq!(status, missing_status);
        assert_eq!(body["error"]["code"], missing["error"]["code"]);
        assert_eq!(
            body["error"]["message"]
                .as_str()
                .map(|m| m.replace(other.as_str(), "X")),
            missing["error"]["message"]
                .as_str()
                .map(|m| m.replace(MISSING_ID, "X"))
        );
    }
    // Clients cannot change hosts, even their own.
    let (status, _) = cp
        .call(
            Method::PATCH,
            &format!("/api/hosts/{}", hosts[0]),
            Some(&acme_client),
            Some(json!({"tenant_id": null})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Portal: own slug yes, another tenant's slug looks like no slug at all.
    let (status, portal) = cp
        .call(Method::GET, "/api/portal/acme", Some(&acme_client), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{portal}");
    assert_eq!(portal["welcome"], "Welcome to acme");
    assert_eq!(portal["hosts"].as_array().map(Vec::len), Some(1));
    let (status, other) = cp
        .call(Method::GET, "/api/portal/globex", Some(&acme_client), None)
        .await;
    let (missing_status, missing) = cp
        .call(Method::GET, "/api/portal/nope", Some(&acme_client), None)
        .await;
    assert_eq!(
        (status, missing_status),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
    );
    assert_eq!(
        other["error"]["message"]
            .as_str()
            .map(|m| m.replace("globex", "X")),
        missing["error"]["message"]
            .as_str()
            .map(|m| m.replace("nope", "X"))
    );
    let (status, _) = cp
        .call(Method::GET, "/api/portal/globex", Some(&w.admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "admins see every portal");

    // Tenant admin rules: slug conflicts and bad slugs.
    let (status, _) = cp
        .call(
            Method::POST,
            "/api/tenants",
            Some(&w.admin),
            Some(json!({"slug": "acme", "name": "Again"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = cp
        .call(
            Method::POST,
            "/api/tenants",
            Some(&w.admin),
            Some(json!({"slug": "../etc", "name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = cp
        .call(
            Method::DELETE,
            &format!("/api/tenants/{}", w.acme),
            Some(&w.admin),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a tenant with users and hosts is not deleted"
    );
}

#[tokio::test]
async fn mass_assignment_and_unknown_fields_are_refused() {
    let w = world().await;
    let cp = &w.cp;
    let client = cp.login_as("client@acme.test", USER_PASSWORD).await;
    let token = client["access_token"].as_str().expect("token");
    let (status, _) = cp.call(Method::POST, "/api/me/password", Some(token),
        Some(json!({"current_password": USER_PASSWORD, "new_password": "another long password", "role": "admin"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let operator = cp.token_for("op@axon.test").await;
    let (status, _) = cp
        .call(
            Method::POST,
            "/api/users",
            Some(&operator),
            Some(json!({"email": "x@y.z", "password": USER_PASSWORD, "role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = cp.call(Method::POST, "/api/users", Some(&w.admin),
        Some(json!({"email": "x@y.z", "password": USER_PASSWORD, "role": "viewer", "is_admin": true}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = cp
        .call(
            Method::POST,
            "/api/users",
            Some(&w.admin),
            Some(json!({"email": "x@y.z", "password": USER_PASSWORD, "role": "client"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a client needs a tenant");
    let (status, _) = cp.call(Method::POST, "/api/users", Some(&w.admin),
        Some(json!({"email": "x@y.z", "password": USER_PASSWORD, "role": "viewer", "tenant_id": w.acme}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "staff belong to no tenant");
    let (status, _) = cp
        .call(
            Method::POST,
            "/api/users",
            Some(&w.admin),
            Some(json!({"email": "op@axon.test", "password": USER_PASSWORD, "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // The last admin cannot be demoted, disabled or deleted.
    let (_, me) = cp.call(Method::GET, "/api/me", Some(&w.admin), None).await;
    let admin_id = me["id"].as_str().expect("id");
    let (status, _) = cp
        .call(
            Method::PATCH,
            &format!("/api/users/{admin_id}"),
            Some(&w.admin),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = cp
        .call(
            Method::POST,
            &format!("/api/users/{admin_id}/disable"),
            Some(&w.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn sessions_end_on_logout_password_change_disable_and_role_change() {
    let w = world().await;
    let cp = &w.cp;

    // Logout ends the session: its access and refresh tokens stop at once.
    let s = cp.login_as("viewer@axon.test", USER_PASSWORD).await;
    let (access, refresh) = (
        s["access_token"].as_str().expect("a"),
        s["refresh_token"].as_str().expect("r"),
    );
    assert_eq!(
        cp.call(Method::POST, "/api/auth/logout", Some(access), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        cp.call(Method::GET, "/api/me", Some(access), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        cp.call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh}))
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );

    // A password change ends every session of the user.
    let a = cp.token_for("viewer@axon.test").await;
    let b = cp.token_for("viewer@axon.test").await;
    let (status, _) = cp.call(Method::POST, "/api/me/password", Some(&a), Some(json!({"current_password": "wrong password!", "new_password": "a brand new password"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Guessing the current password through this route is throttled like login.
    let guesser = cp.token_for("client@acme.test").await;
    let mut last = StatusCode::OK;
    for _ in 0..7 {
        last = cp.call(Method::POST, "/api/me/password", Some(&guesser), Some(json!({"current_password": "guess guess guess", "new_password": "a brand new password"}))).await.0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = cp
        .call(
            Method::POST,
            "/api/me/password",
            Some(&a),
            Some(
                json!({"current_password": USER_PASSWORD, "new_password": "a brand new password"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for t in [&a, &b] {
        assert_eq!(
            cp.call(Method::GET, "/api/me", Some(t), None).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    cp.login_as("viewer@axon.test", "a brand new password")
        .await;

    // Disabling and changing the role cut access at once.
    let op = cp.token_for("op@axon.test").await;
    assert_eq!(
        cp.call(
            Method::POST,
            &format!("/api/users/{}/disable", user_id(&w, "op@axon.test").await),
            Some(&w.admin),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        cp.call(Method::GET, "/api/hosts", Some(&op), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = cp
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": "op@axon.test", "password": USER_PASSWORD})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a disabled user cannot log in"
    );

    let client = cp.token_for("client@globex.test").await;
    let (status, _) = cp
        .call(
            Method::PATCH,
            &format!("/api/users/{}", user_id(&w, "client@globex.test").await),
            Some(&w.admin),
            Some(json!({"tenant_id": w.acme})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        cp.call(Method::GET, "/api/portal/globex", Some(&client), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // Admin password reset returns a generated password once.
    let (status, reset) = cp
        .call(
            Method::POST,
            &format!(
                "/api/users/{}/reset-password",
                user_id(&w, "client@acme.test").await
            ),
            Some(&w.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    cp.login_as(
        "client@acme.test",
        reset["password"].as_str().expect("password"),
    )
    .await;
}

/// Signs `claims` with the control plane's real Ed25519 key (read from its store while it is
/// stopped), so each claim check is tested on its own, past the signature.
fn sign(key: &axon_control_plane::model::SigningKey, kid: &str, claims: &Value) -> String {
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(&key.pkcs8)
        .expect("pkcs8");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(&der),
    )
    .expect("sign")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn forged_and_invalid_tokens_get_401() {
    let mut cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    cp.create_user(&admin, "viewer@axon.test", "viewer", None)
        .await;
    let viewer = cp.login_as("viewer@axon.test", USER_PASSWORD).await;
    let token = viewer["access_token"].as_str().expect("token").to_owned();
    let parts: Vec<&str> = token.split('.').collect();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1])
            .expect("b64"),
    )
    .expect("claims");

    // Read the signing key while the server is stopped, then serve again.
    cp.terminate();
    let key = {
        let store =
            axon_control_plane::model::Store::open(&cp.data_dir().join("db")).expect("store");
        store
            .signing_keys
            .values()
            .expect("keys")
            .pop()
            .expect("a key")
    };
    cp.spawn().await;
    let kid = key.kid.clone();
    // Positive control: a token we sign with the real key and honest claims is accepted.
    assert_eq!(
        cp.call(
            Method::GET,
            "/api/me",
            Some(&sign(&key, &kid, &claims)),
            None
        )
        .await
        .0,
        StatusCode::OK
    );

    let now = claims["iat"].as_i64().expect("iat");
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let without = |field: &str| {
        let mut c = claims.clone();
        c.as_object_mut().expect("object").remove(field);
        c
    };
    let ca = std::fs::read_to_string(cp.data_dir().join("pki/ca.pem")).expect("ca");
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(ca.as_bytes()),
    )
    .expect("hs256");
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), parts[1]),
        ),
        ("HS256 with public material", hs256),
        ("expired", sign(&key, &kid, &with("exp", json!(now - 3600)))),
        (
            "nbf in the future",
            sign(&key, &kid, &with("nbf", json!(now + 3600))),
        ),
        ("missing exp", sign(&key, &kid, &without("exp"))),
        (
            "wrong iss",
            sign(&key, &kid, &with("iss", json!("someone-else"))),
        ),
        (
            "wrong aud",
            sign(&key, &kid, &with("aud", json!("other-api"))),
        ),
        (
            "role escalation, re-signed",
            sign(&key, &kid, &with("role", json!("admin"))),
        ),
        (
            "role escalation, tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(serde_json::to_string(&with("role", json!("admin")))
                    .expect("json")
                    .as_bytes()),
                parts[2]
            ),
        ),
        (
            "unknown kid",
            sign(&key, "01ARZ3NDEKTSV4RRFFQ69G5FAV", &claims),
        ),
        ("empty signature", format!("{}.{}.", parts[0], parts[1])),
        (
            "ended session",
            sign(&key, &kid, &with("sid", json!(MISSING_ID))),
        ),
        (
            "unknown user",
            sign(&key, &kid, &with("sub", json!(MISSING_ID))),
        ),
    ];
    for (name, forged) in cases {
        let (status, body) = cp.call(Method::GET, "/api/me", Some(&forged), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {body}");
    }
    // Tokens are accepted only in the Authorization header.
    let (status, _) = cp
        .call(
            Method::GET,
            &format!("/api/me?access_token={token}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Refusals are audited with the caller's address: the first at once, the rest of the
    // minute as one record with their count (written when the window ends, or at shutdown).
    let unauthenticated = |records: &Value| -> (usize, u64) {
        let records = records.as_array().expect("records");
        assert!(
            records
                .iter()
                .all(|r| r["source_ip"] == "127.0.0.1" && r["outcome"] == "denied"),
            "{records:?}"
        );
        let total = records
            .iter()
            .map(|r| r["count"].as_u64().unwrap_or(1))
            .sum();
        (records.len(), total)
    };
    let admin = cp.admin_token().await;
    let path = "/api/audit?action=access.unauthenticated&limit=50";
    let (_, audit) = cp.call(Method::GET, path, Some(&admin), None).await;
    assert_eq!(unauthenticated(&audit).0, 1, "{audit}");
    cp.terminate();
    cp.spawn().await;
    let admin = cp.admin_token().await;
    let (_, audit) = cp.call(Method::GET, path, Some(&admin), None).await;
    let (records, total) = unauthenticated(&audit);
    assert_eq!(records, 2, "{audit}");
    assert!(total >= 13, "every refusal is counted: {audit}");
    let viewer = cp.token_for("viewer@axon.test").await;
    assert_eq!(
        cp.call(Method::GET, "/api/audit", Some(&viewer), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (_, forbidden) = cp
        .call(
            Method::GET,
            "/api/audit?action=access.forbidden",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(forbidden[0]["target"], "GET /api/audit");
    assert_eq!(forbidden[0]["actor_role"], "viewer");
}

#[tokio::test]
async fn logins_and_refresh_reuse_are_audited() {
    let cp = ControlPlane::start(&[]).await;
    let (status, _) = cp
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": ADMIN_EMAIL, "password": "bad"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let session = cp.login().await;
    let first = session["refresh_token"].as_str().expect("refresh");
    cp.call(
        Method::POST,
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": first})),
    )
    .await;
    cp.call(
        Method::POST,
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": first})),
    )
    .await;
    let admin = cp.admin_token().await;
    let (status, records) = cp
        .call(Method::GET, "/api/audit?action=auth.", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let seen: Vec<(String, String)> = records
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or("").to_owned(),
                r["outcome"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for want in [
        ("auth.login", "denied"),
        ("auth.login", "ok"),
        ("auth.refresh_reuse", "denied"),
    ] {
        assert!(
            seen.iter().any(|(a, o)| a == want.0 && o == want.1),
            "{want:?} not in {seen:?}"
        );
    }
    let (status, _) = cp
        .call(
            Method::GET,
            "/api/audit?since=yesterday",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Two admins demote each other at the same moment: the last-admin check and the change are
/// one step, so one enabled admin always remains.
#[tokio::test]
async fn concurrent_demotions_keep_an_admin() {
    let cp = ControlPlane::start(&[]).await;
    let first = cp.login().await;
    let first_token = first["access_token"].as_str().expect("token").to_owned();
    let first_id = first["user"]["id"].as_str().expect("id").to_owned();
    let second_id = cp
        .create_user(&first_token, "second@axon.test", "admin", None)
        .await;
    let second_token = cp.token_for("second@axon.test").await;
    let demote = |token: String, id: String| {
        let cp = &cp;
        async move {
            cp.call(
                Method::PATCH,
                &format!("/api/users/{id}"),
                Some(&token),
                Some(json!({"role": "operator"})),
            )
            .await
            .0
        }
    };
    let (a, b) = tokio::join!(
        demote(first_token, second_id),
        demote(second_token, first_id)
    );
    assert!(
        !(a == StatusCode::OK && b == StatusCode::OK),
        "both demotions went through: {a} {b}"
    );
    let remaining = cp.login_as("second@axon.test", USER_PASSWORD).await;
    let admin = match remaining["user"]["role"].as_str() {
        Some("admin") => remaining["access_token"].as_str().expect("t").to_owned(),
        _ => cp.admin_token().await,
    };
    let (status, users) = cp.call(Method::GET, "/api/users", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK, "{users}");
    let admins = users
        .as_array()
        .expect("users")
        .iter()
        .filter(|u| u["role"] == "admin" && u["disabled"] == false)
        .count();
    assert_eq!(admins, 1);
}

/// A tenant with a live client API key is not deleted from under it.
#[tokio::test]
async fn a_tenant_with_client_keys_is_not_deleted() {
    let w = world().await;
    let w = &w;
    let delete =
        |path: String| async move { w.cp.call(Method::DELETE, &path, Some(&w.admin), None).await };
    let (status, created) = w
        .cp
        .call(
            Method::POST,
            "/api/api-keys",
            Some(&w.admin),
            Some(json!({"name": "portal bot", "role": "client", "tenant_id": w.acme, "scopes": ["*"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let client = user_id(w, "client@acme.test").await;
    let (status, _) = delete(format!("/api/users/{client}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let tenant = format!("/api/tenants/{}", w.acme);
    let (status, body) = delete(tenant.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(error_says(&body, "1 API key"), "{body}");
    let key_id = created["id"].as_str().expect("id");
    let (status, _) = delete(format!("/api/api-keys/{key_id}")).await;
    assert!(status.is_success(), "{status}");
    let (status, body) = delete(tenant).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

async fn user_id(w: &World, email: &str) -> String {
    let (_, users) =
        w.cp.call(Method::GET, "/api/users", Some(&w.admin), None)
            .await;
    users
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["email"] == email)
        .and_then(|u| u["id"].as_str())
        .expect("user")
        .to_owned()
}
