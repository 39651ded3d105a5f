//! The admin credential: `Authorization: Bearer <token>` against `admin.tokens`, compared in
//! constant time, and a budget of failed attempts per client address.
//!
//! Candidates and tokens are both hashed with SHA-256 first and every token is compared (no
//! early exit), so timing reveals neither which token matched nor how much of one did. A
//! client address that spends its failure budget is refused (429 + `Retry-After`) for *every*
//! admin request until the budget refills, the right token included: otherwise a guesser
//! would learn a right guess at full speed behind the 429s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::settings::AdminSettings;
use crate::ingest::error::ApiError;
use crate::ingest::ratelimit::RateLimited;

/// Addresses remembered as refused at most; beyond it the ones whose refusal ended are
/// forgotten (a flood from many addresses cannot grow the map without bound).
const MAX_BLOCKED: usize = 4096;

pub struct AdminAuth {
    tokens: Vec<[u8; 32]>,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    /// Addresses over their failure budget, and until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Whole seconds, rounded up: a client that waits as told is admitted.
fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl AdminAuth {
    pub fn new(settings: &AdminSettings) -> AdminAuth {
        let per_minute =
            NonZeroU32::new(settings.failed_auth_per_minute).unwrap_or(NonZeroU32::MIN);
        AdminAuth {
            tokens: settings
                .tokens
                .iter()
                .map(|t| digest(t.expose_secret().as_bytes()))
                .collect(),
            failures: DefaultKeyedRateLimiter::dashmap(Quota::per_minute(per_minute)),
            clock: DefaultClock::default(),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// No tokens configured (validation allows that on a loopback admin listener only).
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether this request may use an operator route: `Ok`, 401 (no or a wrong token) or 429
    /// (its address spent its failure budget). Failures are logged with the address and what
    /// was wrong, never with what was presented.
    pub fn check(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<(), ApiError> {
        if let Some(ip) = peer {
            if let Some(left) = self.blocked_for(ip) {
                return Err(ApiError::RateLimited(RateLimited {
                    retry_after_secs: whole_secs(left),
                }));
            }
        }
        if self.is_open() {
            return Ok(());
        }
        let mut presented = false;
        let mut hit = Choice::from(0);
        for v in headers.get_all(AUTHORIZATION) {
            let v = v.as_bytes();
            if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
                presented = true;
                let d = digest(v[7..].trim_ascii());
                for t in &self.tokens {
                    hit |= d.ct_eq(t);
                }
            }
        }
        if bool::from(hit) {
            return Ok(());
        }
        let reason = if presented { "invalid" } else { "missing" };
        let peer_addr = peer.map(|ip| ip.to_string()).unwrap_or_default();
        if let Some(ip) = peer {
            if let Err(not_until) = self.failures.check_key(&ip) {
                let wait = not_until.wait_time_from(self.clock.now());
                self.block(ip, wait);
                tracing::warn!(peer = %peer_addr, reason, retry_after_secs = whole_secs(wait), "admin authentication failed; failure budget spent, address refused for a while");
                return Err(ApiError::RateLimited(RateLimited {
                    retry_after_secs: whole_secs(wait),
                }));
            }
        }
        tracing::warn!(peer = %peer_addr, reason, "admin authentication failed");
        Err(if presented {
            ApiError::InvalidCredentials
        } else {
            ApiError::MissingCredentials("Authorization: Bearer <admin token>".into())
        })
    }

    fn blocked_map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.blocked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `ip` is still refused, if it is.
    fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let mut map = self.blocked_map();
        let until = *map.get(&ip)?;
        let now = Instant::now();
        if until > now {
            Some(until - now)
        } else {
            map.remove(&ip);
            None
        }
    }

    fn block(&self, ip: IpAddr, wait: Duration) {
        let now = Instant::now();
        let mut map = self.blocked_map();
        if map.len() >= MAX_BLOCKED {
            map.retain(|_, until| *until > now);
            self.failures.retain_recent();
        }
        map.insert(ip, now + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn auth(yaml: &str) -> AdminAuth {
        AdminAuth::new(&serde_yaml::from_str(yaml).unwrap())
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        h
    }

    #[test]
    fn every_listed_token_is_accepted_and_nothing_else() {
        let a = auth("{tokens: [old-admin-token-0001, new-admin-token-0002]}");
        let ip = Some("192.0.2.7".parse().unwrap());
        assert!(a.check(&bearer("old-admin-token-0001"), ip).is_ok());
        assert!(a.check(&bearer("new-admin-token-0002"), ip).is_ok());
        assert!(matches!(
            a.check(&bearer("new-admin-token-000"), ip),
            Err(ApiError::InvalidCredentials)
        ));
        assert!(matches!(
            a.check(&HeaderMap::new(), ip),
            Err(ApiError::MissingCredentials(_))
        ));
    }

    #[test]
    fn a_spent_failure_budget_refuses_the_address_even_with_the_right_token() {
        let a = auth("{tokens: [right-admin-token-01], failed_auth_per_minute: 3}");
        let (ip, other) = (
            Some("192.0.2.1".parse().unwrap()),
            Some("192.0.2.2".parse().unwrap()),
        );
        for _ in 0..3 {
            assert!(matches!(
                a.check(&bearer("guess"), ip),
                Err(ApiError::InvalidCredentials)
            ));
        }
        let Err(ApiError::RateLimited(r)) = a.check(&bearer("guess"), ip) else {
            panic!("the fourth failure is refused 429");
        };
        assert!((1..=20).contains(&r.retry_after_secs), "{r:?}");
        assert!(
            matches!(
                a.check(&bearer("right-admin-token-01"), ip),
                Err(ApiError::RateLimited(_))
            ),
            "refused whatever it presents"
        );
        assert!(a.check(&bearer("right-admin-token-01"), other).is_ok());
    }
}
