//! The mock, seen from a real HTTP client: each dialect streamed and not, each fault as promised,
//! and its bodies against the fixtures.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .expect("client")
}

async fn post(mock: &MockLlm, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", mock.base_url()))
        .bearer_auth("sk-test")
        .json(body)
        .send()
        .await
        .expect("send")
}

async fn get(mock: &MockLlm, path: &str) -> Value {
    let response = client()
        .get(format!("{}{path}", mock.base_url()))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.expect("JSON")
}

fn chat(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello there"},
        ],
    })
}

/// The body as far as it goes, and whether it ended in an error rather than cleanly.
async fn read_all(mut response: reqwest::Response) -> (String, bool) {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return (String::from_utf8(body).expect("UTF-8"), false),
            Err(_) => return (String::from_utf8(body).expect("UTF-8"), true),
        }
    }
}

/// SSE `data:` payloads in order, frames split on LF or CRLF blank lines, comments skipped.
fn sse_data(raw: &str) -> Vec<String> {
    raw.replace("\r\n", "\n")
        .split("\n\n")
        .flat_map(|event| event.lines())
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn json_events(raw: &str) -> Vec<Value> {
    sse_data(raw)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect()
}

fn ndjson(raw: &str) -> Vec<Value> {
    raw.lines()
        .map(|l| serde_json::from_str(l).expect("line JSON"))
        .collect()
}

fn content_of(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| {
            e.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect()
}

#[tokio::test]
async fn openai_chat_answers_from_the_request() {
    let mock = MockLlm::start(Behaviour::default()).await;
    let response = post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "mock:gpt-4o-mini:Hello there"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(body["usage"]["completion_tokens"], 2);
    assert_eq!(body["usage"]["total_tokens"], 6);

    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].header("authorization"), Some("Bearer sk-test"));
    assert_eq!(seen[0].json()["model"], "gpt-4o-mini");
    assert_eq!(mock.count(), 1);
}

#[tokio::test]
async fn openai_stream_ends_with_usage_then_done() {
    let mock = MockLlm::start(Behaviour::default()).await;
    let response = post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", true)).await;
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let (raw, broken) = read_all(response).await;
    assert!(!broken);
    let data = sse_data(&raw);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let events = json_events(&raw);
    assert!(
        events
            .iter()
            .all(|e| e["object"] == "chat.completion.chunk")
    );
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(content_of(&events), "mock:gpt-4o-mini:Hello there");
    let usage = events.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 6);
    let finish = &events[events.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| e["usage"].is_null())
    );

    // Without include_usage there is no usage at all.
    let mut plain = chat("gpt-4o-mini", true);
    plain
        .as_object_mut()
        .expect("object")
        .remove("stream_options");
    let (raw, _) = read_all(post(&mock, "/v1/chat/completions", &plain).await).await;
    let events = json_events(&raw);
    assert!(events.iter().all(|e| e.get("usage").is_none()));
    assert!(
        events
            .iter()
            .all(|e| e["choices"].as_array().is_some_and(|c| c.len() == 1))
    );
}

#[tokio::test]
async fn openai_tool_calls_whole_and_streamed() {
    let mock = MockLlm::start(Behaviour {
        deltas: 3,
        ..Behaviour::default()
    })
    .await;
    let mut request = chat("gpt-4o-mini", false);
    request["tools"] =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
    let body: Value = post(&mock, "/v1/chat/completions", &request)
        .await
        .json()
        .await
        .expect("JSON");
    let message = &body["choices"][0]["message"];
    assert!(message["content"].is_null());
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let call = &message["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("string"))
            .expect("arguments JSON");
    assert_eq!(arguments["answer"], "mock:gpt-4o-mini:Hello there");

    request["stream"] = json!(true);
    let (raw, _) = read_all(post(&mock, "/v1/chat/completions", &request).await).await;
    let events = json_events(&raw);
    let calls: Vec<&Value> = events
        .iter()
        .filter_map(|e| e.pointer("/choices/0/delta/tool_calls/0"))
        .collect();
    assert_eq!(calls.len(), 4, "the named first delta, then 3 fragments");
    assert!(calls.iter().all(|c| c["index"] == 0));
    assert_eq!(calls[0]["id"], "call_mock1");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let streamed: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        streamed,
        call["function"]["arguments"].as_str().expect("string")
    );
    let finish = events.iter().find_map(|e| {
        e.pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
    });
    assert_eq!(finish, Some("tool_calls"));

    // tool_choice "none" answers in text.
    request["stream"] = json!(false);
    request["tool_choice"] = json!("none");
    let body: Value = post(&mock, "/v1/chat/completions", &request)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "mock:gpt-4o-mini:Hello there"
    );
}

