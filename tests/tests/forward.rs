//! The LLM gateway's way to a GPU box behind NAT: the control plane library in this process
//! (its hub is what the gateway calls), a real agentd over real mutual TLS, and a fake Ollama
//! on the agent host's loopback speaking Ollama's streaming wire format.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axon_control_plane::fleet::link;
use axon_control_plane::init::{InitOptions, init};
use axon_control_plane::{AppState, ServeConfig, api, open_state};
use axon_e2e::{ADMIN_EMAIL, ADMIN_PASSWORD, bin, run_enroll, wait_until};
use axon_shared::{ErrorCode, LlmForward, LlmForwarded, ModelServerKind, op, stream};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Generous bound on anything that must happen.
const LIMIT: Duration = Duration::from_secs(30);

/// The control plane's library serving its two listeners in this process.
struct InProcess {
    state: AppState,
    api: SocketAddr,
    client: reqwest::Client,
    dir: tempfile::TempDir,
    _stop: watch::Sender<bool>,
}

impl InProcess {
    async fn start() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        init(InitOptions {
            data_dir: data.clone(),
            admin_email: ADMIN_EMAIL.into(),
            admin_password: Some(ADMIN_PASSWORD.into()),
            sans: vec!["localhost".into()],
        })
        .expect("init");
        let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
        let agents = TcpListener::bind("127.0.0.1:0").await.expect("bind agents");
        let api_addr = api.local_addr().expect("addr");
        let agent_port = agents.local_addr().expect("addr").port();
        let mut config = ServeConfig::new(data);
        config.insecure_http = true;
        config.agent_port = agent_port;
        config.agent_url = Some(format!("wss://localhost:{agent_port}/agent/v1"));
        config.validate(api_addr).expect("config");
        let state = open_state(config).expect("state");
        let tls = link::agent_tls(&state.pki, state.revocations.clone()).expect("agent tls");
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(link::serve(agents, tls, state.clone(), stop_rx));
        let app = api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(api, app).await });
        Self {
            state,
            api: api_addr,
            client: reqwest::Client::builder()
                .timeout(LIMIT)
                .build()
                .expect("client"),
            dir,
            _stop: stop,
        }
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("http://{}{path}", self.api))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn admin_token(&self) -> String {
        let (status, body) = self
            .post(
                "/api/auth/login",
                None,
                json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().expect("token").to_owned()
    }

    /// Enrolls an agent over the API and starts it with Ollama at `ollama`.
    async fn agent(&self, admin: &str, ollama: SocketAddr) -> AgentProcess {
        let (status, body) = self
            .post(
                "/api/enrollment-tokens",
                Some(admin),
                json!({"ttl_secs": 600}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let token = body["token"].as_str().expect("token").to_owned();
        let state_dir = self.dir.path().join("agent");
        let server = format!("http://localhost:{}", self.api.port());
        let enroll_dir = state_dir.clone();
        // The enrollment talks to this process: it must not block its runtime.
        let outcome = tokio::task::spawn_blocking(move || run_enroll(&server, &token, &enroll_dir))
            .await
            .expect("enroll task");
        assert!(outcome.success, "enroll failed: {}", outcome.stderr);
        let identity: Value = serde_json::from_str(
            &std::fs::read_to_string(state_dir.join("agent.json")).expect("agent.json"),
        )
        .expect("identity");
        let log_path = self.dir.path().join("agentd.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let child = Command::new(bin("agentd"))
            .arg("run")
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["--ollama-address", &ollama.to_string()])
            .args(["--sdxl-address", "127.0.0.1:9"])
            .env("AGENTD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agentd");
        AgentProcess {
            child,
            host_id: identity["host_id"].as_str().expect("host_id").to_owned(),
            log: log_path,
        }
    }

    async fn ping(&self, admin: &str, host: &str) -> (u16, Value) {
        self.post(&format!("/api/hosts/{host}/ping"), Some(admin), Value::Null)
            .await
    }
}

struct AgentProcess {
    child: Child,
    host_id: String,
    log: std::path::PathBuf,
}

impl AgentProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fake Ollama: `/api/tags` and `/api/ps` for discovery; `/api/chat` with model `big`
/// streams `body` in pieces cut at odd byte offsets (through characters), with model
/// `endless` sends one line and then waits until the agent hangs up, reported on `hangups`.
struct FakeOllama {
    addr: SocketAddr,
    hangups: mpsc::UnboundedReceiver<()>,
}

impl FakeOllama {
    async fn start(body: Arc<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (hangup_tx, hangups) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (body, hangup_tx) = (body.clone(), hangup_tx.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, &body, &hangup_tx).await;
                });
            }
        });
        Self { addr, hangups }
    }
}

