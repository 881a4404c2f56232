//! The public site in a real browser: headless Chromium (Debian's, through chromedriver) loads
//! the landing and legal pages from the real axon-cp over TLS. Each page loads without a
//! console error, holds its Content-Security-Policy against injected inline script, weighs
//! under 100 KB with nothing from another origin, fits 360 px, and has no serious or critical
//! accessibility violation by axe-core run in the same browser. Screenshots go to
//! `target/screenshots/`.

use std::path::PathBuf;

use axon_e2e::ControlPlane;
use axon_e2e::browser::Browser;
use serde_json::{Value, json};

const PHONE: &str = "+34 600 111 222";
const MESSAGE: &str = "Hola, quiero un agente";

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Bytes the page and everything it loaded took, and any resource from another origin.
async fn weight(browser: &Browser) -> (u64, Vec<String>) {
    let v = browser
        .script(
            "const entries = performance.getEntriesByType('navigation')
                 .concat(performance.getEntriesByType('resource'));
             return {
               bytes: entries.reduce((n, e) => n + (e.decodedBodySize || 0), 0),
               foreign: entries.map(e => e.name).filter(u => !u.startsWith(location.origin)),
             };",
            json!([]),
        )
        .await;
    (
        v["bytes"].as_u64().unwrap_or(u64::MAX),
        v["foreign"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect(),
    )
}

#[tokio::test]
async fn the_public_site_loads_clean_fast_and_accessible_in_a_real_browser() {
    const TEST: &str = "the_public_site_loads_clean_fast_and_accessible_in_a_real_browser";
    let Some(axe) = axon_e2e::browser::tools(TEST) else {
        return;
    };
    let cp = ControlPlane::start_with_env(
        &[],
        &[
            ("AXON_WHATSAPP_PHONE", PHONE),
            ("AXON_WHATSAPP_MESSAGE", MESSAGE),
        ],
    )
    .await;
    let browser = Browser::start(1280, 900).await;
    let shots = screenshot_dir();

    // The landing page: hero, six feature cards, the WhatsApp button from the settings.
    browser.goto(&cp.url("/")).await;
    assert!(browser.title().await.contains("Axon"));
    assert_eq!(browser.find_all(".card").await.len(), 6);
    let button = browser.find("#whatsapp").await;
    assert_eq!(
        browser.attribute(&button, "href").await.as_deref(),
        Some("https://wa.me/34600111222?text=Hola%2C%20quiero%20un%20agente")
    );
    // Headless Chromium asks for en-US, so the page answers in English.
    let html_lang = browser.find("html").await;
    assert_eq!(
        browser.attribute(&html_lang, "lang").await.as_deref(),
        Some("en")
    );
    assert_eq!(browser.console_errors().await, Vec::<Value>::new());
    let (bytes, foreign) = weight(&browser).await;
    assert!(bytes < 100 * 1024, "the landing page weighs {bytes} bytes");
    assert!(foreign.is_empty(), "loaded from elsewhere: {foreign:?}");
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    std::fs::write(
        shots.join("site-landing-1280.png"),
        browser.screenshot().await,
    )
    .expect("write screenshot");

    // The stylesheet is content-hashed and cached for a year.
    let css = browser
        .script(
            "return document.querySelector('link[rel=stylesheet]').getAttribute('href')",
            json!([]),
        )
        .await;
    let css = css.as_str().expect("href").to_owned();
    let response = cp.client.get(cp.url(&css)).send().await.expect("css");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );

    // The policy holds: an inline script put into the page does not run, and is reported.
    let ran = browser
        .script(
            "const s = document.createElement('script');
             s.textContent = 'window.__injected = true';
             document.body.appendChild(s);
             return window.__injected === true;",
            json!([]),
        )
        .await;
    assert_eq!(ran, json!(false), "an inline script ran");
    let refused = browser.console_errors().await;
    assert!(
        refused.iter().any(|e| e["message"]
            .as_str()
            .unwrap_or("")
            .contains("Content Security Policy")),
        "no CSP refusal reported: {refused:?}"
    );

    // The legal pages, in both languages, by following the footer's links.
    for (path, en_title) in [
        ("/privacy", "Privacy policy"),
        ("/terms", "Terms of service"),
        ("/data-deletion", "Data deletion"),
    ] {
        browser.goto(&cp.url(&format!("{path}?lang=en"))).await;
        let h1 = browser.find("h1").await;
        assert_eq!(browser.text(&h1).await, en_title);
        assert_eq!(
            browser.console_errors().await,
            Vec::<Value>::new(),
            "{path}"
        );
        assert_eq!(
            browser.accessibility(&axe).await,
            Vec::<Value>::new(),
            "{path}"
        );
        // The language switch keeps the page.
        let spanish = browser.find("nav.langs a[hreflang=es]").await;
        browser.click_and_wait(&spanish).await;
        let lang = browser.find("html").await;
        assert_eq!(
            browser.attribute(&lang, "lang").await.as_deref(),
            Some("es")
        );
        let here = browser.script("return location.pathname", json!([])).await;
        assert_eq!(here, json!(path));
    }
    let deletion_button = browser.find_all("main a.whatsapp").await;
    assert_eq!(
        deletion_button.len(),
        1,
        "the deletion page offers WhatsApp"
    );

    // 360 px wide: nothing overflows sideways, the button is on screen.
    browser.set_size(360, 800).await;
    browser.goto(&cp.url("/")).await;
    let fits = browser
        .script(
            "const b = document.getElementById('whatsapp').getBoundingClientRect();
             const root = document.documentElement;
             return {overflow: root.scrollWidth - root.clientWidth,
                     inside: b.left >= 0 && b.right <= root.clientWidth};",
            json!([]),
        )
        .await;
    assert_eq!(fits["overflow"], json!(0), "{fits}");
    assert_eq!(fits["inside"], json!(true), "{fits}");
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    std::fs::write(
        shots.join("site-landing-360.png"),
        browser.screenshot().await,
    )
    .expect("write screenshot");
    browser.close().await;
}

/// Without a number set, the landing page has no WhatsApp button (and no broken link).
#[tokio::test]
async fn without_a_number_there_is_no_contact_button() {
    let cp = ControlPlane::start(&[]).await;
    let page = cp
        .client
        .get(cp.url("/?lang=en"))
        .send()
        .await
        .expect("landing");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.expect("html");
    assert!(html.contains("lang=\"en\"") && html.contains("What we do"));
    assert!(!html.contains("wa.me"), "{html}");
    // A bad number stops the start with one clear line.
    let out = std::process::Command::new(axon_e2e::bin("axon-cp"))
        .args(["serve", "--data-dir"])
        .arg(cp.data_dir())
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
        ])
        .env("AXON_WHATSAPP_PHONE", "call me")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AXON_WHATSAPP_PHONE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
