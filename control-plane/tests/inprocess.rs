//! The control plane as a library: `run` on port-0 listeners in this process, stopped by its
//! shutdown future.

use std::time::Duration;

use axon_control_plane::init::{InitOptions, init};
use axon_control_plane::{Listeners, ServeConfig, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test]
async fn serves_on_port_zero_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    init(InitOptions {
        data_dir: data.clone(),
        admin_email: "admin@example.com".into(),
        admin_password: Some("a long enough password".into()),
        sans: vec!["localhost".into()],
    })
    .expect("init");

    let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
    let agent = TcpListener::bind("127.0.0.1:0").await.expect("bind agent");
    let api_addr = api.local_addr().expect("addr");
    let mut config = ServeConfig::new(data);
    config.insecure_http = true;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(
        config,
        Listeners { api, agent },
        async {
            let _ = stop_rx.await;
        },
        move || {
            let _ = ready_tx.send(());
        },
    ));
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("ready in time")
        .expect("ready called");

    let health = get(api_addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let hosts = get(api_addr, "/api/hosts").await;
    assert!(hosts.starts_with("HTTP/1.1 401"), "{hosts}");
    assert!(hosts.contains(r#""code":"unauthorized""#), "{hosts}");

    stop_tx.send(()).expect("stop");
    let result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stopped in time")
        .expect("task");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn insecure_http_off_loopback_is_refused_before_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = TcpListener::bind("0.0.0.0:0").await.expect("bind api");
    let agent = TcpListener::bind("127.0.0.1:0").await.expect("bind agent");
    let mut config = ServeConfig::new(dir.path().to_owned());
    config.insecure_http = true;
    let result = run(
        config,
        Listeners { api, agent },
        std::future::pending(),
        || {},
    )
    .await;
    let err = result.expect_err("refused");
    assert!(err.to_string().contains("loopback"), "{err}");
}

/// Expired sessions with their refresh tokens, and expired enrollment tokens, are gone once
/// the server is serving: the first cleanup runs before it answers anyone.
#[tokio::test]
async fn expired_sessions_and_tokens_are_removed_before_serving() {
    use axon_control_plane::identity::auth::{issue_refresh, start_session};
    use axon_control_plane::model::{EnrollToken, Store, now};
    use time::Duration as Span;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    init(InitOptions {
        data_dir: data.clone(),
        admin_email: "admin@example.com".into(),
        admin_password: Some("a long enough password".into()),
        sans: vec!["localhost".into()],
    })
    .expect("init");
    let (live, expired) = {
        let store = Store::open(&data.join("db")).expect("store");
        let admin = store
            .user_by_email("admin@example.com")
            .expect("read")
            .expect("admin");
        let live = start_session(&store, &admin, None, Span::days(30)).expect("session");
        let expired = start_session(&store, &admin, None, Span::days(30)).expect("session");
        issue_refresh(&store, &admin.id, &expired.id, Span::days(30)).expect("token");
        store
            .sessions
            .update(&expired.id, |s| s.expires_at = now() - Span::seconds(1))
            .expect("age");
        let old = EnrollToken {
            id: "t1".into(),
            created_by: admin.id.clone(),
            created_at: now() - Span::days(2),
            expires_at: now() - Span::days(1),
            labels: Default::default(),
        };
        store.enroll_tokens.put("expired", &old).expect("token");
        store.db.flush_blocking().expect("flush");
        (live.id, expired.id)
    };

    let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
    let agent = TcpListener::bind("127.0.0.1:0").await.expect("bind agent");
    let mut config = ServeConfig::new(data.clone());
    config.insecure_http = true;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    // Stops as soon as it is ready.
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        run(
            config,
            Listeners { api, agent },
            async {
                let _ = ready_rx.await;
            },
            move || {
                let _ = ready_tx.send(());
            },
        ),
    )
    .await
    .expect("started and stopped in time");
    assert!(result.is_ok(), "{result:?}");

    let store = Store::open(&data.join("db")).expect("store");
    assert!(store.sessions.get(&expired).expect("read").is_none());
    assert!(store.sessions.get(&live).expect("read").is_some());
    assert_eq!(store.refresh_tokens.len(), 0, "the expired session's token");
    assert!(store.enroll_tokens.get("expired").expect("read").is_none());
}
