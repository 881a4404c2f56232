//! Containers managed through the API, end to end: axon-cp, agentd and the real Docker engine
//! of this machine, with an image made from Debian's busybox-static. Everything a test makes
//! carries its run id and is removed when the test ends.

use std::time::Duration;

use axon_e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn online(cp: &ControlPlane, admin: &str, agent: &Agent) {
    let host = agent.host_id.clone();
    wait_until(Duration::from_secs(10), || async {
        cp.host(admin, &host).await["status"] == "online"
    })
    .await
    .unwrap_or_else(|| panic!("agent not online; log:\n{}", agent.log()));
}

#[tokio::test]
async fn containers_run_act_log_and_stop_within_the_hosts_allow_rules() {
    let docker = DockerFixture::new();
    let data = tempfile::tempdir().expect("tempdir");
    let data_path = std::fs::canonicalize(data.path()).expect("canonical");
    let outside = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    let pattern = format!("docker:*:axon-test-{}-*", docker.run);
    agent.start(&[
        "--allow",
        &pattern,
        "--jail",
        &format!("data={}:rw", data_path.display()),
    ]);
    online(&cp, &admin, &agent).await;
    let host = agent.host_id.clone();
    let api = |tail: &str| format!("/api/hosts/{host}{tail}");

    // The image made for this run is listed.
    let (status, images) = cp
        .call(Method::GET, &api("/images"), Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{images}");
    assert!(
        images.as_array().expect("images").iter().any(|i| i["tags"]
            .as_array()
            .is_some_and(|t| t.contains(&json!(docker.image)))),
        "{images}"
    );

    let mut live = subscribe_live(&cp, &admin, &["service_changed"]).await;
    let web = docker.name("web");
    let run = json!({
        "name": web,
        "image": docker.image,
        "cmd": ["sh", "-c", "echo hello-from-$GREETING; echo err-line >&2; if mknod /data/dev c 1 3 2>/dev/null; then echo allowed; else echo refused; fi > /data/mknod.txt; echo written > /data/out.txt; i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done"],
        "env": {"GREETING": "axon"},
        "labels": {"axon.test": docker.run},
        "ports": [{"container_port": 8080}],
        "mounts": [{"source": data_path.to_str().expect("utf-8"), "target": "/data"}],
        "restart": "no",
    });
    let (status, created) = cp
        .call(Method::POST, &api("/containers"), Some(&admin), Some(run))
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{created}; log:\n{}",
        agent.log()
    );
    assert_eq!(created["kind"], "docker");
    assert_eq!(created["name"], web.as_str());
    assert_eq!(created["active_state"], "active");
    assert_eq!(created["sub_state"], "running");
    // Published on loopback only, by default.
    assert_eq!(created["ports"][0]["host_ip"], "127.0.0.1", "{created}");
    let started = next_live(&mut live, |v| {
        v["name"] == web.as_str() && v["action"] == "start"
    })
    .await;
    assert_eq!(started["kind"], "docker");
    assert_eq!(started["host_id"], host.as_str());

    // The bind mount is the host directory.
    wait_until(Duration::from_secs(5), || async {
        data_path.join("out.txt").is_file()
    })
    .await
    .expect("the container wrote through its mount");
    // Runs drop the capabilities that would plant device nodes or setuid files in a root.
    assert_eq!(
        std::fs::read_to_string(data_path.join("mknod.txt")).expect("mknod outcome"),
        "refused\n"
    );
    assert!(
        !data_path.join("dev").exists(),
        "no device node on the host"
    );
    let security = docker.docker(&[
        "inspect",
        "-f",
        "{{json .HostConfig.CapDrop}} {{json .HostConfig.SecurityOpt}}",
        &web,
    ]);
    for wanted in ["MKNOD", "SETUID", "SETGID", "FSETID", "no-new-privileges"] {
        assert!(security.contains(wanted), "{wanted} in {security}");
    }

    // Listed like units are, with Docker's own fields.
    let (status, list) = cp
        .call(
            Method::GET,
            &api("/services?kind=docker"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let listed = list
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["name"] == web.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{web} not in {list}"));
    assert_eq!(listed["active_state"], "active");
    assert_eq!(listed["image"], docker.image.as_str());
    assert_eq!(listed["labels"]["axon.test"], docker.run.as_str());
    assert!(
        listed["status"].as_str().unwrap_or("").starts_with("Up"),
        "{listed}"
    );

    // Logs: stdout and stderr, newest last.
    let logs_path = api(&format!("/services/docker/{web}/logs?lines=50"));
    let mut logs = Value::Null;
    for _ in 0..50 {
        let (status, body) = cp.call(Method::GET, &logs_path, Some(&admin), None).await;
        logs = body;
        if status == StatusCode::OK && logs.to_string().contains("tick-1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = logs["lines"].as_array().expect("lines");
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "hello-from-axon" && l["stream"] == "stdout"),
        "{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "err-line" && l["stream"] == "stderr"),
        "{logs}"
    );
    assert!(
        lines.iter().all(|l| l["ts_ms"].as_u64().is_some()),
        "{logs}"
    );
    let (_, two) = cp
        .call(
            Method::GET,
            &api(&format!("/services/docker/{web}/logs?lines=2")),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(two["lines"].as_array().map(Vec::len), Some(2), "{two}");

    // Following: new lines arrive as they are written.
    let (status, text) = sse_until(
        &cp,
        &admin,
        &api(&format!(
            "/services/docker/{web}/logs?lines=1&follow=true&follow_secs=20"
        )),
        "event: line",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("tick-"), "{text}");

    // Stats: one sample, then a stream.
    let (status, sample) = cp
        .call(
            Method::GET,
            &api(&format!("/services/docker/{web}/stats")),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sample}");
    assert_eq!(sample["name"], web.as_str());
    assert!(
        sample["cpu_percent"].as_f64().is_some_and(|c| c >= 0.0),
        "{sample}"
    );
    assert!(sample["ts_ms"].as_u64().is_some_and(|t| t > 0), "{sample}");
    let (status, text) = sse_until(
        &cp,
        &admin,
        &api(&format!(
            "/services/docker/{web}/stats?stream=sse&follow_secs=10"
        )),
        "event: sample",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("memory_bytes"), "{text}");

    // Stop, start, restart: each answers with the state after it.
    let (status, stopped) = cp
        .call(
            Method::POST,
            &api(&format!("/services/docker/{web}/stop")),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["sub_state"], "exited");
    let died = next_live(&mut live, |v| {
        v["name"] == web.as_str() && v["action"] == "die"
    })
    .await;
    assert_eq!(died["sub_state"], "exited");
    let (_, detail) = cp
        .call(
            Method::GET,
            &api(&format!("/services/docker/{web}")),
            Some(&admin),
            None,
        )
        .await;
    assert!(
        detail["last_result"]
            .as_str()
            .unwrap_or("")
            .starts_with("exit "),
        "{detail}"
    );
    assert!(docker.docker(&["inspect", "-f", "{{.State.Running}}", &web]) == "false");
    let (status, _) = cp
        .call(
            Method::GET,
            &api("/services?kind=docker"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, all) = cp
        .call(
            Method::GET,
            &api("/services?kind=docker&all=true"),
            Some(&admin),
            None,
        )
        .await;
    assert!(
        all.to_string().contains(&web),
        "stopped containers are listed with all=true"
    );
    for action in ["start", "restart"] {
        let (status, body) = cp
            .call(
                Method::POST,
                &api(&format!("/services/docker/{web}/{action}")),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
        assert_eq!(body["sub_state"], "running", "{action}: {body}");
    }
    assert_eq!(
        docker.docker(&["inspect", "-f", "{{.State.Running}}", &web]),
        "true"
    );

    // Outside the host's rules, or outside its roots: refused, and nothing changes.
    let other = format!("axon-other-{}", docker.run);
    let other_id = docker.docker(&[
        "run",
        "-d",
        "--name",
        &other,
        "--label",
        &format!("axon.test={}", docker.run),
        &docker.image,
        "sleep",
        "1000",
    ]);
    for (method, path, body, want, why) in [
        (
            Method::POST,
            api(&format!("/services/docker/{}/stop", &other_id[..12])),
            None,
            StatusCode::FORBIDDEN,
            "a container outside the patterns, asked for by id",
        ),
        (
            Method::POST,
            api(&format!("/services/docker/{other}/stop")),
            None,
            StatusCode::FORBIDDEN,
            "container outside the patterns",
        ),
        (
            Method::DELETE,
            api(&format!("/services/docker/{other}?force=true")),
            None,
            StatusCode::FORBIDDEN,
            "remove outside the patterns",
        ),
        (
            Method::POST,
            api(&format!("/services/docker/{web}/kill")),
            None,
            StatusCode::FORBIDDEN,
            "not an action",
        ),
        (
            Method::POST,
            api(&format!("/services/docker/{web}/enable")),
            None,
            StatusCode::FORBIDDEN,
            "a systemd action",
        ),
        (
            Method::POST,
            api("/containers"),
            Some(json!({"name": other.clone() + "-2", "image": docker.image})),
            StatusCode::FORBIDDEN,
            "run outside the patterns",
        ),
        (
            Method::POST,
            api("/containers"),
            Some(
                json!({"name": docker.name("m1"), "image": docker.image, "mounts": [{"source": outside.path().to_str().expect("utf-8"), "target": "/x"}]}),
            ),
            StatusCode::FORBIDDEN,
            "mount outside the roots",
        ),
        (
            Method::POST,
            api("/containers"),
            Some(
                json!({"name": docker.name("m2"), "image": docker.image, "mounts": [{"source": format!("{}/../", data_path.display()), "target": "/x"}]}),
            ),
            StatusCode::FORBIDDEN,
            "mount escaping its root",
        ),
        (
            Method::POST,
            api("/containers"),
            Some(json!({"name": docker.name("m3"), "image": docker.image, "privileged": true})),
            StatusCode::BAD_REQUEST,
            "no privileged runs",
        ),
        (
            Method::POST,
            api("/containers"),
            Some(json!({"name": docker.name("m4"), "image": "axon-no-such-image:1"})),
            StatusCode::NOT_FOUND,
            "a run never pulls",
        ),
        (
            Method::POST,
            api("/containers"),
            Some(json!({"name": "../../x", "image": docker.image})),
            StatusCode::BAD_REQUEST,
            "a name that is not a name",
        ),
        (
            Method::GET,
            api(&format!("/services/docker/{}", docker.name("missing"))),
            None,
            StatusCode::NOT_FOUND,
            "unknown container",
        ),
        (
            Method::GET,
            api("/services/docker/a%2F..%2F..%2Fx"),
            None,
            StatusCode::BAD_REQUEST,
            "a path in a name",
        ),
        (
            Method::POST,
            api("/images/pull"),
            Some(json!({"image": "busybox:latest"})),
            StatusCode::FORBIDDEN,
            "pull outside the patterns",
        ),
        (
            Method::GET,
            api(&format!("/services/systemd/{web}/stats")),
            None,
            StatusCode::BAD_REQUEST,
            "stats of a unit",
        ),
    ] {
        let (status, answer) = cp.call(method, &path, Some(&admin), body).await;
        assert_eq!(status, want, "{why}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{why}: {answer}");
    }
    assert_eq!(
        docker.docker(&["inspect", "-f", "{{.State.Running}}", &other]),
        "true"
    );
    let names = docker.docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=axon.test={}", docker.run),
    ]);
    assert!(
        !names.contains("-m1")
            && !names.contains("-m2")
            && !names.contains("-m3")
            && !names.contains("-m4"),
        "{names}"
    );

    // Viewers read but do not act.
    cp.create_user(&admin, "viewer@axon.test", "viewer", None)
        .await;
    let viewer = cp.token_for("viewer@axon.test").await;
    let (status, _) = cp
        .call(
            Method::GET,
            &api(&format!("/services/docker/{web}")),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = cp
        .call(
            Method::DELETE,
            &api(&format!("/services/docker/{web}?force=true")),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Remove: a running container needs force.
    let (status, body) = cp
        .call(
            Method::DELETE,
            &api(&format!("/services/docker/{web}")),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = cp
        .call(
            Method::DELETE,
            &api(&format!("/services/docker/{web}?force=true")),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let destroyed = next_live(&mut live, |v| {
        v["name"] == web.as_str() && v["action"] == "destroy"
    })
    .await;
    assert_eq!(destroyed["sub_state"], "removed");
    let (status, _) = cp
        .call(
            Method::GET,
            &api(&format!("/services/docker/{web}")),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Every action and refusal is in the trail.
    let outcomes = audit_outcomes(&cp, &admin, "host.").await;
    for want in [
        "host.container.run ok",
        "host.container.run denied",
        "host.service.stop ok",
        "host.service.stop denied",
        "host.service.remove ok",
        "host.service.remove error",
        "host.image.pull denied",
    ] {
        assert!(
            outcomes.iter().any(|o| o == want),
            "{want} not in {outcomes:?}"
        );
    }
}

#[tokio::test]
async fn an_engine_that_is_not_there_is_503_and_capabilities_follow_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("docker.sock");
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    let docker_host = format!("unix://{}", socket.display());
    agent.start_with_env(
        &["--capabilities-interval", "1s"],
        &[("DOCKER_HOST", &docker_host)],
    );
    online(&cp, &admin, &agent).await;
    let host = agent.host_id.clone();
    assert_eq!(
        cp.host(&admin, &host).await["capabilities"]["docker"],
        false
    );
    let (status, body) = cp
        .call(
            Method::GET,
            &format!("/api/hosts/{host}/services?kind=docker"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("Docker engine is not reachable"),
        "{body}"
    );

    // The engine appears: the capability follows, live and in the registry; then it goes.
    let mut live = subscribe_live(&cp, &admin, &["host_capabilities"]).await;
    std::os::unix::net::UnixStream::connect("/var/run/docker.sock")
        .expect("the Docker engine's socket answers");
    std::os::unix::fs::symlink("/var/run/docker.sock", &socket).expect("symlink");
    let appeared = next_live(&mut live, |v| v["host_id"] == host.as_str()).await;
    assert_eq!(appeared["capabilities"]["docker"], true, "{appeared}");
    assert_eq!(cp.host(&admin, &host).await["capabilities"]["docker"], true);
    let (status, _) = cp
        .call(
            Method::GET,
            &format!("/api/hosts/{host}/services?kind=docker"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    std::fs::remove_file(&socket).expect("unlink");
    let gone = next_live(&mut live, |v| v["host_id"] == host.as_str()).await;
    assert_eq!(gone["capabilities"]["docker"], false, "{gone}");
}
