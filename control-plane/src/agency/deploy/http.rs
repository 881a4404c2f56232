//! One HTTP call to a deploy service: capped answer, errors without URLs (a Telegram URL holds
//! the bot token), `Retry-After`, and scrubbing of secrets from anything kept.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The most of an answer read.
const BODY_CAP: usize = 256 * 1024;
/// Characters of an answer kept in an error.
const EXCERPT_CHARS: usize = 300;
/// The longest wait a service may ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A service's answer.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as one line of text, cut short.
    pub fn excerpt(&self) -> String {
        excerpt(&String::from_utf8_lossy(&self.body))
    }

    /// `Retry-After` in seconds (or an HTTP date), bounded.
    pub fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::llm::transport::parse_retry_after)
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
    }

    pub fn header_u64(&self, name: &str) -> Option<u64> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Text on one line, without control characters, at most a few hundred characters.
pub fn excerpt(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(EXCERPT_CHARS)
        .collect();
    one_line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Sends `request` and reads the answer; `Err` says in a sentence (never with the URL) why
/// no answer came.
pub async fn call(request: reqwest::RequestBuilder, timeout: Duration) -> Result<Answer, String> {
    let mut response = request.send().await.map_err(|e| describe(&e, timeout))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    while body.len() < BODY_CAP {
        match response.chunk().await {
            Ok(Some(piece)) => body.extend_from_slice(&piece),
            Ok(None) => break,
            Err(e) => return Err(describe(&e, timeout)),
        }
    }
    body.truncate(BODY_CAP);
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// reqwest's error without its URL.
pub fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {} s", timeout.as_secs_f64())
    } else if e.is_connect() {
        "cannot connect: refused or unreachable".to_owned()
    } else if e.is_builder() {
        "the request could not be built".to_owned()
    } else {
        "the connection failed before a whole answer came".to_owned()
    }
}

/// `text` with every secret replaced by `<redacted>`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "<redacted>");
        }
    }
    out
}

/// `value` with every secret in its strings replaced.
pub fn scrub_json(value: &mut serde_json::Value, secrets: &[String]) {
    match value {
        serde_json::Value::String(s) if secrets.iter().any(|x| s.contains(x.as_str())) => {
            *s = scrub(s, secrets);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| scrub_json(v, secrets)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| scrub_json(v, secrets)),
        _ => {}
    }
}

/// An HTTP client for the deploy services: no proxy, no redirects (a redirect would carry
/// credentials elsewhere), `timeout` per call.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(super::super::webhooks::USER_AGENT)
        .build()
        .map_err(|e| format!("cannot build the deploy channels' HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_everywhere() {
        let secrets = vec!["123:ABC".to_owned(), "key-xyz".to_owned()];
        assert_eq!(
            scrub("url /bot123:ABC/sendMessage key-xyz", &secrets),
            "url /bot<redacted>/sendMessage <redacted>"
        );
        let mut v = serde_json::json!({"a": ["x key-xyz"], "b": {"c": "123:ABC"}, "n": 1});
        scrub_json(&mut v, &secrets);
        assert!(!v.to_string().contains("key-xyz") && !v.to_string().contains("123:ABC"));
        assert_eq!(excerpt("a\nb\t\tc"), "a b c");
    }
}
