//! API throughput: authenticated `GET /api/hosts/{id}` on a release axon-cp at 64 concurrent
//! keep-alive HTTPS connections, side by side with the ceiling — a bare axum route answering a
//! constant over the same TLS (rustls, aws-lc, TLS 1.3, hyper HTTP/1.1 per connection) in its
//! own process — with the same client on the same machine. Prints one table.
//!
//! Run: `cargo build --release --bins && target/release/api-load run` (`--secs`,
//! `--connections`).

#![allow(clippy::print_stdout, clippy::print_stderr)] // a bench binary prints its table

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axon_e2e::load;
use axon_e2e::{ControlPlane, percentile};
use clap::{Parser, Subcommand};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure the ceiling, then axon-cp.
    Run {
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Rounds, each measuring both in turn; the table shows medians (the machine is
        /// shared, so single runs wander).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The ceiling: a constant over TLS on 127.0.0.1:`port`.
    Ceiling {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match cli.command {
        Cmd::Ceiling { port, cert, key } => runtime.block_on(ceiling(port, cert, key)),
        Cmd::Run {
            secs,
            connections,
            rounds,
        } => runtime.block_on(run(secs, connections, rounds)),
    }
}

async fn ceiling(port: u16, cert: PathBuf, key: PathBuf) {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    let chain = CertificateDer::pem_file_iter(&cert)
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_file(&key).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                .await;
        });
    }
}

struct Figures {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: usize,
}

/// `connections` callers, each on its own keep-alive connection, for `secs` after a second of
/// warm-up.
async fn measure(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    secs: u64,
    connections: usize,
) -> Figures {
    let start = Instant::now();
    let warm = start + Duration::from_secs(1);
    let end = warm + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, token) = (client.clone(), url.to_owned(), token.map(str::to_owned));
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0;
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    let mut request = client.get(&url);
                    if let Some(t) = &token {
                        request = request.bearer_auth(t);
                    }
                    let ok = match request.send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if now >= warm {
                        if ok {
                            lat.push(now.elapsed().as_secs_f64() * 1000.0);
                        } else {
                            errors += 1;
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("caller");
        lat.extend(l);
        errors += e;
    }
    lat.sort_by(f64::total_cmp);
    Figures {
        rps: lat.len() as f64 / secs as f64,
        p50: percentile(&lat, 50.0),
        p99: percentile(&lat, 99.0),
        errors,
    }
}

/// The round with the median throughput.
fn median(mut rounds: Vec<Figures>) -> Figures {
    rounds.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    let mid = rounds.len() / 2;
    rounds.swap_remove(mid)
}

fn client_trusting(ca_pem: &str, connections: usize) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca"))
        .expect("root");
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn run(secs: u64, connections: usize, rounds: usize) {
    load::raise_fd_limit();
    // The ceiling first, in its own process, with a certificate made here.
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("cert file");
    std::fs::write(&key_path, key.serialize_pem()).expect("key file");
    let port = axon_e2e::free_port();
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["ceiling", "--port", &port.to_string()])
        .arg("--cert")
        .arg(&cert_path)
        .arg("--key")
        .arg(&key_path)
        .spawn()
        .expect("start the ceiling");
    let bare_client = client_trusting(&cert.pem(), connections);
    let url = format!("https://localhost:{port}/");
    axon_e2e::wait_until(Duration::from_secs(10), || async {
        bare_client.get(&url).send().await.is_ok()
    })
    .await
    .expect("the ceiling answers");
    // axon-cp: a real host in the registry, a real session token.
    let cp = ControlPlane::start_with_env(&[], &[("AXON_LOG", "warn")]).await;
    let admin = cp.admin_token().await;
    let ca = cp.ca().0;
    let http = load::client(&ca, 4);
    let hosts = load::enroll(&http, &cp.server(), &ca, &admin, 1, 1, "api")
        .await
        .expect("enroll");
    let cp_client = client_trusting(&ca, connections);
    let host_url = cp.url(&format!("/api/hosts/{}", hosts[0].host_id));
    let (mut bares, mut ourses) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        bares.push(measure(&bare_client, &url, None, secs, connections).await);
        ourses.push(measure(&cp_client, &host_url, Some(&admin), secs, connections).await);
    }
    let _ = child.kill();
    let _ = child.wait();
    let bare = median(bares);
    let ours = median(ourses);

    println!();
    println!(
        "{connections} keep-alive HTTPS connections, {secs} s each after 1 s of warm-up, TLS 1.3, median of {rounds} rounds, this machine"
    );
    println!("| route | requests/s | p50 ms | p99 ms | errors | share of the ceiling |");
    println!("|---|---|---|---|---|---|");
    for (name, f) in [
        ("bare axum + rustls, a constant (the ceiling)", &bare),
        ("axon-cp GET /api/hosts/{id}, session token", &ours),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} | {:.0} % |",
            f.rps,
            f.p50,
            f.p99,
            f.errors,
            f.rps / bare.rps * 100.0
        );
    }
    println!("\nRerun: cargo build --release --bins && target/release/api-load run");
}
