//! The LLM gateway end to end: the real axon-cp in front of local mock upstreams that speak
//! each provider's wire format (tests/src/mock_llm), over real TLS.

use std::time::{Duration, Instant};

use axon_e2e::failover::{self, Expect, events};
use axon_e2e::mock_llm::{Behaviour, Fault, MockLlm, closed_port};
use axon_e2e::{ControlPlane, wait_until};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A providers file in its own temp dir (kept alive by the returned guard).
fn llm_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("llm.toml");
    std::fs::write(&path, text).expect("write config");
    let path = path.to_str().expect("utf-8").to_owned();
    (dir, path)
}

fn provider(name: &str, kind: &str, base: &str, extra: &str) -> String {
    format!(
        "[[providers]]\nname = \"{name}\"\nkind = \"{kind}\"\nbase_url = \"{base}\"\napi_key = \"key-{name}\"\n{extra}\n"
    )
}

/// Sends a chat request; returns status, headers and the body text.
async fn chat(
    cp: &ControlPlane,
    token: &str,
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let resp = cp
        .client
        .post(cp.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    (status, headers, text)
}

/// The text of a streamed answer.
fn streamed_text(text: &str) -> String {
    failover::answer_text(true, text)
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// The newest usage record the admin can see.
async fn last_usage(cp: &ControlPlane, admin: &str) -> Value {
    let (status, body) = cp
        .call(
            Method::GET,
            "/api/llm/usage/records?limit=1",
            Some(admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body[0].clone()
}

#[tokio::test]
async fn openai_compatible_calls_pass_through_and_are_metered() {
    let mock = MockLlm::start(Behaviour {
        require_key: Some("key-openai".into()),
        ..Behaviour::default()
    })
    .await;
    let (_dir, path) = llm_config(&provider(
        "openai",
        "openai",
        &format!("{}/v1", mock.base_url()),
        "models = [\"gpt-4o-mini\"]",
    ));
    let cp = ControlPlane::start(&["--llm-config", &path]).await;
    let admin = cp.admin_token().await;

    // Whole answer: the model name is edited, everything else passes through.
    let (status, headers, text) = chat(
        &cp,
        &admin,
        json!({"model": "openai/gpt-4o-mini", "messages": user("hello there"),
            "temperature": 0.3, "user": "u-1", "logit_bias": {"50256": -100}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers["x-axon-upstream"], "openai");
    assert!(headers.contains_key("x-axon-overhead-us"));
    let answer: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "mock:gpt-4o-mini:hello there"
    );
    let sent = mock.requests().pop().expect("request").json();
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(sent["user"], "u-1");
    assert_eq!(sent["logit_bias"]["50256"], -100);
    let usage = last_usage(&cp, &admin).await;
    assert_eq!(usage["upstream"], "openai");
    assert_eq!(usage["outcome"], "ok");
    assert_eq!(usage["estimated"], false);
    assert_eq!(
        usage["prompt_tokens"].as_u64(),
        answer["usage"]["prompt_tokens"].as_u64()
    );

    // Stream with the usage chunk asked for.
    let (status, headers, text) = chat(
        &cp,
        &admin,
        json!({"model": "openai/gpt-4o-mini", "messages": user("one two three"), "stream": true,
            "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers["content-type"], "text/event-stream");
    let evs = events(&text);
    assert_eq!(evs.last().map(String::as_str), Some("[DONE]"));
    let usage_chunk: Value = serde_json::from_str(&evs[evs.len() - 2]).expect("usage chunk");
    assert!(usage_chunk["usage"]["total_tokens"].as_u64().unwrap_or(0) > 0);
    assert_eq!(streamed_text(&text), "mock:gpt-4o-mini:one two three");

    // Without include_usage the client gets no usage chunk, but the call is still metered.
    let (_, _, text) = chat(
        &cp,
        &admin,
        json!({"model": "openai/gpt-4o-mini", "messages": user("quiet"), "stream": true}),
    )
    .await;
    assert!(
        !events(&text).iter().any(|e| e.contains("\"usage\":{")),
        "{text}"
    );
    assert_eq!(
        mock.requests().pop().expect("request").json()["stream_options"]["include_usage"],
        true
    );
    let usage = last_usage(&cp, &admin).await;
    assert!(
        usage["completion_tokens"].as_u64().unwrap_or(0) > 0,
        "{usage}"
    );

    // Models: the listed provider model.
    let (status, models) = cp.call(Method::GET, "/v1/models", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        models["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|m| m["id"] == "openai/gpt-4o-mini"),
        "{models}"
    );

    // The provider key never leaves: not in the routing view, not in the log.
    let (_, routes) = cp
        .call(Method::GET, "/api/llm/routes", Some(&admin), None)
        .await;
    assert!(!routes.to_string().contains("key-openai"), "{routes}");
    assert!(!cp.log().contains("key-openai"));
}

#[tokio::test]
async fn errors_are_in_openai_shape_and_keys_need_the_scope() {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some("axk_forged"),
            Some(json!({"model": "x", "messages": user("hi")})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    let (key, _) = cp
        .create_key(&admin, "operator", None, &["hosts:read"], None)
        .await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&key),
            Some(json!({"model": "x", "messages": user("hi")})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("llm:invoke")
    );
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&admin),
            Some(json!({"model": "nowhere/x", "messages": user("hi")})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "model_not_found");
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&admin),
            Some(json!({"model": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "messages");
    let (status, body) = cp
        .call(Method::GET, "/v1/nothing", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["type"], "not_found_error", "{body}");
}

#[tokio::test]
async fn gemini_deepseek_and_ollama_are_translated_both_ways() {
    let mock = MockLlm::start(Behaviour {
        deltas: 4,
        ..Behaviour::default()
    })
    .await;
    let base = mock.base_url();
    let (_dir, path) = llm_config(&format!(
        "{}{}{}",
        provider("gemini", "gemini", &format!("{base}/v1beta"), ""),
        provider("deepseek", "deepseek", &base, ""),
        provider("box", "ollama", &base, ""),
    ));
    let cp = ControlPlane::start(&["--llm-config", &path]).await;
    let admin = cp.admin_token().await;

    // Gemini: CRLF-framed events without [DONE] become OpenAI chunks ending with [DONE].
    let (status, _, text) = chat(
        &cp,
        &admin,
        json!({"model": "gemini/gemini-2.0-flash", "stream": true,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "sky colour"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(streamed_text(&text), "mock:gemini-2.0-flash:sky colour");
    assert_eq!(events(&text).last().map(String::as_str), Some("[DONE]"));
    let sent = mock.requests().pop().expect("request");
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(sent.header("x-goog-api-key"), Some("key-gemini"));
    assert_eq!(
        sent.json()["systemInstruction"]["parts"][0]["text"],
        "Be brief."
    );
    let usage = last_usage(&cp, &admin).await;
    assert_eq!(
        (usage["outcome"].as_str(), usage["estimated"].as_bool()),
        (Some("ok"), Some(false))
    );

    // Gemini tools: a function call comes back as an OpenAI tool call.
    let (status, _, text) = chat(
        &cp,
        &admin,
        json!({"model": "gemini/gemini-2.0-flash", "messages": user("weather in Lima"),
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );

    // DeepSeek: keep-alive comments skipped, reasoning relayed, cache hits counted.
    let (status, _, text) = chat(
        &cp,
        &admin,
        json!({"model": "deepseek/deepseek-reasoner", "messages": user("think"), "stream": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("reasoning_content"), "{text}");
    assert!(
        !text.contains("keep-alive"),
        "comments are not relayed: {text}"
    );
    assert_eq!(streamed_text(&text), "mock:deepseek-reasoner:think");
    assert_eq!(
        mock.requests().pop().expect("request").path,
        "/chat/completions"
    );

    // Ollama: NDJSON in, SSE out; usage from eval counts.
    let (status, _, text) = chat(
        &cp,
        &admin,
        json!({"model": "box/llama3.2", "messages": user("why blue"), "stream": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(streamed_text(&text), "mock:llama3.2:why blue");
    let sent = mock.requests().pop().expect("request");
    assert_eq!(sent.path, "/api/chat");
    assert_eq!(sent.json()["stream"], true);
    let usage = last_usage(&cp, &admin).await;
    assert_eq!(usage["estimated"], false, "{usage}");
    assert!(usage["completion_tokens"].as_u64().unwrap_or(0) > 0);

    // Embeddings through each dialect come back in OpenAI's list shape.
    for model in ["gemini/text-embedding-004", "box/all-minilm"] {
        let (status, body) = cp
            .call(
                Method::POST,
                "/v1/embeddings",
                Some(&admin),
                Some(json!({"model": model, "input": ["a", "b"]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{model}: {body}");
        assert_eq!(body["object"], "list");
        assert_eq!(body["data"].as_array().map(Vec::len), Some(2), "{body}");
        assert!(
            body["data"][1]["embedding"]
                .as_array()
                .is_some_and(|v| !v.is_empty())
        );
    }
    // DeepSeek has no embeddings: a clear 400.
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/embeddings",
            Some(&admin),
            Some(json!({"model": "deepseek/x", "input": "a"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_feature");
}

#[tokio::test]
async fn images_come_from_sd_webui_as_b64_json() {
    let mock = MockLlm::start(Behaviour::default()).await;
    let (_dir, path) = llm_config(&provider("studio", "sdwebui", &mock.base_url(), ""));
    let cp = ControlPlane::start(&["--llm-config", &path]).await;
    let admin = cp.admin_token().await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/images/generations",
            Some(&admin),
            Some(json!({"model": "studio/sd_xl_base_1.0", "prompt": "a fox", "size": "512x512"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["b64_json"].as_str().expect("b64"))
        .expect("base64");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let sent = mock.requests().pop().expect("request");
    assert_eq!(sent.path, "/sdapi/v1/txt2img");
    assert_eq!(sent.json()["width"], 512);
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/images/generations",
            Some(&admin),
            Some(json!({"model": "studio/x", "prompt": "a fox", "response_format": "url"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["param"], "response_format");
}

#[tokio::test]
async fn failover_suite() {
    // The scenarios and their expected client-visible results: tests/src/failover.rs.
    let scenarios = failover::scenarios();
    assert_eq!(scenarios.len(), 16);
    let secondary = MockLlm::start(Behaviour {
        label: "secondary".into(),
        deltas: 4,
        ..Behaviour::default()
    })
    .await;
    let refused = closed_port().await;
    let mut primaries = Vec::new();
    let mut config = provider("sec", "openai", &format!("{}/v1", secondary.base_url()), "");
    let timeouts = "timeouts = { first_byte_ms = 700, idle_ms = 700, total_ms = 20000 }";
    for (i, s) in scenarios.iter().enumerate() {
        let base = match &s.fault {
            Some(fault) => {
                let mock = MockLlm::start(Behaviour {
                    label: "primary".into(),
                    deltas: 4,
                    ..Behaviour::fault(fault.clone())
                })
                .await;
                let base = format!("{}/v1", mock.base_url());
                primaries.push(Some(mock));
                base
            }
            None => {
                primaries.push(None);
                format!("http://{refused}/v1")
            }
        };
        config.push_str(&provider(&format!("p{i}"), "openai", &base, timeouts));
        config.push_str(&format!(
            "[[aliases]]\nname = \"s{i}\"\ntargets = [{{ model = \"p{i}/gpt-4o-mini\" }}, {{ model = \"sec/gpt-4o-mini\" }}]\n"
        ));
    }
    let (_dir, path) = llm_config(&config);
    let cp = ControlPlane::start(&["--llm-config", &path]).await;
    let admin = cp.admin_token().await;
    let mut failures = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        let before = secondary.count();
        let started = Instant::now();
        let (status, headers, text) = chat(
            &cp,
            &admin,
            json!({"model": format!("s{i}"), "messages": user("ping"), "stream": s.stream}),
        )
        .await;
        let took = started.elapsed();
        let upstream = headers
            .get("x-axon-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let seen = failover::Seen {
            status: status.as_u16(),
            body: text.clone(),
            secondary_calls: secondary.count() - before,
            took,
        };
        // Beyond what any client sees: the header names the upstream that answered.
        let header_ok = match s.expect {
            Expect::Secondary => upstream == "sec",
            Expect::Primary | Expect::Cut => upstream == format!("p{i}"),
            Expect::Status(_) => true,
        };
        let ok = failover::passes(s, &seen) && header_ok;
        let usage = last_usage(&cp, &admin).await;
        let usage_ok = match &s.expect {
            Expect::Secondary => {
                usage["upstream"] == "sec"
                    && usage["attempts"].as_u64() == Some(2)
                    && usage["outcome"] == "ok"
            }
            Expect::Primary => usage["upstream"] == format!("p{i}") && usage["outcome"] == "ok",
            Expect::Status(_) => usage["outcome"] == "invalid",
            Expect::Cut => usage["upstream"] == format!("p{i}") && usage["outcome"] == "cut",
        };
        if !(ok && usage_ok) {
            failures.push(format!(
                "{} ({:?}): status {status}, upstream {upstream:?}, {took:?}, usage {usage}\n{text}",
                s.name, s.expect
            ));
        }
    }
    // Specific checks beyond the client-visible result.
    let s1 = primaries[0].as_ref().expect("mock");
    let seen = s1.count();
    let (status, headers, _) = chat(
        &cp,
        &admin,
        json!({"model": "s0", "messages": user("again")}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-axon-upstream"], "sec");
    assert_eq!(
        s1.count(),
        seen,
        "Retry-After is honoured: the primary is skipped"
    );
    let context = cp
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&admin),
            Some(json!({"model": "s12", "messages": user("long")})),
        )
        .await;
    assert_eq!(
        context.1["error"]["code"], "context_length_exceeded",
        "{}",
        context.1
    );
    let (_, filtered, text) = chat(
        &cp,
        &admin,
        json!({"model": "s13", "messages": user("x"), "stream": true}),
    )
    .await;
    assert!(text.contains("content_filter"), "{text}");
    assert_eq!(filtered["x-axon-upstream"], "p13");
    // A flapping primary never costs a client its answer.
    for n in 0..10 {
        let (status, _, text) = chat(
            &cp,
            &admin,
            json!({"model": "s14", "messages": user("flap")}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "call {n}: {text}");
    }
    assert!(
        failures.is_empty(),
        "{} of 16 scenarios failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test]
async fn circuit_opens_after_repeated_failures_and_upstreams_are_reported() {
    let bad = MockLlm::start(Behaviour::fault(Fault::status(500))).await;
    let good = MockLlm::start(Behaviour::default()).await;
    let (_dir, path) = llm_config(&format!(
        "{}{}[[aliases]]\nname = \"fast\"\ntargets = [{{ model = \"bad/m\" }}, {{ model = \"good/m\" }}]\n",
        provider("bad", "openai", &format!("{}/v1", bad.base_url()), ""),
        provider("good", "openai", &format!("{}/v1", good.base_url()), ""),
    ));
    let cp = ControlPlane::start(&["--llm-config", &path]).await;
    let admin = cp.admin_token().await;
    for _ in 0..5 {
        let (status, _, _) =
            chat(&cp, &admin, json!({"model": "fast", "messages": user("x")})).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(bad.count(), 5);
    for _ in 0..3 {
        let (status, headers, _) =
            chat(&cp, &admin, json!({"model": "fast", "messages": user("x")})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-axon-upstream"], "good");
    }
    assert_eq!(
        bad.count(),
        5,
        "an open circuit sends nothing to the upstream"
    );
    let (status, report) = cp
        .call(Method::GET, "/api/llm/upstreams", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let bad_report = report
        .as_array()
        .expect("list")
        .iter()
        .find(|u| u["upstream"] == "bad")
        .expect("bad reported")
        .clone();
    assert_eq!(bad_report["circuit"], "open", "{report}");
    // The only route left open answers the client with the reason and a time to come back.
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&admin),
            Some(json!({"model": "bad/m", "messages": user("x")})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (_, metrics_text) = {
        let resp = cp
            .client
            .get(cp.url("/metrics"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("metrics");
        (resp.status(), resp.text().await.expect("text"))
    };
    assert!(
        metrics_text.contains("axon_llm_upstream_circuit_state{upstream=\"bad\"} 2"),
        "{metrics_text}"
    );
    assert!(metrics_text.contains("axon_llm_overhead_seconds_bucket"));
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_call() {
    let mock = MockLlm::start(Behaviour {
        deltas: 200,
        pace_ms: 50,
        ..Behaviour::default()
    })
    .await;
    let (_dir, path) = llm_config(&provider(
        "openai",
        "openai",
        &format!("{}/v1", mock.base_url()),
        "",
    ));
    let cp = ControlPlane::start(&["--llm-config", &path]).await;
    let admin = cp.admin_token().await;
    let resp = cp
        .client
        .post(cp.url("/v1/chat/completions"))
        .bearer_auth(&admin)
        .json(&json!({"model": "openai/m", "messages": user("long answer please"), "stream": true}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut resp = resp;
    let first = resp.chunk().await.expect("bytes").expect("a first piece");
    assert!(first.starts_with(b"data: "));
    drop(resp);
    assert!(
        mock.wait_aborted_answers(1, Duration::from_secs(10)).await,
        "the upstream saw its request abandoned"
    );
    let recorded = wait_until(Duration::from_secs(10), || async {
        last_usage(&cp, &admin).await["outcome"] == "client_closed"
    })
    .await;
    assert!(recorded.is_some(), "{}", last_usage(&cp, &admin).await);
}

#[tokio::test]
async fn budgets_rate_limits_and_tenant_usage() {
    let mock = MockLlm::start(Behaviour::default()).await;
    let (_dir, path) = llm_config(&format!(
        "{}[[prices]]\nmodel = \"openai/*\"\ninput_per_mtok = 1000.0\noutput_per_mtok = 2000.0\n",
        provider("openai", "openai", &format!("{}/v1", mock.base_url()), "")
    ));
    let cp = ControlPlane::start(&["--llm-config", &path]).await;
    let admin = cp.admin_token().await;
    let acme = cp.create_tenant(&admin, "acme").await;
    let globex = cp.create_tenant(&admin, "globex").await;
    let (acme_key, acme_key_id) = cp
        .create_key(
            &admin,
            "client",
            Some(&acme),
            &["llm:invoke", "llm:usage"],
            Some(json!({"requests_per_minute": 2})),
        )
        .await;
    let (globex_key, _) = cp
        .create_key(
            &admin,
            "client",
            Some(&globex),
            &["llm:invoke", "llm:usage"],
            None,
        )
        .await;
    let ask = |key: String| {
        let cp = &cp;
        async move {
            cp.call(
                Method::POST,
                "/v1/chat/completions",
                Some(&key),
                Some(json!({"model": "openai/m", "messages": user("count these words please")})),
            )
            .await
        }
    };
    // Requests per minute, per key.
    assert_eq!(ask(acme_key.clone()).await.0, StatusCode::OK);
    assert_eq!(ask(acme_key.clone()).await.0, StatusCode::OK);
    let resp = cp
        .client
        .post(cp.url("/v1/chat/completions"))
        .bearer_auth(&acme_key)
        .json(&json!({"model": "openai/m", "messages": user("x")}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(mock.count(), 2, "a refused call never reaches the upstream");
    // Lift the key's limit; give globex a tiny daily cost budget instead.
    let (status, _) = cp
        .call(
            Method::PATCH,
            &format!("/api/api-keys/{acme_key_id}"),
            Some(&admin),
            Some(json!({"llm_limits": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ask(acme_key.clone()).await.0, StatusCode::OK);
    let (status, _) = cp
        .call(
            Method::PATCH,
            &format!("/api/tenants/{globex}"),
            Some(&admin),
            Some(json!({"llm_limits": {"cost_per_day_usd": 0.001}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ask(globex_key.clone()).await.0,
        StatusCode::OK,
        "the first call spends the budget"
    );
    let (status, body) = ask(globex_key.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    // The budget survives a restart (rebuilt from the stored usage).
    let mut cp = cp;
    cp.terminate();
    cp.spawn().await;
    let (status, _) = cp
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&globex_key),
            Some(json!({"model": "openai/m", "messages": user("x")})),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Each client sees its own tenant's usage only, whatever it asks for.
    let (status, mine) = cp
        .call(
            Method::GET,
            &format!("/api/llm/usage?group_by=tenant,key&tenant_id={globex}"),
            Some(&acme_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    let rows = mine["rows"].as_array().expect("rows");
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r["tenant_id"] == acme.as_str()),
        "{mine}"
    );
    assert_eq!(mine["total"]["requests"], 4, "{mine}");
    let (_, records) = cp
        .call(
            Method::GET,
            "/api/llm/usage/records",
            Some(&globex_key),
            None,
        )
        .await;
    assert!(
        records
            .as_array()
            .expect("list")
            .iter()
            .all(|r| r["tenant_id"] == globex.as_str()),
        "{records}"
    );
    // Staff see both, with cost from the price table.
    let admin = cp.admin_token().await;
    let (_, all) = cp
        .call(
            Method::GET,
            "/api/llm/usage?group_by=tenant",
            Some(&admin),
            None,
        )
        .await;
    let tenants: Vec<&str> = all["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["tenant_id"].as_str())
        .collect();
    assert!(
        tenants.contains(&acme.as_str()) && tenants.contains(&globex.as_str()),
        "{all}"
    );
    assert!(
        all["total"]["cost_usd"].as_f64().unwrap_or(0.0) > 0.0,
        "{all}"
    );
}

#[tokio::test]
async fn aliases_are_managed_by_admins_and_take_effect_at_once() {
    let one = MockLlm::start(Behaviour {
        label: "one".into(),
        ..Behaviour::default()
    })
    .await;
    let two = MockLlm::start(Behaviour {
        label: "two".into(),
        ..Behaviour::default()
    })
    .await;
    let (_dir, path) = llm_config(&format!(
        "{}{}",
        provider("one", "openai", &format!("{}/v1", one.base_url()), ""),
        provider("two", "openai", &format!("{}/v1", two.base_url()), ""),
    ));
    let cp = ControlPlane::start(&["--llm-config", &path]).await;
    let admin = cp.admin_token().await;
    // Each change answers the very next call.
    for (routes, word, answer) in [
        (json!({"targets": [{"model": "one/m"}]}), "a", "one:m:a"),
        (
            json!({"strategy": "weighted", "targets": [{"model": "two/m", "weight": 5}]}),
            "b",
            "two:m:b",
        ),
    ] {
        let (status, body) = cp
            .call(
                Method::PUT,
                "/api/llm/routes/smart",
                Some(&admin),
                Some(routes),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, _, text) = chat(
            &cp,
            &admin,
            json!({"model": "smart", "messages": user(word)}),
        )
        .await;
        assert!(text.contains(answer), "{text}");
    }
    let (status, body) = cp
        .call(
            Method::PUT,
            "/api/llm/routes/Bad%2Fname",
            Some(&admin),
            Some(json!({"targets": [{"model": "two/m"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let viewer = cp
        .create_user(&admin, "viewer@axon.test", "viewer", None)
        .await;
    let _ = viewer;
    let viewer_token = cp.token_for("viewer@axon.test").await;
    let (status, _) = cp
        .call(
            Method::PUT,
            "/api/llm/routes/smart",
            Some(&viewer_token),
            Some(json!({"targets": [{"model": "one/m"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Survives a restart.
    let mut cp = cp;
    cp.terminate();
    cp.spawn().await;
    let admin = cp.admin_token().await;
    let (_, routes) = cp
        .call(Method::GET, "/api/llm/routes", Some(&admin), None)
        .await;
    assert_eq!(
        routes["aliases"][0]["targets"][0]["model"], "two/m",
        "{routes}"
    );
    let (status, _) = cp
        .call(Method::DELETE, "/api/llm/routes/smart", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = cp
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&admin),
            Some(json!({"model": "smart", "messages": user("c")})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, audit) = cp
        .call(
            Method::GET,
            "/api/audit?action=llm.route.put",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(audit.as_array().map(Vec::len), Some(2), "{audit}");
}
