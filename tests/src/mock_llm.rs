//! A local stand-in for the LLM providers the gateway routes to (OpenAI, DeepSeek, Gemini,
//! Ollama, SD WebUI): it speaks each one's documented wire format and misbehaves on command.
//!
//! One HTTP/1.1 server (hyper, keep-alive, `TCP_NODELAY`) picks the dialect from the path:
//! `/v1/chat/completions`, `/chat/completions`, `/v1/embeddings`, `/v1/models` (OpenAI and, for
//! `deepseek*` models, DeepSeek's flavour), `/v1beta/models/{model}:{action}` (Gemini), `/api/..`
//! (Ollama), `/sdapi/v1/..` (SD WebUI). Answers echo the request (`label:model:last user text`)
//! so a test can tell which upstream answered what. A [`Behaviour`] sets pacing, a required key
//! and one [`Fault`], which hits the inference endpoints (POSTs) only. Tests watch the mock
//! through its recorded requests and counters (open connections, closes by the client, answers
//! the client abandoned), each with a helper that waits on a notify. The shapes follow
//! `tests/fixtures/llm/`, and a test keeps them in step. The `mock-llm` binary serves the same
//! for benchmarks.
//!
//! Limits: HTTP/1.1 only; requests are read whole before anything else happens; Gemini's
//! non-SSE stream (a JSON array) is sent at once rather than paced.

mod behaviour;
mod gemini;
mod ollama;
mod openai;
mod sdwebui;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, Sleep};

pub use behaviour::{Behaviour, CONTEXT_LENGTH_EXCEEDED, ErrorReply, Fault, OllamaModel};
use gemini::Action;
use wire::{Ask, Framing, Reply, Shape};

/// A running mock on a loopback port; dropping it stops the server and its connections.
pub struct MockLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

/// One request as the mock read it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Lower-case names; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as JSON; `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

impl MockLlm {
    /// A mock on `127.0.0.1:0`.
    pub async fn start(behaviour: Behaviour) -> Self {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), behaviour)
            .await
            .expect("bind the mock LLM on loopback")
    }

    /// A mock on `addr` (the `mock-llm` binary's `--listen`).
    pub async fn bind(addr: SocketAddr, behaviour: Behaviour) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(behaviour));
        let server = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self {
            addr,
            shared,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Behave so from the next request on; `fault_times` and flapping count afresh.
    pub fn set(&self, behaviour: Behaviour) {
        *lock(&self.shared.now) = Now {
            behaviour: Arc::new(behaviour),
            inference: 0,
        };
    }

    /// The requests read so far (when `Behaviour::record`), oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests have been read, recorded or not.
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Wait until `n` requests have been read; false on timeout.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |s| s.count.load(Ordering::SeqCst) >= n)
            .await
    }

    /// Connections now open.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Connections the client closed or reset (EOF or an error on the socket), counted once each.
    pub fn client_closes(&self) -> usize {
        self.shared.client_closes.load(Ordering::SeqCst)
    }

    /// Wait until `n` connections have been closed by their client; false on timeout.
    pub async fn wait_client_closes(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |s| s.client_closes.load(Ordering::SeqCst) >= n)
            .await
    }

    /// Answers whose client went away before their last byte: while the mock was still thinking
    /// (a delay, a slow first byte, no response) or mid-stream (a cancelled stream, a stall).
    pub fn aborted_answers(&self) -> usize {
        self.shared.aborted.load(Ordering::SeqCst)
    }

    /// Wait until `n` answers have been abandoned by their client; false on timeout.
    pub async fn wait_aborted_answers(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |s| s.aborted.load(Ordering::SeqCst) >= n)
            .await
    }

    async fn wait(&self, timeout: Duration, done: impl Fn(&Shared) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // Registered before the check, so a change in between still wakes us.
            let changed = self.shared.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if done(&self.shared) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return done(&self.shared);
            }
        }
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        // The accept task owns the connections' JoinSet: aborting it ends them all.
        self.server.abort();
    }
}

/// An address nobody listens on, for "connection refused".
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind a loopback port");
    listener.local_addr().expect("local address")
    // Dropped here: connects are refused until someone else takes the port.
}

struct Shared {
    now: Mutex<Now>,
    requests: Mutex<Vec<Recorded>>,
    count: AtomicUsize,
    open: AtomicUsize,
    client_closes: AtomicUsize,
    aborted: AtomicUsize,
    /// txt2img requests in hand, for SD WebUI's progress.
    painting: AtomicUsize,
    /// Any counter moved.
    changed: Notify,
}

