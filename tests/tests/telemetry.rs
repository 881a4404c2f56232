//! Telemetry end to end: the real agent samples this machine every second; the control plane
//! keeps the series, answers the metrics API and the fleet summary, streams samples live,
//! serves `/metrics` (read here by a real Prometheus text-format parser), tracks model
//! servers (a local server speaking Ollama's and the SD web UI's documented JSON) and keeps
//! GPU faults until they are acknowledged.

use std::time::Duration;

use axon_e2e::*;
use futures_util::SinkExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn meminfo_total() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kib: f64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("MemTotal");
    kib * 1024.0
}

const TAGS: &str = r#"{"models":[{"name":"llama3:8b","model":"llama3:8b","modified_at":"2025-05-04T17:37:44.706015396-07:00","size":4661224676,"digest":"365c0bd3c000a25d28ddbf732fe1c6add414de7275464c4e4d1c3b5fcb5d8ad1","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"8.0B","quantization_level":"Q4_0"}},{"name":"deepseek-r1:14b","model":"deepseek-r1:14b","modified_at":"2025-05-10T08:06:48.639712648-07:00","size":8988112040,"digest":"ea35dfe18182f635ee2b214ea30b7520fe1ada68da018f8b395b444b662d4f1a","details":{"parent_model":"","format":"gguf","family":"qwen2","families":["qwen2"],"parameter_size":"14.8B","quantization_level":"Q4_K_M"}}]}"#;
const PS_LOADED: &str = r#"{"models":[{"name":"llama3:8b","model":"llama3:8b","size":5137025024,"digest":"365c0bd3c000a25d28ddbf732fe1c6add414de7275464c4e4d1c3b5fcb5d8ad1","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"8.0B","quantization_level":"Q4_0"},"expires_at":"2025-06-04T14:38:31.83753-07:00","size_vram":5137025024}]}"#;
const PS_EMPTY: &str = r#"{"models":[]}"#;
const SD_MODELS: &str = r#"[{"title":"sd_xl_base_1.0.safetensors [31e35c80fc]","model_name":"sd_xl_base_1.0","hash":"31e35c80fc","sha256":"31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b","filename":"/models/Stable-diffusion/sd_xl_base_1.0.safetensors","config":null}]"#;

