//! Forwards through the agent's dispatcher to a small HTTP/1.1 model server on loopback that
//! speaks Ollama's streaming wire format, driven step by step by each test.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axon_shared::{
    Chunk, ErrorCode, Frame, LlmForward, LlmForwarded, ModelServerKind, ModelServers, Ollama,
    Request, Response, STREAM_WINDOW, StreamAck, op, stream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{ForwardConfig, Forwarder, decode_utf8};
use crate::ops::{Handled, Ops, Outlets};

/// Generous bound on waits for something that must happen.
const LIMIT: Duration = Duration::from_secs(20);

/// A model server on a fresh loopback port; each connection is handed, with its request head,
/// to `serve`.
async fn model_server<F, Fut>(serve: F) -> String
where
    F: Fn(TcpStream, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let serve = serve.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                while !buf.ends_with(b"\r\n\r\n") {
                    match sock.read(&mut byte).await {
                        Ok(1) => buf.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                if sock.read_exact(&mut body).await.is_err() {
                    return;
                }
                serve(sock, head + &String::from_utf8_lossy(&body)).await;
            });
        }
    });
    addr
}

/// Starts a chunked NDJSON answer.
async fn begin_ndjson(sock: &mut TcpStream) {
    sock.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .expect("head");
}

/// Writes one HTTP chunk (one read on the agent's side).
async fn piece(sock: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    sock.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    sock.write_all(data).await?;
    sock.write_all(b"\r\n").await?;
    sock.flush().await
}

async fn end(sock: &mut TcpStream) {
    sock.write_all(b"0\r\n\r\n").await.expect("end");
}

/// Waits until the peer closes the connection (EOF or reset).
async fn closed(sock: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = sock.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

fn ollama_found(addr: &str) -> ModelServers {
    ModelServers {
        ollama: Some(Ollama {
            address: addr.to_owned(),
            ..Default::default()
        }),
        sdxl: None,
    }
}

/// The agent's dispatcher with a forwarder to `config`, the model servers `found`, and the
/// ends of one session's outlets.
struct Agent {
    ops: Ops,
    outlets: Outlets,
    replies: mpsc::Receiver<Frame>,
    bulk: mpsc::Receiver<Frame>,
    _dir: tempfile::TempDir,
}

fn agent(config: ForwardConfig, found: ModelServers) -> Agent {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = Arc::new(
        crate::audit::Auditor::open(dir.path(), crate::audit::DEFAULT_MAX_FILE_BYTES)
            .expect("audit"),
    );
    let services = crate::services::Services::new(
        Vec::new(),
        None,
        crate::journal::Journal {
            journalctl: "/nonexistent/journalctl".into(),
            directory: None,
        },
        Vec::new(),
    );
    let mut ops = Ops::new(
        crate::exec::Whitelist::new(Vec::new(), Path::new("/etc")).expect("whitelist"),
        crate::jail::Jail::open(&[]).expect("jail"),
        audit,
        crate::watch::RootWatcher::start(&[]),
        services,
    );
    ops.models.send_replace(found);
    ops.forwarder = Some(Forwarder::new(config, ops.models.subscribe()).expect("client"));
    let (replies, replies_rx) = mpsc::channel(64);
    let (bulk, bulk_rx) = mpsc::channel(64);
    Agent {
        ops,
        outlets: Outlets {
            replies,
            bulk,
            max_frame: axon_shared::DEFAULT_MAX_FRAME,
        },
        replies: replies_rx,
        bulk: bulk_rx,
        _dir: dir,
    }
}

fn config(ollama: &str) -> ForwardConfig {
    ForwardConfig {
        ollama: ollama.to_owned(),
        ..Default::default()
    }
}

fn chat(body: &str) -> LlmForward {
    LlmForward {
        server: ModelServerKind::Ollama,
        method: "POST".into(),
        path: "/api/chat".into(),
        body: Some(body.to_owned()),
    }
}

impl Agent {
    /// Sends `forward` as request `id`: its immediate answer, or `None` when it runs as a task
    /// (spawned here, as the session does).
    async fn forward(&self, id: &str, forward: &LlmForward) -> Option<Response> {
        match self
            .ops
            .handle(Request::new(id, op::LLM_FORWARD, forward), &self.outlets)
        {
            Handled::Now(r) => Some(r),
            Handled::Later(answer) => Some(answer.await),
            Handled::Own(task) => {
                tokio::spawn(task);
                None
            }
            Handled::Quiet => panic!("llm.forward is answered"),
        }
    }

    /// A refused forward's error.
    async fn refused(&self, forward: &LlmForward) -> axon_shared::WireError {
        let response = self.forward("r1", forward).await.expect("answered at once");
        response.error.expect("refused")
    }

    /// The head of forward `id`, as it reaches the session.
    async fn head(&mut self, id: &str) -> Response {
        let frame = tokio::time::timeout(LIMIT, self.replies.recv())
            .await
            .expect("head in time")
            .expect("open");
        let Frame::Response(response) = frame else {
            panic!("expected the head, got {frame:?}")
        };
        assert_eq!(response.id, id);
        response
    }

    async fn chunk(&mut self) -> Chunk {
        let frame = tokio::time::timeout(LIMIT, self.bulk.recv())
            .await
            .expect("chunk in time")
            .expect("open");
        let Frame::Chunk(chunk) = frame else {
            panic!("expected a chunk, got {frame:?}")
        };
        chunk
    }

    fn ack(&self, id: &str, seq: u64) {
        let ack = Request::new("a", op::STREAM_ACK, &StreamAck { id: id.into(), seq });
        assert!(matches!(
            self.ops.handle(ack, &self.outlets),
            Handled::Quiet
        ));
    }

    /// Reads chunks to the final one, acknowledging each; returns them.
    async fn drain(&mut self, id: &str) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        loop {
            let chunk = self.chunk().await;
            self.ack(id, chunk.seq);
            let last = chunk.last;
            chunks.push(chunk);
            if last {
                return chunks;
            }
        }
    }

    fn denials(&self) -> Vec<(String, String)> {
        self.ops
            .audit
            .pending(0, 100)
            .into_iter()
            .filter(|r| r.action == op::LLM_FORWARD)
            .map(|r| (r.outcome, r.target))
            .collect()
    }
}

