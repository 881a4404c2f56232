//! The console's browser sessions in a real browser (headless Chromium over WebDriver) against
//! the real axon-cp: signing in through the form sets an HttpOnly, Secure, SameSite=Strict
//! cookie bound to a login session; the JSON API refuses that cookie; a forged form post is
//! refused; a password change made through the API ends the browser's session at once; signing
//! out ends it too. Pages stay free of console errors and of serious accessibility violations.

use std::path::PathBuf;

use axon_e2e::browser::{self, Browser};
use axon_e2e::{ADMIN_EMAIL, ADMIN_PASSWORD, ControlPlane};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn severe(browser: &Browser) -> Vec<Value> {
    browser
        .console_errors()
        .await
        .into_iter()
        // The deliberate wrong-password post answers 401, which Chromium logs as a failed load.
        .filter(|e| !e["message"].as_str().unwrap_or("").contains("401"))
        .collect()
}

/// A request as a forger would send it: with the stolen cookie value, any origin, any token.
async fn post_form(
    cp: &ControlPlane,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
    body: &str,
) -> StatusCode {
    let mut request = cp
        .client
        .post(cp.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("axon_session={cookie}"))
        .body(body.to_owned());
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.expect("post").status()
}

#[tokio::test]
async fn a_browser_session_is_bound_to_its_login_session() {
    const TEST: &str = "a_browser_session_is_bound_to_its_login_session";
    let Some(axe) = browser::tools(TEST) else {
        return;
    };
    let cp = ControlPlane::start(&[]).await;
    let browser = Browser::start(1280, 900).await;

    // Signed out, /app is the sign-in form; a wrong password is shown on the form.
    browser.goto(&cp.url("/app?lang=en")).await;
    assert_eq!(
        browser.text(&browser.find("h1").await).await,
        "Sign in to Axon"
    );
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    browser.sign_in(ADMIN_EMAIL, "not the password").await;
    let error = browser.find("#login-error").await;
    assert_eq!(
        browser.attribute(&error, "role").await.as_deref(),
        Some("alert")
    );
    let email = browser.find("#email").await;
    assert_eq!(
        browser.attribute(&email, "aria-invalid").await.as_deref(),
        Some("true")
    );
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());

    // The right one: the overview, with a cookie scripts cannot read.
    // The form kept the email; only the password is typed again.
    browser.sign_in("", ADMIN_PASSWORD).await;
    assert_eq!(browser.text(&browser.find("h1").await).await, "Console");
    assert_eq!(
        browser.text(&browser.find("#hosts-online").await).await,
        "0 / 0"
    );
    let cookie = browser
        .cookie("axon_session")
        .await
        .expect("session cookie");
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["secure"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    let visible = browser.script("return document.cookie", json!([])).await;
    assert!(
        !visible.as_str().unwrap_or("").contains("axon_session"),
        "{visible}"
    );
    assert_eq!(severe(&browser).await, Vec::<Value>::new());
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    let secret = cookie["value"].as_str().expect("value").to_owned();

    // The JSON API does not take the cookie.
    let me = cp
        .client
        .get(cp.url("/api/me"))
        .header("cookie", format!("axon_session={secret}"))
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);

    // Forged posts: another origin, no origin, or a wrong token are refused, and the session
    // survives them.
    let origin = format!("https://localhost:{}", cp.api_port);
    assert_eq!(
        post_form(
            &cp,
            "/app/logout",
            &secret,
            Some("https://evil.example"),
            "csrf=x"
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post_form(&cp, "/app/logout", &secret, None, "csrf=x").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post_form(&cp, "/app/logout", &secret, Some(&origin), "csrf=wrong").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post_form(
            &cp,
            "/app/login",
            "",
            Some(&origin),
            &format!("email={ADMIN_EMAIL}&password=x&csrf=guess")
        )
        .await,
        StatusCode::FORBIDDEN,
        "a login post without the form's token"
    );
    browser.goto(&cp.url("/app?lang=en")).await;
    assert_eq!(browser.text(&browser.find("h1").await).await, "Console");

    // A password change through the API ends the browser's session at once.
    let admin = cp.admin_token().await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/api/me/password",
            Some(&admin),
            Some(json!({"current_password": ADMIN_PASSWORD,
                "new_password": "another long password 42"})),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    browser.goto(&cp.url("/app?lang=en")).await;
    assert_eq!(
        browser.text(&browser.find("h1").await).await,
        "Sign in to Axon"
    );

    // Signing in again and out with the button ends that session, and its cookie is dead.
    browser
        .sign_in(ADMIN_EMAIL, "another long password 42")
        .await;
    assert_eq!(browser.text(&browser.find("h1").await).await, "Console");
    let secret = browser.cookie("axon_session").await.expect("cookie")["value"]
        .as_str()
        .expect("value")
        .to_owned();
    let out = browser.find("form.inline button[type=submit]").await;
    browser.click_and_wait(&out).await;
    assert_eq!(
        browser.text(&browser.find("h1").await).await,
        "Sign in to Axon"
    );
    assert!(browser.cookie("axon_session").await.is_none());
    let page = cp
        .client
        .get(cp.url("/app?lang=en"))
        .header("cookie", format!("axon_session={secret}"))
        .send()
        .await
        .expect("app")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("Sign in to Axon"),
        "the old cookie still works"
    );
    assert_eq!(severe(&browser).await, Vec::<Value>::new());
    browser.close().await;
}

