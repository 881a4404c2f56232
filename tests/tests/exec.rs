//! Whitelisted commands end to end: the agent's own config decides; the control plane asks by
//! name with typed parameters; refusals are 403/400 and audited.

use std::time::Duration;

use axon_e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

const AGENT_CONFIG: &str = r#"
[[commands]]
name = "echo-word"
description = "echo one lowercase word"
binary = "/bin/echo"
args = ["{word}"]
params.word = { type = "string", pattern = "[a-z]{1,20}", max_len = 20 }

[[commands]]
name = "flood"
binary = "/usr/bin/yes"
output_cap = 1000

[[commands]]
name = "slow"
binary = "/bin/sleep"
args = ["{secs}"]
timeout = "1s"
params.secs = { type = "integer", min = 1, max = 30 }
"#;

async fn setup() -> (ControlPlane, Agent, String) {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    let config = agent.dir.path().join("agentd.toml");
    std::fs::write(&config, AGENT_CONFIG).expect("config");
    agent.start(&["--config", config.to_str().expect("utf-8 path")]);
    let online = wait_until(Duration::from_secs(5), || async {
        cp.host(&admin, &agent.host_id).await["status"] == "online"
    })
    .await;
    assert!(online.is_some(), "agent log:\n{}", agent.log());
    (cp, agent, admin)
}

