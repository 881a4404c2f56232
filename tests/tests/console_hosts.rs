//! A host worked from the console in a real browser (headless Chromium over WebDriver),
//! against the real axon-cp and a real enrolled agentd: live charts that move and recover
//! after the control plane is killed, history ranges, a command's streamed output, a file
//! edited with an etag conflict, an upload, a service's logs followed, enrollment from the
//! console and the audit trail's filters. Also, without a browser, what the console's bridge
//! to the API refuses.

use std::path::PathBuf;
use std::time::Duration;

use axon_e2e::browser::{self, Browser};
use axon_e2e::*;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

const AGENT_CONFIG: &str = r#"
[[commands]]
name = "two-lines"
description = "prints a line, waits half a second, prints two more"
binary = "/bin/sh"
args = ["-c", "echo first-line; sleep 0.5; echo second-line >&2; echo done-line"]

[[commands]]
name = "echo-word"
description = "echo one lowercase word"
binary = "/bin/echo"
args = ["{word}"]
params.word = { type = "string", pattern = "[a-z]{1,20}", max_len = 20 }
"#;

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Console errors other than the failed loads a killed control plane causes on purpose.
async fn errors(browser: &Browser) -> Vec<Value> {
    browser.console_errors().await
}

/// The number of points a chart holds (set by the page's script on every draw).
async fn points(browser: &Browser, chart: &str) -> u64 {
    browser
        .script(
            "return Number(document.querySelector(`figure[data-chart='${arguments[0]}']`).dataset.points || 0)",
            json!([chart]),
        )
        .await
        .as_u64()
        .unwrap_or(0)
}

async fn open_tab(browser: &Browser, tab: &str) {
    let link = browser.find(&format!("nav.tabs a[href*='/{tab}?']")).await;
    browser.click_and_wait(&link).await;
}

async fn pick(browser: &Browser, select: &str, value: &str) {
    let option = browser
        .find(&format!("{select} option[value='{value}']"))
        .await;
    browser.click(&option).await;
}

