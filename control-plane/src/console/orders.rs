//! The agency console's orders (staff): a list with filters, and an order's page with its
//! plan, artifacts checklist, QA, state timeline, deploy history per channel with platform
//! results, and the deploy buttons an admin may use now — shown only when the order is `listo`
//! with QA `ok` and the channel ships its product; the API's rules still decide.

use maud::{Markup, html};

use super::i18n::Lang;
use super::portal::date;
use crate::agency::builder;
use crate::agency::deploy::Channel;
use crate::agency::orders::{Action, Estado, Order, QaStatus, TRANSITIONS};
use crate::model::Role;

/// The list's filters, from the query string.
#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
pub struct OrdersQuery {
    /// `es` (the default) or `en`.
    #[serde(default)]
    pub lang: Option<String>,
    /// Only orders in this estado (`nuevo`, `en_produccion`, `en_qa`, `listo`, `entregado`,
    /// `cancelado`).
    #[serde(default)]
    pub estado: Option<String>,
    /// Words in the title or brief.
    #[serde(default)]
    pub q: Option<String>,
}

pub fn estado_of(text: &str) -> Option<Estado> {
    Estado::ALL.into_iter().find(|e| e.as_str() == text)
}

fn qa_words(lang: Lang, qa: QaStatus) -> &'static str {
    lang.t(match qa {
        QaStatus::Pendiente => "orders.qa.pendiente",
        QaStatus::Ok => "orders.qa.ok",
        QaStatus::Rechazado => "orders.qa.rechazado",
    })
}

