//! The channels' rules on their own: when an order may ship, what each service is sent, how
//! each answer is read, and Ayrshare's check after a restart against a local server.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::config::{DeployConfig, Secret};
use super::http::Answer;
use super::*;
use crate::agency::blueprint::AgentBlueprint;
use crate::agency::book::new_order;
use crate::agency::outbox::Verdict;

fn order(product: ProductType, estado: Estado, qa: QaStatus, meta: Value) -> Order {
    let mut o = new_order(
        "01TESTORDER".into(),
        None,
        "u1",
        product,
        None,
        "Test",
        "",
        AgentBlueprint::base_for(product, "Test"),
    );
    o.estado = estado;
    o.qa_status = qa;
    if let Value::Object(m) = meta {
        o.deliverable_metadata = m;
    }
    o
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        headers: HeaderMap::new(),
        body: body.to_string().into_bytes(),
    }
}

fn text_answer(status: u16, body: &str) -> Answer {
    Answer {
        status,
        headers: HeaderMap::new(),
        body: body.as_bytes().to_vec(),
    }
}

/// Each condition is checked, in the order an admin would fix them; expectations are the
/// issue's list, not the function's table.
#[test]
fn an_order_ships_only_when_listo_with_qa_ok_on_its_own_channel() {
    use Estado::*;
    for estado in Estado::ALL {
        for qa in [QaStatus::Pendiente, QaStatus::Ok, QaStatus::Rechazado] {
            for channel in Channel::ALL {
                for product in ProductType::ALL {
                    let o = order(product, estado, qa, json!({}));
                    let result = check_ready(&o, channel);
                    let ships = matches!(
                        (channel, product),
                        (Channel::Whatsapp, ProductType::WhatsappAutopilot)
                            | (Channel::Social, ProductType::SocialAutopilot)
                            | (Channel::Telegram, ProductType::TelegramBot)
                    );
                    match (estado, qa, ships) {
                        (Listo, QaStatus::Ok, true) => assert!(result.is_ok()),
                        (Listo, QaStatus::Ok, false) => {
                            assert!(matches!(result, Err(DeployError::WrongProduct { .. })))
                        }
                        (Listo, _, _) => {
                            assert!(matches!(result, Err(DeployError::QaNotOk(_))), "{qa:?}")
                        }
                        _ => assert!(matches!(result, Err(DeployError::NotReady(_)))),
                    }
                }
            }
        }
    }
}

fn telegram_config(default_chat: Option<&str>) -> config::TelegramConfig {
    config::TelegramConfig {
        enabled: true,
        token: Some(Secret::new("1:abc")),
        base_url: "http://127.0.0.1:9".into(),
        default_chat_id: default_chat.map(str::to_owned),
        problem: None,
    }
}

