//! `GET /metrics` in the Prometheus text exposition format (0.0.4): the control plane's own
//! figures (agents connected, requests and their latency by route) and every host's latest
//! sample with a `host` label, under node_exporter's names where one exists and `axon_gpu_*`
//! for GPUs.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Route;
use crate::AppState;
use crate::error::ApiError;

pub fn routes() -> Vec<Route> {
    vec![Route::new(Method::GET, "/metrics", get(exposition))]
}

/// Upper bounds of the latency histogram, seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct RouteFigures {
    /// By status code.
    counts: BTreeMap<u16, u64>,
    /// Cumulative per bucket, then +Inf.
    buckets: Vec<u64>,
    sum_secs: f64,
}

/// Request counts and latencies by method and matched route (bounded label values).
#[derive(Default)]
pub struct HttpMetrics {
    routes: Mutex<HashMap<(String, String), RouteFigures>>,
}

impl HttpMetrics {
    fn observe(&self, method: &str, route: &str, status: u16, secs: f64) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let figures = routes
            .entry((method.to_owned(), route.to_owned()))
            .or_default();
        *figures.counts.entry(status).or_default() += 1;
        if figures.buckets.is_empty() {
            figures.buckets = vec![0; BUCKETS.len() + 1];
        }
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                figures.buckets[i] += 1;
            }
        }
        figures.buckets[BUCKETS.len()] += 1;
        figures.sum_secs += secs;
    }
}

