//! Backups while the server runs: `axon-cp backup` under write load, `axon-cp restore` into a
//! new dir, and the restored server holds every change acknowledged before the backup began,
//! with its audit trail verifying; damaged archives and occupied dirs are refused.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axon_e2e::writes::{Acked, check_all, writer};
use axon_e2e::*;

fn axon_cp(args: &[&str], paths: &[&Path]) -> Output {
    let mut c = Command::new(bin("axon-cp"));
    c.args(args);
    for p in paths {
        c.arg(p);
    }
    c.output().expect("run axon-cp")
}

fn backup(data: &Path, out: &Path) -> Output {
    let mut c = Command::new(bin("axon-cp"));
    c.args(["backup", "--data-dir"])
        .arg(data)
        .arg("--out")
        .arg(out);
    c.output().expect("run axon-cp backup")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn audit_verifies(data: &Path) -> String {
    let out = axon_cp(&["audit-verify", "--data-dir"], &[data]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_writes_restores_every_acknowledged_change() {
    let mut cp = ControlPlane::start_with_env(&[], &[("AXON_LOG", "info")]).await;
    let admin = cp.admin_token().await;
    let tenant = cp.create_tenant(&admin, "backup-home").await;
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            tokio::spawn(writer(
                cp.client.clone(),
                cp.server(),
                admin.clone(),
                tenant.clone(),
                w * 1_000_000,
                acked.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let count = || acked.lock().expect("acked").len();
    let moving = wait_until(Duration::from_secs(30), || async { count() >= 30 }).await;
    assert!(moving.is_some(), "no writes acknowledged");

    // Everything acknowledged before the backup begins must be in it.
    let before: Vec<Acked> = acked.lock().expect("acked").clone();
    let work = tempfile::tempdir().expect("dir");
    let archive = work.path().join("axon.bak");
    let out = tokio::task::spawn_blocking({
        let (data, archive) = (cp.data_dir(), archive.clone());
        move || backup(&data, &archive)
    })
    .await
    .expect("backup task");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds the CA key"),
        "{}",
        stderr(&out)
    );
    let mode = std::fs::metadata(&archive)
        .expect("archive")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the backup is readable by its owner only");
    assert!(
        cp.log().contains("backup taken"),
        "taken by the running server\n{}",
        cp.log()
    );
    // Writes went on during and after it.
    let after_backup = count();
    let went_on = wait_until(Duration::from_secs(30), || async {
        count() >= after_backup + 10
    })
    .await;
    assert!(went_on.is_some(), "writes stalled after the backup");
    let _ = stop_tx.send(true);
    for w in writers {
        w.await.expect("writer");
    }

    // Restored into a new dir: the trail verifies, and every change from before is there.
    let mut restored = ControlPlane::start_restored(&archive, &[], &[("AXON_LOG", "warn")]).await;
    let admin2 = restored.admin_token().await;
    check_all(&restored, &admin2, &before).await;
    let (status, body) = restored
        .call(
            reqwest::Method::GET,
            &format!("/api/tenants/{tenant}"),
            Some(&admin2),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    // Tokens signed before the backup verify against the restored keys.
    let (status, _) = restored
        .call(reqwest::Method::GET, "/api/tenants", Some(&admin), None)
        .await;
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "the signing keys came back"
    );
    assert!(restored.terminate().is_some_and(|s| s.success()));
    audit_verifies(&restored.data_dir());

    // The original, stopped: a backup reads the dir directly, and matches what it serves.
    assert!(cp.terminate().is_some_and(|s| s.success()));
    audit_verifies(&cp.data_dir());
    let offline = work.path().join("offline.bak");
    let out = backup(&cp.data_dir(), &offline);
    assert!(out.status.success(), "{}", stderr(&out));
    let all: Vec<Acked> = acked.lock().expect("acked").clone();
    let again = ControlPlane::start_restored(&offline, &[], &[("AXON_LOG", "warn")]).await;
    let admin3 = again.admin_token().await;
    check_all(&again, &admin3, &all).await;
}

#[tokio::test]
async fn a_damaged_backup_or_an_occupied_dir_is_refused_with_one_line() {
    let mut cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    cp.create_tenant(&admin, "kept").await;
    let work = tempfile::tempdir().expect("dir");
    let archive = work.path().join("a.bak");
    let out = backup(&cp.data_dir(), &archive);
    assert!(out.status.success(), "{}", stderr(&out));
    cp.terminate();

    // An occupied dir is never written into.
    let out = axon_cp(
        &["restore", "--from"],
        &[&archive, Path::new("--data-dir"), &cp.data_dir()],
    );
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));

    // One flipped byte anywhere: refused, and nothing is left behind.
    let mut bytes = std::fs::read(&archive).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    let damaged = work.path().join("damaged.bak");
    std::fs::write(&damaged, &bytes).expect("write");
    let target = work.path().join("restored");
    let out = axon_cp(
        &["restore", "--from"],
        &[&damaged, Path::new("--data-dir"), &target],
    );
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    assert!(!target.exists(), "nothing written from a damaged backup");

    // Not a backup at all, and a cut-off one.
    let out = axon_cp(
        &["restore", "--from"],
        &[&cp.log_path(), Path::new("--data-dir"), &target],
    );
    assert!(
        stderr(&out).contains("not an axon-cp backup"),
        "{}",
        stderr(&out)
    );
    let cut = work.path().join("cut.bak");
    std::fs::write(&cut, &std::fs::read(&archive).expect("read")[..middle]).expect("write");
    let out = axon_cp(
        &["restore", "--from"],
        &[&cut, Path::new("--data-dir"), &target],
    );
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    assert!(!target.exists());
}
