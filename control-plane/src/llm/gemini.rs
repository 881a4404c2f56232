//! Google Gemini's native API: `generateContent`, `streamGenerateContent?alt=sse` (each event
//! a whole `GenerateContentResponse`, frames often CRLF-terminated, no `[DONE]`: the body's
//! end ends the stream) and `batchEmbedContents`. Roles are `user` / `model`; the system
//! prompt is `systemInstruction`; tools are `functionDeclarations`; tool results go back as
//! `functionResponse` parts.

use serde::Deserialize;
use serde_json::{Value, json};

use super::framing::{Framed, SseSplitter};
use super::provider::{
    AnswerMeta, ChatDecoder, DecodeError, Emit, LlmProvider, ProviderKind, Whole, unsupported,
};
use super::transport::HttpCall;
use super::wire::{
    Assembled, ChatRequest, ChoiceOut, ChunkOut, DeltaOut, EmbeddingsRequest, FunctionCall,
    LlmError, SamplingNames, ToolCallDelta, Usage,
};

#[derive(Default)]
pub struct Gemini;

/// A `data:` URL's media type and base64 payload.
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (mime, data) = rest.split_once(";base64,")?;
    Some((mime, data))
}

fn request_body(req: &ChatRequest) -> Result<Value, LlmError> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Tool results name the call by id; Gemini wants the function's name.
    let mut call_names = std::collections::HashMap::new();
    for m in &req.messages {
        let text = m.content.as_ref().map(|c| c.text()).unwrap_or_default();
        match m.role.as_str() {
            "system" | "developer" => system.push(json!({"text": text})),
            "user" => {
                let mut parts = Vec::new();
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for url in m.content.iter().flat_map(|c| c.images()) {
                    let (mime, data) = data_url(url).ok_or_else(|| {
                        LlmError::invalid(
                            "Gemini takes images as data: URLs (base64); fetch the image first",
                        )
                        .param("messages")
                    })?;
                    parts.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
                }
                contents.push(json!({"role": "user", "parts": parts}));
            }
            "assistant" => {
                let mut parts = Vec::new();
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for call in &m.tool_calls {
                    call_names.insert(call.id.clone(), call.function.name.clone());
                    let args: Value = serde_json::from_str(&call.function.arguments)
                        .unwrap_or_else(|_| json!({}));
                    parts.push(json!({"functionCall": {"name": call.function.name, "args": args}}));
                }
                contents.push(json!({"role": "model", "parts": parts}));
            }
            "tool" | "function" => {
                let name = m
                    .tool_call_id
                    .as_ref()
                    .and_then(|id| call_names.get(id))
                    .cloned()
                    .or_else(|| m.name.clone())
                    .unwrap_or_default();
                let response: Value =
                    serde_json::from_str(&text).unwrap_or_else(|_| json!({"content": text}));
                let response = if response.is_object() {
                    response
                } else {
                    json!({"content": response})
                };
                contents.push(json!({"role": "user", "parts": [
                    {"functionResponse": {"name": name, "response": response}}
                ]}));
            }
            other => {
                return Err(
                    LlmError::invalid(format!("message role '{other}' is not known"))
                        .param("messages"),
                );
            }
        }
    }
    let mut config = req.sampling(&SamplingNames {
        temperature: "temperature",
        top_p: "topP",
        max_tokens: "maxOutputTokens",
        stop: "stopSequences",
        n: Some("candidateCount"),
        seed: "seed",
        presence_penalty: "presencePenalty",
        frequency_penalty: "frequencyPenalty",
    });
    if let Some(format) = &req.response_format {
        match format.kind.as_str() {
            "json_object" => {
                config.insert("responseMimeType".into(), "application/json".into());
            }
            "json_schema" => {
                config.insert("responseMimeType".into(), "application/json".into());
                if let Some(schema) = format.json_schema.as_ref().and_then(|s| s.schema.clone()) {
                    config.insert("responseJsonSchema".into(), schema);
                }
            }
            _ => {}
        }
    }
    let mut body = json!({"contents": contents});
    if !system.is_empty() {
        body["systemInstruction"] = json!({"parts": system});
    }
    if !config.is_empty() {
        body["generationConfig"] = Value::Object(config);
    }
    if !req.tools.is_empty() {
        let declarations: Vec<Value> = req
            .tools
            .iter()
            .map(|t| serde_json::to_value(&t.function).unwrap_or_default())
            .collect();
        body["tools"] = json!([{"functionDeclarations": declarations}]);
    }
    if let Some(choice) = &req.tool_choice {
        let config = match choice {
            Value::String(s) if s == "none" => json!({"mode": "NONE"}),
            Value::String(s) if s == "required" => json!({"mode": "ANY"}),
            Value::Object(o) => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .cloned()
                    .unwrap_or_default();
                json!({"mode": "ANY", "allowedFunctionNames": [name]})
            }
            _ => json!({"mode": "AUTO"}),
        };
        body["toolConfig"] = json!({"functionCallingConfig": config});
    }
    Ok(body)
}

