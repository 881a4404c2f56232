//! Gemini's native Generative Language API (shapes from ai.google.dev/api/generate-content and
//! ai.google.dev/api/embeddings): each stream event is a whole `GenerateContentResponse`, frames
//! end in CRLF CRLF and there is no `[DONE]`; the last event carries `finishReason`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::behaviour::ErrorReply;
use super::wire::{
    Ask, Framing, Reply, answer_text, bad_request, embedding, json_answer, pieces, to_json, words,
};

/// What `POST /v1beta/models/{model}:{action}` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    Generate,
    Stream,
    Embed,
    BatchEmbed,
}

impl Action {
    pub fn of(name: &str) -> Option<Self> {
        Some(match name {
            "generateContent" => Self::Generate,
            "streamGenerateContent" => Self::Stream,
            "embedContent" => Self::Embed,
            "batchEmbedContents" => Self::BatchEmbed,
            _ => return None,
        })
    }
}

// The REST surface takes camelCase and, from proto JSON, snake_case.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest {
    #[serde(default)]
    contents: Vec<Content>,
    #[serde(alias = "system_instruction")]
    system_instruction: Option<Content>,
    #[serde(alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
    tools: Option<Vec<Tool>>,
    #[serde(alias = "tool_config")]
    tool_config: Option<ToolConfig>,
}

#[derive(Deserialize)]
struct Content {
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Part>,
}

impl Content {
    fn text(&self) -> String {
        let texts: Vec<&str> = self
            .parts
            .iter()
            .filter_map(|p| p.text.as_deref())
            .collect();
        texts.join(" ")
    }
}

#[derive(Deserialize)]
struct Part {
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(alias = "response_mime_type")]
    response_mime_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tool {
    #[serde(default, alias = "function_declarations")]
    function_declarations: Vec<FunctionDeclaration>,
}