async fn serve(
    mut sock: TcpStream,
    big: &str,
    hangups: &mpsc::UnboundedSender<()>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if sock.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut request = vec![0u8; length];
    sock.read_exact(&mut request).await?;
    let request: Value = serde_json::from_slice(&request).unwrap_or(Value::Null);
    let json = |body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let path = head.split_whitespace().nth(1).unwrap_or("");
    match path {
        "/api/tags" => {
            let tags = r#"{"models":[{"name":"big:latest","size":1,"details":{}}]}"#;
            sock.write_all(json(tags).as_bytes()).await
        }
        "/api/ps" => sock.write_all(json(r#"{"models":[]}"#).as_bytes()).await,
        "/api/chat" => {
            sock.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .await?;
            if request["model"] == "endless" {
                write_piece(&mut sock, b"{\"done\":false}\n").await?;
                let mut buf = [0u8; 1024];
                while sock.read(&mut buf).await.unwrap_or(0) != 0 {}
                let _ = hangups.send(());
                return Ok(());
            }
            for piece in big.as_bytes().chunks(7001) {
                write_piece(&mut sock, piece).await?;
            }
            sock.write_all(b"0\r\n\r\n").await
        }
        _ => {
            sock.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await
        }
    }
}

async fn write_piece(sock: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    sock.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    sock.write_all(data).await?;
    sock.write_all(b"\r\n").await
}

fn chat(model: &str) -> LlmForward {
    LlmForward {
        server: ModelServerKind::Ollama,
        method: "POST".into(),
        path: "/api/chat".into(),
        body: Some(json!({"model": model, "messages": [], "stream": true}).to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_stream_arrives_whole_while_pings_pass_and_dropping_it_hangs_up() {
    // About 1.7 MB of NDJSON, many times the window, with characters of 2 to 4 bytes.
    let body: String = (0..12_000)
        .map(|i| {
            format!(
                "{{\"model\":\"big\",\"message\":{{\"role\":\"assistant\",\"content\":\"Grüße, 世界 😀 {i}\"}},\"done\":{}}}\n",
                i == 11_999
            )
        })
        .collect();
    let body = Arc::new(body);
    let mut ollama = FakeOllama::start(body.clone()).await;
    let cp = InProcess::start().await;
    let admin = cp.admin_token().await;
    let agent = cp.agent(&admin, ollama.addr).await;
    let host = agent.host_id.clone();
    let found = wait_until(LIMIT, || async {
        cp.state.hub.is_online(&host)
            && cp
                .state
                .store
                .hosts
                .get(&host)
                .ok()
                .flatten()
                .is_some_and(|h| h.model_servers.ollama.is_some())
    })
    .await;
    assert!(
        found.is_some(),
        "the agent did not come online with Ollama found; log:\n{}",
        agent.log()
    );
    let hub = cp.state.hub.clone();

    // Outside the allowlist: refused by the agent, no stream.
    let pull = LlmForward {
        path: "/api/pull".into(),
        ..chat("big")
    };
    match hub.open_stream(&host, op::LLM_FORWARD, &pull, LIMIT).await {
        Err(e) => assert_eq!(e.code(), ErrorCode::Forbidden, "{e}"),
        Ok(_) => panic!("/api/pull was forwarded"),
    }

    let (head, mut big) = hub
        .open_stream(&host, op::LLM_FORWARD, &chat("big"), LIMIT)
        .await
        .expect("stream opened");
    let head: LlmForwarded = serde_json::from_value(head).expect("head");
    assert_eq!(head.status, 200);
    assert_eq!(head.content_type, "application/x-ndjson");
    let first = tokio::time::timeout(LIMIT, big.next())
        .await
        .expect("first chunk in time")
        .expect("no link error")
        .expect("a chunk");
    assert_eq!((first.seq, first.stream.as_str()), (0, stream::BODY));

    // The reader stalls; the link's own requests still pass.
    for _ in 0..3 {
        let (status, pong) = tokio::time::timeout(LIMIT, cp.ping(&admin, &host))
            .await
            .expect("ping answered while a stream is stalled");
        assert_eq!(status, 200, "{pong}");
        assert_eq!(pong["host_id"], host.as_str());
    }

    let mut text = first.data;
    let mut next_seq = 1;
    loop {
        let chunk = tokio::time::timeout(LIMIT, big.next())
            .await
            .expect("chunk in time")
            .expect("no link error")
            .expect("chunks up to the final one");
        assert_eq!(chunk.seq, next_seq, "in order");
        assert_eq!(chunk.stream, stream::BODY, "{}", chunk.data);
        next_seq += 1;
        text.push_str(&chunk.data);
        if chunk.last {
            break;
        }
    }
    assert!(big.next().await.expect("ended").is_none());
    assert!(text == *body, "the body arrived changed");
    assert!(next_seq > 2 * axon_shared::STREAM_WINDOW);

    // A reader that goes away: the agent hangs up on the model server.
    let (_, mut endless) = hub
        .open_stream(&host, op::LLM_FORWARD, &chat("endless"), LIMIT)
        .await
        .expect("stream opened");
    let line = tokio::time::timeout(LIMIT, endless.next())
        .await
        .expect("chunk in time")
        .expect("no link error")
        .expect("a chunk");
    assert_eq!(line.data, "{\"done\":false}\n");
    drop(endless);
    tokio::time::timeout(LIMIT, ollama.hangups.recv())
        .await
        .expect("the fake Ollama saw its connection closed");
    let (status, _) = cp.ping(&admin, &host).await;
    assert_eq!(status, 200, "the link is still up");
}
