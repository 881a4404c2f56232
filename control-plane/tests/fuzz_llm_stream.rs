//! Fuzz target for the LLM gateway's stream parsers: the server-sent-events and
//! newline-delimited JSON splitters, and the OpenAI (also DeepSeek), Gemini and Ollama stream
//! decoders. Arbitrary and mutated bytes never panic; output stays within a fixed multiple of
//! the input; an event or line that never ends is cut off at `MAX_EVENT`; a valid stream
//! yields exactly its events, whole or split into pieces at any points.
//!
//! `PROPTEST_CASES` sets the cases per property; `scripts/fuzz` runs these for long.

use axon_control_plane::llm::framing::{Framed, LineSplitter, MAX_EVENT, SseSplitter};
use axon_control_plane::llm::gemini::Gemini;
use axon_control_plane::llm::ollama::Ollama;
use axon_control_plane::llm::openai::SseDecoder;
use axon_control_plane::llm::provider::{AnswerMeta, ChatDecoder, DecodeError, Emit, LlmProvider};
use axon_control_plane::llm::wire::{ChatRequest, Usage};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Relative to the crate directory, where `cargo test` runs; committed, so a case
        // that once failed replays on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz_llm_stream.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// The input cut at the given points (repeats give empty pieces, which must be harmless).
fn pieces<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    pieces_at(
        bytes,
        cuts.iter().map(|i| i.index(bytes.len() + 1)).collect(),
    )
}

/// `bytes` cut at the positions `at` (any order, at most the length).
fn pieces_at(bytes: &[u8], mut at: Vec<usize>) -> Vec<&[u8]> {
    at.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for to in at {
        out.push(&bytes[from..to]);
        from = to;
    }
    out.push(&bytes[from..]);
    out
}

fn sse_split(input: &[&[u8]]) -> Vec<Framed> {
    let mut s = SseSplitter::default();
    let mut out = Vec::new();
    for piece in input {
        s.push(piece, &mut out);
    }
    s.finish(&mut out);
    out
}

fn line_split(input: &[&[u8]]) -> Vec<Framed> {
    let mut s = LineSplitter::default();
    let mut out = Vec::new();
    for piece in input {
        s.push(piece, &mut out);
    }
    s.finish(&mut out);
    out
}

/// Everything a decoder emitted, and the error it stopped at, if any.
fn decode(mut d: Box<dyn ChatDecoder>, input: &[&[u8]]) -> (Vec<Emit>, Option<DecodeError>) {
    let mut out = Vec::new();
    for piece in input {
        if let Err(e) = d.push(piece, &mut out) {
            return (out, Some(e));
        }
    }
    let error = d.finish(&mut out).err();
    (out, error)
}

fn meta() -> AnswerMeta {
    AnswerMeta {
        id: "chatcmpl-1".into(),
        created: 7,
        model: "m".into(),
    }
}

fn request() -> ChatRequest {
    ChatRequest::parse(br#"{"model":"m","messages":[{"role":"user","content":"q"}],"stream":true}"#)
        .expect("request")
}

#[derive(Debug, Clone, Copy)]
enum Dialect {
    OpenAi,
    Gemini,
    Ollama,
}

fn decoder(dialect: Dialect) -> Box<dyn ChatDecoder> {
    match dialect {
        Dialect::OpenAi => Box::new(SseDecoder::default()),
        Dialect::Gemini => Gemini.chat_stream(&request(), &meta()),
        Dialect::Ollama => Ollama.chat_stream(&request(), &meta()),
    }
}

fn dialect() -> impl Strategy<Value = Dialect> {
    select(&[Dialect::OpenAi, Dialect::Gemini, Dialect::Ollama][..])
}

/// Bits of the three wire formats, for inputs that are neither random nor valid.
const TOKENS: &[&str] = &[
    "data:",
    "data: ",
    "data",
    ":",
    ": keep-alive",
    "event: message",
    "id: 7",
    "retry: 10",
    "\n",
    "\r",
    "\r\n",
    "\n\n",
    "\r\n\r\n",
    "[DONE]",
    "{",
    "}",
    "\"",
    "{\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}",
    "{\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
    "{\"error\":{\"message\":\"boom\"}}",
    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"y\"}]},\"finishReason\":\"STOP\"}]}",
    "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\"}}]}}]}",
    "{\"usageMetadata\":{\"promptTokenCount\":3}}",
    "{\"message\":{\"content\":\"z\"},\"done\":false}",
    "{\"done\":true,\"done_reason\":\"length\",\"eval_count\":4}",
    "{\"error\":\"oom\"}",
    "é",
    "\u{feff}",
    " ",
    "\t",
];

const INVALID_UTF8: &[&[u8]] = &[&[0xff], &[0xc3], &[0xe2, 0x82], &[0]];

fn soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        4 => select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 1..8),
        1 => select(INVALID_UTF8).prop_map(<[u8]>::to_vec),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..300),
        3 => soup(),
    ]
}

