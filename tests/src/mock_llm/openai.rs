//! OpenAI Chat Completions, embeddings and models, with DeepSeek's flavour for `deepseek*` models
//! (shapes from platform.openai.com/docs/api-reference and api-docs.deepseek.com).
//!
//! Chat answers are typed structs with borrowed fields: this is the benchmark's hot path.

use std::borrow::Cow;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::behaviour::{Behaviour, ErrorReply};
use super::wire::{
    Ask, Framing, Reply, answer_text, bad_request, embedding, json_answer, pieces, to_json,
    unix_now, words,
};

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    messages: Vec<Message<'a>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    tools: Option<Vec<Tool>>,
    tool_choice: Option<Value>,
    response_format: Option<ResponseFormat>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    content: Option<Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct Tool {
    function: Option<ToolFunction>,
}

#[derive(Deserialize)]
struct ToolFunction {
    name: String,
}

#[derive(Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
}

/// A message's text: a string, or the `text` parts of an array.
fn text_of(content: Option<&Value>) -> Cow<'_, str> {
    match content {
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Array(parts)) => Cow::Owned(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => Cow::Borrowed(""),
    }
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<CachedTokens>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<ReasoningTokens>,
    // DeepSeek's cache accounting, instead of OpenAI's `cached_tokens` alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_cache_hit_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_cache_miss_tokens: Option<u64>,
}

#[derive(Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'static str>,
    choices: [Choice<'a>; 1],
    usage: &'a Usage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: OutMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall<'a>,
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'static str>,
    choices: &'a [ChunkChoice<'a>],
    // Absent without `include_usage`, null on every chunk but the last with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

// `None` leaves a field out, `Some(None)` writes null: the providers differ exactly there.
#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// The tool to call, if the request offers tools and does not forbid them.
fn chosen_tool<'r>(request: &'r ChatRequest<'_>) -> Option<&'r str> {
    let first = request
        .tools
        .as_deref()?
        .iter()
        .find_map(|t| t.function.as_ref())?;
    match &request.tool_choice {
        Some(Value::String(choice)) if choice == "none" => None,
        Some(choice) => Some(
            choice
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or(&first.name),
        ),
        None => Some(&first.name),
    }
}

const FINGERPRINT: &str = "fp_mock";

