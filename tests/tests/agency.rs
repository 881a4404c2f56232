//! The agency core end to end, against the real axon-cp: orders from the portal to `listo`
//! with plans written through the LLM gateway (a local upstream speaking OpenAI's format),
//! tenant isolation, refused mass assignment, optimistic concurrency, and the demo data.

use std::collections::BTreeSet;

use axon_e2e::mock_llm::{Behaviour, Fault, MockLlm};
use axon_e2e::webhook_receiver::{Received, WebhookReceiver};
use axon_e2e::{ControlPlane, audit_outcomes, bin, wait_until};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A providers file routing the `smart` alias to the mock.
fn llm_config(mock: &MockLlm) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("llm.toml");
    std::fs::write(
        &path,
        format!(
            "[[providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key = \"k\"\nmodels = [\"gpt-4o-mini\"]\n\n[[aliases]]\nname = \"smart\"\ntargets = [{{ model = \"openai/gpt-4o-mini\" }}]\n",
            mock.base_url()
        ),
    )
    .expect("write config");
    let path = path.to_str().expect("utf-8").to_owned();
    (dir, path)
}

fn plan() -> Value {
    json!({
        "summary": "Bot de Telegram que informa de la documentación y da citas.",
        "phases": [
            {"name": "Descubrimiento", "goal": "Trámites y documentos", "tasks": [
                {"title": "Entrevista", "owner": "account_manager", "estimate_hours": 2.0}
            ]},
            {"name": "Construcción", "tasks": [
                {"title": "Flujos", "owner": "developer", "estimate_hours": 8.0},
                {"title": "Prompts", "owner": "prompt_engineer", "estimate_hours": 4.0}
            ]}
        ],
        "integrations": [{"name": "Telegram Bot API", "purpose": "canal"}],
        "risks": [{"description": "Preguntas legales complejas", "severity": "high", "mitigation": "escalar al notario"}],
        "estimate": {"total_hours": 14.0, "delivery_days": 7, "cost": {"amount": 700.0, "currency": "EUR"}}
    })
}

