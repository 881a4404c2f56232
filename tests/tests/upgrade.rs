//! Upgrades and version skew: an agent speaking the previous protocol (its frames kept as
//! fixtures) works with this control plane; an agent newer or older than the control plane's
//! range is told which side to upgrade; a data dir made by an earlier release (kept as a backup
//! fixture) is served, and one written by a newer release is refused with one line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axon_e2e::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn frame(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("agent-protocol-1/{name}")))
        .expect("fixture")
        .trim()
        .to_owned()
}

/// The next text frame, as JSON (pings and pongs skipped); `Err` with the close reason.
async fn next_json(ws: &mut RawLink) -> Result<Value, String> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| "nothing in 10 s".to_owned())?
            .ok_or("closed")?
            .map_err(|e| e.to_string())?;
        match msg {
            Message::Text(t) => return Ok(serde_json::from_str(&t).expect("json frame")),
            Message::Close(c) => return Err(c.map(|c| c.reason.to_string()).unwrap_or_default()),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_speaking_protocol_1_as_0_1_0_did_is_served() {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let agent = Agent::enroll(&cp).await;
    let (cert, key) = agent.credentials();
    let mut ws = raw_link(&cp, Some((&cert, &key))).await.expect("link");

    ws.send(Message::Text(frame("hello.json").into()))
        .await
        .expect("hello");
    let welcome = next_json(&mut ws).await.expect("welcome");
    assert_eq!(welcome["ok"], true, "{welcome}");
    assert_eq!(welcome["id"], "01JDQ3Z6V8K4M2N7P9R1S3T5W7");
    assert_eq!(welcome["body"]["protocol"], 1);
    let host = cp.host(&admin, &agent.host_id).await;
    assert_eq!(host["status"], "online", "{host}");
    assert_eq!(host["agent_version"], "0.1.0", "{host}");

    // Its audit record is kept and acknowledged.
    ws.send(Message::Text(frame("audit_event.json").into()))
        .await
        .expect("event");
    let ack = next_json(&mut ws).await.expect("ack");
    assert_eq!(ack["op"], "event.ack", "{ack}");
    assert_eq!(ack["body"]["seq"], 1, "{ack}");

    // A ping through the API is answered in its words.
    let ping = {
        let (cp, admin, host) = (&cp, &admin, &agent.host_id);
        async move {
            cp.call(
                Method::POST,
                &format!("/api/hosts/{host}/ping"),
                Some(admin),
                None,
            )
            .await
        }
    };
    let answer = async {
        let request = next_json(&mut ws).await.expect("ping request");
        assert_eq!(request["op"], "ping", "{request}");
        let id = request["id"].as_str().expect("id");
        ws.send(Message::Text(frame("pong.json").replace("@ID@", id).into()))
            .await
            .expect("pong");
    };
    let ((status, body), ()) = tokio::join!(ping, answer);
    assert_eq!(status, StatusCode::OK, "{body}");

    let (_, records) = cp
        .call(
            Method::GET,
            &format!("/api/audit?host={}", agent.host_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(records[0]["action"], "agent.start", "{records}");
    assert_eq!(records[0]["host_seq"], 1, "{records}");
}

#[tokio::test]
async fn an_agent_outside_the_protocol_range_is_told_which_side_to_upgrade() {
    let cp = ControlPlane::start(&[]).await;
    let agent = Agent::enroll(&cp).await;
    let (cert, key) = agent.credentials();
    for (version, says) in [(2, "upgrade axon-cp"), (0, "upgrade agentd")] {
        let mut ws = raw_link(&cp, Some((&cert, &key))).await.expect("link");
        let hello = frame("hello.json")
            .replace("\"v\":1", &format!("\"v\":{version}"))
            .replace("\"protocol\":1", &format!("\"protocol\":{version}"));
        ws.send(Message::Text(hello.into())).await.expect("hello");
        let refusal = next_json(&mut ws).await.expect("an answer to the hello");
        assert_eq!(refusal["ok"], false, "{refusal}");
        assert_eq!(refusal["id"], "01JDQ3Z6V8K4M2N7P9R1S3T5W7");
        assert_eq!(refusal["error"]["code"], "unsupported_version", "{refusal}");
        let message = refusal["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{message}");
        // An agent that cannot read our frames still gets the reason with the close.
        let reason = next_json(&mut ws).await.expect_err("closed");
        assert!(reason.contains(says), "{reason}");
    }
}

/// `axon-cp` with `args`; its output.
fn axon_cp(args: &[&str], paths: &[&Path]) -> std::process::Output {
    let mut c = std::process::Command::new(bin("axon-cp"));
    c.args(args);
    for p in paths {
        c.arg(p);
    }
    c.output().expect("axon-cp")
}

#[tokio::test]
async fn a_data_dir_from_0_1_0_is_served_and_one_from_a_newer_release_is_refused() {
    let cp = ControlPlane::start_restored(&fixture("data-0.1.0.axonbak"), &[], &[]).await;
    let admin = cp.admin_token().await;
    let (status, tenants) = cp
        .call(Method::GET, "/api/tenants", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let slugs: Vec<&str> = tenants
        .as_array()
        .expect("tenants")
        .iter()
        .filter_map(|t| t["slug"].as_str())
        .collect();
    assert!(slugs.contains(&"kept-from-0-1"), "{slugs:?}");
    assert!(slugs.len() >= 3, "the demo tenants too: {slugs:?}");
    let (status, orders) = cp
        .call(Method::GET, "/api/orders", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{orders}");
    assert!(
        !orders["items"].as_array().expect("orders").is_empty(),
        "{orders}"
    );
    assert!(
        !audit_outcomes(&cp, &admin, "tenant.create")
            .await
            .is_empty(),
        "the trail came along"
    );
    drop(cp);

    // The same archive with the store's format raised past this build's: one clear line.
    let archive = std::fs::read(fixture("data-0.1.0.axonbak")).expect("fixture");
    let mut newer = archive[..archive.len() - 32].to_vec();
    newer.pop(); // the end marker, written again below with the new checksum
    newer.push(b'T');
    let tree = b"__sled__default";
    newer.extend_from_slice(&(tree.len() as u16).to_be_bytes());
    newer.extend_from_slice(tree);
    for field in [&b"__format"[..], &99u32.to_be_bytes()[..]] {
        newer.extend_from_slice(&(field.len() as u32).to_be_bytes());
        newer.extend_from_slice(field);
    }
    newer.push(b'E');
    let digest = axon_shared::sha256(&newer);
    newer.extend_from_slice(&digest);
    let work = tempfile::tempdir().expect("dir");
    let path = work.path().join("newer.axonbak");
    std::fs::write(&path, newer).expect("write");
    let data = work.path().join("data");
    let restored = axon_cp(
        &["restore", "--from"],
        &[&path, Path::new("--data-dir"), &data],
    );
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let refused = axon_cp(
        &[
            "serve",
            "--insecure-http",
            "--api-listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
            "--data-dir",
        ],
        &[&data],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("written by a newer axon-cp (store format 99"),
        "{stderr}"
    );
}
