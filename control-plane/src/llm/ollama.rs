//! Ollama's native API: `/api/chat` (newline-delimited JSON, streaming unless `"stream":
//! false`, the last line `done: true` with token counts and durations in nanoseconds; tool
//! call arguments are JSON objects, not strings) and `/api/embed`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::framing::{Framed, LineSplitter};
use super::gemini::data_url;
use super::provider::{
    AnswerMeta, ChatDecoder, DecodeError, Emit, LlmProvider, ProviderKind, Whole, unsupported,
};
use super::transport::HttpCall;
use super::wire::{
    Assembled, ChatRequest, ChoiceOut, ChunkOut, DeltaOut, EmbeddingsRequest, FunctionCall,
    LlmError, SamplingNames, ToolCallDelta, Usage,
};

#[derive(Default)]
pub struct Ollama;

fn request_body(req: &ChatRequest, model: &str) -> Result<Value, LlmError> {
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let mut out = json!({
            "role": if m.role == "developer" { "system" } else { m.role.as_str() },
            "content": m.content.as_ref().map(|c| c.text()).unwrap_or_default(),
        });
        let mut images = Vec::new();
        for url in m.content.iter().flat_map(|c| c.images()) {
            let (_, data) = data_url(url).ok_or_else(|| {
                LlmError::invalid(
                    "Ollama takes images as data: URLs (base64); fetch the image first",
                )
                .param("messages")
            })?;
            images.push(data);
        }
        if !images.is_empty() {
            out["images"] = images.into();
        }
        if !m.tool_calls.is_empty() {
            out["tool_calls"] = m
                .tool_calls
                .iter()
                .map(|c| {
                    let args: Value =
                        serde_json::from_str(&c.function.arguments).unwrap_or_else(|_| json!({}));
                    json!({"function": {"name": c.function.name, "arguments": args}})
                })
                .collect();
        }
        messages.push(out);
    }
    let options = req.sampling(&SamplingNames {
        temperature: "temperature",
        top_p: "top_p",
        max_tokens: "num_predict",
        stop: "stop",
        // Refused before: Ollama answers once.
        n: None,
        seed: "seed",
        presence_penalty: "presence_penalty",
        frequency_penalty: "frequency_penalty",
    });
    let mut body = json!({"model": model, "messages": messages, "stream": req.stream});
    if !options.is_empty() {
        body["options"] = Value::Object(options);
    }
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": t.function}))
            .collect();
    }
    if let Some(format) = &req.response_format {
        match format.kind.as_str() {
            "json_object" => body["format"] = "json".into(),
            "json_schema" => {
                body["format"] = format
                    .json_schema
                    .as_ref()
                    .and_then(|s| s.schema.clone())
                    .unwrap_or_else(|| "json".into());
            }
            _ => {}
        }
    }
    Ok(body)
}

impl LlmProvider for Ollama {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ollama
    }

    fn check_chat(&self, req: &ChatRequest) -> Result<(), LlmError> {
        if req.n.is_some_and(|n| n > 1) {
            return Err(unsupported(self.kind(), "n > 1"));
        }
        Ok(())
    }

    fn chat_call(&self, req: &ChatRequest, model: &str) -> Result<HttpCall, LlmError> {
        Ok(HttpCall::post(
            "/api/chat",
            serde_json::to_vec(&request_body(req, model)?).unwrap_or_default(),
        ))
    }

    fn chat_stream(&self, _req: &ChatRequest, meta: &AnswerMeta) -> Box<dyn ChatDecoder> {
        Box::new(StreamDecoder {
            lines: LineSplitter::default(),
            events: Vec::new(),
            meta: meta.clone(),
            calls: 0,
            finished: false,
            first: true,
        })
    }

    fn chat_whole(
        &self,
        _req: &ChatRequest,
        meta: &AnswerMeta,
        body: &[u8],
    ) -> Result<Whole, DecodeError> {
        let line: Line = serde_json::from_slice(body)
            .map_err(|e| DecodeError::Malformed(format!("/api/chat answer: {e}")))?;
        if let Some(e) = line.error {
            return Err(DecodeError::Upstream(e));
        }
        let mut answer = Assembled::default();
        let mut calls = 0;
        if let Some(m) = &line.message {
            answer.content.push_str(&m.content);
            answer.reasoning.push_str(&m.thinking);
            answer.tool_calls = tool_calls(m, &mut calls);
        }
        let finish = line.finish(calls);
        answer.finish_reason = finish.clone();
        let usage = line.usage();
        Ok(Whole {
            body: answer.completion(
                &meta.id,
                meta.created,
                &meta.model,
                usage.unwrap_or_default(),
            ),
            usage,
            text: answer.content.len() + answer.reasoning.len(),
            finish: finish.or(Some("stop".into())),
        })
    }

    fn embed_call(&self, req: &EmbeddingsRequest, model: &str) -> Result<HttpCall, LlmError> {
        let mut body = json!({"model": model, "input": req.input.list()});
        if let Some(d) = req.dimensions {
            body["dimensions"] = d.into();
        }
        Ok(HttpCall::post(
            "/api/embed",
            serde_json::to_vec(&body).unwrap_or_default(),
        ))
    }

    fn embed_whole(&self, model: &str, body: &[u8]) -> Result<Whole, DecodeError> {
        #[derive(Deserialize)]
        struct Embed {
            embeddings: Vec<Vec<f64>>,
            #[serde(default)]
            prompt_eval_count: Option<u64>,
        }
        let embed: Embed = serde_json::from_slice(body)
            .map_err(|e| DecodeError::Malformed(format!("/api/embed answer: {e}")))?;
        let data: Vec<Value> = embed
            .embeddings
            .into_iter()
            .enumerate()
            .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
            .collect();
        let usage = embed.prompt_eval_count.map(|n| Usage::new(n, 0, 0));
        let mut out = json!({"object": "list", "data": data, "model": model});
        if let Some(u) = usage {
            out["usage"] =
                json!({"prompt_tokens": u.prompt_tokens, "total_tokens": u.total_tokens});
        }
        Ok(Whole {
            body: serde_json::to_vec(&out).unwrap_or_default(),
            usage,
            finish: Some("stop".into()),
            text: 0,
        })
    }
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    message: Option<LineMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct LineMessage {
    #[serde(default)]
    content: String,
    #[serde(default)]
    thinking: String,
    #[serde(default)]
    tool_calls: Vec<OllamaCall>,
}

