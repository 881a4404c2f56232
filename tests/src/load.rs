//! Simulated agents for load and fault runs. Each is a real agent link as agentd makes it: a
//! key pair and a certificate issued by the control plane through its enrollment endpoint
//! (a token from the API, then `POST /api/enroll` with a CSR), TLS 1.3 with that client
//! certificate from a loopback source address of its own, the WebSocket upgrade, the hello,
//! answers to the control plane's requests and WebSocket pings, and reconnects with agentd's
//! own backoff and jitter. Nothing of an agent's host is simulated: no metrics, no audit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use axon_shared::{ErrorCode, Frame, Pong, Response};

/// One enrolled host: its id and the TLS client settings that carry its certificate.
pub struct Identity {
    pub host_id: String,
    config: Arc<rustls::ClientConfig>,
}

/// What every agent of a run shares.
pub struct Target {
    /// The control plane's API, e.g. `https://localhost:8443`.
    pub api: String,
    /// The agent listener.
    pub agent: SocketAddr,
    /// Source addresses the agents dial from, in turn (127.0.0.2 and up), so no one address
    /// runs out of ports.
    pub sources: Vec<IpAddr>,
}

impl Target {
    pub fn new(api: String, agent_port: u16, sources: usize, first: u8) -> Self {
        Self {
            api,
            agent: SocketAddr::from(([127, 0, 0, 1], agent_port)),
            sources: (0..sources.clamp(1, 200))
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, first.saturating_add(i as u8))))
                .collect(),
        }
    }
}

/// Counters of a run's agents.
#[derive(Default)]
pub struct Stats {
    pub online: AtomicUsize,
    pub sessions: AtomicU64,
    pub dial_failures: AtomicU64,
    pub requests: AtomicU64,
}

/// Raises this process's open-file limit to its hard limit (the control plane's own routine);
/// returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    axon_control_plane::raise_open_files()
}

/// An HTTPS client that trusts the control plane's CA, with room for `connections` at once.
pub fn client(ca_pem: &str, connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(crate::api_tls(ca_pem))
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Enrolls `count` hosts through the real path, `parallel` at a time.
pub async fn enroll(
    http: &reqwest::Client,
    api: &str,
    ca_pem: &str,
    admin: &str,
    count: usize,
    parallel: usize,
    prefix: &str,
) -> Result<Vec<Identity>, String> {
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        Arc::new(roots)
    };
    let results = futures_util::stream::iter(0..count)
        .map(|i| {
            let roots = roots.clone();
            async move { enroll_one(http, api, admin, roots, &format!("{prefix}-{i}")).await }
        })
        .buffer_unordered(parallel.max(1))
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

async fn enroll_one(
    http: &reqwest::Client,
    api: &str,
    admin: &str,
    roots: Arc<rustls::RootCertStore>,
    hostname: &str,
) -> Result<Identity, String> {
    let token: Value = http
        .post(format!("{api}/api/enrollment-tokens"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"ttl_secs": 3600}))
        .send()
        .await
        .map_err(|e| format!("token: {e}"))?
        .json()
        .await
        .map_err(|e| format!("token: {e}"))?;
    let token = token["token"]
        .as_str()
        .ok_or_else(|| format!("no token in {token}"))?;
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| e.to_string())?;
    let answer = http
        .post(format!("{api}{}", axon_shared::ENROLL_PATH))
        .json(&axon_shared::EnrollRequest {
            token: token.to_owned(),
            csr_pem: csr,
            hostname: hostname.to_owned(),
        })
        .send()
        .await
        .map_err(|e| format!("enroll: {e}"))?;
    if !answer.status().is_success() {
        return Err(format!(
            "enroll: {} {}",
            answer.status(),
            answer.text().await.unwrap_or_default()
        ));
    }
    let enrolled: axon_shared::EnrollResponse =
        answer.json().await.map_err(|e| format!("enroll: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(enrolled.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key =
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok(Identity {
        host_id: enrolled.host_id,
        config: Arc::new(config),
    })
}

/// Runs one agent until `stop` turns true: sessions one after another, with agentd's backoff
/// (1 s doubling to 60 s, full jitter; a session of 10 s or more starts it again).
pub async fn run_agent(
    identity: Arc<Identity>,
    target: Arc<Target>,
    index: usize,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff =
        agentd::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let started = Instant::now();
        tokio::select! {
            _ = session(&identity, &target, index, &stats) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if started.elapsed() >= Duration::from_secs(10) {
            backoff.reset();
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Decrements the online count when a session ends, however it ends.
struct Online<'a>(&'a Stats);

impl Drop for Online<'_> {
    fn drop(&mut self) {
        self.0.online.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn session(identity: &Identity, target: &Target, index: usize, stats: &Stats) {
    let dial = async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        let source = target.sources[index % target.sources.len()];
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
        let tcp = socket
            .connect(target.agent)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(identity.config.clone())
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let url = format!("wss://localhost:{}/agent/v1", target.agent.port());
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(8 * 1024);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, tls, Some(config))
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(ws)
    };
    let mut ws = match tokio::time::timeout(Duration::from_secs(10), dial).await {
        Ok(Ok(ws)) => ws,
        _ => {
            stats.dial_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let hello = format!("hello-{index}");
    if ws
        .send(Message::Text(crate::hello_frame(&hello).into()))
        .await
        .is_err()
    {
        return;
    }
    let welcomed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Text(text) = message
                && let Ok(Frame::Response(r)) = Frame::decode(&text, axon_shared::DEFAULT_MAX_FRAME)
            {
                return r.id == hello && r.ok;
            }
        }
        false
    })
    .await;
    if welcomed != Ok(true) {
        return;
    }
    stats.sessions.fetch_add(1, Ordering::Relaxed);
    stats.online.fetch_add(1, Ordering::Relaxed);
    let _online = Online(stats);
    // agentd's watchdog: three ping intervals (15 s by default) of silence end the session.
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(50), ws.next()).await
    {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(Frame::Request(request)) = Frame::decode(&text, axon_shared::DEFAULT_MAX_FRAME)
        else {
            continue;
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let reply = if request.op == axon_shared::op::PING {
            Response::ok(
                request.id,
                &Pong {
                    agent_time_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                },
            )
        } else {
            Response::err(
                request.id,
                ErrorCode::UnknownOp,
                "a load-test agent answers pings only",
            )
        };
        if ws
            .send(Message::Text(Frame::Response(reply).encode().into()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Resident memory and CPU time (user + system) of a process, from /proc.
#[allow(unsafe_code)] // sysconf reads a constant
pub fn process_usage(pid: u32) -> Option<(u64, Duration)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis; utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((rss_kib * 1024, Duration::from_millis(ticks * 1000 / hz)))
}
