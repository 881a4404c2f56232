//! What the agent does when the control plane asks: each operation of the protocol, answered
//! at once (ping, listings) or in a task of its own (commands, forwards to the model servers),
//! so a slow command never holds up the link.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axon_shared::{
    Cancel, Chunk, ContainerRun, ContainerStats, ErrorCode, EventAck, ExecRun, Frame, FsOp,
    ImagePull, LlmForward, LogLine, PROTOCOL_VERSION, Pong, Request, Requester, Response,
    ServiceOp, StreamAck, op,
};
use tokio::sync::{Semaphore, mpsc};

use crate::audit::Auditor;
use crate::clock::unix_ms;
use crate::docker::EngineError;
use crate::exec::{self, ExecError, Whitelist};
use crate::forward::{Forwarder, Refusal};
use crate::jail::{Jail, JailError};
use crate::journal::JournalError;
use crate::services::{ServiceError, Services};
use crate::units::UnitError;
use crate::watch::RootWatcher;

/// Commands allowed to run at the same time; more are refused as busy.
const MAX_CONCURRENT_EXECS: usize = 8;
/// File operations running at the same time (each holds a blocking thread and a buffer); more
/// wait for a turn.
const MAX_CONCURRENT_FS: usize = 8;
/// Logs and stats followed at the same time.
const MAX_FOLLOWS: usize = 16;
/// How long a follow lasts unless the caller says (and at most).
const DEFAULT_FOLLOW_SECS: u32 = 300;
const MAX_FOLLOW_SECS: u32 = 3600;

type Follows = Arc<std::sync::Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>>;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `work` on the blocking pool once one of `slots` is free; `None` when it could not run
/// (the slots were closed, or the work panicked).
async fn bounded_blocking<T: Send + 'static>(
    slots: &Arc<Semaphore>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let permit = slots.clone().acquire_owned().await.ok()?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .ok()
}

/// A request's answer: ready now, or later from a task.
pub enum Handled {
    Now(Response),
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
    /// A task that sends its answer itself, then goes on streaming chunks.
    Own(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// A notification: no answer.
    Quiet,
}

/// Where a session takes an operation's frames.
#[derive(Clone)]
pub struct Outlets {
    /// Answers and short output, sent ahead of bulk.
    pub replies: mpsc::Sender<Frame>,
    /// Forwarded bodies, sent only when nothing else waits.
    pub bulk: mpsc::Sender<Frame>,
    /// Largest frame the control plane accepts.
    pub max_frame: usize,
}

/// The agent's operations.
pub struct Ops {
    whitelist: Whitelist,
    exec_slots: Arc<Semaphore>,
    fs_slots: Arc<Semaphore>,
    jail: Arc<Jail>,
    /// The agent's own audit trail.
    pub audit: Arc<Auditor>,
    /// Changes in the jail roots.
    pub watcher: RootWatcher,
    pub services: Arc<Services>,
    /// Following requests, by id, with their cancel switch.
    follows: Follows,
    /// What the host offers, as detected last.
    pub capabilities: tokio::sync::watch::Sender<axon_shared::Capabilities>,
    /// Host samples as they are taken.
    pub samples: tokio::sync::broadcast::Sender<Arc<axon_shared::MetricsSample>>,
    /// Model servers as found last.
    pub models: tokio::sync::watch::Sender<axon_shared::ModelServers>,
    /// Forwards to the model servers; `None` answers `llm.forward` as unavailable.
    pub forwarder: Option<Forwarder>,
}

impl Ops {
    pub fn new(
        whitelist: Whitelist,
        jail: Jail,
        audit: Arc<Auditor>,
        watcher: RootWatcher,
        services: Services,
    ) -> Self {
        Self::with_telemetry(whitelist, jail, audit, watcher, services, None)
    }

