//! Admin pages of the staff console: enrollment (`/app/enroll`: a token and the one line
//! that enrolls a host with it) and the audit trail with filters (`/app/audit`).

use maud::{Markup, html};
use serde::Deserialize;

use super::i18n::Lang;
use crate::AppState;
use crate::error::ApiError;

/// The enrollment page; the script asks the API for the token.
pub fn enroll(lang: Lang) -> Markup {
    html! {
        h1 { (lang.t("enroll.title")) }
        p { (lang.t("enroll.intro")) }
        form.stack #enroll-form {
            label for="ttl" { (lang.t("enroll.ttl")) }
            input #ttl type="number" name="ttl" min="1" max="168" value="1" required
                inputmode="numeric" aria-describedby="ttl-hint";
            p.hint #ttl-hint { (lang.t("enroll.ttl.hint")) }
            label for="label" { (lang.t("enroll.label")) }
            input #label type="text" name="label" maxlength="63" autocomplete="off"
                aria-describedby="label-hint";
            p.hint #label-hint { (lang.t("enroll.label.hint")) }
            div.row {
                button.button.primary #enroll-create type="submit" { (lang.t("enroll.create")) }
                span.status #enroll-status role="status" {}
            }
        }
        div #enroll-result hidden {
            h2 { (lang.t("enroll.run")) }
            p { (lang.t("enroll.run.hint")) }
            pre.command #enroll-command tabindex="0" {}
            button.button #copy type="button" { (lang.t("enroll.copy")) }
        }
    }
}

/// Filters of the audit page (`GET /app/audit?...`).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct AuditQuery {
    /// `es` (the default) or `en`.
    #[serde(default)]
    pub lang: Option<String>,
    /// An action, or a prefix ending in `.` (`auth.`).
    #[serde(default)]
    pub action: Option<String>,
    /// `ok`, `denied`, `throttled` or `error`.
    #[serde(default)]
    pub outcome: Option<String>,
    /// A user or API key id.
    #[serde(default)]
    pub actor: Option<String>,
    /// Records reported by this host.
    #[serde(default)]
    pub host: Option<String>,
    /// Records older than this sequence number (the next page).
    #[serde(default)]
    pub before: Option<u64>,
}

const PAGE: usize = 100;

fn filled(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The audit page: filters, newest records first, a link to older ones.
pub fn audit(state: &AppState, lang: Lang, q: &AuditQuery) -> Result<Markup, ApiError> {
    let filter = crate::identity::audit::Filter {
        action: filled(&q.action),
        outcome: filled(&q.outcome),
        actor: filled(&q.actor),
        host: filled(&q.host),
        before: q.before,
        limit: Some(PAGE),
        ..Default::default()
    };
    let records = state.audit.query(&filter)?;
    let older = (records.len() == PAGE)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let outcomes = ["", "ok", "denied", "throttled", "error"];
    let next = older.map(|seq| {
        let mut url = format!("/app/audit?lang={}", lang.code());
        for (k, v) in [
            ("action", &q.action),
            ("outcome", &q.outcome),
            ("actor", &q.actor),
            ("host", &q.host),
        ] {
            if let Some(v) = filled(v) {
                url.push_str(&format!("&{k}={}", super::encode(&v)));
            }
        }
        url.push_str(&format!("&before={seq}"));
        url
    });
    Ok(html! {
        h1 { (lang.t("audit.title")) }
        form.filters method="get" action="/app/audit" {
            input type="hidden" name="lang" value=(lang.code());
            div.field {
                label for="f-action" { (lang.t("audit.action")) }
                input #f-action name="action" value=(value(&q.action)) placeholder="auth." aria-describedby="f-action-hint";
                p.hint #f-action-hint { (lang.t("audit.action.hint")) }
            }
            div.field {
                label for="f-outcome" { (lang.t("audit.outcome")) }
                select #f-outcome name="outcome" {
                    @for o in outcomes {
                        option value=(o) selected[q.outcome.as_deref().unwrap_or("") == o] {
                            @if o.is_empty() { (lang.t("audit.any")) } @else { (o) }
                        }
                    }
                }
            }
            div.field {
                label for="f-actor" { (lang.t("audit.actor")) }
                input #f-actor name="actor" value=(value(&q.actor));
            }
            div.field {
                label for="f-host" { (lang.t("audit.host")) }
                input #f-host name="host" value=(value(&q.host));
            }
            button.button.primary type="submit" { (lang.t("audit.filter")) }
        }
        @if records.is_empty() {
            p.empty { (lang.t("audit.none")) }
        } @else {
            div.table-scroll tabindex="0" role="region" aria-label=(lang.t("audit.title")) {
                table.audit {
                    thead {
                        tr {
                            th scope="col" { "#" }
                            th scope="col" { (lang.t("audit.time")) }
                            th scope="col" { (lang.t("audit.action")) }
                            th scope="col" { (lang.t("audit.outcome")) }
                            th scope="col" { (lang.t("audit.actor")) }
                            th scope="col" { (lang.t("audit.target")) }
                            th scope="col" { (lang.t("audit.host")) }
                        }
                    }
                    tbody {
                        @for r in &records {
                            tr data-seq=(r.seq) {
                                td { (r.seq) }
                                td { time datetime=(stamp(r.time)) { (stamp(r.time)) } }
                                td { code { (r.action) } }
                                td {
                                    span class={ "badge " (if r.outcome == "ok" { "ok" } else { "bad" }) } { (r.outcome) }
                                }
                                td { (r.actor) @if let Some(role) = r.actor_role { " · " (role.as_str()) } }
                                td { (r.target) @if let Some(why) = &r.reason { br; small { (why) } } }
                                td { (r.host_id.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p { a href=(next) rel="next" { (lang.t("audit.older")) } }
        }
    })
}

fn stamp(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
