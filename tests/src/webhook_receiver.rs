//! A webhook receiver as n8n or any careful service would run it: it records every request,
//! answers as the test scripts it, and processes each `Idempotency-Key` once (a repeated key is
//! answered 200 and counted as a duplicate).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// This status, with `Retry-After` seconds if given.
    Status(u16, Option<u64>),
    /// Never answer (the connection stays open until the sender goes away).
    Hold,
}

/// One request as it came.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<Received>,
    /// Idempotency key → the request processed for it.
    processed: HashMap<String, Received>,
    duplicates: usize,
    /// Answers for the next requests, in order; then `default`.
    script: VecDeque<Reply>,
    default: Option<Reply>,
}

/// The running receiver; stops when dropped.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Listens on a loopback port; answers 200 until told otherwise.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let shared = inner.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request| handle(shared.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, inner, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers for the next requests, in order.
    pub fn script(&self, replies: &[Reply]) {
        self.lock().script.extend(replies.iter().copied());
    }

    /// The answer once the script is used up.
    pub fn set_default(&self, reply: Reply) {
        self.lock().default = Some(reply);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.lock().requests.clone()
    }

    /// The requests processed (answered 2xx), one per idempotency key.
    pub fn processed(&self) -> HashMap<String, Received> {
        self.lock().processed.clone()
    }

    /// Requests answered 2xx for a key already processed.
    pub fn duplicates(&self) -> usize {
        self.lock().duplicates
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    inner: Arc<Mutex<Inner>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let headers: HashMap<String, String> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let received = Received { headers, body };
    let reply = {
        let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.requests.push(received.clone());
        let reply = inner
            .script
            .pop_front()
            .or(inner.default)
            .unwrap_or(Reply::Status(200, None));
        if let Reply::Status(status, _) = reply
            && (200..300).contains(&status)
        {
            let key = received.header("idempotency-key").to_owned();
            match inner.processed.entry(key) {
                std::collections::hash_map::Entry::Occupied(_) => inner.duplicates += 1,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(received);
                }
            }
        }
        reply
    };
    match reply {
        Reply::Hold => std::future::pending().await,
        Reply::Status(status, retry_after) => {
            let mut response = Response::builder().status(status);
            if let Some(secs) = retry_after {
                response = response.header("retry-after", secs.to_string());
            }
            Ok(response
                .body(Full::new(Bytes::from_static(b"{\"message\":\"noted\"}")))
                .unwrap_or_default())
        }
    }
}