#[tokio::test]
async fn paths_and_methods_outside_the_allowlist_are_refused_and_audited() {
    let agent = agent(config("127.0.0.1:9"), ollama_found("127.0.0.1:9"));
    let cases = [
        ("POST", "/api/pull"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/delete"),
        ("POST", "/api/chat?x=1"),
        ("POST", "/api/../api/pull"),
        ("POST", "/%61pi/chat"),
        ("POST", "/api/chat/"),
        ("POST", "api/chat"),
        ("DELETE", "/api/chat"),
        ("post", "/api/chat"),
        ("GET", "/sdapi/v1/txt2img"),
    ];
    for (method, path) in cases {
        let forward = LlmForward {
            server: ModelServerKind::Ollama,
            method: method.into(),
            path: path.into(),
            body: None,
        };
        let error = agent.refused(&forward).await;
        assert_eq!(error.code, ErrorCode::Forbidden, "{method} {path}: {error}");
    }
    let denials = agent.denials();
    assert_eq!(denials.len(), cases.len(), "{denials:?}");
    assert!(denials.iter().all(|(outcome, _)| outcome == "denied"));
    assert!(
        denials
            .iter()
            .any(|(_, target)| target == "ollama POST /api/pull"),
        "{denials:?}"
    );
    assert_eq!(
        agent.ops.forwarder.as_ref().map(Forwarder::running),
        Some(0)
    );
}

#[tokio::test]
async fn forwarding_turned_off_is_refused_and_audited() {
    let off = ForwardConfig {
        enabled: false,
        ..config("127.0.0.1:9")
    };
    let agent = agent(off, ollama_found("127.0.0.1:9"));
    let error = agent.refused(&chat("{}")).await;
    assert_eq!(error.code, ErrorCode::Forbidden);
    assert!(error.message.contains("turned off"), "{error}");
    assert_eq!(
        agent.denials(),
        vec![("denied".to_owned(), "ollama POST /api/chat".to_owned())]
    );
}

#[tokio::test]
async fn a_server_not_discovered_is_unavailable() {
    let agent = agent(config("127.0.0.1:9"), ModelServers::default());
    let error = agent.refused(&chat("{}")).await;
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert_eq!(error.message, "no Ollama server found on this host");
    let sd = LlmForward {
        server: ModelServerKind::Sdxl,
        method: "GET".into(),
        path: "/sdapi/v1/progress".into(),
        body: None,
    };
    assert_eq!(agent.refused(&sd).await.code, ErrorCode::Unavailable);
}

#[tokio::test]
async fn bad_bodies_and_a_configured_address_off_loopback_are_refused() {
    let local = agent(config("127.0.0.1:9"), ollama_found("127.0.0.1:9"));
    assert_eq!(
        local.refused(&chat("not json")).await.code,
        ErrorCode::BadRequest
    );
    let tags_with_body = LlmForward {
        method: "GET".into(),
        path: "/api/tags".into(),
        ..chat("{}")
    };
    assert_eq!(
        local.refused(&tags_with_body).await.code,
        ErrorCode::BadRequest
    );
    let lan = agent(config("192.0.2.7:11434"), ollama_found("192.0.2.7:11434"));
    assert_eq!(lan.refused(&chat("{}")).await.code, ErrorCode::Forbidden);
}

#[tokio::test]
async fn an_unreachable_server_gets_an_error_answer_and_no_chunks() {
    // A port that was free a moment ago: nothing listens there.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let mut agent = agent(config(&addr), ollama_found(&addr));
    assert!(agent.forward("u1", &chat("{}")).await.is_none());
    let head = agent.head("u1").await;
    let error = head.error.expect("error answer");
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(error.message.contains("cannot reach Ollama"), "{error}");
    // The task is over: the outlets' senders are the test's own, so nothing else came.
    assert!(agent.bulk.try_recv().is_err());
}

#[tokio::test]
async fn ndjson_streams_in_order_and_characters_split_across_reads_arrive_whole() {
    let (step_tx, step_rx) = mpsc::unbounded_channel::<()>();
    let step_rx = Arc::new(tokio::sync::Mutex::new(step_rx));
    let (request_tx, mut request_rx) = mpsc::unbounded_channel::<String>();
    let addr = model_server(move |mut sock, request| {
        let (step_rx, request_tx) = (step_rx.clone(), request_tx.clone());
        async move {
            let _ = request_tx.send(request);
            let mut step = step_rx.lock().await;
            begin_ndjson(&mut sock).await;
            // Each piece waits until the test saw the previous one: one read each.
            let pieces: [&[u8]; 4] = [
                "{\"message\":{\"content\":\"Gr\"}}\n".as_bytes(),
                // "ü" (C3 BC) cut in two, and "€" (E2 82 AC) cut after its first byte.
                b"{\"message\":{\"content\":\"\xc3",
                b"\xbc\xc3\x9fe \xe2",
                b"\x82\xac\"},\"done\":true}\n",
            ];
            for data in pieces {
                piece(&mut sock, data).await.expect("piece");
                step.recv().await;
            }
            end(&mut sock).await;
        }
    })
    .await;
    let mut agent = agent(config(&addr), ollama_found(&addr));
    assert!(
        agent
            .forward("s1", &chat(r#"{"model":"m","stream":true}"#))
            .await
            .is_none()
    );
    let request = request_rx.recv().await.expect("request");
    assert!(
        request.starts_with("POST /api/chat HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.ends_with(r#"{"model":"m","stream":true}"#),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("content-type: application/json")
    );

    let head: LlmForwarded = agent.head("s1").await.into_result().expect("ok head");
    assert_eq!(head.status, 200);
    assert_eq!(head.content_type, "application/x-ndjson");
    let mut chunks = Vec::new();
    loop {
        let chunk = agent.chunk().await;
        agent.ack("s1", chunk.seq);
        let _ = step_tx.send(());
        let last = chunk.last;
        chunks.push(chunk);
        if last {
            break;
        }
    }
    let data: Vec<&str> = chunks.iter().map(|c| c.data.as_str()).collect();
    assert_eq!(
        data,
        [
            "{\"message\":{\"content\":\"Gr\"}}\n",
            "{\"message\":{\"content\":\"",
            "üße ",
            "€\"},\"done\":true}\n",
            "",
        ]
    );
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk.seq, i as u64);
        assert_eq!(chunk.id, "s1");
        assert_eq!(chunk.stream, stream::BODY);
        assert_eq!(chunk.last, i == chunks.len() - 1);
    }
}

#[tokio::test]
async fn no_more_than_the_window_goes_out_unacknowledged() {
    const PIECES: usize = 40;
    let sent: String = (0..PIECES)
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(200)))
        .collect();
    let lines = sent.clone();
    let addr = model_server(move |mut sock, _| {
        let lines = lines.clone();
        async move {
            begin_ndjson(&mut sock).await;
            for line in lines.split_inclusive('\n') {
                if piece(&mut sock, line.as_bytes()).await.is_err() {
                    return;
                }
            }
            end(&mut sock).await;
        }
    })
    .await;
    let mut agent = agent(config(&addr), ollama_found(&addr));
    assert!(agent.forward("w1", &chat("{}")).await.is_none());
    assert!(agent.head("w1").await.ok);
    let mut received = Vec::new();
    for _ in 0..STREAM_WINDOW {
        received.push(agent.chunk().await);
    }
    // The model server has sent everything; without an acknowledgement nothing more comes.
    let more = tokio::time::timeout(Duration::from_millis(500), agent.bulk.recv()).await;
    assert!(more.is_err(), "a chunk past the window: {more:?}");

    agent.ack("w1", 3);
    for _ in 0..4 {
        received.push(agent.chunk().await);
    }
    let more = tokio::time::timeout(Duration::from_millis(500), agent.bulk.recv()).await;
    assert!(more.is_err(), "a chunk past the moved window: {more:?}");

    agent.ack("w1", received.len() as u64 - 1);
    received.extend(agent.drain("w1").await);
    for (i, chunk) in received.iter().enumerate() {
        assert_eq!(chunk.seq, i as u64);
    }
    assert!(received.len() > STREAM_WINDOW as usize + 4);
    let whole: String = received.iter().map(|c| c.data.as_str()).collect();
    assert_eq!(whole, sent);
    assert!(received.last().is_some_and(|c| c.last));
}

