//! The link to the control plane: dial out over mutual TLS, say hello, answer requests, keep the
//! certificate fresh, and reconnect with backoff whenever the link drops.

use std::future::Future;
use std::time::{Duration, Instant};

use axon_shared::{
    CertInfo, CertRenew, CertRenewed, ErrorCode, Event, Frame, Hello, PROTOCOL_VERSION, Request,
    Response, Ulid, Welcome, op, topic,
};
use futures_util::{SinkExt, StreamExt};
use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::ops::{Handled, Ops, Outlets};
use crate::state::{CA_FILE, CERT_FILE, KEY_FILE, StateDir, StateError};

/// How long dialling (TCP, TLS, upgrade) and the hello may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A session that lasted this long counts as healthy: the next backoff starts from the bottom.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);
/// Shortest time between two renewals, whatever the certificate's lifetime.
const MIN_RENEW_SPACING: Duration = Duration::from_secs(10);
/// How long the agent waits for an answer to its own requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests served in tasks at once per link; past that new ones are answered busy at once,
/// so a flood can neither grow the agent's memory nor hold up pings.
const MAX_IN_FLIGHT: usize = 256;

/// Why one session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot load the state dir: {0}")]
    State(#[from] StateError),
    #[error("TLS setup: {0}")]
    Tls(#[from] crate::tls::LinkTlsError),
    #[error("connect to {url} failed: {reason}")]
    Connect { url: String, reason: String },
    #[error("the control plane refused the hello: {0}")]
    Refused(axon_shared::WireError),
    #[error("the control plane revoked this host's certificate; enroll again to rejoin")]
    Revoked,
    #[error("the link closed: {0}")]
    Closed(String),
    #[error("shutdown")]
    Shutdown,
}

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

use crate::clock::unix_ms;

fn new_id() -> String {
    Ulid::from_parts(unix_ms(), rand::random()).to_string()
}

/// Keeps the link up until `shutdown` flips. `on_first_attempt` runs when the first dial
/// starts (systemd readiness).
pub async fn run_forever(
    config: &AgentConfig,
    hello: Hello,
    ops: Arc<Ops>,
    mut shutdown: watch::Receiver<bool>,
    on_first_attempt: impl FnOnce(),
) {
    let state = StateDir::new(&config.state_dir);
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut on_first_attempt = Some(on_first_attempt);
    loop {
        if let Some(f) = on_first_attempt.take() {
            f();
        }
        let started = Instant::now();
        let result = session(config, &state, &hello, &ops, &mut shutdown).await;
        match &result {
            Err(SessionError::Shutdown) => return,
            Err(SessionError::Refused(e)) => {
                tracing::error!(error = %e, "control plane refused this agent")
            }
            Err(SessionError::Revoked) => {
                // Retrying soon cannot help; keep trying slowly in case the revocation is undone
                // by restoring the control plane's data.
                tracing::error!("this host is revoked; enroll it again to rejoin");
                backoff.saturate();
            }
            Err(e) => tracing::warn!(error = %e, "link down"),
            Ok(()) => {}
        }
        if started.elapsed() >= HEALTHY_SESSION {
            backoff.reset();
        }
        let ceiling = backoff.ceiling();
        let delay = backoff.next_delay();
        tracing::info!(
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX),
            "reconnecting"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn session(
    config: &AgentConfig,
    state: &StateDir,
    hello: &Hello,
    ops: &Arc<Ops>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let identity = state.identity()?;
    let (ca, cert_pem, key_pem) = (
        state.read(CA_FILE)?,
        state.read(CERT_FILE)?,
        state.read(KEY_FILE)?,
    );
    let tls = crate::tls::link_client(&ca, &cert_pem, &key_pem)?;
    let url = config.agent_url.clone().unwrap_or(identity.agent_url);
    // Tungstenite zero-fills its read buffer up to this size (128 KiB by default) on the
    // first read; the link's messages are small, and larger ones grow it as they come.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes));
    let connect_err = |reason: String| SessionError::Connect {
        url: url.clone(),
        reason,
    };
    let dial = tokio_tungstenite::connect_async_tls_with_config(
        url.as_str(),
        Some(ws_config),
        true,
        Some(Connector::Rustls(tls)),
    );
    let (mut ws, _) = tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, dial) => r
            .map_err(|_| connect_err("timed out".into()))?
            .map_err(|e| if is_revoked(&e) { SessionError::Revoked } else { connect_err(e.to_string()) })?,
        _ = shutdown.changed() => return Err(SessionError::Shutdown),
    };
    // The capabilities as detected last, not only at start.
    let hello = Hello {
        capabilities: *ops.capabilities.borrow(),
        ..hello.clone()
    };
    let welcome = tokio::time::timeout(
        CONNECT_TIMEOUT,
        say_hello(&mut ws, &hello, config.max_frame_bytes),
    )
    .await
    .map_err(|_| SessionError::Closed("no welcome in time".into()))??;
    tracing::info!(host = %welcome.host_id, url = %url, "connected to the control plane");
    let (replies, replies_rx) = mpsc::channel(64);
    let (bulk, bulk_rx) = mpsc::channel(64);
    let outlets = Outlets {
        replies,
        bulk,
        max_frame: welcome.max_frame_bytes,
    };
    Live {
        config,
        state,
        key_pem,
        welcome,
        renewal: None,
        ops: ops.clone(),
        outlets,
        in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
    }
    .run(ws, replies_rx, bulk_rx, shutdown)
    .await
}

/// Encodes a frame for the control plane; an answer too large for its frame limit becomes an
/// error answer, so an oversized result never costs the link.
fn fit(frame: Frame, max: usize) -> String {
    let text = frame.encode();
    if text.len() <= max {
        return text;
    }
    match frame {
        Frame::Response(r) => Frame::Response(Response::err(
            r.id,
            ErrorCode::TooLarge,
            format!(
                "the answer ({} bytes) exceeds the link's frame limit of {max} bytes",
                text.len()
            ),
        ))
        .encode(),
        other => other.encode(),
    }
}

fn close(code: CloseCode, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Whether the handshake failed on the control plane's `certificate_revoked` alert.
fn is_revoked(error: &tokio_tungstenite::tungstenite::Error) -> bool {
    let tokio_tungstenite::tungstenite::Error::Io(io) = error else {
        return false;
    };
    io.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked)
            )
        })
}

