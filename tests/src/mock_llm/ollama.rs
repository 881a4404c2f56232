//! Ollama's native API (shapes from github.com/ollama/ollama `docs/api.md`): NDJSON streams on by
//! default, a last `done: true` line with counts and durations in nanoseconds, tool-call
//! arguments as JSON objects, errors as `{"error":".."}`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::behaviour::{Behaviour, ErrorReply, OllamaModel};
use super::wire::{
    Ask, Framing, Reply, answer_text, bad_request, embedding, hash, json_answer, pieces,
    rfc3339_now, to_json, words,
};

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<Message>,
    stream: Option<bool>,
    tools: Option<Vec<Tool>>,
    format: Option<Value>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: Option<String>,
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
struct GenerateRequest {
    model: String,
    #[serde(default)]
    prompt: String,
    system: Option<String>,
    stream: Option<bool>,
    format: Option<Value>,
}

/// What a chat or a generation answers, before it is cut into lines.
struct Answer<'a> {
    model: &'a str,
    text: String,
    tool: Option<(&'a str, Value)>,
    prompt_tokens: u64,
    stream: bool,
}

/// The `done: true` fields; durations follow from the token counts (1 ms a prompt token, 10 ms an
/// answer token) so they are plausible and stable.
fn done_fields(line: &mut Value, prompt_tokens: u64, eval_tokens: u64) {
    let load = 1_000_000_u64;
    let prompt_eval = prompt_tokens * 1_000_000;
    let eval = eval_tokens * 10_000_000;
    line["done"] = json!(true);
    line["done_reason"] = json!("stop");
    line["total_duration"] = json!(load + prompt_eval + eval);
    line["load_duration"] = json!(load);
    line["prompt_eval_count"] = json!(prompt_tokens);
    line["prompt_eval_duration"] = json!(prompt_eval);
    line["eval_count"] = json!(eval_tokens);
    line["eval_duration"] = json!(eval);
}

/// Lines (or the one object) of `/api/chat` (`field` "message") or `/api/generate` ("response").
fn respond(ask: &Ask<'_>, answer: Answer<'_>, chat: bool) -> Reply {
    let created_at = rfc3339_now();
    let eval_tokens = match &answer.tool {
        Some((_, args)) => words(&args.to_string()),
        None => words(&answer.text),
    }
    .max(1);
    let line = |text: &str, tool: Option<&(&str, Value)>| {
        let mut line = json!({"model": answer.model, "created_at": created_at, "done": false});
        if chat {
            let mut message = json!({"role": "assistant", "content": text});
            if let Some((name, arguments)) = tool {
                message["tool_calls"] =
                    json!([{"function": {"name": name, "arguments": arguments}}]);
            }
            line["message"] = message;
        } else {
            line["response"] = json!(text);
        }
        line
    };
    let last = |mut line: Value| {
        done_fields(&mut line, answer.prompt_tokens, eval_tokens);
        if !chat {
            line["context"] = json!([1, 2, 3]);
        }
        line
    };
    if !answer.stream {
        let whole = line(&answer.text, answer.tool.as_ref());
        return Reply::Json(to_json(&last(whole)));
    }
    let mut events: Vec<Vec<u8>> = match &answer.tool {
        Some(tool) => vec![to_json(&line("", Some(tool)))],
        None => pieces(&answer.text, ask.behaviour.deltas)
            .into_iter()
            .map(|piece| to_json(&line(piece, None)))
            .collect(),
    };
    if ask.shape.terminated {
        events.push(to_json(&last(line("", None))));
    }
    Reply::Stream {
        framing: Framing::Ndjson,
        events,
        keep_alive: false,
    }
}

fn json_mode(format: Option<&Value>) -> bool {
    // `"json"` or a JSON schema.
    format.is_some_and(|f| f == "json" || f.is_object())
}

/// `POST /api/chat`.
pub(super) fn chat(ask: &Ask<'_>) -> Reply {
    let request: ChatRequest = match serde_json::from_slice(ask.body) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    let last_user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .and_then(|m| m.content.as_deref())
        .unwrap_or_default();
    let answer = answer_text(&ask.behaviour.label, &request.model, last_user);
    let tool = request
        .tools
        .as_deref()
        .and_then(|tools| tools.iter().find_map(|t| t.function.as_ref()))
        .map(|f| (f.name.as_str(), json!({"answer": answer})));
    let text = match (&tool, json_mode(request.format.as_ref())) {
        (Some(_), _) => String::new(),
        (None, true) => json_answer(&answer),
        (None, false) => answer,
    };
    let prompt_tokens = request
        .messages
        .iter()
        .map(|m| words(m.content.as_deref().unwrap_or_default()))
        .sum();
    let answer = Answer {
        model: &request.model,
        text,
        tool,
        prompt_tokens,
        stream: request.stream.unwrap_or(true),
    };
    respond(ask, answer, true)
}

