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
