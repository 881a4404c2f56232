//! Host metrics as JSON: one host's series (`GET /api/hosts/{id}/metrics?since=&step=`), the
//! fleet at a glance (`GET /api/fleet/summary`, with the GPUs that have memory free, for
//! routing work to them), and GPU faults that stay until acknowledged.

use axon_shared::MetricsSample;
use axum::extract::{Query, State};
use axum::http::Method;
use axum::routing::{get, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Route;
use super::hosts::find;
use crate::AppState;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::fleet::telemetry::{MAX_POINTS, Point, unix_ms};
use crate::identity::auth::Caller;
use crate::model::GpuAlert;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/api/hosts/{id}/metrics", get(host_metrics)),
        Route::new(Method::GET, "/api/fleet/summary", get(summary)),
        Route::new(Method::GET, "/api/hosts/{id}/gpu-alerts", get(alerts)),
        Route::new(
            Method::POST,
            "/api/hosts/{id}/gpu-alerts/{alert}/ack",
            post(ack),
        ),
    ]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MetricsQuery {
    /// Unix milliseconds, or a span back from now (`15m`, `6h`, `7d`). Default `1h`.
    #[serde(default)]
    since: Option<String>,
    /// Seconds per point, or a duration (`5m`). Default: every sample within the last hour,
    /// every minute before.
    #[serde(default)]
    step: Option<String>,
}

#[derive(Serialize, JsonSchema)]
pub(super) struct HostMetrics {
    host_id: String,
    /// `live` (every sample, from memory) or `history` (per minute, from disk).
    #[schemars(extend("enum" = ["live", "history"]))]
    source: &'static str,
    since_ms: u64,
    step_secs: u64,
    points: Vec<Point>,
    /// The newest full sample (absent until the host has sent one).
    latest: Option<MetricsSample>,
}

