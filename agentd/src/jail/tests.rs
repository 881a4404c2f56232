//! Escape attempts against every verb. Outside targets are decoy files in the test's own temp
//! dir, so a broken jail cannot touch real system files.

use super::*;

struct Fixture {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    jail: Jail,
}

const SECRET: &str = "outside secret";

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().to_path_buf();
    let root = base.join("www");
    std::fs::create_dir_all(root.join("site/assets")).expect("dirs");
    std::fs::write(root.join("site/index.html"), "<h1>hi</h1>").expect("file");
    // Decoys outside the root, including a sibling sharing the root's name prefix.
    std::fs::write(base.join("secret.txt"), SECRET).expect("secret");
    std::fs::create_dir_all(base.join("www-private")).expect("sibling");
    std::fs::write(base.join("www-private/key"), SECRET).expect("sibling file");
    std::os::unix::fs::symlink(base.join("secret.txt"), root.join("abs-link")).expect("symlink");
    std::os::unix::fs::symlink("../secret.txt", root.join("rel-link")).expect("symlink");
    std::os::unix::fs::symlink("../www-private", root.join("dir-link")).expect("symlink");
    std::os::unix::fs::symlink("site/index.html", root.join("inside-link")).expect("symlink");
    std::fs::hard_link(base.join("secret.txt"), root.join("hard-link")).expect("hard link");
    std::fs::create_dir_all(base.join("ro")).expect("ro");
    std::fs::write(base.join("ro/readme"), "read only").expect("ro file");
    let jail = Jail::open(&[
        RootSpec {
            name: "www".into(),
            path: root,
            mode: Mode::ReadWrite,
            max_file_size: Some(1 << 20),
        },
        RootSpec {
            name: "ro".into(),
            path: base.join("ro"),
            mode: Mode::ReadOnly,
            max_file_size: None,
        },
    ])
    .expect("jail");
    Fixture {
        _tmp: tmp,
        base,
        jail,
    }
}

fn outside_untouched(f: &Fixture) {
    assert_eq!(
        std::fs::read_to_string(f.base.join("secret.txt")).expect("secret"),
        SECRET
    );
    assert_eq!(
        std::fs::read_to_string(f.base.join("www-private/key")).expect("key"),
        SECRET
    );
    let names: Vec<_> = std::fs::read_dir(&f.base)
        .expect("base")
        .map(|e| e.expect("e").file_name())
        .collect();
    assert_eq!(
        names.len(),
        4,
        "something was created outside the roots: {names:?}"
    );
}

const ESCAPES: &[&str] = &[
    "www/..",
    "www/../secret.txt",
    "www/site/../../secret.txt",
    "www/./../secret.txt",
    "www//../secret.txt",
    "www/abs-link",
    "www/rel-link",
    "www/dir-link/key",
    "www/hard-link",
    "www-private/key",
    "/etc/passwd",
    "www//etc/passwd",
    "www/site\0/index.html",
    "../secret.txt",
    "",
];

#[test]
fn reads_stay_inside() {
    let f = fixture();
    let (info, bytes) = f.jail.read("www/site/index.html", 0, None).expect("read");
    assert_eq!(bytes, b"<h1>hi</h1>");
    assert_eq!(info.etag.as_deref(), Some(etag(b"<h1>hi</h1>").as_str()));
    // A symlink that stays inside is followed.
    assert_eq!(
        f.jail
            .read("www/inside-link", 0, None)
            .expect("inside link")
            .1,
        b"<h1>hi</h1>"
    );
    for path in ESCAPES {
        match f.jail.read(path, 0, None) {
            Ok((_, bytes)) => panic!("{path:?} read {:?}", String::from_utf8_lossy(&bytes)),
            Err(e) => assert!(!e.to_string().contains(SECRET), "{e}"),
        }
        if path.is_empty() {
            // The top: listing it names the roots (a test below), nothing else.
            continue;
        }
        assert!(f.jail.list(path).is_err(), "listed {path:?}");
        // Entries that exist inside the root (the links themselves) may be stat'ed; nothing else.
        let entry_inside = ["www/abs-link", "www/rel-link", "www/hard-link"].contains(path);
        assert!(entry_inside || f.jail.stat(path).is_err(), "stat {path:?}");
    }
    outside_untouched(&f);
}

