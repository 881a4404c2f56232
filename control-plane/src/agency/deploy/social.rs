//! Social networks through Ayrshare: `POST {base}/post` with the deliverable's text,
//! platforms, media and schedule. Success only on HTTP 200 with a `status` other than
//! `error`; every platform's result is kept (`success` with its post id and URL, `failed` with
//! Ayrshare's code and message, or `unknown`), so a partial failure names the networks that
//! failed and a new deploy goes only to those.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::http::{self, Answer};
use super::{Channel, Content, DeployRequest, Probe, Shared, media_urls, meta_str};
use crate::agency::orders::Order;
use crate::agency::outbox::{Delivery, Sent, Verdict};

/// Networks Ayrshare posts to.
pub const PLATFORMS: [&str; 13] = [
    "bluesky",
    "facebook",
    "gmb",
    "instagram",
    "linkedin",
    "pinterest",
    "reddit",
    "snapchat",
    "telegram",
    "threads",
    "tiktok",
    "twitter",
    "youtube",
];
const MAX_POST_CHARS: usize = 10_000;
const MAX_MEDIA: usize = 10;

pub(super) fn content(
    base_url: &str,
    order: &Order,
    request: &DeployRequest,
) -> Result<Content, String> {
    let text = meta_str(order, "text")
        .or_else(|| meta_str(order, "post"))
        .ok_or("deliverable_metadata.text (the post's text) is missing")?;
    if text.chars().count() > MAX_POST_CHARS {
        return Err(format!(
            "deliverable_metadata.text has more than {MAX_POST_CHARS} characters"
        ));
    }
    let named: Vec<String> = match &request.platforms {
        Some(p) => p.clone(),
        None => order
            .deliverable_metadata
            .get("platforms")
            .and_then(Value::as_array)
            .ok_or("deliverable_metadata.platforms (the networks to post to) is missing")?
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect(),
    };
    let mut platforms: Vec<String> = Vec::new();
    for p in named {
        let p = p.trim().to_ascii_lowercase();
        if !PLATFORMS.contains(&p.as_str()) {
            return Err(format!(
                "unknown platform {:?}; Ayrshare posts to {}",
                http::excerpt(&p),
                PLATFORMS.join(", ")
            ));
        }
        if !platforms.contains(&p) {
            platforms.push(p);
        }
    }
    // After a partial failure, only the networks that did not get the post.
    let mut skipped = Vec::new();
    if request.platforms.is_none()
        && let Some(last) = order
            .deploy_history
            .iter()
            .rev()
            .find(|e| e.channel == Channel::Social.as_str() && e.status != "pending")
        && last.status == "failed"
    {
        for done in last
            .details
            .get("platforms")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| p["status"] == "success")
            .filter_map(|p| p["platform"].as_str())
        {
            if platforms.iter().any(|p| p == done) {
                skipped.push(done.to_owned());
            }
        }
        platforms.retain(|p| !skipped.contains(p));
    }
    if platforms.is_empty() {
        return Err(if skipped.is_empty() {
            "deliverable_metadata.platforms names no network".into()
        } else {
            "every network already has this post; name platforms to post again".into()
        });
    }
    let media = media_urls(order, MAX_MEDIA)?;
    let schedule = match meta_str(order, "schedule_date") {
        None => None,
        Some(s) => {
            let at = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
                "deliverable_metadata.schedule_date must be an ISO-8601 time such as 2027-01-15T09:30:00Z"
            })?;
            if at <= OffsetDateTime::now_utc() {
                return Err("deliverable_metadata.schedule_date is in the past".into());
            }
            let at = at
                .to_offset(time::UtcOffset::UTC)
                .replace_nanosecond(0)
                .unwrap_or(at);
            Some(at.format(&Rfc3339).map_err(|e| e.to_string())?)
        }
    };
    let mut body = Map::new();
    body.insert("post".into(), json!(text));
    body.insert("platforms".into(), json!(platforms));
    if !media.is_empty() {
        body.insert("mediaUrls".into(), json!(media));
    }
    if let Some(s) = &schedule {
        body.insert("scheduleDate".into(), json!(s));
    }
    let mut details = Map::new();
    details.insert("platforms_requested".into(), json!(platforms));
    if !skipped.is_empty() {
        details.insert("skipped_platforms".into(), json!(skipped));
    }
    if let Some(s) = schedule {
        details.insert("schedule_date".into(), json!(s));
    }
    Ok(Content {
        body: Value::Object(body),
        hashed: None,
        details,
        display_url: format!("{base_url}/post"),
    })
}

