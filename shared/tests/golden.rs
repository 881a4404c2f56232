//! Golden fixtures pin the wire format: each must decode, carry the typed body it claims, and
//! encode back to the same JSON.

use axon_shared::*;
use serde_json::Value;

fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn round_trip(name: &str) -> Frame {
    let text = fixture(name);
    let frame = Frame::decode(&text, DEFAULT_MAX_FRAME).unwrap_or_else(|e| panic!("{name}: {e}"));
    let again: Value = serde_json::from_str(&frame.encode()).expect("encoded frame is JSON");
    let original: Value = serde_json::from_str(&text).expect("fixture is JSON");
    assert_eq!(again, original, "{name} does not round-trip");
    frame
}

#[test]
fn every_fixture_round_trips() {
    let dir = format!("{}/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("fixtures dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8 name");
        round_trip(&name);
        count += 1;
    }
    assert!(
        count >= 8,
        "expected the fixtures to be there, found {count}"
    );
}

#[test]
fn hello_fixture_has_typed_body() {
    let Frame::Request(req) = round_trip("request_hello.json") else {
        panic!("hello is a request")
    };
    assert_eq!(req.op, op::HELLO);
    let hello: Hello = req.body_as().expect("typed hello");
    assert_eq!(hello.host.cpus, 16);
    assert!(hello.capabilities.ollama && !hello.capabilities.sdxl);
}

#[test]
fn welcome_and_error_fixtures_have_typed_bodies() {
    let Frame::Response(ok) = round_trip("response_welcome.json") else {
        panic!("welcome is a response")
    };
    let welcome: Welcome = ok.into_result().expect("welcome body");
    assert_eq!(welcome.max_frame_bytes, DEFAULT_MAX_FRAME);

    let Frame::Response(failed) = round_trip("response_error.json") else {
        panic!("error is a response")
    };
    let err = failed.into_result::<Value>().expect_err("error response");
    assert_eq!(err.code, ErrorCode::UnknownOp);

    let Frame::Response(pong) = round_trip("response_pong.json") else {
        panic!("pong is a response")
    };
    assert_eq!(
        pong.into_result::<Pong>().expect("pong").agent_time_ms,
        1_764_100_000_123
    );
}

#[test]
fn chunk_final_flag_uses_wire_name() {
    let Frame::Chunk(chunk) = round_trip("chunk_stdout.json") else {
        panic!("chunk")
    };
    assert!(!chunk.last);
    assert!(Frame::Chunk(chunk).encode().contains("\"final\":false"));
}

