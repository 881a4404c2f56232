//! The one trait every upstream dialect implements: build the HTTP call for a request in
//! OpenAI's shape, and turn the answer back into OpenAI's shape — streamed answers piece by
//! piece as they arrive, never buffered whole.

use serde::Deserialize;

use super::transport::HttpCall;
use super::wire::{ChatRequest, EmbeddingsRequest, ImageRequest, LlmError, Usage};

/// The dialects the gateway speaks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI and any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio).
    Openai,
    Deepseek,
    Gemini,
    Ollama,
    /// Automatic1111 / SD WebUI.
    Sdwebui,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Deepseek => "deepseek",
            Self::Gemini => "gemini",
            Self::Ollama => "ollama",
            Self::Sdwebui => "sdwebui",
        }
    }
}

/// What a decoder found in the upstream's answer.
#[derive(Debug, PartialEq)]
pub enum Emit {
    /// A `chat.completion.chunk` for the client, as JSON, and the bytes of text it carries.
    Chunk { json: Vec<u8>, text: usize },
    /// Token counts from the upstream.
    Usage(Usage),
    /// The answer's finish reason (the answer is complete).
    Finish(String),
    /// The OpenAI stream terminator.
    Done,
}

/// The upstream's answer cannot be read, or it reported an error mid-way.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("the upstream sent a malformed answer: {0}")]
    Malformed(String),
    #[error("the upstream reported an error mid-answer: {0}")]
    Upstream(String),
}

/// Turns a streamed answer into OpenAI chunks, piece by piece.
pub trait ChatDecoder: Send {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Emit>) -> Result<(), DecodeError>;
    /// The body ended.
    fn finish(&mut self, out: &mut Vec<Emit>) -> Result<(), DecodeError>;
}

/// A whole answer, translated.
#[derive(Debug, Default)]
pub struct Whole {
    pub body: Vec<u8>,
    pub usage: Option<Usage>,
    pub finish: Option<String>,
    /// Bytes of generated text, to estimate tokens when the upstream gives no usage.
    pub text: usize,
}

/// Ids and times the gateway gives a translated answer.
#[derive(Debug, Clone)]
pub struct AnswerMeta {
    pub id: String,
    pub created: u64,
    /// The model as the client should see it.
    pub model: String,
}

/// One upstream dialect.
pub trait LlmProvider: Send + Sync {
    fn kind(&self) -> ProviderKind;

    /// Refuses what this dialect cannot do (a clear 400 rather than a silent drop).
    fn check_chat(&self, req: &ChatRequest) -> Result<(), LlmError>;
    fn chat_call(&self, req: &ChatRequest, model: &str) -> Result<HttpCall, LlmError>;
    fn chat_stream(&self, req: &ChatRequest, meta: &AnswerMeta) -> Box<dyn ChatDecoder>;
    fn chat_whole(
        &self,
        req: &ChatRequest,
        meta: &AnswerMeta,
        body: &[u8],
    ) -> Result<Whole, DecodeError>;

    fn embed_call(&self, req: &EmbeddingsRequest, model: &str) -> Result<HttpCall, LlmError> {
        let _ = (req, model);
        Err(unsupported(self.kind(), "embeddings"))
    }
    fn embed_whole(&self, model: &str, body: &[u8]) -> Result<Whole, DecodeError> {
        let _ = (model, body);
        Err(DecodeError::Malformed("embeddings are not served".into()))
    }

    fn image_call(&self, req: &ImageRequest, model: &str) -> Result<HttpCall, LlmError> {
        let _ = (req, model);
        Err(unsupported(self.kind(), "image generation"))
    }
    fn image_whole(&self, body: &[u8]) -> Result<Whole, DecodeError> {
        let _ = body;
        Err(DecodeError::Malformed("images are not served".into()))
    }
}

/// A 400 for a feature a dialect lacks.
pub fn unsupported(kind: ProviderKind, what: &str) -> LlmError {
    LlmError::invalid(format!(
        "{what} is not supported by {} upstreams; pick another model",
        kind.as_str()
    ))
    .code("unsupported_feature")
}

/// An error answer of an upstream, read in any of the dialects' shapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamError {
    pub message: String,
    pub code: Option<String>,
    /// A `retry_after` field in the body, in seconds.
    pub retry_after: Option<u64>,
}

/// Reads `{"error":{"message","code"}}` (OpenAI, DeepSeek), `{"error":{"code","message",
/// "status"}}` (Google), `{"error":"..."}` (Ollama) or `{"detail":...}` (SD WebUI); anything
/// else becomes its first 300 bytes of text.
pub fn read_error(body: &[u8]) -> UpstreamError {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ErrorField {
        Text(String),
        Object {
            #[serde(default)]
            message: Option<String>,
            #[serde(default)]
            code: Option<serde_json::Value>,
            #[serde(default)]
            status: Option<String>,
        },
    }
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        error: Option<ErrorField>,
        #[serde(default)]
        detail: Option<serde_json::Value>,
        #[serde(default)]
        retry_after: Option<f64>,
    }
    let fallback = || UpstreamError {
        message: String::from_utf8_lossy(&body[..body.len().min(300)])
            .trim()
            .to_owned(),
        ..Default::default()
    };
    let Ok(parsed) = serde_json::from_slice::<Body>(body) else {
        return fallback();
    };
    let retry_after = parsed
        .retry_after
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| s.ceil() as u64);
    let (message, code) = match (parsed.error, parsed.detail) {
        (Some(ErrorField::Text(m)), _) => (m, None),
        (
            Some(ErrorField::Object {
                message,
                code,
                status,
            }),
            _,
        ) => {
            let code = match code {
                Some(serde_json::Value::String(s)) => Some(s),
                _ => status,
            };
            (message.unwrap_or_default(), code)
        }
        (None, Some(serde_json::Value::String(d))) => (d, None),
        (None, Some(d)) => (d.to_string(), None),
        (None, None) => return fallback(),
    };
    UpstreamError {
        message: message.chars().take(1000).collect(),
        code,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_every_dialect_are_read() {
        let openai = read_error(br#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#);
        assert_eq!(openai.code.as_deref(), Some("context_length_exceeded"));
        assert!(openai.message.starts_with("This model's maximum"));
        let google = read_error(
            br#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(google.code.as_deref(), Some("RESOURCE_EXHAUSTED"));
        let ollama = read_error(br#"{"error":"model 'x' not found"}"#);
        assert_eq!(ollama.message, "model 'x' not found");
        let sd = read_error(br#"{"detail":"Not Found"}"#);
        assert_eq!(sd.message, "Not Found");
        let plain = read_error(b"upstream connect error");
        assert_eq!(plain.message, "upstream connect error");
        let later = read_error(br#"{"error":{"message":"slow"},"retry_after":2.5}"#);
        assert_eq!(later.retry_after, Some(3));
    }
}
