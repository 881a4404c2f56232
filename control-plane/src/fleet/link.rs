//! The agents' endpoint: a TLS 1.3 listener that requires a client certificate from our CA,
//! refuses revoked hosts during the handshake, and runs one WebSocket session per agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axon_shared::{
    AGENT_PATH, CertInfo, CertRenew, CertRenewed, ErrorCode, Frame, Hello, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION, Request, Response, Welcome, op,
};
use futures_util::{SinkExt, StreamExt};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use crate::AppState;
use crate::fleet::pki::Pki;
use crate::fleet::{AgentConn, Revocations};
use crate::model::now;

/// How long a peer has to finish the TLS handshake and the WebSocket upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The link's WebSocket read buffer; larger frames still arrive whole (it grows for them).
const LINK_READ_BUFFER: usize = 8 * 1024;
/// How long an agent has to send its hello after the upgrade.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest string accepted in host facts.
const MAX_FACT_LEN: usize = 256;

/// Client-certificate check: the CA chain and validity (webpki), then the revocation list.
#[derive(Debug)]
struct AgentVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revocations: Arc<Revocations>,
}

impl ClientCertVerifier for AgentVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let info = CertInfo::from_der(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let Some(host) = info.host_id else {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        };
        if self.revocations.is_revoked(&host) {
            tracing::warn!(host = %host, serial = %info.serial, "refused revoked host at handshake");
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// TLS for the agent listener: TLS 1.3 only, client certificate required.
pub fn agent_tls(
    pki: &Pki,
    revocations: Arc<Revocations>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der().clone())?;
    let inner = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let verifier = Arc::new(AgentVerifier { inner, revocations });
    let config = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain(), pki.server_key())?;
    Ok(Arc::new(config))
}

/// Accepts agents until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let (acceptor, state, shutdown) = (acceptor.clone(), state.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        if let Err(reason) = connection(stream, addr, acceptor, state, shutdown).await {
                            tracing::info!(%addr, %reason, "agent connection refused");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "agent listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    state: AppState,
    shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|der| CertInfo::from_der(der).ok())
        .ok_or("no client certificate")?;
    let host_id = cert.host_id.clone().ok_or("certificate names no host")?;
    match state.store.hosts.get(&host_id) {
        Ok(Some(host)) if host.revoked_at.is_none() => {}
        Ok(_) => return Err(format!("host {host_id} is unknown or revoked")),
        Err(e) => return Err(format!("registry read failed: {e}")),
    }
    let max = state.config.max_frame_bytes;
    // Tungstenite zero-fills its read buffer up to this size on the first read: at the
    // default 128 KiB that was most of an idle agent's cost here (see docs/scaling.md).
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(LINK_READ_BUFFER)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    // The callback's signature is tungstenite's; its error type is what it is.
    #[allow(clippy::result_large_err)]
    let check_path = |req: &WsRequest, resp: WsResponse| -> Result<WsResponse, ErrorResponse> {
        if req.uri().path() == AGENT_PATH {
            Ok(resp)
        } else {
            let mut refusal =
                ErrorResponse::new(Some(format!("no endpoint at {}", req.uri().path())));
            *refusal.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
            Err(refusal)
        }
    };
    let ws = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::accept_hdr_async_with_config(tls, check_path, Some(ws_config)),
    )
    .await
    .map_err(|_| "WebSocket upgrade timed out".to_owned())?
    .map_err(|e| format!("WebSocket upgrade failed: {e}"))?;
    Session {
        state,
        host_id,
        cert,
        addr,
        first_audit: std::sync::atomic::AtomicBool::new(true),
    }
    .run(ws, shutdown)
    .await;
    Ok(())
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::server::TlsStream<TcpStream>>;

struct Session {
    state: AppState,
    host_id: String,
    cert: CertInfo,
    addr: SocketAddr,
    /// No audit record has come on this connection yet (the agent replays its spool from
    /// the oldest unacknowledged record first).
    first_audit: std::sync::atomic::AtomicBool,
}

