//! The command lines: help, version, and refusals that must be one clear line.

use std::process::Command;

use axon_e2e::*;

fn run(bin_name: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin(bin_name))
        .args(args)
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_subcommand_and_version_works() {
    let (ok, out, _) = run("axon-cp", &["--help"]);
    assert!(ok);
    for sub in ["init", "serve"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing:\n{out}"
        );
    }
    let (ok, out, _) = run("agentd", &["--help"]);
    assert!(ok);
    for sub in ["enroll", "run"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing:\n{out}"
        );
    }
    for name in ["axon-cp", "agentd"] {
        let (ok, out, _) = run(name, &["--version"]);
        assert!(ok);
        assert_eq!(out.trim(), format!("{name} {}", env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn insecure_http_off_loopback_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    let out = Command::new(bin("axon-cp"))
        .args(["init", "--data-dir"])
        .arg(&data)
        .env("AXON_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .expect("init");
    assert!(out.status.success());
    let api = format!("0.0.0.0:{}", free_port());
    let agent = format!("127.0.0.1:{}", free_port());
    let data_arg = data.to_string_lossy().into_owned();
    let (ok, _, err) = run(
        "axon-cp",
        &[
            "serve",
            "--data-dir",
            &data_arg,
            "--api-listen",
            &api,
            "--agent-listen",
            &agent,
            "--insecure-http",
        ],
    );
    assert!(!ok);
    assert!(err.contains("loopback"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn init_twice_and_serve_uninitialised_fail_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    let data_arg = data.to_string_lossy().into_owned();
    let (ok, out, _) = run("axon-cp", &["init", "--data-dir", &data_arg]);
    assert!(ok);
    assert!(
        out.contains("admin password:"),
        "a generated password is printed once: {out}"
    );
    let (ok, _, err) = run("axon-cp", &["init", "--data-dir", &data_arg]);
    assert!(!ok);
    assert!(err.contains("already initialised"), "{err}");

    let empty = dir.path().join("empty").to_string_lossy().into_owned();
    let api = format!("127.0.0.1:{}", free_port());
    let agent = format!("127.0.0.1:{}", free_port());
    let (ok, _, err) = run(
        "axon-cp",
        &[
            "serve",
            "--data-dir",
            &empty,
            "--api-listen",
            &api,
            "--agent-listen",
            &agent,
        ],
    );
    assert!(!ok);
    assert!(err.contains("axon-cp init"), "{err}");

    let state = dir.path().join("nostate").to_string_lossy().into_owned();
    let (ok, _, err) = run("agentd", &["run", "--state-dir", &state]);
    assert!(!ok);
    assert!(err.contains("agentd enroll"), "{err}");
}

#[tokio::test]
async fn offline_token_creation_works_only_on_a_stopped_server() {
    let mut cp = ControlPlane::start(&[]).await;
    let data = cp.data_dir().to_string_lossy().into_owned();
    let (ok, _, err) = run("axon-cp", &["token", "create", "--data-dir", &data]);
    assert!(!ok, "the running server holds the store");
    assert!(err.contains("in use"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    cp.terminate();
    let (ok, token, err) = run(
        "axon-cp",
        &[
            "token",
            "create",
            "--data-dir",
            &data,
            "--ttl",
            "5m",
            "--label",
            "site=lab",
        ],
    );
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("axe1."), "{token}");
    let (ok, _, err) = run(
        "axon-cp",
        &["token", "create", "--data-dir", &data, "--ttl", "30d"],
    );
    assert!(!ok && err.contains("ttl"), "{err}");

    cp.spawn().await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let outcome = run_enroll(&cp.server(), &token, &scratch.path().join("s"));
    assert!(outcome.success, "{}", outcome.stderr);
    let admin = cp.admin_token().await;
    let (_, hosts) = cp
        .call(reqwest::Method::GET, "/api/hosts", Some(&admin), None)
        .await;
    assert_eq!(hosts[0]["labels"]["site"], "lab", "{hosts}");
}

#[tokio::test]
async fn user_commands_work_on_a_stopped_data_dir() {
    let mut cp = ControlPlane::start(&[]).await;
    let data = cp.data_dir().to_string_lossy().into_owned();
    let (ok, _, err) = run("axon-cp", &["user", "list", "--data-dir", &data]);
    assert!(!ok && err.contains("in use"), "{err}");
    cp.terminate();

    let (ok, out, err) = run(
        "axon-cp",
        &[
            "user",
            "create",
            "--data-dir",
            &data,
            "--email",
            "ops@axon.test",
            "--role",
            "operator",
        ],
    );
    assert!(ok, "{err}");
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .and_then(|l| l.split_whitespace().next())
        .expect("generated password")
        .to_owned();
    let (ok, _, err) = run(
        "axon-cp",
        &[
            "user",
            "create",
            "--data-dir",
            &data,
            "--email",
            "c@x.test",
            "--role",
            "client",
        ],
    );
    assert!(!ok && err.contains("tenant"), "{err}");
    let (ok, _, err) = run(
        "axon-cp",
        &[
            "user",
            "create",
            "--data-dir",
            &data,
            "--email",
            "x@y.z",
            "--role",
            "root",
        ],
    );
    assert!(!ok && err.contains("unknown role"), "{err}");
    let (ok, out, _) = run("axon-cp", &["user", "list", "--data-dir", &data]);
    assert!(ok && out.contains("ops@axon.test\toperator"), "{out}");

    cp.spawn().await;
    cp.login_as("ops@axon.test", &password).await;
    cp.terminate();
    let (ok, _, err) = run(
        "axon-cp",
        &[
            "user",
            "disable",
            "--data-dir",
            &data,
            "--email",
            "ops@axon.test",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        "axon-cp",
        &[
            "user",
            "disable",
            "--data-dir",
            &data,
            "--email",
            ADMIN_EMAIL,
        ],
    );
    assert!(!ok && err.contains("last enabled admin"), "{err}");
    let (ok, _, err) = run(
        "axon-cp",
        &[
            "user",
            "disable",
            "--data-dir",
            &data,
            "--email",
            "ghost@axon.test",
        ],
    );
    assert!(!ok && err.contains("no user"), "{err}");
    cp.spawn().await;
    let (status, _) = cp
        .call(
            reqwest::Method::POST,
            "/api/auth/login",
            None,
            Some(serde_json::json!({"email": "ops@axon.test", "password": password})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    cp.terminate();
    let out = Command::new(bin("axon-cp"))
        .args([
            "user",
            "reset-password",
            "--data-dir",
            &data,
            "--email",
            "ops@axon.test",
        ])
        .env("AXON_USER_PASSWORD", "a fresh long password")
        .output()
        .expect("run");
    assert!(out.status.success());
    cp.spawn().await;
    cp.login_as("ops@axon.test", "a fresh long password").await;
}

#[tokio::test]
async fn rotating_the_signing_key_keeps_issued_tokens_valid() {
    let mut cp = ControlPlane::start(&[]).await;
    let old = cp.admin_token().await;
    let kid = |token: &str| {
        let header = token.split('.').next().expect("header");
        let json =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .expect("b64");
        serde_json::from_slice::<serde_json::Value>(&json).expect("json")["kid"].clone()
    };
    cp.terminate();
    let data = cp.data_dir().to_string_lossy().into_owned();
    let (ok, out, err) = run("axon-cp", &["audit-verify", "--data-dir", &data]);
    assert!(ok && out.contains("chain intact"), "{out}{err}");
    let (ok, out, err) = run("axon-cp", &["rotate-signing-key", "--data-dir", &data]);
    assert!(ok && out.contains("2 stored"), "{out}{err}");
    cp.spawn().await;
    let new = cp.admin_token().await;
    assert_ne!(kid(&old), kid(&new), "the new key signs");
    for token in [&old, &new] {
        let (status, _) = cp
            .call(reqwest::Method::GET, "/api/me", Some(token), None)
            .await;
        assert_eq!(status, StatusCode::OK, "tokens of both keys are accepted");
    }
}

/// `audit-verify` checks the control plane's file as well as its index: records cut off the
/// end of `audit.jsonl` fail it, and the next start records the cut and goes on past it.
#[tokio::test]
async fn audit_verify_catches_records_cut_off_the_file() {
    let mut cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    cp.create_user(&admin, "someone@axon.test", "viewer", None)
        .await;
    cp.terminate();
    let data = cp.data_dir().to_string_lossy().into_owned();
    let (ok, out, err) = run("axon-cp", &["audit-verify", "--data-dir", &data]);
    assert!(ok && out.contains("signed head"), "{out}{err}");

    let file = cp.data_dir().join("audit.jsonl");
    let text = std::fs::read_to_string(&file).expect("trail");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    std::fs::write(&file, lines[..lines.len() - 1].join("\n") + "\n").expect("cut");
    let (ok, out, err) = run("axon-cp", &["audit-verify", "--data-dir", &data]);
    assert!(!ok, "a cut trail verified: {out}");
    assert!(err.contains("cut off the end"), "{err}");

    cp.spawn().await;
    let admin = cp.admin_token().await;
    let (_, cut) = cp
        .call(
            reqwest::Method::GET,
            "/api/audit?action=audit.cut",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(cut[0]["outcome"], "alert", "{cut}");
}
