//! The security settings: signed bodies (`auth.signature`), the request rate limit
//! (`server.rate_limit`), TLS on the listener (`server.tls`), and their checks.
//!
//! Kept apart from `config/mod.rs` so the security surface reads in one place (docs/security.md
//! describes the threat model each control answers).

use std::path::PathBuf;

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::validate::Issues;

/// Verifies an HMAC over each webhook's raw body (and a timestamp), so a request seen once can
/// neither be altered nor replayed later.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureSettings {
    /// `standard-webhooks` (headers `webhook-id`, `webhook-timestamp`, `webhook-signature`, as
    /// Svix and the Standard Webhooks spec send them) or `hmac` (one header holding an HMAC of
    /// the body, as GitHub's `X-Hub-Signature-256` does).
    pub scheme: SignatureScheme,
    /// Every listed secret is tried, so a secret can be rotated without downtime. For
    /// `standard-webhooks`, the secret as the sender shows it (`whsec_<base64>`; the `whsec_`
    /// prefix is optional); for `hmac`, the secret's bytes as written.
    #[schemars(with = "Vec<String>")]
    pub secrets: Vec<SecretString>,
    /// A signed timestamp further than this from the bridge's clock (either way) is refused
    /// (401): a captured request cannot be replayed after it. Within it, a replay carries the
    /// same body, hence the same event id, and is answered as a duplicate by the idempotency
    /// ledger, so `idempotency.window_secs` must be at least this.
    #[serde(default = "default_tolerance_secs")]
    pub tolerance_secs: u64,
    /// `hmac` only: the header carrying the signature (e.g. `X-Hub-Signature-256`).
    #[serde(default)]
    pub header: Option<String>,
    /// `hmac` only: the hash of the HMAC (sha256 when omitted).
    #[serde(default)]
    pub algorithm: Option<HmacAlgorithm>,
    /// `hmac` only: how the signature is written in the header (hex when omitted).
    #[serde(default)]
    pub encoding: Option<SignatureEncoding>,
    /// `hmac` only: text before the signature in the header, e.g. `sha256=` (GitHub).
    #[serde(default)]
    pub prefix: Option<String>,
    /// `hmac` only: a header holding the Unix time (seconds) of the request. When set, the HMAC
    /// covers `<timestamp>.<body>` and the timestamp must be within `tolerance_secs`; without
    /// it the HMAC covers the body alone and nothing bounds a replay in time (the ledger still
    /// answers a replay within `idempotency.window_secs` as a duplicate).
    #[serde(default)]
    pub timestamp_header: Option<String>,
}

fn default_tolerance_secs() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    StandardWebhooks,
    Hmac,
}

#[derive(
    Debug, Clone, Copy, Deserialize, serde::Serialize, schemars::JsonSchema, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    #[default]
    Sha256,
    Sha512,
}

#[derive(
    Debug, Clone, Copy, Deserialize, serde::Serialize, schemars::JsonSchema, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    #[default]
    Hex,
    Base64,
}

/// The Standard Webhooks spec asks for secrets of 24 to 64 bytes.
const MIN_SECRET_BYTES: usize = 24;

/// The key bytes of a `standard-webhooks` secret: base64 after an optional `whsec_` prefix.
pub fn standard_webhooks_key(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

impl SignatureSettings {
    pub fn validate(&self, issues: &mut Issues) {
        const P: &str = "auth.signature";
        if self.secrets.is_empty() {
            issues.error(format!("{P}.secrets"), "at least one secret is required");
        }
        for (i, s) in self.secrets.iter().enumerate() {
            let s = s.expose_secret();
            let path = format!("{P}.secrets[{i}]");
            let len = match self.scheme {
                SignatureScheme::StandardWebhooks => match standard_webhooks_key(s) {
                    Some(k) => k.len(),
                    None => {
                        issues.error(path, "not a standard-webhooks secret (whsec_<base64>)");
                        continue;
                    }
                },
                SignatureScheme::Hmac => s.len(),
            };
            if len == 0 {
                issues.error(path, "must not be empty");
            } else if len < MIN_SECRET_BYTES {
                issues.warn(
                    path,
                    format!("{len} bytes: a secret should have at least {MIN_SECRET_BYTES}"),
                );
            }
        }
        if self.tolerance_secs == 0 {
            issues.error(format!("{P}.tolerance_secs"), "must be greater than 0");
        }
        match self.scheme {
            SignatureScheme::StandardWebhooks => {
                for (name, set) in [
                    ("header", self.header.is_some()),
                    ("algorithm", self.algorithm.is_some()),
                    ("encoding", self.encoding.is_some()),
                    ("prefix", self.prefix.is_some()),
                    ("timestamp_header", self.timestamp_header.is_some()),
                ] {
                    if set {
                        issues.error(
                            format!("{P}.{name}"),
                            "only for scheme: hmac (standard-webhooks fixes its headers and HMAC)",
                        );
                    }
                }
            }
            SignatureScheme::Hmac => {
                match &self.header {
                    None => issues.error(
                        format!("{P}.header"),
                        "scheme: hmac needs the header carrying the signature",
                    ),
                    Some(h) => check_header_name(h, &format!("{P}.header"), issues),
                }
                if let Some(h) = &self.timestamp_header {
                    check_header_name(h, &format!("{P}.timestamp_header"), issues);
                }
            }
        }
    }
}

fn check_header_name(name: &str, path: &str, issues: &mut Issues) {
    if name.parse::<actix_web::http::header::HeaderName>().is_err() {
        issues.error(path, format!("not a valid header name: {name:?}"));
    }
}

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

/// TLS on the webhook listener (rustls). The files are read again when they change, as
/// cert-manager rotates them, without a restart; a change that does not load (a half-written
/// pair, a key that does not fit) keeps the previous certificate and is logged.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the files' modification times are checked, in seconds.
    #[serde(default = "default_tls_reload_secs")]
    pub reload_secs: u64,
}