/// The behaviour in force and how many inference requests it has seen.
struct Now {
    behaviour: Arc<Behaviour>,
    inference: u64,
}

impl Shared {
    fn new(behaviour: Behaviour) -> Self {
        Self {
            now: Mutex::new(Now {
                behaviour: Arc::new(behaviour),
                inference: 0,
            }),
            requests: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            client_closes: AtomicUsize::new(0),
            aborted: AtomicUsize::new(0),
            painting: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Takes a request in: records it, and says how to behave and which inference request of
    /// this behaviour it is.
    fn admit(&self, parts: &Parts, body: &Bytes, inference: bool) -> (Arc<Behaviour>, u64, u64) {
        let (behaviour, nth) = {
            let mut now = lock(&self.now);
            let nth = now.inference;
            now.inference += u64::from(inference);
            (now.behaviour.clone(), nth)
        };
        if behaviour.record {
            let mut headers = BTreeMap::<String, String>::new();
            for (name, value) in &parts.headers {
                let value = String::from_utf8_lossy(value.as_bytes());
                headers
                    .entry(name.as_str().to_owned())
                    .and_modify(|v| {
                        v.push_str(", ");
                        v.push_str(&value);
                    })
                    .or_insert_with(|| value.into_owned());
            }
            lock(&self.requests).push(Recorded {
                method: parts.method.to_string(),
                path: parts
                    .uri
                    .path_and_query()
                    .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
                headers,
                body: body.clone(),
            });
        }
        // Counted after recording, so a waiter that sees the count sees the record.
        let seq = self.count.fetch_add(1, Ordering::SeqCst) as u64;
        self.changed.notify_waiters();
        (behaviour, nth, seq)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
                // Out of descriptors under a load test: let some connections end.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// What a request handler can do to its connection.
#[derive(Default)]
struct ConnControl {
    drop_now: Notify,
    reset: AtomicBool,
}

impl ConnControl {
    /// Drop the connection before any header; `reset` sends RST instead of FIN.
    fn drop_connection(&self, reset: bool) {
        self.reset.store(reset, Ordering::SeqCst);
        self.drop_now.notify_one();
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Nagle meeting delayed ACK would add ~40 ms to small answers.
    let _ = stream.set_nodelay(true);
    let control = Arc::new(ConnControl::default());
    let io = Tracked::new(stream, control.clone(), shared.clone());
    let handler_control = control.clone();
    let service = hyper::service::service_fn(move |request| {
        handle(shared.clone(), handler_control.clone(), request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // Idle keep-alive connections stay until the client closes them, as providers' do.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = connection => {}
        () = control.drop_now.notified() => {}
    }
}

/// The socket, watched: counts open connections and the client's EOF or reset, and resets on
/// drop when asked.
struct Tracked {
    stream: TcpStream,
    control: Arc<ConnControl>,
    shared: Arc<Shared>,
    client_closed: bool,
}

impl Tracked {
    fn new(stream: TcpStream, control: Arc<ConnControl>, shared: Arc<Shared>) -> Self {
        shared.bump(&shared.open);
        Self {
            stream,
            control,
            shared,
            client_closed: false,
        }
    }

    fn saw_client_close(&mut self) {
        if !self.client_closed {
            self.client_closed = true;
            self.shared.bump(&self.shared.client_closes);
        }
    }

    fn watch<T>(&mut self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(_)) = &result {
            self.saw_client_close();
        }
        result
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.control.reset.load(Ordering::SeqCst) {
            // SO_LINGER 0: close sends RST, the client sees a reset rather than EOF.
            let _ = self.stream.set_zero_linger();
        }
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
        self.shared.changed.notify_waiters();
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let room = buf.remaining();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && room > 0 && buf.filled().len() == before {
            this.saw_client_close();
        }
        this.watch(result)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.watch(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.watch(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_flush(cx);
        this.watch(result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.watch(result)
    }
}

/// Which endpoint a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Chat,
    Embeddings,
    Models,
    Model(&'a str),
    Gemini(&'a str, Action),
    OllamaChat,
    OllamaGenerate,
    OllamaEmbed,
    OllamaTags,
    OllamaPs,
    OllamaVersion,
    Txt2Img,
    SdModels,
    SdProgress,
    Unknown(Dialect),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    OpenAi,
    Gemini,
    Ollama,
    SdWebUi,
}

impl<'a> Route<'a> {
    fn of(method: &Method, path: &'a str) -> Self {
        let get = method == Method::GET;
        let post = method == Method::POST;
        match path {
            "/v1/chat/completions" | "/chat/completions" if post => Self::Chat,
            "/v1/embeddings" | "/embeddings" if post => Self::Embeddings,
            "/v1/models" | "/models" if get => Self::Models,
            "/api/chat" if post => Self::OllamaChat,
            "/api/generate" if post => Self::OllamaGenerate,
            "/api/embed" if post => Self::OllamaEmbed,
            "/api/tags" if get => Self::OllamaTags,
            "/api/ps" if get => Self::OllamaPs,
            "/api/version" if get => Self::OllamaVersion,
            "/sdapi/v1/txt2img" if post => Self::Txt2Img,
            "/sdapi/v1/sd-models" if get => Self::SdModels,
            "/sdapi/v1/progress" if get => Self::SdProgress,
            _ => {
                if let Some(rest) = path.strip_prefix("/v1beta/models/") {
                    return match rest.rsplit_once(':') {
                        Some((model, action)) if post => Action::of(action)
                            .map_or(Self::Unknown(Dialect::Gemini), |a| Self::Gemini(model, a)),
                        _ => Self::Unknown(Dialect::Gemini),
                    };
                }
                if let Some(id) = path.strip_prefix("/v1/models/")
                    && get
                {
                    return Self::Model(id);
                }
                Self::Unknown(if path.starts_with("/api/") {
                    Dialect::Ollama
                } else if path.starts_with("/sdapi/") {
                    Dialect::SdWebUi
                } else if path.starts_with("/v1beta/") {
                    Dialect::Gemini
                } else {
                    Dialect::OpenAi
                })
            }
        }
    }

    fn dialect(self) -> Dialect {
        match self {
            Self::Chat | Self::Embeddings | Self::Models | Self::Model(_) => Dialect::OpenAi,
            Self::Gemini(..) => Dialect::Gemini,
            Self::OllamaChat
            | Self::OllamaGenerate
            | Self::OllamaEmbed
            | Self::OllamaTags
            | Self::OllamaPs
            | Self::OllamaVersion => Dialect::Ollama,
            Self::Txt2Img | Self::SdModels | Self::SdProgress => Dialect::SdWebUi,
            Self::Unknown(dialect) => dialect,
        }
    }

    fn answer(self, ask: &Ask<'_>, shared: &Shared) -> Reply {
        match self {
            Self::Chat => openai::chat(ask),
            Self::Embeddings => openai::embeddings(ask),
            Self::Models => openai::models(ask.behaviour),
            Self::Model(id) => openai::model(ask.behaviour, id),
            Self::Gemini(_, action @ (Action::Embed | Action::BatchEmbed)) => {
                gemini::embed(ask, action)
            }
            Self::Gemini(model, action) => gemini::generate(ask, model, action),
            Self::OllamaChat => ollama::chat(ask),
            Self::OllamaGenerate => ollama::generate(ask),
            Self::OllamaEmbed => ollama::embed(ask),
            Self::OllamaTags => ollama::tags(ask.behaviour),
            Self::OllamaPs => ollama::ps(ask.behaviour),
            Self::OllamaVersion => ollama::version(),
            Self::Txt2Img => sdwebui::txt2img(ask),
            Self::SdModels => sdwebui::models(),
            Self::SdProgress => sdwebui::progress(shared.painting.load(Ordering::SeqCst)),
            Self::Unknown(_) => Reply::Error(ErrorReply::status(404)),
        }
    }
}

impl Dialect {
    fn error_body(self, error: &ErrorReply) -> Vec<u8> {
        match self {
            Self::OpenAi => openai::error_body(error),
            Self::Gemini => gemini::error_body(error),
            Self::Ollama => ollama::error_body(error),
            Self::SdWebUi => sdwebui::error_body(error),
        }
    }

    /// Whether the request carries `key` where this provider expects it.
    fn authorised(self, parts: &Parts, key: &str) -> bool {
        let header = |name| parts.headers.get(name).map(HeaderValue::as_bytes);
        match self {
            Self::Gemini => {
                header("x-goog-api-key") == Some(key.as_bytes())
                    || parts
                        .uri
                        .query()
                        .unwrap_or_default()
                        .split('&')
                        .any(|kv| kv.strip_prefix("key=") == Some(key))
            }
            Self::SdWebUi => {
                let basic = base64::engine::general_purpose::STANDARD.encode(key);
                header("authorization") == Some(format!("Basic {basic}").as_bytes())
            }
            Self::OpenAi | Self::Ollama => {
                header("authorization") == Some(format!("Bearer {key}").as_bytes())
            }
        }
    }

    fn error(self, error: &ErrorReply) -> Response<MockBody> {
        let status =
            StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = respond(
            status,
            "application/json",
            MockBody::full(self.error_body(error)),
        );
        if let Some(secs) = error.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self == Self::SdWebUi && error.status == 401 {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        }
        response
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: MockBody) -> Response<MockBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Never returns: the connection task drops this request's connection, or the client goes.
async fn forever() -> Infallible {
    std::future::pending().await
}

async fn handle(
    shared: Arc<Shared>,
    control: Arc<ConnControl>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let mut unanswered = Unanswered(Some(shared.clone()));
    let response = answer(&shared, &control, request, &mut unanswered).await;
    unanswered.0 = None;
    Ok(response)
}

/// Counts an answer abandoned when dropped armed: the client left while the mock was still
/// thinking (a delay, a slow first byte, no response).
struct Unanswered(Option<Arc<Shared>>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.bump(&shared.aborted);
        }
    }
}

async fn answer(
    shared: &Arc<Shared>,
    control: &ConnControl,
    request: Request<Incoming>,
    unanswered: &mut Unanswered,
) -> Response<MockBody> {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        // The client went away mid-body: nobody is left to answer.
        return respond(
            StatusCode::BAD_REQUEST,
            "text/plain",
            MockBody::full(Vec::new()),
        );
    };
    let route = Route::of(&parts.method, parts.uri.path());
    let dialect = route.dialect();
    let inference = parts.method == Method::POST;
    let (behaviour, nth, seq) = shared.admit(&parts, &body, inference);
    if let Some(key) = &behaviour.require_key
        && !dialect.authorised(&parts, key)
    {
        return dialect.error(&ErrorReply::status(401));
    }
    let fault = if inference {
        behaviour.fault_for(nth)
    } else {
        &Fault::None
    };
    match fault {
        Fault::Error(error) => return dialect.error(error),
        Fault::Flapping if nth % 2 == 0 => return dialect.error(&ErrorReply::status(503)),
        Fault::Reset | Fault::Close => {
            // The mock, not the client, ends this one.
            unanswered.0 = None;
            control.drop_connection(*fault == Fault::Reset);
            match forever().await {}
        }
        Fault::NoResponse => match forever().await {},
        Fault::SlowFirstByte { delay_ms } => {
            tokio::time::sleep(Duration::from_millis(*delay_ms)).await;
        }
        _ => {}
    }
    let _painting = (route == Route::Txt2Img).then(|| Painting::new(shared));
    let ask = Ask {
        behaviour: &behaviour,
        seq,
        nth,
        body: &body,
        query: parts.uri.query().unwrap_or_default(),
        shape: Shape {
            terminated: !matches!(
                fault,
                Fault::MissingDone
                    | Fault::StreamCut { .. }
                    | Fault::StreamStall { .. }
                    | Fault::StreamError { .. }
            ),
            content_filter: *fault == Fault::ContentFilter,
        },
    };
    let reply = route.answer(&ask, shared);
    match reply {
        Reply::Error(error) => dialect.error(&error),
        Reply::Json(json) => {
            if behaviour.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(behaviour.delay_ms)).await;
            }
            whole_answer(dialect, json, fault, shared)
        }
        Reply::Stream {
            framing,
            events,
            keep_alive,
        } => stream_answer(
            dialect,
            framing,
            events,
            keep_alive,
            fault,
            Duration::from_millis(behaviour.pace_ms),
            shared,
        ),
    }
}

/// Counts a txt2img in hand while alive.
struct Painting<'a>(&'a Shared);

impl<'a> Painting<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.painting.fetch_add(1, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for Painting<'_> {
    fn drop(&mut self) {
        self.0.painting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A non-streamed answer, bent by the stream faults: cut or stalled halfway, or not JSON.
fn whole_answer(
    dialect: Dialect,
    json: Vec<u8>,
    fault: &Fault,
    shared: &Arc<Shared>,
) -> Response<MockBody> {
    let half = |end| {
        let json = Bytes::from(json.clone());
        let first = json.slice(..json.len() / 2);
        MockBody::events(vec![first], end, Duration::ZERO, shared.clone())
    };
    let body = match fault {
        Fault::StreamCut { .. } => half(End::Cut),
        Fault::StreamStall { .. } => half(End::Stall),
        Fault::MalformedChunk { .. } => MockBody::full(b"{not json".to_vec()),
        Fault::StreamError { .. } => return dialect.error(&ErrorReply::status(500)),
        _ => MockBody::full(json),
    };
    respond(StatusCode::OK, "application/json", body)
}

/// A stream: the dialect's events, framed, with the fault applied.
fn stream_answer(
    dialect: Dialect,
    framing: Framing,
    events: Vec<Vec<u8>>,
    keep_alive: bool,
    fault: &Fault,
    pace: Duration,
    shared: &Arc<Shared>,
) -> Response<MockBody> {
    let mut framed: Vec<Vec<u8>> = events.iter().map(|e| framing.frame(e)).collect();
    let mut end = End::Finish;
    match *fault {
        Fault::StreamCut { after } => {
            framed.truncate(after);
            end = End::Cut;
        }
        Fault::StreamStall { after } => {
            framed.truncate(after);
            end = End::Stall;
        }
        Fault::MalformedChunk { after } => {
            let at = after.min(framed.len());
            framed.insert(at, framing.frame(b"{not json"));
        }
        Fault::StreamError { after } => {
            framed.truncate(after);
            framed.push(framing.frame(&dialect.error_body(&ErrorReply::status(500))));
        }
        _ => {}
    }
    if keep_alive {
        // DeepSeek's comments while it holds a busy connection; parsers must skip them.
        for event in framed.iter_mut().step_by(2) {
            event.splice(0..0, b": keep-alive\n\n".iter().copied());
        }
    }
    let items = framed.into_iter().map(Bytes::from).collect();
    let mut response = respond(
        StatusCode::OK,
        framing.content_type(),
        MockBody::events(items, end, pace, shared.clone()),
    );
    if framing != Framing::Ndjson {
        response
            .headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-cache"));
    }
    response
}

/// How a stream of events ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Cleanly (the chunked terminator).
    Finish,
    /// The connection closes without the chunked terminator.
    Cut,
    /// Nothing more, ever.
    Stall,
}

/// A response body: whole, or events paced and ended as told.
struct MockBody(Kind);

enum Kind {
    Full(Option<Bytes>),
    Events(Box<Events>),
}

struct Events {
    items: std::vec::IntoIter<Bytes>,
    end: End,
    pace: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    sent_any: bool,
    /// A cut first yields once, so hyper writes out what it holds before the connection goes.
    yielded: bool,
    finished: bool,
    shared: Arc<Shared>,
}

impl MockBody {
    fn full(bytes: Vec<u8>) -> Self {
        Self(Kind::Full(Some(Bytes::from(bytes))))
    }

    fn events(items: Vec<Bytes>, end: End, pace: Duration, shared: Arc<Shared>) -> Self {
        Self(Kind::Events(Box::new(Events {
            items: items.into_iter(),
            end,
            pace,
            timer: None,
            waiting: false,
            sent_any: false,
            yielded: false,
            finished: false,
            shared,
        })))
    }
}

impl Events {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        if self.items.len() > 0 {
            if self.sent_any && !self.pace.is_zero() {
                let pace = self.pace;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(pace)));
                if !self.waiting {
                    timer.as_mut().reset(Instant::now() + pace);
                    self.waiting = true;
                }
                ready!(timer.as_mut().poll(cx));
                self.waiting = false;
            }
            self.sent_any = true;
            return Poll::Ready(self.items.next().map(|b| Ok(Frame::data(b))));
        }
        match self.end {
            End::Finish => {
                self.finished = true;
                Poll::Ready(None)
            }
            End::Stall => Poll::Pending,
            End::Cut if !self.yielded => {
                self.yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            End::Cut => {
                self.finished = true;
                Poll::Ready(Some(Err(io::Error::other("mock: stream cut"))))
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.bump(&self.shared.aborted);
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().0 {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Events(events) => events.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(&self.0, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Events(_) => SizeHint::default(),
        }
    }
}
