//! systemd units managed through the API, end to end: axon-cp, agentd and a real systemd run as
//! PID 1 of its own namespaces. What may be acted on is the host's decision.

use std::time::Duration;

use axon_e2e::*;
use reqwest::Method;

const HELLO: &str = "[Unit]\nDescription=hello\n[Service]\nExecStart=/bin/sleep infinity\n";
const BROKEN: &str = "[Unit]\nDescription=broken\n[Service]\nType=oneshot\nExecStart=/bin/false\n";
const OTHER: &str = "[Unit]\nDescription=other\n[Service]\nExecStart=/bin/sleep infinity\n";

#[tokio::test]
async fn units_start_stop_and_fail_through_the_api_within_the_hosts_allow_rules() {
    let sdbox = SystemdBox::start(&[
        ("hello.service", HELLO),
        ("broken.service", BROKEN),
        ("other.service", OTHER),
    ]);
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    agent.start_with_env(
        &[
            "--allow",
            "systemd:start,stop,restart:hello*.service",
            "--allow",
            "systemd:start:broken.service",
        ],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &sdbox.address)],
    );
    let host = agent.host_id.clone();
    wait_until(Duration::from_secs(5), || async {
        cp.host(&admin, &host).await["status"] == "online"
    })
    .await
    .expect("online");
    let svc = |tail: &str| format!("/api/hosts/{host}/services{tail}");

    let (status, list) = cp
        .call(Method::GET, &svc("?kind=systemd"), Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(
        list.as_array()
            .expect("list")
            .iter()
            .any(|u| u["name"] == "dbus.service"),
        "{list}"
    );

    let (status, unit) = cp
        .call(
            Method::GET,
            &svc("/systemd/hello.service"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{unit}");
    assert_eq!(unit["active_state"], "inactive");

    let mut live = subscribe_live(&cp, &admin, &["service_changed"]).await;
    let (status, started) = cp
        .call(
            Method::POST,
            &svc("/systemd/hello.service/start"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["job_result"], "done");
    assert_eq!(started["sub_state"], "running");
    // The state change reached the live subscriber.
    let changed = next_live(&mut live, |v| v["name"] == "hello.service").await;
    assert_eq!(changed["type"], "service_changed");
    assert_eq!(changed["job_result"], "done");
    assert_eq!(changed["host_id"], host.as_str());
    let (_, running) = cp
        .call(
            Method::GET,
            &svc("/systemd/hello.service"),
            Some(&admin),
            None,
        )
        .await;
    assert!(running["main_pid"].as_u64().unwrap_or(0) > 0, "{running}");
    assert_eq!(running["last_result"], "success");
    let (status, _) = cp
        .call(
            Method::POST,
            &svc("/systemd/hello.service/restart"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, stopped) = cp
        .call(
            Method::POST,
            &svc("/systemd/hello.service/stop"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["active_state"], "inactive");

    // A failing unit reports systemd's result as a conflict.
    let (status, failed) = cp
        .call(
            Method::POST,
            &svc("/systemd/broken.service/start"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("failed"),
        "{failed}"
    );

    // Outside the host's rules: refused by the agent, whoever asks.
    for (path, why) in [
        ("/systemd/other.service/start", "unit outside the patterns"),
        ("/systemd/broken.service/stop", "action outside the rule"),
        ("/systemd/hello.service/reload", "action outside the rule"),
        ("/systemd/hello.service/kill", "not an action"),
        ("/systemd/--root=%2F.service/start", "invalid unit name"),
    ] {
        let (status, body) = cp.call(Method::POST, &svc(path), Some(&admin), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{why}: {body}");
    }
    let (status, _) = cp
        .call(
            Method::GET,
            &svc("/systemd/no-such.service"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = cp
        .call(Method::GET, &svc("?kind=lxc"), Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Viewers read but do not act.
    cp.create_user(&admin, "viewer@axon.test", "viewer", None)
        .await;
    let viewer = cp.token_for("viewer@axon.test").await;
    let (status, _) = cp
        .call(
            Method::GET,
            &svc("/systemd/hello.service"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = cp
        .call(
            Method::POST,
            &svc("/systemd/hello.service/start"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Actions and refusals are in both trails.
    let outcomes = audit_outcomes(&cp, &admin, "host.service.").await;
    for want in [
        "host.service.start ok",
        "host.service.start failed",
        "host.service.start denied",
    ] {
        assert!(
            outcomes.iter().any(|o| o == want),
            "{want} not in {outcomes:?}"
        );
    }
}
