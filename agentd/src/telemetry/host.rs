//! The host probe (sysinfo): CPU, load, memory, disks, network, uptime, processes, top
//! processes (opt-in) and temperatures. Disks are read on a thread of their own with a
//! deadline: a hung mount (a dead NFS server) makes the disks of that sample missing, with
//! the reason in `probe_errors`, and never holds up the rest.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axon_shared::{
    CpuSample, DiskSample, MemorySample, MetricsSample, NetSample, ProcessSample, Temperature,
};
use sysinfo::{Components, Disks, Networks, ProcessesToUpdate, System};

/// How long the disk probe may take.
pub const DISK_TIMEOUT: Duration = Duration::from_secs(2);
/// Processes listed in `top` by CPU and by memory, each.
const TOP: usize = 5;

/// Reads one sample at a time; rates are over the time since the previous one.
pub struct HostProbe {
    system: System,
    networks: Networks,
    disks: Arc<Mutex<Disks>>,
    components: Components,
    top_processes: bool,
    last: Instant,
    /// Whether the disks were read once: rates need a previous reading.
    disks_read: Arc<std::sync::atomic::AtomicBool>,
}

fn file_systems_to_skip(fs: &str) -> bool {
    matches!(
        fs,
        "tmpfs" | "devtmpfs" | "overlay" | "squashfs" | "ramfs" | "nsfs" | "autofs"
    )
}

impl HostProbe {
    /// Fails only where sysinfo cannot read the system at all (no /proc).
    pub fn new(top_processes: bool) -> Result<Self, String> {
        let err = |what: &str, e: sysinfo::Error| format!("{what}: {e}");
        let mut system = System::new().map_err(|e| err("system", e))?;
        system.refresh_cpu_usage();
        system.refresh_memory();
        Ok(Self {
            system,
            networks: Networks::new_with_refreshed_list().map_err(|e| err("networks", e))?,
            disks: Arc::new(Mutex::new(Disks::new().map_err(|e| err("disks", e))?)),
            components: Components::new_with_refreshed_list().map_err(|e| err("sensors", e))?,
            top_processes,
            last: Instant::now(),
            disks_read: Arc::default(),
        })
    }

    /// Takes a sample.
    pub async fn sample(&mut self) -> MetricsSample {
        let elapsed = self.last.elapsed().as_secs_f64().max(0.001);
        self.last = Instant::now();
        let mut errors = Vec::new();
        let disks = match self.disks(elapsed).await {
            Ok(d) => d,
            Err(e) => {
                errors.push(e);
                Vec::new()
            }
        };
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.networks.refresh(true);
        self.components.refresh(true);
        let load = System::load_average()
            .map(|l| [l.one, l.five, l.fifteen])
            .unwrap_or_default();
        let mut net: Vec<NetSample> = self
            .networks
            .iter()
            .map(|(name, data)| NetSample {
                iface: name.to_string_lossy().into_owned(),
                rx_bps: data.received() as f64 / elapsed,
                tx_bps: data.transmitted() as f64 / elapsed,
                rx_bytes_total: data.total_received(),
                tx_bytes_total: data.total_transmitted(),
                rx_errors_total: data.total_errors_on_received(),
                tx_errors_total: data.total_errors_on_transmitted(),
            })
            .collect();
        net.sort_by(|a, b| a.iface.cmp(&b.iface));
        let temperatures = self
            .components
            .iter()
            .filter_map(|c| {
                Some(Temperature {
                    label: c.label().to_owned(),
                    celsius: c.temperature().filter(|t| t.is_finite())?,
                })
            })
            .collect();
        let top = if self.top_processes {
            self.top()
        } else {
            Vec::new()
        };
        MetricsSample {
            ts_ms: crate::clock::unix_ms(),
            interval_secs: (elapsed * 1000.0).round() / 1000.0,
            cpu: CpuSample {
                total_pct: self.system.global_cpu_usage(),
                per_core_pct: self.system.cpus().iter().map(|c| c.usage()).collect(),
            },
            load,
            memory: MemorySample {
                total: self.system.total_memory(),
                available: self.system.available_memory(),
                used: self.system.used_memory(),
                swap_total: self.system.total_swap(),
                swap_used: self.system.used_swap(),
            },
            disks,
            net,
            uptime_secs: System::uptime().unwrap_or(0),
            processes: process_count(),
            top,
            temperatures,
            gpus: Vec::new(),
            probe_errors: errors,
        }
    }

