//! What every dialect shares: the request in hand, the reply, event framing and the echo text.

use serde::Serialize;

use super::behaviour::{Behaviour, ErrorReply};

/// One request for a dialect to answer.
pub(super) struct Ask<'a> {
    pub behaviour: &'a Behaviour,
    /// This request's number since the mock started, for ids.
    pub seq: u64,
    /// This inference request's number since the behaviour was set.
    pub nth: u64,
    pub body: &'a [u8],
    /// The query string, without `?`.
    pub query: &'a str,
    pub shape: Shape,
}

/// How faults bend an otherwise healthy answer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    /// End the stream with its end marker (`[DONE]`, `finishReason`, `done: true`).
    pub terminated: bool,
    /// Stop for safety (`content_filter`, `SAFETY`).
    pub content_filter: bool,
}

/// A dialect's answer before faults and framing.
pub(super) enum Reply {
    /// 200 with this JSON body.
    Json(Vec<u8>),
    /// 200 with these event payloads, in order, end marker included when terminated.
    Stream {
        framing: Framing,
        events: Vec<Vec<u8>>,
        /// Interleave `: keep-alive` comments (DeepSeek under load).
        keep_alive: bool,
    },
    /// An error in the dialect's shape.
    Error(ErrorReply),
}

/// How stream events are delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// `data: <payload>\n\n` (OpenAI, DeepSeek).
    Sse,
    /// `data: <payload>\r\n\r\n` (Gemini's `alt=sse`; LF-only splitters miss every event).
    SseCrlf,
    /// `<payload>\n` (Ollama).
    Ndjson,
}

impl Framing {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Sse => "text/event-stream; charset=utf-8",
            Self::SseCrlf => "text/event-stream",
            Self::Ndjson => "application/x-ndjson",
        }
    }

    pub fn frame(self, payload: &[u8]) -> Vec<u8> {
        let (head, tail): (&[u8], &[u8]) = match self {
            Self::Sse => (b"data: ", b"\n\n"),
            Self::SseCrlf => (b"data: ", b"\r\n\r\n"),
            Self::Ndjson => (b"", b"\n"),
        };
        let mut out = Vec::with_capacity(head.len() + payload.len() + tail.len());
        out.extend_from_slice(head);
        out.extend_from_slice(payload);
        out.extend_from_slice(tail);
        out
    }
}

/// The answer every dialect gives: it names the mock, the model and what the user said, so a
/// test can tell which upstream answered what.
pub(super) fn answer_text(label: &str, model: &str, last_user: &str) -> String {
    format!("{label}:{model}:{last_user}")
}

/// The answer as a JSON object, for JSON mode.
pub(super) fn json_answer(answer: &str) -> String {
    serde_json::json!({ "answer": answer }).to_string()
}

/// Tokens, counted as words.
pub(super) fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// `text` cut into stream deltas: `deltas` pieces of about equal length, or one per word (with
/// its trailing space) when 0. The pieces join back into `text`.
pub(super) fn pieces(text: &str, deltas: usize) -> Vec<&str> {
    if text.is_empty() {
        return vec![text];
    }
    if deltas == 0 {
        return text.split_inclusive(' ').collect();
    }
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let chars = bounds.len() - 1;
    (0..deltas)
        .map(|i| &text[bounds[i * chars / deltas]..bounds[(i + 1) * chars / deltas]])
        .collect()
}

/// A deterministic unit vector from the text (FNV-1a, then splitmix64): equal inputs give equal
/// vectors across runs and machines.
pub(super) fn embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut state = hash(text);
    let mut values: Vec<f32> = (0..dims)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // The top 24 bits fit an f32 exactly.
            (z >> 40) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect();
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        values.iter_mut().for_each(|v| *v /= norm);
    }
    values
}

/// FNV-1a: small and stable, for vectors, digests and seeds.
pub(super) fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(super) fn to_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("mock replies serialise")
}

/// A 400 for a body the dialect cannot read.
pub(super) fn bad_request(error: &serde_json::Error) -> Reply {
    Reply::Error(ErrorReply::status(400).with_message(&format!("invalid request body: {error}")))
}

/// Seconds since the epoch, for `created`.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Now as RFC 3339, for Ollama's `created_at`.
pub(super) fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
