//! A real browser for the tests: Debian's headless Chromium driven by its chromedriver over the
//! W3C WebDriver protocol (plain JSON over HTTP, so a small client here does; no browser is
//! downloaded and no usage statistics are sent). `AXON_CHROMEDRIVER` and `AXON_CHROMIUM`
//! override the binaries' paths.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn binary(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// Whether the browser and its driver are installed; under CI a missing one fails the test
/// that asks, elsewhere it prints a SKIP line and the test returns.
pub fn available(test: &str) -> bool {
    let missing: Vec<String> = [
        ("AXON_CHROMEDRIVER", "/usr/bin/chromedriver"),
        ("AXON_CHROMIUM", "/usr/bin/chromium"),
    ]
    .iter()
    .map(|(var, default)| binary(var, default))
    .filter(|p| !p.exists())
    .map(|p| p.display().to_string())
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "{missing:?} missing: apt install chromium chromium-driver"
    );
    eprintln!("SKIP {test}: {missing:?} missing (apt install chromium chromium-driver)");
    false
}

/// The browser and axe-core (`scripts/axe-env`) for a test: the axe source when both are
/// installed; under CI a missing one fails the test, elsewhere it prints a SKIP line.
pub fn tools(test: &str) -> Option<String> {
    if !available(test) {
        return None;
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/axe/axe.min.js");
    match std::fs::read_to_string(&path) {
        Ok(source) => Some(source),
        Err(_) => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "axe-core is missing: scripts/axe-env installs it"
            );
            eprintln!("SKIP {test}: axe-core is missing (scripts/axe-env)");
            None
        }
    }
}

/// One browser session; the driver (and its browser) stop when it is dropped.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
}

