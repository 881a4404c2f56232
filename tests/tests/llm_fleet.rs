//! GPU-aware routing to the fleet: two real agents, each with its own Ollama (a mock on the
//! agent's loopback) and its own GPU (a recorded-format `nvidia-smi` whose figures the test
//! changes). Requests ride the agents' links and land where the routing rules say, and move
//! when a GPU gets busy or a host goes offline.

use std::path::Path;
use std::time::Duration;

use axon_e2e::mock_llm::{Behaviour, MockLlm, OllamaModel};
use axon_e2e::{Agent, ControlPlane, wait_until};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const GIB: u64 = 1 << 30;
const LIMIT: Duration = Duration::from_secs(30);

/// A fake `nvidia-smi` in `dir` reporting one GPU whose utilisation and used memory (MiB)
/// are read from files the test rewrites.
fn fake_smi(dir: &Path, util: u32, used_mib: u64) {
    std::fs::write(dir.join("util"), util.to_string()).expect("util");
    std::fs::write(dir.join("used"), used_mib.to_string()).expect("used");
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in --query-gpu=index,uuid,*) ;; *) exit 9;; esac\n\
         echo \"0, GPU-{id}, Tesla T4, $(cat {d}/util), 3, $(cat {d}/used), 15360, 44, 27.91, 70.00, 1590, 5000, [N/A]\"\n",
        id = dir.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
        d = dir.display()
    );
    let path = dir.join("nvidia-smi");
    std::fs::write(&path, script).expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn set_util(dir: &Path, util: u32) {
    std::fs::write(dir.join("util"), util.to_string()).expect("util");
}

