//! The systemd adapter against a real systemd: the installed systemd run as PID 1 of its own
//! namespaces by `scripts/systemd-box`, reached over its own D-Bus system bus. A box that cannot
//! start fails the test; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agentd::units::{Systemd, UnitError};

struct SystemdBox {
    dir: tempfile::TempDir,
    address: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/systemd-box")
}

impl SystemdBox {
    fn start(units: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = Vec::new();
        for (name, text) in units {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("unit file");
            files.push(path);
        }
        let out = Command::new(script())
            .arg("start")
            .arg(dir.path().join("box"))
            .args(&files)
            .output()
            .expect("run scripts/systemd-box");
        assert!(
            out.status.success(),
            "the systemd box did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let address = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Self { dir, address }
    }
}

impl Drop for SystemdBox {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path().join("box"))
            .status();
    }
}

const HELLO: &str = "[Unit]\nDescription=hello\n[Service]\nExecStart=/bin/sleep infinity\n";
const BROKEN: &str = "[Unit]\nDescription=broken\n[Service]\nType=oneshot\nExecStart=/bin/false\n";

#[tokio::test]
async fn lists_starts_stops_and_reports_failures_against_a_real_systemd() {
    let sdbox = SystemdBox::start(&[("hello.service", HELLO), ("broken.service", BROKEN)]);
    let systemd = Systemd::connect(Some(&sdbox.address))
        .await
        .expect("connect");

    let units = systemd.list().await.expect("list");
    assert!(
        units
            .iter()
            .any(|u| u.name == "dbus.service" && u.active_state == "active"),
        "{units:?}"
    );

    let started = systemd
        .act("hello.service", "start", Duration::from_secs(10))
        .await
        .expect("start");
    assert_eq!(started.job_result, "done");
    assert_eq!(
        (started.active_state.as_str(), started.sub_state.as_str()),
        ("active", "running")
    );
    let listed = systemd.list().await.expect("list");
    assert!(
        listed
            .iter()
            .any(|u| u.name == "hello.service" && u.sub_state == "running")
    );

    let restarted = systemd
        .act("hello.service", "restart", Duration::from_secs(10))
        .await
        .expect("restart");
    assert_eq!(restarted.job_result, "done");
    let stopped = systemd
        .act("hello.service", "stop", Duration::from_secs(10))
        .await
        .expect("stop");
    assert_eq!(stopped.job_result, "done");
    assert_eq!(stopped.active_state, "inactive");

    // A oneshot whose command fails: systemd's job result says so.
    let failed = systemd
        .act("broken.service", "start", Duration::from_secs(10))
        .await
        .expect("start broken");
    assert_eq!(failed.job_result, "failed");
    assert_eq!(failed.active_state, "failed");

    match systemd
        .act("no-such-unit.service", "start", Duration::from_secs(5))
        .await
    {
        Err(UnitError::NotFound(name)) => assert_eq!(name, "no-such-unit.service"),
        other => panic!("expected not found, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_bus_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let address = format!("unix:path={}", dir.path().join("none").display());
    match Systemd::connect(Some(&address)).await {
        Err(UnitError::Unavailable(_)) => {}
        other => panic!("expected unavailable, got {:?}", other.map(|_| ())),
    }
}
