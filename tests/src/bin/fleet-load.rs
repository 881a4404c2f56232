//! The fleet load harness: a real axon-cp and N real agent links (see `axon_e2e::load`),
//! measured side by side for several N in one run. Run by `scripts/loadtest`; figures go to
//! docs/benchmarks.md.
//!
//! `fleet-load run --agents 1000,5000,19500` prints one table. The agents live in worker
//! processes of up to `--per-worker` links each (`fleet-load worker`, started by `run`), since
//! one process may hold only so many descriptors.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a harness prints its table

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axon_e2e::load::{self, Stats, Target};
use axon_e2e::{ControlPlane, percentile};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure each fleet size in turn against a fresh control plane.
    Run {
        /// Fleet sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,5000,19500")]
        agents: Vec<usize>,
        /// Agent links per worker process.
        #[arg(long, default_value_t = 5000)]
        per_worker: usize,
        /// Seconds of idle measurement (pings every 15 s).
        #[arg(long, default_value_t = 30)]
        idle_secs: u64,
        /// Hosts pinged at once in the fan-out.
        #[arg(long, default_value_t = 1000)]
        fanout: usize,
        /// Idle TCP connections opened on the API listener (at the first size only).
        #[arg(long, default_value_t = 3000)]
        idle_connections: usize,
        /// Loopback source addresses the agents dial from.
        #[arg(long, default_value_t = 16)]
        sources: usize,
    },
    /// A worker: enrolls its agents, waits for a line on stdin, connects them, reports.
    Worker {
        #[arg(long)]
        api: String,
        #[arg(long)]
        agent_port: u16,
        #[arg(long)]
        ca: std::path::PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        first_source: u8,
        #[arg(long)]
        sources: usize,
        #[arg(long)]
        prefix: String,
    },
}

#[tokio::main]
async fn main() {
    match Cli::parse().command {
        Cmd::Worker {
            api,
            agent_port,
            ca,
            count,
            first_source,
            sources,
            prefix,
        } => worker(api, agent_port, ca, count, first_source, sources, prefix).await,
        Cmd::Run {
            agents,
            per_worker,
            idle_secs,
            fanout,
            idle_connections,
            sources,
        } => {
            let limit = load::raise_fd_limit();
            let mut rows = Vec::new();
            for (i, n) in agents.iter().enumerate() {
                let idle = if i == 0 { idle_connections } else { 0 };
                eprintln!("== {n} agents");
                rows.push(tier(*n, per_worker, idle_secs, fanout, idle, sources, limit).await);
            }
            print_table(&agents, &rows, limit);
        }
    }
}