#[test]
fn oversized_frame_is_refused_before_parsing() {
    let big = format!(
        "{{\"kind\":\"event\",\"v\":1,\"topic\":\"x\",\"seq\":1,\"body\":\"{}\"}}",
        "a".repeat(2048)
    );
    match Frame::decode(&big, 1024) {
        Err(ProtocolError::TooLarge { size, limit: 1024 }) => assert_eq!(size, big.len()),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn malformed_and_invalid_frames_are_refused() {
    let cases = [
        "",
        "not json",
        "[]",
        r#"{"kind":"telepathy","v":1}"#,
        r#"{"kind":"request","v":1,"id":"a"}"#,
        r#"{"kind":"request","v":1,"id":"","op":"ping"}"#,
        r#"{"kind":"request","v":1,"id":"a","op":"bad op!"}"#,
        r#"{"kind":"request","v":1,"id":"a","op":"ping","extra":1}"#,
        r#"{"kind":"response","v":1,"id":"a","ok":true,"error":{"code":"internal","message":"x"}}"#,
        r#"{"kind":"response","v":1,"id":"a","ok":false}"#,
        r#"{"kind":"event","v":1,"topic":"","seq":1}"#,
        r#"{"kind":"request","v":-1,"id":"a","op":"ping"}"#,
    ];
    for case in cases {
        assert!(
            Frame::decode(case, DEFAULT_MAX_FRAME).is_err(),
            "accepted: {case}"
        );
    }
    let long_id = format!(
        r#"{{"kind":"request","v":1,"id":"{}","op":"ping"}}"#,
        "x".repeat(65)
    );
    assert!(Frame::decode(&long_id, DEFAULT_MAX_FRAME).is_err());
}

#[test]
fn future_version_is_refused_with_its_own_code() {
    let err = Frame::decode(
        r#"{"kind":"request","v":99,"id":"a","op":"ping"}"#,
        DEFAULT_MAX_FRAME,
    )
    .expect_err("v99");
    assert_eq!(err.code(), ErrorCode::UnsupportedVersion);
}

#[test]
fn unknown_error_code_from_newer_peer_is_tolerated() {
    let text = r#"{"kind":"response","v":1,"id":"a","ok":false,"error":{"code":"quota_exceeded","message":"m"}}"#;
    let Frame::Response(r) = Frame::decode(text, DEFAULT_MAX_FRAME).expect("decodes") else {
        panic!("response")
    };
    assert_eq!(r.error.map(|e| e.code), Some(ErrorCode::Other));
}

#[test]
fn service_fixtures_have_typed_bodies() {
    let Frame::Request(req) = round_trip("request_container_run.json") else {
        panic!("container.run is a request")
    };
    assert_eq!(req.op, op::CONTAINER_RUN);
    let run: ContainerRun = req.body_as().expect("typed run");
    assert_eq!(run.mounts[0].target, "/data");
    assert!(run.mounts[0].read_only);
    assert_eq!(run.ports[0].host_port, Some(18080));

    let Frame::Event(event) = round_trip("event_service.json") else {
        panic!("service change is an event")
    };
    assert_eq!(event.topic, topic::SERVICE);
    let change: ServiceEvent = serde_json::from_value(event.body).expect("typed event");
    assert_eq!(change.action.as_deref(), Some("die"));
    assert!(change.job_result.is_none());

    let Frame::Chunk(chunk) = round_trip("chunk_log.json") else {
        panic!("log line is a chunk")
    };
    let line: LogLine = serde_json::from_str(&chunk.data).expect("typed log line");
    assert_eq!(line.priority, Some(6));
}

#[test]
fn llm_forward_fixtures_have_typed_bodies() {
    let Frame::Request(req) = round_trip("request_llm_forward.json") else {
        panic!("llm.forward is a request")
    };
    assert_eq!(req.op, op::LLM_FORWARD);
    let forward: LlmForward = req.body_as().expect("typed forward");
    assert_eq!(forward.server, ModelServerKind::Ollama);
    assert_eq!(forward.path, "/api/chat");
    let inner: Value = serde_json::from_str(forward.body.as_deref().expect("body")).expect("json");
    assert_eq!(inner["stream"], true);

    let Frame::Response(resp) = round_trip("response_llm_forwarded.json") else {
        panic!("the forwarded head is a response")
    };
    let head: LlmForwarded = resp.into_result().expect("typed head");
    assert_eq!(head.status, 503);
    assert_eq!(head.retry_after.as_deref(), Some("5"));

    let Frame::Chunk(body) = round_trip("chunk_llm_body.json") else {
        panic!("body is a chunk")
    };
    assert_eq!(
        (body.stream.as_str(), body.seq, body.last),
        (stream::BODY, 0, false)
    );
    assert!(body.data.contains("Grüße") && body.data.ends_with('\n'));
    let Frame::Chunk(failed) = round_trip("chunk_llm_error.json") else {
        panic!("error is a chunk")
    };
    assert!(failed.last && failed.stream == stream::ERROR);

    let Frame::Request(ack) = round_trip("request_stream_ack.json") else {
        panic!("stream.ack is a request")
    };
    assert_eq!(ack.op, op::STREAM_ACK);
    let ack: StreamAck = ack.body_as().expect("typed ack");
    assert_eq!(ack.seq, 6);

    // The server names are snake_case, and unknown ones are refused.
    let sdxl: LlmForward =
        serde_json::from_str(r#"{"server":"sdxl","method":"GET","path":"/sdapi/v1/progress"}"#)
            .expect("sdxl");
    assert_eq!(sdxl.server, ModelServerKind::Sdxl);
    assert!(sdxl.body.is_none());
    assert!(
        serde_json::from_str::<LlmForward>(r#"{"server":"comfy","method":"GET","path":"/"}"#)
            .is_err()
    );
}
