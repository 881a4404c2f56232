//! The OpenAI wire format, as the gateway reads and writes it: the request kept as raw JSON
//! fields (passed through to OpenAI-compatible upstreams after a targeted edit) plus the few
//! fields routing, metering and translation need; the chunk and completion shapes the
//! translating providers write; and the error shape every `/v1` answer uses.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Most messages in one request.
const MAX_MESSAGES: usize = 4096;

/// A `/v1` failure, in OpenAI's shape: `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone)]
pub struct LlmError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `rate_limit_error`, `server_error`, ...
    pub kind: &'static str,
    /// OpenAI's `code`, e.g. `model_not_found`, `context_length_exceeded`.
    pub code: Option<String>,
    pub param: Option<String>,
    pub retry_after: Option<u64>,
}

impl LlmError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: kind_of(status),
            code: None,
            param: None,
            retry_after: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }
    pub fn param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
    /// The body, also used as a mid-stream `data:` error event.
    pub fn body(&self) -> String {
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        serde_json::to_string(&Outer {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        })
        .unwrap_or_default()
    }
}

/// OpenAI's error type for a status.
pub fn kind_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

impl IntoResponse for LlmError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<crate::error::ApiError> for LlmError {
    fn from(e: crate::error::ApiError) -> Self {
        let mut out = LlmError::new(e.status, e.message).code(e.code.as_str());
        out.retry_after = e.retry_after;
        out
    }
}

/// Text or parts, as OpenAI allows for a message's content.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

