//! NVIDIA GPUs: NVML (dlopened at run time by nvml-wrapper: no library or no driver means "no
//! GPU", not an error), else `nvidia-smi --query-gpu` parsed robustly, else none. XID errors
//! and new ECC errors become [`GpuEvent`]s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use axon_shared::{GpuEvent, GpuProcess, GpuSample};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, TemperatureSensor,
};
use nvml_wrapper::enums::device::UsedGpuMemory;

/// The fields asked of `nvidia-smi`, in order.
pub const SMI_FIELDS: &[&str] = &[
    "index",
    "uuid",
    "name",
    "utilization.gpu",
    "utilization.memory",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
    "power.limit",
    "clocks.sm",
    "clocks.mem",
    "fan.speed",
];
/// How long `nvidia-smi` may take.
const SMI_TIMEOUT: Duration = Duration::from_secs(5);
const MIB: u64 = 1 << 20;

/// Where GPU samples come from on this host.
pub enum GpuProbe {
    Nvml {
        nvml: Box<Nvml>,
        /// ECC counts last seen, by UUID, to report increases.
        ecc: HashMap<String, (u64, u64)>,
    },
    Smi(PathBuf),
    None,
}

impl GpuProbe {
    /// NVML if it loads, else `nvidia-smi` if it is on `path`, else none.
    pub fn detect(path: &[PathBuf]) -> Self {
        match Nvml::init() {
            Ok(nvml) => Self::Nvml {
                nvml: Box::new(nvml),
                ecc: HashMap::new(),
            },
            Err(e) => {
                tracing::debug!(error = %e, "NVML not available");
                match crate::caps::find_executable(path, "nvidia-smi") {
                    Some(smi) => Self::Smi(smi),
                    None => Self::None,
                }
            }
        }
    }

    pub fn source(&self) -> &'static str {
        match self {
            Self::Nvml { .. } => "nvml",
            Self::Smi(_) => "nvidia-smi",
            Self::None => "none",
        }
    }

    /// The GPUs now, and events for new ECC errors. Runs on a blocking thread.
    pub fn sample(&mut self) -> Result<(Vec<GpuSample>, Vec<GpuEvent>), String> {
        match self {
            Self::Nvml { nvml, ecc } => nvml_sample(nvml, ecc),
            Self::Smi(path) => smi_sample(path).map(|g| (g, Vec::new())),
            Self::None => Ok((Vec::new(), Vec::new())),
        }
    }
}

fn nvml_sample(
    nvml: &Nvml,
    ecc: &mut HashMap<String, (u64, u64)>,
) -> Result<(Vec<GpuSample>, Vec<GpuEvent>), String> {
    let count = nvml.device_count().map_err(|e| format!("gpus: {e}"))?;
    let mut gpus = Vec::new();
    let mut events = Vec::new();
    for index in 0..count {
        let Ok(d) = nvml.device_by_index(index) else {
            continue;
        };
        let uuid = d.uuid().unwrap_or_default();
        let util = d.utilization_rates().ok();
        let mem = d.memory_info().ok();
        let processes = d
            .running_compute_processes()
            .unwrap_or_default()
            .into_iter()
            .chain(d.running_graphics_processes().unwrap_or_default())
            .map(|p| GpuProcess {
                pid: p.pid,
                name: std::fs::read_to_string(format!("/proc/{}/comm", p.pid))
                    .map(|n| n.trim().to_owned())
                    .unwrap_or_default(),
                mem_used_bytes: match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b),
                    UsedGpuMemory::Unavailable => None,
                },
            })
            .collect();
        let counts = (
            d.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile),
            d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
        );
        if let (Ok(corrected), Ok(uncorrected)) = counts {
            if let Some((c0, u0)) = ecc.get(&uuid) {
                for (kind, before, now) in [
                    ("ecc_corrected", *c0, corrected),
                    ("ecc_uncorrected", *u0, uncorrected),
                ] {
                    if now > before {
                        events.push(GpuEvent {
                            ts_ms: crate::clock::unix_ms(),
                            gpu_uuid: uuid.clone(),
                            kind: kind.into(),
                            value: now - before,
                            detail: format!("volatile count {now}"),
                        });
                    }
                }
            }
            ecc.insert(uuid.clone(), (corrected, uncorrected));
        }
        gpus.push(GpuSample {
            index,
            name: d.name().unwrap_or_default(),
            uuid,
            util_pct: util.as_ref().map(|u| u.gpu as f32),
            mem_util_pct: util.as_ref().map(|u| u.memory as f32),
            mem_used_bytes: mem.as_ref().map(|m| m.used),
            mem_total_bytes: mem.as_ref().map(|m| m.total),
            temperature_c: d.temperature(TemperatureSensor::Gpu).ok().map(|t| t as f32),
            power_w: d.power_usage().ok().map(|mw| mw as f32 / 1000.0),
            power_limit_w: d.enforced_power_limit().ok().map(|mw| mw as f32 / 1000.0),
            sm_clock_mhz: d.clock_info(Clock::SM).ok(),
            mem_clock_mhz: d.clock_info(Clock::Memory).ok(),
            fan_pct: d.fan_speed(0).ok().map(|f| f as f32),
            // NVML reports KB/s.
            pcie_rx_bps: d
                .pcie_throughput(PcieUtilCounter::Receive)
                .ok()
                .map(|k| f64::from(k) * 1024.0),
            pcie_tx_bps: d
                .pcie_throughput(PcieUtilCounter::Send)
                .ok()
                .map(|k| f64::from(k) * 1024.0),
            source: "nvml".into(),
            processes,
        });
    }
    Ok((gpus, events))
}

