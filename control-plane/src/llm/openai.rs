//! OpenAI and every OpenAI-compatible server (vLLM, llama.cpp server, LM Studio): the request
//! passes through with the model name edited, and streamed events are relayed as they are,
//! read only for what metering needs (usage, finish reason, errors).

use serde::Deserialize;

use super::framing::{Framed, SseSplitter};
use super::provider::{
    AnswerMeta, ChatDecoder, DecodeError, Emit, LlmProvider, ProviderKind, Whole,
};
use super::transport::HttpCall;
use super::wire::{ChatRequest, EmbeddingsRequest, LlmError, UpstreamUsage};

/// Paths under the base URL (which ends in `/v1` for OpenAI).
pub struct OpenAi {
    pub chat_path: &'static str,
}

impl Default for OpenAi {
    fn default() -> Self {
        Self {
            chat_path: "/chat/completions",
        }
    }
}

impl LlmProvider for OpenAi {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Openai
    }

    fn check_chat(&self, _req: &ChatRequest) -> Result<(), LlmError> {
        Ok(())
    }

    fn chat_call(&self, req: &ChatRequest, model: &str) -> Result<HttpCall, LlmError> {
        Ok(HttpCall::post(
            self.chat_path,
            req.passthrough_body(model, &[]),
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
        whole_completion(body)
    }

    fn embed_call(&self, req: &EmbeddingsRequest, model: &str) -> Result<HttpCall, LlmError> {
        let mut body = serde_json::json!({"model": model, "input": req.input.list()});
        if let Some(d) = req.dimensions {
            body["dimensions"] = d.into();
        }
        if let Some(f) = &req.encoding_format {
            body["encoding_format"] = f.as_str().into();
        }
        Ok(HttpCall::post(
            "/embeddings",
            serde_json::to_vec(&body).unwrap_or_default(),
        ))
    }

    fn embed_whole(&self, _model: &str, body: &[u8]) -> Result<Whole, DecodeError> {
        #[derive(Deserialize)]
        struct Peek {
            #[serde(default)]
            usage: Option<UpstreamUsage>,
            data: Vec<serde::de::IgnoredAny>,
        }
        let peek: Peek = serde_json::from_slice(body)
            .map_err(|e| DecodeError::Malformed(format!("embeddings answer: {e}")))?;
        let _ = peek.data;
        Ok(Whole {
            body: body.to_vec(),
            usage: peek.usage.map(|u| u.usage()),
            finish: Some("stop".into()),
            text: 0,
        })
    }
}

/// A whole `chat.completion`, passed through; usage and finish reason read from it.
pub fn whole_completion(body: &[u8]) -> Result<Whole, DecodeError> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        choices: Vec<PeekChoice>,
        #[serde(default)]
        usage: Option<UpstreamUsage>,
    }
    #[derive(Deserialize)]
    struct PeekChoice {
        #[serde(default)]
        finish_reason: Option<String>,
        #[serde(default)]
        message: Option<PeekMessage>,
    }
    #[derive(Deserialize)]
    struct PeekMessage {
        #[serde(default)]
        content: Option<String>,
    }
    let peek: Peek = serde_json::from_slice(body)
        .map_err(|e| DecodeError::Malformed(format!("completion: {e}")))?;
    let first = peek.choices.into_iter().next();
    Ok(Whole {
        body: body.to_vec(),
        usage: peek.usage.map(|u| u.usage()),
        text: first
            .as_ref()
            .and_then(|c| c.message.as_ref())
            .and_then(|m| m.content.as_ref())
            .map_or(0, String::len),
        finish: first.and_then(|c| c.finish_reason),
    })
}

/// Relays OpenAI-format server-sent events.
#[derive(Default)]
pub struct SseDecoder {
    sse: SseSplitter,
    events: Vec<Framed>,
}

#[derive(Deserialize)]
struct ChunkPeek<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<ChoicePeek<'a>>>,
    #[serde(default)]
    usage: Option<UpstreamUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChoicePeek<'a> {
    #[serde(default, borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<DeltaPeek<'a>>,
}

#[derive(Deserialize)]
struct DeltaPeek<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
}

impl SseDecoder {
    fn drain(&mut self, out: &mut Vec<Emit>) -> Result<(), DecodeError> {
        for event in self.events.drain(..) {
            let data = match event {
                Framed::Data(d) => d,
                Framed::TooLarge => {
                    return Err(DecodeError::Malformed("an event is too large".into()));
                }
            };
            let data = data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                out.push(Emit::Done);
                continue;
            }
            let peek: ChunkPeek = serde_json::from_str(data)
                .map_err(|e| DecodeError::Malformed(format!("a stream event is not JSON: {e}")))?;
            if let Some(error) = peek.error {
                let message = error
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map_or_else(|| error.to_string(), str::to_owned);
                return Err(DecodeError::Upstream(message));
            }
            let choices = peek.choices.unwrap_or_default();
            let mut text = 0;
            let mut finish = None;
            for choice in &choices {
                if let Some(delta) = &choice.delta {
                    text += delta.content.as_deref().map_or(0, str::len)
                        + delta.reasoning_content.as_deref().map_or(0, str::len);
                }
                if let Some(reason) = &choice.finish_reason {
                    finish = Some(reason.to_string());
                }
            }
            // The usage-only chunk is the gateway's to send (it meters every stream and sends
            // one only to clients that asked).
            if !choices.is_empty() {
                out.push(Emit::Chunk {
                    json: data.as_bytes().to_vec(),
                    text,
                });
            }
            if let Some(reason) = finish {
                out.push(Emit::Finish(reason));
            }
            if let Some(usage) = peek.usage {
                out.push(Emit::Usage(usage.usage()));
            }
        }
        Ok(())
    }
}

impl ChatDecoder for SseDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Emit>) -> Result<(), DecodeError> {
        self.sse.push(bytes, &mut self.events);
        self.drain(out)
    }

    fn finish(&mut self, out: &mut Vec<Emit>) -> Result<(), DecodeError> {
        self.sse.finish(&mut self.events);
        self.drain(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Result<Vec<Emit>, DecodeError> {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        for piece in text.as_bytes().chunks(7) {
            d.push(piece, &mut out)?;
        }
        d.finish(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_stream_is_relayed_and_metered() {
        let text = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n\
data: [DONE]\n\n";
        let out = decode(text).expect("decode");
        assert!(matches!(&out[0], Emit::Chunk { text: 2, .. }));
        assert!(matches!(&out[1], Emit::Chunk { text: 0, .. }));
        assert_eq!(out[2], Emit::Finish("stop".into()));
        assert_eq!(out[3], Emit::Usage(super::super::wire::Usage::new(9, 2, 4)));
        assert_eq!(out[4], Emit::Done);
        assert_eq!(out.len(), 5, "the usage-only chunk is not relayed as is");
    }

    #[test]
    fn malformed_events_and_error_events_fail() {
        assert!(matches!(
            decode("data: {not json\n\n"),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(
            decode("data: {\"error\":{\"message\":\"overloaded\"}}\n\n"),
            Err(DecodeError::Upstream("overloaded".into()))
        );
    }
}