#[derive(Deserialize)]
struct OllamaCall {
    function: OllamaFunction,
}

#[derive(Deserialize)]
struct OllamaFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

fn tool_calls(m: &LineMessage, calls: &mut u32) -> Vec<ToolCallDelta> {
    m.tool_calls
        .iter()
        .map(|c| {
            let index = *calls;
            *calls += 1;
            ToolCallDelta {
                index,
                id: format!("call_{index}"),
                kind: "function",
                function: FunctionCall {
                    name: c.function.name.clone(),
                    arguments: c.function.arguments.to_string(),
                },
            }
        })
        .collect()
}

impl Line {
    fn finish(&self, calls: u32) -> Option<String> {
        if !self.done {
            return None;
        }
        Some(
            match self.done_reason.as_deref() {
                _ if calls > 0 => "tool_calls",
                Some("length") => "length",
                _ => "stop",
            }
            .to_owned(),
        )
    }

    fn usage(&self) -> Option<Usage> {
        (self.done && (self.prompt_eval_count.is_some() || self.eval_count.is_some())).then(|| {
            Usage::new(
                self.prompt_eval_count.unwrap_or(0),
                self.eval_count.unwrap_or(0),
                0,
            )
        })
    }
}

struct StreamDecoder {
    lines: LineSplitter,
    events: Vec<Framed>,
    meta: AnswerMeta,
    calls: u32,
    finished: bool,
    first: bool,
}

impl StreamDecoder {
    fn drain(&mut self, out: &mut Vec<Emit>) -> Result<(), DecodeError> {
        for event in std::mem::take(&mut self.events) {
            let data = match event {
                Framed::Data(d) => d,
                Framed::TooLarge => {
                    return Err(DecodeError::Malformed("a line is too large".into()));
                }
            };
            let line: Line = serde_json::from_str(&data)
                .map_err(|e| DecodeError::Malformed(format!("a stream line is not JSON: {e}")))?;
            if let Some(e) = line.error {
                return Err(DecodeError::Upstream(e));
            }
            let mut delta = DeltaOut::default();
            if std::mem::take(&mut self.first) {
                delta.role = Some("assistant");
            }
            let (content, thinking) = line
                .message
                .as_ref()
                .map_or(("", ""), |m| (m.content.as_str(), m.thinking.as_str()));
            if !content.is_empty() {
                delta.content = Some(content);
            }
            if !thinking.is_empty() {
                delta.reasoning_content = Some(thinking);
            }
            if let Some(m) = &line.message {
                delta.tool_calls = tool_calls(m, &mut self.calls);
            }
            let finish = line.finish(self.calls);
            let chunk = ChunkOut {
                id: &self.meta.id,
                object: "chat.completion.chunk",
                created: self.meta.created,
                model: &self.meta.model,
                choices: vec![ChoiceOut {
                    index: 0,
                    delta,
                    finish_reason: finish.as_deref(),
                }],
                usage: None,
            };
            out.push(Emit::Chunk {
                json: serde_json::to_vec(&chunk).unwrap_or_default(),
                text: content.len() + thinking.len(),
            });
            if let Some(reason) = finish {
                self.finished = true;
                out.push(Emit::Finish(reason));
            }
            if let Some(usage) = line.usage() {
                out.push(Emit::Usage(usage));
            }
        }
        Ok(())
    }
}