/// Counts every matched request (a route layer: unknown paths are not counted).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| route_label(p.as_str()))
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state.http_metrics.observe(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// A route as a label value, its parameters written `:name` (`/api/hosts/:id`): braces in
/// label values are valid but trip up some scrapers' parsers.
fn route_label(route: &str) -> String {
    route.replace('{', ":").replace('}', "")
}

/// Label values escaped as the format asks: backslash, double quote and line feed.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Families in the order first written, each with its HELP, TYPE and samples.
#[derive(Default)]
struct Exposition {
    order: Vec<&'static str>,
    families: HashMap<&'static str, (&'static str, &'static str, String)>,
}

impl Exposition {
    fn sample(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        if !value.is_finite() {
            return;
        }
        let entry = self.families.entry(name).or_insert_with(|| {
            self.order.push(name);
            (kind, help, String::new())
        });
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = if labels.is_empty() {
            writeln!(entry.2, "{name} {value}")
        } else {
            writeln!(entry.2, "{name}{{{}}} {value}", labels.join(","))
        };
    }

    /// A histogram's lines go in one family with the `_bucket`, `_sum` and `_count` suffixes.
    fn raw(&mut self, name: &'static str, kind: &'static str, help: &'static str, line: &str) {
        let entry = self.families.entry(name).or_insert_with(|| {
            self.order.push(name);
            (kind, help, String::new())
        });
        entry.2.push_str(line);
        entry.2.push('\n');
    }

    fn render(self) -> String {
        let mut out = String::new();
        for name in self.order {
            let (kind, help, lines) = &self.families[name];
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            out.push_str(lines);
        }
        out
    }
}

async fn exposition(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut x = Exposition::default();
    let hosts = state.store.hosts.values()?;
    x.sample(
        "axon_agents_connected",
        "gauge",
        "Agents with a live link to this control plane.",
        &[],
        state.hub.len() as f64,
    );
    x.sample(
        "axon_hosts",
        "gauge",
        "Enrolled hosts, revoked ones excluded.",
        &[],
        hosts.iter().filter(|h| h.revoked_at.is_none()).count() as f64,
    );
    {
        let routes = state
            .http_metrics
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<&(String, String)> = routes.keys().collect();
        keys.sort();
        for key in keys {
            let (method, route) = key;
            let figures = &routes[key];
            for (status, count) in &figures.counts {
                x.sample(
                    "axon_http_requests_total",
                    "counter",
                    "API requests by method, route and status.",
                    &[
                        ("method", method),
                        ("route", route),
                        ("status", &status.to_string()),
                    ],
                    *count as f64,
                );
            }
            let base = format!("method=\"{}\",route=\"{}\"", escape(method), escape(route));
            let help = "API request latency by method and route.";
            for (i, bound) in BUCKETS.iter().enumerate() {
                x.raw(
                    "axon_http_request_duration_seconds",
                    "histogram",
                    help,
                    &format!(
                        "axon_http_request_duration_seconds_bucket{{{base},le=\"{bound}\"}} {}",
                        figures.buckets[i]
                    ),
                );
            }
            let total = figures.buckets[BUCKETS.len()];
            for line in [
                format!("axon_http_request_duration_seconds_bucket{{{base},le=\"+Inf\"}} {total}"),
                format!(
                    "axon_http_request_duration_seconds_sum{{{base}}} {}",
                    figures.sum_secs
                ),
                format!("axon_http_request_duration_seconds_count{{{base}}} {total}"),
            ] {
                x.raw(
                    "axon_http_request_duration_seconds",
                    "histogram",
                    help,
                    &line,
                );
            }
        }
    }
    let names: HashMap<String, String> = hosts
        .iter()
        .filter(|h| h.revoked_at.is_none())
        .map(|h| (h.id.clone(), h.hostname.clone()))
        .collect();
    let mut latest = state.telemetry.latest_all();
    latest.sort_by(|a, b| a.0.cmp(&b.0));
    for host in &hosts {
        if host.revoked_at.is_some() {
            continue;
        }
        let up = if state.hub.is_online(&host.id) {
            1.0
        } else {
            0.0
        };
        x.sample(
            "axon_host_up",
            "gauge",
            "1 while the host's agent is connected.",
            &[("host", &host.id), ("hostname", &host.hostname)],
            up,
        );
    }
    for (id, s) in &latest {
        let Some(hostname) = names.get(id) else {
            continue;
        };
        let host: &[(&str, &str)] = &[("host", id), ("hostname", hostname)];
        host_samples(&mut x, host, s);
    }
    let open_alerts = state
        .store
        .gpu_alerts
        .values()?
        .into_iter()
        .filter(|a| a.acked_at.is_none())
        .count();
    x.sample(
        "axon_gpu_alerts_open",
        "gauge",
        "GPU faults (XID, ECC) not yet acknowledged, fleet-wide.",
        &[],
        open_alerts as f64,
    );
    for (target, outcome, count) in state.outbox.counts() {
        x.sample(
            "axon_outbox_deliveries_total",
            "counter",
            "Outbox attempts finished since the start, by target kind and outcome (delivered, retried, failed).",
            &[("target", &target), ("outcome", outcome)],
            count as f64,
        );
    }
    let counts = state.outbox.counts();
    for channel in crate::agency::deploy::Channel::ALL {
        for (outcome, label) in [
            ("delivered", "success"),
            ("failed", "failed"),
            ("unknown", "unknown"),
            ("retried", "retried"),
        ] {
            let n = counts
                .iter()
                .find(|(kind, o, _)| kind == channel.kind() && *o == outcome)
                .map_or(0, |(_, _, n)| *n);
            x.sample(
                "axon_deploys_total",
                "counter",
                "Deploy attempts finished since the start, by channel and outcome (success, failed, unknown, retried).",
                &[("channel", channel.as_str()), ("outcome", label)],
                n as f64,
            );
        }
    }
    x.sample(
        "axon_outbox_pending",
        "gauge",
        "Outbox deliveries waiting for an attempt.",
        &[],
        state.outbox.pending_count() as f64,
    );
    let mut text = x.render();
    text.push_str(&state.llm.metrics.render(&state.llm.health.report()));
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

fn host_samples(x: &mut Exposition, host: &[(&str, &str)], s: &axon_shared::MetricsSample) {
    let ts = s.ts_ms as f64 / 1000.0;
    x.sample(
        "axon_host_sample_timestamp_seconds",
        "gauge",
        "When the host's latest sample was taken.",
        host,
        ts,
    );
    x.sample(
        "axon_host_cpu_usage_ratio",
        "gauge",
        "CPU busy, all CPUs (0-1).",
        host,
        f64::from(s.cpu.total_pct) / 100.0,
    );
    for (i, pct) in s.cpu.per_core_pct.iter().enumerate() {
        let cpu = i.to_string();
        x.sample(
            "axon_host_cpu_core_usage_ratio",
            "gauge",
            "CPU busy, per CPU (0-1).",
            &with(host, &[("cpu", &cpu)]),
            f64::from(*pct) / 100.0,
        );
    }
    x.sample("node_load1", "gauge", "1m load average.", host, s.load[0]);
    x.sample("node_load5", "gauge", "5m load average.", host, s.load[1]);
    x.sample("node_load15", "gauge", "15m load average.", host, s.load[2]);
    x.sample(
        "node_memory_MemTotal_bytes",
        "gauge",
        "Memory information field MemTotal_bytes.",
        host,
        s.memory.total as f64,
    );
    x.sample(
        "node_memory_MemAvailable_bytes",
        "gauge",
        "Memory information field MemAvailable_bytes.",
        host,
        s.memory.available as f64,
    );
    x.sample(
        "node_memory_SwapTotal_bytes",
        "gauge",
        "Memory information field SwapTotal_bytes.",
        host,
        s.memory.swap_total as f64,
    );
    x.sample(
        "node_memory_SwapFree_bytes",
        "gauge",
        "Memory information field SwapFree_bytes.",
        host,
        s.memory.swap_total.saturating_sub(s.memory.swap_used) as f64,
    );
    x.sample(
        "node_boot_time_seconds",
        "gauge",
        "Node boot time, in unixtime.",
        host,
        (ts - s.uptime_secs as f64).round(),
    );
    x.sample(
        "node_processes_state_count",
        "gauge",
        "Processes on the host (all states).",
        host,
        s.processes as f64,
    );
    for d in &s.disks {
        let labels = with(
            host,
            &[
                ("device", &d.device),
                ("mountpoint", &d.mount),
                ("fstype", &d.fs),
            ],
        );
        x.sample(
            "node_filesystem_size_bytes",
            "gauge",
            "Filesystem size in bytes.",
            &labels,
            d.total_bytes as f64,
        );
        x.sample(
            "node_filesystem_avail_bytes",
            "gauge",
            "Filesystem space available to non-root users in bytes.",
            &labels,
            d.available_bytes as f64,
        );
    }
    // Rates belong to a device, not to each place it is mounted.
    for d in axon_shared::DiskSample::per_device(&s.disks) {
        let labels = with(host, &[("device", &d.device)]);
        if let Some(bps) = d.read_bps {
            x.sample(
                "axon_host_disk_read_bytes_per_second",
                "gauge",
                "Disk reads over the last sample interval.",
                &labels,
                bps,
            );
        }
        if let Some(bps) = d.write_bps {
            x.sample(
                "axon_host_disk_written_bytes_per_second",
                "gauge",
                "Disk writes over the last sample interval.",
                &labels,
                bps,
            );
        }
    }
    for n in &s.net {
        let labels = with(host, &[("device", &n.iface)]);
        x.sample(
            "node_network_receive_bytes_total",
            "counter",
            "Network device statistic receive_bytes.",
            &labels,
            n.rx_bytes_total as f64,
        );
        x.sample(
            "node_network_transmit_bytes_total",
            "counter",
            "Network device statistic transmit_bytes.",
            &labels,
            n.tx_bytes_total as f64,
        );
        x.sample(
            "node_network_receive_errs_total",
            "counter",
            "Network device statistic receive_errs.",
            &labels,
            n.rx_errors_total as f64,
        );
        x.sample(
            "node_network_transmit_errs_total",
            "counter",
            "Network device statistic transmit_errs.",
            &labels,
            n.tx_errors_total as f64,
        );
    }
    for t in &s.temperatures {
        // sysinfo's label is "<chip> <sensor>", e.g. "coretemp Package id 0".
        let (chip, sensor) = t.label.split_once(' ').unwrap_or((&t.label, ""));
        x.sample(
            "node_hwmon_temp_celsius",
            "gauge",
            "Hardware monitor for temperature (input).",
            &with(host, &[("chip", chip), ("sensor", sensor)]),
            f64::from(t.celsius),
        );
    }
    for g in &s.gpus {
        let index = g.index.to_string();
        let labels = with(
            host,
            &[("gpu", &index), ("uuid", &g.uuid), ("name", &g.name)],
        );
        let gauges: [(&'static str, &'static str, Option<f64>); 12] = [
            (
                "axon_gpu_utilization_ratio",
                "GPU busy (0-1).",
                g.util_pct.map(|v| f64::from(v) / 100.0),
            ),
            (
                "axon_gpu_memory_utilization_ratio",
                "GPU memory controller busy (0-1).",
                g.mem_util_pct.map(|v| f64::from(v) / 100.0),
            ),
            (
                "axon_gpu_memory_used_bytes",
                "GPU memory in use.",
                g.mem_used_bytes.map(|v| v as f64),
            ),
            (
                "axon_gpu_memory_total_bytes",
                "GPU memory in all.",
                g.mem_total_bytes.map(|v| v as f64),
            ),
            (
                "axon_gpu_temperature_celsius",
                "GPU temperature.",
                g.temperature_c.map(f64::from),
            ),
            (
                "axon_gpu_power_watts",
                "GPU power draw.",
                g.power_w.map(f64::from),
            ),
            (
                "axon_gpu_power_limit_watts",
                "GPU power limit.",
                g.power_limit_w.map(f64::from),
            ),
            (
                "axon_gpu_sm_clock_hertz",
                "GPU SM clock.",
                g.sm_clock_mhz.map(|v| f64::from(v) * 1e6),
            ),
            (
                "axon_gpu_memory_clock_hertz",
                "GPU memory clock.",
                g.mem_clock_mhz.map(|v| f64::from(v) * 1e6),
            ),
            (
                "axon_gpu_fan_ratio",
                "GPU fan speed (0-1).",
                g.fan_pct.map(|v| f64::from(v) / 100.0),
            ),
            (
                "axon_gpu_pcie_receive_bytes_per_second",
                "PCIe traffic to the GPU.",
                g.pcie_rx_bps,
            ),
            (
                "axon_gpu_pcie_transmit_bytes_per_second",
                "PCIe traffic from the GPU.",
                g.pcie_tx_bps,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                x.sample(name, "gauge", help, &labels, v);
            }
        }
        x.sample(
            "axon_gpu_processes",
            "gauge",
            "Processes using the GPU.",
            &labels,
            g.processes.len() as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut x = Exposition::default();
        x.sample("m", "gauge", "h", &[("l", "a\"b\\c\nd")], 1.0);
        x.sample("m", "gauge", "h", &[("l", "x")], f64::NAN);
        let text = x.render();
        assert_eq!(
            text,
            "# HELP m h\n# TYPE m gauge\nm{l=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn route_labels_have_no_braces() {
        assert_eq!(
            route_label("/api/hosts/{id}/gpu-alerts/{alert}/ack"),
            "/api/hosts/:id/gpu-alerts/:alert/ack"
        );
    }

    #[test]
    fn latency_buckets_are_cumulative() {
        let m = HttpMetrics::default();
        m.observe("GET", "/x", 200, 0.003);
        m.observe("GET", "/x", 500, 2.0);
        let routes = m.routes.lock().expect("lock");
        let f = &routes[&("GET".to_owned(), "/x".to_owned())];
        assert_eq!(f.buckets[0], 0);
        assert_eq!(f.buckets[1], 1);
        assert_eq!(f.buckets[BUCKETS.len() - 1], 2);
        assert_eq!(f.buckets[BUCKETS.len()], 2);
        assert_eq!(f.counts[&500], 1);
    }
}
