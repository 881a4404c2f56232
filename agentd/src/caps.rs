//! Capability detection: what the host offers, found by reaching each thing, each probe bounded
//! by a timeout so a hung socket never delays the agent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axon_shared::Capabilities;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where each probe looks; tests point these at their own sockets and ports.
#[derive(Debug, Clone)]
pub struct Probes {
    /// D-Bus system bus address; `None` uses `DBUS_SYSTEM_BUS_ADDRESS` or the default.
    pub system_bus: Option<String>,
    /// Docker engine socket.
    pub docker_socket: PathBuf,
    /// Directories searched for `nvidia-smi`.
    pub path: Vec<PathBuf>,
    /// Ollama's address.
    pub ollama: String,
    /// The Stable Diffusion web UI's address.
    pub sdxl: String,
}

impl Default for Probes {
    fn default() -> Self {
        let docker_socket = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        let path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_else(|| vec![PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")]);
        Self {
            system_bus: None,
            docker_socket,
            path,
            ollama: "127.0.0.1:11434".into(),
            sdxl: "127.0.0.1:7860".into(),
        }
    }
}

/// Runs every probe concurrently.
pub async fn detect(probes: &Probes) -> Capabilities {
    let (systemd, docker, nvml, ollama, sdxl) = tokio::join!(
        bounded(systemd(probes.system_bus.clone())),
        bounded(docker(&probes.docker_socket)),
        bounded(nvml()),
        bounded(listening(&probes.ollama)),
        bounded(listening(&probes.sdxl)),
    );
    Capabilities {
        systemd,
        docker,
        nvml,
        nvidia_smi: find_executable(&probes.path, "nvidia-smi").is_some(),
        ollama,
        sdxl,
    }
}

async fn bounded(probe: impl std::future::Future<Output = bool>) -> bool {
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .unwrap_or(false)
}

/// systemd answers `Manager.Version` on the system bus (not a check of /run/systemd/system:
/// that says nothing about whether a manager can be reached).
async fn systemd(address: Option<String>) -> bool {
    let builder = match address {
        Some(addr) => zbus::connection::Builder::address(addr.as_str()),
        None => zbus::connection::Builder::system(),
    };
    let Ok(conn) = builder.build().await else {
        return false;
    };
    let Ok(proxy) = zbus::Proxy::new(
        &conn,
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
    )
    .await
    else {
        return false;
    };
    proxy.get_property::<String>("Version").await.is_ok()
}

/// The Docker engine answers `GET /_ping` with `200 OK` on its socket.
async fn docker(socket: &Path) -> bool {
    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    if stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    match stream.read(&mut buf).await {
        Ok(n) => buf[..n].starts_with(b"HTTP/1.") && buf[..n].windows(5).any(|w| w == b" 200 "),
        Err(_) => false,
    }
}

/// NVML loads (it is dlopened: no library or no driver simply means no GPU).
async fn nvml() -> bool {
    tokio::task::spawn_blocking(|| nvml_wrapper::Nvml::init().is_ok())
        .await
        .unwrap_or(false)
}

async fn listening(addr: &str) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

/// The first executable file named `name` in `dirs`.
pub fn find_executable(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    dirs.iter().map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nothing_here(dir: &Path) -> Probes {
        Probes {
            system_bus: Some(format!("unix:path={}", dir.join("no-bus").display())),
            docker_socket: dir.join("no-docker.sock"),
            path: vec![dir.to_owned()],
            ollama: "127.0.0.1:1".into(),
            sdxl: "127.0.0.1:1".into(),
        }
    }

    #[tokio::test]
    async fn absent_things_are_false_not_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let caps = detect(&nothing_here(dir.path())).await;
        assert!(!caps.systemd && !caps.docker && !caps.nvidia_smi && !caps.ollama && !caps.sdxl);
        // No NVIDIA driver on the machines that run this suite.
        assert!(!caps.nvml);
    }

    #[tokio::test]
    async fn listeners_and_executables_are_found() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let smi = dir.path().join("nvidia-smi");
        std::fs::write(&smi, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let ollama = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut probes = nothing_here(dir.path());
        probes.ollama = ollama.local_addr().expect("addr").to_string();
        let caps = detect(&probes).await;
        assert!(caps.nvidia_smi && caps.ollama && !caps.sdxl);
    }

    #[tokio::test]
    async fn fake_docker_answer_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            for reply in [
                &b"HTTP/1.1 200 OK\r\n\r\nOK"[..],
                &b"HTTP/1.1 500 Internal\r\n\r\n"[..],
            ] {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                s.write_all(reply).await.expect("reply");
            }
        });
        assert!(docker(&path).await);
        assert!(!docker(&path).await);
        server.await.expect("server");
    }
}