async fn exec(cp: &ControlPlane, token: &str, host: &str, body: Value) -> (StatusCode, Value) {
    cp.call(
        Method::POST,
        &format!("/api/hosts/{host}/exec"),
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn whitelisted_commands_run_by_name_and_everything_else_is_refused() {
    let (cp, agent, admin) = setup().await;
    let host = agent.host_id.as_str();

    let (status, list) = cp
        .call(
            Method::GET,
            &format!("/api/hosts/{host}/commands"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for want in [
        "uptime",
        "df",
        "free",
        "systemctl-status",
        "journalctl-unit",
        "echo-word",
        "flood",
        "slow",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    let echo = list
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["name"] == "echo-word")
        .expect("echo");
    assert_eq!(echo["params"]["word"]["type"], "string");

    let (status, out) = exec(&cp, &admin, host, json!({"command": "uptime"})).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["exit_code"], 0);
    assert!(
        out["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("load average"),
        "{out}"
    );

    let (status, out) = exec(
        &cp,
        &admin,
        host,
        json!({"command": "echo-word", "params": {"word": "hello"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["stdout"], "hello\n");

    // Injection and option smuggling through parameters.
    for word in [
        "hello; id",
        "$(id)",
        "-n",
        "hello\nid",
        "a b",
        "x".repeat(5000).as_str(),
    ] {
        let (status, out) = exec(
            &cp,
            &admin,
            host,
            json!({"command": "echo-word", "params": {"word": word}}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{word}: {out}");
    }
    let (status, _) = exec(
        &cp,
        &admin,
        host,
        json!({"command": "echo-word", "params": {"word": "hi", "extra": "x"}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Raw argv, shells and binaries the host did not list.
    let (status, _) = exec(
        &cp,
        &admin,
        host,
        json!({"command": "echo-word", "argv": ["/bin/sh", "-c", "id"]}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "raw argv is not part of the API"
    );
    for command in ["sh", "/bin/sh", "rm", "../uptime", "uptime; id"] {
        let (status, out) = exec(&cp, &admin, host, json!({"command": command})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{command}: {out}");
        assert_eq!(out["error"]["code"], "forbidden");
    }

    // Limits hold through the link, and the agent's memory stays bounded however much a
    // command prints.
    let (status, out) = exec(&cp, &admin, host, json!({"command": "flood"})).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["stdout_truncated"], true);
    assert_eq!(out["stdout"].as_str().map(str::len), Some(1000));
    let before = agent.rss_bytes().expect("rss");
    for _ in 0..30 {
        let (status, _) = exec(&cp, &admin, host, json!({"command": "flood"})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let after = agent.rss_bytes().expect("rss");
    // Each run keeps at most its 1000-byte caps and a read buffer; 30 runs that each printed
    // megabytes may leave no more than allocator slack behind.
    eprintln!("agentd rss: {before} -> {after} bytes over 30 flooding runs");
    assert!(
        after < before + (2 << 20),
        "agentd grew from {before} to {after} bytes"
    );
    let (status, out) = exec(
        &cp,
        &admin,
        host,
        json!({"command": "slow", "params": {"secs": 20}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["timed_out"], true);
    assert!(out["duration_ms"].as_u64().expect("duration") < 5000);

    // Roles: viewers may list but not run; clients may do neither.
    cp.create_user(&admin, "viewer@axon.test", "viewer", None)
        .await;
    let viewer = cp.token_for("viewer@axon.test").await;
    let (status, _) = cp
        .call(
            Method::GET,
            &format!("/api/hosts/{host}/commands"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = exec(&cp, &viewer, host, json!({"command": "uptime"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Every run and refusal is in the audit trail with who asked.
    let (_, records) = cp
        .call(
            Method::GET,
            "/api/audit?action=host.exec&limit=100",
            Some(&admin),
            None,
        )
        .await;
    let records = records.as_array().expect("records");
    assert!(records.iter().any(|r| r["outcome"] == "ok" && r["target"].as_str().unwrap_or("").ends_with("uptime")));
    assert!(
        records.iter().any(
            |r| r["outcome"] == "denied" && r["target"].as_str().unwrap_or("").ends_with(" rm")
        )
    );
    assert!(records.iter().all(|r| r["source_ip"] == "127.0.0.1"));
}

#[tokio::test]
async fn a_bad_whitelist_stops_the_agent_with_one_clear_line() {
    let cp = ControlPlane::start(&[]).await;
    let agent = Agent::enroll(&cp).await;
    let config = agent.dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[[commands]]\nname = \"x\"\nbinary = \"relative/path\"\n",
    )
    .expect("config");
    let out = std::process::Command::new(bin("agentd"))
        .args(["run", "--state-dir"])
        .arg(agent.state_dir())
        .arg("--config")
        .arg(&config)
        .env("AGENTD_LOG", "off")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("absolute"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test]
async fn output_streams_over_sse_and_live_events_reach_websocket_subscribers() {
    use futures_util::StreamExt;
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;

    // Subscribers: unauthenticated sockets are refused; an admin gets everything it asks for.
    assert!(live_socket(&cp, None).await.is_err());
    assert!(live_socket(&cp, Some("forged")).await.is_err());
    let mut live = subscribe_live(&cp, &admin, &["host_online", "exec_output", "audit"]).await;
    cp.create_user(&admin, "viewer@axon.test", "viewer", None)
        .await;
    let viewer = cp.token_for("viewer@axon.test").await;
    let mut viewer_live = subscribe_live(&cp, &viewer, &[]).await;

    let mut agent = Agent::enroll(&cp).await;
    let config = agent.dir.path().join("agentd.toml");
    std::fs::write(
        &config,
        "[[commands]]\nname = \"two-lines\"\nbinary = \"/bin/sh\"\nargs = [\"-c\", \"echo one; sleep 0.3; echo two\"]\n",
    )
    .expect("config");
    agent.start(&["--config", config.to_str().expect("path")]);
    let host = agent.host_id.clone();

    // SSE: output events as they come, then the result.
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    wait_until(Duration::from_secs(5), || async {
        cp.host(&admin, &host).await["status"] == "online"
    })
    .await
    .expect("online");
    let resp = client
        .post(cp.url(&format!("/api/hosts/{host}/exec?stream=sse")))
        .bearer_auth(&admin)
        .json(&json!({"command": "two-lines"}))
        .send()
        .await
        .expect("sse");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    let text = resp.text().await.expect("stream");
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.last(), Some(&"result"), "{text}");
    assert!(
        events.iter().filter(|e| **e == "output").count() >= 2,
        "{text}"
    );
    let first_output = text.find("one").expect("one");
    let second_output = text.find("two").expect("two");
    assert!(first_output < second_output, "{text}");

    // The admin's socket saw the host come online, the output, and the audit records.
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.len() < 3 && tokio::time::Instant::now() < deadline {
        if let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(1), live.next()).await
            && let Ok(v) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("{}"))
            && let Some(t) = v["type"].as_str()
        {
            seen.insert(t.to_owned());
        }
    }
    for want in ["host_online", "exec_output", "audit"] {
        assert!(seen.contains(want), "{want} not in {seen:?}");
    }
    // The viewer saw host events but never an audit record.
    let mut viewer_types = std::collections::HashSet::new();
    while let Ok(Some(Ok(msg))) =
        tokio::time::timeout(Duration::from_millis(500), viewer_live.next()).await
    {
        if let Ok(v) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("{}"))
            && let Some(t) = v["type"].as_str()
        {
            viewer_types.insert(t.to_owned());
        }
    }
    assert!(viewer_types.contains("host_online"), "{viewer_types:?}");
    assert!(
        !viewer_types.contains("audit"),
        "audit records leaked to a viewer"
    );
}