    async fn disks(&self, elapsed: f64) -> Result<Vec<DiskSample>, String> {
        let disks = self.disks.clone();
        let read_before = self.disks_read.clone();
        let probe = tokio::task::spawn_blocking(move || {
            // A probe still stuck on a hung mount holds the lock: do not pile up behind it.
            let Ok(mut disks) = disks.try_lock() else {
                return Err("disks: the previous probe has not returned (a hung mount?)".to_owned());
            };
            disks.refresh(true);
            // The first reading's counts run from boot, not from a previous sample.
            let has_rates = read_before.swap(true, std::sync::atomic::Ordering::SeqCst);
            let mut out: Vec<DiskSample> = disks
                .iter()
                .filter(|d| !file_systems_to_skip(&d.file_system().to_string_lossy()))
                .map(|d| {
                    let usage = d.usage();
                    DiskSample {
                        mount: d.mount_point().to_string_lossy().into_owned(),
                        device: d.name().to_string_lossy().into_owned(),
                        fs: d.file_system().to_string_lossy().into_owned(),
                        total_bytes: d.total_space(),
                        available_bytes: d.available_space(),
                        read_bps: has_rates.then(|| usage.read_bytes as f64 / elapsed),
                        write_bps: has_rates.then(|| usage.written_bytes as f64 / elapsed),
                    }
                })
                .collect();
            out.sort_by(|a, b| a.mount.cmp(&b.mount));
            Ok(out)
        });
        match tokio::time::timeout(DISK_TIMEOUT, probe).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("disks: the probe failed".into()),
            Err(_) => Err(format!(
                "disks: timed out after {} s (a hung mount?)",
                DISK_TIMEOUT.as_secs()
            )),
        }
    }

    fn top(&mut self) -> Vec<ProcessSample> {
        self.system.refresh_processes(ProcessesToUpdate::All, true);
        let all: Vec<ProcessSample> = self
            .system
            .processes()
            .values()
            .map(|p| ProcessSample {
                pid: p.pid().as_u32(),
                name: p.name().to_string_lossy().chars().take(64).collect(),
                cpu_pct: p.cpu_usage(),
                memory_bytes: p.memory(),
            })
            .collect();
        let mut by_cpu = all.clone();
        by_cpu.sort_by(|a, b| b.cpu_pct.total_cmp(&a.cpu_pct));
        let mut by_mem = all;
        by_mem.sort_by_key(|p| std::cmp::Reverse(p.memory_bytes));
        let mut top: Vec<ProcessSample> = by_cpu.into_iter().take(TOP).collect();
        for p in by_mem.into_iter().take(TOP) {
            if !top.iter().any(|t| t.pid == p.pid) {
                top.push(p);
            }
        }
        top
    }
}

/// Processes on the host: the numeric entries of /proc.
fn process_count() -> u64 {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count() as u64
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first reading's counters run from boot: its rates are left out, the next has them.
    #[tokio::test]
    async fn disk_rates_start_with_the_second_sample() {
        let mut probe = HostProbe::new(false).expect("probe");
        let first = probe.sample().await;
        assert!(!first.disks.is_empty(), "{:?}", first.probe_errors);
        assert!(
            first
                .disks
                .iter()
                .all(|d| d.read_bps.is_none() && d.write_bps.is_none())
        );
        let second = probe.sample().await;
        assert!(
            second
                .disks
                .iter()
                .all(|d| d.read_bps.is_some() && d.write_bps.is_some())
        );
    }

    fn meminfo(key: &str) -> u64 {
        let text = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .expect("key");
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("value");
        kib * 1024
    }

    #[tokio::test]
    async fn host_values_agree_with_proc() {
        let mut probe = HostProbe::new(true).expect("probe");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = probe.sample().await;
        assert_eq!(s.memory.total, meminfo("MemTotal"));
        assert_eq!(s.memory.swap_total, meminfo("SwapTotal"));
        let available = meminfo("MemAvailable");
        assert!(
            s.memory.available.abs_diff(available) < 64 << 20,
            "{} vs {available}",
            s.memory.available
        );
        let cpus = std::fs::read_to_string("/proc/stat")
            .expect("stat")
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        assert_eq!(s.cpu.per_core_pct.len(), cpus);
        assert!(
            (0.0..=100.0).contains(&s.cpu.total_pct),
            "{}",
            s.cpu.total_pct
        );
        let loadavg = std::fs::read_to_string("/proc/loadavg").expect("loadavg");
        let load1: f64 = loadavg
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .expect("load1");
        assert!((s.load[0] - load1).abs() < 1.0, "{} vs {load1}", s.load[0]);
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .expect("uptime")
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .expect("uptime");
        assert!((s.uptime_secs as f64 - uptime).abs() < 5.0);
        assert!(s.processes > 1);
        // The root file system is there, with a size.
        assert!(
            s.disks.iter().any(|d| d.mount == "/" && d.total_bytes > 0),
            "{:?}",
            s.disks
        );
        // Loopback's counters are those of /proc/net/dev.
        let dev = std::fs::read_to_string("/proc/net/dev").expect("net/dev");
        let lo_rx: u64 = dev
            .lines()
            .find_map(|l| l.trim().strip_prefix("lo:"))
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .expect("lo");
        let lo = s.net.iter().find(|n| n.iface == "lo").expect("lo sampled");
        assert!(lo.rx_bytes_total <= lo_rx && lo_rx - lo.rx_bytes_total < 16 << 20);
        assert!(!s.top.is_empty());
        assert!(s.probe_errors.is_empty(), "{:?}", s.probe_errors);
    }

    #[tokio::test]
    async fn a_hung_disk_probe_is_reported_not_waited_for() {
        let probe = HostProbe::new(false).expect("probe");
        // Hold the disks as a probe stuck on a dead mount would.
        let held = probe.disks.clone();
        let guard = std::thread::spawn(move || {
            let _lock = held.lock().expect("lock");
            std::thread::sleep(Duration::from_millis(500));
        });
        std::thread::sleep(Duration::from_millis(50));
        let mut probe = probe;
        let started = Instant::now();
        let s = probe.sample().await;
        assert!(started.elapsed() < DISK_TIMEOUT);
        assert!(s.disks.is_empty());
        assert!(
            s.probe_errors.iter().any(|e| e.starts_with("disks:")),
            "{:?}",
            s.probe_errors
        );
        assert!(s.memory.total > 0, "the rest of the sample is there");
        guard.join().expect("join");
    }
}