/// A found element.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session `width` × `height`.
    pub async fn start(width: u32, height: u32) -> Self {
        let driver_path = binary("AXON_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = binary("AXON_CHROMIUM", "/usr/bin/chromium");
        let port = crate::free_port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .build()
            .expect("client");
        let base = format!("http://127.0.0.1:{port}");
        let up = crate::wait_until(Duration::from_secs(15), || async {
            http.get(format!("{base}/status"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(up.is_some(), "chromedriver did not start");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The control plane's certificate is from its own CA, which this profile does not hold.
            "acceptInsecureCerts": true,
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-default-apps",
                    "--metrics-recording-only", "--disable-breakpad", "--disable-domain-reliability",
                    "--disable-features=Translate,OptimizationHints,MediaRouter",
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        let browser = Self {
            driver,
            http,
            session: format!("{base}/session/{session}"),
        };
        browser
            .command(
                "POST",
                "/timeouts",
                json!({"script": 30_000, "pageLoad": 30_000}),
            )
            .await;
        browser
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let answer: Value = request
            .send()
            .await
            .expect("webdriver call")
            .json()
            .await
            .expect("webdriver json");
        if let Some(error) = answer["value"].get("error") {
            panic!(
                "webdriver {method} {path}: {error}: {}",
                answer["value"]["message"]
            );
        }
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url })).await;
    }

    pub async fn set_size(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Runs `script`, whose last argument is the callback to call with the result.
    pub async fn script_async(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/async",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// The elements matching a CSS selector.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.command(
            "POST",
            "/elements",
            json!({"using": "css selector", "value": css}),
        )
        .await
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned())))
        .collect()
    }

    /// The first element matching a CSS selector; panics when there is none.
    pub async fn find(&self, css: &str) -> Element {
        self.find_all(css)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element matches {css}"))
    }

    pub async fn text(&self, element: &Element) -> String {
        self.command("GET", &format!("/element/{}/text", element.0), Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.command(
            "GET",
            &format!("/element/{}/attribute/{name}", element.0),
            Value::Null,
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// Presses Tab `times` times on the page (real key events, as a keyboard user would).
    pub async fn press_tab(&self, times: usize) {
        let mut keys = Vec::new();
        for _ in 0..times {
            keys.push(json!({"type": "keyDown", "value": "\u{E004}"}));
            keys.push(json!({"type": "keyUp", "value": "\u{E004}"}));
        }
        self.command(
            "POST",
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": keys}]}),
        )
        .await;
    }

    /// Walks the page with Tab and returns, for each stop, the focused element's tag, its text
    /// or label, and whether its focus is visible (an outline or a box shadow is drawn).
    pub async fn tab_walk(&self, stops: usize) -> Vec<Value> {
        self.script(
            "document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);",
            json!([]),
        )
        .await;
        let mut seen = Vec::new();
        for _ in 0..stops {
            self.press_tab(1).await;
            seen.push(
                self.script(
                    "const e = document.activeElement; const s = getComputedStyle(e);
                     return {tag: e.tagName.toLowerCase(), text: (e.innerText || e.value || e.getAttribute('aria-label') || '').trim().slice(0, 40),
                             visible: (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== 'none'};",
                    json!([]),
                )
                .await,
            );
        }
        seen
    }

    /// Empties a field.
    pub async fn clear(&self, element: &Element) {
        self.command("POST", &format!("/element/{}/clear", element.0), json!({}))
            .await;
    }

    /// Types `text` into a field.
    pub async fn type_text(&self, element: &Element, text: &str) {
        self.command(
            "POST",
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )
        .await;
    }

    /// A cookie as the browser holds it (`name`, `value`, `httpOnly`, `secure`, `sameSite`),
    /// HttpOnly ones included.
    pub async fn cookie(&self, name: &str) -> Option<Value> {
        let url = format!("{}/cookie/{name}", self.session);
        let answer: Value = self.http.get(url).send().await.ok()?.json().await.ok()?;
        answer["value"]
            .get("name")
            .is_some()
            .then(|| answer["value"].clone())
    }

    pub async fn click(&self, element: &Element) {
        self.command("POST", &format!("/element/{}/click", element.0), json!({}))
            .await;
    }

    /// Clicks something that loads another page (a link, a form's button) and waits until
    /// the new document has loaded.
    pub async fn click_and_wait(&self, element: &Element) {
        self.script("window.__axonOldPage = true;", json!([])).await;
        self.click(element).await;
        let loaded = crate::wait_until(Duration::from_secs(15), || async {
            self.script(
                "return window.__axonOldPage === undefined && document.readyState === 'complete'",
                json!([]),
            )
            .await
                == json!(true)
        })
        .await;
        assert!(loaded.is_some(), "no new page loaded after the click");
    }

    /// Waits until `condition` (a script expression) is true on the page; panics naming
    /// `what` after 20 s.
    pub async fn wait_for(&self, what: &str, condition: &str) {
        let script = format!("try {{ return !!({condition}); }} catch (e) {{ return false; }}");
        let met = crate::wait_until(Duration::from_secs(20), || async {
            self.script(&script, json!([])).await == json!(true)
        })
        .await;
        assert!(met.is_some(), "waited 20 s for {what} ({condition})");
    }

    /// A Chrome DevTools Protocol command through chromedriver (e.g. `Performance.getMetrics`).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.command(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": cmd, "params": params}),
        )
        .await
    }

    /// A 1280 × 900 browser signed in to `cp`'s console (in English) as `email`.
    pub async fn signed_in(cp: &crate::ControlPlane, email: &str, password: &str) -> Self {
        let browser = Self::start(1280, 900).await;
        browser.goto(&cp.url("/app?lang=en")).await;
        browser.sign_in(email, password).await;
        browser
    }

    /// Signs in through the console's form on the current page.
    pub async fn sign_in(&self, email: &str, password: &str) {
        let field = self.find("#email").await;
        self.type_text(&field, email).await;
        let field = self.find("#password").await;
        self.type_text(&field, password).await;
        let submit = self.find("form.stack button[type=submit]").await;
        self.click_and_wait(&submit).await;
    }

    /// Accepts the open `confirm()` dialog, waiting for it to open.
    pub async fn accept_dialog(&self) {
        let url = format!("{}/alert/accept", self.session);
        let accepted = crate::wait_until(Duration::from_secs(10), || async {
            self.http
                .post(&url)
                .json(&json!({}))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(accepted.is_some(), "no dialog opened");
    }

    /// The page's title.
    pub async fn title(&self) -> String {
        self.command("GET", "/title", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The browser console's entries since the last call (errors, CSP refusals, warnings).
    pub async fn console(&self) -> Vec<Value> {
        self.command("POST", "/se/log", json!({"type": "browser"}))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The console's entries of level SEVERE since the last call (errors, CSP refusals,
    /// failed loads).
    pub async fn console_errors(&self) -> Vec<Value> {
        self.console()
            .await
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .collect()
    }

    /// axe-core's serious and critical violations on the current page (`axe` is its source).
    pub async fn accessibility(&self, axe: &str) -> Vec<Value> {
        self.script(axe, json!([])).await;
        self.script_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {resultTypes: ['violations']})
               .then(r => done(r.violations
                   .filter(v => v.impact === 'serious' || v.impact === 'critical')
                   .map(v => ({id: v.id, impact: v.impact,
                       nodes: v.nodes.map(n => n.target.join(' '))}))))
               .catch(e => done([{id: 'axe-error', impact: 'critical', nodes: [String(e)]}]));",
            json!([]),
        )
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let data = self.command("GET", "/screenshot", Value::Null).await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("png")
    }

    /// Ends the session (and its browser) and the driver.
    pub async fn close(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