#[tokio::test]
async fn openai_json_mode_answers_json() {
    let mock = MockLlm::start(Behaviour::default()).await;
    let mut request = chat("gpt-4o-mini", false);
    request["response_format"] = json!({"type": "json_object"});
    let body: Value = post(&mock, "/v1/chat/completions", &request)
        .await
        .json()
        .await
        .expect("JSON");
    let content: Value = serde_json::from_str(
        body["choices"][0]["message"]["content"]
            .as_str()
            .expect("string"),
    )
    .expect("content is JSON");
    assert_eq!(content["answer"], "mock:gpt-4o-mini:Hello there");
}

#[tokio::test]
async fn deepseek_reasoner_streams_reasoning_first_with_keep_alives() {
    let mock = MockLlm::start(Behaviour::default()).await;
    let (raw, _) =
        read_all(post(&mock, "/chat/completions", &chat("deepseek-reasoner", true)).await).await;
    assert!(raw.starts_with(": keep-alive\n\n"));
    assert!(raw.matches(": keep-alive\n\n").count() >= 2);
    let events = json_events(&raw);
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| {
            let delta = e.pointer("/choices/0/delta")?;
            if delta["reasoning_content"]
                .as_str()
                .is_some_and(|r| !r.is_empty())
            {
                Some("reasoning")
            } else if delta["content"].as_str().is_some_and(|c| !c.is_empty()) {
                Some("content")
            } else {
                None
            }
        })
        .collect();
    let first_content = kinds.iter().position(|k| *k == "content").expect("content");
    assert!(first_content > 0);
    assert!(kinds[..first_content].iter().all(|k| *k == "reasoning"));
    assert!(kinds[first_content..].iter().all(|k| *k == "content"));
    assert_eq!(content_of(&events), "mock:deepseek-reasoner:Hello there");
    let usage = &events.last().expect("usage")["usage"];
    assert_eq!(usage["prompt_cache_hit_tokens"], 2);
    assert_eq!(usage["prompt_cache_miss_tokens"], 2);
    assert!(usage["completion_tokens_details"]["reasoning_tokens"].as_u64() > Some(0));

    let body: Value = post(&mock, "/chat/completions", &chat("deepseek-chat", false))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "mock:deepseek-chat:Hello there"
    );
    assert!(
        body["choices"][0]["message"]
            .get("reasoning_content")
            .is_none()
    );
    assert_eq!(body["usage"]["prompt_cache_miss_tokens"], 2);
}

#[tokio::test]
async fn openai_embeddings_and_models() {
    let mock = MockLlm::start(Behaviour::default()).await;
    let one: Value = post(
        &mock,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "a b"}),
    )
    .await
    .json()
    .await
    .expect("JSON");
    let many: Value = post(
        &mock,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": ["a b", "c"]}),
    )
    .await
    .json()
    .await
    .expect("JSON");
    assert_eq!(one["object"], "list");
    assert_eq!(
        one["data"][0]["embedding"].as_array().map(Vec::len),
        Some(8)
    );
    assert_eq!(many["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(many["data"][1]["index"], 1);
    assert_eq!(
        one["data"][0]["embedding"], many["data"][0]["embedding"],
        "deterministic"
    );
    assert_ne!(many["data"][0]["embedding"], many["data"][1]["embedding"]);
    assert_eq!(many["usage"]["prompt_tokens"], 3);

    let encoded: Value = post(
        &mock,
        "/v1/embeddings",
        &json!({"model": "m", "input": "a b", "encoding_format": "base64"}),
    )
    .await
    .json()
    .await
    .expect("JSON");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().expect("base64"))
        .expect("decode");
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    let plain: Vec<f32> =
        serde_json::from_value(one["data"][0]["embedding"].clone()).expect("floats");
    assert_eq!(decoded, plain);

    let models = get(&mock, "/v1/models").await;
    assert_eq!(models["object"], "list");
    assert!(
        models["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|m| m["id"] == "gpt-4o-mini")
    );
    assert_eq!(
        get(&mock, "/v1/models/deepseek-chat").await["owned_by"],
        "deepseek"
    );
}

#[tokio::test]
async fn gemini_generate_and_stream() {
    let mock = MockLlm::start(Behaviour {
        require_key: Some("g-key".to_owned()),
        ..Behaviour::default()
    })
    .await;
    let request = json!({
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "Hello there"}]}],
        "generationConfig": {"temperature": 0.7, "maxOutputTokens": 256},
    });
    let url = |action: &str| {
        format!(
            "{}/v1beta/models/gemini-2.0-flash:{action}",
            mock.base_url()
        )
    };
    let response = client()
        .post(url("generateContent"))
        .header("x-goog-api-key", "g-key")
        .json(&request)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    let candidate = &body["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(
        candidate["content"]["parts"][0]["text"],
        "mock:gemini-2.0-flash:Hello there"
    );
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(body["usageMetadata"]["promptTokenCount"], 4);
    assert_eq!(body["usageMetadata"]["totalTokenCount"], 6);
    assert_eq!(mock.requests()[0].header("x-goog-api-key"), Some("g-key"));

    let response = client()
        .post(format!(
            "{}?alt=sse&key=g-key",
            url("streamGenerateContent")
        ))
        .json(&request)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (raw, broken) = read_all(response).await;
    assert!(!broken);
    assert!(raw.ends_with("\r\n\r\n"));
    assert_eq!(
        raw.matches("\r\n\r\n").count(),
        raw.matches("data: ").count()
    );
    assert!(!raw.contains("[DONE]"));
    let events = json_events(&raw);
    assert!(events.len() > 1);
    let text: String = events
        .iter()
        .filter_map(|e| {
            e.pointer("/candidates/0/content/parts/0/text")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(text, "mock:gemini-2.0-flash:Hello there");
    let (last, rest) = events.split_last().expect("events");
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 2);
    assert!(
        rest.iter()
            .all(|e| e["candidates"][0].get("finishReason").is_none())
    );

    // Without alt=sse: one JSON array of the same responses.
    let array: Value = client()
        .post(url("streamGenerateContent"))
        .header("x-goog-api-key", "g-key")
        .json(&request)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
    assert_eq!(array.as_array().map(Vec::len), Some(events.len()));
}

