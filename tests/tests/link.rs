//! The agent link end to end: real axon-cp and agentd processes, real mutual TLS, sled on disk.

use std::time::{Duration, Instant};

use axon_e2e::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn online(cp: &ControlPlane, admin: &str, id: &str) -> bool {
    cp.host(admin, id).await["status"] == "online"
}

#[tokio::test]
async fn enrolled_agent_is_online_within_2s_and_answers_ping() {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    let enrolled = cp.host(&admin, &agent.host_id).await;
    assert_eq!(enrolled["status"], "offline");
    assert_eq!(enrolled["hostname"], "e2e-host");

    let key_mode = std::fs::metadata(agent.state_dir().join("agent.key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("key meta");
    assert_eq!(key_mode, 0o600, "the private key must be owner-only");

    agent.start(&[]);
    let took = wait_until(Duration::from_secs(2), || {
        online(&cp, &admin, &agent.host_id)
    })
    .await;
    assert!(
        took.is_some(),
        "not online within 2 s; agent log:\n{}",
        agent.log()
    );

    let host = cp.host(&admin, &agent.host_id).await;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    assert!(
        host["facts"]["kernel"]
            .as_str()
            .unwrap_or("")
            .contains(kernel.trim()),
        "{host}"
    );
    assert_eq!(host["agent_version"], env!("CARGO_PKG_VERSION"));
    assert!(host["capabilities"]["systemd"].is_boolean());

    let (status, list) = cp.call(Method::GET, "/api/hosts", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        list.as_array()
            .expect("array")
            .iter()
            .any(|h| h["id"] == agent.host_id.as_str())
    );

    let (status, pong) = cp
        .call(
            Method::POST,
            &format!("/api/hosts/{}/ping", agent.host_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{pong}");
    let rtt = pong["rtt_ms"].as_f64().expect("rtt_ms");
    assert!(rtt > 0.0 && rtt < 5000.0, "{pong}");
    assert!(pong["agent_time_ms"].as_u64().expect("agent time") > 1_700_000_000_000);

    let (status, missing) = cp
        .call(
            Method::POST,
            "/api/hosts/01ARZ3NDEKTSV4RRFFQ69G5FAV/ping",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "not_found");
}

#[tokio::test]
async fn enrollment_tokens_are_single_use_expiring_and_pinned() {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let scratch = tempfile::tempdir().expect("tempdir");

    let token = cp.enrollment_token(&admin, 600).await;
    assert!(run_enroll(&cp.server(), &token, &scratch.path().join("a")).success);
    let reused = run_enroll(&cp.server(), &token, &scratch.path().join("b"));
    assert!(!reused.success);
    assert!(reused.stderr.contains("already used"), "{}", reused.stderr);
    assert!(
        !scratch.path().join("b/agent.key").exists(),
        "a refused enrollment must leave no key"
    );

    let short = cp.enrollment_token(&admin, 1).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = run_enroll(&cp.server(), &short, &scratch.path().join("c"));
    assert!(!expired.success);
    assert!(expired.stderr.contains("expired"), "{}", expired.stderr);

    // A bad CSR is refused without burning the token.
    let good = cp.enrollment_token(&admin, 600).await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/api/enroll",
            None,
            Some(serde_json::json!({"token": good, "csr_pem": "not a csr", "hostname": "h"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A token whose fingerprint names another CA: the agent refuses the server at TLS.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = "ab".repeat(32);
    let wrong_ca = run_enroll(&cp.server(), &parts.join("."), &scratch.path().join("d"));
    assert!(!wrong_ca.success);
    assert!(
        wrong_ca.stderr.contains("fingerprint"),
        "{}",
        wrong_ca.stderr
    );
    // Neither refused attempt used the token up, so it still works.
    assert!(run_enroll(&cp.server(), &good, &scratch.path().join("e")).success);

    let garbage = run_enroll(
        &cp.server(),
        "axe1.nothex.nothex",
        &scratch.path().join("f"),
    );
    assert!(!garbage.success);
    assert_eq!(
        garbage.stderr.trim().lines().count(),
        1,
        "one line on stderr: {}",
        garbage.stderr
    );

    // Guessed secrets with the right fingerprint are refused by the API.
    parts = good.split('.').map(str::to_owned).collect();
    parts[2] = "00".repeat(32);
    let (status, body) = cp
        .call(
            Method::POST,
            "/api/enroll",
            None,
            Some(serde_json::json!({"token": parts.join("."), "csr_pem": "x", "hostname": "h"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Only admins make tokens; anonymous callers get 401.
    let (status, _) = cp
        .call(Method::POST, "/api/enrollment-tokens", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = cp
        .call(
            Method::POST,
            "/api/enrollment-tokens",
            Some(&admin),
            Some(serde_json::json!({"ttl_secs": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

fn is_refused(result: &Result<RawLink, String>, alert: &str) -> bool {
    matches!(result, Err(e) if e.contains(alert))
}

#[tokio::test]
async fn agent_listener_refuses_bad_client_certificates_at_tls() {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let agent = Agent::enroll(&cp).await;
    let (cert, key) = agent.credentials();

    // Positive control: the enrolled certificate gets through.
    let ok = raw_link(&cp, Some((&cert, &key))).await;
    assert!(ok.is_ok(), "{:?}", ok.err());
    drop(ok);

    let none = raw_link(&cp, None).await;
    assert!(is_refused(&none, "CertificateRequired"), "{:?}", none.err());

    let (foreign_cert, foreign_key) = foreign_client_cert(&agent.host_id);
    let foreign = raw_link(&cp, Some((&foreign_cert, &foreign_key))).await;
    assert!(is_refused(&foreign, "UnknownCA"), "{:?}", foreign.err());

    let (old_cert, old_key) = mint_client_cert(&cp, &agent.host_id, -7200, -3600);
    let expired = raw_link(&cp, Some((&old_cert, &old_key))).await;
    assert!(
        is_refused(&expired, "CertificateExpired"),
        "{:?}",
        expired.err()
    );

    let (status, body) = cp
        .call(
            Method::DELETE,
            &format!("/api/hosts/{}", agent.host_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "revoked");
    let revoked = raw_link(&cp, Some((&cert, &key))).await;
    assert!(
        is_refused(&revoked, "CertificateRevoked"),
        "{:?}",
        revoked.err()
    );
    // Any other certificate naming the revoked host is refused too.
    let (fresh_cert, fresh_key) = mint_client_cert(&cp, &agent.host_id, -60, 3600);
    let fresh = raw_link(&cp, Some((&fresh_cert, &fresh_key))).await;
    assert!(
        is_refused(&fresh, "CertificateRevoked"),
        "{:?}",
        fresh.err()
    );

    // A valid certificate for a host the registry never heard of gets no session.
    let (ghost_cert, ghost_key) = mint_client_cert(&cp, "01ARZ3NDEKTSV4RRFFQ69G5FAV", -60, 3600);
    let ghost = raw_link(&cp, Some((&ghost_cert, &ghost_key))).await;
    assert!(ghost.is_err(), "unknown host got a session");
}

async fn say_hello(link: &mut RawLink) -> serde_json::Value {
    link.send(Message::Text(
        hello_frame("01JDQ3Z6V8K4M2N7P9R1S3T5W7").into(),
    ))
    .await
    .expect("send hello");
    loop {
        match tokio::time::timeout(Duration::from_secs(5), link.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).expect("json"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no welcome: {other:?}"),
        }
    }
}

/// Reads until the server closes; returns the close code if it sent one.
async fn closed_with(link: &mut RawLink) -> Option<CloseCode> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), link.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return None,
            Err(_) => break,
        }
    }
    panic!("the server did not close the link");
}

#[tokio::test]
async fn revoking_a_host_closes_its_live_link_within_a_second() {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let agent = Agent::enroll(&cp).await;
    let (cert, key) = agent.credentials();
    let mut link = raw_link(&cp, Some((&cert, &key))).await.expect("link");
    let welcome = say_hello(&mut link).await;
    assert_eq!(welcome["ok"], true, "{welcome}");
    assert_eq!(welcome["body"]["host_id"], agent.host_id.as_str());

    let start = Instant::now();
    let (status, _) = cp
        .call(
            Method::DELETE,
            &format!("/api/hosts/{}", agent.host_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let code = closed_with(&mut link).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "closed after {:?}",
        start.elapsed()
    );
    assert_eq!(code, Some(CloseCode::Policy));
    let (status, body) = cp
        .call(
            Method::POST,
            &format!("/api/hosts/{}/ping", agent.host_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = cp
        .call(
            Method::DELETE,
            &format!("/api/hosts/{}", agent.host_id),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn malformed_oversized_and_unknown_frames_are_handled() {
    let cp = ControlPlane::start(&["--max-frame-bytes", "65536"]).await;
    let admin = cp.admin_token().await;
    let agent = Agent::enroll(&cp).await;
    let (cert, key) = agent.credentials();

    // Anything but a hello first is refused.
    let mut link = raw_link(&cp, Some((&cert, &key))).await.expect("link");
    link.send(Message::Text(
        r#"{"kind":"request","v":1,"id":"x1","op":"ping","body":null}"#.into(),
    ))
    .await
    .expect("send");
    let refusal = match tokio::time::timeout(Duration::from_secs(5), link.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => {
            serde_json::from_str::<serde_json::Value>(&t).expect("json")
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(refusal["ok"], false);
    assert_eq!(refusal["error"]["code"], "bad_request");

    // An unknown op gets an error reply and the link stays up.
    let mut link = raw_link(&cp, Some((&cert, &key))).await.expect("link");
    say_hello(&mut link).await;
    link.send(Message::Text(
        r#"{"kind":"request","v":1,"id":"u1","op":"fs.format","body":{}}"#.into(),
    ))
    .await
    .expect("send");
    let reply = loop {
        match tokio::time::timeout(Duration::from_secs(5), link.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                break serde_json::from_str::<serde_json::Value>(&t).expect("json");
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("no reply: {other:?}"),
        }
    };
    assert_eq!(reply["id"], "u1");
    assert_eq!(reply["error"]["code"], "unknown_op");

    // Malformed JSON closes the link with a protocol error.
    link.send(Message::Text("{not json".into()))
        .await
        .expect("send");
    assert_eq!(closed_with(&mut link).await, Some(CloseCode::Protocol));

    // An oversized frame is refused before it is parsed.
    let mut link = raw_link(&cp, Some((&cert, &key))).await.expect("link");
    say_hello(&mut link).await;
    let big = format!(
        r#"{{"kind":"event","v":1,"topic":"x","seq":1,"body":"{}"}}"#,
        "a".repeat(70_000)
    );
    let _ = link.send(Message::Text(big.into())).await;
    let code = closed_with(&mut link).await;
    assert!(matches!(code, None | Some(CloseCode::Size)), "{code:?}");

    // Binary frames are not part of the protocol.
    let mut link = raw_link(&cp, Some((&cert, &key))).await.expect("link");
    say_hello(&mut link).await;
    link.send(Message::Binary(vec![0u8; 16].into()))
        .await
        .expect("send");
    assert_eq!(closed_with(&mut link).await, Some(CloseCode::Unsupported));

    // The control plane is unharmed and the real agent still connects.
    let mut agent = agent;
    agent.start(&[]);
    let took = wait_until(Duration::from_secs(5), || {
        online(&cp, &admin, &agent.host_id)
    })
    .await;
    assert!(took.is_some(), "agent log:\n{}", agent.log());
    assert!(!cp.log().contains("panicked"), "{}", cp.log());
}

#[tokio::test]
async fn silent_agent_goes_offline_after_three_missed_pings() {
    let cp = ControlPlane::start(&["--ping-interval", "1s"]).await;
    let admin = cp.admin_token().await;
    let agent = Agent::enroll(&cp).await;
    let (cert, key) = agent.credentials();
    let mut link = raw_link(&cp, Some((&cert, &key))).await.expect("link");
    let welcome = say_hello(&mut link).await;
    assert_eq!(welcome["body"]["ping_interval_secs"], 1);
    assert!(online(&cp, &admin, &agent.host_id).await);
    // Stop reading: pings go unanswered.
    let start = Instant::now();
    let offline = wait_until(Duration::from_secs(8), || async {
        !online(&cp, &admin, &agent.host_id).await
    })
    .await
    .expect("still online after 8 s");
    assert!(
        offline >= Duration::from_secs(2),
        "offline too early: {:?}",
        start.elapsed()
    );
    drop(link);
}

#[tokio::test]
async fn agent_comes_back_after_control_plane_kill9_and_registry_survives() {
    let mut cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    agent.start(&[]);
    assert!(
        wait_until(Duration::from_secs(5), || online(
            &cp,
            &admin,
            &agent.host_id
        ))
        .await
        .is_some()
    );
    let before = cp.host(&admin, &agent.host_id).await;

    cp.kill9();
    cp.spawn().await;
    let admin = cp.admin_token().await;
    let back = wait_until(Duration::from_secs(15), || {
        online(&cp, &admin, &agent.host_id)
    })
    .await;
    assert!(
        back.is_some(),
        "agent not back within 15 s; agent log:\n{}",
        agent.log()
    );
    let after = cp.host(&admin, &agent.host_id).await;
    assert_eq!(after["first_seen"], before["first_seen"]);
    assert_eq!(after["cert_serial"], before["cert_serial"]);
    let (status, _) = cp
        .call(
            Method::POST,
            &format!("/api/hosts/{}/ping", agent.host_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // A clean stop exits 0.
    let status = cp.terminate().expect("exit status");
    assert!(status.success(), "axon-cp exited with {status}");
}

#[tokio::test]
async fn agent_renews_its_certificate_over_the_link() {
    // 60 s certificates (6 s backdated): the agent renews at two thirds of 66 s, 38 s after issue.
    let cp = ControlPlane::start(&["--cert-lifetime", "60s"]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    let (first_cert, _) = agent.credentials();
    let serial = cp.host(&admin, &agent.host_id).await["cert_serial"].clone();
    agent.start(&[]);
    let renewed = wait_until(Duration::from_secs(55), || async {
        agent.credentials().0 != first_cert
    })
    .await;
    assert!(renewed.is_some(), "no renewal; agent log:\n{}", agent.log());
    let host = cp.host(&admin, &agent.host_id).await;
    assert_ne!(host["cert_serial"], serial, "registry keeps the old serial");
    // The renewed certificate works for a fresh handshake.
    let (cert, key) = agent.credentials();
    assert!(raw_link(&cp, Some((&cert, &key))).await.is_ok());
}

#[tokio::test]
async fn revoked_agent_says_so_and_stops_hammering() {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    agent.start(&["--backoff-initial", "100ms", "--backoff-max", "20s"]);
    assert!(
        wait_until(Duration::from_secs(5), || online(
            &cp,
            &admin,
            &agent.host_id
        ))
        .await
        .is_some()
    );
    let (status, _) = cp
        .call(
            Method::DELETE,
            &format!("/api/hosts/{}", agent.host_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let said = wait_until(Duration::from_secs(5), || async {
        agent.log().contains("this host is revoked")
    })
    .await;
    assert!(said.is_some(), "agent log:\n{}", agent.log());
    // After the revocation the agent backs off at its ceiling instead of retrying every
    // 100 ms: the retry it schedules next says so.
    let after_revoked = |log: &str| -> Option<String> {
        let at = log.find("this host is revoked")?;
        log[at..]
            .lines()
            .find(|l| l.contains("reconnecting"))
            .map(str::to_owned)
    };
    let retry = wait_until(Duration::from_secs(5), || async {
        after_revoked(&agent.log()).is_some()
    })
    .await;
    assert!(retry.is_some(), "agent log:\n{}", agent.log());
    let line = after_revoked(&agent.log()).unwrap_or_default();
    assert!(line.contains("ceiling_ms=20000"), "{line}");
}

#[tokio::test]
async fn audit_records_made_while_the_control_plane_is_down_arrive_once_in_order() {
    let mut cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    agent.start(&["--backoff-initial", "100ms", "--backoff-max", "1s"]);
    assert!(
        wait_until(Duration::from_secs(5), || online(
            &cp,
            &admin,
            &agent.host_id
        ))
        .await
        .is_some()
    );
    let host = agent.host_id.clone();
    let first = wait_until(Duration::from_secs(5), || async {
        kept_seqs(&cp, &admin, &host).await == [1]
    })
    .await;
    assert!(
        first.is_some(),
        "the start record did not arrive: {:?}",
        kept_seqs(&cp, &admin, &host).await
    );

    // The control plane goes away; the agent restarts twice, recording each start.
    cp.kill9();
    let trail = agent.state_dir().join("audit.jsonl");
    let starts = |trail: &std::path::Path| {
        std::fs::read_to_string(trail)
            .unwrap_or_default()
            .matches("\"agent.start\"")
            .count()
    };
    for restart in 0..2 {
        agent.stop();
        agent.start(&["--backoff-initial", "100ms", "--backoff-max", "1s"]);
        // Its start is on its own trail before the next restart.
        let recorded = wait_until(Duration::from_secs(10), || async {
            starts(&trail) >= restart + 2
        })
        .await;
        assert!(recorded.is_some(), "{}", agent.log());
    }
    cp.spawn().await;
    let admin = cp.admin_token().await;
    let all = wait_until(Duration::from_secs(10), || async {
        kept_seqs(&cp, &admin, &host).await.len() >= 3
    })
    .await;
    assert!(
        all.is_some(),
        "records missing: {:?}\n{}",
        kept_seqs(&cp, &admin, &host).await,
        agent.log()
    );
    // Nothing arrives twice: a ping's answer comes after every event the agent sent before
    // it, so once it is back, any replay has been handled.
    let (status, _) = cp
        .call(
            Method::POST,
            &format!("/api/hosts/{host}/ping"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        kept_seqs(&cp, &admin, &host).await,
        [1, 2, 3],
        "exactly once, in order"
    );

    // The local trail verifies, and the CLI names an edited line.
    let trail = agent.state_dir().join("audit.jsonl");
    let ok = std::process::Command::new(bin("agentd"))
        .args(["audit", "verify"])
        .arg(&trail)
        .output()
        .expect("verify");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("3 records"));
    let copy = agent.dir.path().join("edited.jsonl");
    let text = std::fs::read_to_string(&trail).expect("trail");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[1] = lines[1].replace("\"outcome\":\"ok\"", "\"outcome\":\"denied\"");
    std::fs::write(&copy, lines.join("\n") + "\n").expect("copy");
    let bad = std::process::Command::new(bin("agentd"))
        .args(["audit", "verify"])
        .arg(&copy)
        .output()
        .expect("verify");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("line 2"), "{err}");
}