#[tokio::test]
async fn cancel_and_link_close_close_the_model_servers_connection() {
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<()>();
    let addr = model_server(move |mut sock, _| {
        let closed_tx = closed_tx.clone();
        async move {
            begin_ndjson(&mut sock).await;
            piece(&mut sock, b"{\"done\":false}\n")
                .await
                .expect("piece");
            // A generation that never ends, until the agent hangs up.
            closed(&mut sock).await;
            let _ = closed_tx.send(());
        }
    })
    .await;
    let mut agent = agent(config(&addr), ollama_found(&addr));
    assert!(agent.forward("c1", &chat("{}")).await.is_none());
    assert!(agent.head("c1").await.ok);
    assert_eq!(agent.chunk().await.data, "{\"done\":false}\n");
    let cancel = Request::new("c2", op::CANCEL, &axon_shared::Cancel { id: "c1".into() });
    let Handled::Now(answer) = agent.ops.handle(cancel, &agent.outlets) else {
        panic!("cancel is answered at once")
    };
    assert_eq!(answer.body, Some(serde_json::json!({"cancelled": true})));
    tokio::time::timeout(LIMIT, closed_rx.recv())
        .await
        .expect("the model server saw its connection close");

    // A second forward, then the session ends: its outlets' receivers go away.
    assert!(agent.forward("c3", &chat("{}")).await.is_none());
    assert!(agent.head("c3").await.ok);
    agent.chunk().await;
    let Agent {
        ops,
        outlets,
        replies,
        bulk,
        _dir,
    } = agent;
    drop((replies, bulk));
    tokio::time::timeout(LIMIT, closed_rx.recv())
        .await
        .expect("closing the link closed the model server's connection");
    drop((ops, outlets));
}