/// One part of a multi-part content.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text {
        text: String,
    },
    ImageUrl {
        image_url: ImageUrl,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageUrl {
    pub url: String,
}

impl Content {
    /// The text parts, joined.
    pub fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// The image URLs.
    pub fn images(&self) -> impl Iterator<Item = &str> {
        let parts: &[Part] = match self {
            Self::Text(_) => &[],
            Self::Parts(p) => p,
        };
        parts.iter().filter_map(|p| match p {
            Part::ImageUrl { image_url } => Some(image_url.url.as_str()),
            _ => None,
        })
    }

    fn chars(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Parts(parts) => parts
                .iter()
                .map(|p| match p {
                    Part::Text { text } => text.len(),
                    // An image costs roughly a thousand tokens' worth of context.
                    Part::ImageUrl { .. } => 4000,
                    Part::Other => 0,
                })
                .sum(),
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ToolCall {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as OpenAI sends it.
    #[serde(default)]
    pub arguments: String,
}

/// A tool the model may call.
#[derive(Debug, Clone, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
}

/// `response_format`.
#[derive(Debug, Clone, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub json_schema: Option<JsonSchemaFormat>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JsonSchemaFormat {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn list(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// A chat request: every field as received, plus the typed view of what the gateway reads.
#[derive(Debug)]
pub struct ChatRequest {
    /// Every top-level field, untouched, for pass-through.
    pub fields: BTreeMap<String, Box<RawValue>>,
    pub model: String,
    pub stream: bool,
    /// The client asked for the usage chunk at the end of a stream.
    pub include_usage: bool,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<serde_json::Value>,
    pub response_format: Option<ResponseFormat>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub n: Option<u32>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// Bytes of prompt text, for the context-size check and token estimates.
    pub prompt_chars: usize,
    pub has_images: bool,
}

fn field<T: for<'de> Deserialize<'de>>(
    fields: &BTreeMap<String, Box<RawValue>>,
    name: &str,
) -> Result<Option<T>, LlmError> {
    match fields.get(name) {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str(raw.get())
            .map(Some)
            .map_err(|e| LlmError::invalid(format!("'{name}' is not valid here: {e}")).param(name)),
    }
}

impl ChatRequest {
    /// Reads a request body.
    pub fn parse(body: &[u8]) -> Result<Self, LlmError> {
        let fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body)
            .map_err(|e| LlmError::invalid(format!("the body is not a JSON object: {e}")))?;
        let model: String = field(&fields, "model")?
            .ok_or_else(|| LlmError::invalid("'model' is required").param("model"))?;
        let messages: Vec<Message> = field(&fields, "messages")?
            .ok_or_else(|| LlmError::invalid("'messages' is required").param("messages"))?;
        if messages.is_empty() {
            return Err(LlmError::invalid("'messages' must not be empty").param("messages"));
        }
        if messages.len() > MAX_MESSAGES {
            return Err(
                LlmError::invalid(format!("at most {MAX_MESSAGES} messages per request"))
                    .param("messages"),
            );
        }
        #[derive(Deserialize)]
        struct StreamOptions {
            #[serde(default)]
            include_usage: bool,
        }
        let stream = field::<bool>(&fields, "stream")?.unwrap_or(false);
        let include_usage =
            field::<StreamOptions>(&fields, "stream_options")?.is_some_and(|o| o.include_usage);
        let tools: Vec<Tool> = field(&fields, "tools")?.unwrap_or_default();
        if let Some(bad) = tools.iter().find(|t| t.kind != "function") {
            return Err(LlmError::invalid(format!(
                "tool type '{}' is not supported; use 'function'",
                bad.kind
            ))
            .param("tools"));
        }
        let max_tokens = match field::<u32>(&fields, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => field(&fields, "max_tokens")?,
        };
        let prompt_chars = messages
            .iter()
            .map(|m| {
                m.content.as_ref().map_or(0, Content::chars)
                    + m.tool_calls
                        .iter()
                        .map(|c| c.function.arguments.len() + c.function.name.len())
                        .sum::<usize>()
            })
            .sum::<usize>()
            + fields.get("tools").map_or(0, |t| t.get().len());
        let has_images = messages.iter().any(|m| {
            m.content
                .as_ref()
                .is_some_and(|c| c.images().next().is_some())
        });
        Ok(Self {
            model,
            stream,
            include_usage,
            tools,
            tool_choice: field(&fields, "tool_choice")?,
            response_format: field(&fields, "response_format")?,
            max_tokens,
            temperature: field(&fields, "temperature")?,
            top_p: field(&fields, "top_p")?,
            stop: field(&fields, "stop")?,
            seed: field(&fields, "seed")?,
            n: field(&fields, "n")?,
            presence_penalty: field(&fields, "presence_penalty")?,
            frequency_penalty: field(&fields, "frequency_penalty")?,
            messages,
            prompt_chars,
            has_images,
            fields,
        })
    }

    /// The sampling parameters under a dialect's names (absent ones are not sent).
    pub fn sampling(&self, names: &SamplingNames) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        let mut put = |name: Option<&str>, value: Option<serde_json::Value>| {
            if let (Some(name), Some(value)) = (name, value) {
                out.insert(name.to_owned(), value);
            }
        };
        put(Some(names.temperature), self.temperature.map(Into::into));
        put(Some(names.top_p), self.top_p.map(Into::into));
        put(Some(names.max_tokens), self.max_tokens.map(Into::into));
        put(
            Some(names.stop),
            self.stop.as_ref().map(|s| s.list().into()),
        );
        put(names.n, self.n.map(Into::into));
        put(Some(names.seed), self.seed.map(Into::into));
        put(
            Some(names.presence_penalty),
            self.presence_penalty.map(Into::into),
        );
        put(
            Some(names.frequency_penalty),
            self.frequency_penalty.map(Into::into),
        );
        out
    }

    /// A rough count of prompt tokens (four bytes a token).
    pub fn estimated_prompt_tokens(&self) -> u64 {
        (self.prompt_chars as u64).div_ceil(4)
    }

    /// The body for an OpenAI-compatible upstream: the client's fields with `model` replaced
    /// and, for streams, the usage chunk always asked for (the gateway meters every call).
    pub fn passthrough_body(&self, model: &str, drop: &[&str]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.fields.values().map(|v| v.get().len() + 16).sum());
        out.push(b'{');
        let mut first = true;
        let mut put = |out: &mut Vec<u8>, key: &str, raw: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            // Keys came from valid JSON and are re-encoded as such.
            out.extend_from_slice(
                serde_json::to_string(key)
                    .unwrap_or_else(|_| "\"\"".into())
                    .as_bytes(),
            );
            out.push(b':');
            out.extend_from_slice(raw.as_bytes());
        };
        let model_json = serde_json::to_string(model).unwrap_or_else(|_| "\"\"".into());
        put(&mut out, "model", &model_json);
        for (key, raw) in &self.fields {
            if key == "model" || key == "stream_options" || drop.contains(&key.as_str()) {
                continue;
            }
            put(&mut out, key, raw.get());
        }
        if self.stream {
            put(&mut out, "stream_options", r#"{"include_usage":true}"#);
        }
        out.push(b'}');
        out
    }
}