/// Staff see the real enrolled agentd online on the fleet page, with its CPU and memory from
/// its samples; a client's session is refused the fleet; the page passes axe at 1280 and
/// 360 px.
#[tokio::test]
async fn staff_see_an_enrolled_agent_online_on_the_fleet_page() {
    const TEST: &str = "staff_see_an_enrolled_agent_online_on_the_fleet_page";
    let Some(axe) = browser::tools(TEST) else {
        return;
    };
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = axon_e2e::Agent::enroll(&cp).await;
    agent.start(&["--metrics-interval", "1s"]);
    let host = agent.host_id.clone();
    let reporting = axon_e2e::wait_until(std::time::Duration::from_secs(20), || async {
        let (_, fleet) = cp
            .call(Method::GET, "/api/fleet/summary", Some(&admin), None)
            .await;
        fleet["hosts_reporting"] == 1
    })
    .await;
    assert!(reporting.is_some(), "the agent never reported");

    let browser = Browser::start(1280, 900).await;
    browser.goto(&cp.url("/app?lang=en")).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(
        browser.text(&browser.find("#hosts-online").await).await,
        "1 / 1"
    );
    let nav = browser.find("nav.app a[href^='/app/fleet']").await;
    browser.click_and_wait(&nav).await;
    assert_eq!(browser.text(&browser.find("h1").await).await, "Fleet");
    let row = browser.find(&format!("tr[data-host='{host}']")).await;
    let text = browser.text(&row).await;
    assert!(text.contains("Online"), "{text}");
    assert!(text.contains(" %"), "CPU and memory figures: {text}");
    assert_eq!(
        browser.text(&browser.find("#fleet-summary").await).await,
        "1 / 1 online"
    );
    assert_eq!(severe(&browser).await, Vec::<Value>::new());
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    std::fs::write(
        shots.join("console-fleet-1280.png"),
        browser.screenshot().await,
    )
    .expect("screenshot");
    browser.set_size(360, 800).await;
    browser.goto(&cp.url("/app/fleet?lang=es")).await;
    assert_eq!(browser.text(&browser.find("h1").await).await, "Flota");
    std::fs::write(
        shots.join("console-fleet-360.png"),
        browser.screenshot().await,
    )
    .expect("screenshot");
    // Only the table scrolls sideways, never the page.
    let wide = browser
        .script(
            "const root = document.documentElement;
             return {overflow: root.scrollWidth - root.clientWidth,
               culprits: [...document.querySelectorAll('body *')]
                 .filter(e => !e.closest('.table-scroll') && e.getBoundingClientRect().right > root.clientWidth + 1)
                 .map(e => e.tagName + '.' + e.className)};",
            json!([]),
        )
        .await;
    assert_eq!(wide["overflow"], json!(0), "{wide}");
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());

    // A client signed in to the console is refused the fleet.
    let tenant = cp.create_tenant(&admin, "acme").await;
    cp.create_user(&admin, "client@acme.test", "client", Some(&tenant))
        .await;
    let out = browser.find("form.inline button[type=submit]").await;
    browser.set_size(1280, 900).await;
    browser.click_and_wait(&out).await;
    browser
        .sign_in("client@acme.test", axon_e2e::USER_PASSWORD)
        .await;
    let secret = browser.cookie("axon_session").await.expect("cookie")["value"]
        .as_str()
        .expect("value")
        .to_owned();
    let fleet = cp
        .client
        .get(cp.url("/app/fleet"))
        .header("cookie", format!("axon_session={secret}"))
        .send()
        .await
        .expect("fleet");
    assert_eq!(fleet.status(), StatusCode::FORBIDDEN);
    browser.close().await;
}

