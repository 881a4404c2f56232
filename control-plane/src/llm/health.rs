//! Each upstream's health as the gateway sees it: a circuit breaker (closed → open after
//! consecutive failures → half-open after a cool-down, where one probe decides), the time a
//! `Retry-After` asked us to wait, requests in flight, and a moving average of latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

/// Consecutive failures that open the circuit.
const TRIP_AFTER: u32 = 5;
/// First cool-down; doubled on each failed probe up to `MAX_COOL_DOWN`.
const COOL_DOWN: Duration = Duration::from_secs(10);
const MAX_COOL_DOWN: Duration = Duration::from_secs(300);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    /// For the Prometheus gauge.
    pub fn as_number(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

#[derive(Debug)]
struct Breaker {
    circuit: Circuit,
    failures: u32,
    opened_at: Option<Instant>,
    cool_down: Duration,
    /// A half-open probe is out.
    probing: bool,
    /// Skip the upstream until then (`Retry-After`).
    wait_until: Option<Instant>,
    last_error: Option<String>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            circuit: Circuit::Closed,
            failures: 0,
            opened_at: None,
            cool_down: COOL_DOWN,
            probing: false,
            wait_until: None,
            last_error: None,
        }
    }
}

/// One upstream's counters.
#[derive(Debug, Default)]
pub struct Upstream {
    breaker: Mutex<Breaker>,
    in_flight: AtomicU64,
    /// Latency moving average in microseconds (0: none yet).
    ewma_us: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
}

/// Why an upstream is skipped now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Its circuit is open; try again after this long.
    Open(Duration),
    /// It asked us to wait this long.
    RetryAfter(Duration),
}

impl Upstream {
    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a request may go to this upstream now; a half-open circuit lets one probe
    /// through at a time.
    pub fn admit(&self, now: Instant) -> Result<(), Skip> {
        let mut b = self.lock();
        if let Some(until) = b.wait_until {
            if until > now {
                return Err(Skip::RetryAfter(until - now));
            }
            b.wait_until = None;
        }
        match b.circuit {
            Circuit::Closed => Ok(()),
            Circuit::Open => {
                let opened = b.opened_at.unwrap_or(now);
                let ready = opened + b.cool_down;
                if now < ready {
                    return Err(Skip::Open(ready - now));
                }
                b.circuit = Circuit::HalfOpen;
                b.probing = true;
                Ok(())
            }
            Circuit::HalfOpen if b.probing => Err(Skip::Open(Duration::from_secs(1))),
            Circuit::HalfOpen => {
                b.probing = true;
                Ok(())
            }
        }
    }

    /// A call that went well.
    pub fn success(&self, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let old = self.ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 4 + us) / 5 };
        self.ewma_us.store(new, Ordering::Relaxed);
        let mut b = self.lock();
        b.circuit = Circuit::Closed;
        b.failures = 0;
        b.probing = false;
        b.cool_down = COOL_DOWN;
        b.opened_at = None;
    }

    /// A call that failed on the upstream's side; `retry_after` from its answer.
    pub fn failure(&self, error: &str, retry_after: Option<Duration>, now: Instant) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut b = self.lock();
        b.last_error = Some(error.chars().take(300).collect());
        if let Some(wait) = retry_after {
            b.wait_until = Some(now + wait.min(MAX_RETRY_AFTER));
        }
        b.failures += 1;
        match b.circuit {
            Circuit::HalfOpen => {
                b.cool_down = (b.cool_down * 2).min(MAX_COOL_DOWN);
                b.circuit = Circuit::Open;
                b.opened_at = Some(now);
                b.probing = false;
            }
            Circuit::Closed if b.failures >= TRIP_AFTER => {
                b.circuit = Circuit::Open;
                b.opened_at = Some(now);
            }
            _ => {}
        }
    }

    /// A probe that ended without a verdict (the client left): the next request probes.
    pub fn abandon(&self) {
        self.lock().probing = false;
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn ewma(&self) -> Option<Duration> {
        match self.ewma_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn report(&self, name: &str, now: Instant) -> UpstreamReport {
        let b = self.lock();
        let circuit = match b.circuit {
            Circuit::Open if b.opened_at.is_some_and(|o| now >= o + b.cool_down) => {
                Circuit::HalfOpen
            }
            c => c,
        };
        UpstreamReport {
            upstream: name.to_owned(),
            circuit,
            consecutive_failures: b.failures,
            retry_after_secs: b
                .wait_until
                .filter(|u| *u > now)
                .map(|u| (u - now).as_secs_f64().ceil() as u64),
            in_flight: self.in_flight(),
            latency_ewma_ms: self.ewma().map(|d| d.as_secs_f64() * 1000.0),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: b.last_error.clone(),
        }
    }
}

/// Decrements the in-flight count when dropped.
pub struct InFlight(Arc<Upstream>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An upstream's state, for `/api/llm/upstreams` and `/metrics`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct UpstreamReport {
    pub upstream: String,
    pub circuit: Circuit,
    pub consecutive_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    pub in_flight: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ewma_ms: Option<f64>,
    pub requests: u64,
    pub failures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Every upstream seen, by name (`openai`, `deepseek`, `ollama@<host id>`, ...).
#[derive(Default)]
pub struct Health {
    upstreams: Mutex<HashMap<String, Arc<Upstream>>>,
}

impl Health {
    pub fn get(&self, name: &str) -> Arc<Upstream> {
        let mut map = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = map.get(name) {
            return u.clone();
        }
        map.entry(name.to_owned()).or_default().clone()
    }

    pub fn report(&self) -> Vec<UpstreamReport> {
        let now = Instant::now();
        let map = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<UpstreamReport> = map.iter().map(|(n, u)| u.report(n, now)).collect();
        out.sort_by(|a, b| a.upstream.cmp(&b.upstream));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_circuit_opens_probes_once_and_closes() {
        let u = Upstream::default();
        let t0 = Instant::now();
        for _ in 0..TRIP_AFTER {
            assert_eq!(u.admit(t0), Ok(()));
            u.failure("boom", None, t0);
        }
        assert!(matches!(u.admit(t0), Err(Skip::Open(_))));
        let later = t0 + COOL_DOWN;
        assert_eq!(u.admit(later), Ok(()), "one probe after the cool-down");
        assert!(matches!(u.admit(later), Err(Skip::Open(_))), "only one");
        u.failure("still", None, later);
        assert!(
            matches!(u.admit(later + COOL_DOWN), Err(Skip::Open(_))),
            "a failed probe doubles the cool-down"
        );
        let again = later + COOL_DOWN * 2;
        assert_eq!(u.admit(again), Ok(()));
        u.success(Duration::from_millis(5));
        assert_eq!(u.admit(again), Ok(()));
        assert_eq!(u.admit(again), Ok(()), "closed: no limit");
    }

    #[test]
    fn retry_after_skips_until_then() {
        let u = Upstream::default();
        let t0 = Instant::now();
        u.failure("429", Some(Duration::from_secs(3)), t0);
        assert_eq!(
            u.admit(t0 + Duration::from_secs(1)),
            Err(Skip::RetryAfter(Duration::from_secs(2)))
        );
        assert_eq!(u.admit(t0 + Duration::from_secs(3)), Ok(()));
    }

    #[test]
    fn latency_average_and_in_flight() {
        let u = Arc::new(Upstream::default());
        u.success(Duration::from_millis(10));
        u.success(Duration::from_millis(20));
        assert_eq!(u.ewma(), Some(Duration::from_millis(12)));
        let a = u.start();
        let b = u.start();
        assert_eq!(u.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(u.in_flight(), 0);
    }
}
