//! A writer of changes through the API that records what was acknowledged, and the check that
//! every acknowledged change is still there (crash and backup tests).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{ControlPlane, USER_PASSWORD};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tenant,
    User,
    Key,
    Order,
    Webhook,
}

/// A change the control plane acknowledged with 2xx, and a field it must still hold.
#[derive(Debug, Clone)]
pub struct Acked {
    pub kind: Kind,
    pub id: String,
    pub field: &'static str,
    pub value: String,
}

pub const KINDS: [Kind; 5] = [
    Kind::Tenant,
    Kind::User,
    Kind::Key,
    Kind::Order,
    Kind::Webhook,
];

/// One change of `kind`, numbered `n`: its path, body and the field checked afterwards.
fn change(kind: Kind, n: u64, tenant: &str) -> (&'static str, Value, &'static str, String) {
    match kind {
        Kind::Tenant => {
            let slug = format!("crash-{n}");
            (
                "/api/tenants",
                json!({"slug": slug, "name": format!("Crash {n}")}),
                "slug",
                slug,
            )
        }
        Kind::User => {
            let email = format!("crash-{n}@example.test");
            (
                "/api/users",
                json!({"email": email, "name": "crash", "password": USER_PASSWORD,
                    "role": "viewer"}),
                "email",
                email,
            )
        }
        Kind::Key => {
            let name = format!("crash key {n}");
            (
                "/api/api-keys",
                json!({"name": name, "role": "viewer", "scopes": ["hosts:read"]}),
                "name",
                name,
            )
        }
        Kind::Order => {
            let title = format!("crash order {n}");
            (
                "/api/orders",
                json!({"tenant_id": tenant, "product_type": "custom_agent", "title": title,
                    "brief": "kept through kill -9"}),
                "title",
                title,
            )
        }
        Kind::Webhook => {
            let url = format!("http://127.0.0.1:9/crash/{n}");
            (
                "/api/webhooks",
                json!({"url": url, "events": ["deploy.finished"]}),
                "url",
                url,
            )
        }
    }
}

/// Writes changes until told to stop; every 2xx is recorded. Failures (the server is down or
/// was killed mid-request) are not acknowledged and so not expected.
pub async fn writer(
    client: reqwest::Client,
    base: String,
    token: String,
    tenant: String,
    first: u64,
    acked: Arc<Mutex<Vec<Acked>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut n = first;
    // Paced: the point is a kill in the middle of writes, not a store grown past what the
    // checks after each round can read back quickly.
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    while !*stop.borrow() {
        pace.tick().await;
        n += 1;
        // Webhooks are bounded in number (and each event is matched against all of them), so
        // fewer of those.
        let kind = match KINDS[(n % KINDS.len() as u64) as usize] {
            Kind::Webhook if n % 20 != 4 => Kind::Tenant,
            kind => kind,
        };
        let (path, body, field, value) = change(kind, n, &tenant);
        let sent = client
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await;
        let Ok(response) = sent else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let status = response.status();
        let Ok(answer) = response.json::<Value>().await else {
            continue;
        };
        if status.is_success() {
            let id = answer["id"]
                .as_str()
                .expect("an acknowledged change has an id");
            acked.lock().expect("acked").push(Acked {
                kind,
                id: id.to_owned(),
                field,
                value,
            });
        } else {
            // 503 while starting is fine; anything else is a fault of the test's requests.
            assert!(
                status == StatusCode::SERVICE_UNAVAILABLE,
                "{path}: {status} {answer}"
            );
        }
    }
}

/// Every acknowledged change is there, holding what was sent.
pub async fn check_all(cp: &ControlPlane, admin: &str, acked: &[Acked]) {
    let (status, keys) = cp
        .call(Method::GET, "/api/api-keys", Some(admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let keys = keys.as_array().expect("keys").clone();
    for record in acked {
        let found = match record.kind {
            Kind::Key => keys.iter().find(|k| k["id"] == record.id.as_str()).cloned(),
            kind => {
                let path = match kind {
                    Kind::Tenant => "/api/tenants",
                    Kind::User => "/api/users",
                    Kind::Order => "/api/orders",
                    _ => "/api/webhooks",
                };
                let (status, body) = cp
                    .call(
                        Method::GET,
                        &format!("{path}/{}", record.id),
                        Some(admin),
                        None,
                    )
                    .await;
                (status == StatusCode::OK).then_some(body)
            }
        };
        let found = found.unwrap_or_else(|| panic!("acknowledged but lost: {record:?}"));
        assert_eq!(
            found[record.field].as_str(),
            Some(record.value.as_str()),
            "changed after acknowledgement: {record:?} now {found}"
        );
    }
}

/// Starts `n` writers (each numbering its changes from its own block) until `stop` says so.
pub fn spawn_writers(
    cp: &ControlPlane,
    token: &str,
    tenant: &str,
    n: u64,
    acked: &Arc<Mutex<Vec<Acked>>>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|w| {
            tokio::spawn(writer(
                cp.client.clone(),
                cp.server(),
                token.to_owned(),
                tenant.to_owned(),
                w * 1_000_000,
                acked.clone(),
                stop.clone(),
            ))
        })
        .collect()
}
