//! Live state of the fleet: the connected agents (the hub) with the chunk streams open on
//! their links, and the revocation list the agent listener consults at every handshake.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axon_shared::{
    Cancel, Chunk, ErrorCode, Frame, Request, Response, STREAM_WINDOW, StreamAck, WireError, op,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

/// Chunks a stream's queue holds: the agent sends at most the window unacknowledged, plus
/// room for a final chunk it may send past it when it gives up.
const STREAM_QUEUE: usize = 2 * STREAM_WINDOW as usize;
/// A consumer acknowledges at least every this many chunks (and whenever it has caught up).
const ACK_EVERY: u64 = STREAM_WINDOW / 2;
/// Ids of streams closed early whose late chunks are dropped rather than published.
const CLOSED_STREAMS_KEPT: usize = 256;

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
    streams: Mutex<Streams>,
    kill: watch::Sender<bool>,
}

/// The chunk streams open on one connection.
#[derive(Default)]
struct Streams {
    open: HashMap<String, mpsc::Sender<Chunk>>,
    /// Streams dropped before their final chunk, newest last.
    closed: VecDeque<String>,
}

impl Streams {
    fn close(&mut self, id: &str) {
        if self.open.remove(id).is_some() {
            if self.closed.len() == CLOSED_STREAMS_KEPT {
                self.closed.pop_front();
            }
            self.closed.push_back(id.to_owned());
        }
    }
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
        let frame = Frame::Request(Request::new(crate::identity::auth::new_id(), op, body));
        if self.outbound.try_send(frame).is_err() {
            tracing::debug!(host = %self.host_id, %op, "outbound queue full; notification dropped");
        }
    }

    /// Hands a chunk to the stream open under its id; gives it back when it belongs to none
    /// (the output of commands and follows, which goes to the live feed).
    pub fn route_chunk(&self, chunk: Chunk) -> Option<Chunk> {
        let mut streams = self.lock_streams();
        let Some(queue) = streams.open.get(&chunk.id) else {
            // Late chunks of a stream its reader dropped: nobody wants them.
            return (!streams.closed.contains(&chunk.id)).then_some(chunk);
        };
        let (id, last) = (chunk.id.clone(), chunk.last);
        match queue.try_send(chunk) {
            Ok(()) if last => {
                streams.open.remove(&id);
            }
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The agent ignored the window: the reader sees the stream end early.
                tracing::warn!(host = %self.host_id, %id, "agent overran a stream's window; stream closed");
                streams.close(&id);
                drop(streams);
                self.notify(op::CANCEL, &Cancel { id });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => streams.close(&id),
        }
        None
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

    fn lock_streams(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The chunks of one request, in order, read as they arrive; acknowledging them as they are
/// read is what lets the agent send more.
pub struct ChunkStream {
    id: String,
    conn: Arc<AgentConn>,
    chunks: mpsc::Receiver<Chunk>,
    /// The final chunk was read, or the stream ended otherwise: nothing to cancel.
    done: bool,
    /// The last chunk acknowledged.
    acked: Option<u64>,
}

impl ChunkStream {
    /// The request's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next chunk; Ok(None) after the final chunk; Err(LinkError::Closed{..}) if the link
    /// ended before it.
    pub async fn next(&mut self) -> Result<Option<Chunk>, LinkError> {
        if self.done {
            return Ok(None);
        }
        let Some(chunk) = self.chunks.recv().await else {
            self.done = true;
            return Err(LinkError::Closed {
                host: self.conn.host_id.clone(),
            });
        };
        if chunk.last {
            // The agent is done with this stream: no acknowledgement needed.
            self.done = true;
            return Ok(Some(chunk));
        }
        let unacked = (chunk.seq + 1).saturating_sub(self.acked.map_or(0, |a| a + 1));
        if unacked >= ACK_EVERY || self.chunks.is_empty() {
            self.acked = Some(chunk.seq);
            let ack = Frame::Request(Request::new(
                crate::identity::auth::new_id(),
                op::STREAM_ACK,
                &StreamAck {
                    id: self.id.clone(),
                    seq: chunk.seq,
                },
            ));
            // Waits for room rather than dropping: a lost acknowledgement at a full window
            // would stall the stream for good.
            if self.conn.outbound.send(ack).await.is_err() {
                self.done = true;
                return Err(LinkError::Closed {
                    host: self.conn.host_id.clone(),
                });
            }
        }
        Ok(Some(chunk))
    }
}

impl Drop for ChunkStream {
    fn drop(&mut self) {
        if self.done {
            self.conn.lock_streams().open.remove(&self.id);
            return;
        }
        self.conn.lock_streams().close(&self.id);
        let cancel = Frame::Request(Request::new(
            crate::identity::auth::new_id(),
            op::CANCEL,
            &Cancel {
                id: self.id.clone(),
            },
        ));
        // The cancel must not be lost to a full queue: the agent's upstream would stay open.
        if let Err(mpsc::error::TrySendError::Full(cancel)) = self.conn.outbound.try_send(cancel)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let outbound = self.conn.outbound.clone();
            runtime.spawn(async move {
                let _ = outbound.send(cancel).await;
            });
        }
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
            streams: Mutex::default(),
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
        conn.lock_streams().open.clear();
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
        self.call_as(host_id, crate::identity::auth::new_id(), op, body, timeout)
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

    /// Sends `op` to `host_id` and returns its response body and the stream of its chunks.
    /// `timeout` bounds only the wait for the response. Dropping the stream before its final
    /// chunk cancels the request on the agent.
    pub async fn open_stream<T: Serialize>(
        &self,
        host_id: &str,
        op: &str,
        body: &T,
        timeout: Duration,
    ) -> Result<(serde_json::Value, ChunkStream), LinkError> {
        let conn = self.get(host_id).ok_or_else(|| LinkError::Offline {
            host: host_id.to_owned(),
        })?;
        let id = crate::identity::auth::new_id();
        let (tx, chunks) = mpsc::channel(STREAM_QUEUE);
        // Registered first: chunks may follow the response at once.
        conn.lock_streams().open.insert(id.clone(), tx);
        let mut stream = ChunkStream {
            id: id.clone(),
            conn: conn.clone(),
            chunks,
            done: false,
            acked: None,
        };
        let response = match conn.request(id, op, body, timeout).await {
            Ok(r) => r,
            Err(e) => {
                // A request that timed out may still run on the agent: dropping the stream
                // cancels it; otherwise there is nothing to cancel.
                stream.done = !matches!(e, LinkError::Timeout { .. });
                return Err(e);
            }
        };
        match response.into_result() {
            Ok(body) => Ok((body, stream)),
            Err(error) => {
                stream.done = true;
                Err(LinkError::Refused {
                    host: host_id.to_owned(),
                    op: op.to_owned(),
                    error,
                })
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use axon_shared::PROTOCOL_VERSION;

    fn chunk(id: &str, seq: u64, last: bool) -> Chunk {
        Chunk {
            v: PROTOCOL_VERSION,
            id: id.to_owned(),
            seq,
            last,
            stream: "body".into(),
            data: format!("piece {seq}"),
        }
    }

    /// The next request the connection would send to the agent.
    async fn sent(task: &mut ConnTask) -> Request {
        let frame = tokio::time::timeout(Duration::from_secs(10), task.outbound.recv())
            .await
            .expect("a frame in time")
            .expect("open");
        let Frame::Request(request) = frame else {
            panic!("expected a request, got {frame:?}")
        };
        request
    }

    /// Opens a stream as the gateway would and answers it as the agent would; returns it.
    async fn opened(hub: &Arc<Hub>, conn: &AgentConn, task: &mut ConnTask) -> ChunkStream {
        let opening = {
            let hub = hub.clone();
            tokio::spawn(async move {
                hub.open_stream("h1", op::LLM_FORWARD, &"x", Duration::from_secs(10))
                    .await
            })
        };
        let request = sent(task).await;
        assert_eq!(request.op, op::LLM_FORWARD);
        // Chunks that arrive right behind the response already have their stream.
        assert!(conn.route_chunk(chunk(&request.id, 0, false)).is_none());
        assert!(conn.resolve(Response::ok(request.id.clone(), &"head")));
        let (head, stream) = opening.await.expect("task").expect("opened");
        assert_eq!(head, serde_json::json!("head"));
        assert_eq!(stream.id(), request.id);
        stream
    }

    #[tokio::test]
    async fn chunks_reach_their_stream_in_order_and_are_acknowledged_in_batches() {
        let hub = Arc::new(Hub::default());
        let (conn, mut task) = hub.register("h1", 1 << 20);
        let mut stream = opened(&hub, &conn, &mut task).await;
        let id = stream.id().to_owned();
        for seq in 1..STREAM_WINDOW {
            assert!(conn.route_chunk(chunk(&id, seq, false)).is_none());
        }
        for seq in 0..STREAM_WINDOW {
            let got = stream.next().await.expect("chunk").expect("not ended");
            assert_eq!((got.seq, got.data), (seq, format!("piece {seq}")));
        }
        // One acknowledgement per batch, the last when the queue ran dry.
        for expected in [ACK_EVERY - 1, STREAM_WINDOW - 1] {
            let ack = sent(&mut task).await;
            assert_eq!(ack.op, op::STREAM_ACK);
            let ack: StreamAck = ack.body_as().expect("ack");
            assert_eq!((ack.id.as_str(), ack.seq), (id.as_str(), expected));
        }
        assert!(task.outbound.try_recv().is_err());

        assert!(conn.route_chunk(chunk(&id, STREAM_WINDOW, true)).is_none());
        let last = stream.next().await.expect("final").expect("final chunk");
        assert!(last.last);
        assert!(stream.next().await.expect("ended").is_none());
        drop(stream);
        // A finished stream is not cancelled, and a chunk of no stream goes to the live feed.
        assert!(task.outbound.try_recv().is_err());
        assert!(conn.route_chunk(chunk(&id, 99, false)).is_some());
        assert!(conn.route_chunk(chunk("exec-1", 0, false)).is_some());
    }

    #[tokio::test]
    async fn dropping_a_stream_cancels_it_and_its_late_chunks_are_dropped() {
        let hub = Arc::new(Hub::default());
        let (conn, mut task) = hub.register("h1", 1 << 20);
        let mut stream = opened(&hub, &conn, &mut task).await;
        let id = stream.id().to_owned();
        stream.next().await.expect("chunk").expect("not ended");
        assert_eq!(sent(&mut task).await.op, op::STREAM_ACK);
        drop(stream);
        let cancel = sent(&mut task).await;
        assert_eq!(cancel.op, op::CANCEL);
        assert_eq!(cancel.body_as::<Cancel>().expect("cancel").id, id);
        assert!(conn.route_chunk(chunk(&id, 1, false)).is_none());
    }

    #[tokio::test]
    async fn a_stream_whose_link_ends_reports_it_closed() {
        let hub = Arc::new(Hub::default());
        let (conn, mut task) = hub.register("h1", 1 << 20);
        let mut stream = opened(&hub, &conn, &mut task).await;
        assert!(hub.unregister(&conn));
        // What arrived before the end is still read, then the end shows.
        assert_eq!(stream.next().await.expect("chunk").map(|c| c.seq), Some(0));
        match stream.next().await {
            Err(LinkError::Closed { host }) => assert_eq!(host, "h1"),
            other => panic!("expected Closed, got {other:?}"),
        }
        assert!(stream.next().await.expect("stays ended").is_none());
    }

    #[tokio::test]
    async fn a_refused_stream_is_not_kept() {
        let hub = Arc::new(Hub::default());
        let (conn, mut task) = hub.register("h1", 1 << 20);
        let opening = {
            let hub = hub.clone();
            tokio::spawn(async move {
                hub.open_stream("h1", op::LLM_FORWARD, &"x", Duration::from_secs(10))
                    .await
            })
        };
        let request = sent(&mut task).await;
        conn.resolve(Response::err(
            request.id.clone(),
            ErrorCode::Forbidden,
            "path not forwarded",
        ));
        match opening.await.expect("task") {
            Err(LinkError::Refused { error, .. }) => assert_eq!(error.code, ErrorCode::Forbidden),
            Err(e) => panic!("expected a refusal, got {e:?}"),
            Ok(_) => panic!("expected a refusal, got a stream"),
        }
        assert!(conn.lock_streams().open.is_empty());
        assert!(task.outbound.try_recv().is_err(), "nothing to cancel");
        assert!(
            hub.open_stream("h2", op::LLM_FORWARD, &"x", Duration::from_secs(1))
                .await
                .is_err_and(|e| matches!(e, LinkError::Offline { .. }))
        );
    }
}
