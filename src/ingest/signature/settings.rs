//! The body signature's settings (`auth.signature`) and their checks.

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
