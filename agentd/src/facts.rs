//! Host facts for the hello, read once at start through sysinfo.

use axon_shared::HostFacts;
use sysinfo::{CpuRefreshKind, System};

/// Gathers the facts the hello carries. Missing values are empty or zero, never an error.
pub fn collect() -> HostFacts {
    let mut cpus = 0;
    let mut memory = 0;
    if let Ok(mut sys) = System::new() {
        sys.refresh_cpu_list(CpuRefreshKind::nothing());
        sys.refresh_memory();
        cpus = u32::try_from(sys.cpus().len()).unwrap_or(u32::MAX);
        memory = sys.total_memory();
    }
    if cpus == 0 {
        cpus = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(0);
    }
    HostFacts {
        hostname: System::host_name().unwrap_or_default(),
        os: System::name().unwrap_or_default(),
        os_version: System::os_version().unwrap_or_default(),
        kernel: System::kernel_version().unwrap_or_default(),
        arch: System::cpu_arch(),
        cpus,
        memory_bytes: memory,
        boot_time: System::boot_time().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The facts agree with what /proc says on this machine.
    #[test]
    fn facts_match_proc() {
        let facts = collect();
        let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
        let total_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("MemTotal");
        assert_eq!(facts.memory_bytes, total_kib * 1024);
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
        assert_eq!(facts.hostname, hostname.trim());
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
        assert!(
            facts.kernel.contains(release.trim()),
            "{} vs {release}",
            facts.kernel
        );
        assert_eq!(facts.arch, std::env::consts::ARCH);
        let online = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        assert!(facts.cpus as usize >= online);
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .expect("uptime")
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .expect("uptime value");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!((now - uptime - facts.boot_time as f64).abs() < 5.0);
    }
}