#[tokio::test]
async fn gemini_function_calls_and_embeddings() {
    let mock = MockLlm::start(Behaviour::default()).await;
    let request = json!({
        "contents": [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object"}}]}],
    });
    let body: Value = post(
        &mock,
        "/v1beta/models/gemini-2.5-pro:generateContent",
        &request,
    )
    .await
    .json()
    .await
    .expect("JSON");
    let call = &body["candidates"][0]["content"]["parts"][0]["functionCall"];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(
        call["args"]["answer"],
        "mock:gemini-2.5-pro:Weather in Paris?"
    );
    let (raw, _) = read_all(
        post(
            &mock,
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            &request,
        )
        .await,
    )
    .await;
    let events = json_events(&raw);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_weather"
    );
    assert_eq!(events[0]["candidates"][0]["finishReason"], "STOP");

    let one: Value = post(
        &mock,
        "/v1beta/models/text-embedding-004:embedContent",
        &json!({"content": {"parts": [{"text": "a b"}]}}),
    )
    .await
    .json()
    .await
    .expect("JSON");
    assert_eq!(one["embedding"]["values"].as_array().map(Vec::len), Some(8));
    let batch: Value = post(
        &mock,
        "/v1beta/models/text-embedding-004:batchEmbedContents",
        &json!({"requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a b"}]}},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "c"}]}},
        ]}),
    )
    .await
    .json()
    .await
    .expect("JSON");
    assert_eq!(batch["embeddings"].as_array().map(Vec::len), Some(2));
    assert_eq!(batch["embeddings"][0], one["embedding"]);
}

