//! The `admin` section: who may use the operator routes of the admin listener (`crate::admin`).
//!
//! Here rather than in `admin/`, beside `auth` (whose credentials it must never share): the admin
//! plane answers through `ingest`'s errors, and `ingest` reads `config`, so settings kept in
//! `admin/` would close a circle `config → admin → ingest → config`. `config` runs
//! [`AdminSettings::validate`] with what it needs from the other sections: the listener's
//! address and the webhook credentials.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::validate::Issues;

/// The operator's credential, never a webhook's: the platform knows the webhook key (it sends
/// it in every callback) and so does every log on its way.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Accepted `Authorization: Bearer <token>` values on the admin listener's operator routes
    /// (the spool, dead letters, redrive, purge, reconcile); every listed token is accepted, so
    /// a token can be rotated without downtime. Write `${CALLBRIDGE_ADMIN_TOKEN}` rather than
    /// the token. Required when `server.admin_listen` is not a loopback address; without any,
    /// a loopback admin listener serves the operator routes to anyone on the host (with a
    /// warning at startup).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub tokens: Vec<SecretString>,
    /// Failed admin authentications one client address may make per minute (also the burst);
    /// beyond it every admin request from that address is answered 429 with `Retry-After`
    /// until its budget refills, the right token included, so guessing stays slow.
    #[serde(default = "default_failed_auth_per_minute")]
    pub failed_auth_per_minute: u32,
}

fn default_failed_auth_per_minute() -> u32 {
    10
}

/// Not derived: an omitted `admin:` section must take the same failure budget as an omitted
/// `failed_auth_per_minute`.
impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            tokens: Vec::new(),
            failed_auth_per_minute: default_failed_auth_per_minute(),
        }
    }
}

/// A token shorter than this is easy to guess even at the failure rate limit.
const MIN_TOKEN_BYTES: usize = 16;

impl AdminSettings {
    /// `admin_listen_loopback`: whether `server.admin_listen` is a loopback address;
    /// `webhook_credentials`: every API key and bearer token the webhook listener accepts;
    /// `sample_key`: the key printed in the sender's public documentation.
    pub fn validate(
        &self,
        admin_listen: &str,
        admin_listen_loopback: bool,
        webhook_credentials: &[&str],
        sample_key: &str,
        issues: &mut Issues,
    ) {
        if self.tokens.is_empty() {
            if admin_listen_loopback {
                issues.warn(
                    "admin.tokens",
                    format!(
                        "no admin tokens: anyone on this host can use the operator routes on \
                         {admin_listen}; set admin.tokens before exposing it"
                    ),
                );
            } else {
                issues.error(
                    "server.admin_listen",
                    format!(
                        "{admin_listen} is not a loopback address: the operator routes need \
                         admin.tokens (e.g. tokens: [\"${{CALLBRIDGE_ADMIN_TOKEN}}\"]), or \
                         listen on 127.0.0.1"
                    ),
                );
            }
        }
        for (i, t) in self.tokens.iter().enumerate() {
            let t = t.expose_secret();
            let path = format!("admin.tokens[{i}]");
            if t.trim().is_empty() {
                issues.error(path, "must not be empty");
            } else if t == sample_key {
                issues.error(
                    path,
                    "this is the sample key printed in the sender's public documentation: \
                     never an admin token",
                );
            } else if webhook_credentials.contains(&t) {
                issues.error(
                    path,
                    "is also a webhook credential (auth.api_keys or auth.bearer): the sender \
                     and every log on its way know those; use a token of its own",
                );
            } else if t.len() < MIN_TOKEN_BYTES {
                issues.warn(
                    path,
                    format!(
                        "{} bytes: an admin token should have at least {MIN_TOKEN_BYTES} \
                         (e.g. `openssl rand -hex 32`)",
                        t.len()
                    ),
                );
            }
        }
        if self.failed_auth_per_minute == 0 {
            issues.error("admin.failed_auth_per_minute", "must be greater than 0");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, Env, Settings};

    /// (errors, warnings) as `path: message` lines.
    fn check(server: &str, admin: &str) -> (Vec<String>, Vec<String>) {
        let yaml = format!(
            "server: {server}\nauth: {{api_keys: {{keys: [webhook-key-1]}}, bearer: {{tokens: [webhook-token-1]}}}}\n\
             {admin}sinks: [{{name: a, type: file, path: /tmp/x}}]"
        );
        match Settings::from_yaml(&yaml, "test", &Env::empty()) {
            Ok((_, w)) => (vec![], w.iter().map(|i| i.to_string()).collect()),
            Err(ConfigError::Invalid(v)) => (v.iter().map(|i| i.to_string()).collect(), vec![]),
            Err(e) => (vec![format!("{e:#}")], vec![]),
        }
    }

    #[test]
    fn the_admin_listener_is_loopback_by_default_and_open_there_with_a_warning() {
        let (s, _) = Settings::from_yaml(
            "auth: {mode: none}\nsinks: [{name: a, type: file, path: /tmp/x}]",
            "test",
            &Env::empty(),
        )
        .unwrap();
        assert_eq!(s.server.admin_listen, "127.0.0.1:9090");
        assert!(s.admin.tokens.is_empty());
        assert_eq!(s.admin.failed_auth_per_minute, 10);
        let (errors, warnings) = check("{}", "");
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            warnings.iter().any(|w| w.starts_with("admin.tokens")),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_routable_admin_listener_needs_tokens_of_its_own() {
        for addr in ["0.0.0.0:9090", "10.1.2.3:9090", "[::]:9090"] {
            let (errors, _) = check(&format!("{{admin_listen: '{addr}'}}"), "");
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("server.admin_listen") && e.contains("admin.tokens")),
                "{addr}: {errors:?}"
            );
        }
        let routable = "{admin_listen: '0.0.0.0:9090'}";
        let (errors, warnings) = check(routable, "admin: {tokens: [an-admin-token-of-its-own]}\n");
        assert!(
            errors.is_empty() && warnings.is_empty(),
            "{errors:?} {warnings:?}"
        );
        for (token, why) in [
            ("webhook-key-1", "also a webhook credential"),
            ("webhook-token-1", "also a webhook credential"),
            ("sk_live_1234567890abcdef", "sample key"),
            ("' '", "must not be empty"),
        ] {
            let (errors, _) = check(
                routable,
                &format!("admin: {{tokens: [ok-admin-token-0001, {token}]}}\n"),
            );
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("admin.tokens[1]") && e.contains(why)),
                "{token}: {errors:?}"
            );
        }
        let (_, warnings) = check(routable, "admin: {tokens: [short]}\n");
        assert!(
            warnings.iter().any(|w| w.starts_with("admin.tokens[0]")),
            "{warnings:?}"
        );
        let (errors, _) = check("{}", "admin: {failed_auth_per_minute: 0}\n");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("admin.failed_auth_per_minute")),
            "{errors:?}"
        );
        let (errors, _) = check("{}", "admin: {token: [x]}\n");
        assert!(
            errors.iter().any(|e| e.contains("token")),
            "unknown field: {errors:?}"
        );
    }
}
