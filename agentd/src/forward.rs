//! Forwarding to the host's own model servers (Ollama, the SD web UI) on loopback, for the
//! control plane's LLM gateway: allowlisted paths only, and the answer streamed back as chunks
//! with a per-stream window, so a slow reader pushes back on the model server instead of
//! filling memory.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axon_shared::{
    Chunk, ErrorCode, Frame, LlmForward, LlmForwarded, MAX_STREAM_CHUNK, ModelServerKind,
    ModelServers, PROTOCOL_VERSION, Response, STREAM_WINDOW, StreamAck, stream,
};
use tokio::sync::{mpsc, oneshot, watch};

/// How long connecting to a model server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of one answer's body.
pub const MAX_BODY: u64 = 64 << 20;
/// Longest header value passed on.
const MAX_HEADER_LEN: usize = 256;

/// The only paths forwarded, matched exactly.
const OLLAMA_PATHS: &[&str] = &[
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/tags",
    "/api/ps",
];
const SDXL_PATHS: &[&str] = &[
    "/sdapi/v1/txt2img",
    "/sdapi/v1/progress",
    "/sdapi/v1/sd-models",
];

/// Settings of forwarding.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// The host owner lets the control plane reach the model servers.
    pub enabled: bool,
    /// Where Ollama listens (`IP:PORT`, loopback).
    pub ollama: String,
    /// Where the SD web UI listens (`IP:PORT`, loopback).
    pub sdxl: String,
    /// How long a model server may take to send its status and headers (loading a model is
    /// slow).
    pub header_timeout: Duration,
    /// Longest silence of a model server between two pieces of a body, and longest wait for
    /// the control plane's acknowledgement.
    pub idle_timeout: Duration,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ollama: "127.0.0.1:11434".into(),
            sdxl: "127.0.0.1:7860".into(),
            header_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Why a forward was not started.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// What to name in the audit trail when the refusal is a denial (`ollama POST /api/pull`).
    pub denied: Option<String>,
}

impl Refusal {
    fn denied(target: String, message: String) -> Self {
        Self {
            code: ErrorCode::Forbidden,
            message,
            denied: Some(target),
        }
    }

    fn other(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            denied: None,
        }
    }
}

/// A started forward: it sends its own response and chunks.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a running forward listens to: acknowledgements (the count of chunks consumed) and,
/// by being dropped, cancellation.
struct Control {
    acked: watch::Sender<u64>,
    _cancel: oneshot::Sender<()>,
}

type Open = Arc<Mutex<HashMap<String, Control>>>;

fn lock(open: &Open) -> std::sync::MutexGuard<'_, HashMap<String, Control>> {
    open.lock().unwrap_or_else(|p| p.into_inner())
}

/// Forwards `llm.forward` requests to the model servers found on this host.
pub struct Forwarder {
    config: ForwardConfig,
    client: reqwest::Client,
    models: watch::Receiver<ModelServers>,
    open: Open,
}

impl Forwarder {
    /// Fails only when the HTTP client cannot be built.
    pub fn new(
        config: ForwardConfig,
        models: watch::Receiver<ModelServers>,
    ) -> Result<Self, String> {
        // Loopback only: no proxy, no redirect elsewhere; no overall timeout, as a generation
        // may stream for long, but bounded waits for headers and between pieces.
        // Plain HTTP on loopback: no CA store (loading the system's costs some 200 KiB of
        // memory for as long as the client lives), so the client can speak to nothing else.
        let client = reqwest::Client::builder()
            .tls_certs_only([])
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the model-server client: {e}"))?;
        Ok(Self {
            config,
            client,
            models,
            open: Open::default(),
        })
    }

