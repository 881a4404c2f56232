//! Test support for the end-to-end suite: starts the real `axon-cp` and `agentd` binaries on
//! free loopback ports with data in temp dirs, talks to the API over real TLS, and opens raw
//! agent links with chosen certificates.
//!
//! The binaries come from the same target dir as the test executable; `scripts/test` builds
//! them first (`cargo build --bins`).

pub mod browser;
pub mod dashboard;
pub mod failover;
pub mod fake_channels;
pub mod load;
pub mod mock_llm;
pub mod relay;
pub mod webhook_receiver;
pub mod writes;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

pub use reqwest::StatusCode;

/// The admin password every test control plane is initialised with.
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";
pub const ADMIN_EMAIL: &str = "admin@axon.test";
/// The password of users the tests create.
pub const USER_PASSWORD: &str = "user password 1234";

/// Path of a workspace binary next to the running test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Tests run from target/<profile>/deps; the harness binaries from target/<profile>.
    let parent = exe.parent().expect("exe dir");
    let dir = if parent.ends_with("deps") {
        parent.parent().expect("target dir")
    } else {
        parent
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --bins)",
        path.display()
    );
    path
}

/// Whether an API error body's message contains `text`.
pub fn error_says(body: &Value, text: &str) -> bool {
    body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains(text))
}

