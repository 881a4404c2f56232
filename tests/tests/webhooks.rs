//! Signed webhooks through the durable outbox, end to end: the real axon-cp sends to a local
//! receiver that records every request and dedups on `Idempotency-Key`; signatures are checked
//! by an independent verifier (Python's standard library).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use axon_e2e::webhook_receiver::{Reply, WebhookReceiver};
use axon_e2e::{ControlPlane, wait_until};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Subscribes `url`; returns the subscription's id and secret.
async fn subscribe(cp: &ControlPlane, admin: &str, url: &str) -> (String, String) {
    let (status, body) = cp
        .call(
            Method::POST,
            "/api/webhooks",
            Some(admin),
            Some(json!({"url": url, "events": ["order.created", "ping"],
                "description": "n8n on this box"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["id"].as_str().expect("id").to_owned(),
        body["secret"].as_str().expect("secret").to_owned(),
    )
}

/// Stages a ping; returns the delivery's id.
async fn ping(cp: &ControlPlane, admin: &str, sub: &str) -> String {
    let (status, body) = cp
        .call(
            Method::POST,
            &format!("/api/webhooks/{sub}/ping"),
            Some(admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["state"], "pending");
    assert_eq!(body["idempotency_key"], body["id"]);
    body["id"].as_str().expect("id").to_owned()
}

/// The delivery as the subscription's listing shows it.
async fn delivery(cp: &ControlPlane, admin: &str, sub: &str, id: &str) -> Value {
    let (status, body) = cp
        .call(
            Method::GET,
            &format!("/api/webhooks/{sub}/deliveries?limit=100"),
            Some(admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array()
        .and_then(|all| all.iter().find(|d| d["id"] == id))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until the delivery reaches `state`; returns it.
async fn until_state(cp: &ControlPlane, admin: &str, sub: &str, id: &str, state: &str) -> Value {
    let reached = wait_until(WAIT, || async {
        delivery(cp, admin, sub, id).await["state"] == state
    })
    .await;
    let last = delivery(cp, admin, sub, id).await;
    assert!(
        reached.is_some(),
        "delivery never {state}: {last}\n{}",
        cp.log()
    );
    last
}

/// Runs the independent verifier; true when it accepts.
fn python_accepts(
    secret: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: Option<i64>,
) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("body");
    std::fs::write(&file, body).expect("write body");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/verify_webhook.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .args([secret, timestamp, signature])
        .arg(&file);
    if let Some(now) = now {
        command.arg(now.to_string());
    }
    let status = command.status().expect("run python3");
    match status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("the verifier failed to run: {other:?}"),
    }
}

#[tokio::test]
async fn a_ping_is_signed_so_an_independent_verifier_accepts_it() {
    let receiver = WebhookReceiver::start().await;
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let (sub, secret) = subscribe(&cp, &admin, &receiver.url("/webhook/axon")).await;
    let id = ping(&cp, &admin, &sub).await;
    let delivered = until_state(&cp, &admin, &sub, &id, "delivered").await;
    assert_eq!(delivered["attempt_count"], 1);
    assert_eq!(delivered["attempts"][0]["status"], 200);

    let processed = receiver.processed();
    let request = processed
        .get(&id)
        .expect("processed under its idempotency key");
    assert_eq!(request.header("x-axon-event"), "ping");
    assert_eq!(request.header("x-axon-delivery"), id);
    assert_eq!(request.header("idempotency-key"), id);
    assert!(request.header("user-agent").starts_with("axon-webhooks/"));
    assert_eq!(request.header("content-type"), "application/json");
    let body = request.json();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["event"], "ping");
    assert_eq!(body["data"]["subscription_id"], sub.as_str());
    assert!(
        body["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let timestamp = request.header("x-axon-timestamp");
    let signature = request.header("x-axon-signature");
    assert!(signature.starts_with("v1="), "{signature}");
    assert!(python_accepts(
        &secret,
        timestamp,
        signature,
        &request.body,
        None
    ));
    let mut tampered = request.body.clone();
    let last = tampered.len() - 2;
    tampered[last] ^= 0x01;
    assert!(!python_accepts(
        &secret, timestamp, signature, &tampered, None
    ));
    assert!(!python_accepts(
        "whsec_wrong",
        timestamp,
        signature,
        &request.body,
        None
    ));
    let ts: i64 = timestamp.parse().expect("unix seconds");
    assert!(!python_accepts(
        &secret,
        timestamp,
        signature,
        &request.body,
        Some(ts + 301)
    ));
}

#[tokio::test]
async fn a_503_is_retried_and_the_delivery_lands_once() {
    let receiver = WebhookReceiver::start().await;
    receiver.script(&[Reply::Status(503, Some(1))]);
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let (sub, _) = subscribe(&cp, &admin, &receiver.url("/hook")).await;
    let id = ping(&cp, &admin, &sub).await;
    let delivered = until_state(&cp, &admin, &sub, &id, "delivered").await;
    assert_eq!(delivered["attempt_count"], 2, "{delivered}");
    let attempts = delivered["attempts"].as_array().expect("attempts");
    assert_eq!(attempts[0]["status"], 503);
    assert!(
        attempts[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{delivered}"
    );
    assert_eq!(attempts[1]["status"], 200);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.header("idempotency-key") == id));
    assert_eq!(receiver.processed().len(), 1);
    assert_eq!(receiver.duplicates(), 0);

    let (status, listed) = cp
        .call(
            Method::GET,
            "/api/outbox?state=delivered",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        listed
            .as_array()
            .is_some_and(|a| a.iter().any(|d| d["id"] == id.as_str()))
    );
    let (status, _) = cp
        .call(Method::GET, "/api/outbox?state=lost", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let metrics = cp.metrics(&admin).await;
    assert!(
        metrics.contains(r#"axon_outbox_deliveries_total{target="webhook",outcome="delivered"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"axon_outbox_deliveries_total{target="webhook",outcome="retried"} 1"#)
    );
    assert!(metrics.contains("axon_outbox_pending 0"));
}

#[tokio::test]
async fn a_delivery_cut_off_by_kill_9_arrives_after_restart_once() {
    let receiver = WebhookReceiver::start().await;
    // The first request is held open: the control plane is killed while it waits.
    receiver.script(&[Reply::Hold]);
    let mut cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let (sub, _) = subscribe(&cp, &admin, &receiver.url("/hook")).await;
    let id = ping(&cp, &admin, &sub).await;
    let arrived = wait_until(WAIT, || async { !receiver.requests().is_empty() }).await;
    assert!(
        arrived.is_some(),
        "the first attempt never came:\n{}",
        cp.log()
    );
    assert!(receiver.processed().is_empty());
    cp.kill9();

    cp.spawn().await;
    let admin = cp.admin_token().await;
    let delivered = until_state(&cp, &admin, &sub, &id, "delivered").await;
    let processed = receiver.processed();
    assert_eq!(processed.len(), 1, "exactly one processed delivery");
    assert!(processed.contains_key(&id));
    assert_eq!(receiver.duplicates(), 0);
    let requests = receiver.requests();
    assert!(requests.len() >= 2);
    assert!(requests.iter().all(|r| r.header("idempotency-key") == id));
    // The cut-off attempt is on the record, not silently dropped.
    let attempts = delivered["attempts"].as_array().expect("attempts");
    assert!(
        attempts.iter().any(|a| a["error"]
            .as_str()
            .is_some_and(|e| e.contains("interrupted"))),
        "{delivered}"
    );
    assert_eq!(attempts.last().expect("last")["status"], 200);
}

#[tokio::test]
async fn gone_turns_the_subscription_off() {
    let receiver = WebhookReceiver::start().await;
    receiver.set_default(Reply::Status(410, None));
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let (sub, _) = subscribe(&cp, &admin, &receiver.url("/gone")).await;
    let id = ping(&cp, &admin, &sub).await;
    let failed = until_state(&cp, &admin, &sub, &id, "failed").await;
    assert_eq!(failed["attempt_count"], 1, "{failed}");
    assert_eq!(failed["attempts"][0]["status"], 410);
    let (status, shown) = cp
        .call(
            Method::GET,
            &format!("/api/webhooks/{sub}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["active"], false, "{shown}");
    assert!(
        shown["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("410"))
    );
    assert_eq!(shown["failed"], 1);
    assert_eq!(receiver.requests().len(), 1);

    // Off means nothing more is sent: a ping is refused, a retry fails without a request.
    let (status, _) = cp
        .call(
            Method::POST,
            &format!("/api/webhooks/{sub}/ping"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, retried) = cp
        .call(
            Method::POST,
            &format!("/api/outbox/{id}/retry"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["idempotency_key"], id.as_str());
    let again = wait_until(WAIT, || async {
        let d = delivery(&cp, &admin, &sub, &id).await;
        d["state"] == "failed" && d["attempts"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    assert!(
        again.is_some(),
        "{}",
        delivery(&cp, &admin, &sub, &id).await
    );
    let d = delivery(&cp, &admin, &sub, &id).await;
    assert!(
        d["attempts"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("disabled")),
        "{d}"
    );
    assert_eq!(receiver.requests().len(), 1);
    let (status, _) = cp
        .call(Method::POST, "/api/outbox/nope/retry", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_admins_reach_webhooks_and_the_secret_stays_hidden() {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let tenant = cp.create_tenant(&admin, "acme").await;
    cp.create_user(&admin, "op@axon.test", "operator", None)
        .await;
    cp.create_user(&admin, "client@acme.test", "client", Some(&tenant))
        .await;
    let (sub, secret) = subscribe(&cp, &admin, "http://127.0.0.1:9/hook").await;

    for email in ["op@axon.test", "client@acme.test"] {
        let token = cp.token_for(email).await;
        for (method, path, body) in [
            (Method::GET, "/api/webhooks".to_owned(), None),
            (
                Method::POST,
                "/api/webhooks".to_owned(),
                Some(json!({"url": "http://127.0.0.1:9/x", "events": ["*"]})),
            ),
            (Method::GET, format!("/api/webhooks/{sub}"), None),
            (
                Method::PATCH,
                format!("/api/webhooks/{sub}"),
                Some(json!({"active": false})),
            ),
            (Method::DELETE, format!("/api/webhooks/{sub}"), None),
            (
                Method::POST,
                format!("/api/webhooks/{sub}/rotate-secret"),
                None,
            ),
            (Method::POST, format!("/api/webhooks/{sub}/ping"), None),
            (Method::GET, format!("/api/webhooks/{sub}/deliveries"), None),
            (Method::GET, "/api/outbox".to_owned(), None),
            (Method::POST, "/api/outbox/x/retry".to_owned(), None),
        ] {
            let (status, answer) = cp.call(method.clone(), &path, Some(&token), body).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{email} {method} {path}: {answer}"
            );
        }
    }

    // Bad input is a 400 in the error shape, an unknown id a 404.
    for body in [
        json!({"url": "ftp://127.0.0.1/x", "events": ["ping"]}),
        json!({"url": "http://user:pw@127.0.0.1/x", "events": ["ping"]}),
        json!({"url": "http://127.0.0.1/x", "events": ["order.deleted"]}),
        json!({"url": "http://127.0.0.1/x", "events": []}),
        json!({"url": format!("http://127.0.0.1/{}", "a".repeat(2000)), "events": ["ping"]}),
    ] {
        let (status, answer) = cp
            .call(
                Method::POST,
                "/api/webhooks",
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["error"]["message"].is_string());
    }
    let (status, _) = cp
        .call(Method::GET, "/api/webhooks/nope", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The secret is shown at creation and rotation only.
    let (status, rotated) = cp
        .call(
            Method::POST,
            &format!("/api/webhooks/{sub}/rotate-secret"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new_secret, secret);
    let (status, patched) = cp
        .call(
            Method::PATCH,
            &format!("/api/webhooks/{sub}"),
            Some(&admin),
            Some(json!({"description": "renamed", "events": ["*"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["events"], json!(["*"]));
    let mut seen = String::new();
    for path in [
        "/api/webhooks".to_owned(),
        format!("/api/webhooks/{sub}"),
        format!("/api/webhooks/{sub}/deliveries"),
        "/api/outbox".to_owned(),
        "/api/audit?limit=1000".to_owned(),
    ] {
        let (status, body) = cp.call(Method::GET, &path, Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        seen.push_str(&body.to_string());
    }
    assert!(seen.contains(&sub));
    assert!(
        !seen.contains(&secret) && !seen.contains(&new_secret),
        "a secret leaked"
    );
    assert!(!seen.contains("whsec_"), "a secret leaked");
    for action in ["webhook.create", "webhook.rotate_secret", "webhook.update"] {
        assert!(seen.contains(action), "{action} is not in the audit trail");
    }
    assert!(!cp.log().contains(&new_secret) && !cp.log().contains(&secret));

    let (status, _) = cp
        .call(
            Method::DELETE,
            &format!("/api/webhooks/{sub}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = cp
        .call(
            Method::GET,
            &format!("/api/webhooks/{sub}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_bounded_in_number_and_room_comes_back_with_a_removal() {
    // Every event is matched against every subscription: 500 at most.
    const LIMIT: usize = 500;
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let made: Vec<String> = futures_util::stream::iter(0..LIMIT)
        .map(|i| {
            let (cp, admin) = (&cp, &admin);
            async move {
                subscribe(cp, admin, &format!("http://127.0.0.1:9/hook/{i}"))
                    .await
                    .0
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/api/webhooks",
            Some(&admin),
            Some(json!({"url": "http://127.0.0.1:9/one-more", "events": ["ping"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 500")),
        "{body}"
    );
    let (status, _) = cp
        .call(
            Method::DELETE,
            &format!("/api/webhooks/{}", made[0]),
            Some(&admin),
            None,
        )
        .await;
    assert!(status.is_success(), "{status}");
    subscribe(&cp, &admin, "http://127.0.0.1:9/one-more").await;
}
