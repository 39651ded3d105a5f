//! Repeats of a broker client's complaints, summarised: at most one line per kind of message per
//! interval, carrying how many were held back since the previous one.
//!
//! Why: a client that retries every few milliseconds while its broker is down (librdkafka
//! reported `ALL_BROKERS_DOWN` ~80 times a second here) turns an outage into a log storm that
//! buries the one line that matters and costs disk and money downstream. State changes (ready /
//! not ready) are logged by each sink as they happen; this is for everything that repeats.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one kind of repeated message may be logged.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// Distinct kinds remembered; beyond it the memory is reset (the kinds are a client's facility
/// and error names, a handful, so this only guards against a surprise).
const MAX_KINDS: usize = 256;

pub struct Throttle {
    interval: Duration,
    kinds: Mutex<HashMap<String, Window>>,
}

struct Window {
    opened: Instant,
    held_back: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(INTERVAL)
    }
}

impl Throttle {
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a message of this kind may be logged now: `Some(n)` with the number held back
    /// since the last logged one, or `None` (counted, to be reported with the next line).
    pub fn admit(&self, kind: &str) -> Option<u64> {
        self.admit_at(kind, Instant::now())
    }

    /// Forgets every window: after a recovery, the next failure is logged at once.
    pub fn reset(&self) {
        self.kinds.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn admit_at(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = kinds.get_mut(kind) {
            if now.saturating_duration_since(w.opened) < self.interval {
                w.held_back += 1;
                return None;
            }
            let held_back = w.held_back;
            *w = Window {
                opened: now,
                held_back: 0,
            };
            return Some(held_back);
        }
        if kinds.len() >= MAX_KINDS {
            kinds.clear();
        }
        kinds.insert(
            kind.to_string(),
            Window {
                opened: now,
                held_back: 0,
            },
        );
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_interval_with_the_count_held_back() {
        let t = Throttle::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(t.admit_at("FAIL", at(0)), Some(0));
        assert_eq!(t.admit_at("FAIL", at(1)), None);
        assert_eq!(t.admit_at("FAIL", at(29)), None);
        // Another kind has its own window.
        assert_eq!(t.admit_at("ALL_BROKERS_DOWN", at(29)), Some(0));
        // The window is measured from the last logged line, not the last attempt.
        assert_eq!(t.admit_at("FAIL", at(30)), Some(2));
        assert_eq!(t.admit_at("FAIL", at(31)), None);
        assert_eq!(t.admit_at("FAIL", at(60)), Some(1));
        assert_eq!(t.admit_at("FAIL", at(200)), Some(0));
        assert_eq!(t.admit_at("FAIL", at(201)), None);
        t.reset();
        assert_eq!(t.admit_at("FAIL", at(202)), Some(0));
    }

    #[test]
    fn the_number_of_kinds_is_bounded() {
        let t = Throttle::new(Duration::from_secs(30));
        let now = Instant::now();
        for i in 0..MAX_KINDS + 10 {
            assert_eq!(t.admit_at(&format!("k{i}"), now), Some(0));
        }
        assert!(t.kinds.lock().unwrap().len() <= MAX_KINDS);
    }
}