/// The tenant's Ayrshare User Profile key, if its settings name one.
fn profile_key(shared: &Shared, tenant_id: Option<&str>) -> Option<String> {
    shared
        .tenant(tenant_id)?
        .settings
        .get("ayrshare_profile_key")?
        .as_str()
        .map(str::trim)
        .filter(|k| !k.is_empty() && reqwest::header::HeaderValue::from_str(k).is_ok())
        .map(str::to_owned)
}

fn authorised(
    shared: &Shared,
    request: reqwest::RequestBuilder,
    profile: Option<&str>,
) -> reqwest::RequestBuilder {
    let key = shared
        .config
        .social
        .api_key
        .as_ref()
        .map(|k| k.expose())
        .unwrap_or_default();
    let request = request.bearer_auth(key);
    match profile {
        Some(p) => request.header("Profile-Key", p),
        None => request,
    }
}

/// Keeps Ayrshare's rate-limit headers.
fn note_rate(shared: &Shared, answer: &Answer) {
    let max = answer.header_u64("x-ratelimit-max");
    let count = answer.header_u64("x-ratelimit-count");
    let after = (answer.status == 429)
        .then(|| answer.retry_after())
        .flatten();
    if max.is_none() && count.is_none() && after.is_none() {
        return;
    }
    shared.note_rate(Channel::Social, |r| {
        if max.is_some() {
            r.limit = max;
        }
        if let (Some(max), Some(count)) = (r.limit, count) {
            r.remaining = Some(max.saturating_sub(count));
        }
        if answer.status == 429 {
            r.remaining = Some(0);
            r.reset_at = after.map(|a| OffsetDateTime::now_utc() + a);
        } else if r.remaining.is_some_and(|n| n > 0) {
            r.reset_at = None;
        }
    });
}