/// The list page's body.
pub fn list(lang: Lang, query: &OrdersQuery, orders: &[Order]) -> Markup {
    let chosen = query.estado.as_deref().and_then(estado_of);
    html! {
        h1 { (lang.t("orders.title")) }
        form.filters method="get" action="/app/orders" role="search" {
            input type="hidden" name="lang" value=(lang.code());
            label for="estado" { (lang.t("orders.filter.estado")) }
            select #estado name="estado" {
                option value="" { (lang.t("orders.filter.any")) }
                @for e in Estado::ALL {
                    option value=(e.as_str()) selected[chosen == Some(e)] { (e.as_str()) }
                }
            }
            label for="q" { (lang.t("orders.filter.text")) }
            input #q type="search" name="q" value=(query.q.clone().unwrap_or_default());
            button.button.quiet type="submit" { (lang.t("orders.filter.apply")) }
        }
        @if orders.is_empty() {
            p.empty { (lang.t("orders.empty")) }
        } @else {
            div.table-scroll tabindex="0" role="region" aria-label=(lang.t("orders.title")) {
                table.fleet {
                    thead {
                        tr {
                            th scope="col" { (lang.t("orders.col.title")) }
                            th scope="col" { (lang.t("orders.col.product")) }
                            th scope="col" { "estado" }
                            th scope="col" { "QA" }
                            th scope="col" { (lang.t("orders.col.updated")) }
                        }
                    }
                    tbody {
                        @for o in orders {
                            tr {
                                th scope="row" {
                                    a href={ "/app/orders/" (o.id) "?lang=" (lang.code()) } { (o.title) }
                                }
                                td { (o.product_type.as_str()) }
                                td { (o.estado.as_str()) }
                                td { (qa_words(lang, o.qa_status)) }
                                td { (date(lang, o.updated_at)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The state actions `role` may take on the order now (the transition table decides; the API
/// checks again).
pub fn actions_for(order: &Order, role: Role) -> Vec<Action> {
    if role == Role::Client {
        return Vec::new();
    }
    let mut out: Vec<Action> = TRANSITIONS
        .iter()
        .filter(|t| t.roles.contains(&role) && t.from.contains(&order.estado))
        .map(|t| t.action)
        .collect();
    out.dedup();
    out
}

fn action_words(lang: Lang, action: Action) -> &'static str {
    lang.t(match action {
        Action::ApprovePlan => "orders.action.approve_plan",
        Action::SubmitQa => "orders.action.submit_qa",
        Action::QaPass => "orders.action.qa_pass",
        Action::QaReject => "orders.action.qa_reject",
        Action::Deliver => "orders.action.deliver",
        Action::Cancel => "orders.action.cancel",
        Action::Reopen => "orders.action.reopen",
    })
}

/// The channels an admin may deploy this order to now.
pub fn deployable(order: &Order, role: Role) -> Vec<Channel> {
    if role != Role::Admin || order.estado != Estado::Listo || order.qa_status != QaStatus::Ok {
        return Vec::new();
    }
    Channel::ALL
        .into_iter()
        .filter(|c| c.serves().contains(&order.product_type))
        .collect()
}

/// The order page's body.
pub fn detail(lang: Lang, order: &Order, role: Role, csrf: &str, notice: Option<&str>) -> Markup {
    let checklist = builder::render_order(order)
        .map(|files| builder::checklist(order.product_type, &files))
        .unwrap_or_default();
    let plan = order.production_plan.approved();
    html! {
        p { a href={ "/app/orders?lang=" (lang.code()) } { "← " (lang.t("orders.title")) } }
        h1 { (order.title) }
        @if let Some(n) = notice {
            p.notice role="status" { (n) }
        }
        dl.facts {
            dt { (lang.t("orders.col.product")) } dd { (order.product_type.as_str()) }
            dt { "estado" } dd #estado-value { (order.estado.as_str()) }
            dt { "QA" } dd { (qa_words(lang, order.qa_status)) }
        }
        @let channels = deployable(order, role);
        @if !channels.is_empty() {
            section aria-labelledby="deploy-title" {
                h2 #deploy-title { (lang.t("orders.deploy")) }
                div.actions {
                    @for c in &channels {
                        form.inline method="post" action={ "/app/orders/" (order.id) "/deploy/" (c.as_str()) } {
                            input type="hidden" name="csrf" value=(csrf);
                            input type="hidden" name="lang" value=(lang.code());
                            button.button.primary type="submit" data-channel=(c.as_str()) {
                                (lang.t("orders.deploy.to")) " " (c.as_str())
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="history-title" {
            h2 #history-title { (lang.t("orders.history")) }
            @if order.deploy_history.is_empty() {
                p.empty { (lang.t("orders.history.empty")) }
            } @else {
                ul.plain.deploys {
                    @for d in order.deploy_history.iter().rev() {
                        li data-status=(d.status) {
                            strong { (d.channel) } " · " (d.status) " · " (date(lang, d.updated_at))
                            @if let Some(e) = &d.error {
                                br; span.none { (e) }
                            }
                            @if let Some(platforms) = d.details.get("platforms").and_then(|p| p.as_array()) {
                                ul.platforms {
                                    @for p in platforms {
                                        li {
                                            (p["platform"].as_str().unwrap_or("?")) ": " (p["status"].as_str().unwrap_or("?"))
                                            @if let Some(u) = p["url"].as_str() {
                                                " · " a href=(u) rel="noopener noreferrer" { (lang.t("orders.history.open")) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @let actions = actions_for(order, role);
        @if !actions.is_empty() {
            section aria-labelledby="actions-title" {
                h2 #actions-title { (lang.t("orders.actions")) }
                div.actions {
                    @for a in &actions {
                        form.api.inline data-method="POST" data-path={ "orders/" (order.id) "/actions/" (a.as_str()) }
                            data-done=(lang.t("orders.actions.done")) {
                            @if *a == Action::QaReject {
                                label for="reject-reason" { (lang.t("orders.actions.reason")) }
                                input #reject-reason name="reason" required maxlength="500";
                            }
                            button.button type="submit" data-action=(a.as_str()) { (action_words(lang, *a)) }
                            span.status role="status" {}
                        }
                    }
                }
            }
        }
        section aria-labelledby="plan-title" {
            div.section-head {
                h2 #plan-title { (lang.t("orders.plan")) }
                @if matches!(role, Role::Admin | Role::Operator) && matches!(order.estado, Estado::Nuevo | Estado::EnProduccion) {
                    form.api.inline data-method="POST" data-path={ "orders/" (order.id) "/plan" }
                        data-done=(lang.t("orders.plan.generated")) {
                        button.button.quiet type="submit" #generate-plan { (lang.t("orders.plan.generate")) }
                        span.status role="status" {}
                    }
                }
            }
            @match plan {
                Some(p) => {
                    p { (p.plan.summary) }
                    ol { @for name in p.plan.phase_names() { li { (name) } } }
                }
                None => p.empty { (lang.t("orders.plan.none")) },
            }
            @if !order.production_plan.versions.is_empty() {
                h3 { (lang.t("orders.plan.versions")) }
                ul.plain.versions {
                    @for v in order.production_plan.versions.iter().rev() {
                        li data-version=(v.version) {
                            strong { "v" (v.version) }
                            " · " (v.source)
                            @if let Some(m) = &v.model { " · " (m) }
                            " · " (date(lang, v.created_at))
                            " · " (format!("{:.0} h", v.plan.estimate.total_hours))
                            " · " (v.plan.estimate.delivery_days) " " (lang.t("orders.plan.days"))
                            @if order.production_plan.approved_version == Some(v.version) {
                                " " span.badge.ok { (lang.t("orders.plan.approved")) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="blueprint-title" {
            h2 #blueprint-title { (lang.t("orders.blueprint")) }
            details {
                summary { (lang.t("orders.blueprint.show")) }
                pre.log tabindex="0" { (serde_json::to_string_pretty(&order.agent_blueprint).unwrap_or_default()) }
            }
        }
        section aria-labelledby="artifacts-title" {
            h2 #artifacts-title { (lang.t("orders.artifacts")) }
            ul.plain {
                @for item in &checklist {
                    li {
                        @if item.present { span.badge.ok { "✓" } } @else { span.badge.bad { "✗" } }
                        " " (item.name)
                    }
                }
            }
        }
        section aria-labelledby="timeline-title" {
            h2 #timeline-title { (lang.t("orders.timeline")) }
            ol.timeline {
                @for s in &order.state_history {
                    li {
                        (s.to.as_str()) " · " (date(lang, s.at))
                        @if let Some(r) = &s.reason { " — " (r) }
                    }
                }
            }
        }
    }
}