#[tokio::test]
async fn an_operator_works_a_host_from_the_browser() {
    const TEST: &str = "an_operator_works_a_host_from_the_browser";
    let Some(axe) = browser::tools(TEST) else {
        return;
    };
    let mut cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    cp.create_user(&admin, "ops@axon.test", "operator", None)
        .await;
    let mut agent = Agent::enroll(&cp).await;
    let config = agent.dir.path().join("agentd.toml");
    std::fs::write(&config, AGENT_CONFIG).expect("config");
    let www = tempfile::tempdir().expect("www");
    std::fs::write(www.path().join("index.html"), "<h1>hello</h1>\n").expect("index");
    let jail = format!("www={}:rw", www.path().display());
    agent.start(&[
        "--config",
        config.to_str().expect("utf-8"),
        "--jail",
        &jail,
        "--metrics-interval",
        "1s",
    ]);
    let host = agent.host_id.clone();
    let online = wait_until(Duration::from_secs(10), || async {
        cp.host(&admin, &host).await["status"] == "online"
    })
    .await;
    assert!(online.is_some(), "agent log:\n{}", agent.log());

    let browser = Browser::signed_in(&cp, "ops@axon.test", USER_PASSWORD).await;

    // From the fleet to the host: online, and its charts move with each live sample.
    browser.goto(&cp.url("/app/fleet?lang=en")).await;
    let link = browser.find(&format!("tr[data-host='{host}'] a")).await;
    browser.click_and_wait(&link).await;
    assert_eq!(
        browser.text(&browser.find("#host-state").await).await,
        "Online"
    );
    browser
        .wait_for(
            "a first chart point",
            "document.querySelector(\"figure[data-chart='cpu']\").dataset.points > 0",
        )
        .await;
    let before = points(&browser, "cpu").await;
    browser
        .wait_for(
            "the CPU chart to take a live sample",
            &format!(
                "document.querySelector(\"figure[data-chart='cpu']\").dataset.points > {before}"
            ),
        )
        .await;
    let line = browser.find("figure[data-chart='cpu'] polyline").await;
    let drawn = browser.attribute(&line, "points").await.unwrap_or_default();
    assert!(drawn.contains(','), "the CPU line is drawn: {drawn:?}");
    assert!(points(&browser, "mem").await > 0 && points(&browser, "net").await > 0);
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    std::fs::write(shots().join("host-1280.png"), browser.screenshot().await).expect("shot");
    browser.set_size(360, 800).await;
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    let overflow = browser
        .script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            json!([]),
        )
        .await;
    assert_eq!(overflow, json!(0), "the host page fits 360 px");
    std::fs::write(shots().join("host-360.png"), browser.screenshot().await).expect("shot");
    browser.set_size(1280, 900).await;

    // What the live charts cost the tab at one sample a second: main-thread task time over
    // wall time, from Chromium's own performance metrics (reported, not asserted).
    browser.cdp("Performance.enable", json!({})).await;
    let metric = |m: &Value, name: &str| {
        m["metrics"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name))
            .and_then(|x| x["value"].as_f64())
            .unwrap_or(0.0)
    };
    let first = browser.cdp("Performance.getMetrics", json!({})).await;
    let samples_before = points(&browser, "cpu").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let second = browser.cdp("Performance.getMetrics", json!({})).await;
    let busy = metric(&second, "TaskDuration") - metric(&first, "TaskDuration");
    let wall = metric(&second, "Timestamp") - metric(&first, "Timestamp");
    let updates = points(&browser, "cpu").await.saturating_sub(samples_before);
    let share = busy / wall * 100.0;
    eprintln!(
        "live charts: {share:.2} % of a core over {wall:.1} s with {updates} live updates (1 s samples)"
    );
    std::fs::write(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-cpu.txt"),
        format!("{share:.2} % of a core over {wall:.1} s, {updates} updates\n"),
    )
    .expect("figure");
    assert!(updates >= 5, "the charts kept updating: {updates}");

    // The keyboard reaches the skip link first, then the navigation, the tabs and the range
    // buttons, each with a visible focus.
    let stops = browser.tab_walk(18).await;
    assert_eq!(stops[0]["tag"], "a", "{stops:?}");
    assert!(
        stops[0]["text"].as_str().unwrap_or("").contains("Skip"),
        "{stops:?}"
    );
    assert!(
        stops.iter().all(|s| s["visible"] == true),
        "a stop without a visible focus: {stops:?}"
    );
    for wanted in ["Fleet", "Files", "Commands", "1 hour"] {
        assert!(
            stops.iter().any(|s| s["text"] == wanted),
            "{wanted} not reached: {stops:?}"
        );
    }

    // History ranges.
    let hour = browser.find("[data-range='1h']").await;
    browser.click(&hour).await;
    browser
        .wait_for(
            "the 1 h range",
            "document.querySelector(\"[data-range='1h']\").getAttribute('aria-pressed') === 'true' && document.getElementById('charts-status').textContent === ''",
        )
        .await;
    assert!(points(&browser, "cpu").await > 0);
    assert_eq!(errors(&browser).await, Vec::<Value>::new());

    // The control plane dies: the page says so, and recovers by itself when it is back.
    cp.kill9();
    browser
        .wait_for(
            "the lost-connection notice",
            "!document.getElementById('connection').hidden",
        )
        .await;
    cp.spawn().await;
    browser
        .wait_for(
            "the page to reconnect",
            "document.getElementById('connection').hidden && document.body.dataset.live === 'up'",
        )
        .await;
    let after = points(&browser, "cpu").await;
    browser
        .wait_for(
            "live samples after the restart",
            &format!(
                "document.querySelector(\"figure[data-chart='cpu']\").dataset.points > {after}"
            ),
        )
        .await;
    // The failed reconnection attempts are logged by the browser; nothing else may be.
    let unexpected: Vec<Value> = errors(&browser)
        .await
        .into_iter()
        .filter(|e| !e["message"].as_str().unwrap_or("").contains("WebSocket"))
        .collect();
    assert_eq!(unexpected, Vec::<Value>::new());

    // Commands: pick one, run it, and read its output as it streams.
    open_tab(&browser, "commands").await;
    browser
        .wait_for(
            "the command list",
            "document.querySelector(\"#command option[value='two-lines']\") !== null",
        )
        .await;
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    pick(&browser, "#command", "two-lines").await;
    // Each piece of output is stamped as it arrives, to show it streamed.
    browser
        .script(
            "window.__arrivals = [];
             new MutationObserver(() => window.__arrivals.push([performance.now(), document.getElementById('output').textContent]))
               .observe(document.getElementById('output'), {childList: true, subtree: true, characterData: true});",
            json!([]),
        )
        .await;
    browser.click(&browser.find("#run").await).await;
    browser
        .wait_for(
            "the exit code",
            "document.getElementById('exit').textContent.includes('Exit code 0')",
        )
        .await;
    let arrivals = browser.script("return window.__arrivals", json!([])).await;
    let when = |text: &str| {
        arrivals
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|x| x[1].as_str().unwrap_or("").contains(text))
            })
            .and_then(|x| x[0].as_f64())
            .unwrap_or_else(|| panic!("{text} never arrived: {arrivals}"))
    };
    assert!(
        when("done-line") - when("first-line") >= 300.0,
        "the first line showed before the command ended: {arrivals}"
    );
    let stderr = browser.find("#output .stderr").await;
    assert_eq!(browser.text(&stderr).await.trim(), "second-line");
    // A typed parameter the host refuses is shown on its field.
    pick(&browser, "#command", "echo-word").await;
    let word = browser.find("#param-word").await;
    browser.type_text(&word, "NOT valid").await;
    browser.click(&browser.find("#run").await).await;
    browser
        .wait_for(
            "the refusal on the field",
            "document.getElementById('param-word').getAttribute('aria-invalid') === 'true'",
        )
        .await;
    browser
        .script(
            "document.getElementById('param-word').value = ''",
            json!([]),
        )
        .await;
    browser.type_text(&word, "hello").await;
    browser.click(&browser.find("#run").await).await;
    browser
        .wait_for(
            "echo's output",
            "document.getElementById('output').textContent.trim() === 'hello'",
        )
        .await;

    // Files: browse from the roots, open, meet a change made on the host meanwhile.
    open_tab(&browser, "files").await;
    browser
        .wait_for(
            "the roots",
            "document.querySelector(\"tr[data-path='www'] a\") !== null",
        )
        .await;
    browser
        .click(&browser.find("tr[data-path='www'] a").await)
        .await;
    browser
        .wait_for(
            "the www listing",
            "document.querySelector(\"tr[data-path='www/index.html'] a\") !== null",
        )
        .await;
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    browser
        .click(&browser.find("tr[data-path='www/index.html'] a").await)
        .await;
    browser
        .wait_for(
            "the editor",
            "document.getElementById('content').value === '<h1>hello</h1>\\n'",
        )
        .await;
    std::fs::write(
        www.path().join("index.html"),
        "<h1>changed on the host</h1>\n",
    )
    .expect("edit");
    browser
        .wait_for(
            "the changed-on-host notice",
            "!document.getElementById('changed').hidden",
        )
        .await;
    let area = browser.find("#content").await;
    browser.type_text(&area, "<p>mine</p>").await;
    browser.click(&browser.find("#save").await).await;
    browser
        .wait_for(
            "the conflict",
            "!document.getElementById('conflict').hidden",
        )
        .await;
    assert_eq!(
        browser.attribute(&area, "aria-invalid").await.as_deref(),
        Some("true")
    );
    assert_eq!(
        std::fs::read_to_string(www.path().join("index.html")).expect("read"),
        "<h1>changed on the host</h1>\n",
        "a conflicting save changes nothing"
    );
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    std::fs::write(
        shots().join("files-conflict-1280.png"),
        browser.screenshot().await,
    )
    .expect("shot");
    browser.click(&browser.find("#reload").await).await;
    browser
        .wait_for(
            "their version",
            "document.getElementById('content').value.includes('changed on the host')",
        )
        .await;
    browser
        .script("document.getElementById('content').value = ''", json!([]))
        .await;
    browser.type_text(&area, "<h1>from the console</h1>").await;
    browser.click(&browser.find("#save").await).await;
    browser
        .wait_for(
            "the save",
            "document.getElementById('save-status').textContent === 'Saved'",
        )
        .await;
    assert_eq!(
        std::fs::read_to_string(www.path().join("index.html")).expect("read"),
        "<h1>from the console</h1>"
    );
    // An upload lands in the open folder.
    let local = tempfile::tempdir().expect("local");
    let upload = local.path().join("notes.txt");
    std::fs::write(&upload, "uploaded from a browser\n").expect("local file");
    let input = browser.find("#upload").await;
    browser
        .type_text(&input, upload.to_str().expect("utf-8"))
        .await;
    browser
        .wait_for(
            "the uploaded file",
            "document.querySelector(\"tr[data-path='www/notes.txt']\") !== null",
        )
        .await;
    assert_eq!(
        std::fs::read_to_string(www.path().join("notes.txt")).expect("uploaded"),
        "uploaded from a browser\n"
    );
    // A download hands the browser the file's bytes (the blob it saves is read back here).
    browser
        .script(
            "window.__downloads = []; const make = URL.createObjectURL;
             URL.createObjectURL = (blob) => { window.__downloads.push(blob); return make(blob); };",
            json!([]),
        )
        .await;
    browser
        .click(&browser.find("tr[data-path='www/notes.txt'] button").await)
        .await;
    browser
        .wait_for("the download", "window.__downloads.length === 1")
        .await;
    let downloaded = browser
        .script_async(
            "const done = arguments[arguments.length - 1]; window.__downloads[0].text().then(done);",
            json!([]),
        )
        .await;
    assert_eq!(downloaded, json!("uploaded from a browser\n"));

    // No page broke its policy...
    assert!(
        !cp.log().contains("content security policy blocked"),
        "{}",
        cp.log()
    );
    // ...and a page that tries is refused, and reported.
    browser
        .script(
            "const s = document.createElement('script'); s.textContent = 'window.__ran = true'; document.body.append(s); return window.__ran === true",
            json!([]),
        )
        .await;
    assert_eq!(
        browser
            .script("return window.__ran === true", json!([]))
            .await,
        json!(false),
        "an inline script ran"
    );
    let reported = wait_until(Duration::from_secs(10), || async {
        cp.log().contains("content security policy blocked")
    })
    .await;
    assert!(reported.is_some(), "the violation was not reported");
    browser.close().await;
}