async fn start_agent(cp: &ControlPlane, ollama: &MockLlm, gpu: &Path) -> Agent {
    let mut agent = Agent::enroll(cp).await;
    let path = format!(
        "{}:{}",
        gpu.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    agent.start_with_env(
        &[
            "--metrics-interval",
            "1s",
            "--capabilities-interval",
            "1s",
            "--ollama-address",
            &ollama.addr().to_string(),
        ],
        &[("PATH", &path)],
    );
    agent
}

/// Waits until the host's latest sample says its GPU is at `util` and its Ollama is known.
async fn wait_host(cp: &ControlPlane, admin: &str, host: &str, util: u32) {
    let seen = wait_until(LIMIT, || async {
        let (_, h) = cp
            .call(
                Method::GET,
                &format!("/api/hosts/{host}"),
                Some(admin),
                None,
            )
            .await;
        let (_, m) = cp
            .call(
                Method::GET,
                &format!("/api/hosts/{host}/metrics?since=1m"),
                Some(admin),
                None,
            )
            .await;
        h["online"] == true
            && h["model_servers"]["ollama"].is_object()
            && m["latest"]["gpus"][0]["util_pct"].as_f64() == Some(f64::from(util))
    })
    .await;
    assert!(seen.is_some(), "host {host} never showed GPU at {util}%");
}

/// Stops the agent and waits until the registry shows its host offline.
async fn stop_and_wait_offline(cp: &ControlPlane, admin: &str, agent: &mut Agent) {
    agent.stop();
    let offline = wait_until(LIMIT, || async {
        let (_, h) = cp
            .call(
                Method::GET,
                &format!("/api/hosts/{}", agent.host_id),
                Some(admin),
                None,
            )
            .await;
        h["online"] == false
    })
    .await;
    assert!(
        offline.is_some(),
        "host {} never went offline",
        agent.host_id
    );
}

async fn chat(
    cp: &ControlPlane,
    token: &str,
    model: &str,
    stream: bool,
) -> (StatusCode, String, String) {
    let resp = cp
        .client
        .post(cp.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(&json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": "where am I"}]}))
        .send()
        .await
        .expect("send");
    let status = resp.status();
    let upstream = resp
        .headers()
        .get("x-axon-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, upstream, resp.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_go_to_the_gpu_that_has_the_model_and_move_when_it_cannot() {
    // Host A has llama3.2 loaded; host B has it on disk only, and qwen2.5 loaded.
    let ollama_a = MockLlm::start(Behaviour {
        label: "a".into(),
        ollama_models: vec![OllamaModel::new("llama3.2:latest", 2 * GIB, true)],
        ..Behaviour::default()
    })
    .await;
    let ollama_b = MockLlm::start(Behaviour {
        label: "b".into(),
        ollama_models: vec![
            OllamaModel::new("llama3.2:latest", 2 * GIB, false),
            OllamaModel::new("qwen2.5:7b", 5 * GIB, true),
        ],
        ..Behaviour::default()
    })
    .await;
    let cloud = MockLlm::start(Behaviour {
        label: "cloud".into(),
        ..Behaviour::default()
    })
    .await;
    let work = tempfile::tempdir().expect("dir");
    let (gpu_a, gpu_b) = (work.path().join("gpu-a"), work.path().join("gpu-b"));
    std::fs::create_dir_all(&gpu_a).expect("dir");
    std::fs::create_dir_all(&gpu_b).expect("dir");
    fake_smi(&gpu_a, 20, 4_000);
    fake_smi(&gpu_b, 10, 2_000);
    let config = work.path().join("llm.toml");
    std::fs::write(
        &config,
        format!(
            "[[providers]]\nname = \"cloud\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
             [[aliases]]\nname = \"local\"\ntargets = [{{ model = \"ollama/llama3.2\" }}, {{ model = \"cloud/gpt-4o-mini\" }}]\n\
             [[prices]]\nmodel = \"ollama/*\"\ninput_per_mtok = 0.5\noutput_per_mtok = 1.5\n",
            cloud.base_url()
        ),
    )
    .expect("config");
    let cp = ControlPlane::start(&["--llm-config", config.to_str().expect("utf-8")]).await;
    let admin = cp.admin_token().await;
    let mut a = start_agent(&cp, &ollama_a, &gpu_a).await;
    let mut b = start_agent(&cp, &ollama_b, &gpu_b).await;
    wait_host(&cp, &admin, &a.host_id, 20).await;
    wait_host(&cp, &admin, &b.host_id, 10).await;
    let on_a = format!("ollama@{}", a.host_id);
    let on_b = format!("ollama@{}", b.host_id);

    // The fleet's models are listed.
    let (_, models) = cp.call(Method::GET, "/v1/models", Some(&admin), None).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"ollama/llama3.2:latest") && ids.contains(&"ollama/qwen2.5:7b"),
        "{models}"
    );

    // Loaded with headroom wins over a host that would have to load it (even a less busy one).
    let (status, upstream, text) = chat(&cp, &admin, "ollama/llama3.2", false).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(upstream, on_a);
    let answer: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "a:llama3.2:latest:where am I"
    );
    assert_eq!(
        ollama_a.requests().pop().expect("request").path,
        "/api/chat"
    );
    // A model only B has loaded goes to B.
    let (_, upstream, _) = chat(&cp, &admin, "ollama/qwen2.5:7b", false).await;
    assert_eq!(upstream, on_b);
    // An admin-set direct address replaces the link for that host (here another Ollama, so the
    // answer shows which way it went); clearing it brings the link back.
    let direct = MockLlm::start(Behaviour {
        label: "direct".into(),
        ..Behaviour::default()
    })
    .await;
    let (status, body) = cp
        .call(
            Method::PATCH,
            &format!("/api/hosts/{}", b.host_id),
            Some(&admin),
            Some(json!({"model_urls": {"ollama": direct.base_url()}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, upstream, text) = chat(&cp, &admin, "ollama/qwen2.5:7b", false).await;
    assert_eq!(upstream, on_b);
    assert!(text.contains("direct:qwen2.5:7b"), "{text}");
    let (status, _) = cp
        .call(
            Method::PATCH,
            &format!("/api/hosts/{}", b.host_id),
            Some(&admin),
            Some(json!({"model_urls": {"ollama": "file:///etc/passwd"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = cp
        .call(
            Method::PATCH,
            &format!("/api/hosts/{}", b.host_id),
            Some(&admin),
            Some(json!({"model_urls": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let stale = wait_until(LIMIT, || async {
        chat(&cp, &admin, "ollama/qwen2.5:7b", false)
            .await
            .2
            .contains("b:qwen2.5:7b")
    })
    .await;
    assert!(
        stale.is_some(),
        "the link is used again once the address is cleared"
    );

    // Streams ride the link, translated, and usage names the host.
    let (status, upstream, text) = chat(&cp, &admin, "ollama/llama3.2", true).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(upstream, on_a);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let (_, records) = cp
        .call(
            Method::GET,
            "/api/llm/usage/records?limit=1",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(records[0]["host_id"], a.host_id.as_str(), "{records}");
    assert_eq!(records[0]["outcome"], "ok");

    // The packaged Grafana dashboard reads only series (and labels) this page has: hosts and
    // GPUs reporting, LLM calls made, plain and streamed.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/grafana/axon-dashboard.json"),
        )
        .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let metrics = || cp.metrics(&admin);
    // Disk rates need two samples of a host.
    let rates = wait_until(LIMIT, || async {
        metrics()
            .await
            .contains("axon_host_disk_read_bytes_per_second{")
    })
    .await;
    assert!(rates.is_some(), "no disk rates:\n{}", metrics().await);
    let page = metrics().await;
    let problems = axon_e2e::dashboard::missing(&dashboard, &page);
    assert!(problems.is_empty(), "{problems:#?}\n{page}");

    // A's GPU saturates: B, which has the model on disk and VRAM to spare, takes the request.
    set_util(&gpu_a, 97);
    wait_host(&cp, &admin, &a.host_id, 97).await;
    let (_, upstream, text) = chat(&cp, &admin, "ollama/llama3.2", false).await;
    assert_eq!(upstream, on_b, "{text}");

    // B goes offline: the alias prefers its cloud route to a saturated GPU...
    stop_and_wait_offline(&cp, &admin, &mut b).await;
    let (_, upstream, _) = chat(&cp, &admin, "local", false).await;
    assert_eq!(upstream, "cloud");
    // ...while the model asked by name still gets an answer from the busy host, the last resort.
    let (status, upstream, _) = chat(&cp, &admin, "ollama/llama3.2", false).await;
    assert_eq!((status, upstream.as_str()), (StatusCode::OK, on_a.as_str()));

    // A recovers and is preferred again; then A goes offline too and only the cloud is left.
    set_util(&gpu_a, 5);
    wait_host(&cp, &admin, &a.host_id, 5).await;
    let (_, upstream, _) = chat(&cp, &admin, "local", false).await;
    assert_eq!(upstream, on_a);
    stop_and_wait_offline(&cp, &admin, &mut a).await;
    let (_, upstream, _) = chat(&cp, &admin, "local", false).await;
    assert_eq!(upstream, "cloud");
    let (status, _, text) = chat(&cp, &admin, "ollama/llama3.2", false).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
}
