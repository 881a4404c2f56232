//! The console's fleet overview (`/app/fleet`, staff): every host with its online state and,
//! at a glance, CPU, memory and GPUs from its latest sample, and its open GPU alerts. Meters
//! are SVG drawn here with attributes only, so the strict policy holds.

use std::collections::HashMap;

use maud::{Markup, html};

use super::i18n::Lang;
use crate::AppState;
use crate::store::StoreError;

/// One host as the page shows it.
#[derive(Debug, Clone)]
pub struct HostRow {
    pub id: String,
    pub hostname: String,
    pub online: bool,
    pub cpu_pct: Option<f32>,
    pub mem_pct: Option<f32>,
    pub gpus: usize,
    /// The busiest GPU's utilisation and the hottest one's temperature.
    pub gpu_util_max: Option<f32>,
    pub gpu_temp_max: Option<f32>,
    pub open_alerts: usize,
}

/// The rows a staff member sees, online hosts first, then by name.
pub fn rows(state: &AppState) -> Result<Vec<HostRow>, StoreError> {
    let mut open: HashMap<String, usize> = HashMap::new();
    for alert in state.store.gpu_alerts.values()? {
        if alert.acked_at.is_none() {
            *open.entry(alert.host_id).or_default() += 1;
        }
    }
    let mut rows: Vec<HostRow> = state
        .store
        .hosts
        .values()?
        .into_iter()
        .filter(|h| h.revoked_at.is_none())
        .map(|h| {
            let online = state.hub.is_online(&h.id);
            let sample = online.then(|| state.telemetry.latest(&h.id)).flatten();
            let max = |f: fn(&axon_shared::GpuSample) -> Option<f32>| {
                sample
                    .as_ref()
                    .and_then(|s| s.gpus.iter().filter_map(f).reduce(f32::max))
            };
            HostRow {
                cpu_pct: sample.as_ref().map(|s| s.cpu.total_pct),
                mem_pct: sample.as_ref().and_then(|s| {
                    (s.memory.total > 0)
                        .then(|| (s.memory.used as f64 / s.memory.total as f64 * 100.0) as f32)
                }),
                gpus: sample.as_ref().map_or(0, |s| s.gpus.len()),
                gpu_util_max: max(|g| g.util_pct),
                gpu_temp_max: max(|g| g.temperature_c),
                open_alerts: open.get(&h.id).copied().unwrap_or(0),
                online,
                hostname: h.hostname,
                id: h.id,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.online
            .cmp(&a.online)
            .then_with(|| a.hostname.cmp(&b.hostname))
    });
    Ok(rows)
}

/// A horizontal meter with its figure, or a dash when there is none.
fn meter(lang: Lang, label: &str, pct: Option<f32>) -> Markup {
    match pct {
        None => html! { span.none aria-label=(lang.t("fleet.none")) { "—" } },
        Some(p) => {
            let p = p.clamp(0.0, 100.0);
            let level = if p >= 90.0 {
                "high"
            } else if p >= 70.0 {
                "mid"
            } else {
                "low"
            };
            html! {
                span.meter {
                    svg width="64" height="8" viewBox="0 0 100 8" aria-hidden="true" focusable="false" {
                        rect.track width="100" height="8" rx="4" {}
                        rect class={ "fill " (level) } width=(format!("{p:.0}")) height="8" rx="4" {}
                    }
                    span { (format!("{p:.0} %")) }
                    span.sr { " " (label) }
                }
            }
        }
    }
}

/// Rows per page by default, and at most.
pub const PER_PAGE: usize = 200;
pub const MAX_PER_PAGE: usize = 1000;

/// What the fleet page shows: a name filter, online or offline only, and a page.
#[derive(Debug, Clone, Default, serde::Deserialize, schemars::JsonSchema)]
pub struct FleetQuery {
    /// `es` (the default) or `en`.
    #[serde(default)]
    pub lang: Option<String>,
    /// Part of a host's name.
    #[serde(default)]
    pub q: Option<String>,
    /// `online` or `offline`.
    #[serde(default)]
    pub state: Option<String>,
    /// 1 and up.
    #[serde(default)]
    pub page: Option<usize>,
    /// Rows per page (default 200, at most 1,000).
    #[serde(default)]
    pub per_page: Option<usize>,
}

impl FleetQuery {
    /// Whether the filters keep `row` (`text`: the name filter, lower-cased once per page).
    fn keeps(&self, text: &str, row: &HostRow) -> bool {
        (text.is_empty() || row.hostname.to_lowercase().contains(text))
            && match self.state.as_deref() {
                Some("online") => row.online,
                Some("offline") => !row.online,
                _ => true,
            }
    }

    /// The link to page `page` with the same filters.
    fn link(&self, lang: Lang, page: usize) -> String {
        let mut url = format!("/app/fleet?lang={}&page={page}", lang.code());
        for (k, v) in [("q", &self.q), ("state", &self.state)] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                url.push_str(&format!("&{k}={}", super::encode(v)));
            }
        }
        if let Some(n) = self.per_page {
            url.push_str(&format!("&per_page={n}"));
        }
        url
    }
}