    /// As [`Ops::new`], with the telemetry's outputs.
    pub fn with_telemetry(
        whitelist: Whitelist,
        jail: Jail,
        audit: Arc<Auditor>,
        watcher: RootWatcher,
        services: Services,
        telemetry: Option<crate::telemetry::Telemetry>,
    ) -> Self {
        let (samples, models) = match telemetry {
            Some(t) => (t.samples, t.models),
            None => (
                tokio::sync::broadcast::channel(4).0,
                tokio::sync::watch::Sender::new(Default::default()),
            ),
        };
        Self {
            whitelist,
            exec_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_EXECS)),
            fs_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_FS)),
            jail: Arc::new(jail),
            audit,
            watcher,
            services: Arc::new(services),
            follows: Follows::default(),
            capabilities: tokio::sync::watch::Sender::new(Default::default()),
            samples,
            models,
            forwarder: None,
        }
    }

    /// Answers one request from the control plane.
    pub fn handle(&self, req: Request, outlets: &Outlets) -> Handled {
        let chunks = &outlets.replies;
        match req.op.as_str() {
            op::PING => Handled::Now(Response::ok(
                req.id,
                &Pong {
                    agent_time_ms: unix_ms(),
                },
            )),
            op::EXEC_LIST => Handled::Now(Response::ok(req.id, &self.whitelist.infos())),
            op::EXEC_RUN => self.exec(req, chunks),
            op::SERVICE_LIST
            | op::SERVICE_GET
            | op::SERVICE_ACT
            | op::SERVICE_LOGS
            | op::SERVICE_STATS
            | op::CONTAINER_RUN
            | op::IMAGE_LIST
            | op::IMAGE_PULL => self.service(req, chunks),
            op::CANCEL => Handled::Now(self.cancel(req)),
            op::LLM_FORWARD => self.forward(req, outlets),
            op::STREAM_ACK => {
                match (req.body_as::<StreamAck>(), &self.forwarder) {
                    (Ok(ack), Some(forwarder)) => forwarder.ack(&ack),
                    (Ok(_), None) => {}
                    (Err(e), _) => tracing::debug!(error = %e, "invalid stream.ack ignored"),
                }
                Handled::Quiet
            }
            op::EVENT_ACK => Handled::Now(match req.body_as::<EventAck>() {
                Ok(ack) => match self.audit.ack(ack.seq) {
                    Ok(n) => Response::ok(req.id, &serde_json::json!({ "removed": n })),
                    Err(e) => Response::err(req.id, ErrorCode::Internal, e.to_string()),
                },
                Err(e) => Response::err(
                    req.id,
                    ErrorCode::BadRequest,
                    format!("invalid event.ack: {e}"),
                ),
            }),
            op::FS_LIST
            | op::FS_STAT
            | op::FS_READ
            | op::FS_WRITE
            | op::FS_MKDIR
            | op::FS_RENAME
            | op::FS_DELETE
            | op::FS_CHMOD => self.fs(req),
            other => Handled::Now(Response::err(
                req.id,
                ErrorCode::UnknownOp,
                format!(
                    "operation '{other}' is not supported by this agent (agentd {})",
                    env!("CARGO_PKG_VERSION")
                ),
            )),
        }
    }

    fn service(&self, req: Request, chunks: &mpsc::Sender<Frame>) -> Handled {
        let id = req.id.clone();
        let bad = |e: serde_json::Error| {
            Handled::Now(Response::err(
                id.clone(),
                ErrorCode::BadRequest,
                format!("invalid {} body: {e}", req.op),
            ))
        };
        let (services, audit) = (self.services.clone(), self.audit.clone());
        match req.op.as_str() {
            op::IMAGE_LIST => {
                return Handled::Later(Box::pin(
                    async move { answer(id, services.images().await) },
                ));
            }
            op::IMAGE_PULL => {
                let pull: ImagePull = match req.body_as() {
                    Ok(b) => b,
                    Err(e) => return bad(e),
                };
                return Handled::Later(Box::pin(async move {
                    let result = services.pull(&pull.image).await;
                    audit
                        .note(
                            op::IMAGE_PULL,
                            outcome_of(&result),
                            &pull.image,
                            &pull.requested_by,
                            &result
                                .as_ref()
                                .err()
                                .map(|e| e.to_string())
                                .unwrap_or_default(),
                        )
                        .await;
                    answer(id, result)
                }));
            }
            op::CONTAINER_RUN => {
                let run: ContainerRun = match req.body_as() {
                    Ok(b) => b,
                    Err(e) => return bad(e),
                };
                return Handled::Later(Box::pin(async move {
                    let result = services.run(&run).await;
                    let detail = match &result {
                        Ok(_) => format!("image {}", run.image),
                        Err(e) => format!("image {}: {e}", run.image),
                    };
                    let target = format!("docker {}", run.name);
                    audit
                        .note(
                            op::CONTAINER_RUN,
                            outcome_of(&result),
                            &target,
                            &run.requested_by,
                            &detail,
                        )
                        .await;
                    answer(id, result)
                }));
            }
            _ => {}
        }
        let body: ServiceOp = match req.body_as() {
            Ok(b) => b,
            Err(e) => return bad(e),
        };
        // Following requests stream chunks until cancelled or their time is up.
        let follow = if body.follow
            && matches!(req.op.as_str(), op::SERVICE_LOGS | op::SERVICE_STATS)
        {
            match self.follow(&id, chunks) {
                Ok(f) => Some(f),
                Err(e) => return Handled::Now(Response::err(id, service_code(&e), e.to_string())),
            }
        } else {
            None
        };
        let follows = self.follows.clone();
        Handled::Later(Box::pin(async move {
            let secs = body
                .follow_secs
                .unwrap_or(DEFAULT_FOLLOW_SECS)
                .clamp(1, MAX_FOLLOW_SECS);
            let until = tokio::time::Instant::now() + std::time::Duration::from_secs(secs.into());
            let response = match req.op.as_str() {
                op::SERVICE_LIST => answer(id.clone(), services.list(&body.kind, body.all).await),
                op::SERVICE_GET => answer(id.clone(), services.get(&body.kind, &body.name).await),
                op::SERVICE_LOGS => {
                    let lines = body.lines.unwrap_or(100);
                    match follow {
                        Some(f) => {
                            let (tx, forwarder) = f.forward::<LogLine>("log");
                            let result = services
                                .logs(&body.kind, &body.name, lines, Some((tx, until)))
                                .await;
                            let _ = forwarder.await;
                            answer(id.clone(), result)
                        }
                        None => answer(
                            id.clone(),
                            services.logs(&body.kind, &body.name, lines, None).await,
                        ),
                    }
                }
                op::SERVICE_STATS => match follow {
                    Some(f) => {
                        let (tx, forwarder) = f.forward::<ContainerStats>("stats");
                        let result = services
                            .stats(&body.kind, &body.name, Some((tx, until)))
                            .await;
                        let _ = forwarder.await;
                        answer(id.clone(), result)
                    }
                    None => answer(
                        id.clone(),
                        services.stats(&body.kind, &body.name, None).await,
                    ),
                },
                _ => {
                    let acted = services
                        .act(&body.kind, &body.name, &body.action, body.force)
                        .await;
                    let target = format!("{} {}", body.kind, body.name);
                    let detail = match &acted {
                        Ok(a) => format!("{}: job {}", body.action, a.job_result),
                        Err(ServiceError::NotAllowed { .. }) => body.action.clone(),
                        Err(e) => format!("{}: {e}", body.action),
                    };
                    let outcome = match &acted {
                        Ok(a) if a.job_result != "done" => "failed",
                        other => outcome_of(other),
                    };
                    audit
                        .note("service.act", outcome, &target, &body.requested_by, &detail)
                        .await;
                    answer(id.clone(), acted)
                }
            };
            lock(&follows).remove(&id);
            response
        }))
    }

    /// Registers a following request so `request.cancel` can stop it.
    fn follow(&self, id: &str, chunks: &mpsc::Sender<Frame>) -> Result<Follow, ServiceError> {
        let mut follows = lock(&self.follows);
        if follows.len() >= MAX_FOLLOWS {
            return Err(ServiceError::Busy(MAX_FOLLOWS));
        }
        let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel();
        follows.insert(id.to_owned(), cancel_tx);
        Ok(Follow {
            id: id.to_owned(),
            frames: chunks.clone(),
            cancel: cancel_rx,
        })
    }

    fn cancel(&self, req: Request) -> Response {
        match req.body_as::<Cancel>() {
            Ok(c) => {
                let followed = lock(&self.follows).remove(&c.id).map(|tx| tx.send(()));
                let forwarded = self.forwarder.as_ref().is_some_and(|f| f.cancel(&c.id));
                Response::ok(
                    req.id,
                    &serde_json::json!({ "cancelled": followed.is_some() || forwarded }),
                )
            }
            Err(e) => Response::err(
                req.id,
                ErrorCode::BadRequest,
                format!("invalid request.cancel: {e}"),
            ),
        }
    }

    fn forward(&self, req: Request, outlets: &Outlets) -> Handled {
        let Some(forwarder) = &self.forwarder else {
            return Handled::Now(Response::err(
                req.id,
                ErrorCode::Unavailable,
                "model forwarding is not available on this agent",
            ));
        };
        let forward: LlmForward = match req.body_as() {
            Ok(f) => f,
            Err(e) => {
                return Handled::Now(Response::err(
                    req.id,
                    ErrorCode::BadRequest,
                    format!("invalid llm.forward body: {e}"),
                ));
            }
        };
        let begun = forwarder.begin(
            &req.id,
            forward,
            outlets.replies.clone(),
            outlets.bulk.clone(),
            outlets.max_frame,
        );
        match begun {
            Ok(task) => Handled::Own(task),
            Err(Refusal {
                code,
                message,
                denied: Some(target),
            }) => {
                tracing::warn!(%target, reason = %message, "forward refused");
                let audit = self.audit.clone();
                Handled::Later(Box::pin(async move {
                    audit
                        .note(
                            op::LLM_FORWARD,
                            "denied",
                            &target,
                            &Requester::default(),
                            &message,
                        )
                        .await;
                    Response::err(req.id, code, message)
                }))
            }
            Err(Refusal { code, message, .. }) => {
                Handled::Now(Response::err(req.id, code, message))
            }
        }
    }

    fn fs(&self, req: Request) -> Handled {
        let id = req.id.clone();
        let fs_op: FsOp = match req.body_as() {
            Ok(op) => op,
            Err(e) => {
                return Handled::Now(Response::err(
                    id,
                    ErrorCode::BadRequest,
                    format!("invalid {} body: {e}", req.op),
                ));
            }
        };
        let jail = self.jail.clone();
        let audit = self.audit.clone();
        let slots = self.fs_slots.clone();
        let verb = req.op;
        let changes = !matches!(verb.as_str(), op::FS_LIST | op::FS_STAT | op::FS_READ);
        // A rename's record names both ends.
        let path = match &fs_op.to {
            Some(to) => format!("{} -> {to}", fs_op.path),
            None => fs_op.path.clone(),
        };
        let who = fs_op.requested_by.clone();
        Handled::Later(Box::pin(async move {
            let call_verb = verb.clone();
            let outcome =
                bounded_blocking(&slots, move || fs_call(&jail, &call_verb, &fs_op)).await;
            match outcome {
                Some(Ok(body)) => {
                    if changes {
                        audit.note(&verb, "ok", &path, &who, "").await;
                    }
                    Response::ok(id, &body)
                }
                Some(Err(e)) => {
                    let denied = matches!(
                        e,
                        JailError::Refused { .. } | JailError::BadPath(_) | JailError::NoRoot(_)
                    );
                    if changes || denied {
                        let outcome = if denied { "denied" } else { "error" };
                        audit
                            .note(&verb, outcome, &path, &who, &e.to_string())
                            .await;
                    }
                    let code = match &e {
                        JailError::BadPath(_) => ErrorCode::BadRequest,
                        JailError::NoRoot(_) | JailError::NotFound(_) => ErrorCode::NotFound,
                        JailError::Refused { .. } => ErrorCode::Forbidden,
                        JailError::TooLarge { .. } => ErrorCode::TooLarge,
                        JailError::Conflict { .. } => ErrorCode::Conflict,
                        JailError::Io { .. } => ErrorCode::Internal,
                        JailError::State { .. } => ErrorCode::Conflict,
                    };
                    Response::err(id, code, e.to_string())
                }
                None => Response::err(id, ErrorCode::Internal, "file operation failed"),
            }
        }))
    }

    fn exec(&self, req: Request, chunks: &mpsc::Sender<Frame>) -> Handled {
        let id = req.id.clone();
        let run: ExecRun = match req.body_as() {
            Ok(run) => run,
            Err(e) => {
                return Handled::Now(Response::err(
                    id,
                    ErrorCode::BadRequest,
                    format!("invalid exec.run body: {e}"),
                ));
            }
        };
        // A refusal's record is written by the audit writer; the answer waits for it in a
        // task of its own, never in the link's loop.
        let refuse = |id: String, e: ExecError| {
            let code = match &e {
                ExecError::NotAllowed(_) => ErrorCode::Forbidden,
                ExecError::BadParam { .. } => ErrorCode::BadRequest,
                ExecError::Unavailable(_) => ErrorCode::NotFound,
                ExecError::Spawn { .. } => ErrorCode::Internal,
            };
            tracing::warn!(command = %run.command, actor = %run.requested_by.actor, error = %e, "exec refused");
            let audit = self.audit.clone();
            let (command, who) = (run.command.clone(), run.requested_by.clone());
            Handled::Later(Box::pin(async move {
                audit
                    .note(op::EXEC_RUN, "denied", &command, &who, &e.to_string())
                    .await;
                Response::err(id, code, e.to_string())
            }))
        };
        let Some(cmd) = self.whitelist.get(&run.command) else {
            return refuse(id, ExecError::NotAllowed(run.command.clone()));
        };
        let argv = match cmd.render(&run.params) {
            Ok(argv) => argv,
            Err(e) => return refuse(id, e),
        };
        if !cmd.binary.is_file() {
            return refuse(id, ExecError::Unavailable(cmd.name.clone()));
        }
        let Ok(permit) = self.exec_slots.clone().try_acquire_owned() else {
            return Handled::Now(Response::err(
                id,
                ErrorCode::RateLimited,
                format!("{MAX_CONCURRENT_EXECS} commands are already running on this host"),
            ));
        };
        tracing::info!(command = %cmd.name, actor = %run.requested_by.actor, "exec");
        let audit = self.audit.clone();
        let live = run
            .stream
            .then(|| stream_output(id.clone(), chunks.clone()));
        Handled::Later(Box::pin(async move {
            let (live_tx, forwarder) = match live {
                Some((tx, task)) => (Some(tx), Some(task)),
                None => (None, None),
            };
            let result = exec::run(&cmd, argv, live_tx).await;
            if let Some(task) = forwarder {
                // The forwarder ends once the pipes' senders are gone; it sends the final chunk.
                let _ = task.await;
            }
            drop(permit);
            match result {
                Ok(result) => {
                    let detail = format!(
                        "exit {:?}, signal {:?}, timed out {}, {} ms",
                        result.exit_code, result.signal, result.timed_out, result.duration_ms
                    );
                    audit
                        .note(op::EXEC_RUN, "ok", &cmd.name, &run.requested_by, &detail)
                        .await;
                    Response::ok(id, &result)
                }
                Err(e) => {
                    audit
                        .note(
                            op::EXEC_RUN,
                            "error",
                            &cmd.name,
                            &run.requested_by,
                            &e.to_string(),
                        )
                        .await;
                    Response::err(id, ErrorCode::Internal, e.to_string())
                }
            }
        }))
    }
}

