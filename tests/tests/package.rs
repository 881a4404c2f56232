//! The Debian packages as an admin gets them: built from the binaries the suite tests, clean
//! under lintian, then installed, started, used, backed up, removed and purged in a writable
//! systemd box (`scripts/install-test`). Needs root, dpkg-deb and lintian.

use std::path::Path;
use std::process::Command;

fn run(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join(script))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    text
}

#[test]
fn the_packages_install_run_back_up_and_purge_cleanly() {
    let dir = tempfile::tempdir().expect("dir");
    let out_dir = dir.path().join("debian");
    let built = run(
        "scripts/package",
        &[],
        &[
            ("PROFILE", "debug"),
            ("SKIP_BUILD", "1"),
            ("PACKAGE_OUT", out_dir.to_str().expect("utf-8")),
        ],
    );
    let debs: Vec<&str> = built.lines().filter(|l| l.ends_with(".deb")).collect();
    assert_eq!(debs.len(), 2, "{built}");

    let lint = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--pedantic"])
        .args(&debs)
        .output()
        .expect("lintian (apt install lintian)");
    assert!(
        lint.status.success(),
        "lintian:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let said = run(
        "scripts/install-test",
        &[out_dir.to_str().expect("utf-8")],
        &[],
    );
    assert!(said.contains("install-test: ok"), "{said}");
}