/// Line ends for one stream: a lone `\r` ending a line before a `\n` blank line would make
/// one CRLF, so CR-only streams use CR throughout.
fn line_ends() -> impl Strategy<Value = Vec<&'static str>> {
    prop_oneof![
        Just(vec!["\n"]),
        Just(vec!["\r\n"]),
        Just(vec!["\r"]),
        Just(vec!["\n", "\r\n"]),
    ]
}

/// Text of an SSE value: anything but line ends.
fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\r\n]{0,20}",
        Just(String::new()),
        Just(" leading".to_owned()),
        Just("data: nested".to_owned()),
    ]
}

#[derive(Debug, Clone)]
struct SseEvent {
    /// Each data line: its value, and whether a space follows the colon.
    data: Vec<(String, bool)>,
    /// Other fields and comments, put before the data lines.
    noise: Vec<&'static str>,
}

fn sse_events() -> impl Strategy<Value = Vec<SseEvent>> {
    let event = (
        prop::collection::vec((value_text(), any::<bool>()), 0..4),
        prop::collection::vec(
            select(&[": ping", "event: x", "id: 1", "retry: 5", ":"][..]),
            0..3,
        ),
    )
        .prop_map(|(data, noise)| SseEvent { data, noise });
    prop::collection::vec(event, 0..8)
}

/// Writes events as a stream; the last one may lack its blank line.
fn write_sse(events: &[SseEvent], ends: &[&str], pick: &[Index], open_end: bool) -> Vec<u8> {
    let mut out = String::new();
    let mut n = 0;
    let mut end = || {
        n += 1;
        ends[pick
            .get(n % pick.len().max(1))
            .map_or(0, |i| i.index(ends.len()))]
    };
    for (i, e) in events.iter().enumerate() {
        for noise in &e.noise {
            out.push_str(noise);
            out.push_str(end());
        }
        for (value, space) in &e.data {
            out.push_str(if *space { "data: " } else { "data:" });
            out.push_str(value);
            out.push_str(end());
        }
        if !(open_end && i + 1 == events.len()) {
            out.push_str(end());
        }
    }
    out.into_bytes()
}

/// What the stream means: one event per event with data lines, the values joined by `\n`;
/// one space after the colon is not part of the value.
fn sse_meaning(events: &[SseEvent]) -> Vec<Framed> {
    events
        .iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| {
            let lines: Vec<&str> = e
                .data
                .iter()
                .map(|(v, space)| {
                    if *space {
                        v.as_str()
                    } else {
                        v.strip_prefix(' ').unwrap_or(v)
                    }
                })
                .collect();
            Framed::Data(lines.join("\n"))
        })
        .collect()
}

fn data_bytes(events: &[Framed]) -> usize {
    events
        .iter()
        .map(|e| match e {
            Framed::Data(d) => d.len(),
            Framed::TooLarge => 0,
        })
        .sum()
}

/// A valid answer: pieces of text, a finish reason and token counts.
#[derive(Debug, Clone)]
struct Answer {
    texts: Vec<String>,
    finish: &'static str,
    prompt: u64,
    completion: u64,
    cached: u64,
}

fn answer() -> impl Strategy<Value = Answer> {
    // Up to u64::MAX: totals saturate (see `huge_token_counts_do_not_overflow`).
    let count = prop_oneof![0u64..(1 << 53), any::<u64>(), Just(u64::MAX)];
    (
        prop::collection::vec(any::<String>(), 0..6),
        select(&["stop", "length"][..]),
        count.clone(),
        count.clone(),
        count,
    )
        .prop_map(|(texts, finish, prompt, completion, cached)| Answer {
            texts,
            finish,
            prompt,
            completion,
            cached,
        })
}

