//! The short version of the fleet load harness (`scripts/loadtest` runs the long one): a few
//! hundred real agent links, enrolled through the real path, from several loopback source
//! addresses; a fan-out ping to all of them; the registry read by pages; `kill -9` of the
//! control plane with every agent online, and every agent back by itself; idle TCP
//! connections that never start TLS closed by the server.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axon_e2e::load::{self, Stats, Target};
use axon_e2e::*;
use futures_util::StreamExt;

const AGENTS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_agents_connect_answer_and_come_back_after_kill_9() {
    load::raise_fd_limit();
    let mut cp = ControlPlane::start_with_env(&[], &[("AXON_LOG", "warn")]).await;
    let admin = cp.admin_token().await;
    let ca = cp.ca().0;
    let http = load::client(&ca, 32);
    let identities = load::enroll(&http, &cp.server(), &ca, &admin, AGENTS, 16, "short")
        .await
        .expect("enrollment");
    assert_eq!(identities.len(), AGENTS);
    let target = Arc::new(Target::new(cp.server(), cp.agent_port, 8, 2));
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut ids = Vec::new();
    for (i, identity) in identities.into_iter().enumerate() {
        ids.push(identity.host_id.clone());
        tokio::spawn(load::run_agent(
            Arc::new(identity),
            target.clone(),
            i,
            stats.clone(),
            stop.clone(),
        ));
    }
    let online = || stats.online.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(60), || async { online() == AGENTS })
        .await
        .unwrap_or_else(|| panic!("{} of {AGENTS} online", online()));

    // The registry by pages: every host once, in order, all online.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/hosts?limit=70&after={a}"),
            None => "/api/hosts?limit=70".to_owned(),
        };
        let answer = http
            .get(cp.url(&path))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("page");
        assert_eq!(answer.status(), StatusCode::OK);
        let next = answer
            .headers()
            .get("x-axon-next")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let page: Vec<serde_json::Value> = answer.json().await.expect("json");
        assert!(page.len() <= 70);
        assert!(page.iter().all(|h| h["status"] == "online"), "{page:?}");
        seen.extend(
            page.iter()
                .map(|h| h["id"].as_str().expect("id").to_owned()),
        );
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), AGENTS);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "pages come in id order");
    assert_eq!(
        seen.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
    let (status, _) = cp
        .call(
            reqwest::Method::GET,
            "/api/hosts?after=x",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "after needs a limit");

    // A ping to every agent at once: each one answers.
    let answered: usize = futures_util::stream::iter(ids.iter())
        .map(|id| {
            let (http, url, admin) = (&http, cp.url(&format!("/api/hosts/{id}/ping")), &admin);
            async move {
                http.post(url)
                    .bearer_auth(admin)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .buffer_unordered(64)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    assert_eq!(answered, AGENTS);
    assert!(stats.requests.load(Ordering::Relaxed) >= AGENTS as u64);

    // Idle TCP connections on the API listener that never start TLS are closed by the server.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", cp.api_port))
                .await
                .expect("connect"),
        );
    }
    let closed = futures_util::future::join_all(idle.into_iter().map(|mut s| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .is_ok()
    }))
    .await;
    assert!(
        closed.iter().all(|c| *c),
        "an idle connection was kept open"
    );

    // kill -9 with everyone online: all go offline, and after the restart all come back with
    // their own backoff.
    cp.kill9();
    wait_until(Duration::from_secs(30), || async { online() == 0 })
        .await
        .expect("every session ended");
    cp.spawn().await;
    wait_until(Duration::from_secs(90), || async { online() == AGENTS })
        .await
        .unwrap_or_else(|| panic!("{} of {AGENTS} came back", online()));
    let (status, summary) = cp
        .call(
            reqwest::Method::GET,
            "/api/fleet/summary",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    let _ = stop_tx.send(true);

    // Refused tokens still count: after 20 from one address, even a good one waits.
    let good: serde_json::Value = http
        .post(cp.url("/api/enrollment-tokens"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"ttl_secs": 600}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let good = good["token"].as_str().expect("token").to_owned();
    let mut bad = good.clone();
    let last = bad.pop().expect("a character");
    bad.push(if last == 'A' { 'B' } else { 'A' });
    let try_token = |token: String| {
        let (http, url) = (&http, cp.url(axon_shared::ENROLL_PATH));
        async move {
            http.post(url)
                .json(&serde_json::json!({"token": token, "csr_pem": "-", "hostname": "x"}))
                .send()
                .await
                .expect("enroll")
                .status()
        }
    };
    for _ in 0..20 {
        assert_eq!(try_token(bad.clone()).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(try_token(good).await, StatusCode::TOO_MANY_REQUESTS);
}