/// What a dialect calls OpenAI's sampling parameters; `n: None` is not sent.
pub struct SamplingNames {
    pub temperature: &'static str,
    pub top_p: &'static str,
    pub max_tokens: &'static str,
    pub stop: &'static str,
    pub n: Option<&'static str>,
    pub seed: &'static str,
    pub presence_penalty: &'static str,
    pub frequency_penalty: &'static str,
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Prompt tokens served from the provider's cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    pub fn new(prompt: u64, completion: u64, cached: u64) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            cached_tokens: cached,
        }
    }

    /// The usage object as OpenAI writes it.
    pub fn to_openai(self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        });
        if self.cached_tokens > 0 {
            v["prompt_tokens_details"] = serde_json::json!({"cached_tokens": self.cached_tokens});
        }
        v
    }
}

/// Usage as OpenAI-compatible upstreams report it (DeepSeek adds its cache fields).
#[derive(Debug, Default, Deserialize)]
pub struct UpstreamUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

impl UpstreamUsage {
    pub fn usage(&self) -> Usage {
        let cached = self
            .prompt_cache_hit_tokens
            .or_else(|| {
                self.prompt_tokens_details
                    .as_ref()
                    .and_then(|d| d.cached_tokens)
            })
            .unwrap_or(0);
        Usage::new(self.prompt_tokens, self.completion_tokens, cached)
    }
}

/// A `chat.completion.chunk` written by a translating provider.
#[derive(Debug, Serialize)]
pub struct ChunkOut<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<ChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct ChoiceOut<'a> {
    pub index: u32,
    pub delta: DeltaOut<'a>,
    pub finish_reason: Option<&'a str>,
}

#[derive(Debug, Default, Serialize)]
pub struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
}

/// A streamed tool call (`index` is mandatory: clients assemble calls by it).
#[derive(Debug, Clone, Serialize)]
pub struct ToolCallDelta {
    pub index: u32,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

/// A whole answer being assembled by a translating provider.
#[derive(Debug, Default)]
pub struct Assembled {
    pub content: String,
    pub reasoning: String,
    pub tool_calls: Vec<ToolCallDelta>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
}

impl Assembled {
    /// The `chat.completion` body.
    pub fn completion(&self, id: &str, created: u64, model: &str, usage: Usage) -> Vec<u8> {
        let mut message = serde_json::json!({"role": "assistant", "content": self.content});
        if !self.reasoning.is_empty() {
            message["reasoning_content"] = self.reasoning.clone().into();
        }
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|c| {
                    serde_json::json!({"id": c.id, "type": "function",
                        "function": {"name": c.function.name, "arguments": c.function.arguments}})
                })
                .collect();
            if self.content.is_empty() {
                message["content"] = serde_json::Value::Null;
            }
        }
        serde_json::to_vec(&serde_json::json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": self.finish_reason.as_deref().unwrap_or("stop"),
            }],
            "usage": usage.to_openai(),
        }))
        .unwrap_or_default()
    }
}

/// An embeddings request.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: EmbeddingInput,
    #[serde(default)]
    pub dimensions: Option<u32>,
    #[serde(default)]
    pub encoding_format: Option<String>,
}

