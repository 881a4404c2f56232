//! Local fakes of the deploy services, speaking their documented wire formats
//! (`../shared/notes/integrations.md`): an n8n webhook (`/webhook/<path>`), Ayrshare
//! (`/api/post`, `/api/post/<id>`, `/api/user`) and the Telegram Bot API
//! (`/bot<token>/<method>`). One server plays all three; every request is recorded, and a test
//! can script the next answers of each service (a status and body, a `Retry-After`, or a hang).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Which fake a request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    N8n,
    Ayrshare,
    Telegram,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// This status, body and content type, with these extra headers.
    Answer {
        status: u16,
        body: String,
        content_type: &'static str,
        headers: Vec<(String, String)>,
    },
    /// Never answer.
    Hang,
}

impl Scripted {
    pub fn json(status: u16, body: Value) -> Self {
        Self::Answer {
            status,
            body: body.to_string(),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }
    pub fn text(status: u16, body: &str) -> Self {
        Self::Answer {
            status,
            body: body.to_owned(),
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
        }
    }
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Self::Answer { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }
}

/// One request as it came.
#[derive(Debug, Clone)]
pub struct Seen {
    pub service: Service,
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// What the fakes accept, and how they behave when not scripted.
pub struct FakeSetup {
    pub ayrshare_key: String,
    pub telegram_token: String,
    /// n8n paths registered (active workflows), e.g. `wa-deploy`.
    pub n8n_paths: Vec<String>,
    /// n8n Header Auth: name and value, if the webhook requires it.
    pub n8n_header: Option<(String, String)>,
}

#[derive(Default)]
struct Inner {
    seen: Vec<Seen>,
    scripts: HashMap<Service, VecDeque<Scripted>>,
    /// Ayrshare networks that fail when posted to.
    failing_platforms: HashSet<String>,
    /// Telegram chats that do not exist.
    missing_chats: HashSet<String>,
    /// Telegram chats that became supergroups: old → new.
    migrated_chats: HashMap<String, i64>,
    /// Ayrshare posts by id: their status for `GET /post/:id`.
    posts: HashMap<String, String>,
    next_id: u64,
}

/// The running fakes; they stop when dropped.
pub struct FakeChannels {
    pub addr: SocketAddr,
    setup: Arc<FakeSetup>,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeChannels {
    pub async fn start(setup: FakeSetup) -> Self {
        Self::bind("127.0.0.1:0".parse().expect("addr"), setup)
            .await
            .expect("bind")
    }

    /// Serves on `addr`.
    pub async fn bind(addr: SocketAddr, setup: FakeSetup) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let setup = Arc::new(setup);
        let (shared, config) = (inner.clone(), setup.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (shared, config) = (shared.clone(), config.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        handle(shared.clone(), config.clone(), request)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            setup,
            inner,
            task,
        })
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A control plane pointed at these fakes, with `more` settings on top (they win).
    pub async fn control_plane(&self, more: &[(&str, &str)]) -> crate::ControlPlane {
        let mut env = self.env();
        for (k, v) in more {
            env.retain(|(name, _)| name != k);
            env.push(((*k).into(), (*v).into()));
        }
        crate::ControlPlane::start_with_env(&[], &crate::env_refs(&env)).await
    }

    /// The environment that points axon-cp at these fakes, all three channels on.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "N8N_WHATSAPP_DEPLOY_WEBHOOK_URL".to_owned(),
                format!("{}/webhook/{}", self.base(), self.setup.n8n_paths[0]),
            ),
            ("ENABLE_AYRSHARE_SOCIAL".into(), "true".into()),
            ("AYRSHARE_API_KEY".into(), self.setup.ayrshare_key.clone()),
            ("AYRSHARE_BASE_URL".into(), format!("{}/api", self.base())),
            ("ENABLE_TELEGRAM_DEPLOY".into(), "true".into()),
            (
                "TELEGRAM_BOT_TOKEN".into(),
                self.setup.telegram_token.clone(),
            ),
            ("TELEGRAM_BASE_URL".into(), self.base()),
        ];
        if let Some((name, value)) = &self.setup.n8n_header {
            env.push(("N8N_WHATSAPP_DEPLOY_HEADER_NAME".into(), name.clone()));
            env.push(("N8N_WHATSAPP_DEPLOY_HEADER_VALUE".into(), value.clone()));
        }
        env
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake lock")
    }

    /// Answers for the next requests to `service`, in order (then normal behaviour).
    pub fn script(&self, service: Service, answers: Vec<Scripted>) {
        self.lock()
            .scripts
            .entry(service)
            .or_default()
            .extend(answers);
    }

    pub fn fail_platforms(&self, platforms: &[&str]) {
        let mut inner = self.lock();
        inner.failing_platforms = platforms.iter().map(|p| (*p).to_owned()).collect();
    }

    pub fn missing_chat(&self, chat: &str) {
        self.lock().missing_chats.insert(chat.to_owned());
    }

