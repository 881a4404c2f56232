//! Envelope encode/decode throughput. Run: `cargo bench -p axon-shared --bench envelope`.

use axon_shared::{DEFAULT_MAX_FRAME, Frame, Request, Response};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;

fn frames() -> Vec<(&'static str, Frame)> {
    let small = Request::new(
        "01JDQ40A2B4C6D8E0F2G4H6J8M",
        "ping",
        &serde_json::Value::Null,
    );
    let hello: Frame =
        serde_json::from_str(include_str!("../fixtures/request_hello.json")).expect("fixture");
    let output = "x".repeat(64 * 1024);
    let large = Response::ok(
        "01JDQ40A2B4C6D8E0F2G4H6J8M",
        &json!({"exit_code": 0, "stdout": output}),
    );
    vec![
        ("ping", small.into()),
        ("hello", hello),
        ("64KiB response", large.into()),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    for (name, frame) in frames() {
        let text = frame.encode();
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("encode {name}"), |b| {
            b.iter(|| black_box(&frame).encode())
        });
        group.bench_function(format!("decode {name}"), |b| {
            b.iter(|| Frame::decode(black_box(&text), DEFAULT_MAX_FRAME).expect("decodes"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
