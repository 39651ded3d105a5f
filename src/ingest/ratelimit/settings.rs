//! The request rate limit's settings (`server.rate_limit`) and their checks.

use serde::Deserialize;

use crate::validate::Issues;

/// A request rate limit per client (GCRA: a sustained rate and a burst). Beyond it a webhook
/// is answered 429 with `Retry-After`. Off unless configured: the voice platform treats every
/// 4xx, 429 included, as final, so a limit below its peak loses its events (docs/security.md).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests each client may sustain per `period_secs`.
    pub requests: u32,
    /// The period `requests` are counted over, in seconds.
    #[serde(default = "default_rate_period_secs")]
    pub period_secs: u64,
    /// Requests a client may send at once after being idle (the bucket size); `requests` when
    /// omitted.
    #[serde(default)]
    pub burst: Option<u32>,
    /// What identifies a client: `address` (the TCP peer's IP, checked before authentication,
    /// so it also slows down guessing credentials; behind an ingress every request shares the
    /// ingress's address) or `credential` (the API key or bearer token that authenticated the
    /// request, checked after authentication; the peer's IP for signature-only requests).
    #[serde(default)]
    pub by: RateLimitKey,
}

fn default_rate_period_secs() -> u64 {
    1
}

#[derive(
    Debug, Clone, Copy, Deserialize, serde::Serialize, schemars::JsonSchema, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitKey {
    #[default]
    Address,
    Credential,
}

impl RateLimitSettings {
    pub fn validate(&self, issues: &mut Issues) {
        const P: &str = "server.rate_limit";
        if self.requests == 0 {
            issues.error(format!("{P}.requests"), "must be greater than 0");
        }
        if self.period_secs == 0 {
            issues.error(format!("{P}.period_secs"), "must be greater than 0");
        }
        if self.burst == Some(0) {
            issues.error(format!("{P}.burst"), "must be greater than 0");
        }
        issues.warn(
            P,
            "the voice platform treats 429 as final (the event is not retried): keep the limit \
             above its peak rate",
        );
    }
}