fn duration_secs(text: &str, what: &str) -> Result<u64, ApiError> {
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    axon_shared::parse_duration(text)
        .map(|d| d.as_secs())
        .map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

async fn host_metrics(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    query: Result<Query<MetricsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<HostMetrics>, ApiError> {
    let Query(q) = query.map_err(ApiError::from)?;
    find(&state, &caller, &id)?;
    let now = unix_ms();
    let since_ms = match q.since.as_deref() {
        None => now.saturating_sub(3_600_000),
        // Absolute times are at least 13 digits (2001 onwards); shorter numbers are seconds back.
        Some(t) if t.len() >= 13 && t.bytes().all(|b| b.is_ascii_digit()) => t
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("since: not a time"))?,
        Some(t) => now.saturating_sub(duration_secs(t, "since")?.saturating_mul(1000)),
    };
    if since_ms > now {
        return Err(ApiError::bad_request("since: in the future"));
    }
    let step_secs = match q.step.as_deref() {
        None => 0,
        Some(t) => match duration_secs(t, "step")? {
            0 => return Err(ApiError::bad_request("step: at least 1 second")),
            s if s > 86_400 => return Err(ApiError::bad_request("step: at most 1 day")),
            s => s,
        },
    };
    let span_secs = (now - since_ms) / 1000;
    let per_point = if step_secs == 0 {
        if span_secs <= 3600 { 1 } else { 60 }
    } else {
        step_secs
    };
    if span_secs / per_point > MAX_POINTS {
        return Err(ApiError::bad_request(format!(
            "that is more than {MAX_POINTS} points: ask for a larger step"
        )));
    }
    let series = state.telemetry.query(&id, since_ms, step_secs, now)?;
    Ok(ApiJson(HostMetrics {
        host_id: id.clone(),
        source: series.source,
        since_ms: series.since_ms,
        step_secs: series.step_secs,
        points: series.points,
        latest: state.telemetry.latest(&id).map(|s| (*s).clone()),
    }))
}

#[derive(Serialize, JsonSchema)]
struct FreeGpu {
    host_id: String,
    hostname: String,
    index: u32,
    uuid: String,
    name: String,
    mem_free_bytes: u64,
    mem_total_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    util_pct: Option<f32>,
}

#[derive(Serialize, Default, JsonSchema)]
pub(super) struct Summary {
    hosts_total: usize,
    hosts_online: usize,
    /// Online hosts that have sent a sample.
    hosts_reporting: usize,
    cpu_avg_pct: f64,
    memory_used_bytes: u64,
    memory_total_bytes: u64,
    gpus: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu_util_avg_pct: Option<f64>,
    gpu_memory_used_bytes: u64,
    gpu_memory_total_bytes: u64,
    /// GPUs of online hosts, most free memory first.
    gpus_with_free_memory: Vec<FreeGpu>,
    gpu_alerts_open: usize,
}

async fn summary(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<Summary>, ApiError> {
    let hosts: Vec<_> = state
        .store
        .hosts
        .values()?
        .into_iter()
        .filter(|h| h.revoked_at.is_none() && caller.can_see(h.tenant_id.as_deref()))
        .collect();
    let mut s = Summary {
        hosts_total: hosts.len(),
        ..Summary::default()
    };
    let (mut cpu_sum, mut util_sum, mut util_n) = (0.0, 0.0, 0usize);
    for host in &hosts {
        if !state.hub.is_online(&host.id) {
            continue;
        }
        s.hosts_online += 1;
        let Some(sample) = state.telemetry.latest(&host.id) else {
            continue;
        };
        s.hosts_reporting += 1;
        cpu_sum += f64::from(sample.cpu.total_pct);
        s.memory_used_bytes += sample.memory.used;
        s.memory_total_bytes += sample.memory.total;
        for g in &sample.gpus {
            s.gpus += 1;
            if let Some(u) = g.util_pct {
                util_sum += f64::from(u);
                util_n += 1;
            }
            s.gpu_memory_used_bytes += g.mem_used_bytes.unwrap_or(0);
            s.gpu_memory_total_bytes += g.mem_total_bytes.unwrap_or(0);
            if let (Some(used), Some(total)) = (g.mem_used_bytes, g.mem_total_bytes)
                && total > used
            {
                s.gpus_with_free_memory.push(FreeGpu {
                    host_id: host.id.clone(),
                    hostname: host.hostname.clone(),
                    index: g.index,
                    uuid: g.uuid.clone(),
                    name: g.name.clone(),
                    mem_free_bytes: total.saturating_sub(used),
                    mem_total_bytes: total,
                    util_pct: g.util_pct,
                });
            }
        }
    }
    if s.hosts_reporting > 0 {
        s.cpu_avg_pct = (cpu_sum / s.hosts_reporting as f64 * 100.0).round() / 100.0;
    }
    if util_n > 0 {
        s.gpu_util_avg_pct = Some(util_sum / util_n as f64);
    }
    s.gpus_with_free_memory
        .sort_by_key(|g| std::cmp::Reverse(g.mem_free_bytes));
    s.gpu_alerts_open = state
        .store
        .gpu_alerts
        .values()?
        .into_iter()
        .filter(|a| a.acked_at.is_none() && hosts.iter().any(|h| h.id == a.host_id))
        .count();
    Ok(ApiJson(s))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertsQuery {
    /// Only those not acknowledged yet.
    #[serde(default)]
    open: Option<bool>,
}

async fn alerts(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    query: Result<Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<Vec<GpuAlert>>, ApiError> {
    let Query(q) = query.map_err(ApiError::from)?;
    find(&state, &caller, &id)?;
    let open_only = q.open.unwrap_or(false);
    let mut list: Vec<GpuAlert> = state
        .store
        .gpu_alerts
        .range(&format!("{id}/"), &format!("{id}0"))?
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| !open_only || a.acked_at.is_none())
        .collect();
    list.reverse();
    Ok(ApiJson(list))
}

async fn ack(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, alert_id)): ApiPath<(String, String)>,
) -> Result<ApiJson<GpuAlert>, ApiError> {
    find(&state, &caller, &id)?;
    let seq = alert_id
        .strip_prefix(&format!("{id}-"))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| ApiError::not_found(format!("no GPU alert {alert_id} on host {id}")))?;
    let key = format!("{id}/{seq:016x}");
    let mut newly = false;
    let updated = state.store.gpu_alerts.update(&key, |a| {
        newly = a.acked_at.is_none();
        if newly {
            a.acked_at = Some(crate::model::now());
            a.acked_by = Some(caller.id.clone());
        }
    })?;
    let alert = updated
        .ok_or_else(|| ApiError::not_found(format!("no GPU alert {alert_id} on host {id}")))?;
    if !newly {
        // Acknowledged before: the first acknowledgement stands.
        return Ok(ApiJson(alert));
    }
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("host.gpu_alert.ack", "ok")
            .caller(&caller)
            .target(&format!("{id} {alert_id}")),
    );
    Ok(ApiJson(alert))
}
