//! What the agent does when the control plane asks: each operation of the protocol, answered
//! at once (ping, listings) or in a task of its own (commands), so a slow command never holds
//! up the link.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axon_shared::{ErrorCode, ExecRun, Pong, Request, Response, op};
use tokio::sync::Semaphore;

use crate::exec::{self, ExecError, Whitelist};

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
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Ops {
    pub fn new(whitelist: Whitelist) -> Self {
        Self {
            whitelist,
            exec_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_EXECS)),
        }
    }

    /// Answers one request from the control plane.
    pub fn handle(&self, req: Request) -> Handled {
        match req.op.as_str() {
            op::PING => Handled::Now(Response::ok(
                req.id,
                &Pong {
                    agent_time_ms: unix_ms(),
                },
            )),
            op::EXEC_LIST => Handled::Now(Response::ok(req.id, &self.whitelist.infos())),
            op::EXEC_RUN => self.exec(req),
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

    fn exec(&self, req: Request) -> Handled {
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
            Response::err(id, code, e.to_string())
        };
        let Some(cmd) = self.whitelist.get(&run.command) else {
            return Handled::Now(refuse(id, ExecError::NotAllowed(run.command.clone())));
        };
        let argv = match cmd.render(&run.params) {
            Ok(argv) => argv,
            Err(e) => return Handled::Now(refuse(id, e)),
        };
        let Ok(permit) = self.exec_slots.clone().try_acquire_owned() else {
            return Handled::Now(Response::err(
                id,
                ErrorCode::RateLimited,
                format!("{MAX_CONCURRENT_EXECS} commands are already running on this host"),
            ));
        };
        tracing::info!(command = %cmd.name, actor = %run.requested_by.actor, "exec");
        Handled::Later(Box::pin(async move {
            let result = exec::run(&cmd, argv).await;
            drop(permit);
            match result {
                Ok(result) => Response::ok(id, &result),
                Err(e) => Response::err(id, ErrorCode::Internal, e.to_string()),
            }
        }))
    }
}
