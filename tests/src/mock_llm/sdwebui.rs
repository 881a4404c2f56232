//! Automatic1111's Stable Diffusion WebUI API (shapes from github.com/AUTOMATIC1111/
//! stable-diffusion-webui `modules/api/models.py` and its wiki page "API"): base64 PNGs, the
//! request echoed as `parameters`, and `info` as a JSON *string*.

use serde_json::{Map, Value, json};

use super::behaviour::ErrorReply;
use super::wire::{Ask, Reply, hash, to_json};

/// A real 1×1 RGBA PNG (valid chunk CRCs), base64.
pub(super) const PNG_1X1: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

const MODEL: &str = "v1-5-pruned-emaonly";
const MODEL_HASH: &str = "6ce0161689";

/// `POST /sdapi/v1/txt2img`.
pub(super) fn txt2img(ask: &Ask<'_>) -> Reply {
    let request: Map<String, Value> = match serde_json::from_slice(ask.body) {
        Ok(r) => r,
        Err(e) => {
            // FastAPI rejects a body it cannot read with 422.
            return Reply::Error(ErrorReply::status(422).with_message(&e.to_string()));
        }
    };
    let mut parameters = Map::new();
    for (key, default) in [
        ("prompt", json!("")),
        ("negative_prompt", json!("")),
        ("styles", json!(null)),
        ("seed", json!(-1)),
        ("subseed", json!(-1)),
        ("sampler_name", json!(null)),
        ("batch_size", json!(1)),
        ("n_iter", json!(1)),
        ("steps", json!(50)),
        ("cfg_scale", json!(7.0)),
        ("width", json!(512)),
        ("height", json!(512)),
        ("restore_faces", json!(null)),
        ("override_settings", json!(null)),
        ("send_images", json!(true)),
        ("save_images", json!(false)),
    ] {
        parameters.insert(key.to_owned(), default);
    }
    parameters.extend(request);
    let get = |key: &str| parameters.get(key).cloned().unwrap_or(Value::Null);
    let count = |key: &str| get(key).as_u64().unwrap_or(1).clamp(1, 8) as usize;
    let images = count("batch_size") * count("n_iter");
    let prompt = get("prompt");
    let prompt_text = prompt.as_str().unwrap_or_default();
    let seed = match get("seed").as_i64() {
        Some(seed) if seed >= 0 => seed,
        _ => i64::from(hash(prompt_text) as u32),
    };
    let seeds: Vec<i64> = (0..images as i64).map(|i| seed + i).collect();
    let infotext = format!(
        "{prompt_text}\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {seed}, Size: {}x{}, \
         Model hash: {MODEL_HASH}, Model: {MODEL}",
        get("steps"),
        get("sampler_name").as_str().unwrap_or("Euler"),
        get("cfg_scale"),
        get("width"),
        get("height"),
    );
    let info = json!({
        "prompt": prompt,
        "all_prompts": vec![prompt.clone(); images],
        "negative_prompt": get("negative_prompt"),
        "all_negative_prompts": vec![get("negative_prompt"); images],
        "seed": seed,
        "all_seeds": seeds,
        "subseed": seed,
        "all_subseeds": seeds,
        "width": get("width"),
        "height": get("height"),
        "sampler_name": get("sampler_name").as_str().unwrap_or("Euler"),
        "cfg_scale": get("cfg_scale"),
        "steps": get("steps"),
        "batch_size": count("batch_size"),
        "sd_model_name": MODEL,
        "sd_model_hash": MODEL_HASH,
        "job_timestamp": "20250101000000",
        "index_of_first_image": 0,
        "infotexts": vec![infotext; images],
        "version": "v1.10.1",
    });
    Reply::Json(to_json(&json!({
        "images": vec![PNG_1X1; images],
        "parameters": parameters,
        "info": info.to_string(),
    })))
}

/// `GET /sdapi/v1/sd-models`.
pub(super) fn models() -> Reply {
    Reply::Json(to_json(&json!([{
        "title": format!("{MODEL}.safetensors [{MODEL_HASH}]"),
        "model_name": MODEL,
        "hash": MODEL_HASH,
        "sha256": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        "filename": format!("/models/Stable-diffusion/{MODEL}.safetensors"),
        "config": null,
    }])))
}

/// `GET /sdapi/v1/progress`: busy while a txt2img is in hand.
pub(super) fn progress(busy: usize) -> Reply {
    let (progress, eta) = if busy > 0 { (0.5, 1.0) } else { (0.0, 0.0) };
    Reply::Json(to_json(&json!({
        "progress": progress,
        "eta_relative": eta,
        "state": {
            "skipped": false,
            "interrupted": false,
            "stopping_generation": false,
            "job": if busy > 0 { "txt2img" } else { "" },
            "job_count": busy,
            "job_timestamp": "20250101000000",
            "job_no": 0,
            "sampling_step": 0,
            "sampling_steps": 0,
        },
        "current_image": null,
        "textinfo": null,
    })))
}

/// The WebUI's exception handler: `{"error","detail","body","errors"}`.
pub(super) fn error_body(error: &ErrorReply) -> Vec<u8> {
    let message = error.message.as_deref().unwrap_or(match error.status {
        401 => "Incorrect username or password",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    });
    let mut body = json!({
        "error": "HTTPException",
        "detail": message,
        "body": "",
        "errors": format!("{}: {message}", error.status),
    });
    if let Some(secs) = error.retry_after_field {
        body["retry_after"] = json!(secs);
    }
    to_json(&body)
}
