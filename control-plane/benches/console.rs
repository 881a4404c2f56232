//! Server render of the console's fleet table with 1,000 hosts (goal: under 20 ms on the
//! 2-core machine). Run: `cargo bench -p axon-control-plane --bench console`; HOSTS=N
//! overrides the count.

#![allow(clippy::print_stdout)] // a bench binary prints its table

use std::time::Instant;

use axon_control_plane::console::fleet::{FleetQuery, HostRow, table};
use axon_control_plane::console::i18n::Lang;

fn main() {
    let hosts: usize = std::env::var("HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rows: Vec<HostRow> = (0..hosts)
        .map(|i| HostRow {
            id: format!("01JHOST{i:019}"),
            hostname: format!("gpu-box-{i:04}.fleet.example"),
            online: i % 10 != 0,
            cpu_pct: Some((i % 100) as f32),
            mem_pct: Some(((i * 7) % 100) as f32),
            gpus: i % 3,
            gpu_util_max: Some(((i * 13) % 100) as f32),
            gpu_temp_max: Some(40.0 + (i % 50) as f32),
            open_alerts: i % 7 / 6,
        })
        .collect();
    println!("| fleet page render | hosts | rows shown | p50 | p99 | HTML |");
    println!("|---|---|---|---|---|---|");
    for per_page in [None, Some(1000)] {
        let query = FleetQuery {
            per_page,
            ..Default::default()
        };
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..220 {
            let start = Instant::now();
            let html = table(Lang::Es, &rows, &query).into_string();
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            bytes = html.len();
        }
        // The first runs warm the allocator and caches.
        let mut times = times.split_off(20);
        times.sort_by(f64::total_cmp);
        let at = |p: f64| times[((times.len() - 1) as f64 * p / 100.0).round() as usize];
        println!(
            "| maud, Spanish | {hosts} | {} | {:.2} ms | {:.2} ms | {} KiB |",
            per_page.unwrap_or(200).min(hosts),
            at(50.0),
            at(99.0),
            bytes / 1024
        );
    }
    println!("\nRerun: cargo bench -p axon-control-plane --bench console");
}
