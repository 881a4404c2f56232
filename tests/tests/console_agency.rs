//! The agency and the admin's pages of the console in a real browser against the real
//! axon-cp: the factory dashboard and its demo seeder, an order moved through QA from its
//! page, the catalog, users, tenants and API keys (a new key shown once and working), the LLM
//! gateway's page, integrations and webhooks. A viewer sees no button it may not use and is
//! refused the admin pages; every page passes axe.

use std::path::PathBuf;

use axon_e2e::browser::{self, Browser};
use axon_e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn loaded(browser: &Browser) {
    browser
        .wait_for(
            "the page's tables and charts",
            "[...document.querySelectorAll('table[data-source], figure.bars[data-source]')].every(t => t.dataset.loaded === 'true')",
        )
        .await;
}

async fn submit(browser: &Browser, form: &str) {
    browser
        .click(&browser.find(&format!("{form} button[type=submit]")).await)
        .await;
}

async fn fill(browser: &Browser, field: &str, text: &str) {
    let input = browser.find(field).await;
    browser.clear(&input).await;
    browser.type_text(&input, text).await;
}

/// Waits for the reload a successful form starts, and its toast.
async fn reloaded_with(browser: &Browser, toast: &str) {
    browser
        .wait_for(
            toast,
            &format!("[...document.querySelectorAll('#toast .toast')].some(t => t.textContent.includes({toast:?}))"),
        )
        .await;
}

