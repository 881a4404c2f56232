//! WhatsApp through n8n: one POST of the documented payload (docs/deploys.md) to the
//! workflow's webhook, with optional header auth. n8n answers auth failures in plain text
//! (401 `Authorization is required!`, 403 `Authorization data is wrong!`) and an inactive
//! workflow with a JSON 404 `... is not registered`; both fail the deploy at once.

use reqwest::header::CONTENT_TYPE;
use serde_json::{Map, Value, json};

use super::http::{self, Answer};
use super::links::{LINK_LIFETIME, Links};
use super::{Content, Shared, meta_str};
use crate::agency::book::summary;
use crate::agency::builder;
use crate::agency::orders::Order;
use crate::agency::outbox::{Delivery, Sent, Verdict};
use crate::model::{Tenant, now};

pub(super) fn content(
    shared: &Shared,
    links: &Links,
    order: &Order,
    tenant: Option<&Tenant>,
) -> Result<Content, String> {
    let url = shared.config.whatsapp.url.clone().unwrap_or_default();
    let files = builder::render_order(order)
        .map_err(|e| format!("the agent's artifacts cannot be built: {e}"))?;
    let base = shared.config.public_url.clone().unwrap_or_default();
    let expires = now() + LINK_LIFETIME;
    let token = links.token(&order.id, expires);
    let artifacts: Vec<Value> = files
        .iter()
        .map(|f| {
            json!({
                "path": f.path,
                "bytes": f.bytes.len(),
                "sha256": super::sha256_hex(&f.bytes),
                "url": format!("{base}/api/artifacts/{token}?file={}", encode(&f.path)),
            })
        })
        .collect();
    let mut order_summary = summary(order);
    if let Value::Object(map) = &mut order_summary {
        // The version moves with every write (deploy events too): not part of the content.
        map.remove("version");
    }
    let body = json!({
        "event": "deploy.whatsapp",
        "tenant": tenant.map(|t| json!({"id": t.id, "slug": t.slug, "name": t.name})),
        "order": order_summary,
        "agent_blueprint": order.agent_blueprint,
        "whatsapp": {
            "number": meta_str(order, "whatsapp_number"),
            "text": meta_str(order, "text"),
        },
        "artifacts": artifacts,
        "archive_url": format!("{base}/api/artifacts/{token}"),
        "links_expire_at": expires
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    });
    // The hash must not change with the link's expiry: hash what the links point at.
    let mut hashed = body.clone();
    if let Value::Object(map) = &mut hashed {
        map.remove("archive_url");
        map.remove("links_expire_at");
        if let Some(Value::Array(items)) = map.get_mut("artifacts") {
            for item in items {
                if let Value::Object(i) = item {
                    i.remove("url");
                }
            }
        }
    }
    let mut details = Map::new();
    details.insert("artifacts".into(), json!(files.len()));
    Ok(Content {
        body,
        hashed: Some(hashed),
        details,
        display_url: url,
    })
}

/// Percent-encodes a path for a query value.
fn encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) async fn send(shared: &Shared, delivery: &Delivery, content: &Value) -> Sent {
    let config = &shared.config;
    let Some(url) = &config.whatsapp.url else {
        return Sent {
            status: None,
            verdict: Verdict::Failed,
            error: Some("the WhatsApp channel has no webhook URL".into()),
            result: None,
        };
    };
    let mut request = shared
        .client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", &delivery.idempotency_key)
        .header("X-Axon-Delivery", &delivery.id)
        .header("X-Axon-Event", "deploy.whatsapp")
        .body(serde_json::to_vec(content).unwrap_or_default());
    if let Some((name, value)) = &config.whatsapp.header {
        request = request.header(name.as_str(), value.expose());
    }
    match http::call(request, config.timeout).await {
        Ok(answer) => classify(&answer),
        Err(e) => Sent {
            status: None,
            verdict: Verdict::Retry(None),
            error: Some(format!("n8n: {e}")),
            result: None,
        },
    }
}

/// n8n's answer as an outcome.
pub(super) fn classify(answer: &Answer) -> Sent {
    let status = answer.status;
    let json = answer.json();
    let text = answer.excerpt();
    let message = json
        .as_ref()
        .and_then(|j| j.get("message"))
        .and_then(Value::as_str)
        .map(http::excerpt)
        .unwrap_or_else(|| text.clone());
    let result = |extra: Value| {
        let mut r = json!({ "n8n_status": status });
        if let (Value::Object(r), Value::Object(extra)) = (&mut r, extra) {
            r.extend(extra);
        }
        Some(r)
    };
    let (verdict, error) = match status {
        200..=299 => {
            let response = json.clone().unwrap_or_else(|| json!(text));
            return Sent {
                status: Some(status),
                verdict: Verdict::Delivered,
                error: None,
                result: result(json!({ "n8n_response": response })),
            };
        }
        401 | 403 => (
            Verdict::Failed,
            format!(
                "n8n refused the credentials ({status}: {message}); check N8N_WHATSAPP_DEPLOY_HEADER_NAME and N8N_WHATSAPP_DEPLOY_HEADER_VALUE against the webhook's Header Auth"
            ),
        ),
        404 if text.contains("is not registered") => {
            let hint = json
                .as_ref()
                .and_then(|j| j.get("hint"))
                .and_then(Value::as_str)
                .map(|h| format!(" n8n says: {}", http::excerpt(h)))
                .unwrap_or_default();
            (
                Verdict::Failed,
                format!(
                    "n8n: the webhook is not registered — is the WhatsApp deploy workflow active? ({message}){hint}"
                ),
            )
        }
        408 | 429 | 500..=599 => (
            Verdict::Retry(answer.retry_after()),
            format!("n8n answered {status}: {message}"),
        ),
        _ => (
            Verdict::Failed,
            format!("n8n refused the deploy ({status}: {message})"),
        ),
    };
    Sent {
        status: Some(status),
        verdict,
        error: Some(error),
        result: result(json!({})),
    }
}
