//! systemd units managed through the API, end to end: axon-cp, agentd and a real systemd run as
//! PID 1 of its own namespaces. What may be acted on is the host's decision.

use std::time::Duration;

use axon_e2e::*;
use reqwest::Method;

const HELLO: &str = "[Unit]\nDescription=hello\n[Service]\nExecStart=/bin/sh -c 'echo hello-log-line; exec sleep infinity'\n";
const INST: &str = "[Unit]\nDescription=inst\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=sdbox.target\n";
const CRASH: &str =
    "[Unit]\nDescription=crash\n[Service]\nExecStart=/bin/sh -c 'sleep 1; exit 3'\n";
const BROKEN: &str = "[Unit]\nDescription=broken\n[Service]\nType=oneshot\nExecStart=/bin/false\n";
const OTHER: &str = "[Unit]\nDescription=other\n[Service]\nExecStart=/bin/sleep infinity\n";

#[tokio::test]
async fn units_start_stop_and_fail_through_the_api_within_the_hosts_allow_rules() {
    let sdbox = SystemdBox::start(&[
        ("hello.service", HELLO),
        ("broken.service", BROKEN),
        ("other.service", OTHER),
        ("crash.service", CRASH),
        ("inst.service", INST),
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
            "--allow",
            "systemd:start:crash.service",
            "--allow",
            "systemd:start,enable,disable:inst.service",
            "--journal-dir",
            sdbox.journal_dir().to_str().expect("utf-8"),
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
    let changed = next_live(&mut live, |v| {
        v["name"] == "hello.service" && v["job_result"].is_string()
    })
    .await;
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
    assert_eq!(running["unit_file_state"], "static", "{running}");

    // Unit logs from the journal: the last lines, then followed as they come.
    let mut logs = serde_json::Value::Null;
    for _ in 0..50 {
        let (status, body) = cp
            .call(
                Method::GET,
                &svc("/systemd/hello.service/logs?lines=20"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        logs = body;
        if logs.to_string().contains("hello-log-line") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = logs["lines"].as_array().expect("lines");
    let line = lines
        .iter()
        .find(|l| l["message"] == "hello-log-line")
        .unwrap_or_else(|| panic!("no hello-log-line in {logs}"));
    assert!(line["ts_ms"].as_u64().is_some(), "{line}");
    assert_eq!(line["priority"], 6, "{line}");
    let (status, one) = cp
        .call(
            Method::GET,
            &svc("/systemd/hello.service/logs?lines=1"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["lines"].as_array().map(Vec::len), Some(1), "{one}");
    let follow = {
        let (cp, admin, path) = (
            &cp,
            &admin,
            svc("/systemd/hello.service/logs?lines=0&follow=true&follow_secs=20"),
        );
        async move { sse_until(cp, admin, &path, "hello-log-line", Duration::from_secs(15)).await }
    };
    let restart = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cp.call(
            Method::POST,
            &svc("/systemd/hello.service/restart"),
            Some(&admin),
            None,
        )
        .await
    };
    let ((status, text), (restarted, _)) = tokio::join!(follow, restart);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(restarted, StatusCode::OK);
    assert!(
        text.contains("event: line") && text.contains("hello-log-line"),
        "{text}"
    );
    for (path, want) in [
        ("/systemd/no-such.service/logs", StatusCode::NOT_FOUND),
        (
            "/systemd/hello.service/logs?lines=100000",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/systemd/hello.service/logs?follow=true&follow_secs=0",
            StatusCode::BAD_REQUEST,
        ),
        ("/systemd/--help/logs", StatusCode::NOT_FOUND),
    ] {
        let (status, body) = cp.call(Method::GET, &svc(path), Some(&admin), None).await;
        assert_eq!(status, want, "{path}: {body}");
    }

    // A unit that stops on its own: its state change arrives although no job ran for it.
    let (status, _) = cp
        .call(
            Method::POST,
            &svc("/systemd/crash.service/start"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let crashed = next_live(&mut live, |v| {
        v["name"] == "crash.service" && v["active_state"] == "failed"
    })
    .await;
    assert_eq!(crashed["kind"], "systemd");
    assert!(crashed.get("job_result").is_none(), "{crashed}");

    // enable / disable change the install state, and listings show it at once.
    let file_state = |list: &serde_json::Value| {
        list.as_array()
            .and_then(|l| l.iter().find(|u| u["name"] == "inst.service"))
            .map(|u| u["unit_file_state"].clone())
    };
    let (_, detail) = cp
        .call(
            Method::GET,
            &svc("/systemd/inst.service"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(detail["unit_file_state"], "disabled", "{detail}");
    // Running, so it stays loaded and listed.
    let (status, _) = cp
        .call(
            Method::POST,
            &svc("/systemd/inst.service/start"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, before) = cp
        .call(Method::GET, &svc("?kind=systemd"), Some(&admin), None)
        .await;
    assert_eq!(
        file_state(&before),
        Some(serde_json::json!("disabled")),
        "{before}\n{}",
        agent.log()
    );
    for (action, want) in [("enable", "enabled"), ("disable", "disabled")] {
        let (status, body) = cp
            .call(
                Method::POST,
                &svc(&format!("/systemd/inst.service/{action}")),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
        let (_, list) = cp
            .call(Method::GET, &svc("?kind=systemd"), Some(&admin), None)
            .await;
        assert_eq!(file_state(&list), Some(serde_json::json!(want)), "{action}");
    }
    let (status, _) = cp
        .call(
            Method::POST,
            &svc("/systemd/hello.service/enable"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "enable outside the rules");
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