fn close(code: CloseCode, reason: &str) -> Message {
    // A close frame's reason holds at most 123 bytes; a longer one is not sent at all.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].into(),
    }))
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_FACT_LEN {
        let mut cut = MAX_FACT_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

impl Session {
    async fn run(self, ws: Ws, mut shutdown: watch::Receiver<bool>) {
        let (mut sink, mut stream) = ws.split();
        let max = self.state.config.max_frame_bytes;
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, self.read_hello(&mut stream)).await {
            Ok(Ok(hello)) => hello,
            Ok(Err((id, code, reason))) => {
                tracing::warn!(host = %self.host_id, %reason, "hello refused");
                if let Some(id) = id {
                    let reply = Frame::Response(Response::err(id, code, reason.clone()));
                    let _ = sink.send(Message::Text(reply.encode().into())).await;
                }
                let _ = sink.send(close(CloseCode::Policy, &reason)).await;
                return;
            }
            Err(_) => {
                let _ = sink
                    .send(close(CloseCode::Policy, "no hello in time"))
                    .await;
                return;
            }
        };
        let (hello_id, hello) = hello;
        let interval = self.state.config.ping_interval;
        let welcome = Welcome {
            protocol: PROTOCOL_VERSION.min(hello.protocol),
            host_id: self.host_id.clone(),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            ping_interval_secs: interval.as_secs().max(1),
            max_frame_bytes: max,
        };
        if sink
            .send(Message::Text(
                Frame::Response(Response::ok(hello_id, &welcome))
                    .encode()
                    .into(),
            ))
            .await
            .is_err()
        {
            return;
        }
        // The host may have been revoked while this connection was upgrading; the hub is the
        // only place revocation kills links, so check again now that it can find this one.
        if self.state.revocations.is_revoked(&self.host_id) {
            let _ = sink.send(close(CloseCode::Policy, "revoked")).await;
            return;
        }
        let (conn, mut task) = self.state.hub.register(&self.host_id, max);
        if self.state.revocations.is_revoked(&self.host_id) {
            conn.kill();
        }
        self.mark_online(&hello);
        tracing::info!(host = %self.host_id, addr = %self.addr, agent = %hello.agent_version, "agent online");
        self.state.live.publish(crate::live::LiveEvent::HostOnline {
            host_id: self.host_id.clone(),
        });

        let mut last_rx = Instant::now();
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        let reason: String = loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    None => break "closed by the agent".into(),
                    Some(Err(e)) => {
                        if let tokio_tungstenite::tungstenite::Error::Capacity(_) = e {
                            let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close(CloseCode::Size, "frame too large"))).await;
                        }
                        break format!("read failed: {e}");
                    }
                    Some(Ok(Message::Text(text))) => {
                        last_rx = Instant::now();
                        match Frame::decode(&text, max) {
                            Ok(frame) => {
                                if let Some(reply) = self.handle(&conn, frame).await
                                    && sink.send(Message::Text(reply.encode().into())).await.is_err()
                                {
                                    break "write failed".into();
                                }
                            }
                            Err(e) => {
                                let code = if e.code() == ErrorCode::TooLarge { CloseCode::Size } else { CloseCode::Protocol };
                                let _ = sink.send(close(code, "invalid frame")).await;
                                break format!("invalid frame: {e}");
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let _ = sink.send(close(CloseCode::Unsupported, "binary frames are not part of the protocol")).await;
                        break "binary frame".into();
                    }
                    Some(Ok(Message::Close(_))) => break "closed by the agent".into(),
                    Some(Ok(_)) => last_rx = Instant::now(),
                },
                Some(frame) = task.outbound.recv() => {
                    let send = sink.send(Message::Text(frame.encode().into()));
                    match tokio::time::timeout(interval, send).await {
                        Ok(Ok(())) => {}
                        _ => break "write failed or stalled".into(),
                    }
                }
                _ = ticker.tick() => {
                    if last_rx.elapsed() > interval * 3 {
                        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close(CloseCode::Away, "missed 3 pings"))).await;
                        break "missed 3 pings".into();
                    }
                    self.touch();
                    match tokio::time::timeout(interval, sink.send(Message::Ping(Vec::new().into()))).await {
                        Ok(Ok(())) => {}
                        _ => break "ping write failed or stalled".into(),
                    }
                }
                _ = task.kill.changed() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close(CloseCode::Policy, "revoked or replaced"))).await;
                    break "closed by the control plane (revoked or replaced)".into();
                }
                _ = shutdown.changed() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close(CloseCode::Away, "control plane shutting down"))).await;
                    break "control plane shutting down".into();
                }
            }
        };
        if self.state.hub.unregister(&conn) {
            self.mark_offline();
            self.state
                .live
                .publish(crate::live::LiveEvent::HostOffline {
                    host_id: self.host_id.clone(),
                    reason: reason.clone(),
                });
        }
        tracing::info!(host = %self.host_id, %reason, "agent offline");
    }

    async fn read_hello(
        &self,
        stream: &mut futures_util::stream::SplitStream<Ws>,
    ) -> Result<(String, Hello), (Option<String>, ErrorCode, String)> {
        let max = self.state.config.max_frame_bytes;
        loop {
            let text = match stream.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(_)) | None => {
                    return Err((None, ErrorCode::BadRequest, "expected a hello frame".into()));
                }
                Some(Err(e)) => {
                    return Err((None, ErrorCode::BadRequest, format!("read failed: {e}")));
                }
            };
            let frame = Frame::decode(&text, max).map_err(|e| match e {
                // Said so that whoever reads the agent's log knows which side to upgrade (the
                // close reason reaches an agent that cannot read our frames).
                axon_shared::ProtocolError::Version { got, min, max } => (
                    lenient_id(&text),
                    ErrorCode::UnsupportedVersion,
                    if got > max {
                        format!("agent protocol {got} is newer than this control plane ({min} to {max}): upgrade axon-cp")
                    } else {
                        format!("agent protocol {got} is too old for this control plane ({min} to {max}): upgrade agentd")
                    },
                ),
                e => (None, e.code(), e.to_string()),
            })?;
            let Frame::Request(Request { id, op, body, .. }) = frame else {
                return Err((
                    None,
                    ErrorCode::BadRequest,
                    "first frame must be a hello request".into(),
                ));
            };
            if op != op::HELLO {
                return Err((
                    Some(id),
                    ErrorCode::BadRequest,
                    "first frame must be a hello request".into(),
                ));
            }
            let mut hello: Hello = serde_json::from_value(body).map_err(|e| {
                (
                    Some(id.clone()),
                    ErrorCode::BadRequest,
                    format!("invalid hello: {e}"),
                )
            })?;
            if hello.protocol < MIN_PROTOCOL_VERSION {
                return Err((
                    Some(id),
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "agent protocol {} is too old; this control plane accepts {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}: upgrade agentd",
                        hello.protocol
                    ),
                ));
            }
            let facts = &mut hello.host;
            for field in [
                &mut facts.hostname,
                &mut facts.os,
                &mut facts.os_version,
                &mut facts.kernel,
                &mut facts.arch,
            ] {
                *field = clip(std::mem::take(field));
            }
            hello.agent_version = clip(hello.agent_version);
            return Ok((id, hello));
        }
    }

    async fn handle(&self, conn: &AgentConn, frame: Frame) -> Option<Frame> {
        match frame {
            Frame::Request(req) => Some(Frame::Response(self.serve_request(req).await)),
            Frame::Response(resp) => {
                if !conn.resolve(resp) {
                    tracing::debug!(host = %self.host_id, "response to no pending request (late or unknown id)");
                }
                None
            }
            Frame::Event(event) if event.topic == axon_shared::topic::AUDIT => {
                self.store_agent_record(conn, event).await;
                None
            }
            Frame::Event(event) if event.topic == axon_shared::topic::SERVICE => {
                let Ok(change) = serde_json::from_value::<axon_shared::ServiceEvent>(event.body)
                else {
                    tracing::debug!(host = %self.host_id, "malformed service event ignored");
                    return None;
                };
                let short = |t: String| -> String { t.chars().take(256).collect() };
                self.state
                    .live
                    .publish(crate::live::LiveEvent::ServiceChanged {
                        host_id: self.host_id.clone(),
                        kind: short(change.kind),
                        name: short(change.name),
                        job_result: change.job_result.map(short),
                        active_state: change.active_state.map(short),
                        sub_state: change.sub_state.map(short),
                        action: change.action.map(short),
                    });
                None
            }
            Frame::Event(event) if event.topic == axon_shared::topic::METRICS => {
                match serde_json::from_value::<axon_shared::MetricsSample>(event.body) {
                    Ok(sample) => {
                        let kept = self.state.telemetry.record(&self.host_id, sample);
                        self.state.live.publish(crate::live::LiveEvent::Metrics {
                            host_id: self.host_id.clone(),
                            sample: Box::new((*kept).clone()),
                        });
                    }
                    Err(e) => {
                        tracing::debug!(host = %self.host_id, error = %e, "malformed metrics sample ignored");
                    }
                }
                None
            }
            Frame::Event(event) if event.topic == axon_shared::topic::MODELS => {
                let Ok(found) = serde_json::from_value::<axon_shared::ModelServers>(event.body)
                else {
                    tracing::debug!(host = %self.host_id, "malformed model servers ignored");
                    return None;
                };
                let stored = self
                    .state
                    .store
                    .hosts
                    .update(&self.host_id, |h| h.model_servers = found.clone());
                if let Err(e) = stored {
                    tracing::error!(host = %self.host_id, error = %e, "registry update failed");
                }
                self.state.llm.fleet.refresh();
                self.state.live.publish(crate::live::LiveEvent::HostModels {
                    host_id: self.host_id.clone(),
                    model_servers: found,
                });
                None
            }
            Frame::Event(event) if event.topic == axon_shared::topic::CAPABILITIES => {
                let Ok(capabilities) =
                    serde_json::from_value::<axon_shared::Capabilities>(event.body)
                else {
                    tracing::debug!(host = %self.host_id, "malformed capabilities ignored");
                    return None;
                };
                let stored = self
                    .state
                    .store
                    .hosts
                    .update(&self.host_id, |h| h.capabilities = capabilities);
                if let Err(e) = stored {
                    tracing::error!(host = %self.host_id, error = %e, "registry update failed");
                }
                tracing::info!(host = %self.host_id, ?capabilities, "capabilities changed");
                self.state
                    .live
                    .publish(crate::live::LiveEvent::HostCapabilities {
                        host_id: self.host_id.clone(),
                        capabilities,
                    });
                None
            }
            Frame::Event(event) if event.topic == axon_shared::topic::WATCH => {
                self.state
                    .live
                    .publish(crate::live::LiveEvent::FileChanged {
                        host_id: self.host_id.clone(),
                        path: event.body["path"]
                            .as_str()
                            .unwrap_or_default()
                            .chars()
                            .take(4096)
                            .collect(),
                        kind: event.body["kind"]
                            .as_str()
                            .unwrap_or("other")
                            .chars()
                            .take(16)
                            .collect(),
                    });
                None
            }
            Frame::Event(event) => {
                tracing::debug!(host = %self.host_id, topic = %event.topic, seq = event.seq, "event");
                None
            }
            Frame::Chunk(chunk) => {
                // A chunk of an open stream goes to its reader; others to the live feed.
                let chunk = conn.route_chunk(chunk)?;
                self.state.live.publish(crate::live::LiveEvent::ExecOutput {
                    host_id: self.host_id.clone(),
                    request_id: chunk.id,
                    seq: chunk.seq,
                    stream: chunk.stream,
                    data: chunk.data,
                    last: chunk.last,
                });
                None
            }
        }
    }

    async fn serve_request(&self, req: Request) -> Response {
        match req.op.as_str() {
            op::CERT_RENEW => match self.renew(&req).await {
                Ok(renewed) => Response::ok(req.id, &renewed),
                Err((code, message)) => Response::err(req.id, code, message),
            },
            op::HELLO => Response::err(req.id, ErrorCode::BadRequest, "hello was already received"),
            other => Response::err(
                req.id,
                ErrorCode::UnknownOp,
                format!("operation '{other}' is not supported by the control plane"),
            ),
        }
    }

    async fn renew(&self, req: &Request) -> Result<CertRenewed, (ErrorCode, String)> {
        let body: CertRenew = req.body_as().map_err(|e| {
            (
                ErrorCode::BadRequest,
                format!("invalid cert.renew body: {e}"),
            )
        })?;
        let csr =
            Pki::parse_csr(&body.csr_pem).map_err(|e| (ErrorCode::BadRequest, e.to_string()))?;
        // Renewal keeps the key the host proved it holds in this handshake.
        if Pki::csr_spki(&csr) != self.cert.spki {
            return Err((
                ErrorCode::Forbidden,
                "renewal must keep the key of the current certificate".into(),
            ));
        }
        let issued = self
            .state
            .pki
            .sign_agent(&csr, &self.host_id, self.state.config.cert_lifetime)
            .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
        let internal = |e: crate::store::StoreError| (ErrorCode::Internal, e.to_string());
        let not_after = time::OffsetDateTime::from_unix_timestamp(issued.info.not_after)
            .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
        self.state
            .store
            .hosts
            .update(&self.host_id, |h| {
                h.cert_serial = issued.info.serial.clone();
                h.cert_not_after = not_after;
            })
            .map_err(internal)?;
        self.state.store.db.flush().await.map_err(internal)?;
        tracing::info!(host = %self.host_id, serial = %issued.info.serial, "certificate renewed");
        Ok(CertRenewed {
            cert_pem: issued.pem,
            not_after: u64::try_from(issued.info.not_after).unwrap_or(0),
        })
    }

    /// Stores an agent's audit record exactly once (by host and sequence number), then
    /// acknowledges it so the agent can drop it from its spool.
    async fn store_agent_record(&self, conn: &AgentConn, event: axon_shared::Event) {
        let record: axon_shared::AuditRecord = match serde_json::from_value(event.body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(host = %self.host_id, error = %e, "malformed audit event");
                return;
            }
        };
        let store = &self.state.store;
        // A read error is not "never seen": nothing is stored or acknowledged, and the agent
        // sends the record again.
        let last = match store.agent_audit_seq.get(&self.host_id) {
            Ok(last) => last.unwrap_or(0),
            Err(e) => {
                tracing::error!(host = %self.host_id, error = %e, "cannot read the audit sequence; not acknowledging");
                return;
            }
        };
        // In order only: after a record that could not be stored, later ones wait (no ack)
        // until the agent replays from the missing one. The first record ever seen from a host
        // sets the starting point.
        let first = self
            .first_audit
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        if record.seq > last + 1 && last != 0 {
            if !first {
                tracing::warn!(host = %self.host_id, seq = record.seq, last, "audit record out of order; waiting for replay");
                return;
            }
            // The oldest record the agent still holds is past what this store has: the ones in
            // between were acknowledged to a store that was since replaced (a restore from a
            // backup). Waiting would stall the host's trail for good; the gap is recorded.
            let gap = self
                .state
                .audit
                .write(
                    self.state
                        .audit
                        .event("audit.gap", "alert")
                        .actor_id(&self.host_id)
                        .target(&self.host_id)
                        .reason(&format!(
                            "records {} to {} of this host's trail are not here: they were acknowledged to a store that was replaced since (a restore from a backup); the agent's own trail holds them",
                            last + 1,
                            record.seq - 1
                        )),
                )
                .await;
            if !gap {
                self.first_audit
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            tracing::warn!(host = %self.host_id, from = last + 1, to = record.seq - 1, "agent audit records missing from this store (restored?); gap recorded");
        }
        if record.seq > last {
            // A GPU fault is kept as an alert first: if that fails, nothing is acknowledged
            // and the agent sends the record again.
            if record.action.starts_with("gpu.") && !self.keep_gpu_alert(&record) {
                return;
            }
            let who = &record.requested_by;
            let action = if record.action.starts_with("agent.") {
                record.action.clone()
            } else {
                format!("agent.{}", record.action)
            };
            let stored = self
                .state
                .audit
                .write(
                    self.state
                        .audit
                        .event(&action, &record.outcome)
                        .actor_id(&who.actor)
                        .actor_role_name(&who.role)
                        .tenant(who.tenant_id.as_deref())
                        .source_ip(who.source_ip.as_deref())
                        .target(&record.target)
                        .reason(&record.detail)
                        .host(&self.host_id, record.seq),
                )
                .await;
            // Written with its index entry and the host's sequence number (see
            // `audit::note_host_seq`); if not, not acknowledged: the agent sends it again.
            if !stored {
                return;
            }
            if let Err(e) = store.db.flush().await {
                tracing::error!(error = %e, "flush failed; not acknowledging");
                return;
            }
        }
        conn.notify(op::EVENT_ACK, &axon_shared::EventAck { seq: record.seq });
    }

    /// A GPU fault from the agent's trail becomes an alert that stays until acknowledged.
    /// Returns false only when storing failed (a record that carries no readable event is
    /// logged and passed over: sending it again cannot help).
    fn keep_gpu_alert(&self, record: &axon_shared::AuditRecord) -> bool {
        let Ok(event) = serde_json::from_str::<axon_shared::GpuEvent>(&record.detail) else {
            tracing::warn!(host = %self.host_id, seq = record.seq, "GPU record without a readable event");
            return true;
        };
        let alert = crate::model::GpuAlert {
            id: format!("{}-{}", self.host_id, record.seq),
            host_id: self.host_id.clone(),
            event,
            received_at: crate::model::now(),
            acked_at: None,
            acked_by: None,
        };
        let key = format!("{}/{:016x}", self.host_id, record.seq);
        // A replay of a record already kept must not undo its acknowledgement.
        match self.state.store.gpu_alerts.insert_new(&key, &alert) {
            Ok(true) => {}
            Ok(false) => return true,
            Err(e) => {
                tracing::error!(host = %self.host_id, error = %e, "cannot keep a GPU alert");
                return false;
            }
        }
        self.state.live.publish(crate::live::LiveEvent::GpuAlert {
            host_id: self.host_id.clone(),
            alert: Box::new(alert),
        });
        true
    }

    fn mark_online(&self, hello: &Hello) {
        let result = self.state.store.hosts.update(&self.host_id, |h| {
            h.facts = Some(hello.host.clone());
            h.capabilities = hello.capabilities;
            h.agent_version = Some(hello.agent_version.clone());
            h.online = true;
            h.last_seen = Some(now());
            h.remote_addr = Some(self.addr.ip().to_string());
        });
        if let Err(e) = result {
            tracing::error!(host = %self.host_id, error = %e, "registry update failed");
        }
    }

    fn touch(&self) {
        let _ = self
            .state
            .store
            .hosts
            .update(&self.host_id, |h| h.last_seen = Some(now()));
    }

    fn mark_offline(&self) {
        let _ = self.state.store.hosts.update(&self.host_id, |h| {
            h.online = false;
            h.last_seen = Some(now());
        });
    }
}

/// The id of a frame this build cannot decode (a newer protocol), when it has a usable one, so
/// the refusal can answer it.
fn lenient_id(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let id = value.get("id")?.as_str()?;
    (!id.is_empty() && id.len() <= axon_shared::MAX_ID_LEN).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason_of(message: Message) -> String {
        match message {
            Message::Close(Some(frame)) => frame.reason.as_str().to_owned(),
            other => format!("not a close frame: {other:?}"),
        }
    }

    /// A close frame holds at most 123 bytes of reason, and a longer one would not be sent at
    /// all: the reason is cut to fit, on a character boundary.
    #[test]
    fn a_long_close_reason_is_cut_to_fit_on_a_character_boundary() {
        let long = "é".repeat(100);
        let cut = reason_of(close(CloseCode::Policy, &long));
        assert_eq!(cut.len(), 122, "{cut}");
        assert!(long.starts_with(&cut));
        let ascii = "x".repeat(200);
        assert_eq!(reason_of(close(CloseCode::Policy, &ascii)).len(), 123);
        assert_eq!(reason_of(close(CloseCode::Normal, "bye")), "bye");
    }
}
