//! Ping round trips through the real link: real axon-cp and agentd processes on loopback,
//! 10,000 sequential `POST /api/hosts/{id}/ping` calls, then 2,000 runs of a whitelisted
//! `/bin/true` through `POST /api/hosts/{id}/exec`. Prints tables.
//!
//! Run: `scripts/bench` (or `cargo build --release --bins && cargo bench -p axon-e2e --bench link`).
//! PINGS=N and EXECS=N override the counts.

#![allow(clippy::print_stdout)] // a bench binary prints its table

use std::time::{Duration, Instant};

use axon_e2e::{Agent, ControlPlane, StatusCode, env_count, percentile, wait_until};
use reqwest::Method;

fn row(name: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    println!(
        "| {name:<34} | {:>8.3} | {:>8.3} | {:>8.3} | {:>8.3} |",
        percentile(&samples, 50.0),
        percentile(&samples, 90.0),
        percentile(&samples, 99.0),
        samples.last().copied().unwrap_or(0.0)
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks for a listing
    }
    let pings = env_count("PINGS", 10_000);
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    let config = agent.dir.path().join("agentd.toml");
    std::fs::write(
        &config,
        "[[commands]]\nname = \"true\"\nbinary = \"/bin/true\"\n",
    )
    .expect("agent config");
    agent.start(&["--config", config.to_str().expect("utf-8 path")]);
    let online = wait_until(Duration::from_secs(10), || async {
        cp.host(&admin, &agent.host_id).await["status"] == "online"
    })
    .await;
    assert!(
        online.is_some(),
        "agent did not come online:\n{}",
        agent.log()
    );
    let path = format!("/api/hosts/{}/ping", agent.host_id);
    for _ in 0..200 {
        cp.call(Method::POST, &path, Some(&admin), None).await;
    }
    let mut api = Vec::with_capacity(pings);
    let mut link = Vec::with_capacity(pings);
    let start = Instant::now();
    for _ in 0..pings {
        let t = Instant::now();
        let (status, body) = cp.call(Method::POST, &path, Some(&admin), None).await;
        api.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, StatusCode::OK, "{body}");
        link.push(body["rtt_ms"].as_f64().unwrap_or(f64::NAN));
    }
    let total = start.elapsed();
    let execs = env_count("EXECS", 2_000);
    let exec_path = format!("/api/hosts/{}/exec", agent.host_id);
    let body = serde_json::json!({"command": "true"});
    let mut exec = Vec::with_capacity(execs);
    for _ in 0..execs {
        let t = Instant::now();
        let (status, out) = cp
            .call(Method::POST, &exec_path, Some(&admin), Some(body.clone()))
            .await;
        exec.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, StatusCode::OK, "{out}");
    }
    println!();
    println!("ping round trips, {pings} sequential, loopback, one agent");
    println!("| measured                           |  p50 ms  |  p90 ms  |  p99 ms  |  max ms  |");
    println!("|------------------------------------|----------|----------|----------|----------|");
    row("link only (control plane ⇄ agent)", link);
    row("API call (HTTPS + JWT + link)", api);
    println!(
        "throughput: {:.0} pings/s sequential ({:.1} s total)",
        pings as f64 / total.as_secs_f64(),
        total.as_secs_f64()
    );
    println!();
    println!("exec of /bin/true, {execs} sequential");
    println!("| measured                           |  p50 ms  |  p90 ms  |  p99 ms  |  max ms  |");
    println!("|------------------------------------|----------|----------|----------|----------|");
    row("API call (HTTPS, JWT, link, run)", exec);
}