/// Follows XID errors on every GPU until NVML fails; runs on a thread of its own.
pub fn watch_xids(tx: tokio::sync::mpsc::Sender<GpuEvent>) {
    use nvml_wrapper::bitmasks::event::EventTypes;
    use nvml_wrapper::enums::event::XidError;
    let Ok(nvml) = Nvml::init() else { return };
    let Ok(mut set) = nvml.create_event_set() else {
        return;
    };
    let count = nvml.device_count().unwrap_or(0);
    for index in 0..count {
        let Ok(device) = nvml.device_by_index(index) else {
            continue;
        };
        set = match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(gpu = index, error = %e.error, "XID events not available");
                return;
            }
        };
    }
    loop {
        match set.wait(5_000) {
            Ok(data) => {
                let xid = match data.event_data {
                    Some(XidError::Value(v)) => v,
                    _ => 0,
                };
                let event = GpuEvent {
                    ts_ms: crate::clock::unix_ms(),
                    gpu_uuid: data.device.uuid().unwrap_or_default(),
                    kind: "xid".into(),
                    value: xid,
                    detail: format!("XID {xid}"),
                };
                if tx.blocking_send(event).is_err() {
                    return;
                }
            }
            Err(nvml_wrapper::error::NvmlError::Timeout) => {
                if tx.is_closed() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "XID watch ended");
                return;
            }
        }
    }
}

fn smi_sample(path: &PathBuf) -> Result<Vec<GpuSample>, String> {
    let mut child = std::process::Command::new(path)
        .arg(format!("--query-gpu={}", SMI_FIELDS.join(",")))
        .arg("--format=csv,noheader,nounits")
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("gpus: {}: {e}", path.display()))?;
    // Read while it runs, so a large answer never blocks it on a full pipe.
    let reader = child.stdout.take().map(|mut stdout| {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut out = String::new();
            let _ = (&mut stdout).take(1 << 20).read_to_string(&mut out);
            out
        })
    });
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < SMI_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "gpus: nvidia-smi did not answer within {} s",
                    SMI_TIMEOUT.as_secs()
                ));
            }
        }
    }
    let out = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    Ok(parse_smi_csv(SMI_FIELDS, &out))
}