#[tokio::test]
async fn ollama_chat_streams_ndjson_by_default() {
    let mock = MockLlm::start(Behaviour::default()).await;
    let request = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "why is the sky blue?"}]});
    let response = post(&mock, "/api/chat", &request).await;
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let (raw, _) = read_all(response).await;
    let lines = ndjson(&raw);
    let (last, rest) = lines.split_last().expect("lines");
    assert!(rest.iter().all(|l| l["done"] == false));
    let text: String = rest
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert_eq!(text, "mock:llama3.2:why is the sky blue?");
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["prompt_eval_count"], 5);
    assert_eq!(last["eval_count"], 5);
    assert!(
        last["total_duration"].as_u64() > Some(1_000_000),
        "nanoseconds"
    );

    let mut whole = request.clone();
    whole["stream"] = json!(false);
    let body: Value = post(&mock, "/api/chat", &whole)
        .await
        .json()
        .await
        .expect("one object");
    assert_eq!(
        body["message"]["content"],
        "mock:llama3.2:why is the sky blue?"
    );
    assert_eq!(body["done"], true);

    whole["tools"] =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
    let body: Value = post(&mock, "/api/chat", &whole)
        .await
        .json()
        .await
        .expect("JSON");
    let arguments = &body["message"]["tool_calls"][0]["function"]["arguments"];
    assert!(
        arguments.is_object(),
        "an object, not a string: {arguments}"
    );
    assert_eq!(
        body["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
}

#[tokio::test]
async fn ollama_generate_embed_and_model_lists() {
    let mock = MockLlm::start(Behaviour {
        ollama_models: vec![
            OllamaModel::new("llama3.2", 2_000_000_000, true),
            OllamaModel {
                size_vram: 1_000,
                ..OllamaModel::new("qwen2.5:7b", 5_000_000_000, true)
            },
            OllamaModel::new("all-minilm", 45_000_000, false),
        ],
        ..Behaviour::default()
    })
    .await;
    let (raw, _) = read_all(
        post(
            &mock,
            "/api/generate",
            &json!({"model": "llama3.2", "prompt": "Why?"}),
        )
        .await,
    )
    .await;
    let lines = ndjson(&raw);
    let text: String = lines
        .iter()
        .filter_map(|l| l["response"].as_str())
        .collect();
    assert_eq!(text, "mock:llama3.2:Why?");
    assert_eq!(lines.last().expect("last")["context"], json!([1, 2, 3]));

    let embed: Value = post(
        &mock,
        "/api/embed",
        &json!({"model": "all-minilm", "input": ["a", "b"]}),
    )
    .await
    .json()
    .await
    .expect("JSON");
    assert_eq!(embed["model"], "all-minilm");
    assert_eq!(embed["embeddings"].as_array().map(Vec::len), Some(2));

    let tags = get(&mock, "/api/tags").await;
    let names: Vec<&str> = tags["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["llama3.2:latest", "qwen2.5:7b", "all-minilm:latest"]
    );
    let ps = get(&mock, "/api/ps").await;
    let loaded = ps["models"].as_array().expect("models");
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[1]["name"], "qwen2.5:7b");
    assert_eq!(loaded[1]["size"], 5_000_000_000_u64);
    assert_eq!(loaded[1]["size_vram"], 1_000);
}

/// Checks a PNG's signature, 1×1 header and every chunk's CRC.
fn assert_png_1x1(png: &[u8]) {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let mut at = 8;
    let mut kinds = Vec::new();
    while at < png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().expect("len")) as usize;
        let kind_and_data = &png[at + 4..at + 8 + len];
        let crc = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().expect("crc"));
        assert_eq!(crc32(kind_and_data), crc, "chunk CRC");
        if &kind_and_data[..4] == b"IHDR" {
            assert_eq!(&kind_and_data[4..12], &[0, 0, 0, 1, 0, 0, 0, 1], "1×1");
        }
        kinds.push(String::from_utf8_lossy(&kind_and_data[..4]).into_owned());
        at += 12 + len;
    }
    assert_eq!(kinds, ["IHDR", "IDAT", "IEND"]);
}

#[tokio::test]
async fn sd_webui_paints_a_real_png() {
    let mock = MockLlm::start(Behaviour::default()).await;
    let body: Value = post(
        &mock,
        "/sdapi/v1/txt2img",
        &json!({"prompt": "a red apple", "steps": 20, "batch_size": 2}),
    )
    .await
    .json()
    .await
    .expect("JSON");
    let images = body["images"].as_array().expect("images");
    assert_eq!(images.len(), 2);
    let png = base64::engine::general_purpose::STANDARD
        .decode(images[0].as_str().expect("base64"))
        .expect("decode");
    assert_png_1x1(&png);
    assert_eq!(body["parameters"]["prompt"], "a red apple");
    assert_eq!(body["parameters"]["steps"], 20);
    assert_eq!(body["parameters"]["width"], 512);
    let info: Value =
        serde_json::from_str(body["info"].as_str().expect("a JSON string")).expect("info JSON");
    assert_eq!(info["all_prompts"], json!(["a red apple", "a red apple"]));

    let models = get(&mock, "/sdapi/v1/sd-models").await;
    assert_eq!(models[0]["model_name"], "v1-5-pruned-emaonly");
    let progress = get(&mock, "/sdapi/v1/progress").await;
    assert_eq!(progress["state"]["job_count"], 0);

    // While a slow txt2img is in hand, progress shows it.
    mock.set(Behaviour {
        delay_ms: 500,
        ..Behaviour::default()
    });
    let painting = tokio::spawn({
        let url = format!("{}/sdapi/v1/txt2img", mock.base_url());
        async move {
            client()
                .post(url)
                .json(&json!({"prompt": "x"}))
                .send()
                .await
        }
    });
    assert!(mock.wait_requests(4, WAIT).await);
    assert_eq!(
        get(&mock, "/sdapi/v1/progress").await["state"]["job_count"],
        1
    );
    let painted = painting.await.expect("join").expect("send");
    assert_eq!(painted.status(), 200);
}

