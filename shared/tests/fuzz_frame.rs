//! Fuzz target for the frame decoder: arbitrary text and mutated frames never panic, anything
//! over the limit is refused unparsed, whatever decodes obeys the protocol's rules, and a
//! valid frame survives encode and decode unchanged.
//!
//! `PROPTEST_CASES` sets the cases per property; `scripts/fuzz` runs these for long.

use axon_shared::*;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Map, Number, Value};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Relative to the crate directory, where `cargo test` runs; committed, so a case
        // that once failed replays on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz_frame.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// The rules a decoded frame must obey, written apart from the decoder's own checks.
fn obeys_rules(frame: &Frame) -> bool {
    let id_ok = |id: &str| !id.is_empty() && id.len() <= MAX_ID_LEN;
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= MAX_OP_LEN
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    let version_ok = (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&frame.version());
    version_ok
        && match frame {
            Frame::Request(r) => id_ok(&r.id) && name_ok(&r.op),
            Frame::Response(r) => id_ok(&r.id) && r.ok == r.error.is_none(),
            Frame::Event(e) => name_ok(&e.topic),
            Frame::Chunk(c) => id_ok(&c.id),
        }
}

/// A response body of `null` is sent as `"body":null` and read back as no body; both mean
/// the same to every reader (`into_result`), so the comparison treats them as one.
fn normalized(mut frame: Frame) -> Frame {
    if let Frame::Response(r) = &mut frame
        && r.body == Some(Value::Null)
    {
        r.body = None;
    }
    frame
}