impl LlmProvider for Gemini {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Gemini
    }

    fn check_chat(&self, req: &ChatRequest) -> Result<(), LlmError> {
        if req.n.is_some_and(|n| n > 1) && req.stream {
            return Err(unsupported(self.kind(), "n > 1 with stream"));
        }
        Ok(())
    }

    fn chat_call(&self, req: &ChatRequest, model: &str) -> Result<HttpCall, LlmError> {
        let body = serde_json::to_vec(&request_body(req)?).unwrap_or_default();
        let model = model_path(model)?;
        let path = if req.stream {
            format!("/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("/models/{model}:generateContent")
        };
        Ok(HttpCall::post(path, body))
    }

    fn chat_stream(&self, _req: &ChatRequest, meta: &AnswerMeta) -> Box<dyn ChatDecoder> {
        Box::new(StreamDecoder {
            sse: SseSplitter::default(),
            events: Vec::new(),
            meta: meta.clone(),
            state: Translate::default(),
        })
    }

    fn chat_whole(
        &self,
        _req: &ChatRequest,
        meta: &AnswerMeta,
        body: &[u8],
    ) -> Result<Whole, DecodeError> {
        let response: Response = serde_json::from_slice(body)
            .map_err(|e| DecodeError::Malformed(format!("generateContent answer: {e}")))?;
        let mut state = Translate::default();
        let mut answer = Assembled::default();
        state.read(&response, |piece| match piece {
            Piece::Text(t) => answer.content.push_str(t),
            Piece::Thought(t) => answer.reasoning.push_str(t),
            Piece::Call(c) => answer.tool_calls.push(c),
        })?;
        answer.finish_reason = state.finish.clone();
        let usage = state.usage.unwrap_or_default();
        Ok(Whole {
            body: answer.completion(&meta.id, meta.created, &meta.model, usage),
            usage: state.usage,
            text: answer.content.len() + answer.reasoning.len(),
            finish: state.finish.or(Some("stop".into())),
        })
    }

    fn embed_call(&self, req: &EmbeddingsRequest, model: &str) -> Result<HttpCall, LlmError> {
        let model = model_path(model)?;
        let mut requests = Vec::new();
        for text in req.input.list() {
            let mut one =
                json!({"model": format!("models/{model}"), "content": {"parts": [{"text": text}]}});
            if let Some(d) = req.dimensions {
                one["outputDimensionality"] = d.into();
            }
            requests.push(one);
        }
        Ok(HttpCall::post(
            format!("/models/{model}:batchEmbedContents"),
            serde_json::to_vec(&json!({"requests": requests})).unwrap_or_default(),
        ))
    }

    fn embed_whole(&self, model: &str, body: &[u8]) -> Result<Whole, DecodeError> {
        #[derive(Deserialize)]
        struct Batch {
            embeddings: Vec<Values>,
        }
        #[derive(Deserialize)]
        struct Values {
            values: Vec<f64>,
        }
        let batch: Batch = serde_json::from_slice(body)
            .map_err(|e| DecodeError::Malformed(format!("batchEmbedContents answer: {e}")))?;
        let data: Vec<Value> = batch
            .embeddings
            .into_iter()
            .enumerate()
            .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e.values}))
            .collect();
        Ok(Whole {
            body: serde_json::to_vec(&json!({"object": "list", "data": data, "model": model}))
                .unwrap_or_default(),
            usage: None,
            finish: Some("stop".into()),
            text: 0,
        })
    }
}

/// A model name as a path segment: Gemini's names are `[a-z0-9.-]`, never a path.
fn model_path(model: &str) -> Result<&str, LlmError> {
    let model = model.strip_prefix("models/").unwrap_or(model);
    if model.is_empty()
        || !model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(
            LlmError::invalid(format!("'{model}' is not a Gemini model name")).param("model"),
        );
    }
    Ok(model)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<ResponsePart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponsePart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<GeminiCall>,
}

#[derive(Deserialize)]
struct GeminiCall {
    name: String,
    #[serde(default)]
    args: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
}

