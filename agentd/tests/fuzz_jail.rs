//! Fuzz target for the file jail: sequences of operations on paths built from `..`, `.`,
//! doubled slashes, encoded dots, NUL bytes, unicode and over-long names, through real
//! symlinks that point inside the root, into the other root and outside both. Whatever an
//! operation reaches must lie inside its root (compared as canonical host paths), the decoys
//! outside and the read-only root must never change, and no input may panic.
//!
//! Every symlink target is a decoy inside the case's own temp dir, so a broken jail cannot
//! touch real files. `PROPTEST_CASES` sets the number of cases; `scripts/fuzz` runs it long.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use agentd::jail::{Jail, JailError, MAX_READ_CHUNK, Mode, RootSpec};
use axon_shared::{FsEntry, FsKind, FsListing};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::FileFailurePersistence;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Relative to the crate directory, where `cargo test` runs; committed, so a case
        // that once failed replays on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz_jail.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// A fresh tree per case: root `a` (read-write), root `b` (read-only), and decoys outside.
struct Fixture {
    tmp: tempfile::TempDir,
    jail: Jail,
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("fixture file");
}

fn link(target: impl AsRef<Path>, at: &Path) {
    std::os::unix::fs::symlink(target, at).expect("fixture symlink");
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = tmp.path();
        let (a, b, out) = (base.join("a"), base.join("b"), base.join("outside"));
        for dir in [a.join("sub/deeper"), b.clone(), out.join("d")] {
            std::fs::create_dir_all(dir).expect("fixture dir");
        }
        // Each file's content names the file, so a read shows which one it reached.
        for (root, rel) in [
            (&a, "f.txt"),
            (&a, "sub/inner.txt"),
            (&a, "sub/deeper/x.txt"),
            (&a, "%2e%2e"),
            (&a, "ünï.txt"),
            (&b, "g.txt"),
            (&out, "secret.txt"),
            (&out, "hardsecret.txt"),
            (&out, "d/deep.txt"),
        ] {
            let label = root.file_name().and_then(|n| n.to_str()).unwrap_or("?");
            write(&root.join(rel), &format!("{label}:{rel}"));
        }
        link("..", &a.join("up"));
        link("..", &a.join("sub/back"));
        link("../..", &a.join("sub/back2"));
        link("../../../outside", &a.join("sub/deeper/climb"));
        link(&out, &a.join("abs_out"));
        link(out.join("secret.txt"), &a.join("abs_secret"));
        link(a.join("sub"), &a.join("abs_in"));
        link("../outside/secret.txt", &a.join("rel_secret"));
        link("../outside/new.txt", &a.join("dangling_out"));
        link("sub/inner.txt", &a.join("rel_in"));
        link("sub", &a.join("in_dir"));
        link("../b", &a.join("cross"));
        link("../a/g.txt", &b.join("cross_back"));
        link("loop", &a.join("loop"));
        std::fs::hard_link(out.join("hardsecret.txt"), a.join("hard")).expect("hard link");
        let jail = Jail::open(&[
            RootSpec {
                name: "a".into(),
                path: a,
                mode: Mode::ReadWrite,
                max_file_size: Some(1 << 20),
            },
            RootSpec {
                name: "b".into(),
                path: b,
                mode: Mode::ReadOnly,
                max_file_size: None,
            },
        ])
        .expect("jail");
        Self { tmp, jail }
    }

    fn base(&self) -> &Path {
        self.tmp.path()
    }

    /// Everything outside root `a`: the decoys, root `b` and the base directory's own entries.
    fn outside_a(&self) -> BTreeMap<PathBuf, String> {
        let mut seen = BTreeMap::new();
        walk(self.base(), self.base(), &mut seen);
        seen.retain(|path, _| !path.starts_with("a/"));
        seen
    }
}

/// Records kind, mode, size and content (or link target) of every entry under `dir`, without
/// following symlinks.
fn walk(base: &Path, dir: &Path, seen: &mut BTreeMap<PathBuf, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path.strip_prefix(base).unwrap_or(&path).to_path_buf();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let what = if meta.file_type().is_symlink() {
            format!("link {:?}", std::fs::read_link(&path).ok())
        } else if meta.is_dir() {
            walk(base, &path, seen);
            format!("dir {:o}", meta.mode())
        } else {
            // Not the link count: deleting the hard link inside the root lowers it.
            format!("file {:o} {:?}", meta.mode(), std::fs::read(&path).ok())
        };
        seen.insert(rel, what);
    }
}

