//! GPU-aware routing to the fleet's own model servers. A request for `ollama/<model>` goes to
//! an online host that has the model loaded and headroom (GPU not saturated, few gateway calls
//! in flight); else to a host that has the model on disk and free VRAM for it; hosts with the
//! model loaded but busy come last of all. `sd/<checkpoint>` likewise for SD WebUI hosts.
//! The ranking is a pure function of a snapshot, so it is tested without a fleet.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axon_shared::{ModelServerKind, ModelServers, OllamaModel};

use super::transport::Transport;
use crate::fleet::telemetry::Telemetry;
use crate::fleet::{Hub, Revocations};
use crate::model::Store;

/// A GPU busier than this (percent) leaves no headroom.
const BUSY_GPU_PCT: f32 = 90.0;

/// What the ranking knows of one host.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    pub host_id: String,
    pub models: ModelServers,
    /// Each GPU's utilisation (percent) and free memory (bytes), where known.
    pub gpus: Vec<(Option<f32>, Option<u64>)>,
    /// Direct addresses an admin set; the link is used where absent.
    pub urls: crate::model::ModelUrls,
}

impl HostView {
    fn busiest_gpu(&self) -> Option<f32> {
        self.gpus
            .iter()
            .filter_map(|g| g.0)
            .fold(None, |m, u| Some(m.map_or(u, |m: f32| m.max(u))))
    }

    fn free_vram(&self) -> Option<u64> {
        let known: Vec<u64> = self.gpus.iter().filter_map(|g| g.1).collect();
        (!known.is_empty()).then(|| known.into_iter().max().unwrap_or(0))
    }
}

/// One host chosen for a request.
#[derive(Clone)]
pub struct FleetPick {
    pub host_id: String,
    /// The model's name on that server (e.g. `llama3.2:latest`).
    pub model: String,
    pub transport: Transport,
}

/// Hosts for a model, best first.
#[derive(Default)]
pub struct Picks {
    /// With headroom: loaded first, then on disk with room to load it.
    pub ready: Vec<FleetPick>,
    /// Loaded but busy: the last resort.
    pub busy: Vec<FleetPick>,
}

/// The fleet as the gateway sees it.
pub trait FleetDirectory: Send + Sync {
    /// Hosts for `ollama/<model>`; `in_flight` gives the gateway's calls in flight per host.
    fn ollama(&self, model: &str, in_flight: &dyn Fn(&str) -> u64) -> Picks;
    /// Hosts for `sd/<checkpoint>` (`sd/default`: any SD host).
    fn sd(&self, model: &str, in_flight: &dyn Fn(&str) -> u64) -> Picks;
    /// `ollama/<m>` and `sd/<m>` names of what online hosts offer.
    fn models(&self) -> Vec<String>;
    /// A host's model servers or addresses changed: read the registry again.
    fn refresh(&self) {}
}

/// A fleet with no model servers.
pub struct NoFleet;

impl FleetDirectory for NoFleet {
    fn ollama(&self, _: &str, _: &dyn Fn(&str) -> u64) -> Picks {
        Picks::default()
    }
    fn sd(&self, _: &str, _: &dyn Fn(&str) -> u64) -> Picks {
        Picks::default()
    }
    fn models(&self) -> Vec<String> {
        Vec::new()
    }
}

/// How long the registry snapshot is reused; who is online is checked on every request.
const SNAPSHOT_TTL: Duration = Duration::from_secs(1);

/// The live fleet: the registry's model servers, the latest GPU samples, the hub's links.
pub struct LiveFleet {
    store: Arc<Store>,
    hub: Arc<Hub>,
    telemetry: Arc<Telemetry>,
    revocations: Arc<Revocations>,
    /// Longest wait for an agent's answer to start (a model may be loading).
    link_timeout: Duration,
    headroom: u64,
    snapshot: Mutex<Option<(Instant, Arc<Vec<HostView>>)>>,
    /// For hosts with a direct address.
    http: Option<reqwest::Client>,
}

