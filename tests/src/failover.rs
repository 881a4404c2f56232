//! The gateway fail-over suite: 16 ways a primary upstream misbehaves while a healthy
//! secondary stands by, each with the answer a client must see. Shared by the end-to-end test
//! (axon-cp) and the gateway benchmark (axon-cp and LiteLLM side by side). The expectations
//! are stated from the rules a gateway should follow — fail over only before the first byte
//! reaches the client, never retry a request the upstream called invalid elsewhere, never
//! replace a valid answer, never dress a broken stream up as complete — not from any
//! gateway's behaviour.

use std::time::Duration;

use serde_json::Value;

use crate::mock_llm::{ErrorReply, Fault};

/// One scenario: the primary misbehaves this way (`None`: nothing listens on its port).
pub struct Scenario {
    pub name: &'static str,
    pub fault: Option<Fault>,
    pub stream: bool,
    pub expect: Expect,
}

/// What the client must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A complete answer from the secondary.
    Secondary,
    /// A complete answer from the primary, the secondary never called.
    Primary,
    /// This status, the secondary never called.
    Status(u16),
    /// The primary's stream starts, then ends with an error event and never `[DONE]`; the
    /// secondary is never called.
    Cut,
}

/// The sixteen scenarios.
pub fn scenarios() -> Vec<Scenario> {
    let s = |name, fault, stream, expect| Scenario {
        name,
        fault,
        stream,
        expect,
    };
    vec![
        s(
            "429 with Retry-After",
            Some(Fault::Error(ErrorReply::rate_limited(30))),
            false,
            Expect::Secondary,
        ),
        s(
            "429 without Retry-After",
            Some(Fault::status(429)),
            false,
            Expect::Secondary,
        ),
        s("500", Some(Fault::status(500)), true, Expect::Secondary),
        s("503", Some(Fault::status(503)), false, Expect::Secondary),
        s("connection refused", None, true, Expect::Secondary),
        s(
            "reset before headers",
            Some(Fault::Reset),
            false,
            Expect::Secondary,
        ),
        s(
            "no response",
            Some(Fault::NoResponse),
            true,
            Expect::Secondary,
        ),
        s(
            "slow first byte",
            Some(Fault::SlowFirstByte { delay_ms: 5_000 }),
            false,
            Expect::Secondary,
        ),
        s(
            "stream cut",
            Some(Fault::StreamCut { after: 2 }),
            true,
            Expect::Cut,
        ),
        s(
            "stream stall",
            Some(Fault::StreamStall { after: 2 }),
            true,
            Expect::Cut,
        ),
        s(
            "malformed chunk",
            Some(Fault::MalformedChunk { after: 0 }),
            true,
            Expect::Secondary,
        ),
        s(
            "missing [DONE]",
            Some(Fault::MissingDone),
            true,
            Expect::Primary,
        ),
        s(
            "context length",
            Some(Fault::Error(ErrorReply::context_length_exceeded())),
            false,
            Expect::Status(400),
        ),
        s(
            "content filter",
            Some(Fault::ContentFilter),
            true,
            Expect::Primary,
        ),
        s(
            "flapping primary",
            Some(Fault::Flapping),
            false,
            Expect::Secondary,
        ),
        s(
            "fail-over accounting",
            Some(Fault::status(502)),
            true,
            Expect::Secondary,
        ),
    ]
}

/// What the client saw.
pub struct Seen {
    pub status: u16,
    pub body: String,
    /// Calls the secondary received during this request.
    pub secondary_calls: usize,
    pub took: Duration,
}

/// The `data:` payloads of an event stream.
pub fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .map(|e| e.trim_start_matches('\n'))
        .filter_map(|e| e.strip_prefix("data: ").or_else(|| e.strip_prefix("data:")))
        .map(|e| e.trim().to_owned())
        .collect()
}

/// The answer's text: streamed deltas joined, or the whole message's content.
pub fn answer_text(stream: bool, body: &str) -> String {
    if stream {
        events(body)
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    } else {
        serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| {
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    }
}

/// Whether the answer is complete: `[DONE]` last, or a whole completion with a message.
pub fn complete(stream: bool, body: &str) -> bool {
    if stream {
        events(body).last().map(String::as_str) == Some("[DONE]")
    } else {
        serde_json::from_str::<Value>(body).is_ok_and(|v| v["choices"][0]["message"].is_object())
    }
}

/// Whether what the client saw is what the scenario asks. Answers are told apart by the
/// mocks' labels (`primary:` / `secondary:`), so no gateway-specific header is needed.
pub fn passes(s: &Scenario, seen: &Seen) -> bool {
    let complete = complete(s.stream, &seen.body);
    let text = answer_text(s.stream, &seen.body);
    // Nothing hangs: the slowest scenario waits for one first-byte or idle limit.
    let in_time = seen.took < Duration::from_secs(12);
    in_time
        && match s.expect {
            Expect::Secondary => seen.status == 200 && complete && text.starts_with("secondary:"),
            Expect::Primary => {
                seen.status == 200
                    && complete
                    && text.starts_with("primary:")
                    && seen.secondary_calls == 0
            }
            Expect::Status(code) => seen.status == code && seen.secondary_calls == 0 && !complete,
            Expect::Cut => {
                seen.status == 200
                    && !complete
                    && !seen.body.contains("[DONE]")
                    && events(&seen.body)
                        .last()
                        .is_some_and(|e| e.contains("\"error\""))
                    && seen.secondary_calls == 0
            }
        }
}
