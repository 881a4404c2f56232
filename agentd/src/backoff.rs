//! Reconnect delays: exponential with full jitter, so a control-plane restart does not bring
//! every agent back at the same instant.

use std::time::Duration;

/// Exponential backoff with full jitter between `initial` and `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The ceiling for the next delay: `initial * 2^attempt`, capped at `max`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay: uniform in `[0, ceiling]`; raises the ceiling for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..=millis))
    }

    /// Jumps to the largest ceiling (for failures that retrying soon cannot fix).
    pub fn saturate(&mut self) {
        self.attempt = 32;
    }

    /// Back to the first step, after a connection that worked.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_to_the_cap_and_delays_stay_under_it() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let ceiling = b.ceiling();
            let delay = b.next_delay();
            assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
            ceilings.push(ceiling.as_secs());
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
        b.saturate();
        assert_eq!(b.ceiling(), Duration::from_secs(60));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let delays: std::collections::HashSet<_> = (0..50).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 40, "delays are not spread: {}", delays.len());
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_secs(5));
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
    }
}