fn sse_stream(events: &[Value], ends: &[&str], done: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let end = ends[i % ends.len()];
        if i % 3 == 1 {
            out.extend_from_slice(format!(": keep-alive{end}{end}").as_bytes());
        }
        out.extend_from_slice(format!("data: {e}{end}{end}").as_bytes());
    }
    if done {
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
    out
}

/// The answer as each dialect streams it, and what the decoder must make of it.
fn stream_of(dialect: Dialect, a: &Answer, ends: &[&str]) -> Vec<u8> {
    match dialect {
        Dialect::OpenAi => {
            let mut events: Vec<Value> = a
                .texts
                .iter()
                .map(|t| {
                    json!({
                        "id": "c",
                        "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]
                    })
                })
                .collect();
            events.push(json!({
                "id": "c",
                "choices": [{"index": 0, "delta": {}, "finish_reason": a.finish}]
            }));
            events.push(json!({
                "id": "c",
                "choices": [],
                "usage": {
                    "prompt_tokens": a.prompt,
                    "completion_tokens": a.completion,
                    "prompt_tokens_details": {"cached_tokens": a.cached}
                }
            }));
            sse_stream(&events, ends, true)
        }
        Dialect::Gemini => {
            let reason = if a.finish == "stop" {
                "STOP"
            } else {
                "MAX_TOKENS"
            };
            let mut events: Vec<Value> = a
                .texts
                .iter()
                .map(|t| {
                    json!({
                        "candidates": [
                            {"content": {"role": "model", "parts": [{"text": t}]}, "index": 0}
                        ]
                    })
                })
                .collect();
            events.push(json!({
                "candidates": [
                    {"content": {"role": "model", "parts": []}, "finishReason": reason, "index": 0}
                ],
                "usageMetadata": {
                    "promptTokenCount": a.prompt,
                    "candidatesTokenCount": a.completion,
                    "cachedContentTokenCount": a.cached
                }
            }));
            sse_stream(&events, ends, false)
        }
        Dialect::Ollama => {
            let mut out = String::new();
            for t in &a.texts {
                let line = json!({
                    "model": "m",
                    "message": {"role": "assistant", "content": t},
                    "done": false
                });
                out.push_str(&line.to_string());
                out.push_str(if ends[0] == "\r\n" { "\r\n" } else { "\n" });
            }
            let last = json!({
                "model": "m",
                "message": {"role": "assistant", "content": ""},
                "done": true,
                "done_reason": a.finish,
                "prompt_eval_count": a.prompt,
                "eval_count": a.completion
            });
            out.push_str(&last.to_string());
            out.push('\n');
            out.into_bytes()
        }
    }
}

/// The text the client sees, from the chunks a decoder emitted.
fn streamed_text(dialect: Dialect, emits: &[Emit]) -> Result<String, TestCaseError> {
    let mut text = String::new();
    for e in emits {
        if let Emit::Chunk {
            json,
            text: counted,
        } = e
        {
            let chunk: Value = serde_json::from_slice(json)
                .map_err(|e| TestCaseError::fail(format!("a chunk is not JSON: {e}")))?;
            let content = chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("");
            prop_assert_eq!(*counted, content.len(), "{:?}: {}", dialect, chunk);
            text.push_str(content);
        }
    }
    Ok(text)
}

fn splitters_any_bytes() -> impl Strategy<Value = (Vec<u8>, Vec<Index>)> {
    (input(), prop::collection::vec(any::<Index>(), 0..8))
}

fn check_splitters_any_bytes((bytes, cuts): (Vec<u8>, Vec<Index>)) -> Result<(), TestCaseError> {
    check_splitters(&bytes, &pieces(&bytes, &cuts))
}

fn check_splitters(bytes: &[u8], split: &[&[u8]]) -> Result<(), TestCaseError> {
    let whole = sse_split(&[bytes]);
    prop_assert_eq!(&sse_split(split), &whole);
    // Invalid UTF-8 becomes U+FFFD (3 bytes for 1): never more than three times the input.
    prop_assert!(data_bytes(&whole) <= 3 * bytes.len());
    prop_assert!(!whole.contains(&Framed::TooLarge));
    let lines = line_split(&[bytes]);
    prop_assert_eq!(&line_split(split), &lines);
    prop_assert!(data_bytes(&lines) <= 3 * bytes.len());
    Ok(())
}

