//! The LLM gateway side by side with LiteLLM's proxy, both in front of the same Rust mock
//! upstream (`mock-llm`, release build), plain HTTP on loopback, `TCP_NODELAY` everywhere.
//! Prints one table:
//! - added latency p50 / p99 at concurrency 1 over calling the mock directly;
//! - sustained requests per second with p99 under 1 s against a mock answering in 20 ms;
//! - concurrent streams of 64 deltas paced 20 ms: how many finish without a gap over 200 ms;
//! - the gateway's RSS during the streams;
//! - the link path: a stream from an agent-side mock Ollama through the agent's link against
//!   the same mock called directly.
//!
//! Run: `scripts/bench-llm` (installs LiteLLM into target/ with scripts/litellm-env; without it
//! the LiteLLM column says so). Knobs: REQUESTS (c=1 requests, 2000), SECONDS (per load level,
//! 5), LEVELS (comma-separated concurrencies, 32,64,128,256,512), STREAMS (1000).

#![allow(clippy::print_stdout)] // a bench binary prints its table

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axon_e2e::failover::{self, Seen};
use axon_e2e::mock_llm::{Behaviour, MockLlm, closed_port};
use axon_e2e::{Agent, ControlPlane, bin, env_count, free_port, percentile, wait_until};
use serde_json::{Value, json};

/// A child process started in a process group of its own, killed with the group on drop
/// (LiteLLM's workers are children of the process started here and outlive it otherwise).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `mock-llm` with these flags; returns it and its address.
fn mock(flags: &[&str]) -> (Proc, String) {
    use std::io::BufRead as _;
    let mut child = Command::new(bin("mock-llm"))
        .args(flags)
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mock-llm");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();
    (Proc(child), addr)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One gateway under test: where to send requests, with what key, and its process.
struct Target {
    name: &'static str,
    base: String,
    key: String,
    pid: Option<u32>,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .expect("client")
}

fn body(model: &str, stream: bool) -> Vec<u8> {
    serde_json::to_vec(&json!({"model": model, "stream": stream,
        "messages": [{"role": "user", "content": "benchmark this request please"}]}))
    .expect("json")
}

async fn one(client: &reqwest::Client, t: &Target, payload: &[u8]) -> Result<(), String> {
    let resp = client
        .post(format!("{}/v1/chat/completions", t.base))
        .bearer_auth(&t.key)
        .header("content-type", "application/json")
        .body(payload.to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    Ok(())
}

/// Sequential requests: sorted latencies in microseconds, and the sorted
/// `x-axon-overhead-us` figures where the gateway reports them.
async fn latency_c1(t: &Target, model: &str, n: usize) -> (Vec<f64>, Vec<f64>) {
    let client = client();
    let payload = body(model, false);
    for _ in 0..50 {
        one(&client, t, &payload).await.expect("warm-up");
    }
    let mut out = Vec::with_capacity(n);
    let mut own = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let resp = client
            .post(format!("{}/v1/chat/completions", t.base))
            .bearer_auth(&t.key)
            .header("content-type", "application/json")
            .body(payload.clone())
            .send()
            .await
            .expect("request");
        let overhead = resp
            .headers()
            .get("x-axon-overhead-us")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok());
        assert!(resp.status().is_success(), "{}", resp.status());
        resp.bytes().await.expect("body");
        out.push(started.elapsed().as_secs_f64() * 1e6);
        own.extend(overhead);
    }
    out.sort_by(f64::total_cmp);
    own.sort_by(f64::total_cmp);
    (out, own)
}