/// `POST /v1/chat/completions`, `POST /chat/completions`.
pub(super) fn chat(ask: &Ask<'_>) -> Reply {
    let request: ChatRequest<'_> = match serde_json::from_slice(ask.body) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    let model: &str = &request.model;
    let deepseek = model.starts_with("deepseek");
    let reasoner = deepseek && model.contains("reasoner");
    let last_user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| text_of(m.content.as_ref()))
        .unwrap_or_default();
    let answer = answer_text(&ask.behaviour.label, model, &last_user);
    let json_mode = request
        .response_format
        .as_ref()
        .is_some_and(|f| f.kind == "json_object" || f.kind == "json_schema");
    let scripted = usize::try_from(ask.nth)
        .ok()
        .and_then(|n| ask.behaviour.scripted.get(n));
    let content = if let Some(text) = scripted {
        text.clone()
    } else if json_mode {
        json_answer(&answer)
    } else {
        answer.clone()
    };
    let tool = chosen_tool(&request);
    let arguments = tool.map(|_| json_answer(&answer));
    let reasoning = reasoner.then(|| format!("The user wrote: {last_user}"));

    let prompt_tokens: u64 = request
        .messages
        .iter()
        .map(|m| words(&text_of(m.content.as_ref())))
        .sum();
    let reasoning_tokens = reasoning.as_deref().map_or(0, words);
    let completion_tokens =
        words(arguments.as_deref().unwrap_or(&content)).max(1) + reasoning_tokens;
    // DeepSeek reports half the prompt as a cache hit, so both counters show up.
    let cache_hit = prompt_tokens / 2;
    let usage = Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        prompt_tokens_details: deepseek.then_some(CachedTokens {
            cached_tokens: cache_hit,
        }),
        completion_tokens_details: reasoner.then_some(ReasoningTokens { reasoning_tokens }),
        prompt_cache_hit_tokens: deepseek.then_some(cache_hit),
        prompt_cache_miss_tokens: deepseek.then_some(prompt_tokens - cache_hit),
    };
    let finish_reason = if ask.shape.content_filter {
        "content_filter"
    } else if tool.is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    let id = format!("chatcmpl-mock{}", ask.seq);
    let call_id = format!("call_mock{}", ask.seq);
    let created = unix_now();
    let fingerprint = Some(FINGERPRINT);

    if !request.stream.unwrap_or(false) {
        let message = OutMessage {
            role: "assistant",
            content: tool.is_none().then_some(content.as_str()),
            reasoning_content: reasoning.as_deref(),
            tool_calls: tool.zip(arguments.as_deref()).map(|(name, arguments)| {
                [ToolCall {
                    id: &call_id,
                    kind: "function",
                    function: FunctionCall { name, arguments },
                }]
            }),
        };
        return Reply::Json(to_json(&Completion {
            id: &id,
            object: "chat.completion",
            created,
            model,
            system_fingerprint: deepseek.then_some(FINGERPRINT),
            choices: [Choice {
                index: 0,
                message,
                logprobs: None,
                finish_reason,
            }],
            usage: &usage,
        }));
    }

    let include_usage = request
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let chunk = |delta: Delta<'_>, finish_reason: Option<&'static str>| {
        to_json(&Chunk {
            id: &id,
            object: "chat.completion.chunk",
            created,
            model,
            system_fingerprint: fingerprint,
            choices: &[ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            usage: include_usage.then_some(None),
        })
    };
    let deltas = ask.behaviour.deltas;
    let mut events = Vec::new();
    match tool.zip(arguments.as_deref()) {
        Some((name, arguments)) => {
            // The first delta names the call; `index` is on every one of them.
            events.push(chunk(
                Delta {
                    role: Some("assistant"),
                    content: Some(None),
                    tool_calls: Some([ToolCallDelta {
                        index: 0,
                        id: Some(&call_id),
                        kind: Some("function"),
                        function: FunctionDelta {
                            name: Some(name),
                            arguments: "",
                        },
                    }]),
                    ..Delta::default()
                },
                None,
            ));
            for piece in pieces(arguments, deltas) {
                events.push(chunk(
                    Delta {
                        tool_calls: Some([ToolCallDelta {
                            index: 0,
                            id: None,
                            kind: None,
                            function: FunctionDelta {
                                name: None,
                                arguments: piece,
                            },
                        }]),
                        ..Delta::default()
                    },
                    None,
                ));
            }
            events.push(chunk(Delta::default(), Some(finish_reason)));
        }
        None => {
            // The reasoner marks the field it is not streaming with null.
            let other = |on: bool| if on { Some(None) } else { None };
            events.push(chunk(
                Delta {
                    role: Some("assistant"),
                    content: Some((!reasoner).then_some("")),
                    reasoning_content: reasoner.then_some(Some("")),
                    ..Delta::default()
                },
                None,
            ));
            for piece in reasoning
                .as_deref()
                .map(|r| pieces(r, deltas))
                .unwrap_or_default()
            {
                events.push(chunk(
                    Delta {
                        content: Some(None),
                        reasoning_content: Some(Some(piece)),
                        ..Delta::default()
                    },
                    None,
                ));
            }
            for piece in pieces(&content, deltas) {
                events.push(chunk(
                    Delta {
                        content: Some(Some(piece)),
                        reasoning_content: other(reasoner),
                        ..Delta::default()
                    },
                    None,
                ));
            }
            let last = if deepseek {
                Delta {
                    content: Some(Some("")),
                    reasoning_content: other(reasoner),
                    ..Delta::default()
                }
            } else {
                Delta::default()
            };
            events.push(chunk(last, Some(finish_reason)));
        }
    }
    if include_usage {
        events.push(to_json(&Chunk {
            id: &id,
            object: "chat.completion.chunk",
            created,
            model,
            system_fingerprint: None,
            choices: &[],
            usage: Some(Some(&usage)),
        }));
    }
    if ask.shape.terminated {
        events.push(b"[DONE]".to_vec());
    }
    Reply::Stream {
        framing: Framing::Sse,
        events,
        keep_alive: deepseek,
    }
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    model: String,
    input: Value,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
}

