//! The console's management pages: the factory dashboard (`/app/factory`, its charts drawn
//! here), the catalog (`/app/catalog`), the LLM gateway (`/app/llm`: routes, upstream health,
//! usage per tenant and model), integrations and webhooks (`/app/integrations`) and, for
//! admins, users, tenants and API keys (`/app/access`). Lists are filled by the script from the
//! API (`table[data-source]`); changes go through the API too (`form.api`), so every rule and
//! audit record is the API's.

use maud::{Markup, html};

use super::i18n::Lang;
use crate::agency::stats::FactoryStats;
use crate::model::Role;

/// One column of a table the script fills: the item's field (dotted), its heading, how to
/// show it (`date`, `usd`, `number`, `state`, `targets`, `ms`).
pub struct Col<'a>(pub &'a str, pub &'a str, pub Option<&'a str>);

/// A table the script fills from `source` (a path under `/api/`).
pub struct Table<'a> {
    pub id: &'a str,
    pub source: &'a str,
    /// Where the list is in the answer, when it is not the answer itself.
    pub items: Option<&'a str>,
    pub label: &'a str,
    pub empty: &'a str,
    pub cols: &'a [Col<'a>],
    /// Row actions as JSON (`[{"label","method","path","when"?,"done"?,"confirm"?}]`).
    pub actions: Option<serde_json::Value>,
}

pub fn table(lang: Lang, t: &Table) -> Markup {
    let status = format!("{}-status", t.id);
    html! {
        p.status id=(status) role="status" { (lang.t("js.loading")) }
        div.table-scroll tabindex="0" role="region" aria-label=(t.label) {
            table.data id=(t.id) data-source=(t.source) data-items=[t.items] data-status=(status)
                data-empty=(t.empty) data-actions=[t.actions.as_ref().map(|a| a.to_string())] {
                thead {
                    tr {
                        @for c in t.cols {
                            th scope="col" data-field=(c.0) data-kind=[c.2] { (c.1) }
                        }
                        @if t.actions.is_some() {
                            th scope="col" { span.sr { (lang.t("host.services.actions")) } }
                        }
                    }
                }
                tbody {}
            }
        }
    }
}

/// A field of a `form.api`.
fn field(id: &str, label: &str, input: Markup, hint: Option<&str>) -> Markup {
    html! {
        div.field {
            label for=(id) { (label) }
            (input)
            @if let Some(h) = hint { p.hint id={ (id) "-hint" } { (h) } }
        }
    }
}

/// Where a `form.api` with `data-then="show"` reveals what the API answered once.
fn reveal(lang: Lang, id: &str, title: &str) -> Markup {
    html! {
        div.reveal id=(id) hidden {
            p { strong { (title) } " " (lang.t("manage.shown_once")) }
            pre.command.secret tabindex="0" {}
        }
    }
}

/// Horizontal bars drawn here, with their figures as text.
fn bars(label: &str, rows: &[(String, f64)], unit: &str) -> Markup {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0);
    html! {
        figure.bars.static {
            figcaption { (label) }
            ul {
                @for (name, value) in rows {
                    li {
                        span.label { (name) }
                        svg viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true" focusable="false" {
                            rect height="10" width=(format!("{:.1}", (value / max * 100.0).max(0.5))) {}
                        }
                        span.value { (format!("{value:.0}")) (unit) }
                    }
                }
            }
        }
    }
}