#[test]
fn telegram_picks_the_method_the_chat_and_checks_lengths() {
    let ready = |meta| order(ProductType::TelegramBot, Estado::Listo, QaStatus::Ok, meta);
    let c = telegram_config(Some("@axon_default"));
    // Text only: sendMessage, to the deliverable's chat.
    let got = telegram::content(
        &c,
        &ready(json!({"text": "hola", "telegram_chat_id": "-100123"})),
        None,
    )
    .expect("content");
    assert_eq!(got.body["method"], "sendMessage");
    assert_eq!(got.body["body"]["chat_id"], json!(-100123));
    assert_eq!(got.details["chat_id_source"], "deliverable");
    assert!(!got.display_url.contains("1:abc"), "{}", got.display_url);
    // One image: sendPhoto with the caption; the tenant's chat when the deliverable has none.
    let mut tenant = crate::model::Tenant {
        id: "t".into(),
        slug: "t".into(),
        name: "T".into(),
        settings: Default::default(),
        llm_limits: None,
        demo_tag: None,
        created_at: now(),
        updated_at: now(),
    };
    tenant
        .settings
        .insert("telegram_chat_id".into(), json!(-42));
    let got = telegram::content(
        &c,
        &ready(json!({"text": "hola", "media_urls": ["https://x.example/a.jpg"]})),
        Some(&tenant),
    )
    .expect("content");
    assert_eq!(got.body["method"], "sendPhoto");
    assert_eq!(got.body["body"]["caption"], "hola");
    assert_eq!(got.details["chat_id_source"], "tenant");
    // Three images: an album with the caption on the first only; the default chat last.
    let got = telegram::content(
        &c,
        &ready(json!({"caption": "álbum", "media_urls":
            ["https://x.example/1.jpg", "https://x.example/2.jpg", "https://x.example/3.jpg"]})),
        None,
    )
    .expect("content");
    assert_eq!(got.body["method"], "sendMediaGroup");
    let media = got.body["body"]["media"].as_array().expect("media");
    assert_eq!(media.len(), 3);
    assert_eq!(media[0]["caption"], "álbum");
    assert!(media[1].get("caption").is_none() && media[2].get("caption").is_none());
    assert_eq!(got.details["chat_id_source"], "default");
    assert_eq!(got.body["body"]["chat_id"], "@axon_default");
    // Limits, counted as Telegram counts them (an emoji is two units).
    let long = "🚀".repeat(2049);
    let e = telegram::content(&c, &ready(json!({"text": long})), None)
        .err()
        .expect("refused");
    assert!(e.contains("4096"), "{e}");
    let ok = "🚀".repeat(2048);
    assert!(telegram::content(&c, &ready(json!({"text": ok})), None).is_ok());
    let e = telegram::content(
        &c,
        &ready(json!({"caption": "x".repeat(1025), "media_urls": ["https://x.example/a.jpg"]})),
        None,
    )
    .err()
    .expect("refused");
    assert!(e.contains("1024"), "{e}");
    let eleven: Vec<String> = (0..11)
        .map(|i| format!("https://x.example/{i}.jpg"))
        .collect();
    assert!(
        telegram::content(&c, &ready(json!({"text": "x", "media_urls": eleven})), None).is_err()
    );
    assert!(
        telegram::content(
            &c,
            &ready(json!({"text": "x", "media_urls": ["file:///etc/passwd"]})),
            None
        )
        .is_err()
    );
    // No chat anywhere, or a malformed one.
    let none = telegram_config(None);
    let e = telegram::content(&none, &ready(json!({"text": "x"})), None)
        .err()
        .expect("refused");
    assert!(e.contains("DEFAULT_TELEGRAM_CHAT_ID"), "{e}");
    assert!(
        telegram::content(
            &none,
            &ready(json!({"text": "x", "telegram_chat_id": "1; DROP"})),
            None
        )
        .is_err()
    );
}

#[test]
fn social_posts_name_known_networks_and_skip_the_ones_already_reached() {
    let ready = |meta| {
        order(
            ProductType::SocialAutopilot,
            Estado::Listo,
            QaStatus::Ok,
            meta,
        )
    };
    let base = "http://127.0.0.1:9/api";
    let req = DeployRequest::default();
    let o = ready(
        json!({"text": "hola", "platforms": ["Instagram", "linkedin", "instagram"],
        "media_urls": ["https://x.example/a.jpg"], "schedule_date": "2099-01-15T09:30:00+01:00"}),
    );
    let got = social::content(base, &o, &req).expect("content");
    assert_eq!(got.body["platforms"], json!(["instagram", "linkedin"]));
    assert_eq!(got.body["mediaUrls"], json!(["https://x.example/a.jpg"]));
    assert_eq!(got.body["scheduleDate"], "2099-01-15T08:30:00Z");
    assert_eq!(got.display_url, "http://127.0.0.1:9/api/post");
    for bad in [
        json!({"text": "hola", "platforms": ["myspace"]}),
        json!({"text": "hola", "platforms": []}),
        json!({"platforms": ["instagram"]}),
        json!({"text": "hola", "platforms": ["instagram"], "schedule_date": "2001-01-01T00:00:00Z"}),
        json!({"text": "hola", "platforms": ["instagram"], "schedule_date": "mañana"}),
    ] {
        assert!(
            social::content(base, &ready(bad.clone()), &req).is_err(),
            "{bad}"
        );
    }
    // After a partial failure, only the networks that failed.
    let mut o = ready(json!({"text": "hola", "platforms": ["instagram", "linkedin", "facebook"]}));
    o.deploy_history.push(DeployEvent {
        id: "d1".into(),
        channel: "social".into(),
        status: "failed".into(),
        created_at: now(),
        updated_at: now(),
        requested_by: None,
        content_hash: None,
        error: None,
        details: json!({"platforms": [
            {"platform": "instagram", "status": "success"},
            {"platform": "linkedin", "status": "failed"},
            {"platform": "facebook", "status": "unknown"}]})
        .as_object()
        .cloned()
        .unwrap_or_default(),
    });
    let got = social::content(base, &o, &req).expect("content");
    assert_eq!(got.body["platforms"], json!(["linkedin", "facebook"]));
    assert_eq!(got.details["skipped_platforms"], json!(["instagram"]));
    // Naming platforms overrides that.
    let named = DeployRequest {
        repeat: false,
        platforms: Some(vec!["instagram".into()]),
    };
    let got = social::content(base, &o, &named).expect("content");
    assert_eq!(got.body["platforms"], json!(["instagram"]));
}