/// The fleet table: the whole fleet's figures, then the page of rows the query keeps.
pub fn table(lang: Lang, all: &[HostRow], query: &FleetQuery) -> Markup {
    let online = all.iter().filter(|r| r.online).count();
    let alerts: usize = all.iter().map(|r| r.open_alerts).sum();
    let text = query
        .q
        .as_deref()
        .map(str::trim)
        .unwrap_or("")
        .to_lowercase();
    let kept: Vec<&HostRow> = all.iter().filter(|r| query.keeps(&text, r)).collect();
    let per_page = query.per_page.unwrap_or(PER_PAGE).clamp(1, MAX_PER_PAGE);
    let pages = kept.len().div_ceil(per_page).max(1);
    let page = query.page.unwrap_or(1).clamp(1, pages);
    let rows = &kept[(page - 1) * per_page..(page * per_page).min(kept.len())];
    let state = query.state.as_deref().unwrap_or("");
    html! {
        p.summary #fleet-summary {
            (online) " / " (all.len()) " " (lang.t("fleet.online"))
            @if alerts > 0 {
                " · " span.alert { (alerts) " " (lang.t("fleet.alerts")) }
            }
        }
        @if !all.is_empty() {
            form.filters method="get" action="/app/fleet" role="search" {
                input type="hidden" name="lang" value=(lang.code());
                div.field {
                    label for="fleet-q" { (lang.t("fleet.filter.name")) }
                    input #fleet-q type="search" name="q" value=(query.q.clone().unwrap_or_default());
                }
                div.field {
                    label for="fleet-state" { (lang.t("fleet.state")) }
                    select #fleet-state name="state" {
                        option value="" { (lang.t("orders.filter.any")) }
                        option value="online" selected[state == "online"] { (lang.t("fleet.up")) }
                        option value="offline" selected[state == "offline"] { (lang.t("fleet.down")) }
                    }
                }
                button.button.quiet type="submit" { (lang.t("orders.filter.apply")) }
            }
        }
        @if all.is_empty() {
            p.empty { (lang.t("fleet.empty")) }
        } @else if rows.is_empty() {
            p.empty { (lang.t("fleet.none_match")) }
        } @else {
            // Scrolls sideways on a narrow screen: focusable, so a keyboard can scroll it.
            div.table-scroll tabindex="0" role="region" aria-label=(lang.t("fleet.caption")) {
                table.fleet {
                    caption.sr { (lang.t("fleet.caption")) }
                    thead {
                        tr {
                            th scope="col" { (lang.t("fleet.host")) }
                            th scope="col" { (lang.t("fleet.state")) }
                            th scope="col" { "CPU" }
                            th scope="col" { (lang.t("fleet.memory")) }
                            th scope="col" { "GPU" }
                            th scope="col" { (lang.t("fleet.alerts")) }
                        }
                    }
                    tbody {
                        @for r in rows {
                            tr data-host=(r.id) {
                                th scope="row" { a href={ "/app/hosts/" (r.id) "?lang=" (lang.code()) } { (r.hostname) } }
                                td {
                                    @if r.online {
                                        span.badge.ok { (lang.t("fleet.up")) }
                                    } @else {
                                        span.badge.off { (lang.t("fleet.down")) }
                                    }
                                }
                                td { (meter(lang, "CPU", r.cpu_pct)) }
                                td { (meter(lang, lang.t("fleet.memory"), r.mem_pct)) }
                                td {
                                    @if r.gpus == 0 {
                                        span.none { "—" }
                                    } @else {
                                        (r.gpus) " × "
                                        (meter(lang, "GPU", r.gpu_util_max))
                                        @if let Some(t) = r.gpu_temp_max {
                                            " " span.temp { (format!("{t:.0} °C")) }
                                        }
                                    }
                                }
                                td {
                                    @if r.open_alerts > 0 {
                                        span.badge.bad { (r.open_alerts) }
                                    } @else {
                                        span.none { "0" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if pages > 1 {
            nav.pager aria-label=(lang.t("fleet.pages")) {
                @if page > 1 {
                    a href=(query.link(lang, page - 1)) rel="prev" { "← " (lang.t("fleet.prev")) }
                }
                span { (lang.t("fleet.page")) " " (page) " / " (pages) }
                @if page < pages {
                    a href=(query.link(lang, page + 1)) rel="next" { (lang.t("fleet.next")) " →" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize, online: bool) -> HostRow {
        HostRow {
            id: format!("h{i}"),
            hostname: format!("gpu-{i:04}<b>"),
            online,
            cpu_pct: online.then_some(42.4),
            mem_pct: online.then_some(91.0),
            gpus: 2,
            gpu_util_max: Some(97.0),
            gpu_temp_max: Some(81.2),
            open_alerts: i % 3,
        }
    }

    #[test]
    fn the_table_shows_each_host_and_escapes_names() {
        let rows: Vec<HostRow> = (0..5).map(|i| row(i, i % 2 == 0)).collect();
        let html = table(Lang::En, &rows, &FleetQuery::default()).into_string();
        assert_eq!(html.matches("<tr data-host=").count(), 5);
        assert!(html.contains("3 / 5 online"), "{html}");
        assert!(html.contains("&lt;b&gt;") && !html.contains("<b>"));
        assert!(html.contains("42 %") && html.contains("81 °C"));
        assert!(html.contains("fill high"), "a 91 % meter is high");
        assert!(!html.contains("style="));
        let empty = table(Lang::Es, &[], &FleetQuery::default()).into_string();
        assert!(empty.contains("class=\"empty\""));
    }

    #[test]
    fn pages_and_filters_keep_the_whole_fleets_figures() {
        let rows: Vec<HostRow> = (0..450).map(|i| row(i, i % 3 != 0)).collect();
        let first = table(Lang::En, &rows, &FleetQuery::default()).into_string();
        assert_eq!(first.matches("<tr data-host=").count(), PER_PAGE);
        assert!(first.contains("300 / 450 online"), "the summary counts all");
        assert!(first.contains("Page 1 / 3") && first.contains("rel=\"next\""));
        let last = FleetQuery {
            page: Some(99),
            ..Default::default()
        };
        let html = table(Lang::En, &rows, &last).into_string();
        assert_eq!(
            html.matches("<tr data-host=").count(),
            50,
            "past the end is the last page"
        );
        let offline = FleetQuery {
            state: Some("offline".into()),
            q: Some("GPU-00".into()),
            ..Default::default()
        };
        let html = table(Lang::En, &rows, &offline).into_string();
        // gpu-0000 .. gpu-0099 whose index is a multiple of 3: 34 hosts.
        assert_eq!(html.matches("<tr data-host=").count(), 34);
        let none = FleetQuery {
            q: Some("nothing like it".into()),
            ..Default::default()
        };
        assert!(
            table(Lang::En, &rows, &none)
                .into_string()
                .contains("class=\"empty\"")
        );
    }
}
