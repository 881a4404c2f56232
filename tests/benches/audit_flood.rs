//! An authenticated caller's latency while anonymous requests flood the API: every refused
//! request is an audit event, so this shows whether writing them holds up anyone else.
//! Prints p50/p99/max of `GET /api/me` alone and during the flood, the flood's rate, and how
//! many audit records the flood left.
//!
//! Run: `scripts/bench` (or `cargo build --release --bins && cargo bench -p axon-e2e --bench audit_flood`).
//! REQUESTS=N (authenticated requests per phase, 500) and FLOODERS=N (concurrent anonymous
//! loops, 8) override the defaults.

#![allow(clippy::print_stdout)] // a bench binary prints its table

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use axon_e2e::{ControlPlane, StatusCode, env_count, percentile};
use reqwest::Method;

async fn latencies(cp: &ControlPlane, token: &str, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let (status, body) = cp.call(Method::GET, "/api/me", Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(f64::total_cmp);
    out
}

fn row(name: &str, sorted: &[f64]) {
    println!(
        "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
        sorted.len(),
        percentile(sorted, 50.0),
        percentile(sorted, 99.0),
        sorted.last().copied().unwrap_or(0.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks for a listing
    }
    let requests = env_count("REQUESTS", 500);
    let flooders = env_count("FLOODERS", 8);
    let cp = Arc::new(ControlPlane::start(&[]).await);
    let token = cp.admin_token().await;
    latencies(&cp, &token, 50).await;
    let quiet = latencies(&cp, &token, requests).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let loops: Vec<_> = (0..flooders)
        .map(|_| {
            let (cp, stop, sent) = (cp.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (status, _) = cp.call(Method::GET, "/api/hosts", None, None).await;
                    assert_eq!(status, StatusCode::UNAUTHORIZED);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let flooded = latencies(&cp, &token, requests).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let refused = sent.load(Ordering::Relaxed);
    let (_, records) = cp
        .call(
            Method::GET,
            "/api/audit?action=access.unauthenticated&limit=1000",
            Some(&token),
            None,
        )
        .await;
    let records = records.as_array().map(Vec::len).unwrap_or(0);

    println!("| phase | requests | p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    row("GET /api/me alone", &quiet);
    row(
        &format!("GET /api/me with {flooders} anonymous loops"),
        &flooded,
    );
    println!();
    println!(
        "flood: {refused} refused requests in {secs:.1} s ({:.0}/s); {records} audit records so far",
        refused as f64 / secs
    );
}