/// A client signs in and lands in its portal, in Spanish, with its tenant's welcome; orders an
/// agent from the catalog with a brief and sees it received; never sees another tenant's
/// portal, even by typing its address; and no internal id or code shows anywhere on the page.
#[tokio::test]
async fn a_client_orders_from_its_portal_and_sees_only_its_tenant() {
    const TEST: &str = "a_client_orders_from_its_portal_and_sees_only_its_tenant";
    let Some(axe) = browser::tools(TEST) else {
        return;
    };
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    axon_e2e::seed_demo(&cp, &admin).await;
    let (_, tenants) = cp
        .call(Method::GET, "/api/tenants", Some(&admin), None)
        .await;
    let id_of = |slug: &str| -> String {
        tenants
            .as_array()
            .expect("tenants")
            .iter()
            .find(|t| t["slug"] == slug)
            .expect("demo tenant")["id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let mine = id_of("algorithmics-academy");
    cp.create_user(&admin, "laura@algorithmics.test", "client", Some(&mine))
        .await;
    // The other tenant's order titles, which must never show.
    let (_, others) = cp
        .call(Method::GET, "/api/orders?limit=100", Some(&admin), None)
        .await;
    let foreign: Vec<String> = others["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|o| o["tenant_id"] != mine.as_str())
        .map(|o| o["title"].as_str().expect("title").to_owned())
        .collect();
    assert!(!foreign.is_empty());

    let browser = Browser::start(1280, 900).await;
    browser.goto(&cp.url("/app")).await;
    browser
        .sign_in("laura@algorithmics.test", axon_e2e::USER_PASSWORD)
        .await;
    let here = browser.script("return location.pathname", json!([])).await;
    assert_eq!(here, json!("/portal/algorithmics-academy"));
    let html = browser.find("html").await;
    assert_eq!(
        browser.attribute(&html, "lang").await.as_deref(),
        Some("es")
    );
    assert_eq!(
        browser.text(&browser.find("h1").await).await,
        "¡Hola, equipo de Algorithmics! Aquí seguís vuestros agentes."
    );
    let before = browser.find_all("ul.orders > li").await.len();
    assert_eq!(before, 3, "the demo tenant's three orders");

    // Order the first catalog product with a brief.
    let brief = browser.find("#brief-0").await;
    browser
        .type_text(
            &brief,
            "Un agente que conteste a las familias por la tarde.",
        )
        .await;
    let submit = browser.find("form.stack button[type=submit]").await;
    browser.click_and_wait(&submit).await;
    let notice = browser.find("p.notice").await;
    assert_eq!(
        browser.attribute(&notice, "role").await.as_deref(),
        Some("status")
    );
    assert_eq!(browser.find_all("ul.orders > li").await.len(), before + 1);
    let (_, listed) = cp
        .call(
            Method::GET,
            "/api/portal/algorithmics-academy/orders",
            Some(&cp.token_for("laura@algorithmics.test").await),
            None,
        )
        .await;
    assert!(
        listed["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|o| o["brief"] == "Un agente que conteste a las familias por la tarde."),
        "{listed}"
    );

    // What a person reads: no ids, no codes, no other tenant.
    let text = browser
        .script("return document.body.innerText", json!([]))
        .await
        .as_str()
        .expect("text")
        .to_owned();
    let ulid = text.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| {
        w.len() == 26
            && w.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    });
    assert!(!ulid, "an id shows: {text}");
    for internal in [
        "en_produccion",
        "qa_status",
        "estado",
        "tenant_id",
        "catalog_item_id",
    ] {
        assert!(!text.contains(internal), "{internal} shows: {text}");
    }
    for title in &foreign {
        assert!(
            !text.contains(title.as_str()),
            "another tenant's order shows: {title}"
        );
    }
    assert_eq!(severe(&browser).await, Vec::<Value>::new());
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());

    // Another tenant's portal, typed in: missing, as if it did not exist.
    browser.goto(&cp.url("/portal/notaria-17")).await;
    assert_eq!(
        browser.text(&browser.find("h1").await).await,
        "Esta página no existe"
    );
    let secret = browser.cookie("axon_session").await.expect("cookie")["value"]
        .as_str()
        .expect("value")
        .to_owned();
    let other = cp
        .client
        .get(cp.url("/portal/notaria-17"))
        .header("cookie", format!("axon_session={secret}"))
        .send()
        .await
        .expect("other portal");
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let page = other.text().await.expect("html");
    assert!(foreign.iter().all(|t| !page.contains(t.as_str())));
    // A forged order post is refused.
    let origin = format!("https://localhost:{}", cp.api_port);
    assert_eq!(
        post_form(
            &cp,
            "/portal/algorithmics-academy/orders",
            &secret,
            Some(&origin),
            "product=x&title=t&brief=b&csrf=wrong"
        )
        .await,
        StatusCode::FORBIDDEN
    );

    // English on request; 360 px without sideways scrolling; accessible.
    browser.set_size(360, 800).await;
    browser
        .goto(&cp.url("/portal/algorithmics-academy?lang=en"))
        .await;
    assert_eq!(
        browser.text(&browser.find("#orders-title").await).await,
        "Your orders"
    );
    let overflow = browser
        .script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            json!([]),
        )
        .await;
    assert_eq!(overflow, json!(0));
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    std::fs::write(shots.join("portal-360.png"), browser.screenshot().await).expect("screenshot");
    browser.set_size(1280, 900).await;
    browser.goto(&cp.url("/portal/algorithmics-academy")).await;
    std::fs::write(shots.join("portal-1280.png"), browser.screenshot().await).expect("screenshot");
    browser.close().await;
}

/// On the demo data, an admin finds the ready social order in the console's list, sees a deploy
/// button only for the channel that ships it, deploys against a local fake of Ayrshare and
/// reads the outcome with its networks in the history; a viewer sees no button, and its
/// well-formed post is still refused.
#[tokio::test]
async fn an_admin_deploys_a_ready_order_from_its_page() {
    use axon_e2e::fake_channels::{FakeChannels, FakeSetup, Service};
    const TEST: &str = "an_admin_deploys_a_ready_order_from_its_page";
    let Some(axe) = browser::tools(TEST) else {
        return;
    };
    let fakes = FakeChannels::start(FakeSetup {
        ayrshare_key: "console-ayr-key".into(),
        telegram_token: "1:console".into(),
        n8n_paths: vec!["wa".into()],
        n8n_header: None,
    })
    .await;
    let cp = fakes.control_plane(&[]).await;
    let admin = cp.admin_token().await;
    let social = axon_e2e::seed_demo(&cp, &admin).await["social_autopilot"].clone();
    cp.create_user(&admin, "viewer@axon.test", "viewer", None)
        .await;

    let browser = Browser::start(1280, 900).await;
    browser.goto(&cp.url("/app?lang=en")).await;
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser
        .goto(&cp.url("/app/orders?lang=en&estado=listo"))
        .await;
    assert_eq!(browser.find_all("table.fleet tbody tr").await.len(), 3);
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    let link = browser
        .find(&format!("a[href^='/app/orders/{social}']"))
        .await;
    browser.click_and_wait(&link).await;
    let buttons = browser.find_all("button[data-channel]").await;
    assert_eq!(buttons.len(), 1, "one channel ships this product");
    assert_eq!(
        browser
            .attribute(&buttons[0], "data-channel")
            .await
            .as_deref(),
        Some("social")
    );
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    browser.click_and_wait(&buttons[0]).await;
    assert!(browser.find_all("p.notice").await.len() == 1);
    let done = axon_e2e::wait_until(std::time::Duration::from_secs(20), || async {
        browser
            .goto(&cp.url(&format!("/app/orders/{social}?lang=en")))
            .await;
        !browser
            .find_all("ul.deploys > li[data-status=success]")
            .await
            .is_empty()
    })
    .await;
    assert!(done.is_some(), "the deploy never showed success");
    assert_eq!(browser.find_all("ul.platforms > li").await.len(), 3);
    assert_eq!(fakes.calls(Service::Ayrshare, "/api/post").len(), 1);
    assert_eq!(severe(&browser).await, Vec::<Value>::new());

    // A viewer: no button, and a post made by hand with its own valid token is refused.
    let out = browser.find("form.inline button[type=submit]").await;
    browser.click_and_wait(&out).await;
    browser
        .sign_in("viewer@axon.test", axon_e2e::USER_PASSWORD)
        .await;
    browser
        .goto(&cp.url(&format!("/app/orders/{social}?lang=en")))
        .await;
    assert!(browser.find_all("button[data-channel]").await.is_empty());
    let token = browser
        .script(
            "return document.querySelector('form.inline input[name=csrf]').value",
            json!([]),
        )
        .await;
    let secret = browser.cookie("axon_session").await.expect("cookie")["value"]
        .as_str()
        .expect("value")
        .to_owned();
    let origin = format!("https://localhost:{}", cp.api_port);
    assert_eq!(
        post_form(
            &cp,
            &format!("/app/orders/{social}/deploy/social"),
            &secret,
            Some(&origin),
            &format!("csrf={}", token.as_str().expect("token")),
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(fakes.calls(Service::Ayrshare, "/api/post").len(), 1);
    browser.close().await;
}