#[tokio::test]
async fn a_services_logs_are_followed_and_it_restarts_from_the_browser() {
    const TEST: &str = "a_services_logs_are_followed_and_it_restarts_from_the_browser";
    let Some(axe) = browser::tools(TEST) else {
        return;
    };
    const TICK: &str = "[Unit]\nDescription=ticks for the console\n[Service]\nExecStart=/bin/sh -c 'i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.3; done'\n";
    let sdbox = SystemdBox::start(&[("tick.service", TICK)]);
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    agent.start_with_env(
        &[
            "--allow",
            "systemd:start,stop,restart:tick.service",
            "--journal-dir",
            sdbox.journal_dir().to_str().expect("utf-8"),
        ],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &sdbox.address)],
    );
    let host = agent.host_id.clone();
    wait_until(Duration::from_secs(10), || async {
        cp.host(&admin, &host).await["status"] == "online"
    })
    .await
    .expect("online");

    let browser = Browser::signed_in(&cp, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser
        .goto(&cp.url(&format!("/app/hosts/{host}/services?lang=en")))
        .await;
    browser
        .wait_for(
            "the unit list",
            "document.querySelector(\"tr[data-service='tick.service']\") !== null",
        )
        .await;
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    // Only what the host's rules allow is offered: nothing on a unit no rule names.
    assert!(
        browser
            .find_all("tr[data-service='dbus.service'] [data-action]")
            .await
            .is_empty()
    );
    assert!(
        !browser
            .find_all("tr[data-service='dbus.service']")
            .await
            .is_empty()
    );
    // Start it from its row; the row follows the unit's state.
    browser
        .click(
            &browser
                .find("tr[data-service='tick.service'] [data-action='start']")
                .await,
        )
        .await;
    browser
        .wait_for(
            "the unit to run",
            "(document.querySelector(\"tr[data-service='tick.service'] .badge\") || {}).textContent?.startsWith('active')",
        )
        .await;
    // Follow its journal: new lines keep arriving.
    browser
        .click(&browser.find("tr[data-service='tick.service'] button").await)
        .await;
    browser
        .wait_for(
            "the follow button",
            "!document.getElementById('follow').disabled",
        )
        .await;
    // Its details: a main process while it runs.
    browser
        .wait_for(
            "the unit's details",
            "document.getElementById('service-details').textContent.includes('Main process')",
        )
        .await;
    browser.click(&browser.find("#follow").await).await;
    browser
        .wait_for(
            "followed lines",
            "/tick-\\d+/.test(document.getElementById('logs').textContent)",
        )
        .await;
    let count = || async {
        browser
            .script(
                "return (document.getElementById('logs').textContent.match(/tick-\\d+/g) || []).length",
                json!([]),
            )
            .await
            .as_u64()
            .unwrap_or(0)
    };
    let seen = count().await;
    browser
        .wait_for(
            "more lines while following",
            &format!("(document.getElementById('logs').textContent.match(/tick-\\d+/g) || []).length >= {}", seen + 3),
        )
        .await;
    assert_eq!(
        browser
            .attribute(&browser.find("#follow").await, "aria-pressed")
            .await
            .as_deref(),
        Some("true")
    );
    std::fs::write(
        shots().join("services-1280.png"),
        browser.screenshot().await,
    )
    .expect("shot");
    // Restart: the counter starts again at tick-1 in the followed log.
    browser
        .click(
            &browser
                .find("tr[data-service='tick.service'] [data-action='restart']")
                .await,
        )
        .await;
    browser
        .wait_for(
            "the restarted unit's first line",
            "document.getElementById('logs').textContent.split('tick-1\\n').length > 2 || /tick-1\\n[\\s\\S]*tick-1\\n/.test(document.getElementById('logs').textContent)",
        )
        .await;
    browser.click(&browser.find("#follow").await).await;
    assert_eq!(
        browser
            .attribute(&browser.find("#follow").await, "aria-pressed")
            .await
            .as_deref(),
        Some("false")
    );
    assert_eq!(browser.console_errors().await, Vec::<Value>::new());
    browser.close().await;
}

