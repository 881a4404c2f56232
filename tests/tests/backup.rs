//! Backups while the server runs: `axon-cp backup` under write load, `axon-cp restore` into a
//! new dir, and the restored server holds every change acknowledged before the backup began,
//! with its audit trail verifying; damaged archives and occupied dirs are refused.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axon_e2e::writes::{Acked, check_all, spawn_writers};
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
    let writers = spawn_writers(&cp, &admin, &tenant, 3, &acked, &stop);
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

async fn run_command(cp: &ControlPlane, admin: &str, host: &str) {
    let (status, body) = cp
        .call(
            reqwest::Method::POST,
            &format!("/api/hosts/{host}/exec"),
            Some(admin),
            Some(serde_json::json!({"command": "uptime"})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_carry_on_after_a_restore_and_the_records_the_backup_missed_are_named() {
    let mut cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    let host = agent.host_id.clone();
    let flags = ["--backoff-initial", "100ms", "--backoff-max", "1s"];
    agent.start(&flags);
    let online = wait_until(Duration::from_secs(10), || async {
        cp.host(&admin, &host).await["status"] == "online"
    })
    .await;
    assert!(online.is_some(), "{}", agent.log());
    run_command(&cp, &admin, &host).await;
    let kept = |n: usize| {
        let (cp, admin, host) = (&cp, &admin, &host);
        async move {
            wait_until(Duration::from_secs(10), || async {
                kept_seqs(cp, admin, host).await.len() >= n
            })
            .await
        }
    };
    assert!(kept(2).await.is_some(), "start and one command");
    let work = tempfile::tempdir().expect("dir");
    let archive = work.path().join("a.bak");
    let out = backup(&cp.data_dir(), &archive);
    assert!(out.status.success(), "{}", stderr(&out));
    let at_backup = kept_seqs(&cp, &admin, &host).await;
    // Acknowledged after the backup: the restored store will not have these, and the agent
    // drops them from its spool (the last ones may still be there when it stops).
    for _ in 0..4 {
        run_command(&cp, &admin, &host).await;
    }
    assert!(kept(at_backup.len() + 4).await.is_some());
    let missed = kept_seqs(&cp, &admin, &host).await[at_backup.len()..].to_vec();
    agent.stop();
    cp.terminate();

    let restored = ControlPlane::start_restored(&archive, &[], &[]).await;
    let admin = restored.admin_token().await;
    agent.start(&[
        "--backoff-initial",
        "100ms",
        "--backoff-max",
        "1s",
        "--agent-url",
        &format!("wss://localhost:{}/agent/v1", restored.agent_port),
    ]);
    let online = wait_until(Duration::from_secs(10), || async {
        restored.host(&admin, &host).await["status"] == "online"
    })
    .await;
    assert!(online.is_some(), "{}", agent.log());
    run_command(&restored, &admin, &host).await;
    // The restart and the command arrive; the records the backup missed and the agent no
    // longer holds are named, once, and everything from the oldest it still held is kept.
    let last_missed = *missed.last().expect("missed");
    let carried_on = wait_until(Duration::from_secs(10), || async {
        kept_seqs(&restored, &admin, &host)
            .await
            .last()
            .is_some_and(|s| *s >= last_missed + 2)
    })
    .await;
    let seqs = kept_seqs(&restored, &admin, &host).await;
    assert!(carried_on.is_some(), "{seqs:?}\n{}", restored.log());
    assert_eq!(seqs[..at_backup.len()], at_backup[..]);
    let resumed = seqs[at_backup.len()];
    let gap_from = at_backup.last().expect("kept") + 1;
    assert!(
        resumed > gap_from,
        "the first missed record was dropped by the agent: {seqs:?}"
    );
    let expected: Vec<u64> = (resumed..=*seqs.last().expect("last")).collect();
    assert_eq!(seqs[at_backup.len()..], expected[..], "in order from there");
    let gaps = audit_outcomes(&restored, &admin, "audit.gap").await;
    assert_eq!(gaps, ["audit.gap alert"], "one gap, recorded once");
    let (_, records) = restored
        .call(
            reqwest::Method::GET,
            "/api/audit?action=audit.gap",
            Some(&admin),
            None,
        )
        .await;
    let reason = records[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("records {gap_from} to {}", resumed - 1)),
        "{reason}"
    );
}