pub(super) async fn send(shared: &Shared, delivery: &Delivery, content: &Value) -> Sent {
    let profile = profile_key(shared, delivery.tenant_id.as_deref());
    let url = format!("{}/post", shared.config.social.base_url);
    let request = authorised(shared, shared.client.post(url), profile.as_deref()).json(content);
    let mut sent = match http::call(request, shared.config.timeout).await {
        Ok(answer) => {
            note_rate(shared, &answer);
            let requested: Vec<String> = content["platforms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect();
            classify(&answer, &requested)
        }
        Err(e) => Sent {
            status: None,
            verdict: Verdict::Retry(None),
            error: Some(format!("Ayrshare: {e}")),
            result: None,
        },
    };
    if let Some(p) = &profile {
        let secrets = [p.clone()];
        sent.error = sent.error.map(|e| http::scrub(&e, &secrets));
        if let Some(r) = &mut sent.result {
            http::scrub_json(r, &secrets);
        }
    }
    sent
}

/// Each requested platform's result from Ayrshare's `postIds` and `errors`.
fn platform_results(json: &Value, requested: &[String]) -> Vec<Value> {
    let empty = Vec::new();
    let post_ids = json["postIds"].as_array().unwrap_or(&empty);
    let errors = json["errors"].as_array().unwrap_or(&empty);
    requested
        .iter()
        .map(|p| {
            if let Some(post) = post_ids.iter().find(|x| x["platform"] == p.as_str()) {
                let id = match &post["id"] {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                };
                let failed = post["status"] == "error";
                json!({
                    "platform": p,
                    "status": if failed { "failed" } else { "success" },
                    "id": id,
                    "url": post["postUrl"].as_str(),
                })
            } else if let Some(err) = errors.iter().find(|x| x["platform"] == p.as_str()) {
                json!({
                    "platform": p,
                    "status": "failed",
                    "code": err["code"],
                    "message": err["message"].as_str().map(http::excerpt),
                })
            } else {
                json!({ "platform": p, "status": "unknown" })
            }
        })
        .collect()
}

fn message_of(json: Option<&Value>, answer: &Answer) -> String {
    json.and_then(|j| j.get("message"))
        .and_then(Value::as_str)
        .map(http::excerpt)
        .unwrap_or_else(|| answer.excerpt())
}

/// Ayrshare's answer as an outcome.
pub(super) fn classify(answer: &Answer, requested: &[String]) -> Sent {
    let status = answer.status;
    let json = answer.json();
    let sent = |verdict, error: String, result| Sent {
        status: Some(status),
        verdict,
        error: Some(error),
        result,
    };
    match status {
        401 => {
            return sent(
                Verdict::Failed,
                format!(
                    "Ayrshare refused the API key (401: {}); check AYRSHARE_API_KEY",
                    message_of(json.as_ref(), answer)
                ),
                None,
            );
        }
        403 => {
            return sent(
                Verdict::Failed,
                format!(
                    "Ayrshare refused the post (403: {}); the profile may be suspended or not allowed to post",
                    message_of(json.as_ref(), answer)
                ),
                None,
            );
        }
        429 => {
            let after = answer.retry_after().or_else(|| {
                json.as_ref()
                    .and_then(|j| j["retry_after"].as_u64())
                    .map(std::time::Duration::from_secs)
            });
            return sent(
                Verdict::Retry(after),
                format!(
                    "Ayrshare's rate limit was reached (429: {})",
                    message_of(json.as_ref(), answer)
                ),
                None,
            );
        }
        408 | 500..=599 => {
            return sent(
                Verdict::Retry(answer.retry_after()),
                format!("Ayrshare answered {status}: {}", answer.excerpt()),
                None,
            );
        }
        _ => {}
    }
    let Some(json) = json else {
        return sent(
            Verdict::Failed,
            format!(
                "Ayrshare answered {status} without JSON: {}",
                answer.excerpt()
            ),
            None,
        );
    };
    let platforms = platform_results(&json, requested);
    let top = json["status"].as_str().unwrap_or("").to_owned();
    let result = json!({
        "ayrshare_id": json["id"].as_str(),
        "ayrshare_status": top,
        "platforms": platforms,
    });
    if status == 200 && top != "error" {
        return Sent {
            status: Some(status),
            verdict: Verdict::Delivered,
            error: None,
            result: Some(result),
        };
    }
    let failed: Vec<String> = platforms
        .iter()
        .filter(|p| p["status"] != "success")
        .map(|p| {
            let name = p["platform"].as_str().unwrap_or("?");
            match (p["code"].as_i64(), p["message"].as_str()) {
                (Some(c), Some(m)) => format!("{name} ({c}: {m})"),
                (None, Some(m)) => format!("{name} ({m})"),
                _ => format!("{name} ({})", p["status"].as_str().unwrap_or("unknown")),
            }
        })
        .collect();
    let error = if failed.is_empty() {
        format!(
            "Ayrshare answered {status} with status {top:?}: {}",
            message_of(Some(&json), answer)
        )
    } else {
        format!(
            "Ayrshare: {} of {} networks failed: {}",
            failed.len(),
            platforms.len(),
            failed.join("; ")
        )
    };
    sent(Verdict::Failed, error, Some(result))
}

/// After an interrupted attempt: asks Ayrshare about the post, when an earlier answer gave
/// its id.
pub(super) async fn check(shared: &Shared, delivery: &Delivery) -> Option<Sent> {
    let id = delivery.result.as_ref()?["ayrshare_id"]
        .as_str()?
        .to_owned();
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let profile = profile_key(shared, delivery.tenant_id.as_deref());
    let url = format!("{}/post/{id}", shared.config.social.base_url);
    let request = authorised(shared, shared.client.get(url), profile.as_deref());
    let answer = http::call(request, shared.config.timeout).await.ok()?;
    if answer.status != 200 {
        return None;
    }
    let json = answer.json()?;
    let state = json["status"].as_str()?;
    let verdict = match state {
        // A deleted post was posted.
        "success" | "deleted" => Verdict::Delivered,
        "error" => Verdict::Failed,
        _ => return None,
    };
    let mut result = delivery.result.clone().unwrap_or_else(|| json!({}));
    result["ayrshare_status"] = json!(state);
    result["checked_after_restart"] = json!(true);
    Some(Sent {
        status: Some(200),
        verdict,
        error: (verdict == Verdict::Failed)
            .then(|| format!("Ayrshare reports post {id} as {state}")),
        result: Some(result),
    })
}

pub(super) async fn probe(shared: &Shared) -> Probe {
    let url = format!("{}/user", shared.config.social.base_url);
    let request = authorised(shared, shared.client.get(url), None);
    let answer = match shared.probe_call(request, "Ayrshare").await {
        Ok(answer) => answer,
        Err(probe) => return probe,
    };
    note_rate(shared, &answer);
    match answer.status {
        200 => {
            let platforms = answer
                .json()
                .and_then(|j| j["activeSocialAccounts"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect();
            Probe {
                platforms: Some(platforms),
                ..Probe::default()
            }
        }
        401 | 403 => Probe {
            problem: Some((
                "misconfigured",
                format!(
                    "Ayrshare refused the API key ({}); check AYRSHARE_API_KEY",
                    answer.status
                ),
            )),
            ..Probe::default()
        },
        s => Probe {
            problem: Some(("unreachable", format!("Ayrshare answered {s} to GET /user"))),
            ..Probe::default()
        },
    }
}
