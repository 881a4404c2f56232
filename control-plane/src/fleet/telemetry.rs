//! Host metrics on the control plane: the latest sample of each host, a ring of the last hour
//! in memory (one compact point per sample), and per-minute history in sled, kept for the
//! configured retention (7 days by default).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axon_shared::MetricsSample;
use serde::{Deserialize, Serialize};

use crate::model::Store;
use crate::store::{StoreError, Tree};

/// How much the in-memory ring holds.
pub const RING_SPAN: Duration = Duration::from_secs(3600);
const MINUTE_MS: u64 = 60_000;
/// The most points a ring holds, whatever the timestamps say (one a second for an hour).
const RING_MAX: usize = 3600;
/// How far a sample's clock may be from ours before our receive time is used instead.
const MAX_SKEW_MS: u64 = 60_000;
/// The most points one query answers.
pub const MAX_POINTS: u64 = 5000;

/// One point of a host's series: the headline figures of a sample, or their average over a
/// step (`samples` says over how many).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Point {
    pub ts_ms: u64,
    pub cpu_pct: f64,
    pub load1: f64,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    /// All interfaces but loopback.
    pub net_rx_bps: f64,
    pub net_tx_bps: f64,
    /// Over each device once; absent until the agent has two disk readings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_read_bps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_write_bps: Option<f64>,
    /// Average over the host's GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_util_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_mem_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_mem_total_bytes: Option<u64>,
    pub samples: u32,
}

impl Point {
    pub fn of(s: &MetricsSample) -> Self {
        let net = s.net.iter().filter(|n| n.iface != "lo");
        let (rx, tx) = net.fold((0.0, 0.0), |(r, t), n| (r + n.rx_bps, t + n.tx_bps));
        let disks = axon_shared::DiskSample::per_device(&s.disks);
        let sum = |f: fn(&axon_shared::DiskSample) -> Option<f64>| {
            let values: Vec<f64> = disks.iter().filter_map(|d| f(d)).collect();
            (!values.is_empty()).then(|| values.iter().sum())
        };
        let (read, write) = (sum(|d| d.read_bps), sum(|d| d.write_bps));
        let utils: Vec<f64> = s
            .gpus
            .iter()
            .filter_map(|g| g.util_pct.map(f64::from))
            .collect();
        let sum_of = |f: fn(&axon_shared::GpuSample) -> Option<u64>| {
            let values: Vec<u64> = s.gpus.iter().filter_map(f).collect();
            (!values.is_empty()).then(|| values.iter().sum())
        };
        Self {
            ts_ms: s.ts_ms,
            cpu_pct: f64::from(s.cpu.total_pct),
            load1: s.load[0],
            mem_used_bytes: s.memory.used,
            mem_total_bytes: s.memory.total,
            net_rx_bps: rx,
            net_tx_bps: tx,
            disk_read_bps: read,
            disk_write_bps: write,
            gpu_util_pct: (!utils.is_empty())
                .then(|| utils.iter().sum::<f64>() / utils.len() as f64),
            gpu_mem_used_bytes: sum_of(|g| g.mem_used_bytes),
            gpu_mem_total_bytes: sum_of(|g| g.mem_total_bytes),
            samples: 1,
        }
    }
}

/// The average of `points` (weighted by how many samples each stands for), at `ts_ms`.
pub fn average(points: &[Point], ts_ms: u64) -> Point {
    let n: f64 = points.iter().map(|p| f64::from(p.samples.max(1))).sum();
    if n == 0.0 {
        return Point {
            ts_ms,
            ..Point::default()
        };
    }
    let mean = |f: fn(&Point) -> f64| {
        points
            .iter()
            .map(|p| f(p) * f64::from(p.samples.max(1)))
            .sum::<f64>()
            / n
    };
    let mean_opt = |f: fn(&Point) -> Option<f64>| {
        let (sum, weight) = points
            .iter()
            .filter_map(|p| {
                f(p).map(|v| (v * f64::from(p.samples.max(1)), f64::from(p.samples.max(1))))
            })
            .fold((0.0, 0.0), |(s, w), (v, pw)| (s + v, w + pw));
        (weight > 0.0).then(|| sum / weight)
    };
    Point {
        ts_ms,
        cpu_pct: mean(|p| p.cpu_pct),
        load1: mean(|p| p.load1),
        mem_used_bytes: mean(|p| p.mem_used_bytes as f64) as u64,
        mem_total_bytes: mean(|p| p.mem_total_bytes as f64) as u64,
        net_rx_bps: mean(|p| p.net_rx_bps),
        net_tx_bps: mean(|p| p.net_tx_bps),
        disk_read_bps: mean_opt(|p| p.disk_read_bps),
        disk_write_bps: mean_opt(|p| p.disk_write_bps),
        gpu_util_pct: mean_opt(|p| p.gpu_util_pct),
        gpu_mem_used_bytes: mean_opt(|p| p.gpu_mem_used_bytes.map(|v| v as f64)).map(|v| v as u64),
        gpu_mem_total_bytes: mean_opt(|p| p.gpu_mem_total_bytes.map(|v| v as f64))
            .map(|v| v as u64),
        samples: points.iter().map(|p| p.samples.max(1)).sum(),
    }
}