fn sse_events_in_any_pieces() -> impl Strategy<
    Value = (
        Vec<SseEvent>,
        Vec<&'static str>,
        Vec<Index>,
        bool,
        Vec<Index>,
    ),
> {
    (
        sse_events(),
        line_ends(),
        prop::collection::vec(any::<Index>(), 1..8),
        any::<bool>(),
        prop::collection::vec(any::<Index>(), 0..8),
    )
}

fn check_sse_events_in_any_pieces(
    (events, ends, pick, open_end, cuts): (
        Vec<SseEvent>,
        Vec<&'static str>,
        Vec<Index>,
        bool,
        Vec<Index>,
    ),
) -> Result<(), TestCaseError> {
    let bytes = write_sse(&events, &ends, &pick, open_end);
    let want = sse_meaning(&events);
    prop_assert_eq!(
        &sse_split(&[&bytes]),
        &want,
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
    prop_assert_eq!(&sse_split(&pieces(&bytes, &cuts)), &want);
    Ok(())
}

fn ndjson_lines_in_any_pieces() -> impl Strategy<Value = (Vec<String>, bool, bool, Vec<Index>)> {
    (
        prop::collection::vec("[^\n]{0,30}", 0..8),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(any::<Index>(), 0..8),
    )
}

fn check_ndjson_lines_in_any_pieces(
    (lines, crlf, open_end, cuts): (Vec<String>, bool, bool, Vec<Index>),
) -> Result<(), TestCaseError> {
    let end = if crlf { "\r\n" } else { "\n" };
    let mut text = lines.join(end);
    if !open_end {
        text.push_str(end);
    }
    let want: Vec<Framed> = lines
        .iter()
        .map(|l| l.trim_matches(|c: char| c.is_ascii_whitespace()))
        .filter(|l| !l.is_empty())
        .map(|l| Framed::Data(l.to_owned()))
        .collect();
    prop_assert_eq!(&line_split(&[text.as_bytes()]), &want);
    prop_assert_eq!(&line_split(&pieces(text.as_bytes(), &cuts)), &want);
    Ok(())
}

fn decoders_any_bytes() -> impl Strategy<Value = (Dialect, Vec<u8>, Vec<Index>)> {
    (
        dialect(),
        input(),
        prop::collection::vec(any::<Index>(), 0..8),
    )
}

fn check_decoders_any_bytes(
    (dialect, bytes, cuts): (Dialect, Vec<u8>, Vec<Index>),
) -> Result<(), TestCaseError> {
    check_decoders(dialect, &bytes, &pieces(&bytes, &cuts))
}

fn check_decoders(dialect: Dialect, bytes: &[u8], split: &[&[u8]]) -> Result<(), TestCaseError> {
    let whole = decode(decoder(dialect), &[bytes]);
    let split = decode(decoder(dialect), split);
    prop_assert_eq!(&split, &whole);
    let chunk_bytes: usize = whole
        .0
        .iter()
        .map(|e| {
            if let Emit::Chunk { text, .. } = e {
                *text
            } else {
                0
            }
        })
        .sum();
    prop_assert!(chunk_bytes <= 3 * bytes.len());
    Ok(())
}

fn valid_streams_decode_whole_or_in_pieces()
-> impl Strategy<Value = (Dialect, Answer, Vec<&'static str>, Vec<Index>)> {
    (
        dialect(),
        answer(),
        prop_oneof![
            Just(vec!["\n"]),
            Just(vec!["\r\n"]),
            Just(vec!["\n", "\r\n"])
        ],
        prop::collection::vec(any::<Index>(), 0..10),
    )
}

fn check_valid_streams_decode_whole_or_in_pieces(
    (dialect, answer, ends, cuts): (Dialect, Answer, Vec<&'static str>, Vec<Index>),
) -> Result<(), TestCaseError> {
    let bytes = stream_of(dialect, &answer, &ends);
    let whole = decode(decoder(dialect), &[&bytes]);
    prop_assert_eq!(&whole.1, &None, "{:?}", String::from_utf8_lossy(&bytes));
    prop_assert_eq!(&decode(decoder(dialect), &pieces(&bytes, &cuts)), &whole);
    let emits = whole.0;
    prop_assert_eq!(streamed_text(dialect, &emits)?, answer.texts.concat());
    let finishes: Vec<&Emit> = emits
        .iter()
        .filter(|e| matches!(e, Emit::Finish(_)))
        .collect();
    let finish = Emit::Finish(answer.finish.to_owned());
    prop_assert_eq!(finishes, vec![&finish]);
    let cached = if matches!(dialect, Dialect::Ollama) {
        0
    } else {
        answer.cached
    };
    prop_assert!(
        emits.contains(&Emit::Usage(Usage::new(
            answer.prompt,
            answer.completion,
            cached
        ))),
        "{emits:?}"
    );
    prop_assert_eq!(emits.last(), Some(&Emit::Done));
    Ok(())
}

/// An edit of a stream: where, the bytes put in, how many taken out.
type Edit = (Index, Vec<u8>, usize);

fn mutated_streams() -> impl Strategy<Value = (Dialect, Answer, Vec<Edit>, Vec<Index>)> {
    (
        dialect(),
        answer(),
        prop::collection::vec(
            (
                any::<Index>(),
                prop_oneof![
                    select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
                    prop::collection::vec(any::<u8>(), 0..3),
                ],
                0usize..6,
            ),
            1..5,
        ),
        prop::collection::vec(any::<Index>(), 0..8),
    )
}

fn check_mutated_streams(
    (dialect, answer, edits, cuts): (Dialect, Answer, Vec<Edit>, Vec<Index>),
) -> Result<(), TestCaseError> {
    let mut bytes = stream_of(dialect, &answer, &["\n"]);
    for (at, insert, delete) in &edits {
        let p = at.index(bytes.len() + 1);
        let end = (p + delete).min(bytes.len());
        bytes.splice(p..end, insert.iter().copied());
    }
    let whole = decode(decoder(dialect), &[&bytes]);
    prop_assert_eq!(&decode(decoder(dialect), &pieces(&bytes, &cuts)), &whole);
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn fuzz_splitters_any_bytes(case in splitters_any_bytes()) {
        check_splitters_any_bytes(case)?;
    }

    #[test]
    fn fuzz_sse_events_in_any_pieces(case in sse_events_in_any_pieces()) {
        check_sse_events_in_any_pieces(case)?;
    }

    #[test]
    fn fuzz_ndjson_lines_in_any_pieces(case in ndjson_lines_in_any_pieces()) {
        check_ndjson_lines_in_any_pieces(case)?;
    }

    #[test]
    fn fuzz_decoders_any_bytes(case in decoders_any_bytes()) {
        check_decoders_any_bytes(case)?;
    }

    #[test]
    fn fuzz_valid_streams_decode_whole_or_in_pieces(case in valid_streams_decode_whole_or_in_pieces()) {
        check_valid_streams_decode_whole_or_in_pieces(case)?;
    }

    #[test]
    fn fuzz_mutated_streams(case in mutated_streams()) {
        check_mutated_streams(case)?;
    }
}

/// Coverage-guided entry (`fuzz/`): a dialect byte, a count of cuts and two bytes for each,
/// then the stream. The splitters and the dialect's decoder must read it the same whole and
/// in those pieces. The seeds (`fuzz/seeds/llm_stream/`) are recorded provider streams.
pub fn fuzz_bytes(data: &[u8]) {
    let mut b = axon_fuzzkit::Bytes::new(data);
    let dialect = b
        .pick(&[Dialect::OpenAi, Dialect::Gemini, Dialect::Ollama])
        .unwrap_or(Dialect::OpenAi);
    let cuts: Vec<usize> = (0..b.u8() % 8).map(|_| usize::from(b.u16())).collect();
    let bytes = b.rest();
    let cuts = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
    let split = pieces_at(bytes, cuts);
    axon_fuzzkit::holds(check_splitters(bytes, &split));
    axon_fuzzkit::holds(check_decoders(dialect, bytes, &split));
}

/// What the coverage-guided fuzzer found (`fuzz/regressions/llm_stream/`), its seeds, and fixed
/// inputs, through the same entry.
#[test]
fn coverage_guided_inputs_replay() {
    let fuzz_dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz"));
    assert!(axon_fuzzkit::replay(fuzz_dir, "llm_stream", 512, fuzz_bytes) >= 512);
}

/// Feeds `piece` after `head` until the parser gives up; returns how many bytes that took.
fn bytes_until_cut_off(
    head: &[u8],
    piece: &[u8],
    mut push: impl FnMut(&[u8]) -> bool,
) -> Option<usize> {
    let mut fed = head.len();
    if push(head) {
        return Some(fed);
    }
    // Twice the limit: far enough to see that the limit holds, not so far the test is slow.
    while fed < 2 * MAX_EVENT {
        fed += piece.len();
        if push(piece) {
            return Some(fed);
        }
    }
    None
}

/// A line or event that never ends is cut off at the limit, in every parser, whatever it is
/// made of, instead of growing without bound.
#[test]
fn endless_events_and_lines_are_cut_off() {
    let x = vec![b'x'; 64 * 1024];
    let many_data_lines =
        b"data: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"
            .repeat(800);
    let sse_cases: [(&[u8], &[u8]); 3] = [
        (b"data: ", &x),
        (b"", &many_data_lines),
        (b": comment that never ends ", &x),
    ];
    // The limit counts the event's data; raw bytes also carry each line's `data: ` and end.
    let limit = MAX_EVENT + MAX_EVENT / 8 + 2 * 64 * 1024;
    for (head, piece) in sse_cases {
        let mut s = SseSplitter::default();
        let fed = bytes_until_cut_off(head, piece, |b| {
            let mut out = Vec::new();
            s.push(b, &mut out);
            out.contains(&Framed::TooLarge)
        });
        assert!(fed.is_some_and(|n| n <= limit), "sse {:?}: {fed:?}", &head);
        let mut d = SseDecoder::default();
        let fed = bytes_until_cut_off(head, piece, |b| d.push(b, &mut Vec::new()).is_err());
        assert!(
            fed.is_some_and(|n| n <= limit),
            "openai {:?}: {fed:?}",
            &head
        );
        let mut d = decoder(Dialect::Gemini);
        let fed = bytes_until_cut_off(head, piece, |b| d.push(b, &mut Vec::new()).is_err());
        assert!(
            fed.is_some_and(|n| n <= limit),
            "gemini {:?}: {fed:?}",
            &head
        );
    }
    let mut s = LineSplitter::default();
    let fed = bytes_until_cut_off(b"{\"message\":", &x, |b| {
        let mut out = Vec::new();
        s.push(b, &mut out);
        out.contains(&Framed::TooLarge)
    });
    assert!(fed.is_some_and(|n| n <= limit), "ndjson: {fed:?}");
    let mut d = decoder(Dialect::Ollama);
    let fed = bytes_until_cut_off(b"{\"message\":", &x, |b| {
        d.push(b, &mut Vec::new()).is_err()
    });
    assert!(fed.is_some_and(|n| n <= limit), "ollama: {fed:?}");
}

/// Found by the stream decoders' fuzz targets: token counts near `u64::MAX` from an upstream overflowed
/// the total (a panic in a debug build, a wrapped total in a release one); totals saturate now.
#[test]
fn huge_token_counts_do_not_overflow() {
    let streams: [(Dialect, &[u8]); 3] = [
        (
            Dialect::OpenAi,
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":18446744073709551615,\
              \"completion_tokens\":2}}\n\n",
        ),
        (
            Dialect::Gemini,
            b"data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":1,\
              \"candidatesTokenCount\":18446744073709551615,\"thoughtsTokenCount\":2}}\n\n",
        ),
        (
            Dialect::Ollama,
            b"{\"done\":true,\"prompt_eval_count\":18446744073709551615,\"eval_count\":2}\n",
        ),
    ];
    for (dialect, bytes) in streams {
        let result = std::panic::catch_unwind(|| decode(decoder(dialect), &[bytes]));
        let (emits, _) = result.unwrap_or_else(|_| panic!("{dialect:?}: panicked"));
        for e in emits {
            if let Emit::Usage(u) = e {
                assert!(
                    u.total_tokens >= u.prompt_tokens.max(u.completion_tokens),
                    "{dialect:?}: {u:?}"
                );
            }
        }
    }
}
