//! The `reconcile` section of the configuration and its checks.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::event::Family;
use crate::validate::Issues;

/// The sender gives up on a callback after its third retry, 1 + 5 + 15 minutes after the first
/// attempt (each attempt may take its 10 s timeout): a call younger than this may still get its
/// webhook, and reconciling it would race the sender.
pub const SENDER_RETRY_HORIZON_SECS: u64 = 21 * 60 + 4 * 10;

/// `reconcile`: ask the platform's call API, now and then, which calls ended, and publish the
/// events whose webhooks never reached every required sink (docs/reconcile.md).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    /// Base URL of the platform's API (its docs: `https://prod-api.ringg.ai/ca/api/v0`);
    /// `/calling/history` and `/calling/call-details` are appended. https, since the key travels
    /// with every request (plain http only to a loopback address); redirects are not followed.
    pub api_base: String,
    /// The platform API key, sent as `X-API-KEY` (write `${RINGG_API_KEY}`). Never logged.
    #[schemars(with = "String")]
    pub api_key: SecretString,
    /// Seconds between two passes of the running bridge (the first starts at startup);
    /// 0 runs none, leaving only `callbridge reconcile`.
    #[serde(default = "default_interval_secs")]
    pub interval_secs: u64,
    /// How far back a pass lists calls. With the memory ledger it must not exceed
    /// `idempotency.window_secs`: older deliveries are forgotten and would be published again.
    #[serde(default = "default_lookback_secs")]
    pub lookback_secs: u64,
    /// Only calls that ended longer ago than this are reconciled, so a pass never races the
    /// sender's own retries (its last one comes about 21 minutes after the first attempt).
    #[serde(default = "default_settle_secs")]
    pub settle_secs: u64,
    /// Calls asked for per history page (`limit`).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Most requests per second to the platform's API (history pages and call details
    /// together), so a pass never competes with the customer's own use of the API.
    #[serde(default = "default_requests_per_sec")]
    pub requests_per_sec: u32,
    /// How long one API request may take (milliseconds) before it counts as failed.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts per API request; a 429 (after its `Retry-After`), a 5xx, a timeout or a refused
    /// connection is tried again with exponential backoff, up to this many times in all.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Only the calls of these agents (one history listing per agent); empty: every call the
    /// API key can see.
    #[serde(default)]
    pub agent_ids: Vec<String>,
    /// Which webhook family this deployment receives: backfilled events take that family's
    /// shape and event ids (`callback`: the per-call `callback_url`; `agent_event`: an agent
    /// event subscription). Deliveries by either family count as delivered.
    #[serde(default = "default_family")]
    pub family: Family,
    /// Also backfill the analysis of completed calls (`send_analysis=true`). Costs one
    /// call-details request per completed call in the window whose analysis no sink confirmed,
    /// every pass, until it arrives or the call leaves the window.
    #[serde(default = "crate::validate::default_true")]
    pub analysis: bool,
}

