//! Live state of the fleet: the connected agents (the hub) and the revocation list the agent
//! listener consults at every handshake.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axon_shared::{ErrorCode, Frame, Request, Response, WireError};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

/// A request through the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("host {host} is not connected")]
    Offline { host: String },
    #[error("host {host} did not answer {op} within {secs} s")]
    Timeout { host: String, op: String, secs: u64 },
    #[error("the link to host {host} closed before it answered")]
    Closed { host: String },
    #[error("the request is larger than the link's frame limit of {limit} bytes")]
    TooLarge { host: String, limit: usize },
    #[error("host {host} refused {op}: {error}")]
    Refused {
        host: String,
        op: String,
        error: WireError,
    },
}

impl LinkError {
    /// The wire code that best describes the failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Offline { .. } | Self::Closed { .. } => ErrorCode::Unavailable,
            Self::Timeout { .. } => ErrorCode::Timeout,
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::Refused { error, .. } => error.code,
        }
    }
}

/// One live agent connection.
pub struct AgentConn {
    /// Distinguishes successive connections of the same host.
    pub conn_id: u64,
    pub host_id: String,
    max_frame: usize,
    outbound: mpsc::Sender<Frame>,
    pending: Mutex<HashMap<String, oneshot::Sender<Response>>>,
    kill: watch::Sender<bool>,
}

impl AgentConn {
    /// Sends a request and waits for its response.
    pub async fn request<T: Serialize>(
        &self,
        id: String,
        op: &str,
        body: &T,
        timeout: Duration,
    ) -> Result<Response, LinkError> {
        let frame = Frame::Request(Request::new(id.clone(), op, body));
        if frame.encode().len() > self.max_frame {
            return Err(LinkError::TooLarge {
                host: self.host_id.clone(),
                limit: self.max_frame,
            });
        }
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(id.clone(), tx);
        let closed = || LinkError::Closed {
            host: self.host_id.clone(),
        };
        let outcome = tokio::time::timeout(timeout, async {
            self.outbound.send(frame).await.map_err(|_| closed())?;
            rx.await.map_err(|_| closed())
        })
        .await;
        self.lock_pending().remove(&id);
        match outcome {
            Ok(result) => result,
            Err(_) => Err(LinkError::Timeout {
                host: self.host_id.clone(),
                op: op.to_owned(),
                secs: timeout.as_secs(),
            }),
        }
    }

    /// Sends a request whose answer nobody waits for (acknowledgements).
    pub fn notify<T: Serialize>(&self, op: &str, body: &T) {
        let frame = Frame::Request(Request::new(crate::auth::new_id(), op, body));
        if self.outbound.try_send(frame).is_err() {
            tracing::debug!(host = %self.host_id, %op, "outbound queue full; notification dropped");
        }
    }

    /// Hands a response to the request waiting for it; false if none waits.
    pub fn resolve(&self, response: Response) -> bool {
        match self.lock_pending().remove(&response.id) {
            Some(waiter) => waiter.send(response).is_ok(),
            None => false,
        }
    }

    /// Asks the connection's task to close the link now.
    pub fn kill(&self) {
        let _ = self.kill.send(true);
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Response>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the connection task holds: the receiving ends of an [`AgentConn`].
pub struct ConnTask {
    pub outbound: mpsc::Receiver<Frame>,
    pub kill: watch::Receiver<bool>,
}

/// The connected agents, by host id.
#[derive(Default)]
pub struct Hub {
    conns: Mutex<HashMap<String, Arc<AgentConn>>>,
    next_id: AtomicU64,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AgentConn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection for `host_id`, closing any older one of the same host.
    pub fn register(&self, host_id: &str, max_frame: usize) -> (Arc<AgentConn>, ConnTask) {
        let (outbound_tx, outbound_rx) = mpsc::channel(256);
        let (kill_tx, kill_rx) = watch::channel(false);
        let conn = Arc::new(AgentConn {
            conn_id: self.next_id.fetch_add(1, Ordering::Relaxed),
            host_id: host_id.to_owned(),
            max_frame,
            outbound: outbound_tx,
            pending: Mutex::new(HashMap::new()),
            kill: kill_tx,
        });
        if let Some(old) = self.lock().insert(host_id.to_owned(), conn.clone()) {
            tracing::info!(host = %host_id, "a newer connection replaces the current one");
            old.kill();
        }
        (
            conn,
            ConnTask {
                outbound: outbound_rx,
                kill: kill_rx,
            },
        )
    }

    /// Removes the connection if it is still the current one for its host; true if it was.
    pub fn unregister(&self, conn: &AgentConn) -> bool {
        // Whoever still waits on this connection learns now that it is gone.
        conn.lock_pending().clear();
        let mut conns = self.lock();
        if conns
            .get(&conn.host_id)
            .is_some_and(|c| c.conn_id == conn.conn_id)
        {
            conns.remove(&conn.host_id);
            true
        } else {
            false
        }
    }

    /// The live connection of `host_id`.
    pub fn get(&self, host_id: &str) -> Option<Arc<AgentConn>> {
        self.lock().get(host_id).cloned()
    }

    /// Whether `host_id` has a live connection.
    pub fn is_online(&self, host_id: &str) -> bool {
        self.lock().contains_key(host_id)
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no agent is connected.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Sends a request to `host_id` and waits for its response body.
    pub async fn call<T: Serialize>(
        &self,
        host_id: &str,
        op: &str,
        body: &T,
        timeout: Duration,
    ) -> Result<serde_json::Value, LinkError> {
        self.call_as(host_id, crate::auth::new_id(), op, body, timeout)
            .await
    }

    /// As `call`, with the request id chosen by the caller (to follow its output chunks).
    pub async fn call_as<T: Serialize>(
        &self,
        host_id: &str,
        id: String,
        op: &str,
        body: &T,
        timeout: Duration,
    ) -> Result<serde_json::Value, LinkError> {
        let conn = self.get(host_id).ok_or_else(|| LinkError::Offline {
            host: host_id.to_owned(),
        })?;
        let response = conn.request(id, op, body, timeout).await?;
        response.into_result().map_err(|error| LinkError::Refused {
            host: host_id.to_owned(),
            op: op.to_owned(),
            error,
        })
    }
}

/// Revoked hosts, checked during every agent handshake. Revocation is per host: every
/// certificate naming the host (including older, renewed ones) is refused.
#[derive(Debug, Default)]
pub struct Revocations {
    hosts: RwLock<HashSet<String>>,
}

impl Revocations {
    /// Marks a host revoked: every certificate naming it is refused from now on.
    pub fn revoke_host(&self, host_id: &str) {
        self.hosts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host_id.to_owned());
    }

    /// Whether the host is revoked.
    pub fn is_revoked(&self, host_id: &str) -> bool {
        self.hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(host_id)
    }
}
