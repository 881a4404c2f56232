//! Deploys through the real API against the local fakes of the services: how long an admin
//! waits for the 202 (the pending event and the outbox delivery written and flushed), and how
//! long until the event reads `success` (the worker sends, the fake answers at once, the
//! outcome is written onto the order). One deploy at a time per order and channel, so the
//! three channels' demo orders are deployed in turn, each with `repeat`.
//!
//! Run: `scripts/bench` (or `cargo build --release --bins && cargo bench -p axon-e2e --bench deploys`).
//! DEPLOYS=N (per channel, 100) overrides the default.

#![allow(clippy::print_stdout)] // a bench binary prints its table

use std::time::Instant;

use axon_e2e::fake_channels::{FakeChannels, FakeSetup, Service};
use axon_e2e::{StatusCode, env_count, percentile};
use reqwest::Method;
use serde_json::{Value, json};

fn row(name: &str, sorted: &[f64]) {
    println!(
        "| {name} | {} | {:.2} ms | {:.2} ms |",
        sorted.len(),
        percentile(sorted, 50.0),
        percentile(sorted, 99.0),
    );
}

#[tokio::main]
async fn main() {
    let n = env_count("DEPLOYS", 100);
    let fakes = FakeChannels::start(FakeSetup {
        ayrshare_key: "bench-key".into(),
        telegram_token: "1:bench".into(),
        n8n_paths: vec!["bench".into()],
        n8n_header: None,
    })
    .await;
    let cp = fakes.control_plane(&[]).await;
    let admin = cp.admin_token().await;
    let orders = axon_e2e::seed_demo(&cp, &admin).await;
    let ready = |product: &str| -> String { orders[product].clone() };
    println!("| deploy ({n} per channel, sequential) | n | p50 | p99 |");
    println!("|---|---|---|---|");
    for (channel, product, service) in [
        ("whatsapp", "whatsapp_autopilot", Service::N8n),
        ("social", "social_autopilot", Service::Ayrshare),
        ("telegram", "telegram_bot", Service::Telegram),
    ] {
        let id = ready(product);
        let mut accepted = Vec::with_capacity(n);
        let mut settled = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let (status, body) = cp
                .call(
                    Method::POST,
                    &format!("/api/orders/{id}/deploy/{channel}"),
                    Some(&admin),
                    Some(json!({"repeat": true})),
                )
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            accepted.push(started.elapsed().as_secs_f64() * 1000.0);
            let deploy = body["deploy"]["id"].as_str().expect("id").to_owned();
            loop {
                let (_, order) = cp
                    .call(
                        Method::GET,
                        &format!("/api/orders/{id}"),
                        Some(&admin),
                        None,
                    )
                    .await;
                let status = order["deploy_history"]
                    .as_array()
                    .and_then(|h| h.iter().find(|e| e["id"] == deploy.as_str()))
                    .map(|e| e["status"].clone())
                    .unwrap_or(Value::Null);
                if status != "pending" {
                    assert_eq!(status, "success");
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            settled.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        accepted.sort_by(f64::total_cmp);
        settled.sort_by(f64::total_cmp);
        row(&format!("{channel}: POST → 202"), &accepted);
        row(&format!("{channel}: POST → success on the order"), &settled);
        let calls = fakes
            .seen()
            .iter()
            .filter(|s| s.service == service && s.method == "POST")
            .count();
        assert_eq!(calls, n, "{channel}: one call per deploy");
    }
    println!(
        "\nEvery deploy reached its fake exactly once. Rerun: cargo build --release --bins && cargo bench -p axon-e2e --bench deploys"
    );
}