#[tokio::test]
async fn a_required_key_is_checked_in_each_dialect() {
    let mock = MockLlm::start(Behaviour {
        require_key: Some("right".to_owned()),
        ..Behaviour::default()
    })
    .await;
    let send = |path: &str, header: (&str, &str)| {
        client()
            .post(format!("{}{path}", mock.base_url()))
            .header(header.0, header.1)
            .json(&chat("gpt-4o-mini", false))
            .send()
    };
    let wrong = send("/v1/chat/completions", ("authorization", "Bearer wrong"))
        .await
        .expect("send");
    assert_eq!(wrong.status(), 401);
    let body: Value = wrong.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let right = send("/v1/chat/completions", ("authorization", "Bearer right"))
        .await
        .expect("send");
    assert_eq!(right.status(), 200);

    let gemini = send(
        "/v1beta/models/gemini-2.0-flash:generateContent",
        ("x-goog-api-key", "wrong"),
    )
    .await
    .expect("send");
    assert_eq!(gemini.status(), 401);
    let body: Value = gemini.json().await.expect("JSON");
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(body["error"]["code"], 401);

    let ollama = send("/api/chat", ("authorization", "Bearer wrong"))
        .await
        .expect("send");
    assert_eq!(ollama.status(), 401);
    assert!(ollama.json::<Value>().await.expect("JSON")["error"].is_string());

    let sd = send("/sdapi/v1/txt2img", ("authorization", "Basic d3Jvbmc="))
        .await
        .expect("send");
    assert_eq!(sd.status(), 401);
    assert_eq!(sd.headers()["www-authenticate"], "Basic");
    let basic = base64::engine::general_purpose::STANDARD.encode("right");
    let sd = send(
        "/sdapi/v1/txt2img",
        ("authorization", &format!("Basic {basic}")),
    )
    .await
    .expect("send");
    assert_eq!(sd.status(), 200);
}

#[tokio::test]
async fn errors_come_in_each_dialects_shape_with_retry_after() {
    let mock = MockLlm::start(Behaviour::fault(Fault::Error(ErrorReply::rate_limited(7)))).await;
    let response = post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["retry_after"], 7);
    assert!(body["error"]["message"].is_string());
    assert!(body["error"].get("param").is_some());

    let response = post(
        &mock,
        "/v1beta/models/gemini-2.0-flash:generateContent",
        &json!({}),
    )
    .await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], 429);
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(body["error"]["details"][0]["retryDelay"], "7s");

    let response = post(&mock, "/api/chat", &json!({"model": "llama3.2"})).await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.expect("JSON");
    assert!(body["error"].is_string());
    assert_eq!(body["retry_after"], 7);

    mock.set(Behaviour::fault(Fault::Error(
        ErrorReply::context_length_exceeded(),
    )));
    let response = post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("retry-after").is_none());
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("This model's maximum context length is"))
    );

    for status in [500, 503] {
        mock.set(Behaviour::fault(Fault::status(status)));
        let response = post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", false)).await;
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"]["type"], "server_error");
    }

    // Listings are never faulted.
    assert_eq!(get(&mock, "/v1/models").await["object"], "list");
}

#[tokio::test]
async fn a_fault_can_last_n_requests() {
    let mock = MockLlm::start(Behaviour::fault(Fault::status(500)).times(2)).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", false))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [500, 500, 200, 200]);
}

#[tokio::test]
async fn flapping_alternates_503_and_success() {
    let mock = MockLlm::start(Behaviour::fault(Fault::Flapping)).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", false))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [503, 200, 503, 200]);
}

/// One raw HTTP/1.1 request, and what the socket gives back until it ends.
async fn raw_exchange(mock: &MockLlm) -> std::io::Result<Vec<u8>> {
    let mut socket = TcpStream::connect(mock.addr()).await?;
    let body = chat("gpt-4o-mini", false).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut out))
        .await
        .expect("the mock ends the connection")?;
    Ok(out)
}

#[tokio::test]
async fn reset_sends_rst_before_any_header() {
    let mock = MockLlm::start(Behaviour::fault(Fault::Reset)).await;
    let error = raw_exchange(&mock).await.expect_err("a reset");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(mock.count(), 1, "the request was read first");
    assert_eq!(
        mock.aborted_answers(),
        0,
        "the mock ended it, not the client"
    );

    let error = client()
        .post(format!("{}/v1/chat/completions", mock.base_url()))
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .expect_err("no response");
    assert!(error.status().is_none());
}