#[derive(Deserialize)]
struct FunctionDeclaration {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    #[serde(alias = "function_calling_config")]
    function_calling_config: Option<FunctionCallingConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig {
    mode: Option<String>,
    #[serde(default, alias = "allowed_function_names")]
    allowed_function_names: Vec<String>,
}

impl GenerateRequest {
    /// The function to call, if tools are offered and not switched off.
    fn chosen_tool(&self) -> Option<&str> {
        let first = self
            .tools
            .as_deref()?
            .iter()
            .flat_map(|t| &t.function_declarations)
            .next()?;
        let config = self
            .tool_config
            .as_ref()
            .and_then(|c| c.function_calling_config.as_ref());
        if config.and_then(|c| c.mode.as_deref()) == Some("NONE") {
            return None;
        }
        Some(
            config
                .and_then(|c| c.allowed_function_names.first())
                .unwrap_or(&first.name),
        )
    }
}

/// `:generateContent` and `:streamGenerateContent` (`?alt=sse`, else one JSON array).
pub(super) fn generate(ask: &Ask<'_>, model: &str, action: Action) -> Reply {
    let request: GenerateRequest = match serde_json::from_slice(ask.body) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    let last_user = request
        .contents
        .iter()
        .rev()
        .find(|c| c.role.as_deref().is_none_or(|r| r == "user"))
        .map(Content::text)
        .unwrap_or_default();
    let answer = answer_text(&ask.behaviour.label, model, &last_user);
    let json_mode = request
        .generation_config
        .as_ref()
        .and_then(|c| c.response_mime_type.as_deref())
        == Some("application/json");
    let text = if json_mode {
        json_answer(&answer)
    } else {
        answer.clone()
    };
    let prompt_tokens: u64 = request
        .contents
        .iter()
        .chain(&request.system_instruction)
        .map(|c| words(&c.text()))
        .sum();
    let tool = request.chosen_tool();
    let candidate_tokens = words(&text).max(1);
    let finish = if ask.shape.content_filter {
        "SAFETY"
    } else {
        "STOP"
    };
    let response_id = format!("mock-{}", ask.seq);
    // One `GenerateContentResponse`; `last` carries the finish reason and the full usage.
    let response = |part: Value, last: bool| {
        let mut candidate = json!({"content": {"parts": [part], "role": "model"}, "index": 0});
        let mut usage =
            json!({"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens});
        if last {
            candidate["finishReason"] = json!(finish);
            if ask.shape.content_filter {
                candidate["safetyRatings"] = json!([{
                    "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                    "probability": "HIGH",
                    "blocked": true,
                }]);
            }
            usage = json!({
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": candidate_tokens,
                "totalTokenCount": prompt_tokens + candidate_tokens,
            });
        }
        json!({
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": response_id,
        })
    };
    let args = json!({"answer": answer});

    if action == Action::Generate {
        let part = match tool {
            Some(name) => json!({"functionCall": {"name": name, "args": args}}),
            None => json!({"text": text}),
        };
        return Reply::Json(to_json(&response(part, true)));
    }
    let events: Vec<Value> = match tool {
        // Gemini sends a function call whole, in one event.
        Some(name) => vec![response(
            json!({"functionCall": {"name": name, "args": args}}),
            ask.shape.terminated,
        )],
        None => {
            let parts = pieces(&text, ask.behaviour.deltas);
            let count = parts.len();
            parts
                .into_iter()
                .enumerate()
                .map(|(i, piece)| {
                    response(
                        json!({"text": piece}),
                        ask.shape.terminated && i + 1 == count,
                    )
                })
                .collect()
        }
    };
    let sse = ask.query.split('&').any(|kv| kv == "alt=sse");
    if !sse {
        // Without `alt=sse` the stream is one JSON array, sent here at once.
        return Reply::Json(to_json(&Value::Array(events)));
    }
    Reply::Stream {
        framing: Framing::SseCrlf,
        events: events.iter().map(to_json).collect(),
        keep_alive: false,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmbedRequest {
    content: Content,
    #[serde(alias = "output_dimensionality")]
    output_dimensionality: Option<usize>,
}

#[derive(Deserialize)]
struct BatchEmbedRequest {
    requests: Vec<EmbedRequest>,
}

fn values(request: &EmbedRequest) -> Value {
    let dims = request.output_dimensionality.unwrap_or(8).clamp(1, 4096);
    json!({"values": embedding(&request.content.text(), dims)})
}

/// `:embedContent` → `{"embedding":{"values"}}`; `:batchEmbedContents` → `{"embeddings":[..]}`.
pub(super) fn embed(ask: &Ask<'_>, action: Action) -> Reply {
    let body = if action == Action::BatchEmbed {
        serde_json::from_slice::<BatchEmbedRequest>(ask.body).map(|r| {
            let all: Vec<Value> = r.requests.iter().map(values).collect();
            json!({"embeddings": all})
        })
    } else {
        serde_json::from_slice::<EmbedRequest>(ask.body).map(|r| json!({"embedding": values(&r)}))
    };
    match body {
        Ok(body) => Reply::Json(to_json(&body)),
        Err(e) => bad_request(&e),
    }
}

/// `{"error":{"code","message","status"}}`, with a `RetryInfo` detail when asked.
pub(super) fn error_body(error: &ErrorReply) -> Vec<u8> {
    // Google answers a bad key with 400 INVALID_ARGUMENT; the mock's 401 keeps one status for
    // "wrong key" across dialects and names it UNAUTHENTICATED, as Google does for bad tokens.
    let (status, message) = match error.status {
        400 if error.is_context_length() => (
            "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed \
             (1048576).",
        ),
        400 => ("INVALID_ARGUMENT", "Request contains an invalid argument."),
        401 => (
            "UNAUTHENTICATED",
            "API key not valid. Please pass a valid API key.",
        ),
        403 => (
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers.",
        ),
        404 => ("NOT_FOUND", "Requested entity was not found."),
        429 => (
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota).",
        ),
        500 => (
            "INTERNAL",
            "An internal error has occurred. Please retry or report in \
             https://developers.generativeai.google/guide/troubleshooting",
        ),
        503 => (
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
        ),
        504 => (
            "DEADLINE_EXCEEDED",
            "Deadline expired before operation could complete.",
        ),
        _ => ("UNKNOWN", "Unknown error."),
    };
    let mut body = json!({"error": {
        "code": error.status,
        "message": error.message.as_deref().unwrap_or(message),
        "status": status,
    }});
    if let Some(secs) = error.retry_after_field {
        body["error"]["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{secs}s"),
        }]);
    }
    to_json(&body)
}
