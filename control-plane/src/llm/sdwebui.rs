//! Automatic1111 / SD WebUI: `/sdapi/v1/txt2img` behind `/v1/images/generations`, answered as
//! `b64_json` (the WebUI returns base64 PNGs; serving URLs would mean storing images).

use serde::Deserialize;
use serde_json::{Value, json};

use super::provider::{
    AnswerMeta, ChatDecoder, DecodeError, LlmProvider, ProviderKind, Whole, unsupported,
};
use super::transport::HttpCall;
use super::wire::{ChatRequest, ImageRequest, LlmError, unix_now};

#[derive(Default)]
pub struct SdWebUi;

impl LlmProvider for SdWebUi {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Sdwebui
    }

    fn check_chat(&self, _req: &ChatRequest) -> Result<(), LlmError> {
        Err(unsupported(self.kind(), "chat"))
    }

    fn chat_call(&self, _req: &ChatRequest, _model: &str) -> Result<HttpCall, LlmError> {
        Err(unsupported(self.kind(), "chat"))
    }

    fn chat_stream(&self, _req: &ChatRequest, _meta: &AnswerMeta) -> Box<dyn ChatDecoder> {
        struct Never;
        impl ChatDecoder for Never {
            fn push(
                &mut self,
                _: &[u8],
                _: &mut Vec<super::provider::Emit>,
            ) -> Result<(), DecodeError> {
                Err(DecodeError::Malformed("chat is not served".into()))
            }
            fn finish(&mut self, _: &mut Vec<super::provider::Emit>) -> Result<(), DecodeError> {
                Err(DecodeError::Malformed("chat is not served".into()))
            }
        }
        Box::new(Never)
    }

    fn chat_whole(
        &self,
        _req: &ChatRequest,
        _meta: &AnswerMeta,
        _body: &[u8],
    ) -> Result<Whole, DecodeError> {
        Err(DecodeError::Malformed("chat is not served".into()))
    }

    fn image_call(&self, req: &ImageRequest, model: &str) -> Result<HttpCall, LlmError> {
        let (width, height) = req.check()?;
        let n = req.n.unwrap_or(1);
        let mut body = json!({
            "prompt": req.prompt,
            "negative_prompt": req.negative_prompt.clone().unwrap_or_default(),
            "width": width,
            "height": height,
            "batch_size": n,
            "n_iter": 1,
            "steps": req.steps.unwrap_or(25).clamp(1, 150),
        });
        if !model.is_empty() && model != "default" {
            body["override_settings"] = json!({"sd_model_checkpoint": model});
        }
        Ok(HttpCall::post(
            "/sdapi/v1/txt2img",
            serde_json::to_vec(&body).unwrap_or_default(),
        ))
    }

    fn image_whole(&self, body: &[u8]) -> Result<Whole, DecodeError> {
        #[derive(Deserialize)]
        struct Txt2Img {
            images: Vec<String>,
        }
        let answer: Txt2Img = serde_json::from_slice(body)
            .map_err(|e| DecodeError::Malformed(format!("txt2img answer: {e}")))?;
        if answer.images.is_empty() {
            return Err(DecodeError::Malformed("txt2img returned no image".into()));
        }
        let data: Vec<Value> = answer
            .images
            .into_iter()
            .map(|b64| json!({"b64_json": b64}))
            .collect();
        Ok(Whole {
            body: serde_json::to_vec(&json!({"created": unix_now(), "data": data}))
                .unwrap_or_default(),
            usage: None,
            finish: Some("stop".into()),
            text: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(body: &str) -> Result<HttpCall, LlmError> {
        let req: ImageRequest = serde_json::from_str(body).expect("request");
        SdWebUi.image_call(&req, "sd_xl_base_1.0.safetensors")
    }

    #[test]
    fn txt2img_is_asked_for_and_answered_as_b64_json() {
        let call = image(r#"{"prompt":"a red fox","size":"512x768","n":2}"#).expect("call");
        assert_eq!(call.path, "/sdapi/v1/txt2img");
        let body: Value = serde_json::from_slice(&call.body.expect("body")).expect("json");
        assert_eq!(body["width"], 512);
        assert_eq!(body["height"], 768);
        assert_eq!(body["batch_size"], 2);
        assert_eq!(
            body["override_settings"]["sd_model_checkpoint"],
            "sd_xl_base_1.0.safetensors"
        );
        let whole = SdWebUi
            .image_whole(br#"{"images":["iVBORw0KGgo="],"parameters":{},"info":"{}"}"#)
            .expect("whole");
        let v: Value = serde_json::from_slice(&whole.body).expect("json");
        assert_eq!(v["data"][0]["b64_json"], "iVBORw0KGgo=");
    }

    #[test]
    fn bad_image_requests_are_refused() {
        for (body, param) in [
            (
                r#"{"prompt":"x","response_format":"url"}"#,
                "response_format",
            ),
            (r#"{"prompt":"x","size":"1000x1000x"}"#, "size"),
            (r#"{"prompt":"x","size":"4096x4096"}"#, "size"),
            (r#"{"prompt":"x","size":"100x100"}"#, "size"),
            (r#"{"prompt":"x","n":9}"#, "n"),
            (r#"{"prompt":"  "}"#, "prompt"),
        ] {
            let e = image(body).expect_err(body);
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
    }
}