async fn worker(
    api: String,
    agent_port: u16,
    ca: std::path::PathBuf,
    count: usize,
    first_source: u8,
    sources: usize,
    prefix: String,
) {
    load::raise_fd_limit();
    let admin = std::env::var("AXON_LOAD_ADMIN").expect("AXON_LOAD_ADMIN");
    let ca_pem = std::fs::read_to_string(&ca).expect("ca");
    let http = load::client(&ca_pem, 32);
    let identities = match load::enroll(&http, &api, &ca_pem, &admin, count, 16, &prefix).await {
        Ok(ids) => ids,
        Err(e) => {
            println!("{{\"error\": {:?}}}", e);
            std::process::exit(1);
        }
    };
    println!("{{\"enrolled\": {}}}", identities.len());
    let _ = std::io::stdout().flush();
    // Wait for the go.
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let target = Arc::new(Target::new(api, agent_port, sources, first_source));
    let stats = Arc::new(Stats::default());
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    for (i, identity) in identities.into_iter().enumerate() {
        tokio::spawn(load::run_agent(
            Arc::new(identity),
            target.clone(),
            i,
            stats.clone(),
            stop.clone(),
        ));
        // Dial in waves, as hosts would come up, not all in one instant.
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    loop {
        println!(
            "{{\"online\": {}, \"failures\": {}}}",
            stats.online.load(Ordering::Relaxed),
            stats.dial_failures.load(Ordering::Relaxed)
        );
        let _ = std::io::stdout().flush();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The workers of a tier and their latest reports.
struct Workers {
    children: Vec<Child>,
    enrolled: Arc<Vec<AtomicUsize>>,
    online: Arc<Vec<AtomicUsize>>,
    failures: Arc<Vec<AtomicU64>>,
}

impl Workers {
    fn online(&self) -> usize {
        self.online.iter().map(|o| o.load(Ordering::Relaxed)).sum()
    }
    fn enrolled(&self) -> usize {
        self.enrolled
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .sum()
    }
    fn failures(&self) -> u64 {
        self.failures
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .sum()
    }
    fn go(&mut self) {
        for c in &mut self.children {
            if let Some(stdin) = c.stdin.as_mut() {
                let _ = stdin.write_all(b"go\n");
                let _ = stdin.flush();
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_workers(
    cp: &ControlPlane,
    admin: &str,
    n: usize,
    per_worker: usize,
    sources: usize,
) -> Workers {
    let count = n.div_ceil(per_worker.max(1));
    let enrolled: Arc<Vec<AtomicUsize>> =
        Arc::new((0..count).map(|_| AtomicUsize::new(0)).collect());
    let online: Arc<Vec<AtomicUsize>> = Arc::new((0..count).map(|_| AtomicUsize::new(0)).collect());
    let failures: Arc<Vec<AtomicU64>> = Arc::new((0..count).map(|_| AtomicU64::new(0)).collect());
    let ca = cp.data_dir().join("pki/ca.pem");
    let mut children = Vec::new();
    for w in 0..count {
        let share = per_worker.min(n - w * per_worker);
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args(["worker", "--api", &cp.server()])
            .args(["--agent-port", &cp.agent_port.to_string()])
            .arg("--ca")
            .arg(&ca)
            .args(["--count", &share.to_string()])
            .args(["--first-source", &(2 + (w * sources) % 250).to_string()])
            .args(["--sources", &sources.to_string()])
            .args(["--prefix", &format!("load-{w}")])
            .env("AXON_LOAD_ADMIN", admin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a worker");
        let out = child.stdout.take().expect("stdout");
        let (enrolled, online, failures) = (enrolled.clone(), online.clone(), failures.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if let Some(e) = v["error"].as_str() {
                    eprintln!("worker {w}: {e}");
                }
                if let Some(n) = v["enrolled"].as_u64() {
                    enrolled[w].store(n as usize, Ordering::Relaxed);
                }
                if let Some(n) = v["online"].as_u64() {
                    online[w].store(n as usize, Ordering::Relaxed);
                }
                if let Some(n) = v["failures"].as_u64() {
                    failures[w].store(n, Ordering::Relaxed);
                }
            }
        });
        children.push(child);
    }
    Workers {
        children,
        enrolled,
        online,
        failures,
    }
}

/// Waits until `check` holds (polling every 50 ms) or `limit` passes; the time it took.
async fn until(limit: Duration, check: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[derive(Default)]
struct Row {
    enroll_secs: f64,
    connect_secs: Option<f64>,
    rss_base_mib: f64,
    rss_kib_per_agent: f64,
    idle_cpu_pct: f64,
    fanout: Option<(usize, f64, f64, f64)>,
    registry: Option<(f64, f64, usize)>,
    storm_secs: Option<f64>,
    storm_api: Option<(f64, f64, usize, usize)>,
    idle_conn_kib: Option<f64>,
    idle_conn_closed_secs: Option<f64>,
    dial_failures: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn tier(
    n: usize,
    per_worker: usize,
    idle_secs: u64,
    fanout: usize,
    idle_connections: usize,
    sources: usize,
    fd_limit: u64,
) -> Row {
    let mut row = Row::default();
    let mut cp =
        ControlPlane::start_with_env(&["--ping-interval", "15s"], &[("AXON_LOG", "warn")]).await;
    let admin = cp.admin_token().await;
    let pid = cp.pid().expect("pid");
    let (base_rss, _) = load::process_usage(pid).expect("usage");
    row.rss_base_mib = base_rss as f64 / 1048576.0;

    // Enrollment through the real path, then every link at once.
    let started = Instant::now();
    let mut workers = start_workers(&cp, &admin, n, per_worker, sources);
    until(Duration::from_secs(1800), || workers.enrolled() >= n)
        .await
        .unwrap_or_else(|| panic!("enrollment stalled at {} of {n}", workers.enrolled()));
    row.enroll_secs = started.elapsed().as_secs_f64();
    eprintln!("   enrolled {n} in {:.1} s", row.enroll_secs);
    workers.go();
    row.connect_secs = until(Duration::from_secs(600), || workers.online() >= n)
        .await
        .map(|d| d.as_secs_f64());
    eprintln!(
        "   online: {} of {n} after {:?}",
        workers.online(),
        row.connect_secs
    );

    // Idle: memory per agent and CPU with pings every 15 s.
    let (rss0, cpu0) = load::process_usage(pid).expect("usage");
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let (rss1, cpu1) = load::process_usage(pid).expect("usage");
    row.idle_cpu_pct = (cpu1 - cpu0).as_secs_f64() / wall.elapsed().as_secs_f64() * 100.0;
    row.rss_kib_per_agent = (rss0.max(rss1) as f64 - base_rss as f64) / 1024.0 / n as f64;

    // The registry, by pages of 100, and the ids for the fan-out.
    let http = load::client(&cp.ca().0, 256);
    let mut ids = Vec::new();
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let url = match &after {
            Some(a) => cp.url(&format!("/api/hosts?limit=100&after={a}")),
            None => cp.url("/api/hosts?limit=100"),
        };
        let t = Instant::now();
        let answer = http
            .get(url)
            .bearer_auth(&admin)
            .send()
            .await
            .expect("hosts");
        let next = answer
            .headers()
            .get("x-axon-next")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let page: Vec<serde_json::Value> = answer.json().await.expect("json");
        pages.push(ms(t.elapsed()));
        ids.extend(
            page.iter()
                .filter_map(|h| h["id"].as_str().map(str::to_owned)),
        );
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    pages.sort_by(f64::total_cmp);
    row.registry = Some((
        percentile(&pages, 50.0),
        percentile(&pages, 99.0),
        ids.len(),
    ));

    // Fan-out: one ping to many hosts at once, as many connections as the descriptors allow.
    let wanted = fanout.min(ids.len());
    let room = (fd_limit as usize).saturating_sub(n + 400);
    let parallel = wanted.min(room).max(1);
    let fan_client = load::client(&cp.ca().0, parallel);
    // Connections opened first, as a dashboard's would be: the fan-out measures the pings.
    futures_util::stream::iter(0..parallel)
        .map(|_| fan_client.get(cp.url("/healthz")).send())
        .buffer_unordered(parallel)
        .for_each(|_| async {})
        .await;
    let t = Instant::now();
    let mut lat: Vec<f64> = futures_util::stream::iter(ids.iter().take(wanted).cloned())
        .map(|id| {
            let (c, a, url) = (
                &fan_client,
                &admin,
                cp.url(&format!("/api/hosts/{id}/ping")),
            );
            async move {
                let t = Instant::now();
                let ok = c
                    .post(url)
                    .bearer_auth(a)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                (ok, ms(t.elapsed()))
            }
        })
        .buffer_unordered(parallel)
        .filter_map(|(ok, l)| async move { ok.then_some(l) })
        .collect()
        .await;
    let all = ms(t.elapsed());
    lat.sort_by(f64::total_cmp);
    row.fanout = Some((lat.len(), percentile(&lat, 99.0), all, parallel as f64));

    // Idle TCP connections that never start TLS, on the API listener.
    if idle_connections > 0 {
        let (before, _) = load::process_usage(pid).expect("usage");
        let mut held = Vec::new();
        for i in 0..idle_connections {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            let _ = socket.bind(std::net::SocketAddr::from((
                [127, 0, 0, 200 + (i % 50) as u8],
                0,
            )));
            if let Ok(s) = socket
                .connect(std::net::SocketAddr::from(([127, 0, 0, 1], cp.api_port)))
                .await
            {
                held.push(s);
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (during, _) = load::process_usage(pid).expect("usage");
        row.idle_conn_kib =
            Some((during as f64 - before as f64) / 1024.0 / held.len().max(1) as f64);
        let t = Instant::now();
        let closed = Arc::new(AtomicUsize::new(0));
        let total = held.len();
        for s in held {
            let closed = closed.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut s = s;
                let mut buf = [0u8; 16];
                let _ = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await;
                closed.fetch_add(1, Ordering::Relaxed);
            });
        }
        row.idle_conn_closed_secs = until(Duration::from_secs(61), || {
            closed.load(Ordering::Relaxed) >= total
        })
        .await
        .map(|_| t.elapsed().as_secs_f64() + 2.0);
    }

    // The storm: kill -9 with every agent online, restart, time until all are back, and the
    // API's latency meanwhile.
    let killed = Instant::now();
    cp.kill9();
    until(Duration::from_secs(120), || workers.online() == 0).await;
    cp.spawn().await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (done, ids, http, admin) = (
            done.clone(),
            ids.clone(),
            load::client(&cp.ca().0, 8),
            admin.clone(),
        );
        let base = cp.server();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0usize;
            let mut i = 0usize;
            while !done.load(Ordering::Relaxed) {
                let batch: Vec<_> = (0..8)
                    .map(|k| {
                        let id = &ids[(i * 8 + k) % ids.len().max(1)];
                        let url = format!("{base}/api/hosts/{id}");
                        let (http, admin) = (&http, &admin);
                        async move {
                            let t = Instant::now();
                            let ok = http
                                .get(url)
                                .bearer_auth(admin)
                                .send()
                                .await
                                .is_ok_and(|r| r.status().is_success());
                            (ok, ms(t.elapsed()))
                        }
                    })
                    .collect();
                for (ok, l) in futures_util::future::join_all(batch).await {
                    if ok {
                        lat.push(l);
                    } else {
                        failed += 1;
                    }
                }
                i += 1;
            }
            (lat, failed)
        })
    };
    row.storm_secs = until(Duration::from_secs(300), || workers.online() >= n)
        .await
        .map(|_| killed.elapsed().as_secs_f64());
    done.store(true, Ordering::Relaxed);
    let (mut lat, failed) = probe.await.expect("probe");
    lat.sort_by(f64::total_cmp);
    row.storm_api = Some((
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.len(),
        failed,
    ));
    row.dial_failures = workers.failures();
    eprintln!("   storm: back in {:?} s", row.storm_secs);
    drop(workers);
    cp.terminate();
    row
}

fn print_table(agents: &[usize], rows: &[Row], fd_limit: u64) {
    let cell = |f: &dyn Fn(&Row) -> String| rows.iter().map(f).collect::<Vec<_>>().join(" | ");
    let opt = |v: Option<f64>, unit: &str| {
        v.map_or("did not finish".to_owned(), |v| format!("{v:.1} {unit}"))
    };
    println!();
    println!(
        "| measured | {} |",
        agents
            .iter()
            .map(|n| format!("{n} agents"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}|", vec!["---"; agents.len()].join("|"));
    println!(
        "| enrollment (tokens + CSRs, 16 at a time per worker) | {} |",
        cell(&|r| format!("{:.1} s", r.enroll_secs))
    );
    println!(
        "| all links up (TLS 1.3, upgrade, hello) | {} |",
        cell(&|r| opt(r.connect_secs, "s"))
    );
    println!(
        "| axon-cp RSS before agents | {} |",
        cell(&|r| format!("{:.1} MiB", r.rss_base_mib))
    );
    println!(
        "| axon-cp RSS per agent | {} |",
        cell(&|r| format!("{:.1} KiB", r.rss_kib_per_agent))
    );
    println!(
        "| axon-cp CPU at idle (pings every 15 s) | {} |",
        cell(&|r| format!("{:.2} %", r.idle_cpu_pct))
    );
    println!(
        "| GET /api/hosts?limit=100, all pages: p50 / p99 | {} |",
        cell(&|r| r.registry.map_or("-".into(), |(p50, p99, n)| format!(
            "{p50:.1} / {p99:.1} ms ({n} hosts)"
        )))
    );
    println!(
        "| fan-out ping: answered, p99, all done (connections) | {} |",
        cell(
            &|r| r.fanout.map_or("-".into(), |(ok, p99, all, par)| format!(
                "{ok}, {p99:.0} ms, {all:.0} ms ({par:.0})"
            ))
        )
    );
    println!(
        "| kill -9, restart: all back online | {} |",
        cell(&|r| opt(r.storm_secs, "s"))
    );
    println!(
        "| GET /api/hosts/{{id}} during the storm: p50 / p99 (ok, failed) | {} |",
        cell(&|r| r
            .storm_api
            .map_or("-".into(), |(p50, p99, ok, bad)| format!(
                "{p50:.1} / {p99:.1} ms ({ok}, {bad})"
            )))
    );
    println!(
        "| idle TCP connection on the API listener: memory, all closed after | {} |",
        cell(&|r| match (r.idle_conn_kib, r.idle_conn_closed_secs) {
            (Some(k), c) => format!("{k:.1} KiB, {}", opt(c, "s")),
            _ => "-".into(),
        })
    );
    println!(
        "| agents' failed dials | {} |",
        cell(&|r| r.dial_failures.to_string())
    );
    println!("\nOpen-file limit: {fd_limit}. Rerun: scripts/loadtest");
}
