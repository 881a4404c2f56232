//! The budget of a logs answer, shared by the journal and Docker readers.

use axon_shared::LogLine;

/// The most bytes of log text one answer holds (it has to fit a frame); the oldest lines go
/// first.
pub const MAX_LOG_BYTES: usize = 512 * 1024;

/// Drops the oldest lines until the text fits [`MAX_LOG_BYTES`]; true if any were dropped.
pub fn trim_to_budget(lines: &mut Vec<LogLine>) -> bool {
    let mut total = 0usize;
    let mut keep_from = lines.len();
    for (i, line) in lines.iter().enumerate().rev() {
        total += line.message.len() + 64;
        if total > MAX_LOG_BYTES {
            break;
        }
        keep_from = i;
    }
    if keep_from == 0 {
        return false;
    }
    lines.drain(..keep_from);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_budget_keeps_the_newest_lines() {
        let line = |i: usize| LogLine {
            ts_ms: None,
            stream: None,
            priority: None,
            message: format!("{i}:{}", "x".repeat(1000)),
        };
        let mut lines: Vec<LogLine> = (0..2000).map(line).collect();
        assert!(trim_to_budget(&mut lines));
        assert!(lines.len() < 2000);
        assert!(lines.last().expect("last").message.starts_with("1999:"));
        let mut few: Vec<LogLine> = (0..3).map(line).collect();
        assert!(!trim_to_budget(&mut few));
        assert_eq!(few.len(), 3);
    }
}
