//! Rate limits and budgets of API keys and tenants, checked from memory before every call:
//! requests and tokens per minute (a sliding window over the current and the previous
//! minute), tokens and cost per UTC day and month. Spending is counted when a call ends (its
//! real token counts); the day's and month's totals are rebuilt from the stored roll-up at
//! start, so a restart does not reset a budget.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::LlmLimits;

use super::usage::{DailyKey, Totals};

/// Whose spending a counter holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Key(String),
    Tenant(String),
}

impl Subject {
    fn describe(&self) -> &'static str {
        match self {
            Self::Key(_) => "this API key",
            Self::Tenant(_) => "your tenant",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Counters {
    minute: u64,
    requests: u64,
    tokens: u64,
    prev_requests: u64,
    prev_tokens: u64,
    day: String,
    day_tokens: u64,
    day_cost: f64,
    month: String,
    month_tokens: u64,
    month_cost: f64,
}

impl Counters {
    fn roll(&mut self, now_ms: u64, day: &str) {
        let minute = now_ms / 60_000;
        if minute != self.minute {
            if minute == self.minute + 1 {
                self.prev_requests = self.requests;
                self.prev_tokens = self.tokens;
            } else {
                self.prev_requests = 0;
                self.prev_tokens = 0;
            }
            self.requests = 0;
            self.tokens = 0;
            self.minute = minute;
        }
        if self.day != day {
            self.day = day.to_owned();
            self.day_tokens = 0;
            self.day_cost = 0.0;
        }
        let month = &day[..7];
        if self.month != month {
            self.month = month.to_owned();
            self.month_tokens = 0;
            self.month_cost = 0.0;
        }
    }

    /// The sliding-window estimate of the last minute.
    fn window(&self, now_ms: u64, current: u64, previous: u64) -> u64 {
        let into = (now_ms % 60_000) as f64 / 60_000.0;
        current + (previous as f64 * (1.0 - into)).round() as u64
    }
}

/// A call refused by a limit: what was exceeded and when to come back.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub message: String,
    pub retry_after_secs: u64,
    /// OpenAI's code: `rate_limit_exceeded` or `insufficient_quota`.
    pub code: &'static str,
}

/// Every subject's counters.
#[derive(Default)]
pub struct Meter {
    counters: Mutex<HashMap<Subject, Counters>>,
}

fn secs_to_next_minute(now_ms: u64) -> u64 {
    (60_000 - now_ms % 60_000).div_ceil(1000).max(1)
}

fn secs_to_next_day(now_ms: u64) -> u64 {
    (86_400_000 - now_ms % 86_400_000).div_ceil(1000).max(1)
}

fn secs_to_next_month(now_ms: u64) -> u64 {
    let now = time::OffsetDateTime::from_unix_timestamp((now_ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (year, month) = if now.month() == time::Month::December {
        (now.year() + 1, time::Month::January)
    } else {
        (now.year(), now.month().next())
    };
    time::Date::from_calendar_date(year, month, 1)
        .map(|d| d.midnight().assume_utc())
        .map(|next| (next - now).whole_seconds().max(1) as u64)
        .unwrap_or(86_400)
}

impl Meter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Subject, Counters>> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the day's and month's spending from the roll-up rows of this month.
    pub fn load(&self, rows: &[(DailyKey, Totals)], today: &str) {
        let mut map = self.lock();
        for (key, totals) in rows {
            let tokens = totals.prompt_tokens + totals.completion_tokens;
            let mut add = |subject: Subject| {
                let c = map.entry(subject).or_default();
                c.day = today.to_owned();
                c.month = today[..7].to_owned();
                if key.day.get(..7) == Some(&today[..7]) {
                    c.month_tokens += tokens;
                    c.month_cost += totals.cost_usd;
                }
                if key.day == today {
                    c.day_tokens += tokens;
                    c.day_cost += totals.cost_usd;
                }
            };
            if !key.key.is_empty() {
                add(Subject::Key(key.key.clone()));
            }
            if !key.tenant.is_empty() {
                add(Subject::Tenant(key.tenant.clone()));
            }
        }
    }

    /// Admits a call against every subject's limits, counting it as a request if admitted.
    pub fn admit(
        &self,
        subjects: &[(Subject, &LlmLimits)],
        now_ms: u64,
        day: &str,
    ) -> Result<(), Refusal> {
        let mut map = self.lock();
        for (subject, limits) in subjects {
            let c = map.entry(subject.clone()).or_default();
            c.roll(now_ms, day);
            let who = subject.describe();
            let over = |message: String, retry_after_secs: u64, code| Refusal {
                message,
                retry_after_secs,
                code,
            };
            if let Some(max) = limits.requests_per_minute
                && c.window(now_ms, c.requests, c.prev_requests) >= max
            {
                return Err(over(
                    format!("{who} may make {max} LLM requests per minute"),
                    secs_to_next_minute(now_ms),
                    "rate_limit_exceeded",
                ));
            }
            if let Some(max) = limits.tokens_per_minute
                && c.window(now_ms, c.tokens, c.prev_tokens) >= max
            {
                return Err(over(
                    format!("{who} may use {max} tokens per minute"),
                    secs_to_next_minute(now_ms),
                    "rate_limit_exceeded",
                ));
            }
            if let Some(max) = limits.tokens_per_day
                && c.day_tokens >= max
            {
                return Err(over(
                    format!("{who} has used its budget of {max} tokens for today (UTC)"),
                    secs_to_next_day(now_ms),
                    "insufficient_quota",
                ));
            }
            if let Some(max) = limits.tokens_per_month
                && c.month_tokens >= max
            {
                return Err(over(
                    format!("{who} has used its budget of {max} tokens for this month"),
                    secs_to_next_month(now_ms),
                    "insufficient_quota",
                ));
            }
            if let Some(max) = limits.cost_per_day_usd
                && c.day_cost >= max
            {
                return Err(over(
                    format!("{who} has spent its budget of {max} USD for today (UTC)"),
                    secs_to_next_day(now_ms),
                    "insufficient_quota",
                ));
            }
            if let Some(max) = limits.cost_per_month_usd
                && c.month_cost >= max
            {
                return Err(over(
                    format!("{who} has spent its budget of {max} USD for this month"),
                    secs_to_next_month(now_ms),
                    "insufficient_quota",
                ));
            }
        }
        for (subject, _) in subjects {
            if let Some(c) = map.get_mut(subject) {
                c.requests += 1;
            }
        }
        Ok(())
    }

    /// Counts what a call spent.
    pub fn spend(&self, subjects: &[Subject], tokens: u64, cost: f64, now_ms: u64, day: &str) {
        let mut map = self.lock();
        for subject in subjects {
            let c = map.entry(subject.clone()).or_default();
            c.roll(now_ms, day);
            c.tokens += tokens;
            c.day_tokens += tokens;
            c.month_tokens += tokens;
            c.day_cost += cost;
            c.month_cost += cost;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: &str = "2026-12-03";
    // 2026-12-03T00:00:00Z
    const T0: u64 = 1_796_256_000_000;

    #[test]
    fn requests_per_minute_slide() {
        let m = Meter::default();
        let limits = LlmLimits {
            requests_per_minute: Some(3),
            ..Default::default()
        };
        let key = Subject::Key("k".into());
        let subjects = [(key.clone(), &limits)];
        for _ in 0..3 {
            m.admit(&subjects, T0, DAY).expect("within");
        }
        let refused = m.admit(&subjects, T0 + 1000, DAY).expect_err("over");
        assert_eq!(refused.code, "rate_limit_exceeded");
        assert_eq!(refused.retry_after_secs, 59);
        // Half-way through the next minute half of the previous one still counts.
        assert!(m.admit(&subjects, T0 + 60_000 + 1_000, DAY).is_err());
        assert!(m.admit(&subjects, T0 + 60_000 + 45_000, DAY).is_ok());
        assert!(m.admit(&subjects, T0 + 180_000, DAY).is_ok());
    }

    #[test]
    fn tokens_per_minute_and_per_month() {
        let m = Meter::default();
        let limits = LlmLimits {
            tokens_per_minute: Some(1_000),
            tokens_per_month: Some(5_000),
            ..Default::default()
        };
        let key = Subject::Key("k".into());
        let subjects = [(key.clone(), &limits)];
        m.admit(&subjects, T0, DAY).expect("nothing spent yet");
        m.spend(std::slice::from_ref(&key), 1_000, 0.0, T0, DAY);
        let refused = m
            .admit(&subjects, T0 + 1_000, DAY)
            .expect_err("minute spent");
        assert_eq!(refused.code, "rate_limit_exceeded");
        assert!(
            refused.message.contains("tokens per minute"),
            "{}",
            refused.message
        );
        // Two minutes on, the minute is fresh; the month keeps counting.
        let later = T0 + 120_000;
        m.admit(&subjects, later, DAY).expect("a new minute");
        for i in 0..4 {
            m.spend(
                std::slice::from_ref(&key),
                1_000,
                0.0,
                later + 120_000 * i,
                DAY,
            );
        }
        let refused = m
            .admit(&subjects, later + 600_000, DAY)
            .expect_err("month spent");
        assert_eq!(refused.code, "insufficient_quota");
        assert!(
            refused.message.contains("tokens for this month"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn budgets_per_day_and_tenant_and_the_restart() {
        let m = Meter::default();
        let key_limits = LlmLimits::default();
        let tenant_limits = LlmLimits {
            tokens_per_day: Some(100),
            cost_per_month_usd: Some(1.0),
            ..Default::default()
        };
        let key = Subject::Key("k".into());
        let tenant = Subject::Tenant("t".into());
        let subjects = [(key.clone(), &key_limits), (tenant.clone(), &tenant_limits)];
        m.admit(&subjects, T0, DAY).expect("first");
        m.spend(&[key.clone(), tenant.clone()], 100, 0.2, T0, DAY);
        let refused = m.admit(&subjects, T0 + 5, DAY).expect_err("day budget");
        assert_eq!(refused.code, "insufficient_quota");
        assert!(
            refused.message.contains("your tenant"),
            "{}",
            refused.message
        );
        // The next day the token budget is fresh.
        let next = T0 + 86_400_000;
        m.admit(&subjects, next, "2026-12-04").expect("next day");
        // A restart rebuilds the month's cost from the roll-up.
        let restarted = Meter::default();
        let row = |day: &str, cost: f64| {
            (
                DailyKey {
                    day: day.into(),
                    tenant: "t".into(),
                    key: "k".into(),
                    model: "m".into(),
                    upstream: "u".into(),
                },
                Totals {
                    requests: 1,
                    cost_usd: cost,
                    ..Default::default()
                },
            )
        };
        restarted.load(&[row("2026-12-01", 0.6), row("2026-12-02", 0.5)], DAY);
        let refused = restarted
            .admit(&subjects, T0, DAY)
            .expect_err("month budget");
        assert!(
            refused.message.contains("USD for this month"),
            "{}",
            refused.message
        );
        assert_eq!(refused.retry_after_secs, 29 * 86_400);
    }
}