fn default_tls_reload_secs() -> u64 {
    30
}

impl TlsSettings {
    pub fn validate(&self, issues: &mut Issues) {
        for (name, path) in [("cert_file", &self.cert_file), ("key_file", &self.key_file)] {
            if path.as_os_str().is_empty() {
                issues.error(format!("server.tls.{name}"), "must not be empty");
            }
        }
        if self.reload_secs == 0 {
            issues.error("server.tls.reload_secs", "must be greater than 0");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, Env, Settings};
    use crate::validate::assert_paths;

    fn errors(signature: &str) -> Vec<String> {
        let yaml = format!(
            "auth: {{signature: {signature}}}\nsinks: [{{name: a, type: file, path: /tmp/x}}]"
        );
        match Settings::from_yaml(&yaml, "test", &Env::empty()) {
            Err(ConfigError::Invalid(v)) => v.iter().map(|i| i.to_string()).collect(),
            Err(e) => vec![format!("{e:#}")],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn a_signature_alone_is_enough_authentication_and_takes_defaults() {
        let yaml = "auth: {signature: {scheme: standard-webhooks, secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]}}\n\
                    sinks: [{name: a, type: file, path: /tmp/x}]";
        let (s, warnings) = Settings::from_yaml(yaml, "test", &Env::empty()).unwrap();
        let sig = s.auth.signature.unwrap();
        assert_eq!(sig.scheme, SignatureScheme::StandardWebhooks);
        assert_eq!(sig.tolerance_secs, 300);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn scheme_specific_fields_are_checked() {
        assert_paths(
            &errors("{scheme: standard-webhooks, secrets: [not!base64], header: X-Sig}"),
            &["auth.signature.secrets[0]", "auth.signature.header"],
        );
        assert_paths(
            &errors("{scheme: hmac, secrets: [], tolerance_secs: 0}"),
            &[
                "auth.signature.secrets",
                "auth.signature.tolerance_secs",
                "auth.signature.header",
            ],
        );
        assert_paths(
            &errors("{scheme: hmac, secrets: [s3cr3t-s3cr3t-s3cr3t-s3cr3t], header: 'bad header', timestamp_header: 'x:y'}"),
            &["auth.signature.header", "auth.signature.timestamp_header"],
        );
        assert!(
            errors("{scheme: hmac, secrets: [k], header: X-Sig, algorithm: md5}")
                .iter()
                .any(|e| e.contains("md5"))
        );
        assert!(errors(
            "{scheme: hmac, secrets: [s3cr3t-s3cr3t-s3cr3t-s3cr3t], header: X-Hub-Signature-256, algorithm: sha512, encoding: base64, prefix: 'sha512=', timestamp_header: X-Timestamp}"
        )
        .is_empty());
    }

    #[test]
    fn admin_listen_and_rate_limit_are_checked() {
        let errs = |server: &str| {
            match Settings::from_yaml(
            &format!("server: {server}\nauth: {{mode: none}}\nsinks: [{{name: a, type: file, path: /tmp/x}}]"),
            "test",
            &Env::empty(),
        ) {
            Err(ConfigError::Invalid(v)) => v.iter().map(|i| i.to_string()).collect(),
            Err(e) => vec![format!("{e:#}")],
            Ok(_) => vec![],
        }
        };
        assert_paths(&errs("{admin_listen: nope}"), &["server.admin_listen"]);
        assert_paths(
            &errs("{listen: '0.0.0.0:9000', admin_listen: '0.0.0.0:9000'}"),
            &["server.admin_listen"],
        );
        assert!(errs("{admin_listen: '127.0.0.1:9090'}").is_empty());
        assert_paths(
            &errs("{rate_limit: {requests: 0, period_secs: 0, burst: 0}}"),
            &[
                "server.rate_limit.requests",
                "server.rate_limit.period_secs",
                "server.rate_limit.burst",
            ],
        );
        assert!(errs("{rate_limit: {requests: 10, by: nobody}}")
            .iter()
            .any(|e| e.contains("nobody")));
    }

    #[test]
    fn a_short_secret_is_warned_and_a_window_shorter_than_the_tolerance_too() {
        let yaml = "idempotency: {window_secs: 60}\n\
                    auth: {signature: {scheme: hmac, header: X-Sig, secrets: [short]}}\n\
                    sinks: [{name: a, type: file, path: /tmp/x}]";
        let (_, warnings) = Settings::from_yaml(yaml, "test", &Env::empty()).unwrap();
        let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
        assert!(paths.contains(&"auth.signature.secrets[0]"), "{paths:?}");
        assert!(paths.contains(&"idempotency.window_secs"), "{paths:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.path == "idempotency.window_secs" && w.message.contains("tolerance")),
            "{warnings:?}"
        );
    }
}