async fn say_hello(ws: &mut Ws, hello: &Hello, max: usize) -> Result<Welcome, SessionError> {
    let id = new_id();
    let frame = Frame::Request(Request::new(id.clone(), op::HELLO, hello));
    ws.send(Message::Text(frame.encode().into()))
        .await
        .map_err(|e| SessionError::Closed(e.to_string()))?;
    loop {
        let msg = ws
            .next()
            .await
            .ok_or_else(|| SessionError::Closed("closed before welcome".into()))?
            .map_err(|e| SessionError::Closed(e.to_string()))?;
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(c) => {
                return Err(SessionError::Closed(format!(
                    "closed before welcome: {}",
                    c.map(|c| c.reason.to_string()).unwrap_or_default()
                )));
            }
            _ => continue,
        };
        match Frame::decode(&text, max) {
            Ok(Frame::Response(r)) if r.id == id => {
                return r.into_result::<Welcome>().map_err(SessionError::Refused);
            }
            Ok(_) => continue,
            Err(e) => {
                return Err(SessionError::Closed(format!(
                    "invalid frame before welcome: {e}"
                )));
            }
        }
    }
}

/// A connected, welcomed session.
struct Live<'a> {
    config: &'a AgentConfig,
    state: &'a StateDir,
    key_pem: String,
    welcome: Welcome,
    /// The renewal in flight: its request id and where its answer goes.
    renewal: Option<(String, oneshot::Sender<Response>)>,
    ops: Arc<Ops>,
    /// Answers of requests served in their own tasks, and forwarded bodies, sent by the
    /// session loop. Dropped with the session, which stops the forwards of this link.
    outlets: Outlets,
    /// Slots for requests served in tasks.
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Live<'_> {
    async fn run(
        mut self,
        ws: Ws,
        mut replies: mpsc::Receiver<Frame>,
        mut bulk: mpsc::Receiver<Frame>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        let (mut sink, mut stream) = ws.split();
        let max = self.config.max_frame_bytes;
        let interval = Duration::from_secs(self.welcome.ping_interval_secs.max(1));
        let mut last_rx = Instant::now();
        let mut watchdog = tokio::time::interval(interval);
        let mut renew_at = self.renew_deadline();
        let mut answer_rx: Option<(Instant, oneshot::Receiver<Response>)> = None;
        // Audit records are (re)sent from the start of the spool on every connection; the
        // control plane stores each sequence number once and acknowledges.
        let mut sent_up_to = 0u64;
        let mut changes = self.ops.watcher.subscribe();
        let mut service_changes = self.ops.services.changes();
        let mut capabilities = self.ops.capabilities.subscribe();
        let mut samples = self.ops.samples.subscribe();
        // Every connection starts with what is known of the model servers.
        let mut models = self.ops.models.subscribe();
        models.mark_changed();
        let mut watch_seq = 0u64;
        // The spool is read when something was added (and once per connection), not on every
        // wake-up of the loop.
        let mut audit_due = true;
        loop {
            let batch = if audit_due {
                self.ops.audit.pending(sent_up_to, 64)
            } else {
                Vec::new()
            };
            audit_due = batch.len() == 64;
            for record in batch {
                sent_up_to = record.seq;
                let event = Frame::Event(Event {
                    v: PROTOCOL_VERSION,
                    topic: topic::AUDIT.to_owned(),
                    seq: record.seq,
                    body: serde_json::to_value(&record).unwrap_or_default(),
                });
                sink.send(Message::Text(event.encode().into()))
                    .await
                    .map_err(|e| SessionError::Closed(e.to_string()))?;
            }
            let renew_sleep = tokio::time::sleep_until(renew_at.into());
            // In this order: answers and pings first, forwarded bodies only when nothing
            // else waits, so a long stream never delays the link's own traffic.
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Close(None))).await;
                    return Err(SessionError::Shutdown);
                }
                Some(reply) = replies.recv() => {
                    sink.send(Message::Text(fit(reply, self.welcome.max_frame_bytes).into()))
                        .await
                        .map_err(|e| SessionError::Closed(e.to_string()))?;
                }
                msg = stream.next() => {
                    let text = match msg {
                        None => return Err(SessionError::Closed("closed by the control plane".into())),
                        Some(Err(e)) => {
                            if let tokio_tungstenite::tungstenite::Error::Capacity(_) = e {
                                let _ = sink.send(close(CloseCode::Size, "frame too large")).await;
                            }
                            return Err(SessionError::Closed(e.to_string()));
                        }
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(c))) => {
                            return Err(SessionError::Closed(format!(
                                "closed by the control plane: {}",
                                c.map(|c| c.reason.to_string()).unwrap_or_default()
                            )));
                        }
                        Some(Ok(Message::Binary(_))) => {
                            let _ = sink.send(close(CloseCode::Unsupported, "binary frames are not part of the protocol")).await;
                            return Err(SessionError::Closed("binary frame from the control plane".into()));
                        }
                        Some(Ok(_)) => { last_rx = Instant::now(); continue; }
                    };
                    last_rx = Instant::now();
                    let frame = match Frame::decode(&text, max) {
                        Ok(f) => f,
                        Err(e) => {
                            let code = if e.code() == ErrorCode::TooLarge { CloseCode::Size } else { CloseCode::Protocol };
                            let _ = sink.send(close(code, "invalid frame")).await;
                            return Err(SessionError::Closed(format!("invalid frame from the control plane: {e}")));
                        }
                    };
                    if let Some(reply) = self.handle(frame) {
                        sink.send(Message::Text(fit(reply, self.welcome.max_frame_bytes).into()))
                            .await
                            .map_err(|e| SessionError::Closed(e.to_string()))?;
                    }
                }
                _ = watchdog.tick() => {
                    if last_rx.elapsed() > interval * 3 {
                        return Err(SessionError::Closed("control plane silent for 3 ping intervals".into()));
                    }
                }
                _ = renew_sleep, if answer_rx.is_none() => {
                    match self.renewal_request() {
                        Ok((frame, rx)) => {
                            sink.send(Message::Text(frame.encode().into()))
                                .await
                                .map_err(|e| SessionError::Closed(e.to_string()))?;
                            answer_rx = Some((Instant::now() + REQUEST_TIMEOUT, rx));
                        }
                        Err(e) => tracing::error!(error = %e, "cannot build a renewal request"),
                    }
                    renew_at = Instant::now() + Duration::from_secs(60);
                }
                answer = async {
                    match &mut answer_rx {
                        Some((deadline, rx)) => tokio::time::timeout_at((*deadline).into(), rx).await.ok().and_then(Result::ok),
                        None => std::future::pending().await,
                    }
                } => {
                    answer_rx = None;
                    self.renewal = None;
                    renew_at = match answer.map(|r| r.into_result::<CertRenewed>()) {
                        Some(Ok(renewed)) => match self.store_renewed(&renewed) {
                            Ok(()) => {
                                tracing::info!(not_after = renewed.not_after, "certificate renewed");
                                self.renew_deadline().max(Instant::now() + MIN_RENEW_SPACING)
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "cannot store the renewed certificate");
                                Instant::now() + Duration::from_secs(300)
                            }
                        },
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "renewal refused; retrying in 5 minutes");
                            Instant::now() + Duration::from_secs(300)
                        }
                        None => Instant::now() + Duration::from_secs(60),
                    };
                }
                _ = self.ops.audit.spooled.notified() => audit_due = true,
                change = service_changes.recv() => {
                    let Ok(change) = change else { continue };
                    watch_seq += 1;
                    live_event(&mut sink, topic::SERVICE, watch_seq, serde_json::to_value(&change).unwrap_or_default()).await?;
                }
                sample = samples.recv() => {
                    let Ok(sample) = sample else { continue };
                    watch_seq += 1;
                    live_event(&mut sink, topic::METRICS, watch_seq, serde_json::to_value(&*sample).unwrap_or_default()).await?;
                }
                changed = models.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let now = models.borrow_and_update().clone();
                    watch_seq += 1;
                    live_event(&mut sink, topic::MODELS, watch_seq, serde_json::to_value(&now).unwrap_or_default()).await?;
                }
                changed = capabilities.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let now = *capabilities.borrow_and_update();
                    watch_seq += 1;
                    live_event(&mut sink, topic::CAPABILITIES, watch_seq, serde_json::to_value(now).unwrap_or_default()).await?;
                }
                change = changes.recv() => {
                    let change = match change {
                        Ok(c) => c,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => crate::watch::Change {
                            path: String::new(),
                            kind: "overflow".into(),
                        },
                        Err(_) => continue,
                    };
                    watch_seq += 1;
                    live_event(&mut sink, topic::WATCH, watch_seq, serde_json::to_value(&change).unwrap_or_default()).await?;
                }
                Some(chunk) = bulk.recv() => {
                    sink.send(Message::Text(fit(chunk, self.welcome.max_frame_bytes).into()))
                        .await
                        .map_err(|e| SessionError::Closed(e.to_string()))?;
                }
            }
        }
    }

    fn handle(&mut self, frame: Frame) -> Option<Frame> {
        match frame {
            Frame::Request(req) => {
                // Answered in the loop without I/O: never refused as busy.
                let inline = matches!(
                    req.op.as_str(),
                    op::PING | op::EVENT_ACK | op::CANCEL | op::EXEC_LIST | op::STREAM_ACK
                );
                let permit = if inline {
                    None
                } else {
                    match self.in_flight.clone().try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => {
                            return Some(Frame::Response(Response::err(
                                req.id,
                                ErrorCode::RateLimited,
                                format!(
                                    "the agent is busy: {MAX_IN_FLIGHT} requests are in progress"
                                ),
                            )));
                        }
                    }
                };
                match self.ops.handle(req, &self.outlets) {
                    Handled::Now(response) => Some(Frame::Response(response)),
                    Handled::Quiet => None,
                    Handled::Own(task) => {
                        tokio::spawn(async move {
                            task.await;
                            drop(permit);
                        });
                        None
                    }
                    Handled::Later(answer) => {
                        let replies = self.outlets.replies.clone();
                        tokio::spawn(async move {
                            let response = answer.await;
                            drop(permit);
                            let _ = replies.send(Frame::Response(response)).await;
                        });
                        None
                    }
                }
            }
            Frame::Response(resp) => {
                if self.renewal.as_ref().is_some_and(|(id, _)| *id == resp.id)
                    && let Some((_, tx)) = self.renewal.take()
                {
                    let _ = tx.send(resp);
                }
                None
            }
            Frame::Event(_) | Frame::Chunk(_) => None,
        }
    }

    /// When to renew: at two thirds of the current certificate's life.
    fn renew_deadline(&self) -> Instant {
        let Ok(info) = self
            .state
            .read(CERT_FILE)
            .ok()
            .and_then(|pem| CertificateDer::from_pem_slice(pem.as_bytes()).ok())
            .map(|der| CertInfo::from_der(&der))
            .ok_or(())
            .and_then(|r| r.map_err(|_| ()))
        else {
            return Instant::now() + Duration::from_secs(3600);
        };
        let life = info.not_after.saturating_sub(info.not_before).max(0);
        let renew_unix = info.not_before + life * 2 / 3;
        let now_unix = i64::try_from(unix_ms() / 1000).unwrap_or(i64::MAX);
        let wait = u64::try_from(renew_unix.saturating_sub(now_unix)).unwrap_or(0);
        Instant::now() + Duration::from_secs(wait)
    }

    fn renewal_request(&mut self) -> Result<(Frame, oneshot::Receiver<Response>), rcgen::Error> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        let csr = CertificateParams::default().serialize_request(&key)?;
        let id = new_id();
        let (tx, rx) = oneshot::channel();
        self.renewal = Some((id.clone(), tx));
        let frame = Frame::Request(Request::new(
            id,
            op::CERT_RENEW,
            &CertRenew {
                csr_pem: csr.pem()?,
            },
        ));
        Ok((frame, rx))
    }

    fn store_renewed(&self, renewed: &CertRenewed) -> Result<(), String> {
        let der = CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes())
            .map_err(|_| "not PEM".to_owned())?;
        let info = CertInfo::from_der(&der).map_err(|e| e.to_string())?;
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| e.to_string())?;
        use rcgen::PublicKeyData;
        if info.spki != key.subject_public_key_info() {
            return Err("renewed certificate is for another key".into());
        }
        if info.host_id.as_deref() != Some(self.welcome.host_id.as_str()) {
            return Err("renewed certificate names another host".into());
        }
        self.state
            .write(CERT_FILE, &renewed.cert_pem, 0o644)
            .map_err(|e| e.to_string())
    }
}

/// Sends one live (not spooled) event.
async fn live_event(
    sink: &mut futures_util::stream::SplitSink<Ws, Message>,
    topic: &str,
    seq: u64,
    body: serde_json::Value,
) -> Result<(), SessionError> {
    let event = Frame::Event(Event {
        v: PROTOCOL_VERSION,
        topic: topic.to_owned(),
        seq,
        body,
    });
    sink.send(Message::Text(event.encode().into()))
        .await
        .map_err(|e| SessionError::Closed(e.to_string()))
}

/// The hello this agent sends.
pub fn hello(facts: axon_shared::HostFacts, capabilities: axon_shared::Capabilities) -> Hello {
    Hello {
        protocol: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        host: facts,
        capabilities,
    }
}

/// Runs until `shutdown` resolves.
pub async fn run_until(
    config: &AgentConfig,
    hello: Hello,
    ops: Arc<Ops>,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) {
    let (tx, rx) = watch::channel(false);
    let link = run_forever(config, hello, ops, rx, ready);
    tokio::pin!(link);
    tokio::select! {
        _ = &mut link => {}
        _ = shutdown => {
            let _ = tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(2), link).await;
        }
    }
}