#[tokio::test]
async fn an_admin_enrolls_a_host_from_the_console_and_finds_it_in_the_audit() {
    const TEST: &str = "an_admin_enrolls_a_host_from_the_console_and_finds_it_in_the_audit";
    let Some(axe) = browser::tools(TEST) else {
        return;
    };
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let browser = Browser::signed_in(&cp, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser.goto(&cp.url("/app/enroll?lang=en")).await;
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    let label = browser.find("#label").await;
    browser.type_text(&label, "gpu").await;
    browser.click(&browser.find("#enroll-create").await).await;
    browser
        .wait_for(
            "the command",
            "!document.getElementById('enroll-result').hidden",
        )
        .await;
    let command = browser.text(&browser.find("#enroll-command").await).await;
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    // The one line names this server and carries the token in the environment.
    let token = command
        .split("AGENTD_TOKEN='")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no token in {command}"));
    let server = command
        .split("--server ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no server in {command}"));
    assert_eq!(server, cp.server());
    let state = tempfile::tempdir().expect("state");
    let enrolled = run_enroll(server, token, state.path());
    assert!(enrolled.success, "{}", enrolled.stderr);
    let (status, hosts) = cp.call(Method::GET, "/api/hosts", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    let labelled = hosts["items"]
        .as_array()
        .or(hosts.as_array())
        .expect("hosts")
        .iter()
        .any(|h| h["labels"]["role"] == "gpu");
    assert!(labelled, "{hosts}");

    // The audit page, filtered to enrollment, shows the token's creation by this admin.
    browser
        .goto(&cp.url("/app/audit?lang=en&action=enrollment_token."))
        .await;
    let rows = browser.find_all("table.audit tbody tr").await;
    assert!(!rows.is_empty());
    for row in &rows {
        assert!(browser.text(row).await.contains("enrollment_token."));
    }
    assert_eq!(browser.accessibility(&axe).await, Vec::<Value>::new());
    browser
        .goto(&cp.url("/app/audit?lang=en&action=enrollment_token.&outcome=denied"))
        .await;
    assert!(browser.find_all("table.audit tbody tr").await.is_empty());
    assert_eq!(browser.find_all("p.empty").await.len(), 1);
    assert_eq!(browser.console_errors().await, Vec::<Value>::new());
    browser.close().await;
}

/// A form body, each value percent-encoded.
fn form(fields: &[(&str, &str)]) -> String {
    let encode = |v: &str| {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Signs in through the console's form as a browser would; returns the session cookie's
/// value and the CSRF token the console's pages carry.
async fn console_session(cp: &ControlPlane, email: &str, password: &str) -> (String, String) {
    let origin = cp.server();
    let door = cp.client.get(cp.url("/app")).send().await.expect("door");
    let login_csrf = door
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("axon_login_csrf="))
        .and_then(|v| v.split(';').next())
        .expect("login token")
        .to_owned();
    let signed = cp
        .client_without_redirects()
        .post(cp.url("/app/login"))
        .header("origin", &origin)
        .header("cookie", format!("axon_login_csrf={login_csrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("email", email),
            ("password", password),
            ("csrf", &login_csrf),
        ]))
        .send()
        .await
        .expect("login");
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let secret = signed
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("axon_session="))
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_owned();
    let page = cp
        .client
        .get(cp.url("/app/fleet"))
        .header("cookie", format!("axon_session={secret}"))
        .send()
        .await
        .expect("fleet")
        .text()
        .await
        .expect("text");
    let csrf = page
        .split("data-csrf=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's token")
        .to_owned();
    (secret, csrf)
}

