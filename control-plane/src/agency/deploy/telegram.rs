//! Telegram through the Bot API: `sendMessage` for text, `sendPhoto` for one image with its
//! caption, `sendMediaGroup` for 2 to 10 images with the caption on the first. Length limits
//! are checked before sending (4096 for text, 1024 for a caption, counted as Telegram counts:
//! UTF-16 units). The chat comes from the deliverable, else the tenant's settings, else
//! `DEFAULT_TELEGRAM_CHAT_ID`; a `migrate_to_chat_id` answer is followed once. The token lives
//! only in the URL built at send time.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::config::TelegramConfig;
use super::http;
use super::{Channel, Content, Probe, Shared, media_urls, meta_str};
use crate::agency::orders::Order;
use crate::agency::outbox::{Sent, Verdict};
use crate::model::Tenant;

pub const MAX_TEXT: usize = 4096;
pub const MAX_CAPTION: usize = 1024;
const MAX_ALBUM: usize = 10;

/// A chat id as Telegram takes it: a number, or `@channelusername`.
fn chat_value(text: &str) -> Option<Value> {
    let text = text.trim();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i64>().ok().map(|n| json!(n));
    }
    let name = text.strip_prefix('@')?;
    let ok = (5..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ok.then(|| json!(text))
}

fn setting(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn units(text: &str) -> usize {
    text.encode_utf16().count()
}

pub(super) fn content(
    config: &TelegramConfig,
    order: &Order,
    tenant: Option<&Tenant>,
) -> Result<Content, String> {
    let (chat, source) = if let Some(c) =
        setting(order.deliverable_metadata.get("telegram_chat_id"))
    {
        (c, "deliverable")
    } else if let Some(c) = tenant.and_then(|t| setting(t.settings.get("telegram_chat_id"))) {
        (c, "tenant")
    } else if let Some(c) = &config.default_chat_id {
        (c.clone(), "default")
    } else {
        return Err("no Telegram chat to send to: set deliverable_metadata.telegram_chat_id, the tenant's settings.telegram_chat_id, or DEFAULT_TELEGRAM_CHAT_ID".into());
    };
    let chat_id = chat_value(&chat).ok_or_else(|| {
        format!(
            "the Telegram chat id from the {source} ({}) is neither a number nor @channelusername",
            http::excerpt(&chat)
        )
    })?;
    let text = meta_str(order, "text");
    let caption = meta_str(order, "caption").or(text);
    let media = media_urls(order, MAX_ALBUM)?;
    let (method, body) = match media.len() {
        0 => {
            let text = text.ok_or("deliverable_metadata.text (the message) is missing")?;
            if units(text) > MAX_TEXT {
                return Err(format!(
                    "the message has {} characters; Telegram takes at most {MAX_TEXT}",
                    units(text)
                ));
            }
            ("sendMessage", json!({ "chat_id": chat_id, "text": text }))
        }
        n => {
            if let Some(c) = caption
                && units(c) > MAX_CAPTION
            {
                return Err(format!(
                    "the caption has {} characters; Telegram takes at most {MAX_CAPTION} (set deliverable_metadata.caption)",
                    units(c)
                ));
            }
            if n == 1 {
                let mut body = json!({ "chat_id": chat_id, "photo": media[0] });
                if let Some(c) = caption {
                    body["caption"] = json!(c);
                }
                ("sendPhoto", body)
            } else {
                let items: Vec<Value> = media
                    .iter()
                    .enumerate()
                    .map(|(i, url)| {
                        let mut item = json!({ "type": "photo", "media": url });
                        if i == 0
                            && let Some(c) = caption
                        {
                            item["caption"] = json!(c);
                        }
                        item
                    })
                    .collect();
                (
                    "sendMediaGroup",
                    json!({ "chat_id": chat_id, "media": items }),
                )
            }
        }
    };
    let mut details = Map::new();
    details.insert("chat_id".into(), json!(chat.trim()));
    details.insert("chat_id_source".into(), json!(source));
    details.insert("method".into(), json!(method));
    Ok(Content {
        body: json!({ "method": method, "body": body }),
        hashed: None,
        details,
        display_url: format!("{}/bot<token>/{method}", config.base_url),
    })
}

fn url(shared: &Shared, method: &str) -> String {
    let token = shared
        .config
        .telegram
        .token
        .as_ref()
        .map(|t| t.expose())
        .unwrap_or_default();
    format!("{}/bot{token}/{method}", shared.config.telegram.base_url)
}

/// The message ids of a `Message` or of an array of them.
fn message_ids(result: &Value) -> Vec<i64> {
    match result {
        Value::Array(items) => items
            .iter()
            .filter_map(|m| m["message_id"].as_i64())
            .collect(),
        m => m["message_id"].as_i64().into_iter().collect(),
    }
}

fn chat_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) async fn send(shared: &Shared, content: &Value) -> Sent {
    let method = content["method"].as_str().unwrap_or("sendMessage");
    if !matches!(method, "sendMessage" | "sendPhoto" | "sendMediaGroup") {
        return Sent {
            status: None,
            verdict: Verdict::Failed,
            error: Some(format!("unknown Telegram method {method}")),
            result: None,
        };
    }
    let mut body = content["body"].clone();
    let mut migrated: Option<(Value, Value)> = None;
    loop {
        let request = shared.client.post(url(shared, method)).json(&body);
        let answer = match http::call(request, shared.config.timeout).await {
            Ok(a) => a,
            Err(e) => {
                return Sent {
                    status: None,
                    verdict: Verdict::Retry(None),
                    error: Some(format!("Telegram: {e}")),
                    result: None,
                };
            }
        };
        let status = answer.status;
        let envelope = answer.json().unwrap_or(Value::Null);
        let mut result = json!({ "chat_id": chat_text(&body["chat_id"]) });
        if let Some((from, to)) = &migrated {
            result["migrated_from"] = json!(chat_text(from));
            result["migrate_to_chat_id"] = json!(chat_text(to));
        }
        if envelope["ok"] == true {
            result["message_ids"] = json!(message_ids(&envelope["result"]));
            return Sent {
                status: Some(status),
                verdict: Verdict::Delivered,
                error: None,
                result: Some(result),
            };
        }
        let description = envelope["description"]
            .as_str()
            .map(http::excerpt)
            .unwrap_or_else(|| answer.excerpt());
        let parameters = &envelope["parameters"];
        if let Some(to) = parameters.get("migrate_to_chat_id").filter(|v| v.is_i64())
            && migrated.is_none()
        {
            tracing::info!(
                from = %chat_text(&body["chat_id"]), to = %to,
                "deploy: the Telegram group became a supergroup; sending to its new chat id"
            );
            migrated = Some((body["chat_id"].clone(), to.clone()));
            body["chat_id"] = to.clone();
            continue;
        }
        let (verdict, error) = match status {
            429 => {
                let after = parameters["retry_after"]
                    .as_u64()
                    .map(std::time::Duration::from_secs)
                    .or_else(|| answer.retry_after())
                    .map(|d| d.min(http::MAX_RETRY_AFTER));
                shared.note_rate(Channel::Telegram, |r| {
                    r.remaining = Some(0);
                    r.reset_at = after.map(|a| OffsetDateTime::now_utc() + a);
                });
                (
                    Verdict::Retry(after),
                    format!("Telegram's flood limit was reached ({description})"),
                )
            }
            401 => (
                Verdict::Failed,
                format!("Telegram refused the bot token ({description}); check TELEGRAM_BOT_TOKEN"),
            ),
            400 if description.to_lowercase().contains("chat not found") => (
                Verdict::Failed,
                format!(
                    "Telegram: chat not found (chat_id {}); check the chat id and that the bot is a member of the chat",
                    chat_text(&body["chat_id"])
                ),
            ),
            403 => (Verdict::Failed, format!("Telegram refused ({description})")),
            408 | 500..=599 => (
                Verdict::Retry(answer.retry_after()),
                format!("Telegram answered {status}: {description}"),
            ),
            _ => (
                Verdict::Failed,
                format!("Telegram refused the message ({status}: {description})"),
            ),
        };
        return Sent {
            status: Some(status),
            verdict,
            error: Some(error),
            result: Some(result),
        };
    }
}

