//! Telemetry bodies: a host's sample (the `metrics` event), GPU events that stay until
//! acknowledged, and the model servers found on a host.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One sample of a host, taken at the agent's interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsSample {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// Seconds since the previous sample (rates are over this span).
    pub interval_secs: f64,
    pub cpu: CpuSample,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    pub memory: MemorySample,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskSample>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<NetSample>,
    pub uptime_secs: u64,
    pub processes: u64,
    /// Top processes by CPU and by memory (only when the host owner turns it on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<ProcessSample>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub temperatures: Vec<Temperature>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuSample>,
    /// Probes that failed or timed out this time (e.g. `disks: timed out after 2 s`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_errors: Vec<String>,
}

/// CPU use, percent (0–100) of all CPUs and of each.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CpuSample {
    pub total_pct: f32,
    pub per_core_pct: Vec<f32>,
}

/// Memory and swap, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemorySample {
    pub total: u64,
    pub available: u64,
    pub used: u64,
    pub swap_total: u64,
    pub swap_used: u64,
}

/// One mounted file system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSample {
    pub mount: String,
    pub device: String,
    pub fs: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
    /// Bytes read per second over the interval; absent in a probe's first sample, which has
    /// no interval to measure over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bps: Option<f64>,
    /// Bytes written per second over the interval; absent in the first sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bps: Option<f64>,
}

impl DiskSample {
    /// The disks of a sample with each device once (a device mounted at several points is
    /// one disk), in order of first appearance.
    pub fn per_device(disks: &[DiskSample]) -> Vec<&DiskSample> {
        let mut seen = std::collections::BTreeSet::new();
        disks
            .iter()
            .filter(|d| seen.insert(d.device.as_str()))
            .collect()
    }
}

/// One network interface: rates over the interval and totals since boot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetSample {
    pub iface: String,
    pub rx_bps: f64,
    pub tx_bps: f64,
    pub rx_bytes_total: u64,
    pub tx_bytes_total: u64,
    pub rx_errors_total: u64,
    pub tx_errors_total: u64,
}

/// A process among the busiest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessSample {
    pub pid: u32,
    pub name: String,
    pub cpu_pct: f32,
    pub memory_bytes: u64,
}

/// A temperature sensor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Temperature {
    pub label: String,
    pub celsius: f32,
}

/// One GPU; a field the driver does not report is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuSample {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub util_pct: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_util_pct: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_limit_w: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm_clock_mhz: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_clock_mhz: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_pct: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcie_rx_bps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcie_tx_bps: Option<f64>,
    /// `nvml` or `nvidia-smi`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<GpuProcess>,
}

/// A process using a GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuProcess {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_used_bytes: Option<u64>,
}

/// A GPU fault (ECC error count increase, XID): kept by the control plane until acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuEvent {
    pub ts_ms: u64,
    pub gpu_uuid: String,
    /// `xid`, `ecc_corrected` or `ecc_uncorrected`.
    pub kind: String,
    /// The XID code, or the count of new ECC errors.
    pub value: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Model servers found on a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelServers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama: Option<Ollama>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdxl: Option<StableDiffusion>,
}

/// Ollama: models on disk and models loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ollama {
    pub address: String,
    pub models: Vec<OllamaModel>,
    pub loaded: Vec<OllamaLoaded>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OllamaModel {
    pub name: String,
    pub size_bytes: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parameter_size: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub quantization: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OllamaLoaded {
    pub name: String,
    pub size_bytes: u64,
    pub vram_bytes: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expires_at: String,
}

/// Automatic1111 / SDXL web UI: its checkpoints, where its API lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StableDiffusion {
    pub address: String,
    pub models: Vec<String>,
}