#[tokio::test]
async fn the_consoles_bridge_refuses_what_a_forger_sends() {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    cp.create_user(&admin, "viewer@axon.test", "viewer", None)
        .await;
    let origin = cp.server();
    let (secret, csrf) = console_session(&cp, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let cookie = format!("axon_session={secret}");
    let me = |headers: Vec<(&'static str, String)>| {
        let mut request = cp.client.get(cp.url("/app/api/me"));
        for (k, v) in headers {
            request = request.header(k, v);
        }
        async move { request.send().await.expect("me") }
    };

    // Each missing or foreign piece is refused; the whole set is let through.
    assert_eq!(me(vec![]).await.status(), StatusCode::UNAUTHORIZED);
    let bearer = me(vec![("authorization", format!("Bearer {admin}"))]).await;
    assert_eq!(
        bearer.status(),
        StatusCode::UNAUTHORIZED,
        "the bridge takes cookies only"
    );
    let refusals = [
        vec![("cookie", cookie.clone()), ("origin", origin.clone())],
        vec![
            ("cookie", cookie.clone()),
            ("x-axon-csrf", "wrong".to_owned()),
            ("origin", origin.clone()),
        ],
        vec![
            ("cookie", cookie.clone()),
            ("x-axon-csrf", csrf.clone()),
            ("origin", "https://evil.example".to_owned()),
        ],
        vec![
            ("cookie", cookie.clone()),
            ("x-axon-csrf", csrf.clone()),
            ("sec-fetch-site", "cross-site".to_owned()),
        ],
        vec![
            ("cookie", cookie.clone()),
            ("x-axon-csrf", csrf.clone()),
            ("origin", origin.clone()),
            ("sec-fetch-site", "same-site".to_owned()),
        ],
        // Neither Origin nor Sec-Fetch-Site: no browser sends that.
        vec![("cookie", cookie.clone()), ("x-axon-csrf", csrf.clone())],
    ];
    for headers in refusals {
        let shown = format!("{headers:?}");
        let answer = me(headers).await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{shown}");
        let body: Value = answer.json().await.expect("json");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let good = me(vec![
        ("cookie", cookie.clone()),
        ("x-axon-csrf", csrf.clone()),
        ("sec-fetch-site", "same-origin".to_owned()),
    ])
    .await;
    assert_eq!(good.status(), StatusCode::OK);
    assert_eq!(
        good.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let body: Value = good.json().await.expect("json");
    assert_eq!(body["email"], ADMIN_EMAIL);
    // Only /api/ lies behind it.
    for path in ["/app/api/../metrics", "/app/api/v1/models"] {
        let answer = cp
            .client
            .get(cp.url(path))
            .header("cookie", &cookie)
            .header("x-axon-csrf", &csrf)
            .header("origin", &origin)
            .send()
            .await
            .expect("path");
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
    }

    // The API still decides: a viewer's console cannot run a command, and the refusal is
    // audited under the viewer's name.
    let (viewer_secret, viewer_csrf) =
        console_session(&cp, "viewer@axon.test", USER_PASSWORD).await;
    let exec = cp
        .client
        .post(cp.url("/app/api/hosts/nohost/exec"))
        .header("cookie", format!("axon_session={viewer_secret}"))
        .header("x-axon-csrf", &viewer_csrf)
        .header("origin", &origin)
        .json(&json!({"command": "uptime"}))
        .send()
        .await
        .expect("exec");
    assert_eq!(exec.status(), StatusCode::FORBIDDEN);
    let outcomes = audit_outcomes(&cp, &admin, "access.forbidden").await;
    assert!(
        outcomes.iter().any(|o| o.contains("denied")),
        "{outcomes:?}"
    );

    // Live updates: a page of another site is refused; this site's gets its events, until
    // the session ends.
    let foreign = socket(
        &cp,
        "/app/api/ws",
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await;
    assert!(
        foreign.as_ref().is_err_and(|e| e.contains("403")),
        "{:?}",
        foreign.map(|_| ())
    );
    let mut live = socket(
        &cp,
        "/app/api/ws",
        &[
            ("cookie", &cookie),
            ("origin", &origin),
            ("sec-websocket-protocol", "axon.v1"),
        ],
    )
    .await
    .expect("live socket");
    {
        use futures_util::SinkExt;
        live.send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"types": ["host_online"]}).to_string().into(),
        ))
        .await
        .expect("subscribe");
    }
    next_live(&mut live, |v| v["type"] == "subscribed").await;
    let logout = cp
        .client_without_redirects()
        .post(cp.url("/app/logout"))
        .header("cookie", &cookie)
        .header("origin", &origin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", csrf.as_str())]))
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(message) = live.next().await {
            match message {
                Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) => {
                    return frame.map(|f| u16::from(f.code));
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the socket closes once the session ends");
    assert_eq!(closed, Some(4401));
    let after = me(vec![
        ("cookie", cookie.clone()),
        ("x-axon-csrf", csrf.clone()),
        ("origin", origin.clone()),
    ])
    .await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
}