    /// Checks `forward` and, when allowed, registers it under `id` and returns its task. The
    /// task answers on `replies` once the model server's head is in, then sends the body as
    /// chunks on `bulk`, never more than the window ahead of the acknowledgements.
    pub fn begin(
        &self,
        id: &str,
        forward: LlmForward,
        replies: mpsc::Sender<Frame>,
        bulk: mpsc::Sender<Frame>,
        max_frame: usize,
    ) -> Result<Task, Refusal> {
        let (name, addr, paths) = match forward.server {
            ModelServerKind::Ollama => ("Ollama", &self.config.ollama, OLLAMA_PATHS),
            ModelServerKind::Sdxl => ("the SD web UI", &self.config.sdxl, SDXL_PATHS),
        };
        let target = format!(
            "{} {} {}",
            forward.server.as_str(),
            clip(&forward.method, 16),
            clip(&forward.path, 256)
        );
        if !self.config.enabled {
            return Err(Refusal::denied(
                target,
                "model forwarding is turned off on this host".into(),
            ));
        }
        let method = match forward.method.as_str() {
            "GET" => reqwest::Method::GET,
            "POST" => reqwest::Method::POST,
            _ => {
                return Err(Refusal::denied(
                    target,
                    format!(
                        "method {:?} is not forwarded (GET or POST only)",
                        clip(&forward.method, 16)
                    ),
                ));
            }
        };
        // Exact match: a query string, `..` or percent-encoding never equals an entry.
        let Some(path) = paths.iter().find(|p| **p == forward.path) else {
            return Err(Refusal::denied(
                target,
                format!(
                    "path {:?} is not forwarded to {name}",
                    clip(&forward.path, 256)
                ),
            ));
        };
        let addr = match addr.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => a,
            _ => {
                return Err(Refusal::denied(
                    target,
                    format!("{name} is configured at {addr}, not on loopback"),
                ));
            }
        };
        let found = {
            let models = self.models.borrow();
            match forward.server {
                ModelServerKind::Ollama => models.ollama.is_some(),
                ModelServerKind::Sdxl => models.sdxl.is_some(),
            }
        };
        if !found {
            return Err(Refusal::other(
                ErrorCode::Unavailable,
                match forward.server {
                    ModelServerKind::Ollama => "no Ollama server found on this host",
                    ModelServerKind::Sdxl => "no Stable Diffusion web UI found on this host",
                },
            ));
        }
        if let Some(body) = &forward.body {
            if method == reqwest::Method::GET {
                return Err(Refusal::other(
                    ErrorCode::BadRequest,
                    "a GET request carries no body",
                ));
            }
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(body) {
                return Err(Refusal::other(
                    ErrorCode::BadRequest,
                    format!("the body is not JSON: {e}"),
                ));
            }
        }
        let (acked, acked_rx) = watch::channel(0);
        let (cancel, cancel_rx) = oneshot::channel();
        {
            let mut open = lock(&self.open);
            if open.contains_key(id) {
                return Err(Refusal::other(
                    ErrorCode::Conflict,
                    format!("a forward with id {id} is already running"),
                ));
            }
            open.insert(
                id.to_owned(),
                Control {
                    acked,
                    _cancel: cancel,
                },
            );
        }
        let mut request = self.client.request(method, format!("http://{addr}{path}"));
        if let Some(body) = forward.body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let run = Run {
            id: id.to_owned(),
            name,
            replies,
            bulk,
            acked: acked_rx,
            cancel: cancel_rx,
            seq: 0,
            // A chunk's data may grow sixfold as JSON (`\u0000`); it must fit the link's frame.
            max_data: MAX_STREAM_CHUNK
                .min(max_frame.saturating_sub(1024) / 6)
                .max(64),
            idle: self.config.idle_timeout,
        };
        let registered = Registered {
            open: self.open.clone(),
            id: id.to_owned(),
        };
        let header_timeout = self.config.header_timeout;
        Ok(Box::pin(async move {
            let _registered = registered;
            run.run(request, header_timeout).await;
        }))
    }

    /// Moves the window of forward `ack.id` up to `ack.seq`.
    pub fn ack(&self, ack: &StreamAck) {
        if let Some(control) = lock(&self.open).get(&ack.id) {
            let consumed = ack.seq.saturating_add(1);
            control.acked.send_if_modified(|n| {
                let moved = consumed > *n;
                if moved {
                    *n = consumed;
                }
                moved
            });
        }
    }

    /// Stops forward `id` at once; false when none runs under that id.
    pub fn cancel(&self, id: &str) -> bool {
        // Dropping its control is the signal: the task drops the model server's answer,
        // which closes that connection.
        lock(&self.open).remove(id).is_some()
    }

    /// Forwards running now.
    pub fn running(&self) -> usize {
        lock(&self.open).len()
    }
}

