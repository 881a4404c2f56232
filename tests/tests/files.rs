//! The file jail end to end, with the agent running as an unprivileged user and decoy files
//! outside the roots: every verb works inside, nothing outside is read, listed or changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axon_e2e::*;
use reqwest::Method;
use serde_json::json;

const SECRET: &str = "decoy outside the jail";

struct Setup {
    cp: ControlPlane,
    agent: Agent,
    admin: String,
    base: PathBuf,
    _tmp: tempfile::TempDir,
}

fn chown_nobody(path: &Path) {
    let status = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success());
}

async fn setup() -> Setup {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().to_path_buf();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let www = base.join("www");
    std::fs::create_dir_all(www.join("site")).expect("www");
    std::fs::write(www.join("site/index.html"), "<h1>hello</h1>").expect("index");
    std::fs::create_dir_all(base.join("www-private")).expect("sibling");
    std::fs::write(base.join("www-private/key"), SECRET).expect("sibling key");
    std::fs::write(base.join("secret.txt"), SECRET).expect("secret");
    std::os::unix::fs::symlink(base.join("secret.txt"), www.join("abs-link")).expect("link");
    std::os::unix::fs::symlink("../www-private", www.join("dir-link")).expect("link");
    std::fs::create_dir_all(base.join("logs")).expect("logs");
    std::fs::write(base.join("logs/app.log"), "line 1\n").expect("log");
    chown_nobody(&www);
    chown_nobody(&base.join("logs"));

    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    let www_flag = format!("www={}:rw", www.display());
    let logs_flag = format!("logs={}:ro", base.join("logs").display());
    agent.start_unprivileged(&["--jail", &www_flag, "--jail", &logs_flag]);
    let online = wait_until(Duration::from_secs(5), || async {
        cp.host(&admin, &agent.host_id).await["status"] == "online"
    })
    .await;
    assert!(online.is_some(), "agent log:\n{}", agent.log());
    Setup {
        cp,
        agent,
        admin,
        base,
        _tmp: tmp,
    }
}