#[tokio::test]
async fn close_sends_fin_before_any_header() {
    let mock = MockLlm::start(Behaviour::fault(Fault::Close)).await;
    let bytes = raw_exchange(&mock).await.expect("a clean EOF");
    assert!(bytes.is_empty(), "not one header byte");
}

#[tokio::test]
async fn no_response_holds_until_the_client_goes() {
    let mock = MockLlm::start(Behaviour::fault(Fault::NoResponse)).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let started = Instant::now();
    let error = client
        .post(format!("{}/v1/chat/completions", mock.base_url()))
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .expect_err("no answer");
    assert!(error.is_timeout());
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(mock.count(), 1);
    drop(client);
    assert!(
        mock.wait_client_closes(1, WAIT).await,
        "the mock saw the client go"
    );
    assert!(mock.wait_aborted_answers(1, WAIT).await);
    assert!(
        mock.wait(WAIT, |s| s.open.load(Ordering::SeqCst) == 0)
            .await
    );
}

#[tokio::test]
async fn slow_first_byte_delays_the_headers() {
    let mock = MockLlm::start(Behaviour::fault(Fault::SlowFirstByte { delay_ms: 300 })).await;
    let started = Instant::now();
    let response = post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", true)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.status(), 200);
    let (raw, _) = read_all(response).await;
    assert!(raw.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn stream_cut_closes_after_n_events_without_done() {
    let mock = MockLlm::start(Behaviour::fault(Fault::StreamCut { after: 2 })).await;
    let response = post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", true)).await;
    assert_eq!(response.status(), 200);
    let (raw, broken) = read_all(response).await;
    assert!(broken, "the body ends in an error, not cleanly");
    assert_eq!(sse_data(&raw).len(), 2);
    assert!(!raw.contains("[DONE]"));

    // The same for Ollama: no done line.
    let response = post(
        &mock,
        "/api/chat",
        &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "a b c d"}]}),
    )
    .await;
    let (raw, broken) = read_all(response).await;
    assert!(broken);
    assert_eq!(ndjson(&raw).len(), 2);
    assert!(!raw.contains("\"done\":true"));

    // A non-streamed answer stops halfway.
    let response = post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!(response.status(), 200);
    let (raw, broken) = read_all(response).await;
    assert!(broken);
    assert!(serde_json::from_str::<Value>(&raw).is_err());
}

#[tokio::test]
async fn stream_stall_sends_n_events_then_nothing() {
    let mock = MockLlm::start(Behaviour::fault(Fault::StreamStall { after: 2 })).await;
    let mut response = post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", true)).await;
    let mut raw = String::new();
    while sse_data(&raw).len() < 2 {
        let chunk = response.chunk().await.expect("chunk").expect("more");
        raw.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
    }
    assert_eq!(sse_data(&raw).len(), 2);
    let next = tokio::time::timeout(Duration::from_millis(300), response.chunk()).await;
    assert!(next.is_err(), "silence for 300 ms");
    assert_eq!(mock.open_connections(), 1);
    assert_eq!(mock.aborted_answers(), 0);
    drop(response);
    assert!(
        mock.wait_aborted_answers(1, WAIT).await,
        "the mock saw the stream abandoned"
    );
    assert!(mock.wait_client_closes(1, WAIT).await);
}

#[tokio::test]
async fn malformed_chunk_slips_in_and_the_stream_goes_on() {
    let mock = MockLlm::start(Behaviour::fault(Fault::MalformedChunk { after: 1 })).await;
    let (raw, broken) =
        read_all(post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", true)).await).await;
    assert!(!broken);
    let data = sse_data(&raw);
    assert_eq!(data[1], "{not json");
    assert!(serde_json::from_str::<Value>(&data[0]).is_ok());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let response = post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!(response.text().await.expect("body"), "{not json");
}

#[tokio::test]
async fn missing_done_ends_cleanly_without_the_marker() {
    let mock = MockLlm::start(Behaviour::fault(Fault::MissingDone)).await;
    let (raw, broken) =
        read_all(post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", true)).await).await;
    assert!(!broken, "a clean end");
    assert!(!raw.contains("[DONE]"));
    let events = json_events(&raw);
    assert_eq!(events.last().expect("usage")["choices"], json!([]));

    let (raw, broken) = read_all(
        post(
            &mock,
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            &json!({"contents": [{"parts": [{"text": "hi"}]}]}),
        )
        .await,
    )
    .await;
    assert!(!broken);
    assert!(
        json_events(&raw)
            .iter()
            .all(|e| e["candidates"][0].get("finishReason").is_none())
    );

    let (raw, _) = read_all(
        post(
            &mock,
            "/api/chat",
            &json!({"model": "llama3.2", "messages": []}),
        )
        .await,
    )
    .await;
    assert!(ndjson(&raw).iter().all(|l| l["done"] == false));
}

#[tokio::test]
async fn stream_error_sends_an_error_event_mid_stream() {
    let mock = MockLlm::start(Behaviour::fault(Fault::StreamError { after: 1 })).await;
    let (raw, _) = read_all(
        post(
            &mock,
            "/api/chat",
            &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "a b c"}]}),
        )
        .await,
    )
    .await;
    let lines = ndjson(&raw);
    assert_eq!(lines.len(), 2);
    assert!(lines[1]["error"].is_string());
    let (raw, _) =
        read_all(post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", true)).await).await;
    let events = json_events(&raw);
    assert_eq!(events[1]["error"]["type"], "server_error");
    assert!(!raw.contains("[DONE]"));
}

