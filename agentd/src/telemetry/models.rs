//! Model servers on the host: Ollama (`/api/tags`: models on disk; `/api/ps`: models loaded,
//! with their VRAM) and the Automatic1111 / SDXL web UI (`/sdapi/v1/sd-models`). Each call is
//! bounded in time and size; a server that is not there is simply absent.

use std::time::Duration;

use axon_shared::{ModelServers, Ollama, OllamaLoaded, OllamaModel, StableDiffusion};
use serde::Deserialize;

const TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BODY: usize = 1 << 20;

#[derive(Deserialize)]
struct Tags {
    #[serde(default)]
    models: Vec<TagModel>,
}

#[derive(Deserialize)]
struct TagModel {
    name: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    details: Details,
}

#[derive(Deserialize, Default)]
struct Details {
    #[serde(default)]
    parameter_size: String,
    #[serde(default)]
    quantization_level: String,
}

#[derive(Deserialize)]
struct Ps {
    #[serde(default)]
    models: Vec<PsModel>,
}

#[derive(Deserialize)]
struct PsModel {
    name: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    size_vram: u64,
    #[serde(default)]
    expires_at: String,
}

#[derive(Deserialize)]
struct SdModel {
    #[serde(default)]
    title: String,
    #[serde(default)]
    model_name: String,
}

/// Finds the model servers at these addresses (`host:port`).
pub struct Discovery {
    client: reqwest::Client,
    ollama: String,
    sdxl: String,
}

impl Discovery {
    /// Fails only when the HTTP client cannot be built; a client without the time limits
    /// would let a stuck model server hang discovery.
    pub fn new(ollama: &str, sdxl: &str) -> Result<Self, String> {
        // The servers are on loopback, over plain HTTP: a redirect elsewhere is not followed,
        // and no CA store is loaded.
        let client = reqwest::Client::builder()
            .tls_certs_only([])
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the model-server client: {e}"))?;
        Ok(Self {
            client,
            ollama: ollama.to_owned(),
            sdxl: sdxl.to_owned(),
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: &str) -> Option<T> {
        let mut resp = self.client.get(url).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return None;
            }
        }
        serde_json::from_slice(&body).ok()
    }

    async fn listens(addr: &str) -> bool {
        tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .is_ok_and(|c| c.is_ok())
    }

    /// What answers now.
    pub async fn discover(&self) -> ModelServers {
        let (ollama, sdxl) = tokio::join!(self.ollama(), self.sdxl());
        ModelServers { ollama, sdxl }
    }

    async fn ollama(&self) -> Option<Ollama> {
        let base = format!("http://{}", self.ollama);
        let tags: Tags = self.get(&format!("{base}/api/tags")).await?;
        let ps: Option<Ps> = self.get(&format!("{base}/api/ps")).await;
        let mut models: Vec<OllamaModel> = tags
            .models
            .into_iter()
            .take(1000)
            .map(|m| OllamaModel {
                name: m.name,
                size_bytes: m.size,
                parameter_size: m.details.parameter_size,
                quantization: m.details.quantization_level,
            })
            .collect();
        models.sort_by(|a, b| a.name.cmp(&b.name));
        let mut loaded: Vec<OllamaLoaded> = ps
            .map(|p| p.models)
            .unwrap_or_default()
            .into_iter()
            .take(1000)
            .map(|m| OllamaLoaded {
                name: m.name,
                size_bytes: m.size,
                vram_bytes: m.size_vram,
                expires_at: m.expires_at,
            })
            .collect();
        loaded.sort_by(|a, b| a.name.cmp(&b.name));
        Some(Ollama {
            address: self.ollama.clone(),
            models,
            loaded,
        })
    }

    async fn sdxl(&self) -> Option<StableDiffusion> {
        if !Self::listens(&self.sdxl).await {
            return None;
        }
        // The web UI answers its model list only when started with --api; it is there anyway.
        let listed: Option<Vec<SdModel>> = self
            .get(&format!("http://{}/sdapi/v1/sd-models", self.sdxl))
            .await;
        let mut models: Vec<String> = listed
            .unwrap_or_default()
            .into_iter()
            .take(1000)
            .map(|m| {
                if m.title.is_empty() {
                    m.model_name
                } else {
                    m.title
                }
            })
            .collect();
        models.sort();
        Some(StableDiffusion {
            address: self.sdxl.clone(),
            models,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers every request on a fresh loopback port with `response`.
    async fn serve(response: String) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 2048];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(response.as_bytes()).await;
            }
        });
        addr
    }

    /// A model server that redirects elsewhere is not followed there.
    #[tokio::test]
    async fn redirects_are_not_followed() {
        let body = r#"{"models":[{"name":"llama3:8b","size":1,"details":{}}]}"#;
        let real = serve(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
        .await;
        let direct = Discovery::new(&real, "127.0.0.1:1").expect("client");
        assert!(
            direct.discover().await.ollama.is_some(),
            "the server itself answers"
        );
        let redirect = serve(format!(
            "HTTP/1.1 302 Found\r\nLocation: http://{real}/api/tags\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ))
        .await;
        let discovery = Discovery::new(&redirect, "127.0.0.1:1").expect("client");
        assert!(discovery.discover().await.ollama.is_none());
    }
}
