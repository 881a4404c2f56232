//! A host in the staff console: `/app/hosts/{id}` (live charts with history ranges, facts,
//! capabilities, model servers, GPU alerts), `/services`, `/files` and `/commands`. The server
//! draws each page's frame; `console.js` fills it through the API (`/app/api/`), so what
//! a page may do is what the API lets its user do.

use maud::{Markup, html};

use super::i18n::Lang;
use crate::AppState;
use crate::error::ApiError;
use crate::model::{Host, Role};

/// The tabs of a host's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Services,
    Files,
    Commands,
}

impl Tab {
    pub fn page(self) -> &'static str {
        match self {
            Self::Overview => "host",
            Self::Services => "services",
            Self::Files => "files",
            Self::Commands => "commands",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Overview => "",
            Self::Services => "/services",
            Self::Files => "/files",
            Self::Commands => "/commands",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Overview => "host.tab.overview",
            Self::Services => "host.tab.services",
            Self::Files => "host.tab.files",
            Self::Commands => "host.tab.commands",
        }
    }
}

/// The host, if it exists and is not revoked.
pub fn find(state: &AppState, id: &str) -> Result<Host, ApiError> {
    state
        .store
        .hosts
        .get(id)?
        .filter(|h| h.revoked_at.is_none())
        .ok_or_else(|| ApiError::not_found("no such host"))
}

/// The heading and tabs every host page shares.
pub fn header(state: &AppState, lang: Lang, host: &Host, tab: Tab) -> Markup {
    let online = state.hub.is_online(&host.id);
    html! {
        p.crumb { a href={ "/app/fleet?lang=" (lang.code()) } { (lang.t("fleet.title")) } " /" }
        h1 {
            (host.hostname) " "
            @if online {
                span.badge.ok #host-state { (lang.t("fleet.up")) }
            } @else {
                span.badge.off #host-state { (lang.t("fleet.down")) }
            }
        }
        nav.tabs aria-label=(lang.t("host.tabs")) {
            @for t in [Tab::Overview, Tab::Services, Tab::Files, Tab::Commands] {
                a href={ "/app/hosts/" (host.id) (t.path()) "?lang=" (lang.code()) }
                    aria-current=[(t == tab).then_some("page")] { (lang.t(t.label())) }
            }
        }
    }
}

/// One chart: a figure the script draws into (`data-chart` names its series).
fn chart(
    lang: Lang,
    key: &str,
    name: &str,
    format: &str,
    max: Option<f64>,
    legend: &[&str],
) -> Markup {
    let series = legend.len().max(1);
    html! {
        figure.chart data-chart=(key) data-format=(format) data-max=[max.map(|m| format!("{m}"))] {
            figcaption {
                span.name { (name) }
                span.value { "—" }
            }
            svg viewBox="0 0 600 120" preserveAspectRatio="none" role="img" aria-label=(name) {
                line.grid x1="0" y1="30" x2="600" y2="30" {}
                line.grid x1="0" y1="60" x2="600" y2="60" {}
                line.grid x1="0" y1="90" x2="600" y2="90" {}
                @for i in 0..series {
                    polyline class={ "s" (i) } points="" {}
                }
            }
            p.axis {
                span { (lang.t("host.chart.top")) " " span.scale { "—" } }
                @if legend.len() > 1 {
                    span.legend {
                        @for (i, l) in legend.iter().enumerate() {
                            span class={ "key s" (i) } { (l) }
                        }
                    }
                }
            }
        }
    }
}