/// The wire code of a service failure.
fn service_code(e: &ServiceError) -> ErrorCode {
    match e {
        ServiceError::NotAllowed { .. } | ServiceError::Mount(_) => ErrorCode::Forbidden,
        ServiceError::Kind(_) => ErrorCode::BadRequest,
        ServiceError::Busy(_) => ErrorCode::RateLimited,
        ServiceError::Unit(u) => match u {
            UnitError::NotFound(_) => ErrorCode::NotFound,
            UnitError::Unavailable(_) => ErrorCode::Unavailable,
            UnitError::Timeout { .. } => ErrorCode::Timeout,
            UnitError::Refused { .. } => ErrorCode::Conflict,
        },
        ServiceError::Engine(d) => match d {
            EngineError::Unavailable(_) => ErrorCode::Unavailable,
            EngineError::NotFound(_) | EngineError::NoImage(_) => ErrorCode::NotFound,
            EngineError::BadRequest(_) => ErrorCode::BadRequest,
            EngineError::Conflict(_) => ErrorCode::Conflict,
            EngineError::Failed(_) => ErrorCode::Internal,
            EngineError::Timeout(_) => ErrorCode::Timeout,
        },
        ServiceError::Journal(j) => match j {
            JournalError::Unavailable(_) => ErrorCode::Unavailable,
            JournalError::Timeout(_) => ErrorCode::Timeout,
        },
    }
}

