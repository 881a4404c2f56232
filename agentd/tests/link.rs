//! agentd's side of the link, in process, against a stand-in control plane that misbehaves on
//! purpose: malformed and oversized frames must make the agent drop the link and dial again,
//! never panic; unknown operations get an error reply.

use std::sync::Arc;
use std::time::Duration;

use agentd::AgentConfig;
use agentd::state::{CA_FILE, CERT_FILE, Identity, KEY_FILE, StateDir};
use axon_shared::{DEFAULT_MAX_FRAME, ErrorCode, Frame, Hello, Request, Response, Welcome, op};
use futures_util::{SinkExt, StreamExt};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

struct Pki {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    ca_der: CertificateDer<'static>,
    agent_cert: String,
    agent_key: String,
}

fn pki(host_id: &str) -> Pki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&server_key, &issuer)
        .expect("server cert");

    let agent_key = KeyPair::generate().expect("agent key");
    let mut agent = CertificateParams::new(Vec::<String>::new()).expect("params");
    agent.subject_alt_names = vec![SanType::URI(
        format!("urn:axon:host:{host_id}").try_into().expect("uri"),
    )];
    agent.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let agent_cert = agent.signed_by(&agent_key, &issuer).expect("agent cert");
    Pki {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().clone(),
        server_chain: vec![server.der().clone(), ca_cert.der().clone()],
        server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()).into(),
        agent_cert: agent_cert.pem(),
        agent_key: agent_key.serialize_pem(),
    }
}

/// What the stand-in does on each successive connection after the welcome.
#[derive(Clone, Copy)]
enum Script {
    SendMalformed,
    SendOversized,
    AskUnknownOp,
}

/// A stand-in control plane: its TLS acceptor, and an agent state dir enrolled with it.
struct StandIn {
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: StateDir,
    _dir: tempfile::TempDir,
}

async fn stand_in(host_id: &str) -> StandIn {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let pki = pki(host_id);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();

    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path().join("state"));
    state.create().expect("state dir");
    state.write(CA_FILE, &pki.ca_pem, 0o644).expect("ca");
    state
        .write(CERT_FILE, &pki.agent_cert, 0o644)
        .expect("cert");
    state.write(KEY_FILE, &pki.agent_key, 0o600).expect("key");
    state
        .save_identity(&Identity {
            host_id: host_id.into(),
            agent_url: format!("wss://localhost:{port}/agent/v1"),
            server: "https://localhost:1".into(),
        })
        .expect("identity");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .expect("server config");
    StandIn {
        listener,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
        state,
        _dir: dir,
    }
}

type ServerWs =
    tokio_tungstenite::WebSocketStream<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;

/// Accepts the agent's next connection and welcomes it; returns the socket and the hello.
async fn welcome_next(
    listener: &TcpListener,
    acceptor: &tokio_rustls::TlsAcceptor,
    host_id: &str,
) -> (ServerWs, Hello) {
    let (tcp, _) = listener.accept().await.expect("accept");
    let tls = acceptor.accept(tcp).await.expect("tls");
    let mut ws = tokio_tungstenite::accept_async(tls).await.expect("upgrade");
    let Some(Ok(Message::Text(text))) = ws.next().await else {
        panic!("no hello")
    };
    let Frame::Request(hello) = Frame::decode(&text, DEFAULT_MAX_FRAME).expect("frame") else {
        panic!("hello is a request")
    };
    assert_eq!(hello.op, op::HELLO);
    let facts: Hello = hello.body_as().expect("hello body");
    let welcome = Welcome {
        protocol: 1,
        host_id: host_id.into(),
        server_version: "test".into(),
        ping_interval_secs: 15,
        max_frame_bytes: DEFAULT_MAX_FRAME,
    };
    let reply = Frame::Response(Response::ok(hello.id, &welcome)).encode();
    ws.send(Message::Text(reply.into())).await.expect("welcome");
    (ws, facts)
}