#[tokio::test]
async fn a_reset_mid_body_ends_with_an_error_chunk() {
    let (reset_tx, reset_rx) = mpsc::unbounded_channel::<()>();
    let reset_rx = Arc::new(tokio::sync::Mutex::new(reset_rx));
    let addr = model_server(move |mut sock, _| {
        let reset_rx = reset_rx.clone();
        async move {
            begin_ndjson(&mut sock).await;
            piece(&mut sock, b"{\"done\":false}\n")
                .await
                .expect("piece");
            // Once the agent passed the piece on, the connection is reset.
            reset_rx.lock().await.recv().await;
            let _ = sock.set_zero_linger();
            drop(sock);
        }
    })
    .await;
    let mut agent = agent(config(&addr), ollama_found(&addr));
    assert!(agent.forward("e1", &chat("{}")).await.is_none());
    assert!(agent.head("e1").await.ok);
    let first = agent.chunk().await;
    assert_eq!((first.seq, first.stream.as_str()), (0, stream::BODY));
    agent.ack("e1", 0);
    let _ = reset_tx.send(());
    let rest = agent.drain("e1").await;
    let last = rest.last().expect("a final chunk");
    assert!(last.last);
    assert_eq!(last.stream, stream::ERROR, "{rest:?}");
    assert!(
        last.data.contains("Ollama's answer broke off"),
        "{}",
        last.data
    );
    assert_eq!(last.seq, rest.len() as u64);
}

#[test]
fn utf8_is_cut_only_between_characters() {
    let mut carry = Vec::new();
    assert_eq!(decode_utf8(&mut carry, b"a\xe2\x82"), "a");
    assert_eq!(carry, b"\xe2\x82");
    assert_eq!(decode_utf8(&mut carry, b"\xac b"), "€ b");
    assert!(carry.is_empty());
    // Invalid bytes become U+FFFD and do not hold up what follows.
    assert_eq!(decode_utf8(&mut carry, b"x\xffy\xf0"), "x\u{fffd}y");
    assert_eq!(carry, b"\xf0");
    assert_eq!(decode_utf8(&mut carry, b"\x9f\x98\x80"), "😀");
}