/// A count from the environment variable `var` (benches' knobs), or `default`.
pub fn env_count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p`th percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A loopback port that was free a moment ago.
/// Ports are picked below the kernel's ephemeral range (32768 and up by default), so the
/// outgoing connections of agents and clients cannot take a port a test is about to bind.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000")
}

/// Polls `check` every 50 ms until it returns true or `limit` passes; returns the time taken.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Client TLS trusting only the control plane's CA.
fn api_tls(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca"))
        .expect("root");
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Borrowed pairs of an owned environment, as `ControlPlane::start_with_env` takes them.
pub fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A running `axon-cp serve` over a fresh data dir.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub api_port: u16,
    pub agent_port: u16,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub client: reqwest::Client,
    /// Retries with new ports left for the first start.
    fresh_ports_left: u32,
}

impl ControlPlane {
    /// Initialises a data dir and starts serving with TLS on both listeners.
    pub async fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[]).await
    }

    /// As `start`, with environment variables for the server (e.g. provider keys).
    pub async fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_prepared(extra, env, |_| {}).await
    }

    /// As `start_with_env`; `prepare` gets the data dir's path before `init` (to mount a
    /// filesystem there, say).
    pub async fn start_prepared(
        extra: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        prepare(&dir.path().join("data"));
        let out = Command::new(bin("axon-cp"))
            .args(["init", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--admin-email", ADMIN_EMAIL])
            .env("AXON_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .output()
            .expect("run axon-cp init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::serve_dir(dir, extra, env).await
    }

    /// Restores `archive` (made by `axon-cp backup`) into a new data dir and serves it.
    pub async fn start_restored(archive: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(bin("axon-cp"))
            .args(["restore", "--from"])
            .arg(archive)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .expect("run axon-cp restore");
        assert!(
            out.status.success(),
            "restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::serve_dir(dir, extra, env).await
    }

    /// Serves the data dir `<dir>/data` on fresh ports.
    async fn serve_dir(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let ca = std::fs::read_to_string(dir.path().join("data/pki/ca.pem")).expect("ca.pem");
        let tls = api_tls(&ca);
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let mut cp = Self {
            dir,
            api_port: free_port(),
            agent_port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
            client,
            fresh_ports_left: 3,
        };
        cp.spawn().await;
        cp.fresh_ports_left = 0;
        cp
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("axon-cp.log")
    }

    /// Starts the serve process and waits until /healthz answers.
    pub async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(bin("axon-cp"))
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--api-listen", &format!("127.0.0.1:{}", self.api_port)])
            .args(["--agent-listen", &format!("127.0.0.1:{}", self.agent_port)])
            .args(&self.extra)
            // The test's own environment comes last, so it may quiet the log.
            .env("AXON_LOG", "info,axon_control_plane=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn axon-cp");
        self.child = Some(child);
        let ready = wait_until(Duration::from_secs(15), || async {
            self.client
                .get(self.url("/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        if ready.is_none() && self.log().contains("Address already in use") {
            // Another test took the port between our check and the bind: try fresh ports,
            // unless this is a restart that must come back where the agents expect it.
            if self.fresh_ports_left > 0 {
                self.fresh_ports_left -= 1;
                self.kill9();
                self.api_port = free_port();
                self.agent_port = free_port();
                return Box::pin(self.spawn()).await;
            }
        }
        assert!(
            ready.is_some(),
            "axon-cp did not become healthy; log:\n{}",
            self.log()
        );
    }

    /// SIGKILL, no chance to flush or say goodbye.
    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.api_port)
    }

    pub fn server(&self) -> String {
        format!("https://localhost:{}", self.api_port)
    }

    /// A client that, like a form's post, shows redirects instead of following them.
    pub fn client_without_redirects(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_backend_preconfigured(api_tls(&self.ca().0))
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    /// Sends a request with an optional bearer token and JSON body; returns status and JSON.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json)
    }

    /// The `/metrics` page, read with `token`.
    pub async fn metrics(&self, token: &str) -> String {
        self.client
            .get(self.url("/metrics"))
            .bearer_auth(token)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Logs in as the admin; returns the whole token response.
    pub async fn login(&self) -> Value {
        self.login_as(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// An admin access token.
    pub async fn admin_token(&self) -> String {
        self.login().await["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// A fresh enrollment token.
    pub async fn enrollment_token(&self, admin: &str, ttl_secs: u64) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/enrollment-tokens",
                Some(admin),
                Some(serde_json::json!({"ttl_secs": ttl_secs})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }

    /// The host record as the API shows it.
    pub async fn host(&self, admin: &str, id: &str) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/hosts/{id}"),
                Some(admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Creates a tenant; returns its id.
    pub async fn create_tenant(&self, admin: &str, slug: &str) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/tenants",
                Some(admin),
                Some(serde_json::json!({"slug": slug, "name": format!("{slug} Ltd"),
                    "settings": {"welcome": format!("Welcome to {slug}"), "contact": "+1 555 0100"}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Creates a user with `USER_PASSWORD`; returns its id.
    pub async fn create_user(
        &self,
        admin: &str,
        email: &str,
        role: &str,
        tenant: Option<&str>,
    ) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/users",
                Some(admin),
                Some(
                    serde_json::json!({"email": email, "name": email, "password": USER_PASSWORD,
                    "role": role, "tenant_id": tenant}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Creates an API key; returns its text and id.
    pub async fn create_key(
        &self,
        admin: &str,
        role: &str,
        tenant: Option<&str>,
        scopes: &[&str],
        llm_limits: Option<Value>,
    ) -> (String, String) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/api-keys",
                Some(admin),
                Some(
                    serde_json::json!({"name": "test key", "role": role, "tenant_id": tenant,
                    "scopes": scopes, "llm_limits": llm_limits}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["key"].as_str().expect("key").to_owned(),
            body["id"].as_str().expect("id").to_owned(),
        )
    }

    /// Logs in; returns the whole token response.
    pub async fn login_as(&self, email: &str, password: &str) -> Value {
        let (status, body) = self.try_login(email, password).await;
        assert_eq!(status, StatusCode::OK, "login {email}: {body}");
        body
    }

    /// A login attempt; returns status and JSON, whatever they are.
    pub async fn try_login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::POST,
            "/api/auth/login",
            None,
            Some(serde_json::json!({"email": email, "password": password})),
        )
        .await
    }

    /// An access token for `email` (password `USER_PASSWORD`).
    pub async fn token_for(&self, email: &str) -> String {
        self.login_as(email, USER_PASSWORD).await["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// The CA certificate and key, to mint certificates the tests need.
    pub fn ca(&self) -> (String, String) {
        let pki = self.data_dir().join("pki");
        (
            std::fs::read_to_string(pki.join("ca.pem")).expect("ca.pem"),
            std::fs::read_to_string(pki.join("ca.key")).expect("ca.key"),
        )
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An agentd with its own state dir.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub host_id: String,
    child: Option<Child>,
}

/// A real systemd in its own namespaces (`scripts/systemd-box`), stopped on drop. A box that
/// cannot start fails the test.
pub struct SystemdBox {
    dir: tempfile::TempDir,
    /// D-Bus address of the box's system bus.
    pub address: String,
}

fn systemd_box_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/systemd-box")
}

impl SystemdBox {
    /// Starts a box with these unit files (name, text).
    pub fn start(units: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = Vec::new();
        for (name, text) in units {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("unit file");
            files.push(path);
        }
        let out = Command::new(systemd_box_script())
            .arg("start")
            .arg(dir.path().join("box"))
            .args(&files)
            .output()
            .expect("run scripts/systemd-box");
        assert!(
            out.status.success(),
            "the systemd box did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let address = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Self { dir, address }
    }
}

impl SystemdBox {
    /// The box's journal (volatile, under its /run), for `agentd --journal-dir`.
    pub fn journal_dir(&self) -> PathBuf {
        self.dir.path().join("box/run/log/journal")
    }
}

impl Drop for SystemdBox {
    fn drop(&mut self) {
        let _ = Command::new(systemd_box_script())
            .arg("stop")
            .arg(self.dir.path().join("box"))
            .status();
    }
}

/// Result of running `agentd enroll`.
pub struct EnrollOutcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `agentd enroll` into `state_dir`.
pub fn run_enroll(server: &str, token: &str, state_dir: &Path) -> EnrollOutcome {
    let out = Command::new(bin("agentd"))
        .args([
            "enroll",
            "--server",
            server,
            "--token",
            token,
            "--state-dir",
        ])
        .arg(state_dir)
        .args(["--hostname", "e2e-host"])
        .env("AGENTD_LOG", "warn")
        .output()
        .expect("run agentd enroll");
    EnrollOutcome {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Agent {
    /// Enrolls a new agent with `cp` (does not start it).
    pub async fn enroll(cp: &ControlPlane) -> Self {
        let admin = cp.admin_token().await;
        let token = cp.enrollment_token(&admin, 600).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let outcome = run_enroll(&cp.server(), &token, &dir.path().join("state"));
        assert!(outcome.success, "enroll failed: {}", outcome.stderr);
        let identity: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("state/agent.json")).expect("agent.json"),
        )
        .expect("identity json");
        Self {
            host_id: identity["host_id"].as_str().expect("host_id").to_owned(),
            dir,
            child: None,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agentd.log")).unwrap_or_default()
    }

    /// Starts `agentd run` with extra flags.
    pub fn start(&mut self, extra: &[&str]) {
        self.start_with_env(extra, &[]);
    }

    /// Starts `agentd run` with extra flags and environment variables.
    pub fn start_with_env(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        self.start_wrapped(&[], extra, env);
    }

    /// Starts `agentd run` under `wrapper` (a command that execs the rest, such as
    /// `ip netns exec NAME`), so the process keeps the child's pid.
    pub fn start_wrapped(&mut self, wrapper: &[&str], extra: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agentd.log"))
            .expect("log");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin("agentd"));
                c
            }
            None => Command::new(bin("agentd")),
        };
        let child = command
            .arg("run")
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(extra)
            .envs(env.iter().copied())
            .env("AGENTD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agentd");
        self.child = Some(child);
    }

    /// Starts `agentd run` as the unprivileged user 65534 (nobody), so an escape from the file
    /// jail cannot write real system files. The state dir is handed to that user.
    pub fn start_unprivileged(&mut self, extra: &[&str]) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755));
        let status = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(self.state_dir())
            .status()
            .expect("chown");
        assert!(status.success(), "chown of the state dir failed");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agentd.log"))
            .expect("log");
        let child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin("agentd"))
            .arg("run")
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(extra)
            .env("AGENTD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agentd through setpriv");
        self.child = Some(child);
    }

    /// The agent's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the agent process, bytes (from /proc).
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    }

    /// Stops the agent (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The agent's certificate and key PEM.
    pub fn credentials(&self) -> (String, String) {
        (
            std::fs::read_to_string(self.state_dir().join("agent.pem")).expect("agent.pem"),
            std::fs::read_to_string(self.state_dir().join("agent.key")).expect("agent.key"),
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub type RawLink =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Opens a raw agent link to `cp` with the given client credentials (none: no certificate).
/// Returns the error text when the TLS handshake or the upgrade fails.
pub async fn raw_link(cp: &ControlPlane, creds: Option<(&str, &str)>) -> Result<RawLink, String> {
    let (ca, _) = cp.ca();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).expect("ca"))
        .expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots);
    let config = match creds {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("cert"),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", cp.agent_port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .map_err(|e| e.to_string())?;
    // In TLS 1.3 the server judges the client certificate after the client finished its side,
    // so a refusal shows up as an alert on the first read: the upgrade.
    let url = format!("wss://localhost:{}/agent/v1", cp.agent_port);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(url, tls),
    )
    .await
    .map_err(|_| "upgrade timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Sends raw bytes to the API over TLS and returns what comes back until the server closes
/// (or 5 s pass). For requests a normal client cannot make, such as a huge declared body that
/// is never sent.
pub async fn raw_https(cp: &ControlPlane, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = api_tls(&cp.ca().0);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", cp.api_port))
        .await
        .expect("connect");
    let mut tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("tls");
    tls.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens `/api/ws` with the token in the subprotocol header, as a browser would.
pub async fn live_socket(cp: &ControlPlane, token: Option<&str>) -> Result<LiveSocket, String> {
    let protocols = match token {
        Some(t) => format!("axon.v1, axon.bearer.{t}"),
        None => "axon.v1".to_owned(),
    };
    socket(cp, "/api/ws", &[("sec-websocket-protocol", &protocols)]).await
}

/// Opens a WebSocket to `path` of the API listener with these extra headers.
pub async fn socket(
    cp: &ControlPlane,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<LiveSocket, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let config = api_tls(&cp.ca().0);
    let mut request = format!("wss://localhost:{}{path}", cp.api_port)
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(config))),
    )
    .await
    .map(|(ws, _)| ws)
    .map_err(|e| e.to_string())
}

/// A live socket for `token` subscribed to event `types`.
pub async fn subscribe_live(cp: &ControlPlane, token: &str, types: &[&str]) -> LiveSocket {
    use futures_util::SinkExt;
    let mut live = live_socket(cp, Some(token)).await.expect("live socket");
    let subscription = serde_json::json!({ "types": types }).to_string();
    live.send(tokio_tungstenite::tungstenite::Message::Text(
        subscription.into(),
    ))
    .await
    .expect("subscribe");
    // The subscription is in force once acknowledged.
    next_live(&mut live, |v| v["type"] == "subscribed").await;
    live
}

/// A socket of `/api/ws`.
pub type LiveSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The first live event within 5 s for which `wanted` holds.
pub async fn next_live(live: &mut LiveSocket, wanted: impl Fn(&Value) -> bool) -> Value {
    use futures_util::StreamExt;
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(msg)) = live.next().await {
            let v: Value = serde_json::from_str(msg.to_text().unwrap_or("{}")).unwrap_or_default();
            if wanted(&v) {
                return v;
            }
        }
        Value::Null
    })
    .await
    .expect("a live event in time")
}

/// Loads the demo data through the API; returns, by product type, the id of a ready order
/// (`listo`, QA `ok`) where the demo has one.
pub async fn seed_demo(
    cp: &ControlPlane,
    admin: &str,
) -> std::collections::BTreeMap<String, String> {
    let (status, body) = cp
        .call(
            reqwest::Method::POST,
            "/api/admin/seed-demo",
            Some(admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, orders) = cp
        .call(
            reqwest::Method::GET,
            "/api/orders?estado=listo&limit=100",
            Some(admin),
            None,
        )
        .await;
    orders["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|o| o["qa_status"] == "ok")
        .filter_map(|o| {
            Some((
                o["product_type"].as_str()?.to_owned(),
                o["id"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The control plane's audit records for `GET /api/audit?<query>`, newest first.
async fn audit_records(cp: &ControlPlane, admin: &str, query: &str) -> Vec<serde_json::Value> {
    let (_, records) = cp
        .call(
            reqwest::Method::GET,
            &format!("/api/audit?{query}"),
            Some(admin),
            None,
        )
        .await;
    records.as_array().cloned().unwrap_or_default()
}

/// `"<action> <outcome>"` of the newest audit records whose action starts with `prefix`.
pub async fn audit_outcomes(cp: &ControlPlane, admin: &str, prefix: &str) -> Vec<String> {
    audit_records(cp, admin, &format!("action={prefix}&limit=100"))
        .await
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["action"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// An agent's records as the control plane keeps them (`host_seq`), oldest first.
pub async fn kept_seqs(cp: &ControlPlane, admin: &str, host: &str) -> Vec<u64> {
    let mut seqs: Vec<u64> = audit_records(cp, admin, &format!("host={host}&limit=1000"))
        .await
        .iter()
        .filter_map(|r| r["host_seq"].as_u64())
        .collect();
    seqs.reverse();
    seqs
}

impl Agent {
    /// Sequence numbers in the agent's own trail, in file order.
    pub fn trail_seqs(&self) -> Vec<u64> {
        std::fs::read_to_string(self.state_dir().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|r| r["seq"].as_u64())
            .collect()
    }
}

/// A hello request frame as agentd would send it.
pub fn hello_frame(id: &str) -> String {
    let hello = axon_shared::Hello {
        protocol: axon_shared::PROTOCOL_VERSION,
        agent_version: "0.0.0-test".into(),
        host: axon_shared::HostFacts {
            hostname: "raw-client".into(),
            ..Default::default()
        },
        capabilities: Default::default(),
    };
    axon_shared::Frame::Request(axon_shared::Request::new(
        id,
        axon_shared::op::HELLO,
        &hello,
    ))
    .encode()
}

/// Mints a client certificate for `host_id` signed by the control plane's CA, valid between
/// the given offsets from now (seconds). Returns (cert PEM, key PEM).
pub fn mint_client_cert(cp: &ControlPlane, host_id: &str, from: i64, to: i64) -> (String, String) {
    let (ca_pem, ca_key_pem) = cp.ca();
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).expect("ca key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("issuer");
    sign_client(host_id, from, to, &issuer)
}

/// Makes a self-signed CA unrelated to the control plane and a client certificate from it.
pub fn foreign_client_cert(host_id: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Axon CA");
    let issuer = rcgen::Issuer::new(params, key);
    sign_client(host_id, -60, 86_400, &issuer)
}

fn sign_client(
    host_id: &str,
    from: i64,
    to: i64,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::seconds(from);
    params.not_after = now + time::Duration::seconds(to);
    params.subject_alt_names = vec![rcgen::SanType::URI(
        format!("{}{host_id}", axon_shared::HOST_URI_PREFIX)
            .try_into()
            .expect("uri"),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

/// The real Docker engine for a test: a test image made from Debian's busybox-static, a run id
/// that names and labels (`axon.test=<run>`) everything the test makes, and cleanup of exactly
/// that when dropped, also after a failure.
pub struct DockerFixture {
    pub run: String,
    /// `axon-test-busybox:<run>`.
    pub image: String,
}

impl DockerFixture {
    /// Panics with a clear message when the engine does not answer or busybox-static is
    /// missing: the Docker suite never skips.
    pub fn new() -> Self {
        let version = Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output();
        match &version {
            Ok(out) if out.status.success() => {}
            _ => panic!(
                "the Docker engine does not answer (`docker version` failed): start it; the Docker suite needs it"
            ),
        }
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.is_file(),
            "/bin/busybox is missing: install Debian's busybox-static"
        );
        let run = format!("{:x}{:04x}", std::process::id(), rand_u16());
        let image = format!("axon-test-busybox:{run}");
        let root = tempfile::tempdir().expect("tempdir");
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        std::fs::create_dir_all(root.path().join("tmp")).expect("tmp");
        std::fs::copy(busybox, bin.join("busybox")).expect("copy busybox");
        for applet in ["sh", "echo", "sleep", "cat", "ls", "env", "true", "false"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet");
        }
        let tar = Command::new("tar")
            .arg("-C")
            .arg(root.path())
            .args(["-cf", "-", "."])
            .output()
            .expect("tar");
        assert!(tar.status.success(), "tar failed");
        let mut import = Command::new("docker")
            .args(["import", "--change", &format!("LABEL axon.test={run}")])
            .args(["--change", "CMD [\"/bin/sh\"]", "-", &image])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker import");
        {
            use std::io::Write;
            let mut stdin = import.stdin.take().expect("stdin");
            stdin.write_all(&tar.stdout).expect("image tar");
        }
        let out = import.wait_with_output().expect("docker import");
        assert!(
            out.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { run, image }
    }

    /// A name unique to this run: `axon-test-<run>-<suffix>`.
    pub fn name(&self, suffix: &str) -> String {
        format!("axon-test-{}-{suffix}", self.run)
    }

    /// Runs the docker CLI and returns its trimmed stdout (panics when it fails).
    pub fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker").args(args).output().expect("docker");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Default for DockerFixture {
    fn default() -> Self {
        Self::new()
    }
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ (nanos >> 16)) as u16
}

impl Drop for DockerFixture {
    fn drop(&mut self) {
        let label = format!("label=axon.test={}", self.run);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            let ids = String::from_utf8_lossy(&out.stdout);
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f", "-v"])
                    .args(&ids)
                    .output();
            }
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// Reads a `text/event-stream` answer of `path` until `until` appears in it or `within`
/// passes, then disconnects; returns what arrived.
pub async fn sse_until(
    cp: &ControlPlane,
    token: &str,
    path: &str,
    until: &str,
    within: Duration,
) -> (reqwest::StatusCode, String) {
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let mut resp = client
        .get(cp.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("sse request");
    let status = resp.status();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + within;
    while !text.contains(until) {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => text.push_str(&String::from_utf8_lossy(&bytes)),
            _ => break,
        }
    }
    (status, text)
}

/// A small HTTP/1.1 server for third-party peers (model servers and the like): each path
/// answers the JSON set for it, 404 otherwise. Answers can be changed while it runs.
pub struct FakeHttp {
    pub addr: std::net::SocketAddr,
    routes: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeHttp {
    pub async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let routes: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>> =
            Arc::default();
        let served = routes.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let routes = served.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let body = routes.lock().expect("routes").get(&path).cloned();
                    let reply = match body {
                        Some(b) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                            b.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
                    };
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { addr, routes, task }
    }

    /// Sets the JSON `path` answers.
    pub fn set(&self, path: &str, json: &str) {
        self.routes
            .lock()
            .expect("routes")
            .insert(path.to_owned(), json.to_owned());
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