#[test]
fn ayrshare_answers_are_read_per_platform() {
    let requested: Vec<String> = ["twitter", "instagram", "telegram", "facebook"]
        .map(String::from)
        .to_vec();
    // A mixed answer: two posted (one with a numeric id), one failed, one not mentioned.
    let mixed = answer(
        200,
        json!({"status": "error", "id": "AYR1",
            "postIds": [
                {"status": "success", "id": "1288", "platform": "twitter", "postUrl": "https://twitter.com/x/status/1288"},
                {"status": "success", "id": 635, "platform": "telegram", "postUrl": "https://t.me/c/1/635"}],
            "errors": [{"action": "post", "status": "error", "code": 138, "message": "Instagram error", "platform": "instagram"}]}),
    );
    let sent = social::classify(&mixed, &requested);
    assert_eq!(sent.verdict, Verdict::Failed);
    let result = sent.result.expect("result");
    let by: Vec<(String, String)> = result["platforms"]
        .as_array()
        .expect("platforms")
        .iter()
        .map(|p| {
            (
                p["platform"].as_str().unwrap_or("").into(),
                p["status"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        by,
        [
            ("twitter", "success"),
            ("instagram", "failed"),
            ("telegram", "success"),
            ("facebook", "unknown")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(result["platforms"][2]["id"], "635");
    assert_eq!(result["ayrshare_id"], "AYR1");
    let error = sent.error.expect("error");
    assert!(
        error.contains("2 of 4") && error.contains("instagram (138"),
        "{error}"
    );
    // Success needs HTTP 200 and a status other than error.
    let ok = answer(
        200,
        json!({"status": "success", "id": "A2", "postIds": [
        {"status": "success", "id": "1", "platform": "twitter"}], "errors": []}),
    );
    assert_eq!(
        social::classify(&ok, &["twitter".into()]).verdict,
        Verdict::Delivered
    );
    let odd = answer(201, json!({"status": "success", "postIds": []}));
    assert_eq!(
        social::classify(&odd, &["twitter".into()]).verdict,
        Verdict::Failed
    );
    // Status codes.
    for (status, expect) in [
        (401, Verdict::Failed),
        (403, Verdict::Failed),
        (400, Verdict::Failed),
        (500, Verdict::Retry(None)),
        (503, Verdict::Retry(None)),
    ] {
        let got = social::classify(
            &answer(status, json!({"status": "error", "message": "m"})),
            &requested,
        );
        assert_eq!(got.verdict, expect, "{status}");
    }
    let mut limited = answer(
        429,
        json!({"status": "error", "code": 429, "message": "slow down"}),
    );
    limited
        .headers
        .insert("retry-after", "7".parse().expect("hv"));
    assert_eq!(
        social::classify(&limited, &requested).verdict,
        Verdict::Retry(Some(Duration::from_secs(7)))
    );
    let body_only = answer(429, json!({"status": "error", "retry_after": 9}));
    assert_eq!(
        social::classify(&body_only, &requested).verdict,
        Verdict::Retry(Some(Duration::from_secs(9)))
    );
}

#[test]
fn n8n_answers_become_clear_outcomes() {
    let ok = whatsapp::classify(&answer(200, json!({"message": "Workflow was started"})));
    assert_eq!(ok.verdict, Verdict::Delivered);
    assert_eq!(
        ok.result.expect("r")["n8n_response"]["message"],
        "Workflow was started"
    );
    let e = whatsapp::classify(&text_answer(401, "Authorization is required!"));
    assert_eq!(e.verdict, Verdict::Failed);
    assert!(
        e.error
            .as_deref()
            .unwrap_or("")
            .contains("Authorization is required!")
    );
    let e = whatsapp::classify(&text_answer(403, "Authorization data is wrong!"));
    assert_eq!(e.verdict, Verdict::Failed);
    let e = whatsapp::classify(&answer(
        404,
        json!({"code": 404,
        "message": "This webhook is not registered for GET requests. Did you mean to make a POST request?"}),
    ));
    assert_eq!(e.verdict, Verdict::Failed);
    assert!(
        e.error.as_deref().unwrap_or("").contains("active"),
        "{:?}",
        e.error
    );
    assert_eq!(
        whatsapp::classify(&text_answer(500, "Error in workflow")).verdict,
        Verdict::Retry(None)
    );
    assert_eq!(
        whatsapp::classify(&text_answer(422, "no")).verdict,
        Verdict::Failed
    );
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

fn shared(db: &crate::store::Db, config: DeployConfig) -> Shared {
    Shared {
        secrets: config.secrets(),
        client: http::client(Duration::from_secs(5)).expect("client"),
        orders: db.tree("orders").expect("tree"),
        tenants: db.tree("tenants").expect("tree"),
        outbox: Weak::new(),
        channels: db.tree("deploy_channels").expect("tree"),
        rates: db.tree("deploy_rate_limits").expect("tree"),
        config,
    }
}

/// After a restart, a social deploy whose earlier answer named its Ayrshare post is settled
/// by `GET /post/:id`; without an id, or when Ayrshare cannot say, it stays unknown.
#[tokio::test]
async fn ayrshare_is_asked_about_a_post_cut_off_by_a_restart() {
    use axum::extract::Path;
    use axum::http::HeaderMap as Headers;
    let router = axum::Router::new().route(
        "/api/post/{id}",
        axum::routing::get(|Path(id): Path<String>, headers: Headers| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if auth != "Bearer k-123456" {
                return (
                    axum::http::StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"status": "error"})),
                );
            }
            let status = match id.as_str() {
                "POSTED" => "success",
                "BROKEN" => "error",
                _ => "pending",
            };
            (
                axum::http::StatusCode::OK,
                axum::Json(json!({"id": id, "status": status})),
            )
        }),
    );
    let base = serve(router).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = crate::store::Db::open(dir.path()).expect("db");
    let mut config = DeployConfig::default();
    config.social.enabled = true;
    config.social.api_key = Some(Secret::new("k-123456"));
    config.social.base_url = format!("{base}/api");
    let shared = shared(&db, config);
    let delivery = |result: Option<Value>| Delivery {
        id: "d".into(),
        idempotency_key: "k".into(),
        event: "order.deploy".into(),
        target: crate::agency::outbox::Target {
            kind: "deploy.social".into(),
            subscription_id: None,
            url: String::new(),
        },
        payload: Value::Null,
        tenant_id: None,
        state: DeliveryState::Pending,
        attempt_count: 1,
        attempts: Vec::new(),
        next_attempt_at: None,
        created_at: now(),
        delivered_at: None,
        sending_since: Some(now()),
        at_most_once: true,
        result,
    };
    let posted = social::check(&shared, &delivery(Some(json!({"ayrshare_id": "POSTED"})))).await;
    let posted = posted.expect("known");
    assert_eq!(posted.verdict, Verdict::Delivered);
    assert_eq!(posted.result.expect("r")["checked_after_restart"], true);
    let broken = social::check(&shared, &delivery(Some(json!({"ayrshare_id": "BROKEN"})))).await;
    assert_eq!(broken.expect("known").verdict, Verdict::Failed);
    for unknown in [
        None,
        Some(json!({"ayrshare_id": "WAITING"})),
        Some(json!({"ayrshare_id": "../user"})),
    ] {
        assert!(
            social::check(&shared, &delivery(unknown.clone()))
                .await
                .is_none(),
            "{unknown:?}"
        );
    }
}

/// A deploy staged before a restart that turned its channel off still ends, failed, with the
/// reason — it is neither sent nor left pending.
#[tokio::test]
async fn a_channel_turned_off_fails_what_was_staged_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = crate::store::Db::open(dir.path()).expect("db");
    let courier = ChannelCourier {
        channel: Channel::Telegram,
        shared: Arc::new(shared(&db, DeployConfig::default())),
    };
    let delivery = Delivery {
        id: "d".into(),
        idempotency_key: "k".into(),
        event: "order.deploy".into(),
        target: crate::agency::outbox::Target {
            kind: "deploy.telegram".into(),
            subscription_id: None,
            url: String::new(),
        },
        payload: json!({"order_id": "o", "content": {"method": "sendMessage", "body": {}}}),
        tenant_id: None,
        state: DeliveryState::Pending,
        attempt_count: 0,
        attempts: Vec::new(),
        next_attempt_at: None,
        created_at: now(),
        delivered_at: None,
        sending_since: None,
        at_most_once: true,
        result: None,
    };
    let sent = courier.send(&delivery).await;
    assert_eq!(sent.verdict, Verdict::Failed);
    assert!(
        sent.error
            .expect("error")
            .contains("ENABLE_TELEGRAM_DEPLOY")
    );
}