/// Created, finished and delivered orders per week as grouped columns.
fn throughput(lang: Lang, stats: &FactoryStats) -> Markup {
    let weeks = &stats.throughput;
    let max = weeks
        .iter()
        .map(|w| w.created.max(w.finished).max(w.delivered))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let slot = 100.0 / weeks.len().max(1) as f64;
    let summary = weeks
        .iter()
        .map(|w| format!("{}: {}/{}/{}", w.week, w.created, w.finished, w.delivered))
        .collect::<Vec<_>>()
        .join("; ");
    html! {
        figure.columns-chart {
            figcaption { (lang.t("factory.throughput")) }
            svg viewBox="0 0 100 40" preserveAspectRatio="none" role="img"
                aria-label={ (lang.t("factory.throughput")) ": " (summary) } {
                @for (i, w) in weeks.iter().enumerate() {
                    @for (j, n) in [w.created, w.finished, w.delivered].into_iter().enumerate() {
                        @let h = n as f64 / max * 38.0;
                        rect class={ "s" (j) } x=(format!("{:.2}", i as f64 * slot + j as f64 * slot / 3.5 + slot * 0.1))
                            y=(format!("{:.2}", 40.0 - h)) width=(format!("{:.2}", slot / 3.8)) height=(format!("{h:.2}")) {}
                    }
                }
            }
            p.axis {
                span { (weeks.first().map(|w| w.week.as_str()).unwrap_or("")) }
                span.legend {
                    span.key.s0 { (lang.t("factory.created")) }
                    span.key.s1 { (lang.t("factory.finished")) }
                    span.key.s2 { (lang.t("factory.delivered")) }
                }
                span { (weeks.last().map(|w| w.week.as_str()).unwrap_or("")) }
            }
        }
    }
}