impl Drop for Fixture {
    /// A case may have taken the permissions off a directory; give them back so the temp
    /// dir can be removed.
    fn drop(&mut self) {
        fn open_up(dir: &Path) {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&entry.path());
                }
            }
        }
        open_up(self.tmp.path());
    }
}

/// Names the fixture holds, in either root or outside, plus names that are nowhere.
const NAMES: &[&str] = &[
    "f.txt",
    "sub",
    "inner.txt",
    "deeper",
    "x.txt",
    "%2e%2e",
    "ünï.txt",
    "up",
    "back",
    "back2",
    "climb",
    "abs_out",
    "abs_secret",
    "abs_in",
    "rel_secret",
    "dangling_out",
    "rel_in",
    "in_dir",
    "cross",
    "cross_back",
    "loop",
    "hard",
    "g.txt",
    "secret.txt",
    "hardsecret.txt",
    "deep.txt",
    "d",
    "outside",
    "a",
    "b",
    "new.txt",
    "new",
];

/// Segments that mean something special somewhere: to a shell, a URL decoder, Windows, a
/// unicode normaliser, a C string.
const ODD: &[&str] = &[
    ".",
    "..",
    "",
    "...",
    "%2e",
    "%2e%2e",
    "%2f",
    "..%2f..",
    "..\\..",
    "\u{ff0e}\u{ff0e}",
    "\u{2024}\u{2024}",
    "..\u{2215}..",
    "~",
    "*",
    "\0",
    "x\0y",
    "\n",
    "\u{7f}",
    "\u{1b}[0m",
    "\u{202e}txt.exe",
];

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => select(NAMES).prop_map(str::to_owned),
        4 => select(ODD).prop_map(str::to_owned),
        1 => Just("n".repeat(255)),
        1 => Just("é".repeat(128)),
        1 => ".{0,6}",
    ]
}

/// Addresses as text: mostly root `a` with names from the fixture, sometimes anything.
fn text_path() -> impl Strategy<Value = String> {
    let prefix = select(
        &[
            "a", "a", "a", "b", "/a", "//a", "./a", "", "/", "c", "A", "a/",
        ][..],
    );
    let separator = select(&["/", "/", "/", "//", "/./"][..]);
    prop_oneof![
        20 => (prefix, prop::collection::vec((separator, segment()), 0..6)).prop_map(
            |(prefix, rest)| {
                let mut path = prefix.to_owned();
                for (sep, seg) in rest {
                    path.push_str(sep);
                    path.push_str(&seg);
                }
                path
            }
        ),
        1 => Just(format!("a{}", "/sub".repeat(1100))),
        1 => any::<String>(),
    ]
}