#[test]
fn the_top_lists_the_roots_and_nothing_else() {
    let f = fixture();
    for top in ["", "/", "//"] {
        let listing = f.jail.list(top).expect("top");
        let names: Vec<&str> = listing.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, ["www", "ro"], "{top:?}");
        assert!(listing.entries.iter().all(|e| e.kind == FsKind::Dir));
        assert_eq!(f.jail.stat(top).expect("stat").kind, FsKind::Dir);
        assert!(f.jail.read(top, 0, None).is_err(), "read {top:?}");
    }
    outside_untouched(&f);
}

#[test]
fn listings_do_not_follow_links_out() {
    let f = fixture();
    let root = f.jail.list("www").expect("list");
    let names: Vec<&str> = root.entries.iter().map(|e| e.path.as_str()).collect();
    assert!(names.contains(&"www/site"));
    let link = root
        .entries
        .iter()
        .find(|e| e.path == "www/dir-link")
        .expect("dir-link");
    assert_eq!(link.kind, FsKind::Symlink);
    assert!(
        f.jail.list("www/dir-link").is_err(),
        "listing through an escaping symlink"
    );
    assert!(f.jail.list("www/..").is_err());
    assert!(f.jail.stat("www/../www-private").is_err());
    assert!(matches!(
        f.jail.list("www-private"),
        Err(JailError::NoRoot(_))
    ));
}

