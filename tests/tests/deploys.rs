//! Deploy channels end to end: the real axon-cp deploys the demo's ready orders to local fakes
//! of n8n, Ayrshare and the Telegram Bot API that speak their documented formats; every
//! outcome lands in the order's history, the channels' health and `/metrics`; nothing is sent
//! twice — not on a double click, not after a `kill -9` mid-call.

use std::collections::BTreeSet;
use std::time::Duration;

use axon_e2e::fake_channels::{FakeChannels, FakeSetup, Scripted, Service};
use axon_e2e::webhook_receiver::WebhookReceiver;
use axon_e2e::{ControlPlane, USER_PASSWORD, wait_until};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const AYRSHARE_KEY: &str = "AYR-test-key-7f3a9c";
const TELEGRAM_TOKEN: &str = "123456789:AAH-test_token_9d8e7f";
const N8N_HEADER_VALUE: &str = "n8n-header-secret-51b2";
const PROFILE_KEY: &str = "PROFILE-key-algorithmics-88c1";
const WAIT: Duration = Duration::from_secs(30);

async fn fakes() -> FakeChannels {
    FakeChannels::start(FakeSetup {
        ayrshare_key: AYRSHARE_KEY.into(),
        telegram_token: TELEGRAM_TOKEN.into(),
        n8n_paths: vec!["wa-deploy".into()],
        n8n_header: Some(("X-N8N-Key".into(), N8N_HEADER_VALUE.into())),
    })
    .await
}

/// A control plane pointed at the fakes, with short call limits so retries show quickly.
async fn control_plane(fakes: &FakeChannels, more: &[(&str, &str)]) -> ControlPlane {
    let mut env = vec![
        ("AXON_DEPLOY_TIMEOUT", "2s"),
        ("AXON_DEPLOY_RETRY_DELAY", "300ms"),
        ("AXON_DEPLOY_ATTEMPTS", "4"),
    ];
    env.extend_from_slice(more);
    fakes.control_plane(&env).await
}

/// Seeds the demo; returns the ready orders' ids by product type.
async fn ready_orders(cp: &ControlPlane, admin: &str) -> (String, String, String) {
    let ready = axon_e2e::seed_demo(cp, admin).await;
    let find = |product: &str| {
        ready
            .get(product)
            .unwrap_or_else(|| panic!("no ready {product} order: {ready:?}"))
            .clone()
    };
    (
        find("whatsapp_autopilot"),
        find("social_autopilot"),
        find("telegram_bot"),
    )
}

async fn order(cp: &ControlPlane, token: &str, id: &str) -> Value {
    let (status, body) = cp
        .call(Method::GET, &format!("/api/orders/{id}"), Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn deploy(
    cp: &ControlPlane,
    token: &str,
    id: &str,
    channel: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    cp.call(
        Method::POST,
        &format!("/api/orders/{id}/deploy/{channel}"),
        Some(token),
        body,
    )
    .await
}

/// Deploys and returns the new event's id (the answer must be 202, not a replay).
async fn start(cp: &ControlPlane, admin: &str, id: &str, channel: &str) -> String {
    let (status, body) = deploy(cp, admin, id, channel, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["replayed"], false, "{body}");
    assert_eq!(body["deploy"]["status"], "pending", "{body}");
    body["deploy"]["id"].as_str().expect("id").to_owned()
}

fn event<'a>(order: &'a Value, deploy_id: &str) -> &'a Value {
    order["deploy_history"]
        .as_array()
        .expect("history")
        .iter()
        .find(|e| e["id"] == deploy_id)
        .unwrap_or_else(|| panic!("no event {deploy_id}: {order}"))
}

