//! The API's authentication and error shape, against the real axon-cp process.

use axon_e2e::*;
use reqwest::Method;
use serde_json::json;

fn flip_char(s: &str, index: usize) -> String {
    let mut bytes = s.as_bytes().to_vec();
    bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ascii")
}

#[tokio::test]
async fn wrong_password_forged_and_missing_tokens_get_401() {
    let cp = ControlPlane::start(&[]).await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": ADMIN_EMAIL, "password": "nope"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(body["error"]["message"].is_string());
    let (status, _) = cp
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": "ghost@axon.test", "password": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let token = cp.admin_token().await;
    let (status, me) = cp.call(Method::GET, "/api/me", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], ADMIN_EMAIL);
    assert_eq!(me["role"], "admin");
    assert!(me.get("password_hash").is_none());

    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    // Tampered signature, tampered payload, "alg":"none", garbage, empty.
    let bad_sig = format!("{}.{}.{}", parts[0], parts[1], flip_char(parts[2], 5));
    let bad_payload = format!("{}.{}.{}", parts[0], flip_char(parts[1], 10), parts[2]);
    let none_header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{}.", parts[1]);
    let hs_header = base64_url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let alg_hs = format!("{hs_header}.{}.{}", parts[1], parts[2]);
    for forged in [
        bad_sig,
        bad_payload,
        alg_none,
        alg_hs,
        "garbage".into(),
        "a.b.c".into(),
    ] {
        let (status, body) = cp.call(Method::GET, "/api/me", Some(&forged), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{forged}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    for path in ["/api/me", "/api/hosts", "/api/hosts/x"] {
        let (status, _) = cp.call(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let cp = ControlPlane::start(&[]).await;
    let login = cp.login().await;
    let first = login["refresh_token"].as_str().expect("refresh").to_owned();
    let (status, rotated) = cp
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": first})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second = rotated["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(first, second);
    let (status, _) = cp
        .call(
            Method::GET,
            "/api/me",
            rotated["access_token"].as_str(),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Replaying the first token is theft: the whole family dies, the second token too.
    let (status, _) = cp
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": first})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = cp
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": second})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_input_gets_json_errors() {
    let cp = ControlPlane::start(&[]).await;
    let token = cp.admin_token().await;
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let raw = |path: &str, body: &'static str| {
        client
            .post(cp.url(path))
            .header("content-type", "application/json")
            .body(body)
    };
    let resp = raw("/api/auth/login", "{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = resp.json().await.expect("json error body");
    assert_eq!(body["error"]["code"], "bad_request");

    let resp = raw(
        "/api/auth/login",
        r#"{"email":"a@b","password":"x","role":"admin"}"#,
    )
    .send()
    .await
    .expect("send");
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "unknown fields are refused"
    );

    // A declared body over the limit is refused before it is read.
    let head = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        2 << 20
    );
    let answer = raw_https(&cp, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"too_large""#), "{answer}");

    let (status, body) = cp
        .call(Method::GET, "/api/no-such-thing", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = cp
        .call(Method::GET, "/api/hosts/does-not-exist", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, ready) = cp.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["status"], "ready");
}

#[tokio::test]
async fn login_is_throttled_after_repeated_failures() {
    let cp = ControlPlane::start(&[]).await;
    let mut last = StatusCode::OK;
    for _ in 0..12 {
        let (status, _) = cp
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(json!({"email": ADMIN_EMAIL, "password": "wrong"})),
            )
            .await;
        last = status;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    // Even the right password waits out the lockout.
    let (status, body) = cp
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
}

/// Parallel wrong passwords: the attempt is counted when it is checked, so of 40 sent at once
/// only the budget (10) reach the password check; the rest are refused with `Retry-After`.
#[tokio::test]
async fn parallel_wrong_passwords_are_checked_only_within_budget() {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let attempts = (0..40).map(|i| {
        let cp = &cp;
        async move {
            let resp = cp
                .client
                .post(cp.url("/api/auth/login"))
                .json(&json!({"email": ADMIN_EMAIL, "password": format!("wrong {i}")}))
                .send()
                .await
                .expect("send");
            let retry_after = resp.headers().get("retry-after").is_some();
            (resp.status(), retry_after)
        }
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let checked = outcomes
        .iter()
        .filter(|(s, _)| *s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(checked, 10, "{outcomes:?}");
    for (status, retry_after) in &outcomes {
        if *status != StatusCode::UNAUTHORIZED {
            assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{outcomes:?}");
            assert!(retry_after, "a refusal says when to come back");
        }
    }
    let logins = audit_outcomes(&cp, &admin, "auth.login").await;
    let denied = logins.iter().filter(|o| *o == "auth.login denied").count();
    assert_eq!(denied, 10, "{logins:?}");
}

/// Malformed and oversized emails are refused before the limiter and before argon2: they use
/// up no budget, so the right password still works after a flood of them.
#[tokio::test]
async fn malformed_emails_are_refused_without_using_the_budget() {
    let cp = ControlPlane::start(&[]).await;
    let huge = format!("{}@example.com", "a".repeat(1 << 19));
    for email in [huge.as_str(), "no-at-sign", "two words@example.com", ""] {
        for _ in 0..6 {
            let (status, body) = cp.try_login(email, "whatever").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(error_says(&body, "email"), "{body}");
        }
    }
    cp.login().await;
}

/// HEAD is checked by the GET rule of its route: public stays public, protected stays
/// protected, and neither is refused as a route without a rule.
#[tokio::test]
async fn head_follows_the_get_rule() {
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let head = |path: &str, token: Option<&str>| {
        let mut req = cp.client.head(cp.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(
        head("/healthz", None).await.expect("head").status(),
        StatusCode::OK
    );
    assert_eq!(
        head("/api/hosts", None).await.expect("head").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        head("/api/hosts", Some(&admin))
            .await
            .expect("head")
            .status(),
        StatusCode::OK
    );
    assert!(!cp.log().contains("has no access rule"), "{}", cp.log());
}

/// Refusals of malformed input speak our words and name the field.
#[tokio::test]
async fn malformed_bodies_are_answered_in_our_words() {
    let cp = ControlPlane::start(&[]).await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": 5, "password": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("field `email`"), "{body}");
    assert!(!message.contains("Failed to deserialize"), "{body}");
    // A struct is not read from an array, field by field.
    let (status, body) = cp
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!([ADMIN_EMAIL, ADMIN_PASSWORD])),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error_says(&body, "must be an object"), "{body}");
    let resp = cp
        .client
        .post(cp.url("/api/auth/login"))
        .body(r#"{"email":"a@b.c","password":"x"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(
        error_says(&body, "Content-Type: application/json"),
        "{body}"
    );
    let admin = cp.admin_token().await;
    let (status, body) = cp
        .call(Method::GET, "/api/audit?limit=many", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_says(&body, "field `limit`"), "{body}");
}

/// Every answer says nosniff and, over TLS, HSTS; answers to credentialed requests are not
/// to be cached; the server's certificate stays within the usual 398 days.
#[tokio::test]
async fn security_headers_and_certificate_lifetime() {
    use rustls_pki_types::pem::PemObject as _;
    let cp = ControlPlane::start(&[]).await;
    let admin = cp.admin_token().await;
    let public = cp.client.get(cp.url("/healthz")).send().await.expect("get");
    assert_eq!(public.headers()["x-content-type-options"], "nosniff");
    assert!(
        public.headers()["strict-transport-security"]
            .to_str()
            .is_ok_and(|v| v.starts_with("max-age="))
    );
    let private = cp
        .client
        .get(cp.url("/api/hosts"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("get");
    assert_eq!(private.headers()["cache-control"], "no-store");
    let pem = std::fs::read_to_string(cp.data_dir().join("pki/server.pem")).expect("chain");
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("leaf");
    let info = axon_shared::CertInfo::from_der(&der).expect("parse");
    assert!(info.not_after - info.not_before <= 398 * 86_400, "{info:?}");
}