fn outcome_of<T>(result: &Result<T, ServiceError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ServiceError::NotAllowed { .. } | ServiceError::Mount(_)) => "denied",
        Err(_) => "error",
    }
}

fn answer<T: serde::Serialize>(id: String, result: Result<T, ServiceError>) -> Response {
    match result {
        Ok(v) => Response::ok(id, &v),
        Err(e) => Response::err(id, service_code(&e), e.to_string()),
    }
}

/// A following request: its pieces go out as chunks until it ends or is cancelled.
struct Follow {
    id: String,
    frames: mpsc::Sender<Frame>,
    cancel: tokio::sync::oneshot::Receiver<()>,
}

impl Follow {
    /// A sender for the pieces and the task that turns them into `stream` chunks (JSON text),
    /// ending with an empty final chunk once the sender is dropped or the request cancelled.
    fn forward<T: serde::Serialize + Send + 'static>(
        self,
        stream: &'static str,
    ) -> (mpsc::Sender<T>, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<T>(64);
        let Follow {
            id,
            frames,
            mut cancel,
        } = self;
        let task = tokio::spawn(async move {
            let mut seq = 0;
            loop {
                let piece = tokio::select! {
                    piece = rx.recv() => piece,
                    _ = &mut cancel => None,
                };
                let Some(piece) = piece else { break };
                let frame = Frame::Chunk(Chunk {
                    v: PROTOCOL_VERSION,
                    id: id.clone(),
                    seq,
                    last: false,
                    stream: stream.to_owned(),
                    data: serde_json::to_string(&piece).unwrap_or_default(),
                });
                seq += 1;
                if frames.send(frame).await.is_err() {
                    break;
                }
            }
            // Closing the receiver tells the producer to stop.
            drop(rx);
            let _ = frames
                .send(Frame::Chunk(Chunk {
                    v: PROTOCOL_VERSION,
                    id,
                    seq,
                    last: true,
                    stream: stream.to_owned(),
                    data: String::new(),
                }))
                .await;
        });
        (tx, task)
    }
}