/// Whether two frames carry the same content, a `null` response body and none counting as
/// one. Exact, floats included: the workspace builds serde_json with `float_roundtrip` (see
/// `a_float_in_a_body_survives_the_link_exactly`).
fn same(a: Frame, b: Frame) -> bool {
    normalized(a) == normalized(b)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // JSON has no NaN or infinity: those become null, as serde_json writes them.
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Ids: valid ones (ULID-like, or up to 16 characters of anything: at most 64 bytes), and
/// when `valid` is false also empty, too long or odd ones.
fn id(valid: bool) -> BoxedStrategy<String> {
    let good = prop_oneof![3 => "[0-9A-HJKMNP-TV-Z]{26}", 1 => ".{1,16}"];
    if valid {
        return good.boxed();
    }
    prop_oneof![
        6 => good,
        1 => Just(String::new()),
        1 => ".{60,70}",
        1 => "[a-z]{65}",
    ]
    .boxed()
}

/// Operation and topic names, valid or, when `valid` is false, sometimes with characters or
/// lengths the protocol refuses.
fn name(valid: bool) -> BoxedStrategy<String> {
    let good = "[A-Za-z0-9._-]{1,64}";
    if valid {
        return good.boxed();
    }
    prop_oneof![
        6 => good,
        1 => Just(String::new()),
        1 => "[a-z]{65}",
        2 => ".{1,20}",
    ]
    .boxed()
}

fn version(valid: bool) -> BoxedStrategy<u32> {
    if valid {
        return (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).boxed();
    }
    prop_oneof![
        8 => Just(PROTOCOL_VERSION),
        1 => Just(MIN_PROTOCOL_VERSION.saturating_sub(1)),
        1 => Just(PROTOCOL_VERSION + 1),
        1 => any::<u32>(),
    ]
    .boxed()
}

fn wire_error() -> impl Strategy<Value = WireError> {
    let code = prop::sample::select(vec![
        ErrorCode::BadRequest,
        ErrorCode::UnknownOp,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::Timeout,
        ErrorCode::Unavailable,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::Other,
    ]);
    (code, any::<String>()).prop_map(|(code, message)| WireError { code, message })
}

/// Frames of every kind: valid ones, or (`valid` false) also ones breaking a rule. Built
/// valid rather than filtered, so long runs do not run out of rejects.
fn frame_of(valid: bool) -> impl Strategy<Value = Frame> {
    let response = (
        version(valid),
        id(valid),
        any::<bool>(),
        prop::option::of(json_value()),
        prop::option::of(wire_error()),
        any::<bool>(),
    )
        .prop_map(move |(v, id, ok, body, error, consistent)| {
            let error = match (valid || consistent, ok) {
                (true, true) => None,
                (true, false) => Some(error.unwrap_or(WireError {
                    code: ErrorCode::Internal,
                    message: String::new(),
                })),
                (false, _) => error,
            };
            Frame::Response(Response {
                v,
                id,
                ok,
                body,
                error,
            })
        });
    prop_oneof![
        (version(valid), id(valid), name(valid), json_value())
            .prop_map(|(v, id, op, body)| Frame::Request(Request { v, id, op, body })),
        response,
        (version(valid), name(valid), any::<u64>(), json_value()).prop_map(
            |(v, topic, seq, body)| Frame::Event(Event {
                v,
                topic,
                seq,
                body
            })
        ),
        (
            version(valid),
            id(valid),
            any::<u64>(),
            any::<bool>(),
            ".{0,12}",
            any::<String>(),
        )
            .prop_map(|(v, id, seq, last, stream, data)| {
                Frame::Chunk(Chunk {
                    v,
                    id,
                    seq,
                    last,
                    stream,
                    data,
                })
            }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    frame_of(false)
}

fn valid_frame() -> impl Strategy<Value = Frame> {
    frame_of(true)
}

/// Bits of JSON and of the envelope a mutation splices in.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "-0",
    "1e999",
    "18446744073709551616",
    "-9223372036854775809",
    "\"kind\"",
    "\"request\"",
    "\"response\"",
    "\"event\"",
    "\"chunk\"",
    "\"v\":1",
    "\"v\":0",
    "\"v\":4294967296",
    "\"id\":\"\"",
    "\"ok\":true",
    "\"error\":null",
    "\"final\":true",
    "\"body\":",
    "\"x\":1",
    "é",
    "\u{feff}",
    "\u{10ffff}",
    " ",
    "\n",
];

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    Insert(Index, u8),
    InsertToken(Index, Index),
    Delete(Index, usize),
    Duplicate(Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::InsertToken(i, t)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1usize..32).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

/// Applies mutations to the bytes of `text`; invalid UTF-8 is replaced, as the link only
/// carries text messages.
fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for m in mutations {
        let at = |i: &Index, len: usize| i.index(len + 1);
        match m {
            Mutation::FlipBit(i, bit) if !bytes.is_empty() => {
                let p = i.index(bytes.len());
                bytes[p] ^= 1 << bit;
            }
            Mutation::Insert(i, b) => {
                let p = at(i, bytes.len());
                bytes.insert(p, *b);
            }
            Mutation::InsertToken(i, t) => {
                let p = at(i, bytes.len());
                let token = TOKENS[t.index(TOKENS.len())].as_bytes();
                bytes.splice(p..p, token.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let p = at(i, bytes.len());
                let end = (p + n).min(bytes.len());
                bytes.drain(p..end);
            }
            Mutation::Duplicate(i, n) => {
                let p = at(i, bytes.len());
                let end = (p + n).min(bytes.len());
                let copy = bytes[p..end].to_vec();
                bytes.splice(end..end, copy);
            }
            Mutation::Truncate(i) => {
                let p = at(i, bytes.len());
                bytes.truncate(p);
            }
            Mutation::FlipBit(..) => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// What every decode must satisfy, whatever the input.
fn check_decode(text: &str, max: usize) -> Result<(), TestCaseError> {
    let result = Frame::decode(text, max);
    if text.len() > max {
        match result {
            Err(ProtocolError::TooLarge { size, limit }) => {
                prop_assert_eq!(size, text.len());
                prop_assert_eq!(limit, max);
            }
            other => prop_assert!(
                false,
                "{} bytes over a limit of {max}: {other:?}",
                text.len()
            ),
        }
        return Ok(());
    }
    match result {
        Err(ProtocolError::TooLarge { .. }) => {
            prop_assert!(false, "{} bytes refused as over {max}", text.len());
        }
        Err(_) => {}
        Ok(frame) => {
            prop_assert!(
                obeys_rules(&frame),
                "accepted a frame that breaks a rule: {frame:?}"
            );
            // What was accepted once is accepted again after re-encoding, unchanged.
            let again = Frame::decode(&frame.encode(), usize::MAX)
                .map_err(|e| TestCaseError::fail(format!("re-encoded frame refused: {e}")))?;
            prop_assert!(same(again.clone(), frame.clone()), "{again:?} != {frame:?}");
        }
    }
    Ok(())
}

fn arbitrary_text() -> impl Strategy<Value = (String, usize)> {
    (any::<String>(), 0usize..600)
}

fn check_arbitrary_text((text, max): (String, usize)) -> Result<(), TestCaseError> {
    check_decode(&text, max)?;
    check_decode(&text, DEFAULT_MAX_FRAME)
}

fn check_round_trip(frame: Frame) -> Result<(), TestCaseError> {
    let text = frame.encode();
    let decoded = Frame::decode(&text, text.len())
        .map_err(|e| TestCaseError::fail(format!("valid frame refused: {e}: {text}")))?;
    prop_assert!(
        same(decoded.clone(), frame.clone()),
        "{decoded:?} != {frame:?}"
    );
    // One byte over the limit is enough to refuse it unparsed.
    let over = Frame::decode(&text, text.len() - 1);
    prop_assert!(
        matches!(over, Err(ProtocolError::TooLarge { .. })),
        "{:?}",
        over
    );
    Ok(())
}

fn check_rule_breaking(frame: Frame) -> Result<(), TestCaseError> {
    let text = frame.encode();
    let decoded = Frame::decode(&text, DEFAULT_MAX_FRAME);
    if obeys_rules(&frame) {
        prop_assert!(decoded.is_ok(), "{:?}", decoded);
    } else {
        prop_assert!(
            matches!(
                decoded,
                Err(ProtocolError::Invalid(_) | ProtocolError::Version { .. })
            ),
            "{text} gave {decoded:?}"
        );
    }
    Ok(())
}

fn mutated() -> impl Strategy<Value = (Frame, Vec<Mutation>, usize)> {
    (
        valid_frame(),
        prop::collection::vec(mutation(), 1..6),
        prop_oneof![Just(DEFAULT_MAX_FRAME), 0usize..400],
    )
}

fn check_mutated(
    (frame, mutations, max): (Frame, Vec<Mutation>, usize),
) -> Result<(), TestCaseError> {
    check_decode(&mutate(&frame.encode(), &mutations), max)
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn fuzz_arbitrary_text(case in arbitrary_text()) {
        check_arbitrary_text(case)?;
    }

    #[test]
    fn fuzz_valid_frames_round_trip(frame in valid_frame()) {
        check_round_trip(frame)?;
    }

    #[test]
    fn fuzz_rule_breaking_frames_are_refused(frame in frame()) {
        check_rule_breaking(frame)?;
    }

    #[test]
    fn fuzz_mutated_frames(case in mutated()) {
        check_mutated(case)?;
    }
}

/// Coverage-guided entry (`fuzz/`): two bytes of size limit, then the text. libFuzzer's
/// mutations of the seed frames (`fuzz/seeds/frame/`) are the mutated frames here.
pub fn fuzz_bytes(data: &[u8]) {
    let mut b = axon_fuzzkit::Bytes::new(data);
    let max = usize::from(b.u16());
    if let Ok(text) = std::str::from_utf8(b.rest()) {
        axon_fuzzkit::holds(check_arbitrary_text((text.to_owned(), max)));
    }
}

/// What the coverage-guided fuzzer found (`fuzz/regressions/frame/`), its seeds, and fixed
/// inputs, through the same entry.
#[test]
fn coverage_guided_inputs_replay() {
    let fuzz_dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz"));
    assert!(axon_fuzzkit::replay(fuzz_dir, "frame", 512, fuzz_bytes) >= 512);
}

/// Found by `fuzz_valid_frames_round_trip`: a float in a body came back a unit in the last
/// place off, because serde_json parses floats exactly only with its `float_roundtrip`
/// feature, which the workspace now turns on.
#[test]
fn a_float_in_a_body_survives_the_link_exactly() {
    let frame = Frame::Event(Event {
        v: PROTOCOL_VERSION,
        topic: "a".into(),
        seq: 0,
        body: serde_json::json!([-9.390026195415596e183]),
    });
    let decoded = Frame::decode(&frame.encode(), DEFAULT_MAX_FRAME).expect("valid frame");
    assert_eq!(decoded, frame);
}
