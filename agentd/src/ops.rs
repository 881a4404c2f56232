//! What the agent does when the control plane asks: each operation of the protocol, answered
//! at once (ping, listings) or in a task of its own (commands), so a slow command never holds
//! up the link.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axon_shared::{
    Chunk, ErrorCode, EventAck, ExecRun, Frame, FsOp, PROTOCOL_VERSION, Pong, Request, Response,
    ServiceOp, op,
};
use tokio::sync::{Semaphore, mpsc};

use crate::audit::Auditor;
use crate::exec::{self, ExecError, Whitelist};
use crate::jail::{Jail, JailError};
use crate::services::{ServiceError, Services};
use crate::units::UnitError;
use crate::watch::RootWatcher;

/// Commands allowed to run at the same time; more are refused as busy.
const MAX_CONCURRENT_EXECS: usize = 8;

/// A request's answer: ready now, or later from a task.
pub enum Handled {
    Now(Response),
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
}

/// The agent's operations.
pub struct Ops {
    whitelist: Whitelist,
    exec_slots: Arc<Semaphore>,
    jail: Arc<Jail>,
    /// The agent's own audit trail.
    pub audit: Arc<Auditor>,
    /// Changes in the jail roots.
    pub watcher: RootWatcher,
    pub services: Arc<Services>,
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Ops {
    pub fn new(
        whitelist: Whitelist,
        jail: Jail,
        audit: Arc<Auditor>,
        watcher: RootWatcher,
        services: Services,
    ) -> Self {
        Self {
            whitelist,
            exec_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_EXECS)),
            jail: Arc::new(jail),
            audit,
            watcher,
            services: Arc::new(services),
        }
    }

    /// Answers one request from the control plane.
    pub fn handle(&self, req: Request, chunks: &mpsc::Sender<Frame>) -> Handled {
        match req.op.as_str() {
            op::PING => Handled::Now(Response::ok(
                req.id,
                &Pong {
                    agent_time_ms: unix_ms(),
                },
            )),
            op::EXEC_LIST => Handled::Now(Response::ok(req.id, &self.whitelist.infos())),
            op::EXEC_RUN => self.exec(req, chunks),
            op::SERVICE_LIST | op::SERVICE_GET | op::SERVICE_ACT => self.service(req),
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

    fn service(&self, req: Request) -> Handled {
        let id = req.id.clone();
        let body: ServiceOp = match req.body_as() {
            Ok(b) => b,
            Err(e) => {
                return Handled::Now(Response::err(
                    id,
                    ErrorCode::BadRequest,
                    format!("invalid {} body: {e}", req.op),
                ));
            }
        };
        let (services, audit) = (self.services.clone(), self.audit.clone());
        Handled::Later(Box::pin(async move {
            let outcome = match req.op.as_str() {
                op::SERVICE_LIST => services
                    .list(&body.kind)
                    .await
                    .map(|l| serde_json::to_value(l).unwrap_or_default()),
                op::SERVICE_GET => services
                    .get(&body.kind, &body.name)
                    .await
                    .map(|i| serde_json::to_value(i).unwrap_or_default()),
                _ => {
                    let acted = services.act(&body.kind, &body.name, &body.action).await;
                    let target = format!("{} {}", body.kind, body.name);
                    let (outcome, detail) = match &acted {
                        Ok(a) if a.job_result == "done" => {
                            ("ok", format!("{}: job {}", body.action, a.job_result))
                        }
                        Ok(a) => ("failed", format!("{}: job {}", body.action, a.job_result)),
                        Err(ServiceError::NotAllowed { .. }) => ("denied", body.action.clone()),
                        Err(e) => ("error", format!("{}: {e}", body.action)),
                    };
                    audit.note("service.act", outcome, &target, &body.requested_by, &detail);
                    acted.map(|a| serde_json::to_value(a).unwrap_or_default())
                }
            };
            match outcome {
                Ok(v) => Response::ok(id, &v),
                Err(e) => {
                    let code = match &e {
                        ServiceError::NotAllowed { .. } => ErrorCode::Forbidden,
                        ServiceError::Kind(_) => ErrorCode::BadRequest,
                        ServiceError::Unit(UnitError::NotFound(_)) => ErrorCode::NotFound,
                        ServiceError::Unit(UnitError::Unavailable(_)) => ErrorCode::Unavailable,
                        ServiceError::Unit(UnitError::Timeout { .. }) => ErrorCode::Timeout,
                        ServiceError::Unit(UnitError::Refused { .. }) => ErrorCode::Conflict,
                    };
                    Response::err(id, code, e.to_string())
                }
            }
        }))
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
        let verb = req.op;
        let changes = !matches!(verb.as_str(), op::FS_LIST | op::FS_STAT | op::FS_READ);
        let (path, who) = (fs_op.path.clone(), fs_op.requested_by.clone());
        Handled::Later(Box::pin(async move {
            let call_verb = verb.clone();
            let outcome =
                tokio::task::spawn_blocking(move || fs_call(&jail, &call_verb, &fs_op)).await;
            match outcome {
                Ok(Ok(body)) => {
                    if changes {
                        audit.note(&verb, "ok", &path, &who, "");
                    }
                    Response::ok(id, &body)
                }
                Ok(Err(e)) => {
                    let denied = matches!(
                        e,
                        JailError::Refused { .. } | JailError::BadPath(_) | JailError::NoRoot(_)
                    );
                    if changes || denied {
                        let outcome = if denied { "denied" } else { "error" };
                        audit.note(&verb, outcome, &path, &who, &e.to_string());
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
                Err(_) => Response::err(id, ErrorCode::Internal, "file operation failed"),
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
        let refuse = |id: String, e: ExecError| {
            let code = match &e {
                ExecError::NotAllowed(_) => ErrorCode::Forbidden,
                ExecError::BadParam { .. } => ErrorCode::BadRequest,
                ExecError::Unavailable(_) => ErrorCode::NotFound,
                ExecError::Spawn { .. } => ErrorCode::Internal,
            };
            tracing::warn!(command = %run.command, actor = %run.requested_by.actor, error = %e, "exec refused");
            self.audit.note(
                op::EXEC_RUN,
                "denied",
                &run.command,
                &run.requested_by,
                &e.to_string(),
            );
            Response::err(id, code, e.to_string())
        };
        let Some(cmd) = self.whitelist.get(&run.command) else {
            return Handled::Now(refuse(id, ExecError::NotAllowed(run.command.clone())));
        };
        let argv = match cmd.render(&run.params) {
            Ok(argv) => argv,
            Err(e) => return Handled::Now(refuse(id, e)),
        };
        if !cmd.binary.is_file() {
            return Handled::Now(refuse(id, ExecError::Unavailable(cmd.name.clone())));
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
                    audit.note(op::EXEC_RUN, "ok", &cmd.name, &run.requested_by, &detail);
                    Response::ok(id, &result)
                }
                Err(e) => {
                    audit.note(
                        op::EXEC_RUN,
                        "error",
                        &cmd.name,
                        &run.requested_by,
                        &e.to_string(),
                    );
                    Response::err(id, ErrorCode::Internal, e.to_string())
                }
            }
        }))
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