/// `POST /api/generate`.
pub(super) fn generate(ask: &Ask<'_>) -> Reply {
    let request: GenerateRequest = match serde_json::from_slice(ask.body) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    let answer = answer_text(&ask.behaviour.label, &request.model, &request.prompt);
    let text = if json_mode(request.format.as_ref()) {
        json_answer(&answer)
    } else {
        answer
    };
    let answer = Answer {
        model: &request.model,
        text,
        tool: None,
        prompt_tokens: words(&request.prompt) + request.system.as_deref().map_or(0, words),
        stream: request.stream.unwrap_or(true),
    };
    respond(ask, answer, false)
}

#[derive(Deserialize)]
struct EmbedRequest {
    model: String,
    input: Value,
    dimensions: Option<usize>,
}

/// `POST /api/embed` → `{"model","embeddings":[[..]]}`.
pub(super) fn embed(ask: &Ask<'_>) -> Reply {
    let request: EmbedRequest = match serde_json::from_slice(ask.body) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    let inputs: Vec<&str> = match &request.input {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let dims = request.dimensions.unwrap_or(8).clamp(1, 4096);
    let embeddings: Vec<Vec<f32>> = inputs.iter().map(|t| embedding(t, dims)).collect();
    let tokens: u64 = inputs.iter().map(|t| words(t)).sum();
    Reply::Json(to_json(&json!({
        "model": request.model,
        "embeddings": embeddings,
        "total_duration": 14_143_917,
        "load_duration": 1_019_500,
        "prompt_eval_count": tokens,
    })))
}

/// `name:tag`, as Ollama lists models.
fn tagged(name: &str) -> String {
    if name.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

fn model_fields(model: &OllamaModel) -> Value {
    let name = tagged(&model.name);
    let h = hash(&name);
    let family = model
        .name
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default();
    json!({
        "name": name,
        "model": name,
        "size": model.size,
        "digest": format!("{h:016x}{:016x}{:016x}{:016x}", h.rotate_left(16), h.rotate_left(32), h.rotate_left(48)),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": format!("{:.1}B", model.size as f64 / 0.6e9),
            "quantization_level": "Q4_K_M",
        },
    })
}

/// `GET /api/tags`: every model present.
pub(super) fn tags(behaviour: &Behaviour) -> Reply {
    let models: Vec<Value> = behaviour
        .ollama_models
        .iter()
        .map(|m| {
            let mut fields = model_fields(m);
            fields["modified_at"] = json!("2025-01-01T00:00:00Z");
            fields
        })
        .collect();
    Reply::Json(to_json(&json!({ "models": models })))
}

/// `GET /api/ps`: the loaded models, with their VRAM.
pub(super) fn ps(behaviour: &Behaviour) -> Reply {
    let models: Vec<Value> = behaviour
        .ollama_models
        .iter()
        .filter(|m| m.loaded)
        .map(|m| {
            let mut fields = model_fields(m);
            fields["expires_at"] = json!("2099-01-01T00:00:00Z");
            fields["size_vram"] = json!(m.size_vram);
            fields["context_length"] = json!(4096);
            fields
        })
        .collect();
    Reply::Json(to_json(&json!({ "models": models })))
}

/// `GET /api/version`.
pub(super) fn version() -> Reply {
    Reply::Json(to_json(&json!({"version": "0.12.6"})))
}

/// `{"error":".."}`, also a line mid-stream.
pub(super) fn error_body(error: &ErrorReply) -> Vec<u8> {
    let message = match error.status {
        400 if error.is_context_length() => "the input length exceeds the context length",
        400 => "invalid request",
        401 => "unauthorized",
        404 => "model not found, try pulling it first",
        429 => "too many requests",
        503 => "server busy, please try again.  maximum pending requests exceeded",
        _ => "an internal error occurred",
    };
    let mut body = json!({"error": error.message.as_deref().unwrap_or(message)});
    if let Some(secs) = error.retry_after_field {
        body["retry_after"] = json!(secs);
    }
    to_json(&body)
}
