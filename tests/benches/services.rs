//! Service listings through the whole path (HTTPS + JWT + link + agent + peer): 300 systemd
//! units of a real systemd (the systemd box) and 200 containers of the real Docker engine.
//! Prints p50/p90/p99/max and the agent's CPU time per listing (from /proc).
//!
//! Run: `scripts/bench` (or `cargo build --release --bins && cargo bench -p axon-e2e --bench services`).
//! UNITS=N, CONTAINERS=N and LISTINGS=N override the counts.

#![allow(clippy::print_stdout)] // a bench binary prints its table

use std::process::Command;
use std::time::{Duration, Instant};

use axon_e2e::{
    Agent, ControlPlane, DockerFixture, StatusCode, SystemdBox, env_count, percentile, wait_until,
};
use reqwest::Method;

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

async fn measure(
    cp: &ControlPlane,
    token: &str,
    agent_pid: u32,
    name: &str,
    path: &str,
    listings: usize,
    expect: usize,
) {
    let (status, body) = cp.call(Method::GET, path, Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = body.as_array().map(Vec::len).unwrap_or(0);
    assert!(
        listed >= expect,
        "{name}: {listed} listed, {expect} expected"
    );
    for _ in 0..20 {
        cp.call(Method::GET, path, Some(token), None).await;
    }
    let ticks = cpu_ticks(agent_pid);
    let mut samples = Vec::with_capacity(listings);
    for _ in 0..listings {
        let t = Instant::now();
        let (status, _) = cp.call(Method::GET, path, Some(token), None).await;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, StatusCode::OK);
    }
    let cpu_ms = (cpu_ticks(agent_pid) - ticks) as f64 * 10.0 / listings as f64;
    samples.sort_by(f64::total_cmp);
    println!(
        "| {name:<26} | {listed:>5} | {:>8.2} | {:>8.2} | {:>8.2} | {:>8.2} | {cpu_ms:>13.2} |",
        percentile(&samples, 50.0),
        percentile(&samples, 90.0),
        percentile(&samples, 99.0),
        samples.last().copied().unwrap_or(0.0),
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks for a listing
    }
    let (units, containers, listings) = (
        env_count("UNITS", 300),
        env_count("CONTAINERS", 200),
        env_count("LISTINGS", 200),
    );

    // 300 units that stay active without a process each.
    let mut files: Vec<(String, String)> = (0..units)
        .map(|i| {
            (
                format!("bench-{i}.service"),
                "[Unit]\nDescription=bench\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n".to_owned(),
            )
        })
        .collect();
    let wants: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    files.push((
        "bench.target".into(),
        format!("[Unit]\nDescription=bench\nWants={}\n", wants.join(" ")),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let sdbox = SystemdBox::start(&refs);
    let started = Command::new("busctl")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &sdbox.address)
        .args([
            "--system",
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "StartUnit",
            "ss",
            "bench.target",
            "replace",
        ])
        .output()
        .expect("busctl");
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );

    // 200 containers, running.
    let docker = DockerFixture::new();
    let label = format!("axon.test={}", docker.run);
    let mut ids = Vec::new();
    for i in 0..containers {
        ids.push(docker.docker(&[
            "create",
            "--name",
            &docker.name(&format!("bench-{i}")),
            "--label",
            &label,
            "--network",
            "none",
            &docker.image,
            "sleep",
            "3600",
        ]));
    }
    for chunk in ids.chunks(50) {
        let mut args = vec!["start"];
        args.extend(chunk.iter().map(String::as_str));
        docker.docker(&args);
    }

    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    agent.start_with_env(&[], &[("DBUS_SYSTEM_BUS_ADDRESS", &sdbox.address)]);
    let online = wait_until(Duration::from_secs(10), || async {
        cp.host(&admin, &agent.host_id).await["status"] == "online"
    })
    .await;
    assert!(
        online.is_some(),
        "agent did not come online:\n{}",
        agent.log()
    );
    let pid = agent.pid().expect("agent pid");
    // Let the box finish starting the units.
    tokio::time::sleep(Duration::from_secs(1)).await;

    println!(
        "\nService listings through the API, {listings} sequential calls each (ms; agent CPU per listing in ms)\n"
    );
    println!(
        "| listing                    | items |      p50 |      p90 |      p99 |      max | agent CPU/op |"
    );
    println!(
        "|----------------------------|------:|---------:|---------:|---------:|---------:|-------------:|"
    );
    let host = agent.host_id.clone();
    measure(
        &cp,
        &admin,
        pid,
        "systemd units",
        &format!("/api/hosts/{host}/services?kind=systemd"),
        listings,
        units,
    )
    .await;
    measure(
        &cp,
        &admin,
        pid,
        "docker containers",
        &format!("/api/hosts/{host}/services?kind=docker"),
        listings,
        containers,
    )
    .await;
    println!("\nRerun: cargo build --release --bins && cargo bench -p axon-e2e --bench services");
}