/// `level` loops for `secs`: completed per second, p99 (ms) and the error count.
async fn load(t: &Target, model: &str, level: usize, secs: u64) -> (f64, f64, u64, u64) {
    let client = client();
    let payload = Arc::new(body(model, false));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let errors = Arc::new(AtomicU64::new(0));
    let loops: Vec<_> = (0..level)
        .map(|_| {
            let (client, payload, errors) = (client.clone(), payload.clone(), errors.clone());
            let t = Target {
                name: t.name,
                base: t.base.clone(),
                key: t.key.clone(),
                pid: None,
            };
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    match one(&client, &t, &payload).await {
                        Ok(()) => lat.push(started.elapsed().as_secs_f64() * 1000.0),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Vec::new();
    for l in loops {
        all.extend(l.await.unwrap_or_default());
    }
    let took = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let p99 = if all.is_empty() {
        f64::INFINITY
    } else {
        percentile(&all, 99.0)
    };
    (
        all.len() as f64 / took,
        p99,
        errors.load(Ordering::Relaxed),
        all.len() as u64,
    )
}

/// The highest rate whose p99 stays under 1 s with under 0.1 % errors.
async fn sustained(t: &Target, model: &str, levels: &[usize], secs: u64) -> (f64, usize, f64) {
    let mut best = (0.0, 0, 0.0);
    for &level in levels {
        let (rps, p99, errors, done) = load(t, model, level, secs).await;
        let ok = p99 < 1000.0 && (errors as f64) < 0.001 * (done + errors) as f64;
        println!(
            "  {:<8} c={level:<5} {rps:>8.0} req/s  p99 {p99:>7.1} ms  errors {errors}{}",
            t.name,
            if ok { "" } else { "  (over the bar)" }
        );
        if ok && rps > best.0 {
            best = (rps, level, p99);
        }
        if !ok {
            break;
        }
    }
    best
}

/// `n` concurrent streams: how many completed with `[DONE]` and no gap over 200 ms, the
/// largest gap seen, and the peak RSS of `pid` meanwhile.
async fn streams(t: &Target, model: &str, n: usize) -> (usize, f64, u64) {
    let client = client();
    let payload = Arc::new(body(model, true));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = t.pid.map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, payload) = (client.clone(), payload.clone());
            let (base, key) = (t.base.clone(), t.key.clone());
            tokio::spawn(async move {
                let Ok(mut resp) = client
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(payload.to_vec())
                    .send()
                    .await
                else {
                    return (false, f64::INFINITY);
                };
                if !resp.status().is_success() {
                    return (false, f64::INFINITY);
                }
                let mut last: Option<Instant> = None;
                let mut worst = 0.0f64;
                let mut tail = Vec::new();
                while let Ok(Some(piece)) = resp.chunk().await {
                    let now = Instant::now();
                    if let Some(l) = last {
                        worst = worst.max((now - l).as_secs_f64() * 1000.0);
                    }
                    last = Some(now);
                    tail.extend_from_slice(&piece);
                    if tail.len() > 64 {
                        tail.drain(..tail.len() - 64);
                    }
                }
                let done = String::from_utf8_lossy(&tail).contains("[DONE]");
                (done && worst <= 200.0, worst)
            })
        })
        .collect();
    let mut ok = 0;
    let mut worst = 0.0f64;
    for task in tasks {
        let (good, gap) = task.await.unwrap_or((false, f64::INFINITY));
        ok += usize::from(good);
        worst = worst.max(gap);
    }
    if let Some(s) = sampler {
        s.abort();
    }
    (ok, worst, peak.load(Ordering::Relaxed))
}