pub(super) async fn probe(shared: &Shared) -> Probe {
    let request = shared.client.get(url(shared, "getMe"));
    let answer = match shared.probe_call(request, "Telegram").await {
        Ok(answer) => answer,
        Err(probe) => return probe,
    };
    let json = answer.json().unwrap_or(Value::Null);
    if json["ok"] == true {
        return Probe {
            bot: json["result"]["username"].as_str().map(str::to_owned),
            ..Probe::default()
        };
    }
    let problem = match answer.status {
        401 | 404 => (
            "misconfigured",
            "Telegram refused the bot token; check TELEGRAM_BOT_TOKEN".to_owned(),
        ),
        s => ("unreachable", format!("Telegram answered {s} to getMe")),
    };
    Probe {
        problem: Some(problem),
        ..Probe::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_ids_are_numbers_or_channel_names() {
        assert_eq!(chat_value("-1001234567890"), Some(json!(-1001234567890i64)));
        assert_eq!(chat_value("42"), Some(json!(42)));
        assert_eq!(chat_value("@axon_news"), Some(json!("@axon_news")));
        for bad in [
            "",
            "-",
            "@ab",
            "12a",
            "@1abcde",
            "@abc/../x",
            "99999999999999999999999",
        ] {
            assert_eq!(chat_value(bad), None, "{bad}");
        }
        // Telegram counts UTF-16 units: an emoji is two.
        assert_eq!(units("🚀"), 2);
    }
}
