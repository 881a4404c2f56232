//! How a call reaches its upstream: HTTP straight to a base URL (cloud providers, an
//! admin-set model server address), or through a fleet host's agent link to the model server
//! on that host's loopback. Providers build an [`HttpCall`] and read an [`HttpReply`] the same
//! way over either.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;

use crate::fleet::{ChunkStream, Hub, LinkError};

/// One HTTP request to an upstream.
#[derive(Debug, Clone)]
pub struct HttpCall {
    pub method: reqwest::Method,
    /// Path and query, appended to the upstream's base URL.
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
}

impl HttpCall {
    pub fn post(path: impl Into<String>, body: Vec<u8>) -> Self {
        Self {
            method: reqwest::Method::POST,
            path: path.into(),
            headers: vec![("content-type", "application/json".into())],
            body: Some(body),
        }
    }
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: reqwest::Method::GET,
            path: path.into(),
            headers: Vec::new(),
            body: None,
        }
    }
}

/// The upstream could not be reached, or its answer broke off.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the connection failed: {0}")]
    Broken(String),
    #[error("{0}")]
    Link(String),
    #[error("the request was refused by the host's agent: {0}")]
    Refused(String),
}

/// The status and headers of an upstream answer; its body is read piece by piece.
pub struct HttpReply {
    pub status: u16,
    pub content_type: String,
    /// `Retry-After`, in seconds, when the upstream sent one.
    pub retry_after: Option<u64>,
    body: ReplyBody,
}

enum ReplyBody {
    Http(reqwest::Response),
    Link(ChunkStream),
}

impl HttpReply {
    /// The next piece of the body; `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, TransportError> {
        match &mut self.body {
            ReplyBody::Http(r) => r
                .chunk()
                .await
                .map_err(|e| TransportError::Broken(describe(&e))),
            ReplyBody::Link(stream) => loop {
                match stream.next().await {
                    Ok(None) => return Ok(None),
                    Ok(Some(chunk)) if chunk.stream == axon_shared::stream::ERROR => {
                        return Err(TransportError::Broken(chunk.data));
                    }
                    Ok(Some(chunk)) if chunk.data.is_empty() => {
                        if chunk.last {
                            return Ok(None);
                        }
                    }
                    Ok(Some(chunk)) => return Ok(Some(Bytes::from(chunk.data))),
                    Err(e) => return Err(TransportError::Link(e.to_string())),
                }
            },
        }
    }

    /// The whole body, up to `limit` bytes.
    pub async fn read_all(&mut self, limit: usize) -> Result<Vec<u8>, TransportError> {
        let mut out = Vec::new();
        while let Some(piece) = self.next().await? {
            if out.len() + piece.len() > limit {
                return Err(TransportError::Broken(format!(
                    "the answer is larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }
}

/// The error text of reqwest without its URL (which may carry a key in a query string).
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection refused or unreachable".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Where a call goes.
#[derive(Clone)]
pub enum Transport {
    /// Straight to `base` (no trailing slash), with these headers on every request.
    Http {
        client: reqwest::Client,
        base: String,
        auth: Vec<(&'static str, String)>,
    },
    /// Through a fleet host's agent link to its model server.
    Link {
        hub: Arc<Hub>,
        host_id: String,
        server: axon_shared::ModelServerKind,
        /// Longest wait for the agent's answer to start.
        timeout: Duration,
    },
}

impl Transport {
    /// Sends the call; returns once the status and headers are in.
    pub async fn send(&self, call: HttpCall) -> Result<HttpReply, TransportError> {
        match self {
            Self::Http { client, base, auth } => {
                let mut request = client.request(call.method, format!("{base}{}", call.path));
                for (name, value) in auth.iter().chain(call.headers.iter()) {
                    request = request.header(*name, value);
                }
                if let Some(body) = call.body {
                    request = request.body(body);
                }
                let response = request.send().await.map_err(|e| {
                    if e.is_connect() {
                        TransportError::Connect(describe(&e))
                    } else {
                        TransportError::Broken(describe(&e))
                    }
                })?;
                let header = |name: reqwest::header::HeaderName| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                Ok(HttpReply {
                    status: response.status().as_u16(),
                    content_type: header(reqwest::header::CONTENT_TYPE).unwrap_or_default(),
                    retry_after: header(reqwest::header::RETRY_AFTER)
                        .and_then(|v| parse_retry_after(&v)),
                    body: ReplyBody::Http(response),
                })
            }
            Self::Link {
                hub,
                host_id,
                server,
                timeout,
            } => {
                let body = axon_shared::LlmForward {
                    server: *server,
                    method: call.method.as_str().to_owned(),
                    path: call.path,
                    body: call.body.map(|b| String::from_utf8_lossy(&b).into_owned()),
                };
                let (started, stream) = hub
                    .open_stream(host_id, axon_shared::op::LLM_FORWARD, &body, *timeout)
                    .await
                    .map_err(|e| match e {
                        LinkError::Refused { error, .. } => TransportError::Refused(error.message),
                        LinkError::Offline { .. } => TransportError::Connect(e.to_string()),
                        other => TransportError::Link(other.to_string()),
                    })?;
                let started: axon_shared::LlmForwarded = serde_json::from_value(started)
                    .map_err(|e| TransportError::Link(format!("unexpected agent answer: {e}")))?;
                Ok(HttpReply {
                    status: started.status,
                    content_type: started.content_type,
                    retry_after: started.retry_after.as_deref().and_then(parse_retry_after),
                    body: ReplyBody::Link(stream),
                })
            }
        }
    }
}

/// `Retry-After` in seconds (an HTTP date is read as "a minute").
pub fn parse_retry_after(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| secs.ceil() as u64);
    }
    (!value.is_empty()).then_some(60)
}

/// An upstream's HTTP client: one pool for the process's life, no proxy, no redirects (a
/// redirect could carry the key elsewhere), `TCP_NODELAY`.
pub fn client(connect: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build the upstream HTTP client: {e}"))
}
