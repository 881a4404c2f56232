//! The order book through the real API: creating orders one at a time and from many callers
//! at once (each write is flushed before it is acknowledged, with its `order.created` delivery
//! staged in the same write), changing them with `If-Match`, listing and stats over all of
//! them, and how long the outbox takes to deliver every event to a local receiver.
//!
//! Run: `scripts/bench` (or `cargo build --release --bins && cargo bench -p axon-e2e --bench orders`).
//! ORDERS=N (sequential creates, 300) and CALLERS=N (concurrent callers, 16) override the
//! defaults.

#![allow(clippy::print_stdout)] // a bench binary prints its table

use std::sync::Arc;
use std::time::{Duration, Instant};

use axon_e2e::webhook_receiver::WebhookReceiver;
use axon_e2e::{ControlPlane, StatusCode, env_count, percentile, wait_until};
use reqwest::Method;
use serde_json::json;

fn row(name: &str, sorted: &[f64], secs: f64) {
    println!(
        "| {name} | {} | {:.2} ms | {:.2} ms | {:.0}/s |",
        sorted.len(),
        percentile(sorted, 50.0),
        percentile(sorted, 99.0),
        sorted.len() as f64 / secs
    );
}

async fn create(cp: &ControlPlane, token: &str, i: usize) -> (f64, String) {
    let started = Instant::now();
    let (status, body) = cp
        .call(
            Method::POST,
            "/api/orders",
            Some(token),
            Some(
                json!({"product_type": "telegram_bot", "title": format!("Pedido {i}"),
                "brief": "Un bot que da citas y recuerda la documentación."}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        started.elapsed().as_secs_f64() * 1000.0,
        body["id"].as_str().expect("id").to_owned(),
    )
}

async fn timed(cp: &ControlPlane, token: &str, method: Method, path: &str, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let (status, body) = cp.call(method.clone(), path, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(f64::total_cmp);
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks for a listing
    }
    let orders = env_count("ORDERS", 300);
    let callers = env_count("CALLERS", 16);
    let receiver = WebhookReceiver::start().await;
    let cp = Arc::new(ControlPlane::start(&[]).await);
    let token = cp.admin_token().await;
    let (status, sub) = cp
        .call(
            Method::POST,
            "/api/webhooks",
            Some(&token),
            Some(json!({"url": receiver.url("/n8n"), "events": ["order.created"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    println!("| operation | n | p50 | p99 | rate |\n|---|---|---|---|---|");

    let started = Instant::now();
    let mut sequential = Vec::with_capacity(orders);
    let mut ids = Vec::with_capacity(orders);
    for i in 0..orders {
        let (ms, id) = create(&cp, &token, i).await;
        sequential.push(ms);
        ids.push(id);
    }
    sequential.sort_by(f64::total_cmp);
    row(
        "create, one caller",
        &sequential,
        started.elapsed().as_secs_f64(),
    );

    let started = Instant::now();
    let per = orders / callers.max(1);
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (cp, token) = (cp.clone(), token.clone());
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(per);
                for i in 0..per {
                    out.push(create(&cp, &token, c * per + i).await.0);
                }
                out
            })
        })
        .collect();
    let mut concurrent = Vec::new();
    for t in tasks {
        concurrent.extend(t.await.expect("task"));
    }
    concurrent.sort_by(f64::total_cmp);
    let writes_done = Instant::now();
    row(
        &format!("create, {callers} callers"),
        &concurrent,
        started.elapsed().as_secs_f64(),
    );

    let started = Instant::now();
    let mut patches = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let t = Instant::now();
        let resp = cp
            .client
            .patch(cp.url(&format!("/api/orders/{id}")))
            .bearer_auth(&token)
            .header("If-Match", "\"1\"")
            .json(&json!({"title": format!("Pedido {i} revisado")}))
            .send()
            .await
            .expect("patch");
        assert_eq!(resp.status(), StatusCode::OK);
        patches.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    patches.sort_by(f64::total_cmp);
    row(
        "PATCH with If-Match",
        &patches,
        started.elapsed().as_secs_f64(),
    );

    let total = orders + per * callers;
    let started = Instant::now();
    let lists = timed(
        &cp,
        &token,
        Method::GET,
        "/api/orders?limit=50&q=revisado",
        100,
    )
    .await;
    row(
        &format!("list 50 of {total}, text filter"),
        &lists,
        started.elapsed().as_secs_f64(),
    );
    let started = Instant::now();
    let stats = timed(&cp, &token, Method::GET, "/api/factory/stats", 50).await;
    row(
        &format!("factory stats over {total}"),
        &stats,
        started.elapsed().as_secs_f64(),
    );

    let delivered = wait_until(Duration::from_secs(120), || async {
        receiver.processed().len() >= total
    })
    .await
    .map(|_| writes_done.elapsed());
    println!(
        "\nwebhooks: {} of {total} order.created delivered ({} duplicates), the last {} after the last create",
        receiver.processed().len(),
        receiver.duplicates(),
        delivered.map_or_else(
            || "over 120 s".into(),
            |d| format!("{:.2} s", d.as_secs_f64())
        )
    );
    println!(
        "\nrerun: cargo build --release --bins && ORDERS={orders} CALLERS={callers} cargo bench -p axon-e2e --bench orders"
    );
}
