//! The nvidia-smi fallback against recorded real outputs (fixtures/nvidia-smi/, each with a
//! .txt naming its origin and the exact query): several GPU models, headers with units and
//! none, `[N/A]`, `[Not Supported]`, `[Insufficient Permissions]`, MIG mode and two GPUs.

use agentd::telemetry::gpu::parse_smi_csv;

const MIB: u64 = 1 << 20;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/nvidia-smi/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_fixture_notes_its_origin() {
    let dir = format!("{}/tests/fixtures/nvidia-smi", env!("CARGO_MANIFEST_DIR"));
    let mut csvs = 0;
    for entry in std::fs::read_dir(dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "csv") {
            csvs += 1;
            let note = std::fs::read_to_string(path.with_extension("txt")).expect("origin note");
            assert!(note.contains("origin"), "{}", path.display());
        }
    }
    assert!(csvs >= 7, "{csvs} fixtures");
}

#[test]
fn two_consumer_gpus_with_units_in_a_header() {
    let gpus = parse_smi_csv(&[], &fixture("gtx1080ti-gtx1060-multi-gpu.csv"));
    assert_eq!(gpus.len(), 2);
    assert_eq!(gpus[0].name, "GeForce GTX 1080 Ti");
    assert_eq!(gpus[0].index, 0);
    assert_eq!(gpus[1].index, 1);
    assert_eq!(gpus[0].mem_total_bytes, Some(11175 * MIB));
    assert_eq!(gpus[0].mem_used_bytes, Some(2856 * MIB));
    assert_eq!(gpus[0].util_pct, Some(36.0));
    assert_eq!(gpus[0].fan_pct, Some(29.0));
    assert_eq!(gpus[0].power_w, Some(106.56));
    assert_eq!(gpus[0].mem_clock_mhz, Some(5508));
    assert_eq!(gpus[1].name, "GeForce GTX 1060 6GB");
    assert_eq!(gpus[1].util_pct, Some(0.0));
}

#[test]
fn mig_mode_leaves_utilisation_unknown() {
    let gpus = parse_smi_csv(&[], &fixture("h100-mig-full.csv"));
    assert_eq!(gpus.len(), 1, "one row for the physical GPU");
    let g = &gpus[0];
    assert_eq!(g.name, "NVIDIA H100 80GB HBM3");
    assert_eq!(g.util_pct, None);
    assert_eq!(g.mem_util_pct, None);
    assert_eq!(g.mem_total_bytes, Some(81559 * MIB));
    assert_eq!(g.mem_used_bytes, Some(59 * MIB));
    assert_eq!(g.temperature_c, Some(42.0));
    assert_eq!(g.power_limit_w, Some(700.0));
    assert_eq!(g.sm_clock_mhz, Some(345));
    assert_eq!(g.fan_pct, None);

    let gpus = parse_smi_csv(&[], &fixture("a100-mig-insufficient-permissions.csv"));
    assert_eq!(gpus[0].name, "NVIDIA A100-SXM4-80GB");
    assert_eq!(gpus[0].util_pct, None);
    assert_eq!(gpus[0].mem_total_bytes, None, "[Insufficient Permissions]");
    assert_eq!(gpus[0].temperature_c, Some(47.0));
}

#[test]
fn a_wide_windows_capture_parses_by_header() {
    let gpus = parse_smi_csv(&[], &fixture("rtx2080super-windows-full.csv"));
    let g = &gpus[0];
    assert_eq!(g.name, "NVIDIA GeForce RTX 2080 SUPER");
    assert_eq!(g.uuid, "GPU-df6e7a7c-7314-46f8-abc4-b88b36dcf3aa");
    assert_eq!(g.util_pct, Some(2.0));
    assert_eq!(g.mem_util_pct, Some(10.0));
    assert_eq!(g.mem_total_bytes, Some(8192 * MIB));
    assert_eq!(g.power_w, Some(32.7));
    assert_eq!(g.fan_pct, Some(38.0));
}

#[test]
fn missing_total_memory_is_used_plus_free() {
    let gpus = parse_smi_csv(&[], &fixture("tesla-p100-netdata.csv"));
    let g = &gpus[0];
    assert_eq!(g.name, "Tesla P100-PCIE-16GB");
    assert_eq!(g.mem_used_bytes, Some(0));
    assert_eq!(g.mem_total_bytes, Some(16280 * MIB));
    assert_eq!(g.fan_pct, None, "[N/A]");
    assert_eq!(g.sm_clock_mhz, Some(405));
    assert_eq!(g.power_w, Some(28.16));
}

#[test]
fn no_header_uses_the_query_fields() {
    let fields = [
        "gpu_name",
        "utilization.gpu",
        "utilization.memory",
        "temperature.gpu",
        "power.draw",
        "power.limit",
        "fan.speed",
        "pstate",
        "clocks.current.graphics",
        "clocks.current.memory",
        "power.max_limit",
        "power.default_limit",
    ];
    let gpus = parse_smi_csv(&fields, &fixture("gtx770-not-supported-noheader.csv"));
    let g = &gpus[0];
    assert_eq!(g.name, "GeForce GTX 770");
    assert_eq!(g.util_pct, None, "[Not Supported]");
    assert_eq!(g.power_w, None);
    assert_eq!(g.temperature_c, Some(52.0));
    assert_eq!(g.fan_pct, Some(52.0));

    let fields = [
        "memory.total",
        "memory.free",
        "memory.used",
        "temperature.gpu",
        "fan.speed",
        "utilization.gpu",
        "utilization.memory",
    ];
    let gpus = parse_smi_csv(&fields, &fixture("unknown-2gb-na-noheader-nounits.csv"));
    let g = &gpus[0];
    assert_eq!(g.mem_total_bytes, Some(2004 * MIB));
    assert_eq!(g.mem_used_bytes, Some(0));
    assert_eq!(g.temperature_c, Some(44.0));
    assert_eq!(g.fan_pct, None);
    assert_eq!(g.util_pct, Some(0.0));
}
