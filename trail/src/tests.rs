use super::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rec {
    seq: u64,
    what: String,
    prev_hash: String,
    hash: String,
}

axon_shared::chained_record!(Rec);

fn rec(what: &str) -> Rec {
    Rec {
        seq: 0,
        what: what.into(),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

fn config(dir: &Path, max: u64) -> TrailConfig {
    TrailConfig::new(dir, "audit.jsonl", max, 3)
}

/// A trail in `dir` holding `n` records, closed again.
fn written(dir: &Path, n: usize) -> TrailConfig {
    let cfg = config(dir, 1 << 20);
    let (mut trail, _) = TrailFile::open::<Rec>(cfg.clone()).expect("open");
    append(&mut trail, n);
    cfg
}

fn append(trail: &mut TrailFile, n: usize) {
    let mut records: Vec<Rec> = (0..n).map(|i| rec(&format!("r{i}"))).collect();
    trail.append(&mut records).expect("append");
}

#[test]
fn appends_rotate_and_verify_as_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 400);
    {
        let (mut trail, opened) = TrailFile::open::<Rec>(cfg.clone()).expect("open");
        assert_eq!(opened, Opened::default());
        append(&mut trail, 4);
        append(&mut trail, 4);
    }
    let (mut trail, _) = TrailFile::open::<Rec>(cfg.clone()).expect("reopen");
    assert_eq!(trail.head().map(|h| h.0), Some(8));
    append(&mut trail, 2);
    assert!(cfg.rotated(1).exists(), "rotated");
    assert!(std::fs::metadata(cfg.current()).expect("meta").len() <= 400);
    let verified = verify::<Rec>(&cfg).expect("verifies");
    assert_eq!(verified.head, Some(10));
    assert!(verified.files >= 2);
    let after: Vec<Rec> = trail.records_after(3).expect("read");
    assert_eq!(
        after.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (4..=10).collect::<Vec<_>>()
    );
}

#[test]
fn cutting_the_end_is_detected_and_the_chain_goes_on_past_the_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = written(dir.path(), 5);
    let text = std::fs::read_to_string(cfg.current()).expect("read");
    let kept: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(cfg.current(), kept.join("\n") + "\n").expect("cut");
    match verify::<Rec>(&cfg) {
        Err(TrailError::Cut {
            reason: ChainBreak::Truncated { last: 3, head: 5 },
            ..
        }) => {}
        other => panic!("expected a cut trail, got {other:?}"),
    }
    // Reopening says so and continues after the signed head, so the gap stays in the file.
    let (mut trail, opened) = TrailFile::open::<Rec>(cfg.clone()).expect("reopen");
    assert_eq!(opened.cut, Some((3, 5)));
    append(&mut trail, 1);
    assert_eq!(trail.head().map(|h| h.0), Some(6));
    assert!(matches!(
        verify::<Rec>(&cfg),
        Err(TrailError::Broken { line: 4, .. })
    ));
}

#[test]
fn a_removed_or_forged_head_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = written(dir.path(), 3);
    let signed = std::fs::read_to_string(cfg.head_path()).expect("head");
    std::fs::remove_file(cfg.head_path()).expect("remove");
    assert!(matches!(verify::<Rec>(&cfg), Err(TrailError::Head { .. })));
    let mut forged: Checkpoint = serde_json::from_str(&signed).expect("parse");
    forged.seq = 2;
    std::fs::write(cfg.head_path(), serde_json::to_vec(&forged).expect("json")).expect("write");
    assert!(matches!(verify::<Rec>(&cfg), Err(TrailError::Head { .. })));
    std::fs::write(cfg.head_path(), signed).expect("restore");
    assert_eq!(verify::<Rec>(&cfg).expect("verifies").records, 3);
}