#[tokio::test]
async fn samples_flow_into_the_api_live_stream_history_and_prometheus() {
    let ollama = FakeHttp::start().await;
    ollama.set("/api/tags", TAGS);
    ollama.set("/api/ps", PS_LOADED);
    let sd = FakeHttp::start().await;
    sd.set("/sdapi/v1/sd-models", SD_MODELS);
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let mut live = subscribe_live(&cp, &admin, &["metrics", "host_models"]).await;
    let mut agent = Agent::enroll(&cp).await;
    agent.start(&[
        "--metrics-interval",
        "1s",
        "--capabilities-interval",
        "1s",
        "--ollama-address",
        &ollama.addr.to_string(),
        "--sdxl-address",
        &sd.addr.to_string(),
    ]);
    let host = agent.host_id.clone();

    // Model servers, as their APIs describe them (the first event of a connection may come
    // before discovery has answered).
    let models = next_live(&mut live, |v| {
        v["type"] == "host_models"
            && v["host_id"] == host.as_str()
            && v["model_servers"]["ollama"].is_object()
    })
    .await;
    let found = &models["model_servers"];
    assert_eq!(
        found["ollama"]["models"].as_array().map(Vec::len),
        Some(2),
        "{found}"
    );
    assert_eq!(found["ollama"]["loaded"][0]["name"], "llama3:8b");
    assert_eq!(found["ollama"]["loaded"][0]["vram_bytes"], 5_137_025_024u64);
    assert_eq!(
        found["ollama"]["models"][0]["quantization"], "Q4_K_M",
        "sorted by name"
    );
    assert_eq!(
        found["sdxl"]["models"][0],
        "sd_xl_base_1.0.safetensors [31e35c80fc]"
    );
    let (_, record) = cp
        .call(
            Method::GET,
            &format!("/api/hosts/{host}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        record["model_servers"]["ollama"]["loaded"][0]["name"], "llama3:8b",
        "{record}"
    );
    // The model is unloaded: the host's facts follow.
    ollama.set("/api/ps", PS_EMPTY);
    let unloaded = wait_until(Duration::from_secs(10), || async {
        let (_, record) = cp
            .call(
                Method::GET,
                &format!("/api/hosts/{host}"),
                Some(&admin),
                None,
            )
            .await;
        record["model_servers"]["ollama"]["loaded"] == json!([])
    })
    .await;
    assert!(unloaded.is_some(), "agent log:\n{}", agent.log());

    // Live samples reach staff sockets.
    let sample = next_live(&mut live, |v| {
        v["type"] == "metrics" && v["host_id"] == host.as_str()
    })
    .await;
    assert_eq!(
        sample["sample"]["memory"]["total"].as_f64(),
        Some(meminfo_total()),
        "{sample}"
    );
    assert!(
        sample["sample"]["cpu"]["per_core_pct"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );

    // The series fills up, one point a second.
    wait_until(Duration::from_secs(10), || async {
        let (_, m) = cp
            .call(
                Method::GET,
                &format!("/api/hosts/{host}/metrics?since=5m"),
                Some(&admin),
                None,
            )
            .await;
        m["points"].as_array().is_some_and(|p| p.len() >= 3)
    })
    .await
    .expect("three points");
    let (status, m) = cp
        .call(
            Method::GET,
            &format!("/api/hosts/{host}/metrics?since=5m"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["source"], "live");
    assert_eq!(
        m["latest"]["memory"]["total"].as_f64(),
        Some(meminfo_total())
    );
    let points = m["points"].as_array().expect("points");
    let ts: Vec<u64> = points
        .iter()
        .map(|p| p["ts_ms"].as_u64().expect("ts"))
        .collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "in time order: {ts:?}");
    assert_eq!(points[0]["mem_total_bytes"].as_f64(), Some(meminfo_total()));
    let (status, coarse) = cp
        .call(
            Method::GET,
            &format!("/api/hosts/{host}/metrics?since=10m&step=1m"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        coarse["points"].as_array().is_some_and(|p| p.len() <= 2),
        "{coarse}"
    );
    let (status, history) = cp
        .call(
            Method::GET,
            &format!("/api/hosts/{host}/metrics?since=7d&step=1h"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(history["source"], "history");
    assert_eq!(history["step_secs"], 3600);
    for (query, why) in [
        ("since=30d", "too many points at one a minute"),
        ("step=0", "no zero step"),
        ("since=99999999999999", "in the future"),
        ("since=yesterday", "not a time"),
        ("sinse=1h", "unknown parameter"),
    ] {
        let (status, body) = cp
            .call(
                Method::GET,
                &format!("/api/hosts/{host}/metrics?{query}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {body}");
    }

    // The fleet at a glance.
    let (status, fleet) = cp
        .call(Method::GET, "/api/fleet/summary", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{fleet}");
    assert_eq!(fleet["hosts_total"], 1);
    assert_eq!(fleet["hosts_online"], 1);
    assert_eq!(fleet["hosts_reporting"], 1);
    assert_eq!(fleet["memory_total_bytes"].as_f64(), Some(meminfo_total()));
    assert_eq!(fleet["gpus"], 0, "no GPU on this machine");
    assert_eq!(fleet["gpus_with_free_memory"], json!([]));

    // Prometheus: an API key with the metrics scope, read by a real parser.
    let (status, created) = cp
        .call(
            Method::POST,
            "/api/api-keys",
            Some(&admin),
            Some(json!({"name": "prometheus", "role": "viewer", "scopes": ["metrics:read"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().expect("key").to_owned();
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let resp = client
        .get(cp.url("/metrics"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.expect("body");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("not the text format: {e}\n{text}"));
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(value("axon_agents_connected", None), Some(1.0));
    assert_eq!(
        value("node_memory_MemTotal_bytes", Some(("host", &host))),
        Some(meminfo_total())
    );
    assert_eq!(value("axon_host_up", Some(("host", &host))), Some(1.0));
    assert!(value("node_load1", Some(("host", &host))).is_some());
    assert!(
        value("node_network_receive_bytes_total", Some(("device", "lo"))).is_some_and(|v| v > 0.0)
    );
    assert!(
        value("node_filesystem_size_bytes", Some(("mountpoint", "/"))).is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert!(
        value(
            "axon_http_requests_total",
            Some(("route", "/api/hosts/:id/metrics"))
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "axon_http_request_duration_seconds"
                && matches!(s.value, prometheus_parse::Value::Histogram(_))),
        "{text}"
    );
    assert_eq!(
        scrape.docs.get("node_load1").map(String::as_str),
        Some("1m load average.")
    );

    // /metrics refuses everyone else.
    let (status, _) = cp.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, other) = cp
        .call(
            Method::POST,
            "/api/api-keys",
            Some(&admin),
            Some(json!({"name": "reader", "role": "viewer", "scopes": ["hosts:read"]})),
        )
        .await;
    let (status, _) = cp
        .call(Method::GET, "/metrics", other["key"].as_str(), None)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a key without the metrics scope"
    );
    let tenant = cp.create_tenant(&admin, "acme").await;
    cp.create_user(&admin, "client@acme.test", "client", Some(&tenant))
        .await;
    let client_token = cp.token_for("client@acme.test").await;
    for path in ["/metrics", "/api/fleet/summary"] {
        let (status, _) = cp.call(Method::GET, path, Some(&client_token), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} for a client");
    }
    let (status, _) = cp
        .call(
            Method::GET,
            &format!("/api/hosts/{host}/metrics"),
            Some(&client_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's host");
}

#[tokio::test]
async fn gpu_faults_stay_until_acknowledged() {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let agent = Agent::enroll(&cp).await;
    let host = agent.host_id.clone();
    let (cert, key) = agent.credentials();
    // The agent writes GPU faults into its audit trail; this link plays such an agent.
    let mut link = raw_link(&cp, Some((&cert, &key))).await.expect("link");
    link.send(Message::Text(
        hello_frame("01JDQ3Z6V8K4M2N7P9R1S3T5W7").into(),
    ))
    .await
    .expect("hello");
    let mut live = subscribe_live(&cp, &admin, &["gpu_alert"]).await;
    for (seq, kind, value) in [
        (1u64, "xid", 79u64),
        (2, "ecc_uncorrected", 2),
        (3, "xid", 48),
    ] {
        let event = json!({"ts_ms": 1_764_100_000_000u64 + seq, "gpu_uuid": "GPU-5f2c", "kind": kind, "value": value, "detail": format!("{kind} {value}")});
        let record = json!({
            "seq": seq, "time": "2026-11-25T00:00:00Z", "action": format!("gpu.{kind}"), "outcome": "alert",
            "target": "GPU-5f2c", "detail": event.to_string(), "prev_hash": "", "hash": "",
        });
        let frame = json!({"kind": "event", "v": 1, "topic": "audit", "seq": seq, "body": record});
        link.send(Message::Text(frame.to_string().into()))
            .await
            .expect("event");
    }
    let alert = next_live(&mut live, |v| v["host_id"] == host.as_str()).await;
    assert_eq!(alert["alert"]["event"]["kind"], "xid");
    let alerts_of = |open: bool| {
        let cp = &cp;
        let admin = &admin;
        let path = format!(
            "/api/hosts/{host}/gpu-alerts{}",
            if open { "?open=true" } else { "" }
        );
        async move { cp.call(Method::GET, &path, Some(admin), None).await.1 }
    };
    let mut all = Value::Null;
    for _ in 0..50 {
        all = alerts_of(false).await;
        if all.as_array().is_some_and(|a| a.len() == 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = all.as_array().expect("alerts");
    assert_eq!(
        list.len(),
        3,
        "every fault is kept, not only the latest: {all}"
    );
    assert_eq!(list[0]["event"]["value"], 48, "newest first");
    let id = list[1]["id"].as_str().expect("id").to_owned();
    let (status, acked) = cp
        .call(
            Method::POST,
            &format!("/api/hosts/{host}/gpu-alerts/{id}/ack"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    assert!(acked["acked_at"].is_string());
    let open = alerts_of(true).await;
    assert_eq!(open.as_array().map(Vec::len), Some(2), "{open}");
    let (_, fleet) = cp
        .call(Method::GET, "/api/fleet/summary", Some(&admin), None)
        .await;
    assert_eq!(fleet["gpu_alerts_open"], 2);
    for path in [
        format!("/api/hosts/{host}/gpu-alerts/nope/ack"),
        format!("/api/hosts/{host}/gpu-alerts/{host}-99/ack"),
        "/api/hosts/01NOSUCHHOST0000000000000/gpu-alerts/x-1/ack".to_owned(),
    ] {
        let (status, _) = cp.call(Method::POST, &path, Some(&admin), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    cp.create_user(&admin, "viewer@axon.test", "viewer", None)
        .await;
    let viewer = cp.token_for("viewer@axon.test").await;
    let (status, _) = cp
        .call(
            Method::POST,
            &format!("/api/hosts/{host}/gpu-alerts/{id}/ack"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let outcomes = audit_outcomes(&cp, &admin, "host.gpu_alert.").await;
    assert!(
        outcomes.iter().any(|o| o == "host.gpu_alert.ack ok"),
        "{outcomes:?}"
    );
}