/// axon-cp over plain HTTP on loopback with the mocks as OpenAI providers; returns it and a
/// key for the gateway.
async fn start_axon(dir: &Path, mocks: &[(&str, &str)]) -> (Proc, Target) {
    let data = dir.join("data");
    let out = Command::new(bin("axon-cp"))
        .args(["init", "--data-dir"])
        .arg(&data)
        .args(["--admin-email", "bench@axon.test"])
        .env("AXON_ADMIN_PASSWORD", "bench password 1234")
        .output()
        .expect("init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut config = String::new();
    for (name, addr) in mocks {
        config.push_str(&format!(
            "[[providers]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\napi_key = \"sk-bench\"\n"
        ));
    }
    std::fs::write(dir.join("llm.toml"), config).expect("config");
    let port = free_port();
    let child = Command::new(bin("axon-cp"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--api-listen", &format!("127.0.0.1:{port}")])
        .args(["--agent-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--insecure-http")
        .arg("--llm-config")
        .arg(dir.join("llm.toml"))
        .env("AXON_LOG", "warn")
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn axon-cp");
    let pid = child.id();
    let proc = Proc(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = client();
    wait_until(Duration::from_secs(20), || async {
        http.get(format!("{base}/healthz")).send().await.is_ok()
    })
    .await
    .expect("axon-cp up");
    let login: Value = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "bench@axon.test", "password": "bench password 1234"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("token");
    let created: Value = http
        .post(format!("{base}/api/api-keys"))
        .bearer_auth(token)
        .json(&json!({"name": "bench", "role": "operator", "scopes": ["llm:invoke"]}))
        .send()
        .await
        .expect("key")
        .json()
        .await
        .expect("json");
    let key = created["key"].as_str().expect("key").to_owned();
    (
        proc,
        Target {
            name: "axon-cp",
            base,
            key,
            pid: Some(pid),
        },
    )
}

/// LiteLLM's proxy refuses to start without a master key; both gateways check a key.
const LITELLM_KEY: &str = "sk-bench-master-key-0123456789";

fn litellm_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LITELLM") {
        return Some(p.into());
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/litellm-venv/bin/litellm");
    p.exists().then_some(p)
}

/// LiteLLM's proxy, no database, the same mocks as OpenAI-compatible models.
async fn start_litellm(dir: &Path, mocks: &[(&str, &str)]) -> Option<(Proc, Target)> {
    let litellm = litellm_bin()?;
    let mut config = String::from("model_list:\n");
    for (name, addr) in mocks {
        config.push_str(&format!(
            "  - model_name: {name}/m\n    litellm_params:\n      model: openai/m\n      api_base: http://{addr}/v1\n      api_key: sk-bench\n"
        ));
    }
    config.push_str("litellm_settings:\n  drop_params: true\n  request_timeout: 60\n");
    config.push_str(&format!("general_settings:\n  master_key: {LITELLM_KEY}\n"));
    std::fs::write(dir.join("litellm.yaml"), config).expect("config");
    let port = free_port();
    let child = Command::new(litellm)
        .arg("--config")
        .arg(dir.join("litellm.yaml"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--num_workers",
            &env_count("LITELLM_WORKERS", 2).to_string(),
        ])
        .env("LITELLM_LOG", "ERROR")
        .env("LITELLM_TELEMETRY", "False")
        .env("DISABLE_SCHEMA_UPDATE", "true")
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let pid = child.id();
    let proc = Proc(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = client();
    wait_until(Duration::from_secs(180), || async {
        http.get(format!("{base}/health/liveliness"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await?;
    Some((
        proc,
        Target {
            name: "LiteLLM",
            base,
            key: LITELLM_KEY.into(),
            pid: Some(pid),
        },
    ))
}

/// A stream to an agent-side mock Ollama through the link, against the mock directly:
/// median time to the last byte of `n` sequential streams, each way.
async fn link_overhead(n: usize) -> (f64, f64) {
    let (_ollama, addr) = mock(&["--deltas", "64"]);
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    agent.start(&["--capabilities-interval", "1s", "--ollama-address", &addr]);
    wait_until(Duration::from_secs(30), || async {
        let (_, h) = cp
            .call(
                reqwest::Method::GET,
                &format!("/api/hosts/{}", agent.host_id),
                Some(&admin),
                None,
            )
            .await;
        h["online"] == true && h["model_servers"]["ollama"].is_object()
    })
    .await
    .expect("agent with Ollama online");
    let direct = client();
    let ollama_body = serde_json::to_vec(&json!({"model": "llama3.2", "stream": true,
        "messages": [{"role": "user", "content": "benchmark"}]}))
    .expect("json");
    let gateway_body = body("ollama/llama3.2", true);
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let r = direct
            .post(format!("http://{addr}/api/chat"))
            .body(ollama_body.clone())
            .send()
            .await
            .expect("direct");
        r.bytes().await.expect("body");
        a.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        let r = cp
            .client
            .post(cp.url("/v1/chat/completions"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(gateway_body.clone())
            .send()
            .await
            .expect("gateway");
        assert!(r.status().is_success());
        let text = r.text().await.expect("body");
        assert!(text.contains("[DONE]"));
        b.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    (percentile(&a, 50.0), percentile(&b, 50.0))
}

/// The fail-over suite (tests/src/failover.rs) against one gateway: fresh mocks, one call
/// per scenario; returns each scenario's verdict.
async fn failover_run(litellm: bool, dir: &Path) -> Option<Vec<bool>> {
    let scenarios = failover::scenarios();
    let secondary = MockLlm::start(Behaviour {
        label: "secondary".into(),
        deltas: 4,
        record: false,
        ..Behaviour::default()
    })
    .await;
    let refused = closed_port().await;
    let mut primaries = Vec::new();
    let mut bases = Vec::new();
    for s in &scenarios {
        match &s.fault {
            Some(fault) => {
                let m = MockLlm::start(Behaviour {
                    label: "primary".into(),
                    deltas: 4,
                    record: false,
                    ..Behaviour::fault(fault.clone())
                })
                .await;
                bases.push(format!("{}/v1", m.base_url()));
                primaries.push(m);
            }
            None => bases.push(format!("http://{refused}/v1")),
        }
    }
    let sec = format!("{}/v1", secondary.base_url());
    // The control plane under test, alive for the whole run.
    let mut axon: Option<ControlPlane> = None;
    let (_proc, base, key, client): (Option<Proc>, String, String, reqwest::Client) = if litellm {
        let bin = litellm_bin()?;
        let mut yaml = format!(
            "model_list:\n  - model_name: sec\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: {sec}\n      api_key: sk-x\n"
        );
        let mut fallbacks = Vec::new();
        for (i, b) in bases.iter().enumerate() {
            yaml.push_str(&format!(
                "  - model_name: s{i}\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: {b}\n      api_key: sk-x\n      timeout: 10\n      stream_timeout: 1\n"
            ));
            fallbacks.push(format!("{{\"s{i}\": [\"sec\"]}}"));
        }
        yaml.push_str(&format!(
            "router_settings:\n  num_retries: 0\n  fallbacks: [{}]\nlitellm_settings:\n  drop_params: true\ngeneral_settings:\n  master_key: {LITELLM_KEY}\n",
            fallbacks.join(", ")
        ));
        std::fs::write(dir.join("failover.yaml"), yaml).expect("config");
        let port = free_port();
        let child = Command::new(bin)
            .arg("--config")
            .arg(dir.join("failover.yaml"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env("LITELLM_LOG", "ERROR")
            .env("LITELLM_TELEMETRY", "False")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let base = format!("http://127.0.0.1:{port}");
        let http = client();
        wait_until(Duration::from_secs(180), || async {
            http.get(format!("{base}/health/liveliness"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await?;
        (Some(Proc(child)), base, LITELLM_KEY.into(), client())
    } else {
        let mut config =
            format!("[[providers]]\nname = \"sec\"\nkind = \"openai\"\nbase_url = \"{sec}\"\n");
        for (i, b) in bases.iter().enumerate() {
            config.push_str(&format!(
                "[[providers]]\nname = \"p{i}\"\nkind = \"openai\"\nbase_url = \"{b}\"\n\
                 timeouts = {{ first_byte_ms = 1000, idle_ms = 1000, total_ms = 10000 }}\n\
                 [[aliases]]\nname = \"s{i}\"\ntargets = [{{ model = \"p{i}/gpt-4o-mini\" }}, {{ model = \"sec/gpt-4o-mini\" }}]\n"
            ));
        }
        std::fs::write(dir.join("failover.toml"), config).expect("config");
        let cp = ControlPlane::start(&[
            "--llm-config",
            dir.join("failover.toml").to_str().expect("utf-8"),
        ])
        .await;
        let token = cp.admin_token().await;
        let (base, client) = (cp.server(), cp.client.clone());
        axon = Some(cp);
        (None, base, token, client)
    };
    let mut verdicts = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        let before = secondary.count();
        let started = Instant::now();
        let resp = client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": format!("s{i}"), "stream": s.stream,
                "messages": [{"role": "user", "content": "ping"}]}))
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        let (status, body) = match resp {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        };
        let seen = Seen {
            status,
            body,
            secondary_calls: secondary.count() - before,
            took: started.elapsed(),
        };
        verdicts.push(failover::passes(s, &seen));
    }
    drop(axon);
    Some(verdicts)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks for a listing
    }
    let requests = env_count("REQUESTS", 2000);
    let secs = env_count("SECONDS", 5) as u64;
    let stream_count = env_count("STREAMS", 1000);
    let levels: Vec<usize> = std::env::var("LEVELS")
        .unwrap_or_else(|_| "32,64,128,256,512".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let (_m0, instant) = mock(&[]);
    let (_m20, slow) = mock(&["--delay-ms", "20"]);
    let (_ms, paced) = mock(&["--deltas", "64", "--pace-ms", "20"]);
    let mocks = [
        ("m0", instant.as_str()),
        ("m20", slow.as_str()),
        ("ms", paced.as_str()),
    ];
    let work = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(work.path().join("axon")).expect("dir");
    std::fs::create_dir_all(work.path().join("litellm")).expect("dir");
    let (_axon, axon) = start_axon(&work.path().join("axon"), &mocks).await;
    let litellm = start_litellm(&work.path().join("litellm"), &mocks).await;
    if litellm.is_none() {
        println!("LiteLLM is not installed (scripts/litellm-env): its column is empty");
    }
    let direct = Target {
        name: "direct",
        base: format!("http://{instant}"),
        key: "sk-bench".into(),
        pid: None,
    };
    let mut targets: Vec<&Target> = vec![&axon];
    if let Some((_, t)) = &litellm {
        targets.push(t);
    }

    println!("c=1, {requests} requests each (mock answers at once)");
    let (base, _) = latency_c1(&direct, "m", requests).await;
    let mut added = Vec::new();
    let mut own_time = None;
    for t in &targets {
        let (l, own) = latency_c1(t, "m0/m", requests).await;
        added.push((
            t.name,
            percentile(&l, 50.0) - percentile(&base, 50.0),
            percentile(&l, 99.0) - percentile(&base, 99.0),
        ));
        if !own.is_empty() {
            own_time = Some((percentile(&own, 50.0), percentile(&own, 99.0)));
        }
    }
    println!(
        "  direct p50 {:.0} µs p99 {:.0} µs",
        percentile(&base, 50.0),
        percentile(&base, 99.0)
    );
    println!("sustained load against a mock answering in 20 ms, {secs} s per level");
    let mut rates = Vec::new();
    for t in &targets {
        rates.push((t.name, sustained(t, "m20/m", &levels, secs).await));
    }
    println!("{stream_count} concurrent streams of 64 deltas paced 20 ms");
    let mut stream_rows = Vec::new();
    for t in &targets {
        let (ok, worst, rss) = streams(t, "ms/m", stream_count).await;
        stream_rows.push((t.name, ok, worst, rss));
    }
    println!("link path: 200 sequential streams of 64 deltas to an agent-side mock Ollama");
    let (direct_ms, link_ms) = link_overhead(env_count("LINK_STREAMS", 200)).await;
    println!("fail-over suite (16 scenarios)");
    let axon_failover = failover_run(false, work.path()).await.unwrap_or_default();
    let litellm_failover = failover_run(true, work.path()).await;
    println!("| scenario | axon-cp | LiteLLM |\n|---|:-:|:-:|");
    let mark = |v: Option<&bool>| match v {
        Some(true) => "pass",
        Some(false) => "FAIL",
        None => "—",
    };
    for (i, s) in failover::scenarios().iter().enumerate() {
        println!(
            "| {} | {} | {} |",
            s.name,
            mark(axon_failover.get(i)),
            mark(litellm_failover.as_ref().and_then(|v| v.get(i)))
        );
    }
    let score = |v: &[bool]| format!("{} / {}", v.iter().filter(|p| **p).count(), v.len());

    println!();
    println!(
        "| | axon-cp | LiteLLM {} |",
        if litellm.is_some() {
            "1.106.12"
        } else {
            "(not run)"
        }
    );
    println!("|---|--:|--:|");
    let cell = |name: &str, v: &dyn Fn(usize) -> String| {
        targets
            .iter()
            .position(|t| t.name == name)
            .map(v)
            .unwrap_or_else(|| "—".into())
    };
    println!(
        "| added latency p50 / p99 at c=1 | {} | {} |",
        cell("axon-cp", &|i| format!(
            "{:.0} µs / {:.0} µs",
            added[i].1, added[i].2
        )),
        cell("LiteLLM", &|i| format!(
            "{:.0} µs / {:.0} µs",
            added[i].1, added[i].2
        )),
    );
    if let Some((p50, p99)) = own_time {
        println!(
            "| gateway's own time p50 / p99 (`x-axon-overhead-us`) | {p50:.0} µs / {p99:.0} µs | — |"
        );
    }
    println!(
        "| sustained req/s, p99 < 1 s, mock at 20 ms | {} | {} |",
        cell("axon-cp", &|i| format!(
            "{:.0} (c={}, p99 {:.0} ms)",
            rates[i].1.0, rates[i].1.1, rates[i].1.2
        )),
        cell("LiteLLM", &|i| format!(
            "{:.0} (c={}, p99 {:.0} ms)",
            rates[i].1.0, rates[i].1.1, rates[i].1.2
        )),
    );
    println!(
        "| stall-free streams of {stream_count} (worst gap) | {} | {} |",
        cell("axon-cp", &|i| format!(
            "{} ({:.0} ms)",
            stream_rows[i].1, stream_rows[i].2
        )),
        cell("LiteLLM", &|i| format!(
            "{} ({:.0} ms)",
            stream_rows[i].1, stream_rows[i].2
        )),
    );
    println!(
        "| RSS during the streams | {} | {} |",
        cell("axon-cp", &|i| format!(
            "{:.1} MiB",
            stream_rows[i].3 as f64 / 1024.0
        )),
        cell("LiteLLM", &|i| format!(
            "{:.1} MiB (main process)",
            stream_rows[i].3 as f64 / 1024.0
        )),
    );
    println!(
        "| stream through the agent link vs direct (median, 64 deltas) | {link_ms:.2} ms vs {direct_ms:.2} ms | — |"
    );
    println!(
        "| fail-over suite | {} | {} |",
        score(&axon_failover),
        litellm_failover
            .as_deref()
            .map_or_else(|| "—".into(), score)
    );
    println!("\nrerun: scripts/bench-llm");
    // Stopped here, explicitly: LiteLLM's workers were seen to outlive the run otherwise.
    drop(litellm);
    drop(_axon);
}