#[test]
fn writes_stay_inside_and_are_atomic() {
    let f = fixture();
    let written = f
        .jail
        .write("www/site/new.txt", b"fresh", Some("none"))
        .expect("write");
    assert_eq!(written.size, 5);
    assert_eq!(
        std::fs::read(f.base.join("www/site/new.txt")).expect("on disk"),
        b"fresh"
    );
    // Optimistic concurrency.
    let tag = written.etag.expect("etag");
    assert!(matches!(
        f.jail.write("www/site/new.txt", b"x", Some("none")),
        Err(JailError::Conflict { .. })
    ));
    assert!(matches!(
        f.jail.write("www/site/new.txt", b"x", Some("0000")),
        Err(JailError::Conflict { .. })
    ));
    f.jail
        .write("www/site/new.txt", b"second", Some(&tag))
        .expect("matching etag");
    // Every escape form is refused for writes, and the targets outside keep their content.
    for path in ESCAPES
        .iter()
        .chain(["www/abs-link", "www/dir-link/new", "www/hard-link"].iter())
    {
        assert!(f.jail.write(path, b"pwned", None).is_err(), "{path}");
        assert!(
            f.jail.mkdir(path, true).is_err() || path.starts_with("www/site"),
            "{path}"
        );
        assert!(f.jail.chmod(path, 0o777).is_err(), "chmod {path}");
        // Links inside the root may be deleted (that removes the link, not what it names).
        let link_inside = ["www/abs-link", "www/rel-link", "www/hard-link"].contains(path);
        assert!(
            link_inside || f.jail.delete(path, true).is_err(),
            "delete {path}"
        );
    }
    outside_untouched(&f);
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(f.base.join("www/site"))
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.contains("axon-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn roots_cannot_be_removed_renamed_or_written_when_read_only() {
    let f = fixture();
    assert!(f.jail.delete("www", true).is_err());
    assert!(f.jail.delete("www/", true).is_err());
    assert!(f.jail.delete("www/.", true).is_err());
    assert!(f.jail.rename("www", "www/x").is_err());
    assert!(f.jail.rename("www/site", "www").is_err());
    assert!(f.jail.rename("www/site", "www/../moved").is_err());
    assert!(
        f.jail
            .rename("www/site/index.html", "ro/index.html")
            .is_err()
    );
    assert!(f.jail.chmod("www", 0o777).is_err());
    assert_eq!(
        f.jail.read("ro/readme", 0, None).expect("read").1,
        b"read only"
    );
    assert!(matches!(
        f.jail.write("ro/readme", b"x", None),
        Err(JailError::Refused { .. })
    ));
    assert!(f.jail.delete("ro/readme", false).is_err());
    assert!(f.jail.mkdir("ro/d", false).is_err());
    assert!(f.base.join("www/site/index.html").exists());
}

#[test]
fn verbs_work_inside() {
    let f = fixture();
    f.jail.mkdir("www/a/b/c", true).expect("mkdir -p");
    f.jail.write("www/a/b/c/f", b"data", None).expect("write");
    let moved = f.jail.rename("www/a/b/c/f", "www/a/g").expect("rename");
    assert_eq!(moved.size, 4);
    let changed = f.jail.chmod("www/a/g", 0o600).expect("chmod");
    assert_eq!(changed.mode, 0o600);
    assert!(
        matches!(
            f.jail.chmod("www/a/g", 0o4755),
            Err(JailError::Refused { .. })
        ),
        "setuid refused"
    );
    assert!(
        f.jail.delete("www/a", false).is_err(),
        "non-empty without recursive"
    );
    f.jail.delete("www/a", true).expect("recursive delete");
    assert!(!f.base.join("www/a").exists());
    // Deleting a symlink removes the link, not its target.
    f.jail.delete("www/abs-link", false).expect("delete link");
    outside_untouched(&f);
}

#[test]
fn limits_and_bad_paths() {
    let f = fixture();
    let big = vec![b'x'; (1 << 20) + 1];
    assert!(matches!(
        f.jail.write("www/big", &big, None),
        Err(JailError::TooLarge { .. })
    ));
    let long_name = format!("www/{}", "n".repeat(256));
    assert!(matches!(
        f.jail.write(&long_name, b"x", None),
        Err(JailError::BadPath(_))
    ));
    let long_path = format!("www/{}", "d/".repeat(2100));
    assert!(matches!(
        f.jail.stat(&long_path),
        Err(JailError::BadPath(_))
    ));
    assert!(matches!(
        f.jail.stat("www/a\nb"),
        Err(JailError::BadPath(_))
    ));
    // Ranges.
    let (_, part) = f
        .jail
        .read("www/site/index.html", 4, Some(2))
        .expect("range");
    assert_eq!(part, b"hi");
    let (_, past) = f
        .jail
        .read("www/site/index.html", 1000, None)
        .expect("past the end");
    assert!(past.is_empty());
    assert!(RootSpec::parse_flag("www=/srv/www:rw").is_ok());
    assert!(RootSpec::parse_flag("www=/srv/www:rx").is_err());
    assert!(Jail::open(&[RootSpec::parse_flag("w=relative:rw").expect("flag")]).is_err());
    assert!(Jail::open(&[RootSpec::parse_flag("Bad Name=/tmp:rw").expect("flag")]).is_err());
}

/// Swaps `root/<name>` back and forth between the real thing and a link to `target` (a hard
/// link when `hard`, else a symlink) until stopped.
fn flipper(
    root: PathBuf,
    name: &'static str,
    target: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    hard: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (real, parked) = (root.join(name), root.join(format!("{name}-real")));
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = std::fs::rename(&real, &parked);
            let _ = if hard {
                std::fs::hard_link(&target, &real)
            } else {
                std::os::unix::fs::symlink(&target, &real)
            };
            let _ = std::fs::remove_file(&real);
            let _ = std::fs::rename(&parked, &real);
        }
    })
}

