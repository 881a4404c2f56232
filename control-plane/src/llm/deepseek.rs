//! DeepSeek: OpenAI's wire format with its own turns. `reasoning_content` streams before the
//! answer and is relayed; `: keep-alive` comments under load are skipped by the event splitter
//! (and count as life for the idle timeout); usage names cache hits
//! `prompt_cache_hit_tokens`. A previous turn's `reasoning_content` must not be sent back (the
//! API refuses it), so it is removed from the history; images and JSON schemas are refused.

use super::openai::{SseDecoder, whole_completion};
use super::provider::{
    AnswerMeta, ChatDecoder, DecodeError, LlmProvider, ProviderKind, Whole, unsupported,
};
use super::transport::HttpCall;
use super::wire::{ChatRequest, LlmError};

#[derive(Default)]
pub struct DeepSeek;

impl LlmProvider for DeepSeek {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Deepseek
    }

    fn check_chat(&self, req: &ChatRequest) -> Result<(), LlmError> {
        if req.has_images {
            return Err(unsupported(self.kind(), "image input"));
        }
        if req
            .response_format
            .as_ref()
            .is_some_and(|f| f.kind == "json_schema")
        {
            return Err(unsupported(
                self.kind(),
                "response_format json_schema (json_object is)",
            ));
        }
        Ok(())
    }

    fn chat_call(&self, req: &ChatRequest, model: &str) -> Result<HttpCall, LlmError> {
        let carries_reasoning = req
            .fields
            .get("messages")
            .is_some_and(|m| m.get().contains("\"reasoning_content\""));
        if !carries_reasoning {
            return Ok(HttpCall::post(
                "/chat/completions",
                req.passthrough_body(model, &[]),
            ));
        }
        let mut messages: Vec<serde_json::Map<String, serde_json::Value>> = req
            .fields
            .get("messages")
            .and_then(|m| serde_json::from_str(m.get()).ok())
            .unwrap_or_default();
        for m in &mut messages {
            m.remove("reasoning_content");
        }
        let mut body: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&req.passthrough_body(model, &["messages"]))
                .map_err(|e| LlmError::invalid(format!("cannot rewrite the request: {e}")))?;
        body.insert("messages".into(), messages.into());
        Ok(HttpCall::post(
            "/chat/completions",
            serde_json::to_vec(&body).unwrap_or_default(),
        ))
    }

    fn chat_stream(&self, _req: &ChatRequest, _meta: &AnswerMeta) -> Box<dyn ChatDecoder> {
        Box::new(SseDecoder::default())
    }

    fn chat_whole(
        &self,
        _req: &ChatRequest,
        _meta: &AnswerMeta,
        body: &[u8],
    ) -> Result<Whole, DecodeError> {
        // Under load DeepSeek pads a held non-streamed answer with blank lines.
        let start = body
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(body.len());
        whole_completion(&body[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::super::provider::Emit;
    use super::super::wire::Usage;
    use super::*;

    #[test]
    fn reasoning_history_is_dropped_and_the_rest_kept() {
        let req = ChatRequest::parse(br#"{"model":"deepseek/deepseek-reasoner","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b","reasoning_content":"thinking"},{"role":"user","content":"c"}],"temperature":0.5}"#).expect("parse");
        let call = DeepSeek.chat_call(&req, "deepseek-reasoner").expect("call");
        let body: serde_json::Value =
            serde_json::from_slice(&call.body.expect("body")).expect("json");
        assert_eq!(body["model"], "deepseek-reasoner");
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["messages"][1]["content"], "b");
        assert!(body["messages"][1].get("reasoning_content").is_none());
        assert_eq!(call.path, "/chat/completions");
    }

    #[test]
    fn keep_alives_reasoning_and_cache_hits() {
        let text = ": keep-alive\n\n: keep-alive\n\n\
data: {\"id\":\"d\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"Let me\"},\"finish_reason\":null}]}\n\n\
: keep-alive\n\n\
data: {\"id\":\"d\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"42\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15,\"prompt_cache_hit_tokens\":8,\"prompt_cache_miss_tokens\":2}}\n\n\
data: [DONE]\n\n";
        let req = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"q"}],"stream":true}"#,
        )
        .expect("parse");
        let meta = AnswerMeta {
            id: "x".into(),
            created: 0,
            model: "m".into(),
        };
        let mut d = DeepSeek.chat_stream(&req, &meta);
        let mut out = Vec::new();
        d.push(text.as_bytes(), &mut out).expect("push");
        d.finish(&mut out).expect("finish");
        assert!(matches!(out[0], Emit::Chunk { text: 6, .. }));
        assert!(matches!(out[1], Emit::Chunk { text: 2, .. }));
        assert_eq!(out[2], Emit::Finish("stop".into()));
        assert_eq!(out[3], Emit::Usage(Usage::new(10, 5, 8)));
        assert_eq!(out[4], Emit::Done);
    }

    #[test]
    fn a_padded_whole_answer_is_read() {
        let req =
            ChatRequest::parse(br#"{"model":"m","messages":[{"role":"user","content":"q"}]}"#)
                .expect("parse");
        let meta = AnswerMeta {
            id: "x".into(),
            created: 0,
            model: "m".into(),
        };
        let body = b"\n\n\n{\"id\":\"d\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"hi\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}";
        let whole = DeepSeek.chat_whole(&req, &meta, body).expect("whole");
        assert_eq!(whole.usage, Some(Usage::new(3, 1, 0)));
        assert_eq!(whole.finish.as_deref(), Some("stop"));
    }
}
