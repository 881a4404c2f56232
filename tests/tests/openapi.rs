//! The API answers as `/api/openapi.json` says: schemathesis (installed into target/ by
//! `scripts/schemathesis-env`) generates requests for every operation from the published
//! document and sends them with an admin token to a fresh axon-cp. Any 5xx, status code or
//! content type the document does not list, or body that does not match its schema fails the
//! test.
//!
//! Path ids are pinned to objects made for the run, so the operations get past their lookups:
//! a host that is enrolled but never started (its operations reach the agent link and answer
//! `503`, documented, and accepted for them alone), a second host to revoke, a tenant, an API
//! key, and a user to change, disable, reset and delete: never the admin whose session the run
//! uses. Logout is left out, as it would end that session.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axon_e2e::*;
use reqwest::Method;
use serde_json::json;

/// Checks every answer must pass.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";
/// Operations left out (see the module comment).
const EXCLUDED: &[&str] = &["POST /api/auth/logout"];
/// Test cases per operation and phase: enough to reach every branch of the document's
/// shapes, few enough for well under a minute on two cores.
const MAX_EXAMPLES: &str = "25";
/// Longest the run may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// The `st` binary: `AXON_SCHEMATHESIS`, or where `scripts/schemathesis-env` installs it.
fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("AXON_SCHEMATHESIS") {
        return Some(path.into());
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis-venv/bin/st");
    path.exists().then_some(path)
}

/// A TOML string literal.
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// Creates an object through the API; returns its id.
async fn create(cp: &ControlPlane, admin: &str, path: &str, body: serde_json::Value) -> String {
    let (status, created) = cp.call(Method::POST, path, Some(admin), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{path}: {created}");
    created["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_as_its_openapi_document_says() {
    let Some(st) = schemathesis() else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "schemathesis is missing: scripts/schemathesis-env installs it"
        );
        eprintln!(
            "SKIP the_api_answers_as_its_openapi_document_says: schemathesis is not installed (scripts/schemathesis-env)"
        );
        return;
    };
    let cp = ControlPlane::start(&[]).await;
    let host = Agent::enroll(&cp).await;
    let spare = Agent::enroll(&cp).await;
    let admin = cp.admin_token().await;
    let tenant = cp.create_tenant(&admin, "acme").await;
    let user = cp
        .create_user(&admin, "fuzzed@axon.test", "viewer", None)
        .await;
    let key = create(
        &cp,
        &admin,
        "/api/api-keys",
        json!({"name": "fuzzed", "role": "viewer", "scopes": ["hosts:read"]}),
    )
    .await;
    // Pings to it meet a closed port: deliveries fail and are retried, never a server error.
    let hook = create(
        &cp,
        &admin,
        "/api/webhooks",
        json!({"url": "http://127.0.0.1:9/fuzzed", "events": ["*"]}),
    )
    .await;
    let product = create(
        &cp,
        &admin,
        "/api/catalog",
        json!({"name": "Bot", "product_type": "telegram_bot", "price_cents": 1000}),
    )
    .await;
    let order = create(
        &cp,
        &admin,
        "/api/orders",
        json!({"catalog_item_id": product, "title": "fuzzed order", "tenant_id": tenant}),
    )
    .await;
    let (status, doc) = cp.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);

    // One entry per operation that takes an id: the id to use, and for those that talk to the
    // agent (they document 503), 503 accepted.
    let mut config = String::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            let name = format!("{} {path}", method.to_uppercase());
            // So does a plan asked of the gateway (no model is configured here).
            if path.starts_with("/v1/") || path == "/api/orders/{id}/plan" && method == "post" {
                // The gateway answers 502-504 when no upstream can serve a model: documented,
                // and not a fault of the server.
                config.push_str(&format!(
                    "[[operations]]\ninclude-name = {}\nchecks.not_a_server_error.expected-statuses = [\"2xx\", \"3xx\", \"4xx\", \"502\", \"503\", \"504\"]\n\n",
                    quoted(&name)
                ));
                continue;
            }
            let pinned = match path.as_str() {
                "/api/hosts/{id}" if method == "delete" => ("id", spare.host_id.as_str()),
                p if p.starts_with("/api/hosts/{id}") => ("id", host.host_id.as_str()),
                p if p.starts_with("/api/users/{id}") => ("id", user.as_str()),
                p if p.starts_with("/api/tenants/{id}") => ("id", tenant.as_str()),
                p if p.starts_with("/api/api-keys/{id}") => ("id", key.as_str()),
                p if p.starts_with("/api/webhooks/{id}") => ("id", hook.as_str()),
                p if p.starts_with("/api/orders/{id}") => ("id", order.as_str()),
                p if p.starts_with("/api/catalog/{id}") => ("id", product.as_str()),
                p if p.starts_with("/api/portal/{slug}") => ("slug", "acme"),
                _ => continue,
            };
            config.push_str(&format!(
                "[[operations]]\ninclude-name = {}\nparameters = {{ {} = {} }}\n",
                quoted(&name),
                quoted(&format!("path.{}", pinned.0)),
                quoted(pinned.1)
            ));
            if path.starts_with("/api/hosts/{id}/") && op["responses"].get("503").is_some() {
                config.push_str(
                    "checks.not_a_server_error.expected-statuses = [\"2xx\", \"3xx\", \"4xx\", \"503\"]\n",
                );
            }
            config.push('\n');
        }
    }
    let work = tempfile::tempdir().expect("tempdir");
    let config_path = work.path().join("schemathesis.toml");
    std::fs::write(&config_path, config).expect("config");

    // A fixed seed, so a failure reproduces; AXON_SCHEMATHESIS_SEED explores others.
    let seed = std::env::var("AXON_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let mut command = Command::new(&st);
    command
        .current_dir(work.path())
        .arg("--config-file")
        .arg(&config_path)
        .args(["run", &cp.url("/api/openapi.json"), "--tls-verify"])
        .arg(cp.data_dir().join("pki/ca.pem"))
        .args(["--header", &format!("Authorization: Bearer {admin}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", &seed])
        .args(["--generation-database", "none", "--no-color"]);
    for name in EXCLUDED {
        command.args(["--exclude-name", name]);
    }
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run schemathesis");
    // Drained on threads of their own, so a full pipe cannot stall the run.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let report = format!(
        "{}{}",
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default()
    );
    let Some(status) = status else {
        panic!("schemathesis ran past {RUN_LIMIT:?}:\n{report}");
    };
    if !status.success() {
        let log = cp.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "schemathesis found answers that differ from the document ({status}):\n{report}\n\nend of the axon-cp log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    // Every operation answered the admin: the run never lost its session.
    assert!(
        !report.contains("Authentication failed"),
        "the run lost its session:\n{report}"
    );
    let summary = report
        .lines()
        .rev()
        .find(|l| l.contains(" in ") && l.contains('='))
        .unwrap_or_default();
    eprintln!("schemathesis: {summary} ({:.0?})", started.elapsed());
}

/// An answer given before the request body was read says the connection closes, so a client
/// does not send its next request down it (schemathesis lost requests that way).
#[tokio::test]
async fn an_answer_before_the_body_is_read_closes_the_connection() {
    let cp = ControlPlane::start(&[]).await;
    // The body never comes: the 405 cannot wait for it.
    let answer = raw_https(
        &cp,
        b"OPTIONS /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    assert!(answer.contains(r#""code":"bad_request""#), "{answer}");
}
