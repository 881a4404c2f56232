//! The official OpenAI Python SDK (installed into target/ by `scripts/openai-sdk-env`) as the
//! client of the gateway: chat, streams, tools, embeddings, models, an image, and the error
//! classes its retry logic depends on. The checks are in tests/sdk/openai_client.py.

use std::path::{Path, PathBuf};
use std::process::Command;

use axon_e2e::ControlPlane;
use axon_e2e::mock_llm::{Behaviour, Fault, MockLlm};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The venv's python: `AXON_OPENAI_PYTHON`, or where `scripts/openai-sdk-env` installs it.
fn sdk_python() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("AXON_OPENAI_PYTHON") {
        return Some(path.into());
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/openai-sdk-venv/bin/python");
    path.exists().then_some(path)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_sdk_works_against_the_gateway() {
    let Some(python) = sdk_python() else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "the OpenAI SDK is missing: scripts/openai-sdk-env installs it"
        );
        eprintln!(
            "SKIP the_official_openai_sdk_works_against_the_gateway: run scripts/openai-sdk-env"
        );
        return;
    };
    let mock = MockLlm::start(Behaviour::default()).await;
    let cutter = MockLlm::start(Behaviour::fault(Fault::StreamCut { after: 2 })).await;
    let work = tempfile::tempdir().expect("dir");
    let config = work.path().join("llm.toml");
    std::fs::write(
        &config,
        format!(
            "[[providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{base}/v1\"\napi_key = \"sk-upstream\"\nmodels = [\"gpt-4o-mini\"]\n\
             [[providers]]\nname = \"studio\"\nkind = \"sdwebui\"\nbase_url = \"{base}\"\n\
             [[providers]]\nname = \"flaky\"\nkind = \"openai\"\nbase_url = \"{cut}/v1\"\n\
             [[aliases]]\nname = \"smart\"\ntargets = [{{ model = \"openai/gpt-4o-mini\" }}]\n\
             [[aliases]]\nname = \"cut\"\ntargets = [{{ model = \"flaky/gpt-4o-mini\" }}]\n",
            base = mock.base_url(),
            cut = cutter.base_url()
        ),
    )
    .expect("config");
    let cp = ControlPlane::start(&["--llm-config", config.to_str().expect("utf-8")]).await;
    let admin = cp.admin_token().await;
    let tenant = cp.create_tenant(&admin, "acme").await;
    let (key, key_id) = cp
        .create_key(&admin, "client", Some(&tenant), &["llm:invoke"], None)
        .await;
    let (limited, _) = cp
        .create_key(
            &admin,
            "client",
            Some(&tenant),
            &["llm:invoke"],
            Some(json!({"requests_per_minute": 1})),
        )
        .await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/openai_client.py");
    let out = tokio::task::spawn_blocking({
        let server = cp.server();
        let ca = cp.data_dir().join("pki/ca.pem");
        move || {
            Command::new(python)
                .arg(script)
                .env("GATEWAY_URL", server)
                .env("GATEWAY_KEY", key)
                .env("LIMITED_KEY", limited)
                .env("GATEWAY_CA", ca)
                .env("OPENAI_LOG", "")
                .output()
                .expect("run python")
        }
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "the SDK's checks failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    // Usage lands on the key's tenant.
    let (status, usage) = cp
        .call(
            Method::GET,
            &format!("/api/llm/usage?group_by=tenant,key&tenant_id={tenant}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let row = usage["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["key_id"] == key_id.as_str())
        .cloned()
        .unwrap_or_default();
    assert!(row["requests"].as_u64().unwrap_or(0) >= 8, "{usage}");
    assert!(row["prompt_tokens"].as_u64().unwrap_or(0) > 0, "{usage}");
}