/// The overview: charts, facts, capabilities, model servers and open GPU alerts.
pub fn overview(state: &AppState, lang: Lang, host: &Host) -> Result<Markup, ApiError> {
    let latest = state.telemetry.latest(&host.id);
    let alerts: Vec<_> = state
        .store
        .gpu_alerts
        .values()?
        .into_iter()
        .filter(|a| a.host_id == host.id && a.acked_at.is_none())
        .collect();
    let caps = &host.capabilities;
    let capabilities = [
        ("systemd", caps.systemd),
        ("Docker", caps.docker),
        ("NVML", caps.nvml),
        ("nvidia-smi", caps.nvidia_smi),
        ("Ollama", caps.ollama),
        ("Stable Diffusion", caps.sdxl),
    ];
    let gpus = latest.as_ref().map(|s| s.gpus.clone()).unwrap_or_default();
    Ok(html! {
        section aria-labelledby="charts-h" {
            div.section-head {
                h2 #charts-h { (lang.t("host.charts")) }
                div.ranges role="group" aria-label=(lang.t("host.range")) {
                    @for (range, key) in [("15m", "host.range.live"), ("1h", "host.range.1h"), ("24h", "host.range.24h"), ("7d", "host.range.7d")] {
                        button.button.quiet type="button" data-range=(range)
                            aria-pressed=(if range == "15m" { "true" } else { "false" }) { (lang.t(key)) }
                    }
                }
            }
            p.status #charts-status role="status" {}
            div.charts {
                (chart(lang, "cpu", "CPU", "pct", Some(100.0), &[]))
                (chart(lang, "mem", lang.t("fleet.memory"), "pct", Some(100.0), &[]))
                (chart(lang, "net", lang.t("host.chart.net"), "rate", None, &[lang.t("host.chart.rx"), lang.t("host.chart.tx")]))
                (chart(lang, "disk", lang.t("host.chart.disk"), "rate", None, &[lang.t("host.chart.read"), lang.t("host.chart.write")]))
                @if !gpus.is_empty() {
                    (chart(lang, "gpu", "GPU", "pct", Some(100.0), &[lang.t("host.chart.util"), lang.t("host.chart.vram")]))
                }
            }
            @for g in &gpus {
                h3 { "GPU " (g.index) " · " (g.name) }
                div.charts.gpu {
                    (chart(lang, &format!("gpu{}-util", g.index), &format!("GPU {} {}", g.index, lang.t("host.chart.util")), "pct", Some(100.0), &[]))
                    (chart(lang, &format!("gpu{}-mem", g.index), &format!("GPU {} {}", g.index, lang.t("host.chart.vram")), "bytes", g.mem_total_bytes.map(|b| b as f64), &[]))
                    (chart(lang, &format!("gpu{}-temp", g.index), &format!("GPU {} {}", g.index, lang.t("host.chart.temp")), "celsius", Some(100.0), &[]))
                    (chart(lang, &format!("gpu{}-power", g.index), &format!("GPU {} {}", g.index, lang.t("host.chart.power")), "watts", g.power_limit_w.map(f64::from), &[]))
                }
            }
        }
        @if !alerts.is_empty() {
            section aria-labelledby="alerts-h" {
                h2 #alerts-h { (lang.t("host.alerts")) }
                ul.alerts {
                    @for a in &alerts {
                        li { span.badge.bad { (a.event.kind) } " " (a.event.detail) }
                    }
                }
            }
        }
        div.columns {
            section aria-labelledby="facts-h" {
                h2 #facts-h { (lang.t("host.facts")) }
                dl.facts {
                    @if let Some(f) = &host.facts {
                        dt { (lang.t("host.os")) } dd { (f.os) " " (f.os_version) }
                        dt { (lang.t("host.kernel")) } dd { (f.kernel) " · " (f.arch) }
                        dt { "CPU" } dd { (f.cpus) }
                        dt { (lang.t("fleet.memory")) } dd { (human_bytes(f.memory_bytes)) }
                    }
                    dt { (lang.t("host.agent")) } dd { (host.agent_version.as_deref().unwrap_or("—")) }
                    dt { (lang.t("host.address")) } dd { (host.remote_addr.as_deref().unwrap_or("—")) }
                    dt { (lang.t("host.cert")) } dd { time datetime=(rfc3339(host.cert_not_after)) { (rfc3339(host.cert_not_after)) } }
                    @for (k, v) in &host.labels {
                        dt { (k) } dd { (v) }
                    }
                }
            }
            section aria-labelledby="caps-h" {
                h2 #caps-h { (lang.t("host.capabilities")) }
                ul.caps {
                    @for (name, on) in capabilities {
                        li {
                            @if on {
                                span.badge.ok { (name) }
                            } @else {
                                span.badge.off { (name) " · " (lang.t("host.absent")) }
                            }
                        }
                    }
                }
                h2 { (lang.t("host.models")) }
                @match (&host.model_servers.ollama, &host.model_servers.sdxl) {
                    (None, None) => p.empty { (lang.t("host.models.none")) },
                    (ollama, sdxl) => {
                        @if let Some(o) = ollama {
                            h3 { "Ollama · " (o.address) }
                            ul {
                                @for m in &o.models {
                                    li {
                                        (m.name) " · " (human_bytes(m.size_bytes))
                                        @if o.loaded.iter().any(|l| l.name == m.name) {
                                            " " span.badge.ok { (lang.t("host.models.loaded")) }
                                        }
                                    }
                                }
                            }
                        }
                        @if let Some(sd) = sdxl {
                            h3 { "Stable Diffusion · " (sd.address) }
                        }
                    }
                }
            }
        }
    })
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Bytes in binary units, for facts the server writes (the script formats the live ones in
/// the browser's locale).
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Services and containers: a table the script fills, and a log panel.
pub fn services(lang: Lang, host: &Host) -> Markup {
    let default = if !host.capabilities.systemd && host.capabilities.docker {
        "docker"
    } else {
        "systemd"
    };
    html! {
        div.toolbar {
            label for="service-kind" { (lang.t("host.services.kind")) }
            select #service-kind {
                option value="systemd" selected[default == "systemd"] { "systemd" }
                option value="docker" selected[default == "docker"] { "Docker" }
            }
        }
        p.status #services-status role="status" {}
        div.table-scroll tabindex="0" role="region" aria-label=(lang.t("host.tab.services")) {
            table #services {
                thead {
                    tr {
                        th scope="col" { (lang.t("host.services.name")) }
                        th scope="col" { (lang.t("host.services.description")) }
                        th scope="col" { (lang.t("fleet.state")) }
                        th scope="col" { (lang.t("host.services.actions")) }
                    }
                }
                tbody {}
            }
        }
        section aria-labelledby="logs-title" {
            div.section-head {
                h2 #logs-title { (lang.t("host.logs")) }
                button.button #follow type="button" aria-pressed="false" disabled { (lang.t("js.follow")) }
            }
            dl.facts #service-details {}
            pre.log #logs tabindex="0" role="log" aria-labelledby="logs-title" { (lang.t("host.logs.pick")) }
        }
    }
}

