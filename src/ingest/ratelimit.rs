//! `server.rate_limit`: a request budget per client, kept by `governor` (GCRA, one small state
//! per client in a concurrent map). Beyond it a webhook is answered 429 with `Retry-After`.
//!
//! A client is its TCP peer's address, or the credential that authenticated it: the *matched*
//! credential, not merely a presented one, so a client cannot get a fresh budget by adding a
//! random key beside its valid one. Credentials are keyed by their SHA-256 (the map never holds
//! a secret).

pub mod settings;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use settings::{RateLimitKey, RateLimitSettings};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    Address(IpAddr),
    Credential([u8; 32]),
}

/// The client is over its budget; it may try again after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit reached; retry in {retry_after_secs} s")]
pub struct RateLimited {
    pub retry_after_secs: u64,
}

pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<Client>,
    clock: DefaultClock,
    pub by: RateLimitKey,
    checks: AtomicU64,
}

/// Every this many checks, clients whose budget is full again are forgotten: the map holds
/// only clients seen recently, whatever the number of addresses a flood comes from.
const CLEANUP_EVERY: u64 = 4096;

impl RateLimiter {
    pub fn new(settings: &RateLimitSettings) -> RateLimiter {
        let requests = NonZeroU32::new(settings.requests).unwrap_or(NonZeroU32::MIN);
        let burst = settings.burst.and_then(NonZeroU32::new).unwrap_or(requests);
        let period = Duration::from_secs(settings.period_secs.max(1)) / requests.get();
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(requests))
            .allow_burst(burst);
        RateLimiter {
            limiter: DefaultKeyedRateLimiter::dashmap(quota),
            clock: DefaultClock::default(),
            by: settings.by,
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one request from `client`'s budget.
    pub fn check(&self, client: &Client) -> Result<(), RateLimited> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % CLEANUP_EVERY == CLEANUP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(client).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            RateLimited {
                // Whole seconds, rounded up: a client that waits as told is admitted.
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }

    /// Clients currently remembered (for tests and metrics).
    pub fn clients(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(yaml: &str) -> RateLimiter {
        RateLimiter::new(&serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_and_others_are_not_affected() {
        let l = limiter("{requests: 2, period_secs: 60}");
        let a = Client::Address("192.0.2.1".parse().unwrap());
        let b = Client::Address("192.0.2.2".parse().unwrap());
        assert_eq!(l.check(&a), Ok(()));
        assert_eq!(l.check(&a), Ok(()));
        let refused = l.check(&a).unwrap_err();
        // one request comes back every 30 s
        assert!((29..=30).contains(&refused.retry_after_secs), "{refused:?}");
        assert_eq!(l.check(&b), Ok(()));
        assert_eq!(l.check(&Client::Credential([7; 32])), Ok(()));
        assert_eq!(l.clients(), 3);
    }

    #[test]
    fn burst_is_separate_from_the_sustained_rate() {
        let l = limiter("{requests: 1, period_secs: 3600, burst: 5, by: credential}");
        let c = Client::Credential([1; 32]);
        for _ in 0..5 {
            assert_eq!(l.check(&c), Ok(()));
        }
        let refused = l.check(&c).unwrap_err();
        assert!(refused.retry_after_secs > 3500, "{refused:?}");
        assert_eq!(l.by, RateLimitKey::Credential);
    }
}