/// A value of nvidia-smi's CSV: `None` for `[N/A]`, `[Not Supported]`, `N/A`, `[Unknown Error]`,
/// ...; a unit after the number (`1234 MiB`, `250.00 W`, `45 %`) is ignored.
fn number(text: &str) -> Option<f64> {
    let t = text.trim();
    if t.is_empty() || t.starts_with('[') || t.eq_ignore_ascii_case("n/a") {
        return None;
    }
    t.split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

/// A query field's canonical name (`gpu_name` is `name`, `clocks.sm` is `clocks.current.sm`,
/// ...), as nvidia-smi prints it in a header.
fn canonical(field: &str) -> String {
    let f = field
        .split(" [")
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match f.as_str() {
        "gpu_name" => "name".into(),
        "gpu_uuid" => "uuid".into(),
        "clocks.sm" => "clocks.current.sm".into(),
        "clocks.mem" | "clocks.memory" => "clocks.current.memory".into(),
        "clocks.gr" | "clocks.graphics" => "clocks.current.graphics".into(),
        "temperature.gpu" | "temp.gpu" => "temperature.gpu".into(),
        _ => f,
    }
}

/// Parses `nvidia-smi --query-gpu=<fields> --format=csv[,noheader][,nounits]`. With a header
/// line, its names (units stripped) say which column is which; without, `fields` does. Lines
/// that are not GPUs (blank, too short) are skipped; memory missing one of used / free / total
/// is worked out from the other two.
pub fn parse_smi_csv(fields: &[&str], text: &str) -> Vec<GpuSample> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty()).peekable();
    let header: Option<Vec<String>> = lines.peek().and_then(|first| {
        let names: Vec<String> = first.split(',').map(canonical).collect();
        names
            .iter()
            .any(|n| n == "uuid" || n == "name" || n == "index")
            .then_some(names)
    });
    if header.is_some() {
        lines.next();
    }
    let columns: Vec<String> =
        header.unwrap_or_else(|| fields.iter().map(|f| canonical(f)).collect());
    let col = |name: &str| columns.iter().position(|c| c == name);
    let mut gpus = Vec::new();
    for (n, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() < columns.len() {
            continue;
        }
        let text = |name: &str| {
            col(name)
                .map(|i| cells[i].to_owned())
                .filter(|v| number_or_text(v))
        };
        let num = |name: &str| col(name).and_then(|i| number(cells[i]));
        let mib = |name: &str| num(name).map(|v| (v * MIB as f64) as u64);
        let (used, free, total) = (mib("memory.used"), mib("memory.free"), mib("memory.total"));
        let total = total.or_else(|| Some(used? + free?));
        let used = used.or_else(|| Some(total?.saturating_sub(free?)));
        gpus.push(GpuSample {
            index: num("index").map(|v| v as u32).unwrap_or(n as u32),
            uuid: text("uuid").unwrap_or_default(),
            name: text("name").unwrap_or_default(),
            util_pct: num("utilization.gpu").map(|v| v as f32),
            mem_util_pct: num("utilization.memory").map(|v| v as f32),
            mem_used_bytes: used,
            mem_total_bytes: total,
            temperature_c: num("temperature.gpu").map(|v| v as f32),
            power_w: num("power.draw").map(|v| v as f32),
            power_limit_w: num("power.limit").map(|v| v as f32),
            sm_clock_mhz: num("clocks.current.sm").map(|v| v as u32),
            mem_clock_mhz: num("clocks.current.memory").map(|v| v as u32),
            fan_pct: num("fan.speed").map(|v| v as f32),
            pcie_rx_bps: None,
            pcie_tx_bps: None,
            source: "nvidia-smi".into(),
            processes: Vec::new(),
        });
    }
    gpus
}

fn number_or_text(v: &str) -> bool {
    !v.is_empty() && !v.starts_with('[') && !v.eq_ignore_ascii_case("n/a")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_library_means_no_gpu() {
        // The machines that run this suite have no NVIDIA driver.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut probe = GpuProbe::detect(&[dir.path().to_owned()]);
        assert_eq!(probe.source(), "none");
        let (gpus, events) = probe.sample().expect("no error");
        assert!(gpus.is_empty() && events.is_empty());
    }

    #[test]
    fn smi_values_with_units_and_gaps_parse() {
        let text = "0, GPU-abc, NVIDIA A100-SXM4-40GB, [N/A], [Not Supported], 1024, 40960, 35, 61.50, 400.00, 1410, 1215, [N/A]\n";
        let g = &parse_smi_csv(SMI_FIELDS, text)[0];
        assert_eq!(g.name, "NVIDIA A100-SXM4-40GB");
        assert_eq!(g.util_pct, None);
        assert_eq!(g.mem_util_pct, None);
        assert_eq!(g.mem_used_bytes, Some(1024 * MIB));
        assert_eq!(g.power_w, Some(61.5));
        assert_eq!(g.fan_pct, None);
        assert_eq!(number("250.00 W"), Some(250.0));
        assert_eq!(number("[Unknown Error]"), None);
        assert!(parse_smi_csv(SMI_FIELDS, "garbage\n").is_empty());
    }

    #[test]
    fn a_fake_nvidia_smi_is_run_and_parsed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let smi = dir.path().join("nvidia-smi");
        std::fs::write(
            &smi,
            "#!/bin/sh\ncase \"$1\" in --query-gpu=index,uuid,*) ;; *) exit 9;; esac\necho '0, GPU-1, Tesla T4, 17, 3, 2000, 15360, 44, 27.91, 70.00, 1590, 5000, [N/A]'\n",
        )
        .expect("write");
        std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut probe = GpuProbe::detect(&[dir.path().to_owned()]);
        assert_eq!(probe.source(), "nvidia-smi");
        let (gpus, _) = probe.sample().expect("sample");
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].util_pct, Some(17.0));
        assert_eq!(gpus[0].source, "nvidia-smi");
    }
}
