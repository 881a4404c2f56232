//! Telemetry: a host sample (with its GPUs) every interval, model-server discovery when it
//! changes, and GPU faults into the audit trail (so they reach the control plane exactly
//! once, even across disconnects, and stay there until acknowledged).

pub mod gpu;
pub mod host;
pub mod models;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axon_shared::{GpuEvent, MetricsSample, ModelServers};
use tokio::sync::{broadcast, mpsc, watch};

use crate::audit::Auditor;

/// How long the GPU probe may take.
const GPU_TIMEOUT: Duration = Duration::from_secs(5);

/// What the telemetry needs to know.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub interval: Duration,
    /// How often model servers are looked for.
    pub discovery_interval: Duration,
    pub top_processes: bool,
    pub ollama: String,
    pub sdxl: String,
    /// Where `nvidia-smi` is looked for.
    pub path: Vec<PathBuf>,
}

/// The running telemetry's outputs.
pub struct Telemetry {
    pub samples: broadcast::Sender<Arc<MetricsSample>>,
    pub models: watch::Sender<ModelServers>,
}

impl Telemetry {
    /// Starts sampling and discovery. Fails only where the host cannot be read at all.
    pub fn spawn(config: TelemetryConfig, audit: Arc<Auditor>) -> Result<Self, String> {
        let mut host = host::HostProbe::new(config.top_processes)?;
        let samples = broadcast::channel(4).0;
        let models = watch::Sender::new(ModelServers::default());
        let gpus = Arc::new(Mutex::new(gpu::GpuProbe::detect(&config.path)));
        tracing::info!(
            source = gpus.lock().map(|g| g.source()).unwrap_or("none"),
            "GPU probe"
        );
        let (gpu_events, mut gpu_rx) = mpsc::channel::<GpuEvent>(64);
        if matches!(
            *gpus.lock().unwrap_or_else(|p| p.into_inner()),
            gpu::GpuProbe::Nvml { .. }
        ) {
            let tx = gpu_events.clone();
            std::thread::spawn(move || gpu::watch_xids(tx));
        }
        tokio::spawn(async move {
            while let Some(event) = gpu_rx.recv().await {
                tracing::warn!(gpu = %event.gpu_uuid, kind = %event.kind, value = event.value, "GPU fault");
                audit
                    .note(
                        &format!("gpu.{}", event.kind),
                        "alert",
                        &event.gpu_uuid,
                        &axon_shared::Requester::default(),
                        &serde_json::to_string(&event).unwrap_or_default(),
                    )
                    .await;
            }
        });
        let tx = samples.clone();
        let interval = config.interval;
        // A host without GPUs skips the probe's thread hop on every sample.
        let has_gpus = !matches!(
            *gpus.lock().unwrap_or_else(|p| p.into_inner()),
            gpu::GpuProbe::None
        );
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let mut sample = host.sample().await;
                if !has_gpus {
                    let _ = tx.send(Arc::new(sample));
                    continue;
                }
                match sample_gpus(&gpus).await {
                    Ok((list, events)) => {
                        sample.gpus = list;
                        for e in events {
                            let _ = gpu_events.send(e).await;
                        }
                    }
                    Err(e) => sample.probe_errors.push(e),
                }
                let _ = tx.send(Arc::new(sample));
            }
        });
        let found = models.clone();
        let discovery = models::Discovery::new(&config.ollama, &config.sdxl)?;
        let config = config.clone();
        tokio::spawn(async move {
            loop {
                let now = discovery.discover().await;
                found.send_if_modified(|old| {
                    let changed = *old != now;
                    *old = now;
                    changed
                });
                tokio::time::sleep(config.discovery_interval).await;
            }
        });
        Ok(Self { samples, models })
    }
}

async fn sample_gpus(
    gpus: &Arc<Mutex<gpu::GpuProbe>>,
) -> Result<(Vec<axon_shared::GpuSample>, Vec<GpuEvent>), String> {
    let gpus = gpus.clone();
    let probe = tokio::task::spawn_blocking(move || {
        let Ok(mut probe) = gpus.try_lock() else {
            return Err("gpus: the previous probe has not returned".to_owned());
        };
        probe.sample()
    });
    match tokio::time::timeout(GPU_TIMEOUT, probe).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("gpus: the probe failed".into()),
        Err(_) => Err(format!("gpus: timed out after {} s", GPU_TIMEOUT.as_secs())),
    }
}