/// Turns output pieces of request `id` into `chunk` frames on the link, ending with an empty
/// final chunk.
fn stream_output(
    id: String,
    frames: mpsc::Sender<Frame>,
) -> (mpsc::Sender<exec::OutputPiece>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<exec::OutputPiece>(64);
    let task = tokio::spawn(async move {
        let mut seq = 0;
        let mut chunk = |stream: &str, data: String, last: bool| {
            let frame = Frame::Chunk(Chunk {
                v: PROTOCOL_VERSION,
                id: id.clone(),
                seq,
                last,
                stream: stream.to_owned(),
                data,
            });
            seq += 1;
            frame
        };
        while let Some((stream, bytes)) = rx.recv().await {
            let frame = chunk(stream, String::from_utf8_lossy(&bytes).into_owned(), false);
            if frames.send(frame).await.is_err() {
                return;
            }
        }
        let _ = frames.send(chunk("stdout", String::new(), true)).await;
    });
    (tx, task)
}

/// Runs one jail verb (blocking I/O: called on the blocking pool).
fn fs_call(jail: &Jail, verb: &str, req: &FsOp) -> Result<serde_json::Value, JailError> {
    use base64::Engine as _;
    let json = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| JailError::Io {
            path: req.path.clone(),
            reason: e.to_string(),
        })
    };
    let who = &req.requested_by.actor;
    match verb {
        op::FS_LIST => json(serde_json::to_value(jail.list(&req.path)?)),
        op::FS_STAT => json(serde_json::to_value(jail.stat(&req.path)?)),
        op::FS_READ => json(serde_json::to_value(jail.read_content(
            &req.path,
            req.offset.unwrap_or(0),
            req.length,
        )?)),
        op::FS_WRITE => {
            let content = base64::engine::general_purpose::STANDARD
                .decode(req.content_b64.as_deref().unwrap_or(""))
                .map_err(|_| JailError::BadPath("content_b64 is not base64".into()))?;
            tracing::info!(path = %req.path, bytes = content.len(), actor = %who, "file write");
            json(serde_json::to_value(jail.write(
                &req.path,
                &content,
                req.if_match.as_deref(),
            )?))
        }
        op::FS_MKDIR => {
            tracing::info!(path = %req.path, actor = %who, "mkdir");
            json(serde_json::to_value(jail.mkdir(&req.path, req.recursive)?))
        }
        op::FS_RENAME => {
            let to = req
                .to
                .as_deref()
                .ok_or_else(|| JailError::BadPath("rename needs `to`".into()))?;
            tracing::info!(from = %req.path, %to, actor = %who, "rename");
            json(serde_json::to_value(jail.rename(&req.path, to)?))
        }
        op::FS_DELETE => {
            tracing::info!(path = %req.path, recursive = req.recursive, actor = %who, "delete");
            jail.delete(&req.path, req.recursive)?;
            Ok(serde_json::Value::Null)
        }
        op::FS_CHMOD => {
            let mode = req
                .mode
                .ok_or_else(|| JailError::BadPath("chmod needs `mode`".into()))?;
            tracing::info!(path = %req.path, mode = format!("{mode:o}"), actor = %who, "chmod");
            json(serde_json::to_value(jail.chmod(&req.path, mode)?))
        }
        _ => Err(JailError::BadPath(format!("unknown file verb {verb}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Of 40 blocking jobs started at once, no more than the slots run together, and all run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_work_is_bounded_by_its_slots() {
        let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_FS));
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let jobs: Vec<_> = (0..40)
            .map(|_| {
                let (slots, now, most) = (slots.clone(), now.clone(), most.clone());
                tokio::spawn(async move {
                    bounded_blocking(&slots, move || {
                        let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(running, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for job in jobs {
            assert!(job.await.expect("task").is_some());
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= MAX_CONCURRENT_FS, "{most} ran at once");
        assert!(
            most > 1,
            "the jobs never overlapped: the bound was not exercised"
        );
    }
}