async fn call_with(
    cp: &ControlPlane,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut req = cp.client.request(method, cp.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(m) = if_match {
        req = req.header("If-Match", m);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, etag, body)
}

async fn action(
    cp: &ControlPlane,
    token: &str,
    id: &str,
    action: &str,
    body: Value,
) -> (StatusCode, Value) {
    cp.call(
        Method::POST,
        &format!("/api/orders/{id}/actions/{action}"),
        Some(token),
        Some(body),
    )
    .await
}

/// The first delivery of `event` about order `id`, waiting for it.
async fn wait_for_event(receiver: &WebhookReceiver, event: &str, id: &str) -> Received {
    let found = || {
        receiver
            .requests()
            .into_iter()
            .find(|r| r.header("x-axon-event") == event && r.json()["data"]["order"]["id"] == id)
    };
    wait_until(std::time::Duration::from_secs(20), || async {
        found().is_some()
    })
    .await
    .unwrap_or_else(|| panic!("no {event} for {id}: {:?}", receiver.requests().len()));
    found().expect("found")
}

/// A client's order from a catalog product.
async fn order_from(cp: &ControlPlane, token: &str, item: &Value) -> (StatusCode, Value) {
    cp.call(
        Method::POST,
        "/api/orders",
        Some(token),
        Some(json!({"catalog_item_id": item["id"], "title": "t", "brief": "b"})),
    )
    .await
}

/// Keys, at any depth, of a JSON value.
fn keys(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.insert(k.clone());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// Internal fields a client must never get.
const INTERNAL: &[&str] = &[
    "internal_notes",
    "agent_blueprint",
    "production_plan",
    "estimate",
    "cost",
    "prompts",
    "demo_tag",
    "deliverable_metadata",
    "created_by",
    "tenant_id",
    "state_history",
    "version",
    "base_blueprint",
    "tenants",
];

fn assert_client_safe(what: &str, v: &Value) {
    let mut found = BTreeSet::new();
    keys(v, &mut found);
    for k in INTERNAL {
        assert!(!found.contains(*k), "{what} leaks `{k}`: {v}");
    }
}

/// After the demo seed, a client of Notaría 17 orders from the catalog and follows the order
/// while staff plan it (an invalid first answer is sent back and the second is kept),
/// approve, build, QA and mark it ready — all through the API, each step audited.
#[tokio::test]
async fn a_client_orders_and_staff_take_the_order_to_ready() {
    let mock = MockLlm::start(Behaviour {
        scripted: vec![
            "Claro, aquí tienes el plan: fases y tareas.".into(),
            plan().to_string(),
        ],
        ..Behaviour::default()
    })
    .await;
    let (_dir, path) = llm_config(&mock);
    let receiver = WebhookReceiver::start().await;
    let builder_url = receiver.url("/builder");
    let cp = ControlPlane::start_with_env(
        &["--llm-config", &path],
        &[
            ("AXON_BUILDER_WEBHOOK_URL", builder_url.as_str()),
            ("AXON_BUILDER_WEBHOOK_SECRET", "whsec_builder-test-secret"),
        ],
    )
    .await;
    let admin = cp.admin_token().await;
    // n8n listens to the order events.
    let (status, sub) = cp
        .call(
            Method::POST,
            "/api/webhooks",
            Some(&admin),
            Some(json!({"url": receiver.url("/n8n"),
                "events": ["order.created", "order.state_changed", "order.plan_ready"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");

    let (status, seeded) = cp
        .call(Method::POST, "/api/admin/seed-demo", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{seeded}");
    let login = seeded["credentials"]
        .as_array()
        .expect("credentials")
        .iter()
        .find(|c| c["portal"] == "/portal/notaria-17")
        .expect("a Notaría 17 client")
        .clone();
    let client = cp
        .login_as(
            login["email"].as_str().expect("email"),
            login["password"].as_str().expect("password"),
        )
        .await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    // The client's catalog, then an order from it.
    let (status, catalog) = cp
        .call(
            Method::GET,
            "/api/portal/notaria-17/catalog",
            Some(&client),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{catalog}");
    assert_client_safe("catalog", &catalog);
    let bot = catalog
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["product_type"] == "telegram_bot")
        .expect("a Telegram bot product")
        .clone();
    let (status, order) = cp
        .call(
            Method::POST,
            "/api/portal/notaria-17/orders",
            Some(&client),
            Some(json!({"catalog_item_id": bot["id"], "title": "Bot de citas para herencias",
                "brief": "Queremos que el bot explique la documentación de una herencia y dé cita."})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_client_safe("new order", &order);
    assert_eq!(order["estado"], "nuevo");
    let id = order["id"].as_str().expect("id").to_owned();

    // Staff: the order starts from the product's blueprint.
    let (status, staff_view) = cp
        .call(
            Method::GET,
            &format!("/api/orders/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{staff_view}");
    assert_eq!(staff_view["product_type"], "telegram_bot");
    assert_eq!(staff_view["catalog_item_id"], bot["id"]);
    assert!(staff_view["agent_blueprint"].is_object());

    // A plan through the gateway: the first answer is refused and sent back with the error.
    let (status, added) = cp
        .call(
            Method::POST,
            &format!("/api/orders/{id}/plan"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["attempts"], 2);
    assert_eq!(added["plan"]["version"], 1);
    assert_eq!(added["plan"]["source"], "llm");
    assert_eq!(added["plan"]["plan"]["estimate"]["total_hours"], 14.0);
    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "one retry");
    let retry: Value = serde_json::from_slice(&requests[1].body).expect("json");
    let last = retry["messages"]
        .as_array()
        .expect("messages")
        .last()
        .expect("last")["content"]
        .as_str()
        .expect("text")
        .to_owned();
    assert!(
        last.contains("invalid"),
        "the error goes back to the model: {last}"
    );
    assert!(
        retry["messages"][0]["content"]
            .as_str()
            .expect("system")
            .contains("\"phases\""),
        "the schema is in the prompt"
    );

    // Both model calls are metered to the order's tenant.
    let tenant = staff_view["tenant_id"].as_str().expect("tenant").to_owned();
    let metered = wait_until(std::time::Duration::from_secs(10), || async {
        let (_, records) = cp
            .call(
                Method::GET,
                "/api/llm/usage/records?limit=100",
                Some(&admin),
                None,
            )
            .await;
        records.as_array().is_some_and(|r| {
            r.iter()
                .filter(|u| u["requested"] == "smart" && u["tenant_id"] == tenant.as_str())
                .count()
                == 2
        })
    })
    .await;
    assert!(metered.is_some(), "two usage records for the tenant");

    // Staff edit: a second version by hand; the first is approved.
    let mut edited = plan();
    edited["summary"] = json!("Versión revisada por el equipo.");
    let (status, added) = cp
        .call(
            Method::PUT,
            &format!("/api/orders/{id}/plan"),
            Some(&admin),
            Some(edited),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["plan"]["version"], 2);
    assert_eq!(added["plan"]["source"], "staff");

    // The client cannot move it along.
    let (status, body) = action(&cp, &client, &id, "approve_plan", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (status, body) = action(&cp, &admin, &id, "approve_plan", json!({"plan_version": 1})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["estado"], "en_produccion");
    assert_eq!(body["production_plan"]["approved_version"], 1);

    // Entering production sent the blueprint and the approved plan to the builder, signed.
    let forwarded = wait_for_event(&receiver, "order.in_production", &id).await;
    assert!(
        forwarded.header("x-axon-signature").starts_with("v1="),
        "{:?}",
        forwarded.headers
    );
    let data = &forwarded.json()["data"];
    assert_eq!(data["production_plan"]["version"], 1, "{data}");
    assert!(
        data["agent_blueprint"]["identity"]["name"].is_string(),
        "{data}"
    );
    for event in ["order.created", "order.plan_ready", "order.state_changed"] {
        wait_for_event(&receiver, event, &id).await;
    }

    // Refused from the wrong state, with the states it is allowed from.
    let (status, body) = action(&cp, &admin, &id, "qa_pass", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.to_string().contains("en_qa"), "{body}");

    // The builder's output: complete and byte-identical across downloads.
    let (status, artifacts) = cp
        .call(
            Method::GET,
            &format!("/api/orders/{id}/artifacts"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{artifacts}");
    assert_eq!(artifacts["complete"], true, "{artifacts}");
    let download = || async {
        let resp = cp
            .client
            .get(cp.url(&format!("/api/orders/{id}/artifacts/archive")))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("archive");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.bytes().await.expect("bytes")
    };
    let (a, b) = (download().await, download().await);
    assert!(a.len() > 1024 && a.len() % 512 == 0, "a tar archive");
    assert_eq!(a, b, "the same order builds the same bytes");

    let (status, body) = action(&cp, &admin, &id, "submit_qa", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = action(&cp, &admin, &id, "qa_reject", json!({})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a rejection needs a reason: {body}"
    );
    let (status, body) = action(
        &cp,
        &admin,
        &id,
        "qa_reject",
        json!({"reason": "falta el recordatorio"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["estado"].as_str(), body["qa_status"].as_str()),
        (Some("en_produccion"), Some("rechazado"))
    );
    for step in ["submit_qa", "qa_pass"] {
        let (status, body) = action(&cp, &admin, &id, step, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{step}: {body}");
    }

    // The client follows it: ready, with a plain timeline and no internal field.
    let (status, mine) = cp
        .call(
            Method::GET,
            &format!("/api/portal/notaria-17/orders/{id}"),
            Some(&client),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_client_safe("portal order", &mine);
    assert_eq!(
        (mine["estado"].as_str(), mine["qa_status"].as_str()),
        (Some("listo"), Some("ok"))
    );
    let timeline: Vec<&str> = mine["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|s| s["estado"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        timeline,
        [
            "nuevo",
            "en_produccion",
            "en_qa",
            "en_produccion",
            "en_qa",
            "listo"
        ]
    );
    assert_eq!(mine["phases"], json!(["Descubrimiento", "Construcción"]));
    let (_, list) = cp
        .call(
            Method::GET,
            "/api/portal/notaria-17/orders",
            Some(&client),
            None,
        )
        .await;
    assert_client_safe("portal list", &list);
    let (_, list) = cp
        .call(Method::GET, "/api/orders", Some(&client), None)
        .await;
    assert_client_safe("client order list", &list);
    assert!(
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|o| o["id"] == id.as_str())
    );

    let outcomes = audit_outcomes(&cp, &admin, "order.").await;
    for want in [
        "order.create ok",
        "order.plan ok",
        "order.plan_edit ok",
        "order.approve_plan ok",
        "order.approve_plan denied",
        "order.qa_pass denied",
        "order.submit_qa ok",
        "order.qa_reject ok",
        "order.qa_pass ok",
    ] {
        assert!(
            outcomes.iter().any(|o| o == want),
            "{want} missing from {outcomes:?}"
        );
    }

    // Factory stats count it.
    let (status, stats) = cp
        .call(Method::GET, "/api/factory/stats", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["total_orders"], 10, "nine demo orders and this one");
    assert_eq!(stats["by_estado"]["listo"], 4);
    let bot_usage = stats["catalog_usage"]
        .as_array()
        .expect("usage")
        .iter()
        .find(|c| c["catalog_item_id"] == bot["id"])
        .expect("the product")
        .clone();
    assert!(bot_usage["orders"].as_u64().expect("n") >= 2, "{bot_usage}");
}

/// Plans that never pass are reported after the configured tries; an upstream that never
/// answers ends in 504 within the plan timeout; nothing is stored either way.
#[tokio::test]
async fn plan_generation_reports_invalid_output_and_timeouts() {
    let mock = MockLlm::start(Behaviour {
        scripted: vec!["{\"summary\": \"sin fases\"}".into(); 3],
        ..Behaviour::default()
    })
    .await;
    let (_dir, path) = llm_config(&mock);
    let cp = ControlPlane::start_with_env(
        &["--llm-config", &path],
        &[("AXON_PLAN_TIMEOUT", "3s"), ("AXON_PLAN_ATTEMPTS", "3")],
    )
    .await;
    let admin = cp.admin_token().await;
    let (status, order) = cp
        .call(
            Method::POST,
            "/api/orders",
            Some(&admin),
            Some(json!({"product_type": "web_chatbot", "title": "Chat", "brief": "FAQ"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let id = order["id"].as_str().expect("id").to_owned();
    let plan_path = format!("/api/orders/{id}/plan");

    let (status, body) = cp.call(Method::POST, &plan_path, Some(&admin), None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.to_string().contains("after 3 attempts"), "{body}");
    assert!(
        body.to_string().contains("phases"),
        "the last error names the field: {body}"
    );
    assert_eq!(mock.count(), 3);

    mock.set(Behaviour::fault(Fault::NoResponse));
    let started = std::time::Instant::now();
    let (status, body) = cp.call(Method::POST, &plan_path, Some(&admin), None).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));

    mock.set(Behaviour {
        scripted: vec![plan().to_string()],
        ..Behaviour::default()
    });
    let (status, body) = cp.call(Method::POST, &plan_path, Some(&admin), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["attempts"], 1);
    let (_, history) = cp.call(Method::GET, &plan_path, Some(&admin), None).await;
    assert_eq!(
        history["versions"].as_array().expect("versions").len(),
        1,
        "failures store nothing"
    );
}

/// Another tenant's order answers exactly like a missing id; legacy orders are for legacy
/// clients and staff; lists never leak; catalog products limited to a tenant stay with it.
#[tokio::test]
async fn orders_catalog_and_portal_stay_within_their_tenant() {
    let mut cp = ControlPlane::start(&[]).await;
    // A client from before tenants existed: made on the stopped data dir, as an admin would.
    cp.terminate();
    let out = std::process::Command::new(bin("axon-cp"))
        .args([
            "user",
            "create",
            "--email",
            "legacy@old.test",
            "--role",
            "client",
            "--legacy",
            "--data-dir",
        ])
        .arg(cp.data_dir())
        .env("AXON_USER_PASSWORD", axon_e2e::USER_PASSWORD)
        .output()
        .expect("user create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cp.spawn().await;
    let admin = cp.admin_token().await;
    let ta = cp.create_tenant(&admin, "acme").await;
    let tb = cp.create_tenant(&admin, "globex").await;
    cp.create_user(&admin, "a@acme.test", "client", Some(&ta))
        .await;
    cp.create_user(&admin, "b@globex.test", "client", Some(&tb))
        .await;
    cp.create_user(&admin, "viewer@axon.test", "viewer", None)
        .await;
    let a = cp.token_for("a@acme.test").await;
    let b = cp.token_for("b@globex.test").await;
    let legacy = cp.token_for("legacy@old.test").await;
    let viewer = cp.token_for("viewer@axon.test").await;

    // Products: one for everyone, one for globex only.
    let product = |name: &str, tenants: Option<Vec<&str>>| json!({"name": name, "product_type": "telegram_bot", "price_cents": 1000, "tenants": tenants});
    let (status, open) = cp
        .call(
            Method::POST,
            "/api/catalog",
            Some(&admin),
            Some(product("Bot", None)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{open}");
    let (_, only_b) = cp
        .call(
            Method::POST,
            "/api/catalog",
            Some(&admin),
            Some(product("Bot Globex", Some(vec![&tb]))),
        )
        .await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/api/catalog",
            Some(&a),
            Some(product("Mine", None)),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "clients do not write the catalog: {body}"
    );

    let (status, oa) = order_from(&cp, &a, &open).await;
    assert_eq!(status, StatusCode::CREATED, "{oa}");
    let (status, ob) = order_from(&cp, &b, &only_b).await;
    assert_eq!(status, StatusCode::CREATED, "{ob}");
    let (status, ol) = order_from(&cp, &legacy, &open).await;
    assert_eq!(status, StatusCode::CREATED, "{ol}");
    let (status, body) = order_from(&cp, &a, &only_b).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another tenant's product is not there: {body}"
    );
    let (oa, ob, ol) = (
        oa["id"].as_str().expect("id").to_owned(),
        ob["id"].as_str().expect("id").to_owned(),
        ol["id"].as_str().expect("id").to_owned(),
    );

    // Another tenant's order and a missing one answer alike.
    let missing = "01JZZZZZZZZZZZZZZZZZZZZZZZ";
    for path in ["/api/orders/{}", "/api/portal/acme/orders/{}"] {
        let (s1, m1) = cp
            .call(Method::GET, &path.replace("{}", &ob), Some(&a), None)
            .await;
        let (s2, m2) = cp
            .call(Method::GET, &path.replace("{}", missing), Some(&a), None)
            .await;
        assert_eq!(
            (s1, s2),
            (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND),
            "{path}"
        );
        assert_eq!(
            m1.to_string().replace(&ob, "X"),
            m2.to_string().replace(missing, "X"),
            "{path}: the same answer"
        );
    }
    for (token, id) in [(&a, &ol), (&legacy, &oa), (&b, &oa)] {
        let (status, _) = cp
            .call(Method::GET, &format!("/api/orders/{id}"), Some(token), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = action(&cp, token, id, "cancel", json!({})).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "no action on what one cannot see"
        );
    }
    let (status, _) = cp
        .call(
            Method::GET,
            &format!("/api/orders/{ol}"),
            Some(&legacy),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a legacy client sees legacy orders");

    // Lists.
    let ids = |v: &Value| -> BTreeSet<String> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|o| o["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let (_, la) = cp.call(Method::GET, "/api/orders", Some(&a), None).await;
    assert_eq!(ids(&la), BTreeSet::from([oa.clone()]));
    let (_, ll) = cp
        .call(Method::GET, "/api/orders", Some(&legacy), None)
        .await;
    assert_eq!(ids(&ll), BTreeSet::from([ol.clone()]));
    let (status, _) = cp
        .call(
            Method::GET,
            &format!("/api/orders?tenant_id={tb}"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "clients do not pick a tenant"
    );
    let (_, all) = cp
        .call(Method::GET, "/api/orders", Some(&viewer), None)
        .await;
    assert_eq!(
        ids(&all),
        BTreeSet::from([oa.clone(), ob.clone(), ol.clone()])
    );
    let (_, only) = cp
        .call(
            Method::GET,
            "/api/orders?tenant_id=legacy",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(ids(&only), BTreeSet::from([ol.clone()]));
    let (_, pa) = cp
        .call(Method::GET, "/api/portal/acme/orders", Some(&a), None)
        .await;
    assert_eq!(ids(&pa), BTreeSet::from([oa.clone()]));
    let (_, cat) = cp
        .call(Method::GET, "/api/portal/acme/catalog", Some(&a), None)
        .await;
    let names: Vec<&str> = cat
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["Bot"]);
    for path in [
        "/api/portal/globex",
        "/api/portal/globex/orders",
        "/api/portal/globex/catalog",
    ] {
        let (status, _) = cp.call(Method::GET, path, Some(&a), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = cp
        .call(
            Method::POST,
            "/api/portal/globex/orders",
            Some(&a),
            Some(json!({"catalog_item_id": open["id"], "title": "t"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Mass assignment: the tenant, the state, QA and the deploy history are not writable.
    for field in [
        json!({"tenant_id": tb}),
        json!({"estado": "listo"}),
        json!({"qa_status": "ok"}),
        json!({"deploy_history": [{"channel": "telegram"}]}),
        json!({"internal_notes": []}),
    ] {
        let mut body = json!({"catalog_item_id": open["id"], "title": "t", "brief": "b"});
        body.as_object_mut()
            .expect("object")
            .extend(field.as_object().expect("object").clone());
        let (status, reply) = cp
            .call(Method::POST, "/api/orders", Some(&a), Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {reply}");
        let (status, reply) = cp
            .call(
                Method::POST,
                "/api/portal/acme/orders",
                Some(&a),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {reply}");
        let (status, reply) = cp
            .call(
                Method::PATCH,
                &format!("/api/orders/{oa}"),
                Some(&admin),
                Some(field.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {reply}");
    }
    let (_, after) = cp
        .call(
            Method::GET,
            &format!("/api/orders/{oa}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        (after["tenant_id"].as_str(), after["estado"].as_str()),
        (Some(ta.as_str()), Some("nuevo"))
    );
    let (status, _) = cp
        .call(
            Method::PATCH,
            &format!("/api/orders/{oa}"),
            Some(&viewer),
            Some(json!({"title": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A client cancels its own new order, and nothing more.
    let (status, body) = action(&cp, &a, &oa, "submit_qa", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = action(&cp, &a, &oa, "cancel", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_client_safe("client action answer", &body);
    assert_eq!(body["estado"], "cancelado");
    let (status, body) = action(&cp, &a, &oa, "reopen", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = action(&cp, &admin, &oa, "nonsense", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// `If-Match` on a version that moved on is refused with 412 and changes nothing.
#[tokio::test]
async fn stale_writes_are_refused_with_412() {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let (status, etag, order) = call_with(
        &cp,
        Method::POST,
        "/api/orders",
        &admin,
        Some(json!({"product_type": "custom_agent", "title": "Agente", "brief": "b"})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(etag.as_deref(), Some("\"1\""));
    let id = order["id"].as_str().expect("id");
    let path = format!("/api/orders/{id}");
    let (status, etag, body) = call_with(
        &cp,
        Method::PATCH,
        &path,
        &admin,
        Some(json!({"title": "Uno"})),
        Some("\"1\""),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(etag.as_deref(), Some("\"2\""));
    let (status, _, body) = call_with(
        &cp,
        Method::PATCH,
        &path,
        &admin,
        Some(json!({"title": "Dos"})),
        Some("\"1\""),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert!(body.to_string().contains("version 2"), "{body}");
    let (status, _, body) = call_with(
        &cp,
        Method::POST,
        &format!("{path}/actions/cancel"),
        &admin,
        None,
        Some("\"1\""),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    let (_, _, now) = call_with(&cp, Method::GET, &path, &admin, None, None).await;
    assert_eq!(
        (
            now["title"].as_str(),
            now["estado"].as_str(),
            now["version"].as_u64()
        ),
        (Some("Uno"), Some("nuevo"), Some(2))
    );
    let (status, _, _) = call_with(
        &cp,
        Method::PATCH,
        &path,
        &admin,
        Some(json!({"title": "Tres"})),
        Some("nonsense"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Seeding twice changes nothing, never touches untagged records (a real tenant holding a
/// demo slug is left alone), and removal deletes exactly the tagged records; the command
/// line does the same on a stopped data dir.
#[tokio::test]
async fn demo_data_is_idempotent_and_removed_exactly() {
    let mut cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    // A real tenant that happens to use one of the demo slugs, and a real order.
    let real_tenant = cp.create_tenant(&admin, "beesmart-delivery").await;
    let (status, real) = cp
        .call(
            Method::POST,
            "/api/orders",
            Some(&admin),
            Some(json!({"product_type": "web_chatbot", "title": "Real", "tenant_id": real_tenant})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{real}");

    let (status, first) = cp
        .call(Method::POST, "/api/admin/seed-demo", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(
        first["skipped"].to_string().contains("beesmart-delivery"),
        "{first}"
    );
    let (_, orders) = cp
        .call(Method::GET, "/api/orders?limit=100", Some(&admin), None)
        .await;
    let count = orders["items"].as_array().expect("items").len();
    assert_eq!(count, 1 + 6, "two demo tenants' orders and the real one");
    let (_, tenants) = cp
        .call(Method::GET, "/api/tenants", Some(&admin), None)
        .await;
    let slugs: BTreeSet<String> = tenants
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t["slug"].as_str().expect("slug").to_owned())
        .collect();
    assert_eq!(
        slugs,
        BTreeSet::from([
            "algorithmics-academy".into(),
            "notaria-17".into(),
            "beesmart-delivery".into()
        ])
    );
    // One ready order per deploy channel's product type among the demo orders made.
    let ready: BTreeSet<String> = orders["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|o| o["estado"] == "listo" && o["qa_status"] == "ok")
        .map(|o| o["product_type"].as_str().expect("type").to_owned())
        .collect();
    assert!(
        ready.contains("social_autopilot") && ready.contains("telegram_bot"),
        "{ready:?}"
    );

    let (status, second) = cp
        .call(Method::POST, "/api/admin/seed-demo", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["created"], json!([]), "{second}");
    assert_eq!(second["credentials"], json!([]));
    let (_, again) = cp
        .call(Method::GET, "/api/orders?limit=100", Some(&admin), None)
        .await;
    assert_eq!(
        again["items"], orders["items"],
        "a second run changes nothing"
    );

    let (status, removed) = cp
        .call(Method::DELETE, "/api/admin/seed-demo", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    let (_, left) = cp
        .call(Method::GET, "/api/orders?limit=100", Some(&admin), None)
        .await;
    let left: Vec<&str> = left["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| o["id"].as_str().expect("id"))
        .collect();
    assert_eq!(left, [real["id"].as_str().expect("id")]);
    let (_, tenants) = cp
        .call(Method::GET, "/api/tenants", Some(&admin), None)
        .await;
    let ids: Vec<&str> = tenants
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [real_tenant.as_str()]);
    let (_, catalog) = cp
        .call(Method::GET, "/api/catalog", Some(&admin), None)
        .await;
    assert_eq!(catalog, json!([]));
    let (status, _) = cp
        .try_login("cliente@notaria-17.demo", "anything at all")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The command line on the stopped data dir.
    cp.terminate();
    let run = |remove: bool| {
        let mut cmd = std::process::Command::new(bin("axon-cp"));
        cmd.args(["seed-demo", "--data-dir"]).arg(cp.data_dir());
        if remove {
            cmd.arg("--remove");
        }
        let out = cmd.output().expect("seed-demo");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let printed = run(false);
    assert!(printed.contains("created:"), "{printed}");
    assert!(printed.contains("cliente@notaria-17.demo"), "{printed}");
    let printed = run(false);
    assert!(
        !printed.contains("created:") && printed.contains("unchanged:"),
        "{printed}"
    );
    let printed = run(true);
    assert!(printed.contains("removed:"), "{printed}");
    cp.spawn().await;
    let admin = cp.admin_token().await;
    let (_, left) = cp
        .call(Method::GET, "/api/orders?limit=100", Some(&admin), None)
        .await;
    assert_eq!(left["items"].as_array().expect("items").len(), 1);
}

/// Lists filter by state, product and text and page with a cursor (no order twice, none
/// missed, pages capped at 100); notes stay with staff; a plan with no model configured is
/// 503; a deactivated or deleted product leaves the portal's catalog.
#[tokio::test]
async fn lists_page_and_filter_and_the_catalog_is_managed() {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let tenant = cp.create_tenant(&admin, "acme").await;
    cp.create_user(&admin, "a@acme.test", "client", Some(&tenant))
        .await;
    let client = cp.token_for("a@acme.test").await;
    let mut made = BTreeSet::new();
    for i in 0..105 {
        let product = if i % 3 == 0 {
            "web_chatbot"
        } else {
            "telegram_bot"
        };
        let title = if i == 7 {
            "Pedido especial Zafiro".to_owned()
        } else {
            format!("Pedido {i}")
        };
        let (status, body) = cp
            .call(
                Method::POST,
                "/api/orders",
                Some(&admin),
                Some(json!({"product_type": product, "title": title, "tenant_id": tenant})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        made.insert(body["id"].as_str().expect("id").to_owned());
    }
    let (_, big) = cp
        .call(Method::GET, "/api/orders?limit=1000", Some(&admin), None)
        .await;
    assert_eq!(
        big["items"].as_array().expect("items").len(),
        100,
        "pages are capped"
    );
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/orders?limit=40&cursor={c}"),
            None => "/api/orders?limit=40".to_owned(),
        };
        let (status, page) = cp.call(Method::GET, &path, Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for o in page["items"].as_array().expect("items") {
            assert!(
                seen.insert(o["id"].as_str().expect("id").to_owned()),
                "no order twice"
            );
        }
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, made, "every order once, in {pages} pages");
    let count = |v: &Value| v["items"].as_array().expect("items").len();
    let (_, web) = cp
        .call(
            Method::GET,
            "/api/orders?product_type=web_chatbot&limit=100",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(count(&web), 35);
    let (_, found) = cp
        .call(Method::GET, "/api/orders?q=zafiro", Some(&admin), None)
        .await;
    assert_eq!(count(&found), 1);
    let id = found["items"][0]["id"].as_str().expect("id").to_owned();
    let (status, _) = action(&cp, &admin, &id, "cancel", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, cancelled) = cp
        .call(
            Method::GET,
            "/api/orders?estado=cancelado",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(count(&cancelled), 1);
    let (status, _) = cp
        .call(
            Method::GET,
            "/api/orders?estado=shipped",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Notes are staff's.
    let (status, noted) = cp
        .call(
            Method::POST,
            &format!("/api/orders/{id}/notes"),
            Some(&admin),
            Some(json!({"text": "llamar el lunes"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{noted}");
    assert_eq!(noted["internal_notes"][0]["text"], "llamar el lunes");
    let (_, mine) = cp
        .call(
            Method::GET,
            &format!("/api/orders/{id}"),
            Some(&client),
            None,
        )
        .await;
    assert!(!mine.to_string().contains("llamar el lunes"), "{mine}");

    // No model behind the plan alias here.
    let (status, body) = cp
        .call(
            Method::POST,
            &format!("/api/orders/{id}/plan"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a cancelled order takes no plan: {body}"
    );
    let other = made.iter().find(|o| **o != id).expect("another order");
    let (status, body) = cp
        .call(
            Method::POST,
            &format!("/api/orders/{other}/plan"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.to_string().contains("AXON_PLAN_MODEL"), "{body}");

    // The catalog: deactivated, then deleted, a product leaves the portal.
    let (status, item) = cp
        .call(
            Method::POST,
            "/api/catalog",
            Some(&admin),
            Some(json!({"name": "Bot", "product_type": "telegram_bot", "price_cents": 100})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{item}");
    let path = format!("/api/catalog/{}", item["id"].as_str().expect("id"));
    let names = |v: &Value| v.as_array().expect("list").len();
    let (_, before) = cp
        .call(Method::GET, "/api/portal/acme/catalog", Some(&client), None)
        .await;
    assert_eq!(names(&before), 1);
    let (status, patched) = cp
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(json!({"active": false, "price_cents": 200})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        (patched["active"].as_bool(), patched["price_cents"].as_u64()),
        (Some(false), Some(200))
    );
    let (_, after) = cp
        .call(Method::GET, "/api/portal/acme/catalog", Some(&client), None)
        .await;
    assert_eq!(names(&after), 0);
    let (status, _) = cp.call(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = cp.call(Method::GET, &path, Some(&admin), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