/// Waits until the event leaves `pending`; returns it.
async fn settled(cp: &ControlPlane, admin: &str, id: &str, deploy_id: &str) -> Value {
    let start = std::time::Instant::now();
    loop {
        let o = order(cp, admin, id).await;
        let e = event(&o, deploy_id).clone();
        if e["status"] != "pending" {
            return e;
        }
        assert!(start.elapsed() < WAIT, "still pending: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Replaces the deliverable's text (new content, new idempotency key).
async fn set_text(cp: &ControlPlane, admin: &str, id: &str, text: &str) {
    let mut meta = order(cp, admin, id).await["deliverable_metadata"].clone();
    meta["text"] = json!(text);
    let (status, body) = cp
        .call(
            Method::PATCH,
            &format!("/api/orders/{id}"),
            Some(admin),
            Some(json!({ "deliverable_metadata": meta })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn health(cp: &ControlPlane, token: &str, channel: &str) -> Value {
    let (status, body) = cp
        .call(
            Method::GET,
            &format!("/api/integrations/{channel}/health"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn deploy_counter(cp: &ControlPlane, channel: &str, outcome: &str) -> f64 {
    let text = cp.metrics(&cp.admin_token().await).await;
    let needle = format!("axon_deploys_total{{channel=\"{channel}\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .unwrap_or_else(|| panic!("no {needle} in /metrics"))
        .trim()
        .parse()
        .expect("number")
}

/// On the demo data an admin deploys the three ready orders; each service gets exactly one
/// call in its own format, the history and health show the outcomes, a second click sends
/// nothing, the artifact links work without a login (and only as signed), and the client sees
/// where its order went without internal details.
#[tokio::test]
async fn an_admin_deploys_the_demo_orders_to_all_three_channels() {
    let fakes = fakes().await;
    let cp = control_plane(&fakes, &[]).await;
    let admin = cp.admin_token().await;
    let (wa, social, tg) = ready_orders(&cp, &admin).await;

    // The social order's tenant posts through its own Ayrshare profile.
    let social_tenant = order(&cp, &admin, &social).await["tenant_id"]
        .as_str()
        .expect("tenant")
        .to_owned();
    let (_, tenant) = cp
        .call(
            Method::GET,
            &format!("/api/tenants/{social_tenant}"),
            Some(&admin),
            None,
        )
        .await;
    let mut settings = tenant["settings"].clone();
    settings["ayrshare_profile_key"] = json!(PROFILE_KEY);
    let (status, body) = cp
        .call(
            Method::PATCH,
            &format!("/api/tenants/{social_tenant}"),
            Some(&admin),
            Some(json!({ "settings": settings })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A workflow that follows deploys.
    let receiver = WebhookReceiver::start().await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/api/webhooks",
            Some(&admin),
            Some(json!({"url": receiver.url("/hook"), "events": ["deploy.finished"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let wa_deploy = start(&cp, &admin, &wa, "whatsapp").await;
    let social_deploy = start(&cp, &admin, &social, "social").await;
    // Eight clicks at once on Telegram: one deploy, the others refused or answered with it.
    let clicks =
        futures_util::future::join_all((0..8).map(|_| deploy(&cp, &admin, &tg, "telegram", None)))
            .await;
    let fresh: Vec<&Value> = clicks
        .iter()
        .filter(|(s, b)| *s == StatusCode::ACCEPTED && b["replayed"] == false)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(fresh.len(), 1, "{clicks:?}");
    let tg_deploy = fresh[0]["deploy"]["id"].as_str().expect("id").to_owned();
    for (status, body) in &clicks {
        assert!(
            *status == StatusCode::CONFLICT
                || (*status == StatusCode::ACCEPTED && body["deploy"]["id"] == tg_deploy.as_str()),
            "{status} {body}"
        );
    }
    for (id, d) in [
        (&wa, &wa_deploy),
        (&social, &social_deploy),
        (&tg, &tg_deploy),
    ] {
        let e = settled(&cp, &admin, id, d).await;
        assert_eq!(e["status"], "success", "{e}");
        assert_eq!(e["details"]["attempts"], 1, "{e}");
        assert!(e["requested_by"].is_string(), "{e}");
    }

    // Each outcome reached the subscribed workflow.
    let finished = wait_until(WAIT, || async { receiver.processed().len() == 3 }).await;
    assert!(finished.is_some(), "{:?}", receiver.requests().len());
    let mut reported: Vec<String> = receiver
        .processed()
        .values()
        .map(|r| {
            let j = r.json();
            assert_eq!(j["event"], "deploy.finished");
            assert_eq!(j["data"]["deploy"]["status"], "success", "{j}");
            j["data"]["deploy"]["id"].as_str().expect("id").to_owned()
        })
        .collect();
    reported.sort();
    let mut expected = vec![wa_deploy.clone(), social_deploy.clone(), tg_deploy.clone()];
    expected.sort();
    assert_eq!(reported, expected);

    // n8n: the documented payload with header auth and the idempotency key.
    let posts = fakes.calls(Service::N8n, "/webhook/wa-deploy");
    assert_eq!(posts.len(), 1);
    let n8n = &posts[0];
    assert_eq!(n8n.header("x-n8n-key"), N8N_HEADER_VALUE);
    let payload = n8n.json();
    assert_eq!(payload["deploy_id"], wa_deploy.as_str());
    assert_eq!(n8n.header("idempotency-key"), payload["idempotency_key"]);
    assert_eq!(payload["tenant"]["slug"], "beesmart-delivery");
    assert_eq!(payload["order"]["id"], wa.as_str());
    assert_eq!(payload["whatsapp"]["number"], "+34600000000");
    assert!(
        payload["agent_blueprint"]["identity"]["name"].is_string(),
        "{payload}"
    );
    let artifacts = payload["artifacts"].as_array().expect("artifacts");
    assert!(
        artifacts.iter().any(|a| a["path"] == "spec.md"),
        "{payload}"
    );
    // The links work without a login, and only as signed.
    let spec = artifacts
        .iter()
        .find(|a| a["path"] == "spec.md")
        .expect("spec");
    let link = spec["url"].as_str().expect("url");
    let got = cp.client.get(link).send().await.expect("link");
    assert_eq!(got.status(), StatusCode::OK);
    let text = got.text().await.expect("text");
    assert_eq!(text.len() as u64, spec["bytes"].as_u64().expect("bytes"));
    let archive = cp
        .client
        .get(payload["archive_url"].as_str().expect("archive"))
        .send()
        .await
        .expect("archive");
    assert_eq!(archive.status(), StatusCode::OK);
    assert_eq!(archive.headers()["content-type"], "application/x-tar");
    let token = link
        .split("/api/artifacts/")
        .nth(1)
        .and_then(|t| t.split('?').next())
        .expect("token");
    let forged = token.replace(&wa, &social);
    let (status, body) = cp
        .call(Method::GET, &format!("/api/artifacts/{forged}"), None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");

    // Ayrshare: bearer key, the tenant's profile, the post's fields; results per platform.
    let posts = fakes.calls(Service::Ayrshare, "/api/post");
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].header("authorization"),
        format!("Bearer {AYRSHARE_KEY}")
    );
    assert_eq!(posts[0].header("profile-key"), PROFILE_KEY);
    let body = posts[0].json();
    assert_eq!(
        body["platforms"],
        json!(["instagram", "linkedin", "facebook"])
    );
    assert!(body["post"].as_str().expect("post").contains("matrícula"));
    assert_eq!(body["mediaUrls"].as_array().map(Vec::len), Some(1));
    assert!(body.get("scheduleDate").is_none(), "{body}");
    let o = order(&cp, &admin, &social).await;
    let e = event(&o, &social_deploy);
    let platforms = e["details"]["platforms"].as_array().expect("platforms");
    assert_eq!(platforms.len(), 3);
    for p in platforms {
        assert_eq!(p["status"], "success", "{p}");
        assert!(p["id"].is_string() && p["url"].is_string(), "{p}");
    }
    assert!(e["details"]["ayrshare_id"].is_string(), "{e}");

    // Telegram: sendMessage to the deliverable's chat, with the message id recorded.
    let sent = fakes.calls(Service::Telegram, "/sendmessage");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].json()["chat_id"], json!(-1001234567890i64));
    let o = order(&cp, &admin, &tg).await;
    let e = event(&o, &tg_deploy);
    assert_eq!(e["details"]["chat_id"], "-1001234567890");
    assert_eq!(e["details"]["chat_id_source"], "deliverable");
    assert_eq!(
        e["details"]["message_ids"].as_array().map(Vec::len),
        Some(1)
    );

    // A second click: the same event answered, nothing sent.
    for (id, channel, first) in [
        (&wa, "whatsapp", &wa_deploy),
        (&social, "social", &social_deploy),
        (&tg, "telegram", &tg_deploy),
    ] {
        let (status, body) = deploy(&cp, &admin, id, channel, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["replayed"], true, "{body}");
        assert_eq!(body["deploy"]["id"], first.as_str());
    }
    assert_eq!(fakes.calls(Service::N8n, "/webhook/wa-deploy").len(), 1);
    assert_eq!(fakes.calls(Service::Ayrshare, "/api/post").len(), 1);
    assert_eq!(fakes.calls(Service::Telegram, "/sendmessage").len(), 1);
    // `repeat` sends the same content again, deliberately, under a new key.
    let (status, body) = deploy(&cp, &admin, &tg, "telegram", Some(json!({"repeat": true}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["replayed"], false);
    let again = body["deploy"]["id"].as_str().expect("id").to_owned();
    assert_eq!(settled(&cp, &admin, &tg, &again).await["status"], "success");
    assert_ne!(
        event(&order(&cp, &admin, &tg).await, &again)["details"]["idempotency_key"],
        event(&order(&cp, &admin, &tg).await, &tg_deploy)["details"]["idempotency_key"]
    );

    // Health: configured, checked live, with the last success and the rate-limit state.
    let h = health(&cp, &admin, "social").await;
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(h["last_success"]["order_id"], social.as_str());
    assert_eq!(h["rate_limit"]["limit"], 300, "{h}");
    assert!(h["rate_limit"]["remaining"].as_u64().is_some(), "{h}");
    assert!(
        h["platforms"]
            .as_array()
            .expect("platforms")
            .contains(&json!("instagram")),
        "{h}"
    );
    let h = health(&cp, &admin, "telegram").await;
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(h["bot"], "AxonDeployBot");
    assert_eq!(h["last_success"]["order_id"], tg.as_str());
    let h = health(&cp, &admin, "whatsapp").await;
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(h["last_success"]["deploy_id"], wa_deploy.as_str());
    assert!(h["last_failure"].is_null(), "{h}");
    let (status, all) = cp
        .call(Method::GET, "/api/integrations", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all.as_array().map(Vec::len), Some(3));

    assert_eq!(deploy_counter(&cp, "social", "success").await, 1.0);
    assert_eq!(deploy_counter(&cp, "telegram", "success").await, 2.0);
    assert_eq!(deploy_counter(&cp, "whatsapp", "failed").await, 0.0);

    // The client sees where its order went, and nothing internal.
    cp.create_user(
        &admin,
        "laura@algorithmics.test",
        "client",
        Some(&social_tenant),
    )
    .await;
    let client = cp.login_as("laura@algorithmics.test", USER_PASSWORD).await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (_, t) = cp
        .call(
            Method::GET,
            &format!("/api/tenants/{social_tenant}"),
            Some(&admin),
            None,
        )
        .await;
    let slug = t["slug"].as_str().expect("slug");
    let (status, mine) = cp
        .call(
            Method::GET,
            &format!("/api/portal/{slug}/orders/{social}"),
            Some(&client),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    let deployments = mine["deployments"].as_array().expect("deployments");
    assert_eq!(deployments.len(), 1, "{mine}");
    assert_eq!(deployments[0]["channel"], "social");
    assert_eq!(deployments[0]["status"], "success");
    assert_eq!(
        deployments[0]["platforms"],
        json!(["instagram", "linkedin", "facebook"])
    );
    let text = mine.to_string();
    for internal in [
        "details",
        "idempotency_key",
        "ayrshare",
        "requested_by",
        "content_hash",
        &social_deploy,
        "http_status",
    ] {
        assert!(
            !text.contains(internal),
            "the portal shows {internal}: {text}"
        );
    }
    // The tenant's profile key is sent to Ayrshare and shown nowhere else.
    assert_nothing_shows(
        &cp,
        &admin,
        &[&wa, &social, &tg],
        &[PROFILE_KEY, AYRSHARE_KEY],
    )
    .await;
    // And the client cannot deploy, nor read the channels' health.
    let (status, _) = deploy(&cp, &client, &social, "social", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = cp
        .call(
            Method::GET,
            "/api/integrations/social/health",
            Some(&client),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Every refusal names its condition: estado, product type, a channel off or half set up, a
/// deploy already in flight; only admins deploy. Nothing reaches a service.
#[tokio::test]
async fn preconditions_and_admin_only_access_are_walked_for_every_channel() {
    let fakes = fakes().await;
    let cp = control_plane(&fakes, &[]).await;
    let admin = cp.admin_token().await;
    let (wa, social, tg) = ready_orders(&cp, &admin).await;
    cp.create_user(&admin, "op@axon.test", "operator", None)
        .await;
    cp.create_user(&admin, "viewer@axon.test", "viewer", None)
        .await;
    let operator = cp.token_for("op@axon.test").await;
    let viewer = cp.token_for("viewer@axon.test").await;

    // A demo order that is not ready: en_produccion.
    let (_, orders) = cp
        .call(
            Method::GET,
            "/api/orders?estado=en_produccion&limit=100",
            Some(&admin),
            None,
        )
        .await;
    let busy = orders["items"][0]["id"].as_str().expect("order").to_owned();
    let ready = [("whatsapp", &wa), ("social", &social), ("telegram", &tg)];
    for (channel, id) in ready {
        for token in [&operator, &viewer] {
            let (status, body) = deploy(&cp, token, id, channel, None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{channel}: {body}");
        }
        let (status, body) = deploy(&cp, &admin, &busy, channel, None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{channel}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("message")
                .contains("estado en_produccion"),
            "{body}"
        );
        // The product each other channel does not ship.
        for (other, other_id) in ready {
            if other == channel {
                continue;
            }
            let (status, body) = deploy(&cp, &admin, other_id, channel, None).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{channel} {other}: {body}"
            );
            assert!(
                body["error"]["message"]
                    .as_str()
                    .expect("message")
                    .contains("does not ship"),
                "{body}"
            );
        }
    }
    let (status, _) = deploy(&cp, &admin, &tg, "fax", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = deploy(&cp, &admin, "01NOSUCHORDER0000000000000", "telegram", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = deploy(&cp, &admin, &tg, "telegram", Some(json!({"bogus": 1}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Telegram's limits are checked before anything is sent.
    set_text(&cp, &admin, &tg, &"ñ".repeat(4097)).await;
    let (status, body) = deploy(&cp, &admin, &tg, "telegram", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("m")
            .contains("4096")
    );

    // One in flight at a time per order and channel.
    fakes.script(Service::N8n, vec![Scripted::Hang]);
    let first = start(&cp, &admin, &wa, "whatsapp").await;
    let (status, body) = deploy(&cp, &admin, &wa, "whatsapp", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("m")
            .contains(&first),
        "{body}"
    );
    assert_eq!(health(&cp, &admin, "whatsapp").await["in_flight"], 1);
    // (The hung call times out and is retried; it then succeeds.)
    assert_eq!(settled(&cp, &admin, &wa, &first).await["status"], "success");
    assert!(fakes.calls(Service::Ayrshare, "/api/post").is_empty());
    assert!(fakes.calls(Service::Telegram, "/sendmessage").is_empty());
    drop(cp);

    // Channels off, or half set up: 503 naming what to set; health says the same.
    let bare = ControlPlane::start_with_env(
        &[],
        &[
            ("ENABLE_TELEGRAM_DEPLOY", "true"),
            ("ENABLE_AYRSHARE_SOCIAL", "true"),
            ("AYRSHARE_API_KEY", "k"),
            ("AYRSHARE_BASE_URL", "file:///etc/passwd"),
        ],
    )
    .await;
    let admin = bare.admin_token().await;
    let (wa, social, tg) = ready_orders(&bare, &admin).await;
    for (channel, id, status_word, needle) in [
        (
            "whatsapp",
            &wa,
            "disabled",
            "N8N_WHATSAPP_DEPLOY_WEBHOOK_URL",
        ),
        ("telegram", &tg, "misconfigured", "TELEGRAM_BOT_TOKEN"),
        ("social", &social, "misconfigured", "AYRSHARE_BASE_URL"),
    ] {
        let (status, body) = deploy(&bare, &admin, id, channel, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{channel}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("m")
                .contains(needle),
            "{body}"
        );
        let h = health(&bare, &admin, channel).await;
        assert_eq!(h["status"], status_word, "{h}");
        assert!(
            h["reason"].as_str().expect("reason").contains(needle),
            "{h}"
        );
        let o = order(&bare, &admin, id).await;
        assert!(o["deploy_history"].as_array().expect("h").is_empty());
    }
}

/// What each service can answer, and what the history shows for it: partial failure and a
/// re-deploy to the networks that failed; 429 with `Retry-After`; 401; 5xx; a hang past the
/// timeout; Telegram's `retry_after`, "chat not found" and `migrate_to_chat_id`; n8n's plain
/// 403 and its 404 "not registered". Afterwards no secret is found in the log, the events,
/// the outbox, the audit trail, the health or `/metrics`.
#[tokio::test]
async fn failures_retries_and_answers_of_every_service_are_recorded() {
    let fakes = fakes().await;
    let cp = control_plane(&fakes, &[]).await;
    let admin = cp.admin_token().await;
    let (wa, social, tg) = ready_orders(&cp, &admin).await;

    // Ayrshare: two networks of three fail.
    fakes.fail_platforms(&["linkedin", "facebook"]);
    let d = start(&cp, &admin, &social, "social").await;
    let e = settled(&cp, &admin, &social, &d).await;
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["details"]["attempts"], 1);
    let error = e["error"].as_str().expect("error");
    assert!(
        error.contains("2 of 3") && error.contains("linkedin (110") && error.contains("facebook"),
        "{error}"
    );
    let by: BTreeSet<(String, String)> = e["details"]["platforms"]
        .as_array()
        .expect("platforms")
        .iter()
        .map(|p| {
            (
                p["platform"].as_str().expect("p").to_owned(),
                p["status"].as_str().expect("s").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        by,
        BTreeSet::from([
            ("instagram".into(), "success".into()),
            ("linkedin".into(), "failed".into()),
            ("facebook".into(), "failed".into()),
        ])
    );
    // Deploying again goes only to the networks that failed.
    fakes.fail_platforms(&[]);
    let d = start(&cp, &admin, &social, "social").await;
    let e = settled(&cp, &admin, &social, &d).await;
    assert_eq!(e["status"], "success", "{e}");
    assert_eq!(e["details"]["skipped_platforms"], json!(["instagram"]));
    let posts = fakes.calls(Service::Ayrshare, "/api/post");
    assert_eq!(posts.len(), 2);
    assert_eq!(
        posts[1].json()["platforms"],
        json!(["linkedin", "facebook"])
    );

    // One row per answer: the order, its channel, new text, the service's next answers, and
    // the outcome expected — status, attempts, and words the error must hold.
    let tg_429 = json!({"ok": false, "error_code": 429,
        "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}});
    let not_registered = json!({"code": 404,
        "message": "The requested webhook \"POST wa-deploy\" is not registered.",
        "hint": "The workflow must be active for a production URL to run successfully."});
    let rows: Vec<Case> = vec![
        (
            &social,
            "social",
            "429 with Retry-After, then success",
            vec![
                Scripted::json(
                    429,
                    json!({"status": "error", "code": 429, "message": "slow"}),
                )
                .with_header("Retry-After", "1")
                .with_header("x-ratelimit-max", "300")
                .with_header("x-ratelimit-count", "300"),
            ],
            "success",
            2,
            "",
        ),
        (
            &social,
            "social",
            "401",
            vec![Scripted::json(
                401,
                json!({"status": "error", "code": 102, "message": "API Key not valid."}),
            )],
            "failed",
            1,
            "AYRSHARE_API_KEY",
        ),
        (
            &wa,
            "whatsapp",
            "502, then success",
            vec![Scripted::text(502, "Bad Gateway")],
            "success",
            2,
            "",
        ),
        (
            &wa,
            "whatsapp",
            "a hang past the 2 s limit, then success",
            vec![Scripted::Hang],
            "success",
            2,
            "",
        ),
        (
            &wa,
            "whatsapp",
            "n8n's plain-text 403",
            vec![Scripted::text(403, "Authorization data is wrong!")],
            "failed",
            1,
            "Authorization data is wrong!",
        ),
        (
            &wa,
            "whatsapp",
            "n8n's 404 not registered",
            vec![Scripted::json(404, not_registered)],
            "failed",
            1,
            "not registered",
        ),
        (
            &tg,
            "telegram",
            "retry_after, then success",
            vec![Scripted::json(429, tg_429)],
            "success",
            2,
            "",
        ),
        (
            &tg,
            "telegram",
            "401 for the token",
            vec![Scripted::json(
                401,
                json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
            )],
            "failed",
            1,
            "TELEGRAM_BOT_TOKEN",
        ),
    ];
    let mut last_social_failure = String::new();
    for (id, channel, case, script, status, attempts, needle) in rows {
        set_text(&cp, &admin, id, case).await;
        let service = match channel {
            "social" => Service::Ayrshare,
            "whatsapp" => Service::N8n,
            _ => Service::Telegram,
        };
        let calls = || fakes.seen().iter().filter(|s| s.service == service).count();
        let before = calls();
        fakes.script(service, script);
        let d = start(&cp, &admin, id, channel).await;
        let e = settled(&cp, &admin, id, &d).await;
        assert_eq!(e["status"], status, "{case}: {e}");
        assert_eq!(e["details"]["attempts"], attempts, "{case}: {e}");
        assert_eq!(
            calls(),
            before + attempts as usize,
            "{case}: one call per attempt"
        );
        if status == "failed" {
            let error = e["error"].as_str().expect("error");
            assert!(error.contains(needle), "{case}: {error}");
            if channel == "social" {
                last_social_failure = d;
            }
        }
    }
    let h = health(&cp, &admin, "social").await;
    assert_eq!(
        h["last_failure"]["deploy_id"],
        last_social_failure.as_str(),
        "{h}"
    );
    let h = health(&cp, &admin, "telegram").await;
    assert_eq!(h["rate_limit"]["remaining"], 0, "{h}");
    assert!(h["rate_limit"]["reset_at"].is_string(), "{h}");
    // A chat that does not exist fails at once.
    fakes.missing_chat("-1001234567890");
    set_text(&cp, &admin, &tg, "Aviso dos").await;
    let d = start(&cp, &admin, &tg, "telegram").await;
    let e = settled(&cp, &admin, &tg, &d).await;
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["details"]["attempts"], 1);
    assert!(
        e["error"].as_str().expect("e").contains("chat not found"),
        "{e}"
    );
    // A group that became a supergroup: followed once, recorded.
    let mut meta = order(&cp, &admin, &tg).await["deliverable_metadata"].clone();
    meta["telegram_chat_id"] = json!("-4242");
    meta["media_urls"] = json!(["https://cdn.example/1.jpg", "https://cdn.example/2.jpg"]);
    let (status, _) = cp
        .call(
            Method::PATCH,
            &format!("/api/orders/{tg}"),
            Some(&admin),
            Some(json!({ "deliverable_metadata": meta })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    fakes.migrate_chat("-4242", -1009998887776);
    let d = start(&cp, &admin, &tg, "telegram").await;
    let e = settled(&cp, &admin, &tg, &d).await;
    assert_eq!(e["status"], "success", "{e}");
    assert_eq!(e["details"]["method"], "sendMediaGroup");
    assert_eq!(e["details"]["migrated_from"], "-4242");
    assert_eq!(e["details"]["migrate_to_chat_id"], "-1009998887776");
    assert_eq!(e["details"]["chat_id"], "-1009998887776");
    assert_eq!(
        e["details"]["message_ids"].as_array().map(Vec::len),
        Some(2)
    );
    let groups = fakes.calls(Service::Telegram, "/sendmediagroup");
    assert_eq!(groups.len(), 2, "the first try and the one to the new chat");
    let media = groups[1].json()["media"].clone();
    assert!(media[0]["caption"].is_string() && media[1].get("caption").is_none());

    assert!(deploy_counter(&cp, "social", "failed").await >= 2.0);
    assert!(deploy_counter(&cp, "telegram", "retried").await >= 1.0);

    // No secret anywhere a person or a log collector could read.
    let token_secret = TELEGRAM_TOKEN.split_once(':').expect("token").1;
    assert_nothing_shows(
        &cp,
        &admin,
        &[&wa, &social, &tg],
        &[AYRSHARE_KEY, token_secret, N8N_HEADER_VALUE],
    )
    .await;
}

/// None of `secrets` is in the log, the orders, the outbox, the audit trail (API and file),
/// the channels' health or `/metrics`.
async fn assert_nothing_shows(cp: &ControlPlane, admin: &str, orders: &[&str], secrets: &[&str]) {
    let mut exposed = vec![("log".to_owned(), cp.log())];
    for id in orders {
        exposed.push((
            format!("order {id}"),
            order(cp, admin, id).await.to_string(),
        ));
    }
    for path in [
        "/api/outbox?limit=500",
        "/api/audit?limit=1000",
        "/api/integrations",
    ] {
        let (status, body) = cp.call(Method::GET, path, Some(admin), None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        exposed.push((path.to_owned(), body.to_string()));
    }
    let metrics = cp.metrics(admin).await;
    exposed.push(("/metrics".into(), metrics));
    let mut trail_files = 0;
    for entry in std::fs::read_dir(cp.data_dir())
        .expect("data dir")
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("audit") && entry.path().is_file() {
            trail_files += 1;
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            exposed.push((
                entry.path().display().to_string(),
                String::from_utf8_lossy(&bytes).into(),
            ));
        }
    }
    assert!(trail_files > 0, "no audit trail file found");
    assert!(exposed[0].1.contains("deploy"), "the log is empty?");
    for (place, text) in &exposed {
        for secret in secrets {
            assert!(!text.contains(secret), "a secret shows in {place}");
        }
    }
}

async fn resolve(
    cp: &ControlPlane,
    admin: &str,
    id: &str,
    deploy_id: &str,
    body: Value,
) -> (StatusCode, Value) {
    cp.call(
        Method::POST,
        &format!("/api/orders/{id}/deploys/{deploy_id}/resolve"),
        Some(admin),
        Some(body),
    )
    .await
}

/// Order, channel, case (also the new text), the service's next answers, then the status,
/// attempts and words of the error expected.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Vec<Scripted>,
    &'a str,
    u64,
    &'a str,
);

/// A `kill -9` while the service holds the call: after the restart the deploy is `unknown`,
/// never re-sent (each fake counts one call); a new deploy is refused until a person resolves
/// it; resolved as sent, the same content is not sent again; resolved as not sent, it may be.
#[tokio::test]
async fn a_deploy_cut_off_by_kill_9_is_never_sent_twice() {
    let fakes = fakes().await;
    let mut cp = control_plane(&fakes, &[("AXON_DEPLOY_TIMEOUT", "60s")]).await;
    let admin = cp.admin_token().await;
    let (wa, social, tg) = ready_orders(&cp, &admin).await;

    fakes.script(Service::Telegram, vec![Scripted::Hang]);
    fakes.script(Service::N8n, vec![Scripted::Hang]);
    fakes.script(Service::Ayrshare, vec![Scripted::Hang]);
    let tg_deploy = start(&cp, &admin, &tg, "telegram").await;
    let wa_deploy = start(&cp, &admin, &wa, "whatsapp").await;
    let social_deploy = start(&cp, &admin, &social, "social").await;
    let arrived = wait_until(WAIT, || async {
        fakes.calls(Service::Telegram, "/sendmessage").len() == 1
            && fakes.calls(Service::N8n, "/webhook/wa-deploy").len() == 1
            && fakes.calls(Service::Ayrshare, "/api/post").len() == 1
    })
    .await;
    assert!(arrived.is_some(), "the calls never reached the fakes");
    cp.kill9();
    cp.spawn().await;
    let admin = cp.admin_token().await;

    let tg_event = settled(&cp, &admin, &tg, &tg_deploy).await;
    assert_eq!(tg_event["status"], "unknown", "{tg_event}");
    assert!(
        tg_event["error"]
            .as_str()
            .expect("e")
            .contains("not sent again"),
        "{tg_event}"
    );
    let wa_event = settled(&cp, &admin, &wa, &wa_deploy).await;
    assert_eq!(wa_event["status"], "unknown", "{wa_event}");
    // Ayrshare never answered, so no post id is known to ask about: unknown as well.
    let social_event = settled(&cp, &admin, &social, &social_deploy).await;
    assert_eq!(social_event["status"], "unknown", "{social_event}");
    // Give a wrongly re-sending worker every chance to show itself.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fakes.calls(Service::Telegram, "/sendmessage").len(), 1);
    assert_eq!(fakes.calls(Service::N8n, "/webhook/wa-deploy").len(), 1);
    assert_eq!(fakes.calls(Service::Ayrshare, "/api/post").len(), 1);
    let (_, outbox) = cp
        .call(Method::GET, "/api/outbox?state=unknown", Some(&admin), None)
        .await;
    assert_eq!(outbox.as_array().map(Vec::len), Some(3), "{outbox}");
    let (status, body) = cp
        .call(
            Method::POST,
            &format!(
                "/api/outbox/{}/retry",
                outbox[0]["id"].as_str().expect("id")
            ),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // A new deploy waits for a person.
    let (status, body) = deploy(&cp, &admin, &tg, "telegram", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("m")
            .contains("unknown")
    );
    // Resolved as sent: the same content is a replay.
    let (status, body) = resolve(
        &cp,
        &admin,
        &tg,
        &tg_deploy,
        json!({"status": "success",
        "reason": "the message is in the chat"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(event(&body, &tg_deploy)["status"], "success");
    let (status, body) = resolve(&cp, &admin, &tg, &tg_deploy, json!({"status": "failed"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = resolve(&cp, &admin, &tg, &tg_deploy, json!({"status": "maybe"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = deploy(&cp, &admin, &tg, "telegram", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["replayed"], true, "{body}");
    assert_eq!(fakes.calls(Service::Telegram, "/sendmessage").len(), 1);
    // Resolved as not sent: it may go again, and does, once.
    let (status, body) = resolve(
        &cp,
        &admin,
        &wa,
        &wa_deploy,
        json!({"status": "failed",
        "reason": "n8n shows no execution"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let again = start(&cp, &admin, &wa, "whatsapp").await;
    assert_eq!(settled(&cp, &admin, &wa, &again).await["status"], "success");
    assert_eq!(fakes.calls(Service::N8n, "/webhook/wa-deploy").len(), 2);
    // Counted by the process that found it cut off.
    assert_eq!(deploy_counter(&cp, "telegram", "unknown").await, 1.0);
}