/// Averages `points` (in time order) into buckets of `step_ms`, each at its bucket's start.
pub fn bucket(points: &[Point], step_ms: u64) -> Vec<Point> {
    let step_ms = step_ms.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < points.len() {
        let slot = points[start].ts_ms / step_ms;
        let mut end = start;
        while end < points.len() && points[end].ts_ms / step_ms == slot {
            end += 1;
        }
        out.push(average(&points[start..end], slot * step_ms));
        start = end;
    }
    out
}

#[derive(Default)]
struct Series {
    ring: VecDeque<Point>,
    latest: Option<Arc<MetricsSample>>,
    /// Points of the minute not yet written to history.
    minute: Vec<Point>,
}

/// An answer to a metrics query.
#[derive(Debug, Clone, Serialize)]
pub struct Query {
    /// `live` (the in-memory ring, per sample) or `history` (per minute, from disk).
    pub source: &'static str,
    pub since_ms: u64,
    pub step_secs: u64,
    pub points: Vec<Point>,
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The fleet's metrics.
pub struct Telemetry {
    series: Mutex<HashMap<String, Series>>,
    history: Tree<Point>,
    retention: Duration,
}

fn minute_key(host: &str, minute_ms: u64) -> String {
    format!("{host}/{minute_ms:016x}")
}

impl Telemetry {
    pub fn open(store: &Store, retention: Duration) -> Result<Self, StoreError> {
        Ok(Self {
            series: Mutex::new(HashMap::new()),
            history: store.db.tree("metrics_1m")?,
            retention,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Series>> {
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes in a host's sample: the latest, the ring, and the minute's history once the
    /// minute is over.
    pub fn record(&self, host: &str, sample: MetricsSample) -> Arc<MetricsSample> {
        self.record_at(host, sample, unix_ms())
    }

    /// As [`Telemetry::record`], with the receive time given: a sample whose clock is more than
    /// a minute off is filed at the receive time (a host's clock must not write history into
    /// the future or the past).
    pub fn record_at(
        &self,
        host: &str,
        mut sample: MetricsSample,
        now_ms: u64,
    ) -> Arc<MetricsSample> {
        if sample.ts_ms.abs_diff(now_ms) > MAX_SKEW_MS {
            sample.ts_ms = now_ms;
        }
        self.insert(host, sample)
    }

    fn insert(&self, host: &str, sample: MetricsSample) -> Arc<MetricsSample> {
        let point = Point::of(&sample);
        let sample = Arc::new(sample);
        let finished = {
            let mut all = self.lock();
            let series = all.entry(host.to_owned()).or_default();
            series.latest = Some(sample.clone());
            let horizon = point.ts_ms.saturating_sub(RING_SPAN.as_millis() as u64);
            while series.ring.front().is_some_and(|p| p.ts_ms < horizon) {
                series.ring.pop_front();
            }
            // A sample older than the last one (a clock step back) starts the ring afresh.
            if series.ring.back().is_some_and(|p| p.ts_ms > point.ts_ms) {
                series.ring.clear();
            }
            if series.ring.len() >= RING_MAX {
                series.ring.pop_front();
            }
            series.ring.push_back(point.clone());
            let minute = point.ts_ms / MINUTE_MS;
            let done = match series.minute.first() {
                Some(first) if first.ts_ms / MINUTE_MS != minute => {
                    Some(std::mem::take(&mut series.minute))
                }
                _ => None,
            };
            series.minute.push(point);
            done
        };
        if let Some(points) = finished {
            let minute_ms = points[0].ts_ms / MINUTE_MS * MINUTE_MS;
            if let Err(e) = self
                .history
                .put(&minute_key(host, minute_ms), &average(&points, minute_ms))
            {
                tracing::error!(%host, error = %e, "metrics history write failed");
            }
        }
        sample
    }

    /// The host's latest sample.
    pub fn latest(&self, host: &str) -> Option<Arc<MetricsSample>> {
        self.lock().get(host).and_then(|s| s.latest.clone())
    }

    /// Every host's latest sample.
    pub fn latest_all(&self) -> Vec<(String, Arc<MetricsSample>)> {
        self.lock()
            .iter()
            .filter_map(|(h, s)| Some((h.clone(), s.latest.clone()?)))
            .collect()
    }

    /// Points since `since_ms`, averaged over `step_secs` (0: one per sample within the last
    /// hour, one per minute before). The last hour comes from memory, older spans from disk.
    pub fn query(
        &self,
        host: &str,
        since_ms: u64,
        step_secs: u64,
        now_ms: u64,
    ) -> Result<Query, StoreError> {
        let live_from = now_ms.saturating_sub(RING_SPAN.as_millis() as u64);
        if since_ms >= live_from {
            let points: Vec<Point> = self
                .lock()
                .get(host)
                .map(|s| {
                    s.ring
                        .iter()
                        .filter(|p| p.ts_ms >= since_ms)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let points = if step_secs == 0 {
                points
            } else {
                bucket(&points, step_secs * 1000)
            };
            return Ok(Query {
                source: "live",
                since_ms,
                step_secs,
                points,
            });
        }
        let step_secs = step_secs.max(60).div_ceil(60) * 60;
        let minutes: Vec<Point> = self
            .history
            .range(
                &minute_key(host, since_ms / MINUTE_MS * MINUTE_MS),
                &minute_key(host, u64::MAX),
            )?
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        Ok(Query {
            source: "history",
            since_ms,
            step_secs,
            points: bucket(&minutes, step_secs * 1000),
        })
    }

    /// Drops history older than the retention; returns how many minutes went.
    pub fn prune(&self, hosts: &[String], now_ms: u64) -> Result<usize, StoreError> {
        let cutoff = now_ms.saturating_sub(self.retention.as_millis() as u64);
        let mut removed = 0;
        for host in hosts {
            removed += self.history.remove_range(
                &minute_key(host, 0),
                &minute_key(host, cutoff / MINUTE_MS * MINUTE_MS),
            )?;
        }
        Ok(removed)
    }

    /// Forgets a host's live series (it was revoked or deleted).
    pub fn forget(&self, host: &str) {
        self.lock().remove(host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One device mounted at `/` and `/var/lib/docker` is one disk; a sample without rates
    /// (an agent's first) has none in its point.
    #[test]
    fn disk_rates_count_each_device_once() {
        let disk = |mount: &str, device: &str, bps: Option<f64>| axon_shared::DiskSample {
            mount: mount.into(),
            device: device.into(),
            read_bps: bps,
            write_bps: bps,
            ..Default::default()
        };
        let mut s = MetricsSample {
            disks: vec![
                disk("/", "/dev/vda", Some(100.0)),
                disk("/var/lib/docker", "/dev/vda", Some(100.0)),
                disk("/data", "/dev/vdb", Some(5.0)),
            ],
            ..Default::default()
        };
        let point = Point::of(&s);
        assert_eq!(point.disk_read_bps, Some(105.0));
        assert_eq!(point.disk_write_bps, Some(105.0));
        for d in &mut s.disks {
            d.read_bps = None;
            d.write_bps = None;
        }
        let point = Point::of(&s);
        assert_eq!((point.disk_read_bps, point.disk_write_bps), (None, None));
    }

    fn sample(ts_ms: u64, cpu: f32) -> MetricsSample {
        MetricsSample {
            ts_ms,
            cpu: axon_shared::CpuSample {
                total_pct: cpu,
                per_core_pct: vec![cpu],
            },
            memory: axon_shared::MemorySample {
                total: 1000,
                used: 100,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn telemetry(retention: Duration) -> (tempfile::TempDir, Telemetry) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let t = Telemetry::open(&store, retention).expect("telemetry");
        (dir, t)
    }

    #[test]
    fn minutes_are_averaged_into_history_and_pruned_after_retention() {
        let (_dir, t) = telemetry(Duration::from_secs(2 * 3600));
        // Aligned to two minutes, so that two-minute steps start on an even minute.
        let start = 1_700_000_000_000 / 120_000 * 120_000;
        // Three hours of a sample every 5 s: CPU 10 % in even minutes, 30 % in odd ones.
        let mut ts = start;
        while ts < start + 3 * 3600 * 1000 {
            let minute = (ts - start) / MINUTE_MS;
            t.insert(
                "h1",
                sample(ts, if minute.is_multiple_of(2) { 10.0 } else { 30.0 }),
            );
            ts += 5000;
        }
        let now = ts;
        // The last hour comes from the ring, one point per sample.
        let live = t.query("h1", now - 600_000, 0, now).expect("live");
        assert_eq!(live.source, "live");
        assert_eq!(live.points.len(), 120);
        // Older spans from history: one point a minute, each the mean of its 12 samples.
        let hist = t.query("h1", start, 0, now).expect("history");
        assert_eq!(hist.source, "history");
        assert_eq!(
            hist.points.len(),
            179,
            "the minute in progress is not history yet"
        );
        assert_eq!(hist.points[0].ts_ms, start);
        assert_eq!(hist.points[0].samples, 12);
        assert!((hist.points[0].cpu_pct - 10.0).abs() < 1e-9);
        assert!((hist.points[1].cpu_pct - 30.0).abs() < 1e-9);
        // Two-minute steps average an even and an odd minute.
        let coarse = t.query("h1", start, 120, now).expect("coarse");
        assert_eq!(coarse.step_secs, 120);
        assert!((coarse.points[0].cpu_pct - 20.0).abs() < 1e-9);
        assert_eq!(coarse.points[0].samples, 24);
        // Retention: only the last two hours stay.
        let removed = t.prune(&["h1".to_owned()], now).expect("prune");
        assert_eq!(removed, 60);
        let kept = t.query("h1", start, 0, now).expect("after prune");
        assert_eq!(kept.points.len(), 119);
        assert!(kept.points[0].ts_ms >= now - 2 * 3600 * 1000 - MINUTE_MS);
        // Other hosts are untouched and separate.
        assert!(t.query("h2", start, 0, now).expect("h2").points.is_empty());
    }

    #[test]
    fn the_ring_keeps_one_hour() {
        let (_dir, t) = telemetry(Duration::from_secs(86_400));
        let start = 1_700_000_000_000;
        for i in 0..(2 * 3600) {
            t.insert("h", sample(start + i * 1000, 1.0));
        }
        let series = t.lock();
        let ring = &series["h"].ring;
        assert_eq!(ring.len(), 3600, "capped");
        assert_eq!(
            ring.back().map(|p| p.ts_ms),
            Some(start + (2 * 3600 - 1) * 1000)
        );
    }

    #[test]
    fn a_skewed_clock_is_filed_at_the_receive_time() {
        let (_dir, t) = telemetry(Duration::from_secs(86_400));
        let now = 1_800_000_000_000;
        let future = t.record_at("h", sample(now + 86_400_000, 1.0), now);
        assert_eq!(future.ts_ms, now);
        let close = t.record_at("h", sample(now - 5_000, 1.0), now);
        assert_eq!(close.ts_ms, now - 5_000);
        assert_eq!(t.latest("h").map(|s| s.ts_ms), Some(now - 5_000));
    }

    #[test]
    fn gpu_and_network_figures_are_summed_sensibly() {
        let mut s = sample(1, 50.0);
        s.net = vec![
            axon_shared::NetSample {
                iface: "lo".into(),
                rx_bps: 1e9,
                ..Default::default()
            },
            axon_shared::NetSample {
                iface: "eth0".into(),
                rx_bps: 100.0,
                ..Default::default()
            },
        ];
        s.gpus = vec![
            axon_shared::GpuSample {
                util_pct: Some(20.0),
                mem_used_bytes: Some(1),
                mem_total_bytes: Some(10),
                ..Default::default()
            },
            axon_shared::GpuSample {
                util_pct: Some(40.0),
                mem_used_bytes: Some(2),
                mem_total_bytes: Some(10),
                ..Default::default()
            },
        ];
        let p = Point::of(&s);
        assert_eq!(p.net_rx_bps, 100.0);
        assert_eq!(p.gpu_util_pct, Some(30.0));
        assert_eq!(p.gpu_mem_used_bytes, Some(3));
        assert_eq!(p.gpu_mem_total_bytes, Some(20));
        assert_eq!(Point::of(&sample(1, 1.0)).gpu_util_pct, None);
    }
}