fn default_interval_secs() -> u64 {
    300
}
fn default_lookback_secs() -> u64 {
    3600
}
fn default_settle_secs() -> u64 {
    1500
}
fn default_page_size() -> u32 {
    50
}
fn default_requests_per_sec() -> u32 {
    2
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_attempts() -> u32 {
    3
}
fn default_family() -> Family {
    Family::Callback
}

/// `localhost`, 127.0.0.0/8 or ::1: where plain http carries the key no further than this
/// machine (a sidecar, a test's fake API).
fn is_loopback(u: &reqwest::Url) -> bool {
    let Some(host) = u.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The largest page the history endpoint is asked for (its docs show 10 by default).
pub const MAX_PAGE_SIZE: u32 = 500;

impl ReconcileSettings {
    /// Checks that types cannot express; `window_secs` is the memory ledger's.
    pub fn validate(&self, window_secs: u64, issues: &mut Issues) {
        let p = |f: &str| format!("reconcile.{f}");
        match reqwest::Url::parse(&self.api_base) {
            Ok(u) if u.scheme() == "https" => {}
            Ok(u) if u.scheme() == "http" && is_loopback(&u) => {}
            Ok(u) if u.scheme() == "http" => issues.error(
                p("api_base"),
                format!(
                    "must be https: the API key would cross the network in clear to {}; plain                      http is accepted only to a loopback address",
                    u.host_str().unwrap_or_default()
                ),
            ),
            _ => issues.error(
                p("api_base"),
                format!("expected an https URL, got {:?}", self.api_base),
            ),
        }
        if self.api_key.expose_secret().trim().is_empty() {
            issues.error(p("api_key"), "must not be empty");
        }
        if self.lookback_secs == 0 {
            issues.error(p("lookback_secs"), "must be greater than 0");
        }
        if self.settle_secs >= self.lookback_secs {
            issues.error(
                p("settle_secs"),
                format!(
                    "must be below lookback_secs ({}): no call would ever be old enough to check",
                    self.lookback_secs
                ),
            );
        } else if self.settle_secs < SENDER_RETRY_HORIZON_SECS {
            issues.warn(
                p("settle_secs"),
                format!(
                    "below the sender's retry horizon ({SENDER_RETRY_HORIZON_SECS} s): a pass may \
                     publish an event whose webhook retry is still on its way (same id: the \
                     retry is then answered duplicate)"
                ),
            );
        }
        if self.lookback_secs > window_secs {
            issues.error(
                p("lookback_secs"),
                format!(
                    "{} s is longer than idempotency.window_secs ({window_secs} s): the ledger \
                     forgets a delivered event after window_secs, so a pass would publish it \
                     again; raise idempotency.window_secs to at least {} (and max_entries to the \
                     events of that window) or shorten the lookback",
                    self.lookback_secs, self.lookback_secs
                ),
            );
        }
        if self.interval_secs > 0
            && self.interval_secs > self.lookback_secs - self.settle_secs.min(self.lookback_secs)
        {
            issues.warn(
                p("interval_secs"),
                format!(
                    "longer than lookback_secs - settle_secs ({} s): a call can leave the window \
                     between two passes without being checked",
                    self.lookback_secs.saturating_sub(self.settle_secs)
                ),
            );
        }
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            issues.error(
                p("page_size"),
                format!(
                    "must be between 1 and {MAX_PAGE_SIZE}, got {}",
                    self.page_size
                ),
            );
        }
        if self.requests_per_sec == 0 {
            issues.error(p("requests_per_sec"), "must be greater than 0");
        }
        if self.timeout_ms == 0 {
            issues.error(p("timeout_ms"), "must be greater than 0");
        }
        if self.max_attempts == 0 {
            issues.error(p("max_attempts"), "must be at least 1");
        }
        for (i, a) in self.agent_ids.iter().enumerate() {
            if a.trim().is_empty() {
                issues.error(format!("reconcile.agent_ids[{i}]"), "must not be empty");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, Env, Settings};
    use crate::validate::assert_paths;
    use secrecy::ExposeSecret;

    fn yaml(reconcile: &str, window: u64) -> String {
        format!(
            "auth: {{mode: none}}\nidempotency: {{window_secs: {window}}}\n\
             sinks: [{{name: a, type: file, path: /tmp/x}}]\nreconcile: {reconcile}\n"
        )
    }

    fn errors(reconcile: &str, window: u64) -> Vec<String> {
        match Settings::from_yaml(&yaml(reconcile, window), "test", &Env::empty()) {
            Err(ConfigError::Invalid(v)) => v.iter().map(|i| i.to_string()).collect(),
            Err(e) => vec![e.to_string()],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn defaults_and_the_key_from_the_environment() {
        let env = Env::vars([("RINGG_API_KEY", "sk-from-env")]);
        let (s, warnings) = Settings::from_yaml(
            &yaml(
                "{api_base: \"https://api.example/v0\", api_key: \"${RINGG_API_KEY}\"}",
                3600,
            ),
            "test",
            &env,
        )
        .unwrap();
        let r = s.reconcile.unwrap();
        assert_eq!(r.api_key.expose_secret(), "sk-from-env");
        assert_eq!(
            (r.interval_secs, r.lookback_secs, r.settle_secs, r.page_size),
            (300, 3600, 1500, 50)
        );
        assert_eq!(r.family, crate::event::Family::Callback);
        assert!(r.analysis);
        assert!(
            !warnings.iter().any(|w| w.path.starts_with("reconcile")),
            "{warnings:?}"
        );
        assert!(
            !format!("{r:?}").contains("sk-from-env"),
            "the key is never printed"
        );
    }

    #[test]
    fn every_mistake_is_named_by_its_path() {
        let errs = errors(
            "{api_base: \"ftp:/x\", api_key: \"\", lookback_secs: 7200, settle_secs: 7200, \
             page_size: 0, requests_per_sec: 0, timeout_ms: 0, max_attempts: 0, agent_ids: [\"\"]}",
            3600,
        );
        assert_paths(
            &errs,
            &[
                "reconcile.api_base",
                "reconcile.api_key",
                "reconcile.lookback_secs",
                "reconcile.settle_secs",
                "reconcile.page_size",
                "reconcile.requests_per_sec",
                "reconcile.timeout_ms",
                "reconcile.max_attempts",
                "reconcile.agent_ids[0]",
            ],
        );
        let lookback = errs
            .iter()
            .find(|e| e.starts_with("reconcile.lookback_secs"))
            .unwrap();
        assert!(
            lookback.contains("idempotency.window_secs (3600 s)"),
            "{lookback}"
        );
        let errs = errors(
            "{api_base: \"https://x\", api_key: k, intervl_secs: 5}",
            3600,
        );
        assert!(errs.iter().any(|e| e.contains("intervl_secs")), "{errs:?}");
        let errs = errors("{api_key: k}", 3600);
        assert!(errs.iter().any(|e| e.contains("api_base")), "{errs:?}");
    }

    #[test]
    fn api_base_is_https_unless_loopback() {
        for remote in ["http://api.example/v0", "http://10.0.0.7:8080/v0"] {
            let errs = errors(&format!("{{api_base: \"{remote}\", api_key: k}}"), 3600);
            assert_paths(&errs, &["reconcile.api_base"]);
            assert!(errs[0].contains("must be https"), "{errs:?}");
        }
        for ok in [
            "https://api.example/v0",
            "http://127.0.0.1:8080/v0",
            "http://localhost/v0",
            "http://[::1]:9/v0",
        ] {
            let errs = errors(&format!("{{api_base: \"{ok}\", api_key: k}}"), 3600);
            assert!(errs.is_empty(), "{ok}: {errs:?}");
        }
    }

    #[test]
    fn racing_the_sender_and_gaps_between_passes_are_warned() {
        let (_, warnings) = Settings::from_yaml(
            &yaml(
                "{api_base: \"https://x\", api_key: k, settle_secs: 60, lookback_secs: 600, interval_secs: 900}",
                3600,
            ),
            "test",
            &Env::empty(),
        )
        .unwrap();
        let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
        assert!(paths.contains(&"reconcile.settle_secs"), "{paths:?}");
        assert!(paths.contains(&"reconcile.interval_secs"), "{paths:?}");
    }
}