#[test]
fn a_torn_last_line_is_cut_off_on_open_and_a_damaged_line_is_named_by_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = written(dir.path(), 1);
    let mut f = OpenOptions::new()
        .append(true)
        .open(cfg.current())
        .expect("open");
    f.write_all(b"{\"seq\":2,\"wh").expect("torn");
    drop(f);
    let (mut trail, _) = TrailFile::open::<Rec>(cfg.clone()).expect("reopens");
    append(&mut trail, 1);
    assert_eq!(trail.head().map(|h| h.0), Some(2));
    drop(trail);
    assert_eq!(verify::<Rec>(&cfg).expect("verifies").records, 2);
    let text = std::fs::read_to_string(cfg.current()).expect("read");
    assert_eq!(text.lines().count(), 2, "the torn fragment is gone: {text}");

    // A line damaged in the middle is not a crash's doing: verify names it.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(1, "{\"seq\":2,\"wh");
    std::fs::write(cfg.current(), lines.join("\n") + "\n").expect("write");
    assert!(matches!(
        verify::<Rec>(&cfg),
        Err(TrailError::Unreadable { line: 2, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_commits_concurrent_records_as_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 1 << 20);
    let (trail, _) = TrailFile::open::<Rec>(cfg.clone()).expect("open");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let writer = Arc::new(Writer::start(
        trail,
        16,
        Box::new(move |records: &[Rec]| {
            sink.lock()
                .expect("lock")
                .extend(records.iter().map(|r| r.seq));
            Ok(())
        }),
    ));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.write(rec(&format!("w{i}"))).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("written");
    }
    assert!(writer.submit(rec("queued")));
    drop(Arc::into_inner(writer).expect("last handle"));
    assert_eq!(*seen.lock().expect("lock"), (1..=201).collect::<Vec<u64>>());
    assert_eq!(verify::<Rec>(&cfg).expect("verifies").records, 201);
}

#[test]
fn a_failed_append_leaves_the_chain_where_it_was() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(dir.path(), 1 << 20);
    let (mut trail, _) = TrailFile::open::<Rec>(cfg.clone()).expect("open");
    append(&mut trail, 3);
    // The disk refuses the next group (`/dev/full` answers every write with ENOSPC).
    let real = std::mem::replace(
        &mut trail.file,
        OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .expect("/dev/full"),
    );
    let mut refused = vec![rec("lost-1"), rec("lost-2")];
    assert!(trail.append(&mut refused).is_err());
    assert_eq!(trail.head().map(|(seq, _)| seq), Some(3), "head unchanged");
    // Space back: the chain goes on from record 3, with no gap and no duplicate number.
    trail.file = real;
    append(&mut trail, 2);
    assert_eq!(trail.head().map(|(seq, _)| seq), Some(5));
    drop(trail);
    assert_eq!(verify::<Rec>(&cfg).expect("verifies").records, 5);
}

#[tokio::test]
async fn a_caller_learns_whether_records_queued_since_its_mark_were_written() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(dir.path(), 1 << 20);
    let (trail, _) = TrailFile::open::<Rec>(cfg.clone()).expect("open");
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failing = refuse.clone();
    let writer = Writer::start(
        trail,
        16,
        Box::new(move |_: &[Rec]| {
            if failing.load(std::sync::atomic::Ordering::SeqCst) {
                Err("index refused".into())
            } else {
                Ok(())
            }
        }),
    );
    let limit = std::time::Duration::from_secs(5);
    let mark = writer.mark();
    assert!(writer.submit(rec("fine")));
    assert!(writer.written_since(mark, limit).await, "written");

    refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let mark = writer.mark();
    assert!(writer.submit(rec("refused")));
    assert!(
        !writer.written_since(mark, limit).await,
        "a failure is reported"
    );

    refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    let mark = writer.mark();
    assert!(writer.submit(rec("fine again")));
    assert!(
        writer.written_since(mark, limit).await,
        "a new mark starts clean"
    );
}

/// A reader beside the writer gets exactly the records after a number, across rotated files,
/// at most as many as asked; past rotation's end it starts at the oldest record kept.
#[test]
fn read_after_pages_through_rotated_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 300);
    let (mut trail, _) = TrailFile::open::<Rec>(cfg.clone()).expect("open");
    for _ in 0..6 {
        append(&mut trail, 2);
    }
    assert!(cfg.rotated(2).exists(), "spans several files");
    let seqs = |after: u64, limit: usize| -> Vec<u64> {
        read_after::<Rec>(&cfg, after, limit)
            .expect("read")
            .iter()
            .map(|r| r.seq)
            .collect()
    };
    let all: Vec<u64> = trail
        .records_after::<Rec>(0)
        .expect("all")
        .iter()
        .map(|r| r.seq)
        .collect();
    let oldest = all[0];
    assert_eq!(seqs(oldest, 3), [oldest + 1, oldest + 2, oldest + 3]);
    assert_eq!(seqs(10, 100), [11, 12]);
    assert_eq!(seqs(12, 100), Vec::<u64>::new());
    // Everything after a number older than the oldest kept file: from the oldest on.
    assert_eq!(seqs(0, 100), all);
    assert!(oldest > 1, "rotation dropped the first records");
}