/// Files inside the host's jail: a browser, an editor with conflict handling, upload.
pub fn files(lang: Lang, role: Role) -> Markup {
    let writer = matches!(role, Role::Admin | Role::Operator);
    html! {
        nav aria-label=(lang.t("host.files.where")) { ol.crumbs #crumbs {} }
        p.status #files-status role="status" {}
        @if writer {
            div.toolbar {
                label for="upload" { (lang.t("host.files.upload")) }
                input #upload type="file" disabled;
            }
        }
        div.table-scroll tabindex="0" role="region" aria-label=(lang.t("host.tab.files")) {
            table #entries {
                thead {
                    tr {
                        th scope="col" { (lang.t("host.files.name")) }
                        th scope="col" { (lang.t("host.files.size")) }
                        th scope="col" { (lang.t("host.files.modified")) }
                        th scope="col" { (lang.t("host.files.mode")) }
                        th scope="col" { span.sr { (lang.t("host.services.actions")) } }
                    }
                }
                tbody {}
            }
        }
        @if writer {
            form.stack.editor #editor hidden {
                h2 #editor-title {}
                p.warn #changed hidden { (lang.t("host.files.changed")) }
                label for="content" { (lang.t("host.files.content")) }
                textarea #content rows="18" spellcheck="false" aria-describedby="conflict-text" {}
                div.conflict #conflict role="alert" hidden {
                    p #conflict-text {}
                    button.button #reload type="button" { (lang.t("host.files.reload")) }
                    " "
                    button.button.quiet #overwrite type="button" { (lang.t("host.files.overwrite")) }
                }
                div.row {
                    button.button.primary #save type="submit" { (lang.t("host.files.save")) }
                    button.button.quiet #close type="button" { (lang.t("host.files.close")) }
                    span.status #save-status role="status" {}
                }
            }
        }
    }
}

/// Whitelisted commands: pick one, fill its typed parameters, watch the output.
pub fn commands(lang: Lang, role: Role) -> Markup {
    let runner = matches!(role, Role::Admin | Role::Operator);
    html! {
        @if !runner {
            p.notice { (lang.t("host.commands.view_only")) }
        }
        form.stack #run-form {
            label for="command" { (lang.t("host.commands.pick")) }
            select #command aria-describedby="command-help" {}
            p.hint #command-help {}
            div #params {}
            div.row {
                button.button.primary #run type="submit" disabled { (lang.t("host.commands.run")) }
                span.status #run-status role="status" {}
            }
        }
        p #exit {}
        pre.log #output tabindex="0" role="log" aria-label=(lang.t("host.commands.output")) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(80 << 30), "80.0 GiB");
    }

    #[test]
    fn a_chart_has_one_line_per_series_and_no_inline_style() {
        let html = chart(Lang::En, "net", "Network", "rate", None, &["in", "out"]).into_string();
        assert_eq!(html.matches("<polyline").count(), 2);
        assert!(html.contains("data-chart=\"net\"") && !html.contains("data-max"));
        assert!(!html.contains("style="));
        let cpu = chart(Lang::En, "cpu", "CPU", "pct", Some(100.0), &[]).into_string();
        assert_eq!(cpu.matches("<polyline").count(), 1);
        assert!(cpu.contains("data-max=\"100\""));
    }
}