impl EmbeddingsRequest {
    /// Checks what does not depend on the upstream.
    pub fn check(&self) -> Result<(), LlmError> {
        let inputs = self.input.list();
        if inputs.is_empty() || inputs.len() > 2048 || inputs.iter().any(|s| s.is_empty()) {
            return Err(LlmError::invalid("input: give 1 to 2048 non-empty strings").param("input"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

impl EmbeddingInput {
    pub fn list(&self) -> Vec<&str> {
        match self {
            Self::One(s) => vec![s.as_str()],
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// An image generation request.
#[derive(Debug, Deserialize)]
pub struct ImageRequest {
    pub prompt: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub response_format: Option<String>,
    #[serde(default)]
    pub negative_prompt: Option<String>,
    #[serde(default)]
    pub steps: Option<u32>,
}

impl ImageRequest {
    /// Most images in one request, and the largest side.
    pub const MAX_IMAGES: u32 = 4;
    pub const MAX_SIDE: u32 = 2048;

    /// Checks what does not depend on the upstream; returns width and height.
    pub fn check(&self) -> Result<(u32, u32), LlmError> {
        if self
            .response_format
            .as_deref()
            .is_some_and(|f| f != "b64_json")
        {
            return Err(LlmError::invalid(
                "only response_format b64_json is served for images (the gateway does not store them)",
            )
            .param("response_format"));
        }
        if self.prompt.trim().is_empty() || self.prompt.len() > 8000 {
            return Err(LlmError::invalid("prompt must have 1 to 8000 bytes").param("prompt"));
        }
        let n = self.n.unwrap_or(1);
        if !(1..=Self::MAX_IMAGES).contains(&n) {
            return Err(
                LlmError::invalid(format!("n must be 1 to {}", Self::MAX_IMAGES)).param("n"),
            );
        }
        let Some(size) = self.size.as_deref() else {
            return Ok((1024, 1024));
        };
        let bad = || {
            LlmError::invalid(format!(
                "size '{size}' must be WIDTHxHEIGHT, multiples of 8 from 64 to {}",
                Self::MAX_SIDE
            ))
            .param("size")
        };
        let (w, h) = size.split_once('x').ok_or_else(bad)?;
        let (w, h): (u32, u32) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
        let side = 64..=Self::MAX_SIDE;
        if !side.contains(&w) || !side.contains(&h) || w % 8 != 0 || h % 8 != 0 {
            return Err(bad());
        }
        Ok((w, h))
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_replaces_the_model_and_always_asks_for_usage() {
        let body = br#"{"model":"smart","messages":[{"role":"user","content":"hi \"there\""}],"stream":true,"temperature":0.2,"x_custom":{"a":[1,2]}}"#;
        let req = ChatRequest::parse(body).expect("parse");
        assert!(req.stream && !req.include_usage);
        let out: serde_json::Value =
            serde_json::from_slice(&req.passthrough_body("gpt-4o-mini", &[])).expect("json");
        assert_eq!(out["model"], "gpt-4o-mini");
        assert_eq!(out["stream_options"]["include_usage"], true);
        assert_eq!(out["temperature"], 0.2);
        assert_eq!(out["x_custom"]["a"][1], 2);
        assert_eq!(out["messages"][0]["content"], "hi \"there\"");
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (body, param) in [
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (r#"{"model":"m"}"#, "messages"),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (r#"{"model":"m","messages":"x"}"#, "messages"),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "stream",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"retrieval","function":{"name":"f"}}]}"#,
                "tools",
            ),
        ] {
            let e = ChatRequest::parse(body.as_bytes()).expect_err(body);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
        assert!(ChatRequest::parse(b"[1]").is_err());
    }

    #[test]
    fn images_and_sizes_are_seen() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"what is this"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}"#;
        let req = ChatRequest::parse(body).expect("parse");
        assert!(req.has_images);
        assert!(req.estimated_prompt_tokens() > 1000);
    }

    #[test]
    fn error_body_is_openai_shaped() {
        let e =
            LlmError::new(StatusCode::TOO_MANY_REQUESTS, "slow down").code("rate_limit_exceeded");
        let v: serde_json::Value = serde_json::from_str(&e.body()).expect("json");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(v["error"]["message"], "slow down");
        assert!(v["error"]["param"].is_null());
    }
}
