//! The gateway's Prometheus series: requests, tokens and cost by tenant, model and upstream;
//! latency, time to first token and the gateway's own overhead as histograms; each upstream's
//! circuit state. Label sets are bounded: past `MAX_SERIES` distinct sets new ones are folded
//! into `model="other"`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use super::health::UpstreamReport;
use super::usage::UsageRecord;

const MAX_SERIES: usize = 5_000;

const LATENCY_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
];

#[derive(Default, Clone)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len()];
        }
        for (i, b) in bounds.iter().enumerate() {
            if v <= *b {
                self.buckets[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in bounds.iter().enumerate() {
            let n = self.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braced} {}", self.count);
    }
}

#[derive(Default)]
struct Figures {
    /// (tenant, model, upstream, outcome) → requests
    requests: BTreeMap<(String, String, String, String), u64>,
    /// (tenant, model, upstream, kind) → tokens
    tokens: BTreeMap<(String, String, String, &'static str), u64>,
    /// (tenant, model) → US dollars
    cost: BTreeMap<(String, String), f64>,
    /// upstream → duration histogram
    duration: BTreeMap<String, Histogram>,
    ttft: BTreeMap<String, Histogram>,
    overhead: Histogram,
    /// Models with series of their own (the rest fold into `other`).
    models: std::collections::HashSet<String>,
}

/// Counters fed by every usage record.
#[derive(Default)]
pub struct LlmMetrics {
    figures: Mutex<Figures>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl LlmMetrics {
    pub fn observe(&self, r: &UsageRecord) {
        let mut f = self.figures.lock().unwrap_or_else(|p| p.into_inner());
        let tenant = r.tenant_id.clone().unwrap_or_default();
        let model = if f.models.contains(&r.model) {
            r.model.clone()
        } else if f.requests.len() >= MAX_SERIES {
            "other".to_owned()
        } else {
            f.models.insert(r.model.clone());
            r.model.clone()
        };
        *f.requests
            .entry((
                tenant.clone(),
                model.clone(),
                r.upstream.clone(),
                r.outcome.as_str().to_owned(),
            ))
            .or_default() += 1;
        for (kind, n) in [
            ("prompt", r.prompt_tokens),
            ("completion", r.completion_tokens),
            ("cached", r.cached_tokens),
        ] {
            if n > 0 {
                *f.tokens
                    .entry((tenant.clone(), model.clone(), r.upstream.clone(), kind))
                    .or_default() += n;
            }
        }
        if r.cost_usd > 0.0 {
            *f.cost.entry((tenant, model)).or_default() += r.cost_usd;
        }
        if f.duration.len() < MAX_SERIES || f.duration.contains_key(&r.upstream) {
            f.duration
                .entry(r.upstream.clone())
                .or_default()
                .observe(LATENCY_BUCKETS, r.duration_ms as f64 / 1000.0);
            if let Some(ttft) = r.ttft_ms {
                f.ttft
                    .entry(r.upstream.clone())
                    .or_default()
                    .observe(LATENCY_BUCKETS, ttft as f64 / 1000.0);
            }
        }
        f.overhead
            .observe(OVERHEAD_BUCKETS, r.overhead_us as f64 / 1e6);
    }

    /// The families, in the text exposition format.
    pub fn render(&self, upstreams: &[UpstreamReport]) -> String {
        let f = self.figures.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "axon_llm_requests_total",
            "counter",
            "LLM gateway calls by tenant, model, upstream and outcome.",
        );
        for ((t, m, u, o), n) in &f.requests {
            let _ = writeln!(
                out,
                "axon_llm_requests_total{{tenant=\"{}\",model=\"{}\",upstream=\"{}\",outcome=\"{o}\"}} {n}",
                escape(t),
                escape(m),
                escape(u)
            );
        }
        family(
            &mut out,
            "axon_llm_tokens_total",
            "counter",
            "Tokens by tenant, model, upstream and kind (prompt, completion, cached).",
        );
        for ((t, m, u, k), n) in &f.tokens {
            let _ = writeln!(
                out,
                "axon_llm_tokens_total{{tenant=\"{}\",model=\"{}\",upstream=\"{}\",kind=\"{k}\"}} {n}",
                escape(t),
                escape(m),
                escape(u)
            );
        }
        family(
            &mut out,
            "axon_llm_cost_usd_total",
            "counter",
            "Cost in US dollars from the price table, by tenant and model.",
        );
        for ((t, m), c) in &f.cost {
            let _ = writeln!(
                out,
                "axon_llm_cost_usd_total{{tenant=\"{}\",model=\"{}\"}} {c}",
                escape(t),
                escape(m)
            );
        }
        family(
            &mut out,
            "axon_llm_request_duration_seconds",
            "histogram",
            "Whole LLM calls, by upstream.",
        );
        for (u, h) in &f.duration {
            h.write(
                &mut out,
                "axon_llm_request_duration_seconds",
                &format!("upstream=\"{}\"", escape(u)),
                LATENCY_BUCKETS,
            );
        }
        family(
            &mut out,
            "axon_llm_ttft_seconds",
            "histogram",
            "Time to the first byte of the answer sent to the client, by upstream.",
        );
        for (u, h) in &f.ttft {
            h.write(
                &mut out,
                "axon_llm_ttft_seconds",
                &format!("upstream=\"{}\"", escape(u)),
                LATENCY_BUCKETS,
            );
        }
        family(
            &mut out,
            "axon_llm_overhead_seconds",
            "histogram",
            "Time spent in the gateway itself per call (upstream waits excluded).",
        );
        f.overhead
            .write(&mut out, "axon_llm_overhead_seconds", "", OVERHEAD_BUCKETS);
        family(
            &mut out,
            "axon_llm_upstream_circuit_state",
            "gauge",
            "Circuit breaker of each upstream: 0 closed, 1 half-open, 2 open.",
        );
        for u in upstreams {
            let _ = writeln!(
                out,
                "axon_llm_upstream_circuit_state{{upstream=\"{}\"}} {}",
                escape(&u.upstream),
                u.circuit.as_number()
            );
        }
        family(
            &mut out,
            "axon_llm_upstream_in_flight",
            "gauge",
            "Calls in flight per upstream.",
        );
        for u in upstreams {
            let _ = writeln!(
                out,
                "axon_llm_upstream_in_flight{{upstream=\"{}\"}} {}",
                escape(&u.upstream),
                u.in_flight
            );
        }
        out
    }
}