fn enc(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Setup {
    fn url(&self, tail: &str) -> String {
        format!("/api/hosts/{}/files{tail}", self.agent.host_id)
    }

    async fn get(&self, tail: &str) -> (StatusCode, serde_json::Value) {
        self.cp
            .call(Method::GET, &self.url(tail), Some(&self.admin), None)
            .await
    }

    fn outside_untouched(&self) {
        assert_eq!(
            std::fs::read_to_string(self.base.join("secret.txt")).expect("secret"),
            SECRET
        );
        assert_eq!(
            std::fs::read_to_string(self.base.join("www-private/key")).expect("key"),
            SECRET
        );
        let names: Vec<_> = std::fs::read_dir(&self.base)
            .expect("base")
            .map(|e| e.expect("e").file_name())
            .collect();
        assert_eq!(
            names.len(),
            4,
            "something appeared outside the roots: {names:?}"
        );
    }
}

async fn raw_put(
    s: &Setup,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (StatusCode, serde_json::Value) {
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let mut req = client
        .put(s.cp.url(&s.url(&format!("/content?path={}", enc(path)))))
        .bearer_auth(&s.admin)
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("put");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

async fn raw_get(s: &Setup, path: &str) -> (StatusCode, Vec<u8>, Option<String>) {
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let resp = client
        .get(s.cp.url(&s.url(&format!("/content?path={path}"))))
        .bearer_auth(&s.admin)
        .send()
        .await
        .expect("get");
    let status = resp.status();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, resp.bytes().await.expect("bytes").to_vec(), etag)
}

#[tokio::test]
async fn every_verb_works_inside_the_jail() {
    let s = setup().await;
    let mut live = subscribe_live(&s.cp, &s.admin, &["file_changed"]).await;
    // A change made on the host itself reaches subscribers, addressed inside the root.
    std::fs::write(s.base.join("www/site/touched.txt"), "x").expect("touch");
    let seen = next_live(&mut live, |v| v["path"] == "www/site/touched.txt").await;
    assert_eq!(seen["type"], "file_changed");
    assert_eq!(seen["host_id"], s.agent.host_id.as_str());
    let (status, root) = s.get("?path=www").await;
    assert_eq!(status, StatusCode::OK, "{root}");
    assert_eq!(root["entry"]["kind"], "dir");
    let names: Vec<&str> = root["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(
        names.contains(&"www/site") && names.contains(&"www/dir-link"),
        "{names:?}"
    );

    let (status, body, etag) = raw_get(&s, "www/site/index.html").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"<h1>hello</h1>");
    let etag = etag.expect("etag");

    // Binary-safe, atomic, with optimistic concurrency.
    let binary: Vec<u8> = (0..=255u8).collect();
    let (status, written) = raw_put(
        &s,
        "www/site/blob.bin",
        binary.clone(),
        &[("if-none-match", "*")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{written}");
    assert_eq!(
        std::fs::read(s.base.join("www/site/blob.bin")).expect("on disk"),
        binary
    );
    let (status, refused) = raw_put(
        &s,
        "www/site/blob.bin",
        b"again".to_vec(),
        &[("if-none-match", "*")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let message = refused["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("exists") && !message.contains("not none"),
        "{refused}"
    );
    // A leading slash reads as the root's name, as users type it.
    let (status, entry) = s.get("?path=/www/site/blob.bin").await;
    assert_eq!(status, StatusCode::OK, "{entry}");
    let (status, _) = raw_put(
        &s,
        "www/site/index.html",
        b"stale".to_vec(),
        &[("if-match", "\"0000\"")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = raw_put(
        &s,
        "www/site/index.html",
        b"<h1>new</h1>".to_vec(),
        &[("if-match", &etag)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = raw_put(&s, "www/big", vec![b'x'; 600 * 1024], &[]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let (status, made) =
        s.cp.call(
            Method::POST,
            &s.url("/mkdir"),
            Some(&s.admin),
            Some(json!({"path": "www/a/b", "parents": true})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let (status, moved) =
        s.cp.call(
            Method::POST,
            &s.url("/rename"),
            Some(&s.admin),
            Some(json!({"from": "www/site/blob.bin", "to": "www/a/b/blob.bin"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    let (status, chmod) =
        s.cp.call(
            Method::POST,
            &s.url("/chmod"),
            Some(&s.admin),
            Some(json!({"path": "www/a/b/blob.bin", "mode": "600"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{chmod}");
    assert_eq!(chmod["mode"], 0o600);
    let (status, _) =
        s.cp.call(
            Method::DELETE,
            &s.url("?path=www/a&recursive=true"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!s.base.join("www/a").exists());

    // The read-only root reads but refuses changes.
    let (status, body, _) = raw_get(&s, "logs/app.log").await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"line 1\n"[..])
    );
    let (status, _) = raw_put(&s, "logs/app.log", b"forged".to_vec(), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Changes are audited with the path.
    let actions = audit_outcomes(&s.cp, &s.admin, "host.fs.").await;
    for want in [
        "host.fs.write ok",
        "host.fs.mkdir ok",
        "host.fs.rename ok",
        "host.fs.chmod ok",
        "host.fs.delete ok",
        "host.fs.write denied",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} not in {actions:?}"
        );
    }
    // A rename's records, the control plane's and the agent's, name the destination.
    for action in ["host.fs.rename", "agent.fs.rename"] {
        let path = format!("/api/audit?action={action}");
        let named = |records: &serde_json::Value| {
            records[0]["target"]
                .as_str()
                .is_some_and(|t| t.ends_with("www/site/blob.bin -> www/a/b/blob.bin"))
        };
        // The agent's copy arrives over the link.
        let arrived = wait_until(Duration::from_secs(5), || async {
            named(&s.cp.call(Method::GET, &path, Some(&s.admin), None).await.1)
        })
        .await;
        let (_, records) = s.cp.call(Method::GET, &path, Some(&s.admin), None).await;
        assert!(arrived.is_some(), "{action}: {records}");
    }
    s.outside_untouched();
}

#[tokio::test]
async fn traversal_in_every_form_is_refused_or_confined() {
    let s = setup().await;
    let attacks = [
        "www/..%2Fsecret.txt",
        "www/../secret.txt",
        "www%2F..%2F..%2Fsecret.txt",
        "www/site/../../secret.txt",
        "www/abs-link",
        "www/dir-link/key",
        "www-private/key",
        "/etc/passwd",
        "www//etc/passwd",
        "www/site%00/index.html",
        "www/%C0%AE%C0%AE/secret.txt",
        "www/%2e%2e/secret.txt",
        "..",
    ];
    for attack in attacks {
        let (status, body, _) = raw_get(&s, attack).await;
        assert!(
            !status.is_success(),
            "read {attack}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(!String::from_utf8_lossy(&body).contains(SECRET), "{attack}");
        let (status, listed) = s.get(&format!("?path={attack}")).await;
        assert!(
            !status.is_success() || listed["entry"]["kind"] == "symlink",
            "stat/list {attack}: {listed}"
        );
        let (status, _) =
            s.cp.call(
                Method::DELETE,
                &s.url(&format!("?path={attack}")),
                Some(&s.admin),
                None,
            )
            .await;
        assert!(
            !status.is_success() || attack == "www/abs-link",
            "delete {attack}"
        );
    }
    let long = format!("www/{}", "n".repeat(300));
    let (status, _) = raw_put(&s, &long, b"x".to_vec(), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for target in [
        "www/dir-link/planted",
        "www/../planted",
        "www-private/planted",
    ] {
        let (status, _) = raw_put(&s, target, b"planted".to_vec(), &[]).await;
        assert!(!status.is_success(), "write {target}");
    }
    let (status, _) =
        s.cp.call(
            Method::POST,
            &s.url("/rename"),
            Some(&s.admin),
            Some(json!({"from": "www/site", "to": "www/../moved"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) =
        s.cp.call(
            Method::DELETE,
            &s.url("?path=www&recursive=true"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the root itself cannot be deleted"
    );
    let (status, _) =
        s.cp.call(
            Method::POST,
            &s.url("/chmod"),
            Some(&s.admin),
            Some(json!({"path": "www/site/index.html", "mode": "4755"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "setuid is refused");
    assert!(s.base.join("www/site/index.html").exists());
    s.outside_untouched();

    // Viewers may list but not read content or write.
    s.cp.create_user(&s.admin, "viewer@axon.test", "viewer", None)
        .await;
    let viewer = s.cp.token_for("viewer@axon.test").await;
    let (status, _) =
        s.cp.call(Method::GET, &s.url("?path=www"), Some(&viewer), None)
            .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        s.cp.call(
            Method::GET,
            &s.url("/content?path=www/site/index.html"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