#[tokio::test]
async fn an_admin_runs_the_agency_and_its_people_from_the_console() {
    const TEST: &str = "an_admin_runs_the_agency_and_its_people_from_the_console";
    let Some(axe) = browser::tools(TEST) else {
        return;
    };
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let browser = Browser::signed_in(&cp, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    // The factory: empty, then seeded from its button; the clients' sign-ins shown once.
    browser.goto(&cp.url("/app/factory?lang=en")).await;
    assert_eq!(browser.find_all("p.empty").await.len(), 1);
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    browser.click(&browser.find("#seed").await).await;
    browser
        .wait_for(
            "the demo sign-ins",
            "!document.getElementById('demo-result').hidden",
        )
        .await;
    let shown = browser
        .text(&browser.find("#demo-result .secret").await)
        .await;
    assert!(
        shown.contains("cliente@algorithmics-academy.demo"),
        "{shown}"
    );
    browser.goto(&cp.url("/app/factory?lang=en")).await;
    let total: u64 = browser
        .text(&browser.find("#total-orders").await)
        .await
        .parse()
        .expect("a count");
    assert_eq!(total, 9);
    assert!(browser.find_all("figure.bars li").await.len() >= 6);
    assert_eq!(
        browser.find_all("figure.columns-chart rect").await.len(),
        36
    );
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    std::fs::write(shots().join("factory-1280.png"), browser.screenshot().await).expect("shot");

    // An order in QA passes it from its page.
    let (_, orders) = cp
        .call(Method::GET, "/api/orders?estado=en_qa", Some(&admin), None)
        .await;
    let order = orders["items"][0]["id"]
        .as_str()
        .expect("an order in QA")
        .to_owned();
    browser
        .goto(&cp.url(&format!("/app/orders/{order}?lang=en")))
        .await;
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    let offered: Vec<String> = {
        let mut names = Vec::new();
        for b in browser.find_all("[data-action]").await {
            names.push(
                browser
                    .attribute(&b, "data-action")
                    .await
                    .unwrap_or_default(),
            );
        }
        names
    };
    // What the transition table allows an admin from en_qa, listed here independently.
    assert_eq!(offered, ["qa_pass", "qa_reject", "cancel"]);
    browser
        .click(&browser.find("[data-action='qa_pass']").await)
        .await;
    reloaded_with(&browser, "Order updated").await;
    assert_eq!(
        browser.text(&browser.find("#estado-value").await).await,
        "listo"
    );

    // The catalog: the demo's products, and a new one.
    browser.goto(&cp.url("/app/catalog?lang=en")).await;
    loaded(&browser).await;
    let before = browser.find_all("#catalog-table tbody tr").await.len();
    assert!(before >= 4);
    fill(&browser, "#c-name", "Voice receptionist").await;
    fill(&browser, "#c-price", "49.90").await;
    submit(&browser, "form.api").await;
    reloaded_with(&browser, "Product created").await;
    loaded(&browser).await;
    assert_eq!(
        browser.find_all("#catalog-table tbody tr").await.len(),
        before + 1
    );
    let (_, items) = cp
        .call(Method::GET, "/api/catalog", Some(&admin), None)
        .await;
    let made = items
        .as_array()
        .or(items["items"].as_array())
        .expect("catalog")
        .iter()
        .find(|i| i["name"] == "Voice receptionist")
        .cloned()
        .expect("the new product");
    assert_eq!(made["price_cents"], 4990);
    // Taken off the catalog from its row, through PATCH.
    let made_id = made["id"].as_str().expect("id").to_owned();
    browser
        .click(
            &browser
                .find(&format!(
                    "#catalog-table tr[data-id='{made_id}'] [data-row-action='Deactivate']"
                ))
                .await,
        )
        .await;
    reloaded_with(&browser, "Done").await;
    let (_, item) = cp
        .call(
            Method::GET,
            &format!("/api/catalog/{made_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(item["active"], false, "{item}");
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());

    // People: a user made and disabled, a tenant, and a key shown once that works.
    browser.goto(&cp.url("/app/access?lang=en")).await;
    loaded(&browser).await;
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    fill(&browser, "#u-email", "new.viewer@axon.test").await;
    fill(&browser, "#u-password", USER_PASSWORD).await;
    submit(&browser, "form[data-path='users']").await;
    reloaded_with(&browser, "User created").await;
    loaded(&browser).await;
    let row = "#users-table tr:has(th:first-child)";
    let viewer_row = browser
        .script(
            &format!("return [...document.querySelectorAll('{row}')].find(r => r.textContent.includes('new.viewer@axon.test'))?.dataset.id"),
            json!([]),
        )
        .await;
    let viewer_id = viewer_row.as_str().expect("the new user's row").to_owned();
    browser
        .click(
            &browser
                .find(&format!(
                    "#users-table tr[data-id='{viewer_id}'] [data-row-action='Disable']"
                ))
                .await,
        )
        .await;
    reloaded_with(&browser, "Done").await;
    let (_, user) = cp
        .call(
            Method::GET,
            &format!("/api/users/{viewer_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(user["disabled"], true, "{user}");
    fill(&browser, "#t-slug", "zeta-labs").await;
    fill(&browser, "#t-name", "Zeta Labs").await;
    submit(&browser, "form[data-path='tenants']").await;
    reloaded_with(&browser, "Tenant created").await;
    loaded(&browser).await;
    assert!(
        browser
            .text(&browser.find("#tenants-table tbody").await)
            .await
            .contains("zeta-labs")
    );
    fill(&browser, "#k-name", "n8n reader").await;
    submit(&browser, "form[data-path='api-keys']").await;
    browser
        .wait_for("the new key", "!document.getElementById('new-key').hidden")
        .await;
    let key = browser.text(&browser.find("#new-key .secret").await).await;
    assert!(key.starts_with("axk_"), "{key}");
    let (status, _) = cp.call(Method::GET, "/api/hosts", Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "the key shown works");
    // A bad field is named on the form and nothing is made.
    fill(&browser, "#k-scopes", "no-such:scope").await;
    submit(&browser, "form[data-path='api-keys']").await;
    browser
        .wait_for(
            "the refused scope",
            "document.getElementById('k-scopes').getAttribute('aria-invalid') === 'true'",
        )
        .await;
    std::fs::write(shots().join("access-1280.png"), browser.screenshot().await).expect("shot");
    // Revoked from its row, after the confirmation: the key stops working.
    browser.goto(&cp.url("/app/access?lang=en")).await;
    loaded(&browser).await;
    let (_, keys) = cp
        .call(Method::GET, "/api/api-keys", Some(&admin), None)
        .await;
    let key_id = keys
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["name"] == "n8n reader")
        .expect("the key")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    browser
        .click(
            &browser
                .find(&format!(
                    "#keys-table tr[data-id='{key_id}'] [data-row-action='Revoke']"
                ))
                .await,
        )
        .await;
    browser.accept_dialog().await;
    reloaded_with(&browser, "Done").await;
    let (status, _) = cp.call(Method::GET, "/api/hosts", Some(&key), None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the revoked key is refused"
    );
    // And the disabled user enabled again.
    loaded(&browser).await;
    browser
        .click(
            &browser
                .find(&format!(
                    "#users-table tr[data-id='{viewer_id}'] [data-row-action='Enable']"
                ))
                .await,
        )
        .await;
    reloaded_with(&browser, "Done").await;
    let (_, user) = cp
        .call(
            Method::GET,
            &format!("/api/users/{viewer_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(user["disabled"], false, "{user}");

    // The LLM gateway's page and the integrations page load without errors.
    browser.goto(&cp.url("/app/llm?lang=en")).await;
    loaded(&browser).await;
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    browser.goto(&cp.url("/app/integrations?lang=en")).await;
    loaded(&browser).await;
    assert_eq!(
        browser.find_all("#channels-table tbody tr").await.len(),
        3,
        "one row per deploy channel"
    );
    fill(&browser, "#w-url", "https://hooks.example.com/axon").await;
    submit(&browser, "form[data-path='webhooks']").await;
    browser
        .wait_for(
            "the signing secret",
            "!document.getElementById('webhook-secret').hidden",
        )
        .await;
    assert!(
        !browser
            .text(&browser.find("#webhook-secret .secret").await)
            .await
            .is_empty()
    );
    // A ping from the subscription's row shows among the deliveries.
    browser.goto(&cp.url("/app/integrations?lang=en")).await;
    loaded(&browser).await;
    browser
        .click(
            &browser
                .find("#webhooks-table [data-row-action='Ping']")
                .await,
        )
        .await;
    reloaded_with(&browser, "Ping sent").await;
    loaded(&browser).await;
    assert!(
        browser
            .text(&browser.find("#deliveries-table tbody").await)
            .await
            .contains("ping"),
        "the ping is listed"
    );
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    // The refused key above is the one failed load Chromium may log.
    let errors: Vec<Value> = browser
        .console_errors()
        .await
        .into_iter()
        .filter(|e| {
            !e["message"].as_str().unwrap_or("").contains(
                "api-keys - Failed to load resource: the server responded with a status of 400",
            )
        })
        .collect();
    assert_eq!(errors, Vec::<Value>::new());

    // A viewer: no seeder, no order actions, no admin pages.
    cp.create_user(&admin, "viewer@axon.test", "viewer", None)
        .await;
    let viewer = Browser::signed_in(&cp, "viewer@axon.test", USER_PASSWORD).await;
    viewer.goto(&cp.url("/app/factory?lang=en")).await;
    assert!(viewer.find_all("#seed").await.is_empty());
    viewer
        .goto(&cp.url(&format!("/app/orders/{order}?lang=en")))
        .await;
    assert!(viewer.find_all("[data-action]").await.is_empty());
    assert!(viewer.find_all("#generate-plan").await.is_empty());
    let admin_page = cp
        .client
        .get(cp.url("/app/access"))
        .header(
            "cookie",
            format!(
                "axon_session={}",
                viewer.cookie("axon_session").await.expect("cookie")["value"]
                    .as_str()
                    .expect("value")
            ),
        )
        .send()
        .await
        .expect("access page");
    assert_eq!(admin_page.status(), StatusCode::FORBIDDEN);
    viewer.close().await;
    browser.close().await;
}