enum Piece<'a> {
    Text(&'a str),
    Thought(&'a str),
    Call(ToolCallDelta),
}

/// Translation state shared by the streamed and the whole answer.
#[derive(Default)]
struct Translate {
    calls: u32,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl Translate {
    fn read<'a>(
        &mut self,
        response: &'a Response,
        mut piece: impl FnMut(Piece<'a>),
    ) -> Result<(), DecodeError> {
        if let Some(error) = &response.error {
            let message = error
                .get("message")
                .and_then(|m| m.as_str())
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(DecodeError::Upstream(message));
        }
        if let Some(u) = &response.usage_metadata {
            self.usage = Some(Usage::new(
                u.prompt_token_count,
                u.candidates_token_count
                    .saturating_add(u.thoughts_token_count),
                u.cached_content_token_count,
            ));
        }
        if response
            .prompt_feedback
            .as_ref()
            .is_some_and(|f| f.block_reason.is_some())
        {
            self.finish = Some("content_filter".into());
        }
        for candidate in response.candidates.iter().take(1) {
            for part in candidate.content.iter().flat_map(|c| &c.parts) {
                if let Some(call) = &part.function_call {
                    let index = self.calls;
                    self.calls += 1;
                    piece(Piece::Call(ToolCallDelta {
                        index,
                        id: format!("call_{index}"),
                        kind: "function",
                        function: FunctionCall {
                            name: call.name.clone(),
                            arguments: call.args.to_string(),
                        },
                    }));
                } else if let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) {
                    if part.thought == Some(true) {
                        piece(Piece::Thought(text));
                    } else {
                        piece(Piece::Text(text));
                    }
                }
            }
            if let Some(reason) = &candidate.finish_reason {
                self.finish = Some(
                    match reason.as_str() {
                        "STOP" if self.calls > 0 => "tool_calls",
                        "STOP" => "stop",
                        "MAX_TOKENS" => "length",
                        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII"
                        | "IMAGE_SAFETY" => "content_filter",
                        _ => "stop",
                    }
                    .to_owned(),
                );
            }
        }
        Ok(())
    }
}

struct StreamDecoder {
    sse: SseSplitter,
    events: Vec<Framed>,
    meta: AnswerMeta,
    state: Translate,
}

impl StreamDecoder {
    fn drain(&mut self, out: &mut Vec<Emit>) -> Result<(), DecodeError> {
        for event in std::mem::take(&mut self.events) {
            let data = match event {
                Framed::Data(d) => d,
                Framed::TooLarge => {
                    return Err(DecodeError::Malformed("an event is too large".into()));
                }
            };
            if data.trim().is_empty() {
                continue;
            }
            let response: Response = serde_json::from_str(&data)
                .map_err(|e| DecodeError::Malformed(format!("a stream event is not JSON: {e}")))?;
            let had_finish = self.state.finish.is_some();
            let mut delta = DeltaOut {
                role: Some("assistant"),
                ..Default::default()
            };
            let mut content = String::new();
            let mut reasoning = String::new();
            self.state.read(&response, |piece| match piece {
                Piece::Text(t) => content.push_str(t),
                Piece::Thought(t) => reasoning.push_str(t),
                Piece::Call(c) => delta.tool_calls.push(c),
            })?;
            let finish = if had_finish {
                None
            } else {
                self.state.finish.clone()
            };
            if !content.is_empty() {
                delta.content = Some(&content);
            }
            if !reasoning.is_empty() {
                delta.reasoning_content = Some(&reasoning);
            }
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
                text: content.len() + reasoning.len(),
            });
            if let Some(reason) = finish {
                out.push(Emit::Finish(reason));
            }
        }
        Ok(())
    }
}