    pub fn migrate_chat(&self, from: &str, to: i64) {
        self.lock().migrated_chats.insert(from.to_owned(), to);
    }

    /// Sets an Ayrshare post's status as `GET /post/:id` reports it.
    pub fn set_post_status(&self, id: &str, status: &str) {
        self.lock().posts.insert(id.to_owned(), status.to_owned());
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Requests to `service` whose path ends with `suffix` (case-insensitive), e.g. `/post` or
    /// `/sendmessage`.
    pub fn calls(&self, service: Service, suffix: &str) -> Vec<Seen> {
        let suffix = suffix.to_lowercase();
        self.seen()
            .into_iter()
            .filter(|s| s.service == service && s.path.to_lowercase().ends_with(&suffix))
            .collect()
    }
}

impl Drop for FakeChannels {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: u16, content_type: &str, body: String, headers: &[(String, String)]) -> Answer {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", content_type);
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

fn json_answer(status: u16, body: Value, headers: &[(String, String)]) -> Answer {
    answer(status, "application/json", body.to_string(), headers)
}

async fn handle(
    inner: Arc<Mutex<Inner>>,
    setup: Arc<FakeSetup>,
    request: Request<Incoming>,
) -> Result<Answer, Infallible> {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let headers: HashMap<String, String> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_lowercase(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let service = if path.starts_with("/webhook") {
        Service::N8n
    } else if path.starts_with("/api/") {
        Service::Ayrshare
    } else {
        Service::Telegram
    };
    let seen = Seen {
        service,
        method,
        path,
        headers,
        body,
    };
    let scripted = {
        let mut guard = inner.lock().expect("fake lock");
        guard.seen.push(seen.clone());
        guard
            .scripts
            .get_mut(&service)
            .and_then(VecDeque::pop_front)
    };
    match scripted {
        Some(Scripted::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(json_answer(504, json!({}), &[]))
        }
        Some(Scripted::Answer {
            status,
            body,
            content_type,
            headers,
        }) => Ok(answer(status, content_type, body, &headers)),
        None => Ok(match service {
            Service::N8n => n8n(&setup, &seen),
            Service::Ayrshare => ayrshare(&inner, &setup, &seen),
            Service::Telegram => telegram(&inner, &setup, &seen),
        }),
    }
}

/// n8n's Webhook node in "Respond: Immediately" mode with Header Auth.
fn n8n(setup: &FakeSetup, seen: &Seen) -> Answer {
    let name = seen.path.trim_start_matches("/webhook/");
    if !setup.n8n_paths.iter().any(|p| p == name) {
        return json_answer(
            404,
            json!({"code": 404,
                "message": format!("The requested webhook \"{} {name}\" is not registered.", seen.method),
                "hint": "The workflow must be active for a production URL to run successfully. You can activate the workflow using the toggle in the top-right of the editor."}),
            &[],
        );
    }
    if let Some((header, value)) = &setup.n8n_header
        && seen.header(&header.to_lowercase()) != value
    {
        return answer(
            403,
            "text/plain; charset=utf-8",
            "Authorization data is wrong!".into(),
            &[],
        );
    }
    json_answer(200, json!({"message": "Workflow was started"}), &[])
}

fn rate_headers(n: usize) -> Vec<(String, String)> {
    vec![
        ("x-ratelimit-max".into(), "300".into()),
        ("x-ratelimit-count".into(), n.to_string()),
    ]
}

/// Ayrshare's `/post`, `/post/:id` and `/user`.
fn ayrshare(inner: &Arc<Mutex<Inner>>, setup: &FakeSetup, seen: &Seen) -> Answer {
    let mut guard = inner.lock().expect("fake lock");
    let count = guard
        .seen
        .iter()
        .filter(|s| s.service == Service::Ayrshare)
        .count();
    let rate = rate_headers(count);
    if seen.header("authorization") != format!("Bearer {}", setup.ayrshare_key) {
        return json_answer(
            401,
            json!({"status": "error", "code": 102, "message": "API Key not valid."}),
            &rate,
        );
    }
    let route = seen.path.trim_start_matches("/api");
    if seen.method == "GET" && route == "/user" {
        return json_answer(
            200,
            json!({"activeSocialAccounts": ["facebook", "instagram", "linkedin", "telegram"],
                "displayNames": [], "created": {"utc": "2022-11-02T01:03:42Z"}}),
            &rate,
        );
    }
    if seen.method == "GET"
        && let Some(id) = route.strip_prefix("/post/")
    {
        return match guard.posts.get(id) {
            Some(status) => json_answer(
                200,
                json!({"id": id, "status": status, "refId": "ref", "post": "…"}),
                &rate,
            ),
            None => json_answer(
                404,
                json!({"status": "error", "code": 404, "message": "Post not found."}),
                &rate,
            ),
        };
    }
    if seen.method != "POST" || route != "/post" {
        return json_answer(
            404,
            json!({"status": "error", "message": "not found"}),
            &rate,
        );
    }
    let body = seen.json();
    let (Some(post), Some(platforms)) = (body["post"].as_str(), body["platforms"].as_array())
    else {
        return json_answer(
            400,
            json!({"status": "error", "code": 101, "message": "Missing post or platforms."}),
            &rate,
        );
    };
    if post.is_empty() || body.get("scheduleDate") == Some(&json!("")) {
        return json_answer(
            400,
            json!({"status": "error", "code": 101, "message": "Invalid parameters."}),
            &rate,
        );
    }
    guard.next_id += 1;
    let id = format!("AyrPost{:04}", guard.next_id);
    let mut post_ids = Vec::new();
    let mut errors = Vec::new();
    for (i, p) in platforms.iter().filter_map(Value::as_str).enumerate() {
        if guard.failing_platforms.contains(p) {
            errors.push(json!({"action": "post", "status": "error", "code": 110,
                "message": format!("{p} Error: Status is a duplicate."), "post": post, "platform": p}));
        } else if p == "telegram" {
            post_ids.push(json!({"status": "success", "id": 635 + i, "platform": p,
                "postUrl": format!("https://t.me/c/1424847122/{}", 635 + i)}));
        } else {
            post_ids.push(
                json!({"status": "success", "id": format!("{p}-{id}"), "platform": p,
                "postUrl": format!("https://{p}.example/p/{id}")}),
            );
        }
    }
    let status = if errors.is_empty() {
        "success"
    } else {
        "error"
    };
    guard.posts.insert(id.clone(), status.into());
    json_answer(
        // Every network failed: 400; a partial failure still answers 200 with status error.
        if !errors.is_empty() && post_ids.is_empty() {
            400
        } else {
            200
        },
        json!({"status": status, "errors": errors, "postIds": post_ids, "id": id}),
        &rate,
    )
}

fn tg_error(code: u16, description: &str, parameters: Option<Value>) -> Answer {
    let mut body = json!({"ok": false, "error_code": code, "description": description});
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    json_answer(code, body, &[])
}

fn message(id: u64, chat: &Value) -> Value {
    json!({"message_id": id, "from": {"id": 5927593490u64, "is_bot": true, "first_name": "Axon", "username": "AxonDeployBot"},
        "chat": {"id": chat, "type": "supergroup", "title": "Tests"}, "date": 1670440475})
}

/// The Bot API's `getMe`, `sendMessage`, `sendPhoto` and `sendMediaGroup`.
fn telegram(inner: &Arc<Mutex<Inner>>, setup: &FakeSetup, seen: &Seen) -> Answer {
    let Some(rest) = seen.path.strip_prefix("/bot") else {
        return tg_error(404, "Not Found", None);
    };
    let Some((token, method)) = rest.split_once('/') else {
        return tg_error(404, "Not Found", None);
    };
    if token != setup.telegram_token {
        return tg_error(401, "Unauthorized", None);
    }
    let method = method.to_lowercase();
    if method == "getme" {
        return json_answer(
            200,
            json!({"ok": true, "result": {"id": 5927593490u64, "is_bot": true, "first_name": "Axon", "username": "AxonDeployBot"}}),
            &[],
        );
    }
    let body = seen.json();
    let chat = &body["chat_id"];
    let chat_key = match chat {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut guard = inner.lock().expect("fake lock");
    if guard.missing_chats.contains(&chat_key) {
        return tg_error(400, "Bad Request: chat not found", None);
    }
    if let Some(to) = guard.migrated_chats.get(&chat_key) {
        return tg_error(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            Some(json!({"migrate_to_chat_id": to})),
        );
    }
    let units = |v: &Value| v.as_str().map_or(0, |s| s.encode_utf16().count());
    match method.as_str() {
        "sendmessage" => {
            let n = units(&body["text"]);
            if n == 0 {
                return tg_error(400, "Bad Request: message text is empty", None);
            }
            if n > 4096 {
                return tg_error(400, "Bad Request: message is too long", None);
            }
            guard.next_id += 1;
            json_answer(
                200,
                json!({"ok": true, "result": message(guard.next_id, chat)}),
                &[],
            )
        }
        "sendphoto" => {
            if units(&body["caption"]) > 1024 {
                return tg_error(400, "Bad Request: message caption is too long", None);
            }
            guard.next_id += 1;
            json_answer(
                200,
                json!({"ok": true, "result": message(guard.next_id, chat)}),
                &[],
            )
        }
        "sendmediagroup" => {
            let items = body["media"].as_array().cloned().unwrap_or_default();
            if !(2..=10).contains(&items.len()) {
                return tg_error(400, "Bad Request: wrong number of media specified", None);
            }
            if items.iter().any(|i| units(&i["caption"]) > 1024) {
                return tg_error(400, "Bad Request: message caption is too long", None);
            }
            let messages: Vec<Value> = items
                .iter()
                .map(|_| {
                    guard.next_id += 1;
                    message(guard.next_id, chat)
                })
                .collect();
            json_answer(200, json!({"ok": true, "result": messages}), &[])
        }
        _ => tg_error(404, "Not Found: method not found", None),
    }
}