/// Removes a forward's control when its task ends, however it ends.
struct Registered {
    open: Open,
    id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.open).remove(&self.id);
    }
}

/// Why a forward stopped before its end.
enum Stop {
    /// `request.cancel`.
    Cancelled,
    /// The link this forward belongs to closed.
    LinkClosed,
    /// The control plane acknowledged nothing for the idle time.
    Abandoned,
}

/// One running forward.
struct Run {
    id: String,
    name: &'static str,
    replies: mpsc::Sender<Frame>,
    bulk: mpsc::Sender<Frame>,
    acked: watch::Receiver<u64>,
    cancel: oneshot::Receiver<()>,
    /// The next chunk's number.
    seq: u64,
    max_data: usize,
    idle: Duration,
}

/// Runs `work` unless the forward is cancelled or its link closes first.
async fn unless_stopped<T>(
    cancel: &mut oneshot::Receiver<()>,
    link: &mpsc::Sender<Frame>,
    work: impl Future<Output = T>,
) -> Result<T, Stop> {
    tokio::select! {
        biased;
        _ = cancel => Err(Stop::Cancelled),
        _ = link.closed() => Err(Stop::LinkClosed),
        out = work => Ok(out),
    }
}

impl Run {
    async fn run(mut self, request: reqwest::RequestBuilder, header_timeout: Duration) {
        let sent = unless_stopped(
            &mut self.cancel,
            &self.bulk,
            tokio::time::timeout(header_timeout, request.send()),
        )
        .await;
        let answer = match sent {
            Err(Stop::LinkClosed) => return,
            Err(_) => Err((
                ErrorCode::Unavailable,
                "cancelled before the model server answered".to_owned(),
            )),
            Ok(Err(_)) => Err((
                ErrorCode::Timeout,
                format!(
                    "{} sent no answer within {} s",
                    self.name,
                    header_timeout.as_secs()
                ),
            )),
            Ok(Ok(Err(e))) => Err((
                ErrorCode::Unavailable,
                format!("cannot reach {}: {}", self.name, chain(&e)),
            )),
            Ok(Ok(Ok(response))) => Ok(response),
        };
        let mut response = match answer {
            Ok(r) => r,
            Err((code, message)) => {
                let _ = self
                    .replies
                    .send(Frame::Response(Response::err(
                        self.id.clone(),
                        code,
                        message,
                    )))
                    .await;
                return;
            }
        };
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| clip(v, MAX_HEADER_LEN).to_owned())
        };
        let head = LlmForwarded {
            status: response.status().as_u16(),
            content_type: header(reqwest::header::CONTENT_TYPE).unwrap_or_default(),
            retry_after: header(reqwest::header::RETRY_AFTER),
        };
        // The head goes out before any chunk: the session sends answers ahead of bulk.
        if self
            .replies
            .send(Frame::Response(Response::ok(self.id.clone(), &head)))
            .await
            .is_err()
        {
            return;
        }
        let mut carry = Vec::new();
        let mut total = 0u64;
        let failure = loop {
            let next = unless_stopped(
                &mut self.cancel,
                &self.bulk,
                tokio::time::timeout(self.idle, response.chunk()),
            )
            .await;
            let bytes = match next {
                Err(_) => return,
                Ok(Err(_)) => {
                    break Some(format!(
                        "{} sent nothing for {} s",
                        self.name,
                        self.idle.as_secs()
                    ));
                }
                Ok(Ok(Err(e))) => {
                    break Some(format!("{}'s answer broke off: {}", self.name, chain(&e)));
                }
                Ok(Ok(Ok(None))) => break None,
                Ok(Ok(Ok(Some(bytes)))) => bytes,
            };
            total += bytes.len() as u64;
            if total > MAX_BODY {
                break Some(format!(
                    "{}'s answer exceeds {} MiB",
                    self.name,
                    MAX_BODY >> 20
                ));
            }
            let text = decode_utf8(&mut carry, &bytes);
            if self.send_text(&text).await.is_err() {
                return;
            }
        };
        // The model server's connection closes now, not after the last chunk is taken.
        drop(response);
        let (kind, data) = match failure {
            Some(message) => (stream::ERROR, message),
            None => {
                // A character cut off by the end of the body.
                let tail = String::from_utf8_lossy(&carry).into_owned();
                if self.send_text(&tail).await.is_err() {
                    return;
                }
                (stream::BODY, String::new())
            }
        };
        let _ = self.send(kind, data, true).await;
    }

    /// Sends `text` as body chunks of at most `max_data` bytes, cut on character boundaries.
    async fn send_text(&mut self, text: &str) -> Result<(), Stop> {
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = rest.floor_char_boundary(self.max_data);
            if cut == 0 {
                cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
            }
            let (piece, after) = rest.split_at(cut);
            self.send(stream::BODY, piece.to_owned(), false).await?;
            rest = after;
        }
        Ok(())
    }

    /// Sends one chunk once the window has room for it.
    async fn send(&mut self, kind: &str, data: String, last: bool) -> Result<(), Stop> {
        let seq = self.seq;
        let acked = &mut self.acked;
        let room = unless_stopped(
            &mut self.cancel,
            &self.bulk,
            tokio::time::timeout(self.idle, async {
                acked
                    .wait_for(|consumed| seq < consumed + STREAM_WINDOW)
                    .await
                    .is_ok()
            }),
        )
        .await?;
        let chunk = |kind: &str, data: String, last: bool| {
            Frame::Chunk(Chunk {
                v: PROTOCOL_VERSION,
                id: self.id.clone(),
                seq,
                last,
                stream: kind.to_owned(),
                data,
            })
        };
        match room {
            Ok(true) => {}
            // The control dropped: cancelled.
            Ok(false) => return Err(Stop::Cancelled),
            Err(_) => {
                // Past the window, once: the reader learns why the stream ended, and the
                // control plane's queue holds twice the window.
                tracing::warn!(id = %self.id, "no acknowledgement in time; forward abandoned");
                let message = format!("no acknowledgement for {} s", self.idle.as_secs());
                let _ = self.bulk.try_send(chunk(stream::ERROR, message, true));
                return Err(Stop::Abandoned);
            }
        }
        let frame = chunk(kind, data, last);
        match unless_stopped(&mut self.cancel, &self.bulk, self.bulk.send(frame)).await? {
            Ok(()) => {
                self.seq += 1;
                Ok(())
            }
            Err(_) => Err(Stop::LinkClosed),
        }
    }
}

/// Appends `input` to the bytes carried from the previous read and returns the text up to the
/// last complete character; an incomplete character at the end stays in `carry`, invalid
/// bytes become U+FFFD.
fn decode_utf8(carry: &mut Vec<u8>, input: &[u8]) -> String {
    carry.extend_from_slice(input);
    let mut out = String::with_capacity(carry.len());
    let mut rest: &[u8] = carry;
    loop {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                out.push_str(text);
                rest = &[];
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                match e.error_len() {
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = &after[bad..];
                    }
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
        }
    }
    let used = carry.len() - rest.len();
    carry.drain(..used);
    out
}

/// An error with its causes, as reqwest's own message names only the outermost.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn clip(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

#[cfg(test)]
mod tests;
