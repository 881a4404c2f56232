//! The systemd adapter against a real systemd: the installed systemd run as PID 1 of its own
//! namespaces by `scripts/systemd-box`, reached over its own D-Bus system bus. A box that cannot
//! start fails the test; nothing is skipped.

use std::time::Duration;

use agentd::units::{Systemd, UnitError};
use axon_e2e::SystemdBox;

const HELLO: &str = "[Unit]\nDescription=hello\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";
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

    let running = systemd.detail("hello.service").await.expect("detail");
    assert!(running.main_pid.is_some_and(|p| p > 0), "{running:?}");
    assert!(running.active_since.is_some(), "{running:?}");
    assert_eq!(running.last_result.as_deref(), Some("success"));

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

    let enabled = systemd
        .act("hello.service", "enable", Duration::from_secs(10))
        .await
        .expect("enable");
    assert_eq!(enabled.job_result, "done");
    let disabled = systemd
        .act("hello.service", "disable", Duration::from_secs(10))
        .await
        .expect("disable");
    assert_eq!(disabled.job_result, "done");

    // A oneshot whose command fails: systemd's job result says so.
    let failed = systemd
        .act("broken.service", "start", Duration::from_secs(10))
        .await
        .expect("start broken");
    assert_eq!(failed.job_result, "failed");
    assert_eq!(failed.active_state, "failed");
    let broken = systemd.detail("broken.service").await.expect("detail");
    assert_eq!(broken.last_result.as_deref(), Some("exit-code"));

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