impl ChatDecoder for StreamDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Emit>) -> Result<(), DecodeError> {
        self.lines.push(bytes, &mut self.events);
        self.drain(out)
    }

    fn finish(&mut self, out: &mut Vec<Emit>) -> Result<(), DecodeError> {
        self.lines.finish(&mut self.events);
        self.drain(out)?;
        // `done: true` is Ollama's terminator.
        if self.finished {
            out.push(Emit::Done);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> AnswerMeta {
        AnswerMeta {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "ollama/llama3.2".into(),
        }
    }

    #[test]
    fn the_request_is_translated() {
        let req = ChatRequest::parse(br#"{"model":"ollama/llama3.2","messages":[
            {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/4A"}}]},
            {"role":"assistant","content":"","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":2}"}}]},
            {"role":"tool","tool_call_id":"c","content":"ok"}],
            "max_tokens":64,"temperature":0.1,"stream":true,"response_format":{"type":"json_object"},
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}"#).expect("parse");
        let body = request_body(&req, "llama3.2").expect("body");
        assert_eq!(body["model"], "llama3.2");
        assert_eq!(body["stream"], true);
        assert_eq!(body["messages"][0]["images"][0], "/9j/4A");
        assert_eq!(
            body["messages"][1]["tool_calls"][0]["function"]["arguments"]["a"],
            2
        );
        assert_eq!(body["messages"][2]["role"], "tool");
        assert_eq!(body["options"]["num_predict"], 64);
        assert_eq!(body["format"], "json");
        assert_eq!(body["tools"][0]["function"]["name"], "f");
    }

    #[test]
    fn ndjson_stream_becomes_openai_chunks() {
        let text = "{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.385406455-07:00\",\"message\":{\"role\":\"assistant\",\"content\":\"The\"},\"done\":false}\n\
{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.4Z\",\"message\":{\"role\":\"assistant\",\"content\":\" sky\"},\"done\":false}\n\
{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T19:22:45.499127Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"total_duration\":8113331500,\"load_duration\":6396458,\"prompt_eval_count\":61,\"prompt_eval_duration\":398801000,\"eval_count\":468,\"eval_duration\":7701267000}\n";
        let req = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"q"}],"stream":true}"#,
        )
        .expect("parse");
        let mut d = Ollama.chat_stream(&req, &meta());
        let mut out = Vec::new();
        for piece in text.as_bytes().chunks(11) {
            d.push(piece, &mut out).expect("push");
        }
        d.finish(&mut out).expect("finish");
        let texts: Vec<String> = out
            .iter()
            .filter_map(|e| match e {
                Emit::Chunk { json, .. } => {
                    let v: Value = serde_json::from_slice(json).ok()?;
                    v["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_owned)
                }
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["The", " sky"]);
        assert!(out.contains(&Emit::Finish("stop".into())));
        assert!(out.contains(&Emit::Usage(Usage::new(61, 468, 0))));
        assert_eq!(out.last(), Some(&Emit::Done));
    }

    #[test]
    fn an_error_line_mid_stream_fails_it() {
        let req = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"q"}],"stream":true}"#,
        )
        .expect("parse");
        let mut d = Ollama.chat_stream(&req, &meta());
        let mut out = Vec::new();
        let e = d
            .push(
                b"{\"message\":{\"content\":\"a\"},\"done\":false}\n{\"error\":\"out of memory\"}\n",
                &mut out,
            )
            .expect_err("error line");
        assert_eq!(e, DecodeError::Upstream("out of memory".into()));
    }

    #[test]
    fn tool_calls_get_string_arguments() {
        let body = br#"{"model":"m","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Quito"}}}]},"done":true,"done_reason":"stop","prompt_eval_count":5,"eval_count":4}"#;
        let req =
            ChatRequest::parse(br#"{"model":"m","messages":[{"role":"user","content":"q"}]}"#)
                .expect("parse");
        let whole = Ollama.chat_whole(&req, &meta(), body).expect("whole");
        let v: Value = serde_json::from_slice(&whole.body).expect("json");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        let args = v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .expect("string");
        assert_eq!(
            serde_json::from_str::<Value>(args).expect("json")["city"],
            "Quito"
        );
        assert_eq!(v["usage"]["total_tokens"], 9);
    }
}