/// `POST /v1/embeddings`: `input` a string, strings, tokens or token lists.
pub(super) fn embeddings(ask: &Ask<'_>) -> Reply {
    let request: EmbeddingsRequest = match serde_json::from_slice(ask.body) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    let inputs: Vec<Value> = match request.input {
        Value::Array(items) if items.iter().all(|i| !i.is_number()) => items,
        one => vec![one],
    };
    let dims = request.dimensions.unwrap_or(8).clamp(1, 4096);
    let base64 = request.encoding_format.as_deref() == Some("base64");
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let text = match input {
                Value::String(s) => Cow::Borrowed(s.as_str()),
                other => Cow::Owned(other.to_string()),
            };
            tokens += match input {
                Value::Array(ids) => ids.len() as u64,
                _ => words(&text),
            };
            let vector = embedding(&text, dims);
            // The SDKs ask for base64 (little-endian f32s) unless told otherwise.
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Reply::Json(to_json(&json!({
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

fn model_object(id: &str) -> Value {
    let owned_by = if id.starts_with("deepseek") {
        "deepseek"
    } else {
        "openai"
    };
    json!({"id": id, "object": "model", "created": 1_686_935_002, "owned_by": owned_by})
}

/// `GET /v1/models`, `GET /models`.
pub(super) fn models(behaviour: &Behaviour) -> Reply {
    let data: Vec<Value> = behaviour.models.iter().map(|m| model_object(m)).collect();
    Reply::Json(to_json(&json!({"object": "list", "data": data})))
}

/// `GET /v1/models/{id}`.
pub(super) fn model(behaviour: &Behaviour, id: &str) -> Reply {
    if behaviour.models.iter().any(|m| m == id) {
        Reply::Json(to_json(&model_object(id)))
    } else {
        Reply::Error(ErrorReply {
            code: Some("model_not_found".to_owned()),
            ..ErrorReply::status(404).with_message(&format!(
                "The model '{id}' does not exist or you do not have access to it."
            ))
        })
    }
}

/// `{"error":{"message","type","param","code"}}`.
pub(super) fn error_body(error: &ErrorReply) -> Vec<u8> {
    let (kind, code, message) = match error.status {
        400 if error.is_context_length() => (
            "invalid_request_error",
            None,
            "This model's maximum context length is 128000 tokens. However, your messages \
             resulted in 130000 tokens. Please reduce the length of the messages.",
        ),
        401 => (
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided. You can find your API key at \
             https://platform.openai.com/account/api-keys.",
        ),
        404 => (
            "invalid_request_error",
            Some("unknown_url"),
            "Unknown request URL. Please check the URL for typos.",
        ),
        429 => (
            "requests",
            Some("rate_limit_exceeded"),
            "Rate limit reached for requests. Please try again later.",
        ),
        503 => (
            "server_error",
            None,
            "The engine is currently overloaded, please try again later.",
        ),
        500.. => (
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        ),
        _ => ("invalid_request_error", None, "The request was rejected."),
    };
    let mut body = json!({"error": {
        "message": error.message.as_deref().unwrap_or(message),
        "type": kind,
        "param": if error.is_context_length() { json!("messages") } else { Value::Null },
        "code": error.code.as_deref().or(code),
    }});
    if let Some(secs) = error.retry_after_field {
        body["error"]["retry_after"] = json!(secs);
    }
    to_json(&body)
}