impl ChatDecoder for StreamDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Emit>) -> Result<(), DecodeError> {
        self.sse.push(bytes, &mut self.events);
        self.drain(out)
    }

    fn finish(&mut self, out: &mut Vec<Emit>) -> Result<(), DecodeError> {
        self.sse.finish(&mut self.events);
        self.drain(out)?;
        if let Some(usage) = self.state.usage {
            out.push(Emit::Usage(usage));
        }
        // Gemini has no terminator: a body that ended after a finish reason is complete.
        if self.state.finish.is_some() {
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
            model: "gemini/gemini-2.0-flash".into(),
        }
    }

    #[test]
    fn the_request_is_translated() {
        let req = ChatRequest::parse(br#"{"model":"g","messages":[
            {"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"What is in it?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBOR"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"look","arguments":"{\"x\":1}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"{\"seen\":\"cat\"}"}
        ],"max_tokens":50,"temperature":0.3,"stop":"END","response_format":{"type":"json_object"},
        "tools":[{"type":"function","function":{"name":"look","parameters":{"type":"object"}}}],"tool_choice":"required"}"#).expect("parse");
        let body = request_body(&req).expect("body");
        assert_eq!(body["systemInstruction"]["parts"][0]["text"], "Be brief.");
        assert_eq!(body["contents"][0]["role"], "user");
        assert_eq!(
            body["contents"][0]["parts"][1]["inlineData"]["mimeType"],
            "image/png"
        );
        assert_eq!(body["contents"][1]["role"], "model");
        assert_eq!(
            body["contents"][1]["parts"][0]["functionCall"]["args"]["x"],
            1
        );
        assert_eq!(
            body["contents"][2]["parts"][0]["functionResponse"]["name"],
            "look"
        );
        assert_eq!(
            body["contents"][2]["parts"][0]["functionResponse"]["response"]["seen"],
            "cat"
        );
        assert_eq!(body["generationConfig"]["maxOutputTokens"], 50);
        assert_eq!(body["generationConfig"]["stopSequences"][0], "END");
        assert_eq!(
            body["generationConfig"]["responseMimeType"],
            "application/json"
        );
        assert_eq!(body["tools"][0]["functionDeclarations"][0]["name"], "look");
        assert_eq!(body["toolConfig"]["functionCallingConfig"]["mode"], "ANY");
        let call = Gemini.chat_call(&req, "gemini-2.0-flash").expect("call");
        assert_eq!(call.path, "/models/gemini-2.0-flash:generateContent");
        assert!(Gemini.chat_call(&req, "../x").is_err());
    }

    #[test]
    fn an_image_by_url_is_refused_clearly() {
        let req = ChatRequest::parse(br#"{"model":"g","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}]}"#).expect("parse");
        let e = request_body(&req).expect_err("refused");
        assert!(e.message.contains("data: URLs"), "{}", e.message);
    }

    #[test]
    fn crlf_stream_without_done_becomes_openai_chunks() {
        let text = "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hi\"}]},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":1,\"totalTokenCount\":4},\"modelVersion\":\"gemini-2.0-flash\"}\r\n\r\n\
data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"!\"}]},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2,\"totalTokenCount\":5,\"cachedContentTokenCount\":1}}\r\n\r\n";
        let req = ChatRequest::parse(
            br#"{"model":"g","messages":[{"role":"user","content":"q"}],"stream":true}"#,
        )
        .expect("parse");
        let mut d = Gemini.chat_stream(&req, &meta());
        let mut out = Vec::new();
        for piece in text.as_bytes().chunks(5) {
            d.push(piece, &mut out).expect("push");
        }
        d.finish(&mut out).expect("finish");
        let chunks: Vec<Value> = out
            .iter()
            .filter_map(|e| match e {
                Emit::Chunk { json, .. } => serde_json::from_slice(json).ok(),
                _ => None,
            })
            .collect();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "!");
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], "stop");
        assert!(out.contains(&Emit::Finish("stop".into())));
        assert!(out.contains(&Emit::Usage(Usage::new(3, 2, 1))));
        assert_eq!(out.last(), Some(&Emit::Done));
    }

    #[test]
    fn a_stream_cut_before_its_finish_has_no_done() {
        let text = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}]}\r\n\r\n";
        let req = ChatRequest::parse(
            br#"{"model":"g","messages":[{"role":"user","content":"q"}],"stream":true}"#,
        )
        .expect("parse");
        let mut d = Gemini.chat_stream(&req, &meta());
        let mut out = Vec::new();
        d.push(text.as_bytes(), &mut out).expect("push");
        d.finish(&mut out).expect("finish");
        assert!(!out.contains(&Emit::Done));
    }

    #[test]
    fn function_calls_and_safety() {
        let body = br#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Lima"}}}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3}}"#;
        let req =
            ChatRequest::parse(br#"{"model":"g","messages":[{"role":"user","content":"q"}]}"#)
                .expect("parse");
        let whole = Gemini.chat_whole(&req, &meta(), body).expect("whole");
        let v: Value = serde_json::from_slice(&whole.body).expect("json");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().expect("string"))
                .expect("args");
        assert_eq!(args["city"], "Lima");
        let blocked = br#"{"candidates":[{"content":{"parts":[]},"finishReason":"SAFETY"}]}"#;
        let whole = Gemini.chat_whole(&req, &meta(), blocked).expect("whole");
        assert_eq!(whole.finish.as_deref(), Some("content_filter"));
    }
}