#[tokio::test]
async fn agent_survives_a_misbehaving_control_plane() {
    let host_id = "01JDQ3YXB5C7D9F1G3H5J7K9M1";
    let StandIn {
        listener,
        acceptor,
        state,
        _dir,
    } = stand_in(host_id).await;
    let (events_tx, mut events) = mpsc::unbounded_channel::<String>();
    let scripts = [
        Script::SendMalformed,
        Script::SendOversized,
        Script::AskUnknownOp,
    ];
    let server = tokio::spawn(async move {
        for script in scripts {
            let (mut ws, facts) = welcome_next(&listener, &acceptor, host_id).await;
            events_tx
                .send(format!("hello from {}", facts.host.hostname))
                .expect("event");
            match script {
                Script::SendMalformed => {
                    ws.send(Message::Text("{\"kind\":\"request\",\"v\":1".into()))
                        .await
                        .expect("send");
                }
                Script::SendOversized => {
                    let big = format!(
                        "{{\"kind\":\"event\",\"v\":1,\"topic\":\"x\",\"seq\":1,\"body\":\"{}\"}}",
                        "a".repeat(DEFAULT_MAX_FRAME * 2)
                    );
                    let _ = ws.send(Message::Text(big.into())).await;
                }
                Script::AskUnknownOp => {
                    let ask =
                        Frame::Request(Request::new("q1", "fs.format", &serde_json::json!({})));
                    ws.send(Message::Text(ask.encode().into()))
                        .await
                        .expect("send");
                    let ping =
                        Frame::Request(Request::new("q2", op::PING, &serde_json::Value::Null));
                    ws.send(Message::Text(ping.encode().into()))
                        .await
                        .expect("send");
                    let mut answers = Vec::new();
                    while answers.len() < 2 {
                        match ws.next().await {
                            Some(Ok(Message::Text(t))) => {
                                // Events (the agent's start record, model servers) may come first.
                                match Frame::decode(&t, DEFAULT_MAX_FRAME).expect("frame") {
                                    Frame::Event(e) => assert!(
                                        ["audit", "models", "metrics", "capabilities"]
                                            .contains(&e.topic.as_str()),
                                        "{}",
                                        e.topic
                                    ),
                                    answer => answers.push(answer),
                                }
                            }
                            Some(Ok(_)) => continue,
                            other => panic!("agent went away: {other:?}"),
                        }
                    }
                    for answer in answers {
                        let Frame::Response(r) = answer else {
                            panic!("expected responses")
                        };
                        match r.id.as_str() {
                            "q1" => {
                                assert_eq!(r.error.map(|e| e.code), Some(ErrorCode::UnknownOp));
                                events_tx.send("unknown op refused".into()).expect("event");
                            }
                            "q2" => {
                                assert!(r.ok);
                                events_tx.send("pong".into()).expect("event");
                            }
                            other => panic!("unexpected id {other}"),
                        }
                    }
                    return;
                }
            }
            // The agent must drop the link by itself.
            let closed = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(Ok(msg)) = ws.next().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
            assert!(
                closed.is_ok(),
                "the agent kept a link that sent a bad frame"
            );
            events_tx.send("link dropped".into()).expect("event");
        }
    });

    let mut config = AgentConfig::new(state.path().to_owned());
    config.backoff_initial = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(200);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agentd::run(config, async {
        let _ = stop_rx.await;
    }));

    let mut seen = Vec::new();
    let collect = async {
        while seen.len() < 7 {
            match events.recv().await {
                Some(e) => seen.push(e),
                None => break,
            }
        }
    };
    let finished = tokio::time::timeout(Duration::from_secs(20), collect).await;
    assert!(finished.is_ok(), "events so far: {seen:?}");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let hello = format!("hello from {}", hostname.trim());
    assert_eq!(
        seen,
        [
            &hello,
            "link dropped",
            &hello,
            "link dropped",
            &hello,
            "unknown op refused",
            "pong"
        ]
    );
    server.await.expect("stand-in finished cleanly");
    let _ = stop_tx.send(());
    let result = tokio::time::timeout(Duration::from_secs(5), agent).await;
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "agent did not stop cleanly: {result:?}"
    );
}

