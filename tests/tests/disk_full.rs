//! A full disk under the control plane: its data dir on a small filesystem the test makes
//! (tmpfs, so the test runs as root), filled to the last page by another writer. Changes are
//! refused with 503 and a log line, reads and sign-ins go on, nothing stored is damaged, and
//! once space is freed changes are accepted again without a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use axon_e2e::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Unmounts (lazily: the server may still hold files) when the test ends.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_small_tmpfs(at: &Path) {
    std::fs::create_dir_all(at).expect("mount point");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m,mode=0700", "axon-disk-full"])
        .arg(at)
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "mounting a 48 MiB tmpfs failed: this test makes its own small filesystem and needs root"
    );
}

/// Writes zeros until the filesystem refuses, in smaller and smaller pieces, so not one page
/// is left. Returns the file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    for piece in [1 << 20, 64 << 10, 4 << 10, 512] {
        let chunk = vec![0u8; piece];
        loop {
            match file.write_all(&chunk) {
                Ok(()) => {}
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                    break;
                }
            }
        }
    }
    let _ = file.sync_all();
    path
}

async fn tenant_slugs(cp: &ControlPlane, admin: &str) -> Vec<String> {
    let (status, body) = cp
        .call(Method::GET, "/api/tenants", Some(admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut slugs: Vec<String> = body
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t["slug"].as_str().expect("slug").to_owned())
        .collect();
    slugs.sort();
    slugs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_dir_refuses_changes_keeps_reads_and_recovers_without_a_restart() {
    let mut cp =
        ControlPlane::start_prepared(&["--min-free-mb", "8"], &[], mount_small_tmpfs).await;
    let _unmount = Unmount(cp.data_dir());
    let admin = cp.admin_token().await;
    let mut expected: Vec<String> = Vec::new();
    for i in 0..10 {
        let slug = format!("before-{i}");
        cp.create_tenant(&admin, &slug).await;
        expected.push(slug);
    }
    let user = cp
        .create_user(&admin, "ops@full.test", "operator", None)
        .await;

    let filler = fill(&cp.data_dir());

    // A change is refused, clearly, and the log says why.
    let (status, body) = cp
        .call(
            Method::POST,
            "/api/tenants",
            Some(&admin),
            Some(json!({"slug": "during", "name": "During Ltd"})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(error_says(&body, "nearly full"), "{body}");
    let (status, _) = cp
        .call(
            Method::DELETE,
            &format!("/api/users/{user}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a delete is a change too"
    );
    assert!(cp.log().contains("DATA DIR NEARLY FULL"), "{}", cp.log());

    // Reads go on, and so does signing in (its session lands in space held ahead).
    expected.sort();
    assert_eq!(tenant_slugs(&cp, &admin).await, expected);
    let (status, body) = cp
        .call(
            Method::GET,
            &format!("/api/users/{user}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fresh = cp.admin_token().await;
    let (status, body) = cp
        .call(
            Method::GET,
            "/api/audit?action=tenant.create",
            Some(&fresh),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_array().expect("records").len(), 10, "{body}");

    // Space freed: changes work again, at once, in the same process.
    let pid = cp.pid();
    std::fs::remove_file(&filler).expect("free the space");
    for i in 0..5 {
        let slug = format!("after-{i}");
        cp.create_tenant(&admin, &slug).await;
        expected.push(slug);
    }
    assert_eq!(cp.pid(), pid, "no restart");
    assert!(
        cp.log().contains("changes are accepted again"),
        "{}",
        cp.log()
    );
    expected.sort();
    assert_eq!(tenant_slugs(&cp, &admin).await, expected);

    // Nothing stored was damaged: the trail verifies and a restart finds every record.
    assert!(cp.terminate().is_some_and(|s| s.success()), "{}", cp.log());
    let verify = Command::new(bin("axon-cp"))
        .args(["audit-verify", "--data-dir"])
        .arg(cp.data_dir())
        .output()
        .expect("verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    cp.spawn().await;
    let admin = cp.admin_token().await;
    assert_eq!(tenant_slugs(&cp, &admin).await, expected);
    assert_eq!(
        audit_outcomes(&cp, &admin, "tenant.create").await.len(),
        15,
        "one record per tenant made, none for the refused one"
    );
}