/// `/app/factory`.
pub fn factory(lang: Lang, stats: &FactoryStats, role: Role) -> Markup {
    let by_estado: Vec<(String, f64)> = stats
        .by_estado
        .iter()
        .map(|(k, v)| (k.clone(), *v as f64))
        .collect();
    let by_product: Vec<(String, f64)> = stats
        .by_product
        .iter()
        .map(|(k, v)| (k.clone(), *v as f64))
        .collect();
    let by_tenant: Vec<(String, f64)> = stats
        .by_tenant
        .iter()
        .map(|t| {
            (
                t.name
                    .clone()
                    .unwrap_or_else(|| lang.t("factory.no_tenant").into()),
                t.orders as f64,
            )
        })
        .collect();
    let ready = stats.by_estado.get("listo").copied().unwrap_or(0);
    html! {
        div.section-head {
            h1 { (lang.t("factory.title")) }
            @if role == Role::Admin {
                form.api.inline data-method="POST" data-path="admin/seed-demo" data-then="show"
                    data-show="credentials" data-target="demo-result" data-done=(lang.t("factory.seeded")) {
                    button.button.primary type="submit" #seed { (lang.t("factory.seed")) }
                    span.status role="status" {}
                }
            }
        }
        @if role == Role::Admin {
            (reveal(lang, "demo-result", lang.t("factory.credentials")))
        }
        ul.cards {
            li.card { h2 { (lang.t("factory.total")) } p.figure #total-orders { (stats.total_orders) } }
            li.card { h2 { (lang.t("app.dash.ready")) } p.figure { (ready) } }
            li.card {
                h2 { (lang.t("factory.deploys")) }
                p.figure { (stats.deploys.values().flat_map(|m| m.values()).sum::<usize>()) }
            }
        }
        @if stats.total_orders == 0 {
            p.empty { (lang.t("factory.empty")) }
        } @else {
            div.charts {
                (bars(lang.t("factory.by_estado"), &by_estado, ""))
                (bars(lang.t("factory.by_product"), &by_product, ""))
                (bars(lang.t("factory.by_tenant"), &by_tenant, ""))
            }
            (throughput(lang, stats))
            h2 { (lang.t("factory.time")) }
            div.table-scroll tabindex="0" role="region" aria-label=(lang.t("factory.time")) {
                table.data {
                    thead { tr {
                        th scope="col" { "estado" }
                        th scope="col" { (lang.t("factory.stays")) }
                        th scope="col" { (lang.t("factory.mean")) }
                        th scope="col" { (lang.t("factory.median")) }
                    } }
                    tbody {
                        @for (estado, d) in &stats.time_in_estado {
                            tr {
                                th scope="row" { (estado) }
                                td { (d.stays) }
                                td { (format!("{:.1} h", d.mean_hours)) }
                                td { (format!("{:.1} h", d.median_hours)) }
                            }
                        }
                    }
                }
            }
            h2 { (lang.t("factory.deploys")) }
            ul.plain {
                @for (channel, statuses) in &stats.deploys {
                    li {
                        strong { (channel) } ": "
                        (statuses.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(" · "))
                    }
                }
            }
        }
    }
}

/// `/app/catalog`.
pub fn catalog(lang: Lang, role: Role) -> Markup {
    let admin = role == Role::Admin;
    let actions = admin.then(|| {
        serde_json::json!([
            {"label": lang.t("catalog.deactivate"), "method": "PATCH", "path": "catalog/{id}",
             "body": {"active": false}, "when": "active"},
            {"label": lang.t("catalog.activate"), "method": "PATCH", "path": "catalog/{id}",
             "body": {"active": true}, "when": "!active"},
            {"label": lang.t("manage.remove"), "method": "DELETE", "path": "catalog/{id}",
             "confirm": lang.t("manage.confirm"), "done": lang.t("js.done")}
        ])
    });
    html! {
        h1 { (lang.t("catalog.title")) }
        (table(lang, &Table {
            id: "catalog-table", source: "catalog", items: None,
            label: lang.t("catalog.title"), empty: lang.t("catalog.empty"),
            cols: &[
                Col("name", lang.t("catalog.name"), None),
                Col("product_type", lang.t("orders.col.product"), None),
                Col("price_cents", lang.t("catalog.price_cents"), Some("number")),
                Col("currency", lang.t("catalog.currency"), None),
                Col("active", lang.t("catalog.active"), None),
                Col("tenants", lang.t("catalog.tenants"), None),
            ],
            actions,
        }))
        @if admin {
            h2 { (lang.t("catalog.new")) }
            form.api.filters data-method="POST" data-path="catalog" data-done=(lang.t("catalog.created")) {
                (field("c-name", lang.t("catalog.name"), html! { input #c-name name="name" required maxlength="200"; }, None))
                (field("c-type", lang.t("orders.col.product"), html! {
                    select #c-type name="product_type" {
                        @for p in crate::agency::blueprint::ProductType::ALL {
                            option value=(p.as_str()) { (p.as_str()) }
                        }
                    }
                }, None))
                (field("c-price", lang.t("catalog.price"), html! {
                    input #c-price name="price_cents" type="number" min="0" step="0.01" data-scale="100" required aria-describedby="c-price-hint";
                }, Some(lang.t("catalog.price.hint"))))
                (field("c-currency", lang.t("catalog.currency"), html! { input #c-currency name="currency" value="EUR" maxlength="3" required; }, None))
                (field("c-desc", lang.t("catalog.description"), html! { input #c-desc name="description" maxlength="2000"; }, None))
                button.button.primary type="submit" { (lang.t("catalog.create")) }
                span.status role="status" {}
            }
        }
    }
}

/// `/app/llm`.
pub fn llm(lang: Lang) -> Markup {
    html! {
        h1 { (lang.t("llm.title")) }
        h2 { (lang.t("llm.usage")) }
        div.charts {
            figure.bars data-source="llm/usage?group_by=tenant" data-items="rows" data-label="tenant_id"
                data-none=(lang.t("factory.no_tenant")) data-value="cost_usd" data-kind="usd" data-empty=(lang.t("llm.usage.none")) {
                figcaption { (lang.t("llm.usage.tenant")) }
                ul {}
            }
            figure.bars data-source="llm/usage?group_by=model" data-items="rows" data-label="model"
                data-value="requests" data-kind="number" data-empty=(lang.t("llm.usage.none")) {
                figcaption { (lang.t("llm.usage.model")) }
                ul {}
            }
        }
        (table(lang, &Table {
            id: "usage-table", source: "llm/usage?group_by=tenant,model", items: Some("rows"),
            label: lang.t("llm.usage"), empty: lang.t("llm.usage.none"),
            cols: &[
                Col("tenant_id", lang.t("llm.tenant"), None),
                Col("model", lang.t("llm.model"), None),
                Col("requests", lang.t("llm.requests"), Some("number")),
                Col("failed", lang.t("llm.failed"), Some("number")),
                Col("prompt_tokens", lang.t("llm.prompt"), Some("number")),
                Col("completion_tokens", lang.t("llm.completion"), Some("number")),
                Col("cost_usd", lang.t("llm.cost"), Some("usd")),
            ],
            actions: None,
        }))
        h2 { (lang.t("llm.upstreams")) }
        (table(lang, &Table {
            id: "upstreams-table", source: "llm/upstreams", items: None,
            label: lang.t("llm.upstreams"), empty: lang.t("llm.upstreams.none"),
            cols: &[
                Col("upstream", lang.t("llm.upstream"), None),
                Col("circuit", lang.t("llm.circuit"), Some("state")),
                Col("in_flight", lang.t("llm.in_flight"), Some("number")),
                Col("latency_ewma_ms", lang.t("llm.latency"), Some("ms")),
                Col("requests", lang.t("llm.requests"), Some("number")),
                Col("failures", lang.t("llm.failed"), Some("number")),
                Col("last_error", lang.t("llm.last_error"), None),
            ],
            actions: None,
        }))
        h2 { (lang.t("llm.routes")) }
        (table(lang, &Table {
            id: "routes-table", source: "llm/routes", items: Some("aliases"),
            label: lang.t("llm.routes"), empty: lang.t("llm.routes.none"),
            cols: &[
                Col("name", lang.t("llm.alias"), None),
                Col("strategy", lang.t("llm.strategy"), None),
                Col("targets", lang.t("llm.targets"), Some("targets")),
                Col("description", lang.t("catalog.description"), None),
            ],
            actions: None,
        }))
    }
}

/// `/app/integrations`.
pub fn integrations(lang: Lang, role: Role) -> Markup {
    let admin = role == Role::Admin;
    html! {
        h1 { (lang.t("integrations.title")) }
        (table(lang, &Table {
            id: "channels-table", source: "integrations", items: None,
            label: lang.t("integrations.channels"), empty: "",
            cols: &[
                Col("channel", lang.t("integrations.channel"), None),
                Col("status", lang.t("fleet.state"), Some("state")),
                Col("reason", lang.t("integrations.detail"), None),
                Col("last_success.at", lang.t("integrations.last_success"), Some("date")),
                Col("last_failure.at", lang.t("integrations.last_failure"), Some("date")),
                Col("in_flight", lang.t("llm.in_flight"), Some("number")),
            ],
            actions: None,
        }))
        @if admin {
            h2 { (lang.t("webhooks.title")) }
            (table(lang, &Table {
                id: "webhooks-table", source: "webhooks", items: None,
                label: lang.t("webhooks.title"), empty: lang.t("webhooks.none"),
                cols: &[
                    Col("url", "URL", None),
                    Col("events", lang.t("webhooks.events"), None),
                    Col("active", lang.t("catalog.active"), None),
                    Col("delivered", lang.t("webhooks.delivered"), Some("number")),
                    Col("disabled_reason", lang.t("webhooks.disabled"), None),
                ],
                actions: Some(serde_json::json!([
                    {"label": lang.t("webhooks.ping"), "method": "POST", "path": "webhooks/{id}/ping", "done": lang.t("webhooks.pinged")},
                    {"label": lang.t("manage.remove"), "method": "DELETE", "path": "webhooks/{id}", "confirm": lang.t("manage.confirm")}
                ])),
            }))
            h3 { (lang.t("webhooks.new")) }
            form.api.filters data-method="POST" data-path="webhooks" data-then="show" data-show="secret"
                data-target="webhook-secret" data-done=(lang.t("webhooks.created")) {
                (field("w-url", "URL", html! { input #w-url name="url" type="url" required placeholder="https://n8n.example.com/webhook/axon"; }, None))
                (field("w-events", lang.t("webhooks.events"), html! {
                    input #w-events name="events" data-list required value="order.state_changed" aria-describedby="w-events-hint";
                }, Some(lang.t("webhooks.events.hint"))))
                button.button.primary type="submit" { (lang.t("webhooks.create")) }
                span.status role="status" {}
            }
            (reveal(lang, "webhook-secret", lang.t("webhooks.secret")))
            h2 { (lang.t("webhooks.deliveries")) }
            (table(lang, &Table {
                id: "deliveries-table", source: "outbox?limit=50", items: None,
                label: lang.t("webhooks.deliveries"), empty: lang.t("webhooks.deliveries.none"),
                cols: &[
                    Col("event", lang.t("webhooks.event"), None),
                    Col("state", lang.t("fleet.state"), Some("state")),
                    Col("attempt_count", lang.t("webhooks.attempts"), Some("number")),
                    Col("created_at", lang.t("audit.time"), Some("date")),
                    Col("delivered_at", lang.t("webhooks.delivered_at"), Some("date")),
                ],
                actions: Some(serde_json::json!([
                    {"label": lang.t("webhooks.retry"), "method": "POST", "path": "outbox/{id}/retry", "when": "state=failed"}
                ])),
            }))
        }
    }
}

/// `/app/access` (admins): users, tenants and API keys.
pub fn access(lang: Lang) -> Markup {
    let roles = ["admin", "operator", "viewer", "client"];
    html! {
        h1 { (lang.t("access.title")) }
        section aria-labelledby="users-h" {
            h2 #users-h { (lang.t("access.users")) }
            (table(lang, &Table {
                id: "users-table", source: "users", items: None,
                label: lang.t("access.users"), empty: "",
                cols: &[
                    Col("email", lang.t("app.login.email"), None),
                    Col("name", lang.t("access.name"), None),
                    Col("role", lang.t("access.role"), None),
                    Col("tenant_id", lang.t("llm.tenant"), None),
                    Col("disabled", lang.t("access.disabled"), None),
                ],
                actions: Some(serde_json::json!([
                    {"label": lang.t("access.disable"), "method": "POST", "path": "users/{id}/disable", "when": "!disabled"},
                    {"label": lang.t("access.enable"), "method": "POST", "path": "users/{id}/enable", "when": "disabled"},
                    {"label": lang.t("manage.remove"), "method": "DELETE", "path": "users/{id}", "confirm": lang.t("manage.confirm")}
                ])),
            }))
            h3 { (lang.t("access.new_user")) }
            form.api.filters data-method="POST" data-path="users" data-done=(lang.t("access.user_created")) {
                (field("u-email", lang.t("app.login.email"), html! { input #u-email name="email" type="email" required autocomplete="off"; }, None))
                (field("u-name", lang.t("access.name"), html! { input #u-name name="name" maxlength="200"; }, None))
                (field("u-password", lang.t("app.login.password"), html! {
                    input #u-password name="password" type="password" required minlength="12" autocomplete="new-password" aria-describedby="u-password-hint";
                }, Some(lang.t("access.password.hint"))))
                (field("u-role", lang.t("access.role"), html! {
                    select #u-role name="role" { @for r in roles { option value=(r) selected[r == "viewer"] { (r) } } }
                }, None))
                (field("u-tenant", lang.t("access.tenant_id"), html! { input #u-tenant name="tenant_id" aria-describedby="u-tenant-hint"; }, Some(lang.t("access.tenant.hint"))))
                button.button.primary type="submit" { (lang.t("access.create_user")) }
                span.status role="status" {}
            }
        }
        section aria-labelledby="tenants-h" {
            h2 #tenants-h { (lang.t("access.tenants")) }
            (table(lang, &Table {
                id: "tenants-table", source: "tenants", items: None,
                label: lang.t("access.tenants"), empty: lang.t("access.tenants.none"),
                cols: &[
                    Col("slug", "slug", None),
                    Col("name", lang.t("access.name"), None),
                    Col("id", "id", None),
                    Col("created_at", lang.t("access.created"), Some("date")),
                ],
                actions: Some(serde_json::json!([
                    {"label": lang.t("manage.remove"), "method": "DELETE", "path": "tenants/{id}", "confirm": lang.t("manage.confirm")}
                ])),
            }))
            h3 { (lang.t("access.new_tenant")) }
            form.api.filters data-method="POST" data-path="tenants" data-done=(lang.t("access.tenant_created")) {
                (field("t-slug", "slug", html! { input #t-slug name="slug" required pattern="[a-z0-9][a-z0-9\\-]{0,61}[a-z0-9]" aria-describedby="t-slug-hint"; }, Some(lang.t("access.slug.hint"))))
                (field("t-name", lang.t("access.name"), html! { input #t-name name="name" required maxlength="200"; }, None))
                button.button.primary type="submit" { (lang.t("access.create_tenant")) }
                span.status role="status" {}
            }
        }
        section aria-labelledby="keys-h" {
            h2 #keys-h { (lang.t("access.keys")) }
            (table(lang, &Table {
                id: "keys-table", source: "api-keys", items: None,
                label: lang.t("access.keys"), empty: lang.t("access.keys.none"),
                cols: &[
                    Col("name", lang.t("access.name"), None),
                    Col("prefix", lang.t("access.prefix"), None),
                    Col("role", lang.t("access.role"), None),
                    Col("scopes", lang.t("access.scopes"), None),
                    Col("last_used_at", lang.t("access.last_used"), Some("date")),
                    Col("expires_at", lang.t("access.expires"), Some("date")),
                    Col("revoked_at", lang.t("access.revoked"), Some("date")),
                ],
                actions: Some(serde_json::json!([
                    {"label": lang.t("access.revoke"), "method": "DELETE", "path": "api-keys/{id}", "when": "!revoked_at", "confirm": lang.t("manage.confirm")}
                ])),
            }))
            h3 { (lang.t("access.new_key")) }
            form.api.filters data-method="POST" data-path="api-keys" data-then="show" data-show="key"
                data-target="new-key" data-done=(lang.t("access.key_created")) {
                (field("k-name", lang.t("access.name"), html! { input #k-name name="name" required maxlength="100"; }, None))
                (field("k-role", lang.t("access.role"), html! {
                    select #k-role name="role" { @for r in roles { option value=(r) selected[r == "viewer"] { (r) } } }
                }, None))
                (field("k-scopes", lang.t("access.scopes"), html! {
                    input #k-scopes name="scopes" data-list required value="hosts:read" aria-describedby="k-scopes-hint";
                }, Some(lang.t("access.scopes.hint"))))
                (field("k-tenant", lang.t("access.tenant_id"), html! { input #k-tenant name="tenant_id"; }, None))
                (field("k-days", lang.t("access.days"), html! {
                    input #k-days name="expires_in_secs" type="number" min="1" max="730" value="90" data-scale="86400";
                }, None))
                button.button.primary type="submit" { (lang.t("access.create_key")) }
                span.status role="status" {}
            }
            (reveal(lang, "new-key", lang.t("access.the_key")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_carry_their_source_columns_and_actions() {
        let html = table(
            Lang::En,
            &Table {
                id: "t",
                source: "users",
                items: None,
                label: "Users",
                empty: "none",
                cols: &[Col("email", "Email", None), Col("created_at", "Created", Some("date"))],
                actions: Some(serde_json::json!([{"label": "x\"<", "method": "POST", "path": "users/{id}/x"}])),
            },
        )
        .into_string();
        assert!(html.contains(r#"data-source="users""#), "{html}");
        assert!(
            html.contains(r#"data-field="created_at" data-kind="date""#),
            "{html}"
        );
        // The actions' JSON is an attribute, escaped.
        assert!(html.contains("&quot;x\\&quot;&lt;&quot;"), "{html}");
        assert!(!html.contains("style="));
    }
}