#[tokio::test]
async fn content_filter_stops_for_safety() {
    let mock = MockLlm::start(Behaviour::fault(Fault::ContentFilter)).await;
    let body: Value = post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", false))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["choices"][0]["finish_reason"], "content_filter");
    assert!(body["choices"][0]["message"]["content"].is_string());
    let (raw, _) =
        read_all(post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", true)).await).await;
    let finish = json_events(&raw).iter().find_map(|e| {
        e.pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    assert_eq!(finish.as_deref(), Some("content_filter"));
    let body: Value = post(
        &mock,
        "/v1beta/models/gemini-2.0-flash:generateContent",
        &json!({"contents": []}),
    )
    .await
    .json()
    .await
    .expect("JSON");
    assert_eq!(body["candidates"][0]["finishReason"], "SAFETY");
}

#[tokio::test]
async fn streams_are_paced_and_answers_delayed() {
    let mock = MockLlm::start(Behaviour {
        deltas: 4,
        pace_ms: 50,
        delay_ms: 150,
        ..Behaviour::default()
    })
    .await;
    let started = Instant::now();
    let (raw, _) =
        read_all(post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", true)).await).await;
    let events = sse_data(&raw);
    // role, 4 deltas, finish, usage, [DONE]: 7 gaps.
    assert_eq!(events.len(), 8);
    let contents = json_events(&raw)
        .iter()
        .filter(|e| {
            e.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .is_some_and(|c| !c.is_empty())
        })
        .count();
    assert_eq!(contents, 4);
    assert!(started.elapsed() >= Duration::from_millis(350));

    let started = Instant::now();
    let response = post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn connections_are_kept_alive_and_counted() {
    let mock = MockLlm::start(Behaviour::default()).await;
    let client = client();
    for _ in 0..3 {
        let response = client
            .post(format!("{}/v1/chat/completions", mock.base_url()))
            .json(&chat("gpt-4o-mini", false))
            .send()
            .await
            .expect("send");
        response.bytes().await.expect("body");
    }
    assert_eq!(mock.open_connections(), 1, "one keep-alive connection");
    assert!(mock.wait_requests(3, WAIT).await);
    assert!(!mock.wait_requests(4, Duration::from_millis(50)).await);
    drop(client);
    assert!(mock.wait_client_closes(1, WAIT).await);
}

#[tokio::test]
async fn closed_port_refuses() {
    let addr = closed_port().await;
    let error = TcpStream::connect(addr).await.expect_err("refused");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// Every key path of a JSON value (`choices[].delta.content`).
fn key_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let path = format!("{prefix}.{key}");
                out.insert(path.clone());
                key_paths(value, &path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// The distinct key sets of a list of events.
fn shapes(events: &[Value]) -> BTreeSet<BTreeSet<String>> {
    events
        .iter()
        .map(|event| {
            let mut paths = BTreeSet::new();
            key_paths(event, "", &mut paths);
            paths
        })
        .collect()
}

#[tokio::test]
async fn fixtures_match_the_mock() {
    let mock = MockLlm::start(Behaviour::default()).await;
    let json_of =
        |text: &str| -> Vec<Value> { vec![serde_json::from_str(text).expect("fixture JSON")] };
    let body = |path: &'static str, request: Value| {
        let mock = &mock;
        async move { read_all(post(mock, path, &request).await).await.0 }
    };
    let user = json!([{"role": "user", "content": "Hello there"}]);

    let cases: Vec<(&str, Vec<Value>, Vec<Value>)> = vec![
        (
            "openai-chat.json",
            json_of(include_str!("../../fixtures/llm/openai-chat.json")),
            json_of(
                &body(
                    "/v1/chat/completions",
                    json!({"model": "gpt-4o-mini", "messages": user}),
                )
                .await,
            ),
        ),
        (
            "openai-stream.sse",
            json_events(include_str!("../../fixtures/llm/openai-stream.sse")),
            json_events(&body("/v1/chat/completions", chat("gpt-4o-mini", true)).await),
        ),
        (
            "openai-tools-stream.sse",
            json_events(include_str!("../../fixtures/llm/openai-tools-stream.sse")),
            json_events(
                &body(
                    "/v1/chat/completions",
                    json!({"model": "gpt-4o-mini", "stream": true, "messages": user,
                           "tools": [{"type": "function", "function": {"name": "get_weather"}}]}),
                )
                .await,
            ),
        ),
        (
            "openai-embeddings.json",
            json_of(include_str!("../../fixtures/llm/openai-embeddings.json")),
            json_of(&body("/v1/embeddings", json!({"model": "m", "input": "a"})).await),
        ),
        (
            "deepseek-reasoner-stream.sse",
            json_events(include_str!(
                "../../fixtures/llm/deepseek-reasoner-stream.sse"
            )),
            json_events(&body("/chat/completions", chat("deepseek-reasoner", true)).await),
        ),
        (
            "gemini-generate.json",
            json_of(include_str!("../../fixtures/llm/gemini-generate.json")),
            json_of(
                &body(
                    "/v1beta/models/gemini-2.0-flash:generateContent",
                    json!({"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}),
                )
                .await,
            ),
        ),
        (
            "gemini-stream.sse",
            json_events(include_str!("../../fixtures/llm/gemini-stream.sse")),
            json_events(
                &body(
                    "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
                    json!({"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]}),
                )
                .await,
            ),
        ),
        (
            "ollama-chat.ndjson",
            ndjson(include_str!("../../fixtures/llm/ollama-chat.ndjson")),
            ndjson(&body("/api/chat", json!({"model": "llama3.2", "messages": user})).await),
        ),
        (
            "ollama-ps.json",
            json_of(include_str!("../../fixtures/llm/ollama-ps.json")),
            vec![get(&mock, "/api/ps").await],
        ),
        (
            "ollama-tags.json",
            json_of(include_str!("../../fixtures/llm/ollama-tags.json")),
            vec![get(&mock, "/api/tags").await],
        ),
        (
            "sd-txt2img.json",
            json_of(include_str!("../../fixtures/llm/sd-txt2img.json")),
            json_of(
                &body(
                    "/sdapi/v1/txt2img",
                    json!({"prompt": "a red apple", "steps": 20}),
                )
                .await,
            ),
        ),
    ];
    for (name, fixture, mocked) in cases {
        assert_eq!(shapes(&fixture), shapes(&mocked), "{name}: keys differ");
        if name == "sd-txt2img.json" {
            // `info` is JSON inside a string.
            let info = |v: &Value| -> Vec<Value> {
                vec![serde_json::from_str(v["info"].as_str().expect("info")).expect("info JSON")]
            };
            assert_eq!(
                shapes(&info(&fixture[0])),
                shapes(&info(&mocked[0])),
                "{name}: info keys differ"
            );
        }
    }

    // The framing, byte for byte: Gemini's CRLF, DeepSeek's comments, OpenAI's [DONE].
    let gemini = include_str!("../../fixtures/llm/gemini-stream.sse");
    assert!(gemini.ends_with("}\r\n\r\n") && !gemini.replace("\r\n", "").contains('\n'));
    assert!(
        include_str!("../../fixtures/llm/deepseek-reasoner-stream.sse")
            .contains(": keep-alive\n\n")
    );
    assert!(include_str!("../../fixtures/llm/openai-stream.sse").ends_with("data: [DONE]\n\n"));

    // Errors too.
    mock.set(Behaviour::fault(Fault::status(429)));
    let openai: Value = post(&mock, "/v1/chat/completions", &chat("gpt-4o-mini", false))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        shapes(&[openai]),
        shapes(&json_of(include_str!(
            "../../fixtures/llm/openai-error.json"
        )))
    );
    let gemini: Value = post(
        &mock,
        "/v1beta/models/gemini-2.0-flash:generateContent",
        &json!({}),
    )
    .await
    .json()
    .await
    .expect("JSON");
    assert_eq!(
        shapes(&[gemini]),
        shapes(&json_of(include_str!(
            "../../fixtures/llm/gemini-error.json"
        )))
    );
}