/// Runs `attempt` against a flipper swapping `root/<name>` until both outcomes were seen often
/// (or 50,000 tries), stops it, and asserts that the input really raced.
fn race(
    root: PathBuf,
    name: &'static str,
    target: PathBuf,
    hard: bool,
    mut attempt: impl FnMut(usize) -> bool,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flip = flipper(root, name, target, stop.clone(), hard);
    let (mut passed, mut refused) = (0, 0);
    for i in 0..50_000 {
        if attempt(i) {
            passed += 1;
        } else {
            refused += 1;
        }
        if passed > 200 && refused > 200 {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flip.join().expect("flipper");
    assert!(
        passed > 0 && refused > 0,
        "no race happened: {passed} {refused}"
    );
}

/// Reads race a directory that turns into a symlink out of the root: absolute, and relative
/// ones that climb out. Both outcomes must be seen (the input really races), and a read
/// through the link never happens.
#[test]
fn a_directory_swapped_for_a_symlink_during_reads_never_leaks() {
    for target in ["ABSOLUTE", "../www-private", "../../www-private"] {
        let f = fixture();
        let root = f.base.join("www");
        std::fs::create_dir_all(root.join("swap")).expect("swap dir");
        std::fs::write(root.join("swap/key"), "inside").expect("inside file");
        let target = if target == "ABSOLUTE" {
            f.base.join("www-private")
        } else {
            PathBuf::from(target)
        };
        race(root, "swap", target.clone(), false, |_| {
            match f.jail.read("www/swap/key", 0, None) {
                Ok((_, bytes)) => {
                    assert_eq!(bytes, b"inside", "read through {target:?}");
                    true
                }
                Err(_) => false,
            }
        });
        outside_untouched(&f);
    }
}

/// chmod races a file that turns into a symlink, or a hard link, to a file outside the root:
/// the outside file's mode never changes (the check and the change act on one handle).
#[test]
fn chmod_racing_a_link_swap_never_changes_the_outside() {
    for hard in [false, true] {
        chmod_race(hard);
    }
}

fn chmod_race(hard: bool) {
    use std::os::unix::fs::PermissionsExt as _;
    let f = fixture();
    let root = f.base.join("www");
    std::fs::write(root.join("target"), "inside").expect("file");
    let secret = f.base.join("secret.txt");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("mode");
    let target = if hard {
        secret.clone()
    } else {
        PathBuf::from("../secret.txt")
    };
    race(root, "target", target, hard, |i| {
        let mode = if i % 2 == 0 { 0o640 } else { 0o644 };
        f.jail.chmod("www/target", mode).is_ok()
    });
    let mode = std::fs::metadata(&secret)
        .expect("secret")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode, 0o600,
        "the outside file's mode changed (hard link: {hard})"
    );
    outside_untouched(&f);
}

/// A range is read without loading the file: the bytes asked for come back, and the etag is
/// still that of the whole content.
#[test]
fn ranges_are_read_with_the_whole_files_etag() {
    let f = fixture();
    let content: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(f.base.join("www/big"), &content).expect("big");
    let (info, bytes) = f.jail.read("www/big", 600_000, Some(1000)).expect("read");
    assert_eq!(bytes, &content[600_000..601_000]);
    assert_eq!(info.etag.as_deref(), Some(etag(&content).as_str()));
    assert_eq!(info.size, 700_000);
    let (_, head) = f.jail.read("www/big", 0, None).expect("read");
    assert_eq!(head.len() as u64, MAX_READ_CHUNK);
    let (_, past) = f.jail.read("www/big", 800_000, None).expect("read");
    assert!(past.is_empty());
}

/// chmod acts on the handle it checked: FIFOs, sockets and devices are refused, and a final
/// symlink is never followed.
#[test]
fn chmod_changes_only_regular_files_and_directories() {
    use std::os::unix::fs::MetadataExt as _;
    let f = fixture();
    let fifo = f.base.join("www/pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let before = std::fs::symlink_metadata(&fifo).expect("meta").mode() & 0o777;
    assert!(matches!(
        f.jail.chmod("www/pipe", 0o777),
        Err(JailError::Refused { .. })
    ));
    let after = std::fs::symlink_metadata(&fifo).expect("meta").mode() & 0o777;
    assert_eq!(before, after, "the FIFO kept its mode");
    assert!(matches!(
        f.jail.chmod("www/inside-link", 0o777),
        Err(JailError::Refused { .. })
    ));
    let dir = f.jail.chmod("www/site", 0o750).expect("directory");
    assert_eq!(dir.mode, 0o750);
    outside_untouched(&f);
}

/// The cap holds on what is read, not on what the size said: a file whose content outgrows
/// the size checked at open (here a kernel file that reports size 0) is cut off at the cap.
#[test]
fn a_file_that_outgrows_its_checked_size_is_refused_at_the_cap() {
    let ostype = Path::new("/proc/sys/kernel/ostype");
    assert_eq!(std::fs::metadata(ostype).expect("ostype").len(), 0);
    let jail = Jail::open(&[RootSpec {
        name: "kernel".into(),
        path: PathBuf::from("/proc/sys/kernel"),
        mode: Mode::ReadOnly,
        max_file_size: Some(3),
    }])
    .expect("jail");
    assert!(matches!(
        jail.read("kernel/ostype", 0, None),
        Err(JailError::TooLarge { limit: 3, .. })
    ));
}
