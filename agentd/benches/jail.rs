//! File-jail path resolution cost. Run: `cargo bench -p agentd --bench jail`.

use agentd::jail::{Jail, Mode, RootSpec};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let deep = tmp.path().join("a/b/c/d/e");
    std::fs::create_dir_all(&deep).expect("dirs");
    std::fs::write(deep.join("f.txt"), vec![b'x'; 4096]).expect("file");
    std::fs::write(tmp.path().join("top.txt"), b"hello").expect("file");
    let jail = Jail::open(&[RootSpec {
        name: "r".into(),
        path: tmp.path().to_path_buf(),
        mode: Mode::ReadWrite,
        max_file_size: None,
    }])
    .expect("jail");
    let mut group = c.benchmark_group("jail");
    group.bench_function("stat depth 1", |b| {
        b.iter(|| jail.stat(black_box("r/top.txt")).expect("stat"))
    });
    group.bench_function("stat depth 6", |b| {
        b.iter(|| jail.stat(black_box("r/a/b/c/d/e/f.txt")).expect("stat"))
    });
    group.bench_function("refuse escape", |b| {
        b.iter(|| {
            jail.stat(black_box("r/a/../../etc/passwd"))
                .expect_err("refused")
        })
    });
    group.bench_function("read 4 KiB depth 6 (with etag)", |b| {
        b.iter(|| {
            jail.read(black_box("r/a/b/c/d/e/f.txt"), 0, None)
                .expect("read")
        })
    });
    group.bench_function("std::fs::metadata depth 6 (unconfined baseline)", |b| {
        b.iter(|| std::fs::metadata(black_box(deep.join("f.txt"))).expect("metadata"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
