//! The console's sessions: a bounded table of random ids, each with its expiry and its CSRF
//! token, kept server-side (the cookie holds the id only, never the admin token).
//!
//! Ids and CSRF tokens are 32 bytes from the operating system's CSPRNG. The table is keyed by
//! the SHA-256 of the id, so a lookup's timing says nothing about the ids held; CSRF tokens are
//! compared in constant time. A full table forgets the expired sessions first, then the oldest
//! one: signing in always works, and a flood of sign-ins cannot grow memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long a session lives after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions held at most (operators signed in at once, per replica).
pub const MAX_SESSIONS: usize = 256;

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(String);

struct Session {
    csrf: String,
    created: Instant,
    expires: Instant,
}

/// A session just created: the cookie's value and the page's CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub csrf: String,
}

pub struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
    ttl: Duration,
    max: usize,
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn random_token() -> Result<String, RandomError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| RandomError(e.to_string()))?;
    Ok(hex::encode(b))
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(SESSION_TTL, MAX_SESSIONS)
    }
}

impl Sessions {
    pub fn new(ttl: Duration, max: usize) -> Sessions {
        Sessions {
            table: Mutex::new(HashMap::new()),
            ttl,
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session at `now`, making room in a full table (expired ones, then the oldest).
    pub fn create(&self, now: Instant) -> Result<NewSession, RandomError> {
        let new = NewSession {
            id: random_token()?,
            csrf: random_token()?,
        };
        let mut t = self.lock();
        if t.len() >= self.max {
            t.retain(|_, s| s.expires > now);
        }
        while t.len() >= self.max {
            let Some(oldest) = t.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k) else {
                break;
            };
            t.remove(&oldest);
        }
        t.insert(
            key(&new.id),
            Session {
                csrf: new.csrf.clone(),
                created: now,
                expires: now + self.ttl,
            },
        );
        Ok(new)
    }

    /// The CSRF token of the live session `id` (an expired one is removed).
    pub fn csrf_of(&self, id: &str, now: Instant) -> Option<String> {
        let k = key(id);
        let mut t = self.lock();
        match t.get(&k) {
            Some(s) if s.expires > now => Some(s.csrf.clone()),
            Some(_) => {
                t.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Whether `presented` is the CSRF token of the live session `id` (constant time).
    pub fn csrf_matches(&self, id: &str, presented: &str, now: Instant) -> bool {
        self.csrf_of(id, now)
            .is_some_and(|csrf| bool::from(csrf.as_bytes().ct_eq(presented.as_bytes())))
    }

    /// Signs the session out; true when it existed.
    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(&key(id)).is_some()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_its_expiry_and_not_after() {
        let s = Sessions::new(Duration::from_secs(60), 8);
        let t0 = Instant::now();
        let n = s.create(t0).unwrap();
        assert_eq!(n.id.len(), 64);
        assert_ne!(n.id, n.csrf);
        assert_eq!(
            s.csrf_of(&n.id, t0 + Duration::from_secs(59)),
            Some(n.csrf.clone())
        );
        assert_eq!(s.csrf_of(&n.id, t0 + Duration::from_secs(60)), None);
        assert!(s.is_empty(), "the expired session was removed");
    }

    #[test]
    fn csrf_is_checked_per_session_whole_and_exact() {
        let s = Sessions::default();
        let now = Instant::now();
        let a = s.create(now).unwrap();
        let b = s.create(now).unwrap();
        assert!(s.csrf_matches(&a.id, &a.csrf, now));
        assert!(
            !s.csrf_matches(&a.id, &b.csrf, now),
            "another session's token"
        );
        assert!(!s.csrf_matches(&a.id, &a.csrf[..63], now), "a prefix");
        assert!(
            !s.csrf_matches(&a.id, &format!("{}0", a.csrf), now),
            "longer"
        );
        assert!(!s.csrf_matches(&a.id, "", now));
        assert!(!s.csrf_matches("not-a-session", &a.csrf, now));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_expired_then_the_oldest() {
        let s = Sessions::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        let first = s.create(t0).unwrap();
        let second = s.create(t0 + Duration::from_secs(1)).unwrap();
        let third = s.create(t0 + Duration::from_secs(2)).unwrap();
        let fourth = s.create(t0 + Duration::from_secs(3)).unwrap();
        assert_eq!(s.len(), 3);
        let at = t0 + Duration::from_secs(4);
        assert_eq!(s.csrf_of(&first.id, at), None, "the oldest went");
        for n in [&second, &third, &fourth] {
            assert!(s.csrf_of(&n.id, at).is_some());
        }
        // Later, the first two have expired: a full table drops them, not the live ones.
        let late = t0 + Duration::from_secs(11) + Duration::from_millis(500);
        let fifth = s.create(late).unwrap();
        assert!(s.csrf_of(&fifth.id, late).is_some());
        assert!(s.csrf_of(&third.id, late).is_some());
        assert!(s.csrf_of(&fourth.id, late).is_some());
        assert!(s.len() <= 3);
    }

    #[test]
    fn sign_out_removes_the_session() {
        let s = Sessions::default();
        let now = Instant::now();
        let n = s.create(now).unwrap();
        assert!(s.remove(&n.id));
        assert!(!s.remove(&n.id));
        assert!(!s.csrf_matches(&n.id, &n.csrf, now));
    }
}