/// How a case names a path: as text, or as a walk down the tree as the host sees it at that
/// moment (following every symlink, out of the root too), so that most addresses name
/// something that exists, inside or outside.
#[derive(Debug, Clone)]
enum PathGen {
    Text(String),
    Walk {
        root_b: bool,
        lead: &'static str,
        steps: Vec<(Index, &'static str)>,
        tail: &'static str,
    },
}

fn path() -> impl Strategy<Value = PathGen> {
    let walk = (
        prop::bool::weighted(0.15),
        select(&["", "", "", "/", "//"][..]),
        prop::collection::vec(
            (any::<Index>(), select(&["/", "/", "/", "//", "/./"][..])),
            0..5,
        ),
        select(&["", "", "", "", "/", "/.", "/new.txt", "/newdir/x", "/.."][..]),
    )
        .prop_map(|(root_b, lead, steps, tail)| PathGen::Walk {
            root_b,
            lead,
            steps,
            tail,
        });
    prop_oneof![3 => walk, 1 => text_path().prop_map(PathGen::Text)]
}

fn resolve(base: &Path, path: &PathGen) -> String {
    let PathGen::Walk {
        root_b,
        lead,
        steps,
        tail,
    } = path
    else {
        let PathGen::Text(text) = path else {
            return String::new();
        };
        return text.clone();
    };
    let root = if *root_b { "b" } else { "a" };
    let mut text = format!("{lead}{root}");
    let mut host = base.join(root);
    for (index, separator) in steps {
        let Ok(entries) = std::fs::read_dir(&host) else {
            break;
        };
        let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        if names.is_empty() {
            break;
        }
        names.sort();
        let name = &names[index.index(names.len())];
        text.push_str(separator);
        text.push_str(&name.to_string_lossy());
        host.push(name);
        if !host.is_dir() {
            break;
        }
    }
    text.push_str(tail);
    text
}

#[derive(Debug, Clone)]
enum Op<P = String> {
    Stat(P),
    List(P),
    Read(P, u64, Option<u64>),
    Write(P, Vec<u8>, Option<String>),
    Mkdir(P, bool),
    Chmod(P, u32),
    Delete(P, bool),
    Rename(P, P),
}

impl Op<PathGen> {
    /// The operation with its paths as text, named against the tree as it is now.
    fn resolve(&self, base: &Path) -> Op {
        let r = |p: &PathGen| resolve(base, p);
        match self {
            Op::Stat(p) => Op::Stat(r(p)),
            Op::List(p) => Op::List(r(p)),
            Op::Read(p, o, l) => Op::Read(r(p), *o, *l),
            Op::Write(p, c, m) => Op::Write(r(p), c.clone(), m.clone()),
            Op::Mkdir(p, x) => Op::Mkdir(r(p), *x),
            Op::Chmod(p, m) => Op::Chmod(r(p), *m),
            Op::Delete(p, x) => Op::Delete(r(p), *x),
            Op::Rename(a, b) => Op::Rename(r(a), r(b)),
        }
    }
}

fn op() -> impl Strategy<Value = Op<PathGen>> {
    let if_match = prop_oneof![
        Just(None),
        Just(Some("*".to_owned())),
        Just(Some("none".to_owned())),
        "[0-9a-f]{64}".prop_map(Some),
    ];
    prop_oneof![
        4 => path().prop_map(Op::Stat),
        3 => path().prop_map(Op::List),
        6 => (path(), 0u64..40, prop::option::of(0u64..40)).prop_map(|(p, o, l)| Op::Read(p, o, l)),
        3 => (path(), prop::collection::vec(any::<u8>(), 0..32), if_match)
            .prop_map(|(p, c, m)| Op::Write(p, c, m)),
        2 => (path(), any::<bool>()).prop_map(|(p, r)| Op::Mkdir(p, r)),
        2 => (path(), prop_oneof![0o600u32..0o1000, 0u32..0o10000])
            .prop_map(|(p, m)| Op::Chmod(p, m)),
        1 => (path(), any::<bool>()).prop_map(|(p, r)| Op::Delete(p, r)),
        1 => (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
    ]
}

/// The host directory of the root an address names, and its path below the root as the
/// jail reads it, or `None` where the jail must refuse the address outright.
fn host_of(base: &Path, path: &str) -> Option<(PathBuf, PathBuf)> {
    let trimmed = path.trim_start_matches('/');
    let (root, rel) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    if !matches!(root, "a" | "b") {
        return None;
    }
    let mut clean = PathBuf::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some((base.join(root), clean))
}

/// Whether the jail must refuse the address before touching the disk.
fn malformed(path: &str) -> bool {
    path.len() > 4096
        || path.chars().any(char::is_control)
        || path.split('/').any(|s| s == ".." || s.len() > 255)
}

fn canonical(path: &Path) -> Result<PathBuf, TestCaseError> {
    std::fs::canonicalize(path)
        .map_err(|e| TestCaseError::fail(format!("canonicalize {}: {e}", path.display())))
}

/// A path that reached something must lie inside its root.
fn inside(root: &Path, reached: &Path, op: &Op) -> Result<(), TestCaseError> {
    let root = canonical(root)?;
    let reached = canonical(reached)?;
    prop_assert!(
        reached.starts_with(&root),
        "{op:?} reached {} outside {}",
        reached.display(),
        root.display()
    );
    Ok(())
}

/// The canonical directory holding the final name of `path`, as the host resolves it now:
/// where an operation that does not follow the last symlink (stat, delete, rename) acts.
fn parent_now(base: &Path, path: &str) -> Option<PathBuf> {
    let (root, clean) = host_of(base, path)?;
    if clean.as_os_str().is_empty() {
        return None;
    }
    std::fs::canonicalize(root.join(clean).parent()?).ok()
}

/// A regular file reached without any symlink, readable by its mode, with one link: the
/// jail must serve it (so the properties above are not met by refusing everything).
fn servable(root: &Path, clean: &Path) -> bool {
    let mut at = root.to_path_buf();
    let mut dirs_ok = std::fs::metadata(root).is_ok_and(|m| m.mode() & 0o100 != 0);
    let mut count = 0;
    for c in clean.components() {
        at.push(c);
        count += 1;
        let Ok(meta) = std::fs::symlink_metadata(&at) else {
            return false;
        };
        if meta.file_type().is_symlink() {
            return false;
        }
        if meta.is_dir() {
            dirs_ok &= meta.mode() & 0o100 != 0;
        }
    }
    count > 0
        && dirs_ok
        && std::fs::symlink_metadata(&at)
            .is_ok_and(|m| m.is_file() && m.nlink() == 1 && m.mode() & 0o400 != 0)
}

/// What a successful operation returned, for the checks.
enum Done {
    Entry(FsEntry),
    Listing(FsListing),
    Read(FsEntry, Vec<u8>),
    Changed,
}

fn run(jail: &Jail, op: &Op) -> Result<Done, JailError> {
    match op {
        Op::Stat(p) => jail.stat(p).map(Done::Entry),
        Op::List(p) => jail.list(p).map(Done::Listing),
        Op::Read(p, offset, length) => jail
            .read(p, *offset, *length)
            .map(|(e, bytes)| Done::Read(e, bytes)),
        Op::Write(p, content, if_match) => jail
            .write(p, content, if_match.as_deref())
            .map(|_| Done::Changed),
        Op::Mkdir(p, parents) => jail.mkdir(p, *parents).map(|_| Done::Changed),
        Op::Chmod(p, mode) => jail.chmod(p, *mode).map(|_| Done::Changed),
        Op::Delete(p, recursive) => jail.delete(p, *recursive).map(|()| Done::Changed),
        Op::Rename(from, to) => jail.rename(from, to).map(|_| Done::Changed),
    }
}

fn kind_on_host(meta: &std::fs::Metadata) -> FsKind {
    let t = meta.file_type();
    if t.is_symlink() {
        FsKind::Symlink
    } else if t.is_dir() {
        FsKind::Dir
    } else if t.is_file() {
        FsKind::File
    } else {
        FsKind::Other
    }
}

fn check(f: &Fixture, op: &Op) -> Result<(), TestCaseError> {
    let base = f.base();
    let address = match op {
        Op::Stat(p)
        | Op::List(p)
        | Op::Read(p, ..)
        | Op::Write(p, ..)
        | Op::Mkdir(p, _)
        | Op::Chmod(p, _)
        | Op::Delete(p, _)
        | Op::Rename(p, _) => p.as_str(),
    };
    let target = host_of(base, address);
    // Where the directories holding the final names lie, resolved before the operation: a
    // rename or a delete changes the tree, and with it what the same path means afterwards.
    let parent_before = parent_now(base, address);
    let to_parent_before = match op {
        Op::Rename(_, to) => parent_now(base, to),
        _ => None,
    };
    let outcome = run(&f.jail, op);
    if malformed(address) {
        prop_assert!(
            matches!(outcome, Err(JailError::BadPath(_) | JailError::NoRoot(_))),
            "{op:?} on a malformed path gave {:?}",
            outcome.as_ref().err()
        );
        return Ok(());
    }
    let changes = matches!(
        op,
        Op::Write(..) | Op::Mkdir(..) | Op::Chmod(..) | Op::Delete(..) | Op::Rename(..)
    );
    let in_b = target.as_ref().is_some_and(|(root, _)| root.ends_with("b"));
    if changes && in_b {
        prop_assert!(outcome.is_err(), "{op:?} changed the read-only root");
    }
    let done = match outcome {
        Ok(done) => done,
        Err(e) => {
            // Refusals are always allowed, except for a plain file the jail must serve.
            if let (Op::Read(..), Some((root, clean))) = (op, &target) {
                prop_assert!(!servable(root, clean), "{op:?} refused a plain file: {e}");
            }
            return Ok(());
        }
    };
    let Some((root, clean)) = target else {
        prop_assert!(
            address.trim_start_matches('/').is_empty(),
            "{op:?} succeeded on an address without a root"
        );
        return Ok(());
    };
    let host = root.join(&clean);
    let root_now = canonical(&root)?;
    let was_inside = |before: &Option<PathBuf>, clean: &Path| -> Result<(), TestCaseError> {
        if clean.as_os_str().is_empty() {
            return Ok(());
        }
        prop_assert!(
            before.as_ref().is_some_and(|p| p.starts_with(&root_now)),
            "{op:?} acted in {before:?}, outside {}",
            root_now.display()
        );
        Ok(())
    };
    match op {
        Op::Stat(_) | Op::Delete(..) => was_inside(&parent_before, &clean)?,
        Op::List(_) | Op::Read(..) | Op::Write(..) | Op::Mkdir(..) | Op::Chmod(..) => {
            inside(&root, &host, op)?
        }
        Op::Rename(_, to) => {
            was_inside(&parent_before, &clean)?;
            let (to_root, to_clean) = host_of(base, to)
                .ok_or_else(|| TestCaseError::fail(format!("{op:?}: renamed to a bad address")))?;
            prop_assert_eq!(&to_root, &root);
            was_inside(&to_parent_before, &to_clean)?;
        }
    }
    let host_err = |e: std::io::Error| TestCaseError::fail(format!("{op:?}: host: {e}"));
    match (op, done) {
        (Op::Stat(_), Done::Entry(entry)) => {
            // The entry describes what the host sees at the same place.
            let meta = std::fs::symlink_metadata(&host).map_err(host_err)?;
            let kind = kind_on_host(&meta);
            prop_assert_eq!(&entry.kind, &kind, "{:?}", op);
            if kind == FsKind::File {
                prop_assert_eq!(entry.size, meta.len(), "{:?}", op);
            }
        }
        (Op::List(_), Done::Listing(listing)) => {
            let mut want: Vec<String> = std::fs::read_dir(&host)
                .map_err(host_err)?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let mut got: Vec<String> = listing
                .entries
                .iter()
                .map(|e| e.path.rsplit('/').next().unwrap_or("").to_owned())
                .collect();
            want.sort();
            got.sort();
            prop_assert_eq!(got, want, "{:?}", op);
        }
        (Op::Read(_, offset, length), Done::Read(entry, bytes)) => {
            let whole = std::fs::read(&host).map_err(host_err)?;
            let from = usize::try_from(*offset)
                .unwrap_or(usize::MAX)
                .min(whole.len());
            let want = length.unwrap_or(MAX_READ_CHUNK).min(MAX_READ_CHUNK);
            let to = from
                .saturating_add(usize::try_from(want).unwrap_or(usize::MAX))
                .min(whole.len());
            prop_assert_eq!(&bytes[..], &whole[from..to], "{:?}", op);
            prop_assert_eq!(entry.size, whole.len() as u64);
            prop_assert_eq!(entry.etag, Some(agentd::jail::etag(&whole)));
            // Content names its file: nothing from outside or from the other root.
            let foreign: &[&[u8]] = if root.ends_with("a") {
                &[b"outside:", b"b:"]
            } else {
                &[b"outside:", b"a:"]
            };
            prop_assert!(
                !foreign.iter().any(|label| whole.starts_with(label)),
                "{op:?} read {:?}",
                String::from_utf8_lossy(&whole)
            );
        }
        (Op::Write(_, content, _), _) => {
            prop_assert_eq!(&std::fs::read(&host).map_err(host_err)?, content);
        }
        (Op::Mkdir(..), _) => prop_assert!(host.is_dir(), "{:?} made no directory", op),
        (Op::Chmod(_, mode), _) => {
            let meta = std::fs::metadata(&host).map_err(host_err)?;
            prop_assert_eq!(meta.mode() & 0o7777, *mode);
        }
        (Op::Delete(..), _) => {
            prop_assert!(
                std::fs::symlink_metadata(&host).is_err(),
                "{:?} left it",
                op
            );
        }
        _ => {}
    }
    Ok(())
}

fn operations() -> impl Strategy<Value = Vec<Op<PathGen>>> {
    prop::collection::vec(op(), 1..5)
}

fn check_operations(ops: Vec<Op<PathGen>>) -> Result<(), TestCaseError> {
    let f = Fixture::new();
    check_in_turn(&f, ops.iter().map(|op| op.resolve(f.base())))
}

/// Each operation checked on its own, and nothing outside root `a` changed after any.
fn check_in_turn(f: &Fixture, ops: impl Iterator<Item = Op>) -> Result<(), TestCaseError> {
    let before = f.outside_a();
    for op in ops {
        check(f, &op)?;
        let after = f.outside_a();
        prop_assert!(
            after == before,
            "{op:?} changed something outside root a:\nbefore {before:#?}\nafter {after:#?}"
        );
    }
    Ok(())
}

fn addresses() -> impl Strategy<Value = Vec<PathGen>> {
    prop::collection::vec(path(), 1..32)
}

/// Addresses alone, many per tree: refused or inside, never a panic.
fn check_addresses(paths: Vec<PathGen>) -> Result<(), TestCaseError> {
    let f = Fixture::new();
    for p in paths {
        let p = resolve(f.base(), &p);
        check(&f, &Op::Read(p.clone(), 0, None))?;
        check(&f, &Op::Stat(p.clone()))?;
        check(&f, &Op::List(p))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_jail_operations(ops in operations()) {
        check_operations(ops)?;
    }

    #[test]
    fn fuzz_jail_addresses(paths in addresses()) {
        check_addresses(paths)?;
    }
}

/// Coverage-guided entry (`fuzz/`): operations, one per line, each an operation byte and
/// then its path as the client would send it (a rename's two paths split by a tab), on a
/// fresh tree. The fuzzer finds the tree's names through `fuzz/dicts/jail.dict`.
pub fn fuzz_bytes(data: &[u8]) {
    let f = Fixture::new();
    let mut b = axon_fuzzkit::Bytes::new(data);
    let mut ops = Vec::new();
    while !b.is_empty() && ops.len() < 8 {
        let kind = b.u8();
        let line = String::from_utf8_lossy(b.until(b'\n')).into_owned();
        let (path, other) = match line.split_once('\t') {
            Some((p, o)) => (p.to_owned(), o.to_owned()),
            None => (line.clone(), line),
        };
        let big = u64::from(kind) * 7;
        ops.push(match kind % 9 {
            0 => Op::Stat(path),
            1 => Op::List(path),
            2 => Op::Read(path, big % 13, Some(big % 5)),
            3 => Op::Read(path, 0, None),
            4 => Op::Write(path, b"fuzz".to_vec(), None),
            5 => Op::Mkdir(path, kind & 0x10 != 0),
            6 => Op::Chmod(path, u32::from(kind) * 0o37 % 0o1000),
            7 => Op::Delete(path, kind & 0x10 != 0),
            _ => Op::Rename(path, other),
        });
    }
    axon_fuzzkit::holds(check_in_turn(&f, ops.into_iter()));
}

/// What the coverage-guided fuzzer found (`fuzz/regressions/jail/`), its seeds, and fixed
/// inputs, through the same entry.
#[test]
fn coverage_guided_inputs_replay() {
    let fuzz_dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz"));
    assert!(axon_fuzzkit::replay(fuzz_dir, "jail", 64, fuzz_bytes) >= 64);
}

/// Symlinks that stay inside the root are followed; the ones that leave it are not.
#[test]
fn links_resolve_inside_and_stop_at_the_edge() {
    let f = Fixture::new();
    for ok in [
        "a/rel_in",
        "a/in_dir/inner.txt",
        "a/sub/back/f.txt",
        "a/%2e%2e",
        "a/ünï.txt",
    ] {
        assert!(f.jail.read(ok, 0, None).is_ok(), "{ok}");
    }
    for refused in [
        "a/up/outside/secret.txt",
        "a/sub/back2/outside/secret.txt",
        "a/sub/deeper/climb/secret.txt",
        "a/abs_secret",
        "a/rel_secret",
        "a/cross/g.txt",
        "a/hard",
        "a/loop",
        "a/../outside/secret.txt",
    ] {
        assert!(f.jail.read(refused, 0, None).is_err(), "{refused}");
    }
    assert!(f.jail.write("a/dangling_out", b"x", None).is_err());
    assert!(!f.base().join("outside/new.txt").exists());
}