impl LiveFleet {
    pub fn new(
        store: Arc<Store>,
        hub: Arc<Hub>,
        telemetry: Arc<Telemetry>,
        revocations: Arc<Revocations>,
        link_timeout: Duration,
        headroom: u64,
    ) -> Self {
        Self {
            store,
            hub,
            telemetry,
            revocations,
            link_timeout,
            headroom,
            snapshot: Mutex::new(None),
            http: super::transport::client(Duration::from_secs(5)).ok(),
        }
    }

    /// Hosts with a model server, online and not revoked now, with their latest GPU figures.
    fn hosts(&self) -> Vec<HostView> {
        let snapshot = {
            let mut cached = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
            match &*cached {
                Some((at, hosts)) if at.elapsed() < SNAPSHOT_TTL => hosts.clone(),
                _ => {
                    let hosts = Arc::new(self.read_registry());
                    *cached = Some((Instant::now(), hosts.clone()));
                    hosts
                }
            }
        };
        snapshot
            .iter()
            .filter(|h| self.hub.is_online(&h.host_id) && !self.revocations.is_revoked(&h.host_id))
            .map(|h| HostView {
                gpus: self.gpus(&h.host_id),
                ..h.clone()
            })
            .collect()
    }

    /// Each GPU's utilisation and free memory from the host's latest sample.
    fn gpus(&self, host: &str) -> Vec<(Option<f32>, Option<u64>)> {
        self.telemetry
            .latest(host)
            .map(|s| {
                s.gpus
                    .iter()
                    .map(|g| {
                        let free = match (g.mem_total_bytes, g.mem_used_bytes) {
                            (Some(t), Some(u)) => Some(t.saturating_sub(u)),
                            _ => None,
                        };
                        (g.util_pct, free)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The registry's hosts with model servers (GPU figures are added fresh per request).
    fn read_registry(&self) -> Vec<HostView> {
        let hosts = match self.store.hosts.values() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "reading the registry for LLM routing failed");
                return Vec::new();
            }
        };
        hosts
            .into_iter()
            .filter(|h| {
                h.revoked_at.is_none()
                    && (h.model_servers.ollama.is_some() || h.model_servers.sdxl.is_some())
            })
            .map(|h| HostView {
                host_id: h.id,
                models: h.model_servers,
                gpus: Vec::new(),
                urls: h.model_urls,
            })
            .collect()
    }

    fn picks(&self, hosts: &[HostView], ranked: Ranked, server: ModelServerKind) -> Picks {
        let direct = |host_id: &str| {
            let host = hosts.iter().find(|h| h.host_id == host_id)?;
            let url = match server {
                ModelServerKind::Ollama => host.urls.ollama.clone(),
                ModelServerKind::Sdxl => host.urls.sd.clone(),
            }?;
            Some(Transport::Http {
                client: self.http.clone()?,
                base: url.trim_end_matches('/').to_owned(),
                auth: Vec::new(),
            })
        };
        let pick = |(host_id, model): (String, String)| FleetPick {
            transport: direct(&host_id).unwrap_or_else(|| Transport::Link {
                hub: self.hub.clone(),
                host_id: host_id.clone(),
                server,
                timeout: self.link_timeout,
            }),
            host_id,
            model,
        };
        Picks {
            ready: ranked.0.into_iter().map(pick).collect(),
            busy: ranked.1.into_iter().map(pick).collect(),
        }
    }
}

impl FleetDirectory for LiveFleet {
    fn refresh(&self) {
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn ollama(&self, model: &str, in_flight: &dyn Fn(&str) -> u64) -> Picks {
        let hosts = self.hosts();
        let ranked = rank_ollama(&hosts, model, in_flight, self.headroom);
        self.picks(&hosts, ranked, ModelServerKind::Ollama)
    }

    fn sd(&self, model: &str, in_flight: &dyn Fn(&str) -> u64) -> Picks {
        let hosts = self.hosts();
        let ranked = rank_sd(&hosts, model, in_flight, self.headroom);
        self.picks(&hosts, ranked, ModelServerKind::Sdxl)
    }

    fn models(&self) -> Vec<String> {
        let mut out = Vec::new();
        for h in self.hosts() {
            if let Some(o) = &h.models.ollama {
                out.extend(o.models.iter().map(|m| format!("ollama/{}", m.name)));
            }
            if let Some(sd) = &h.models.sdxl {
                out.push("sd/default".to_owned());
                out.extend(sd.models.iter().map(|m| format!("sd/{m}")));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Ollama names a model `name:tag`; `name` alone means `name:latest`.
pub fn same_model(asked: &str, have: &str) -> bool {
    let full = |s: &str| {
        if s.contains(':') {
            s.to_owned()
        } else {
            format!("{s}:latest")
        }
    };
    full(asked) == full(have)
}

/// (host id, model name there) of hosts with headroom, then of busy ones.
pub type Ranked = (Vec<(String, String)>, Vec<(String, String)>);

/// Ranks hosts for an Ollama model: `(ready, busy)` as (host id, model name there).
pub fn rank_ollama(
    hosts: &[HostView],
    model: &str,
    in_flight: &dyn Fn(&str) -> u64,
    headroom: u64,
) -> Ranked {
    let mut loaded = Vec::new();
    let mut on_disk = Vec::new();
    let mut busy = Vec::new();
    for h in hosts {
        let Some(ollama) = &h.models.ollama else {
            continue;
        };
        let Some(found): Option<&OllamaModel> =
            ollama.models.iter().find(|m| same_model(model, &m.name))
        else {
            continue;
        };
        let flights = in_flight(&h.host_id);
        let gpu_busy = h.busiest_gpu().is_some_and(|u| u >= BUSY_GPU_PCT);
        let has_room = flights < headroom && !gpu_busy;
        let is_loaded = ollama.loaded.iter().any(|l| same_model(model, &l.name));
        let entry = (h.host_id.clone(), found.name.clone());
        if is_loaded && has_room {
            loaded.push((flights, h.busiest_gpu().unwrap_or(0.0), entry));
        } else if is_loaded {
            busy.push((flights, entry));
        } else if has_room && h.free_vram().is_none_or(|free| free >= found.size_bytes) {
            on_disk.push((h.free_vram().unwrap_or(0), entry));
        }
    }
    loaded.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
    });
    on_disk.sort_by_key(|d| std::cmp::Reverse(d.0));
    busy.sort_by_key(|b| b.0);
    let ready = loaded
        .into_iter()
        .map(|l| l.2)
        .chain(on_disk.into_iter().map(|d| d.1))
        .collect();
    (ready, busy.into_iter().map(|b| b.1).collect())
}

/// Ranks hosts for an SD checkpoint (`default`: any host's current one).
pub fn rank_sd(
    hosts: &[HostView],
    model: &str,
    in_flight: &dyn Fn(&str) -> u64,
    headroom: u64,
) -> Ranked {
    let mut ready = Vec::new();
    let mut busy = Vec::new();
    for h in hosts {
        let Some(sd) = &h.models.sdxl else {
            continue;
        };
        let name = if model == "default" {
            String::new()
        } else {
            match sd.models.iter().find(|m| {
                *m == model
                    || m.starts_with(&format!("{model} "))
                    || m.starts_with(&format!("{model}."))
            }) {
                Some(m) => m.clone(),
                None => continue,
            }
        };
        let flights = in_flight(&h.host_id);
        let gpu_busy = h.busiest_gpu().is_some_and(|u| u >= BUSY_GPU_PCT);
        if flights < headroom && !gpu_busy {
            ready.push((flights, (h.host_id.clone(), name)));
        } else {
            busy.push((flights, (h.host_id.clone(), name)));
        }
    }
    ready.sort_by_key(|r| r.0);
    busy.sort_by_key(|b| b.0);
    (
        ready.into_iter().map(|r| r.1).collect(),
        busy.into_iter().map(|b| b.1).collect(),
    )
}

#[cfg(test)]
mod tests {
    use axon_shared::{Ollama, OllamaLoaded, StableDiffusion};

    use super::*;

    const GIB: u64 = 1 << 30;

    fn host(id: &str, have: &[(&str, u64)], loaded: &[&str], gpu: (f32, u64)) -> HostView {
        HostView {
            host_id: id.into(),
            models: ModelServers {
                ollama: Some(Ollama {
                    address: "127.0.0.1:11434".into(),
                    models: have
                        .iter()
                        .map(|(n, s)| OllamaModel {
                            name: (*n).into(),
                            size_bytes: *s,
                            ..Default::default()
                        })
                        .collect(),
                    loaded: loaded
                        .iter()
                        .map(|n| OllamaLoaded {
                            name: (*n).into(),
                            ..Default::default()
                        })
                        .collect(),
                }),
                sdxl: None,
            },
            gpus: vec![(Some(gpu.0), Some(gpu.1))],
            urls: Default::default(),
        }
    }

    fn ids(v: &[(String, String)]) -> Vec<&str> {
        v.iter().map(|(h, _)| h.as_str()).collect()
    }

    #[test]
    fn loaded_with_headroom_first_then_room_to_load_then_busy() {
        // Expectations written from the routing rules, not from the code's order.
        let hosts = [
            host(
                "cold-small",
                &[("llama3.2:latest", 2 * GIB)],
                &[],
                (5.0, GIB),
            ),
            host(
                "cold-roomy",
                &[("llama3.2:latest", 2 * GIB)],
                &[],
                (5.0, 20 * GIB),
            ),
            host(
                "warm-busy-gpu",
                &[("llama3.2:latest", 2 * GIB)],
                &["llama3.2:latest"],
                (97.0, 10 * GIB),
            ),
            host(
                "warm",
                &[("llama3.2:latest", 2 * GIB)],
                &["llama3.2:latest"],
                (30.0, 10 * GIB),
            ),
            host(
                "other-model",
                &[("qwen2.5:7b", 5 * GIB)],
                &["qwen2.5:7b"],
                (1.0, 30 * GIB),
            ),
        ];
        let none = |_: &str| 0;
        let (ready, busy) = rank_ollama(&hosts, "llama3.2", &none, 8);
        assert_eq!(ids(&ready), ["warm", "cold-roomy"]);
        assert_eq!(ids(&busy), ["warm-busy-gpu"]);
        assert_eq!(ready[0].1, "llama3.2:latest");
        // Gateway calls in flight take a warm host out of the ready list.
        let loaded_up = |h: &str| if h == "warm" { 8 } else { 0 };
        let (ready, busy) = rank_ollama(&hosts, "llama3.2:latest", &loaded_up, 8);
        assert_eq!(ids(&ready), ["cold-roomy"]);
        // Of busy hosts, the one with fewer gateway calls queued first.
        assert_eq!(ids(&busy), ["warm-busy-gpu", "warm"]);
        let (ready, busy) = rank_ollama(&hosts, "mistral", &none, 8);
        assert!(ready.is_empty() && busy.is_empty());
    }

    #[test]
    fn of_two_warm_hosts_the_less_loaded_wins() {
        let hosts = [
            host("a", &[("m:1b", GIB)], &["m:1b"], (60.0, GIB)),
            host("b", &[("m:1b", GIB)], &["m:1b"], (10.0, GIB)),
        ];
        let (ready, _) = rank_ollama(&hosts, "m:1b", &|_: &str| 0, 8);
        assert_eq!(ids(&ready), ["b", "a"]);
        let (ready, _) = rank_ollama(&hosts, "m:1b", &|h: &str| u64::from(h == "b") * 2, 8);
        assert_eq!(ids(&ready), ["a", "b"]);
    }

    #[test]
    fn sd_checkpoints_match_by_title() {
        let mut h = host("sd1", &[], &[], (5.0, 10 * GIB));
        h.models.ollama = None;
        h.models.sdxl = Some(StableDiffusion {
            address: "127.0.0.1:7860".into(),
            models: vec!["sd_xl_base_1.0.safetensors [31e35c80fc]".into()],
        });
        let hosts = [h];
        let (ready, _) = rank_sd(&hosts, "sd_xl_base_1.0", &|_: &str| 0, 8);
        assert_eq!(ready[0].1, "sd_xl_base_1.0.safetensors [31e35c80fc]");
        let (ready, _) = rank_sd(&hosts, "default", &|_: &str| 0, 8);
        assert_eq!(ids(&ready), ["sd1"]);
        let (ready, _) = rank_sd(&hosts, "other", &|_: &str| 0, 8);
        assert!(ready.is_empty());
    }
}