/// A flood of refused commands: every refusal is written to the audit trail, yet pings keep
/// their deadline, because records are written by the audit writer and not in the link's loop;
/// past the in-flight bound requests are answered busy at once instead of queueing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_their_deadline_under_a_flood_of_refused_commands() {
    const FLOOD: usize = 3000;
    const PING_EVERY: usize = 250;
    // Far below the link's own deadline (three 15 s intervals), far above a loop that is free.
    const DEADLINE: Duration = Duration::from_secs(2);
    let host_id = "01JDQ3YXB5C7D9F1G3H5J7K9M2";
    let stand = stand_in(host_id).await;
    let mut config = AgentConfig::new(stand.state.path().to_owned());
    config.backoff_initial = Duration::from_millis(50);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agentd::run(config, async {
        let _ = stop_rx.await;
    }));
    let (ws, _) = welcome_next(&stand.listener, &stand.acceptor, host_id).await;
    let (mut sink, mut stream) = ws.split();
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<(String, std::time::Instant)>();
    let sender = tokio::spawn(async move {
        for i in 0..FLOOD {
            let run = axon_shared::ExecRun {
                command: "not-on-the-whitelist".into(),
                params: Default::default(),
                requested_by: Default::default(),
                stream: false,
            };
            let ask = Frame::Request(Request::new(format!("x{i}"), op::EXEC_RUN, &run));
            sink.send(Message::Text(ask.encode().into()))
                .await
                .expect("send");
            if i % PING_EVERY == PING_EVERY - 1 {
                let id = format!("p{i}");
                let ping = Frame::Request(Request::new(&id, op::PING, &serde_json::Value::Null));
                sink.send(Message::Text(ping.encode().into()))
                    .await
                    .expect("send");
                sent_tx.send((id, std::time::Instant::now())).expect("note");
            }
        }
        sink
    });
    let mut sent = std::collections::HashMap::new();
    let (mut pongs, mut refused, mut busy, mut audited) = (0, 0, 0, 0);
    let mut slowest = Duration::ZERO;
    let read = async {
        while pongs < FLOOD / PING_EVERY || refused + busy < FLOOD || audited < refused {
            let Some(Ok(Message::Text(text))) = stream.next().await else {
                panic!("the agent went away")
            };
            match Frame::decode(&text, DEFAULT_MAX_FRAME).expect("frame") {
                Frame::Response(r) if r.id.starts_with('p') => {
                    while let Ok((id, at)) = sent_rx.try_recv() {
                        sent.insert(id, at);
                    }
                    let at = sent.get(&r.id).copied().expect("ping was sent");
                    slowest = slowest.max(at.elapsed());
                    assert!(r.ok);
                    pongs += 1;
                }
                Frame::Response(r) => match r.error.map(|e| e.code) {
                    Some(ErrorCode::Forbidden) => refused += 1,
                    Some(ErrorCode::RateLimited) => busy += 1,
                    other => panic!("unexpected answer {other:?}"),
                },
                Frame::Event(e) if e.topic == "audit" => {
                    let record: axon_shared::AuditRecord =
                        serde_json::from_value(e.body).expect("record");
                    if record.action == op::EXEC_RUN && record.outcome == "denied" {
                        audited += 1;
                    }
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("every request answered and every refusal audited");
    assert!(
        slowest < DEADLINE,
        "a ping waited {slowest:?} behind refused commands"
    );
    assert_eq!(refused + busy, FLOOD);
    assert!(refused > 0);
    assert_eq!(audited, refused, "every evaluated refusal is on the trail");
    drop(sender.await.expect("sender"));
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), agent).await;
}
