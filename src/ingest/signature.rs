//! Signed bodies (`auth.signature`): an HMAC over the raw body bytes and a timestamp, checked
//! before the body is parsed.
//!
//! A static key authenticates a request, not its body: whoever sees one request could alter it
//! or send it again forever. An HMAC binds the secret to these exact bytes and to a time; the
//! tolerance bounds how long a captured request stays usable, and within the tolerance a replay
//! carries the same body, hence the same deterministic event id, so the idempotency ledger
//! answers it as a duplicate (docs/security.md).
//!
//! Two schemes:
//! - `standard-webhooks`: `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
//!   several space-separated signatures per header (the sender signs with old and new secrets
//!   while rotating); signatures of other versions (`v1a`, …) are ignored.
//! - `hmac`: one header holding `<prefix><hex or base64 HMAC>` of the body, or of
//!   `"<timestamp>.<body>"` when a timestamp header is configured.
//!
//! Comparisons are constant-time (`subtle`), every secret is tried against every signature (no
//! early exit), and the secrets are kept in `secrecy` boxes, never printed.

pub mod settings;

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::header::{HeaderMap, HeaderName};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Sha256, Sha512};
use subtle::{Choice, ConstantTimeEq};

use settings::{
    standard_webhooks_key, HmacAlgorithm, SignatureEncoding, SignatureScheme, SignatureSettings,
};

const WEBHOOK_ID: &str = "webhook-id";
const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// Why a request's signature was refused. The messages name headers and the tolerance, never a
/// secret or the expected signature: they are returned to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureFailure {
    #[error("missing the {0} header")]
    MissingHeader(String),
    #[error("the {header} header is malformed: {reason}")]
    Malformed {
        header: String,
        reason: &'static str,
    },
    #[error(
        "the {header} timestamp is {skew_secs} s away from the receiver's clock, outside the \
         {tolerance_secs} s tolerance"
    )]
    OutsideTolerance {
        header: String,
        skew_secs: u64,
        tolerance_secs: u64,
    },
    #[error("no signature in the {0} header matches the body with any configured secret")]
    Mismatch(String),
}

enum Scheme {
    StandardWebhooks,
    Hmac {
        header: HeaderName,
        algorithm: HmacAlgorithm,
        encoding: SignatureEncoding,
        prefix: String,
        timestamp_header: Option<HeaderName>,
    },
}

pub struct Verifier {
    scheme: Scheme,
    keys: Vec<SecretSlice<u8>>,
    tolerance_secs: u64,
}

/// Seconds since the Unix epoch on this machine's clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, SignatureFailure> {
    let v = headers
        .get(name)
        .ok_or_else(|| SignatureFailure::MissingHeader(name.to_string()))?;
    v.to_str().map_err(|_| SignatureFailure::Malformed {
        header: name.to_string(),
        reason: "not visible ASCII",
    })
}

/// The HMAC of `parts` concatenated, with `key`.
fn mac(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match algorithm {
        HmacAlgorithm::Sha256 => mac_with::<Hmac<Sha256>>(key, parts),
        HmacAlgorithm::Sha512 => mac_with::<Hmac<Sha512>>(key, parts),
    }
}

fn mac_with<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut m) = <M as Mac>::new_from_slice(key) else {
        return Vec::new();
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

impl Verifier {
    /// Built from validated settings (a secret that does not decode is left out; validation
    /// refused it already).
    pub fn new(settings: &SignatureSettings) -> Verifier {
        let keys = settings
            .secrets
            .iter()
            .filter_map(|s| match settings.scheme {
                SignatureScheme::StandardWebhooks => standard_webhooks_key(s.expose_secret()),
                SignatureScheme::Hmac => Some(s.expose_secret().as_bytes().to_vec()),
            })
            .filter(|k| !k.is_empty())
            .map(SecretSlice::from)
            .collect();
        let header = |h: &Option<String>| h.as_deref().and_then(|h| h.parse::<HeaderName>().ok());
        let scheme = match settings.scheme {
            SignatureScheme::StandardWebhooks => Scheme::StandardWebhooks,
            SignatureScheme::Hmac => Scheme::Hmac {
                header: header(&settings.header)
                    .unwrap_or_else(|| HeaderName::from_static("x-signature")),
                algorithm: settings.algorithm.unwrap_or_default(),
                encoding: settings.encoding.unwrap_or_default(),
                prefix: settings.prefix.clone().unwrap_or_default(),
                timestamp_header: header(&settings.timestamp_header),
            },
        };
        Verifier {
            scheme,
            keys,
            tolerance_secs: settings.tolerance_secs,
        }
    }

    /// What needs no body: the headers are there and the timestamp is within the tolerance.
    /// Run before the body is read, so a stale or unsigned request costs no body.
    pub fn check_headers(&self, headers: &HeaderMap, now: u64) -> Result<(), SignatureFailure> {
        match &self.scheme {
            Scheme::StandardWebhooks => {
                self.standard_headers(headers, now)?;
            }
            Scheme::Hmac {
                header,
                timestamp_header,
                ..
            } => {
                header_str(headers, header.as_str())?;
                if let Some(th) = timestamp_header {
                    self.timestamp(headers, th.as_str(), now)?;
                }
            }
        }
        Ok(())
    }

    /// The whole check: headers, timestamp, and an HMAC over the raw `body` matching a
    /// signature of the request with one of the secrets.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<(), SignatureFailure> {
        match &self.scheme {
            Scheme::StandardWebhooks => {
                let (id, ts, sigs) = self.standard_headers(headers, now)?;
                let presented: Vec<Vec<u8>> = sigs
                    .split(' ')
                    .filter_map(|s| s.strip_prefix("v1,"))
                    .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .collect();
                let signed: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", body];
                self.any_matches(
                    HmacAlgorithm::Sha256,
                    &signed,
                    &presented,
                    WEBHOOK_SIGNATURE,
                )
            }
            Scheme::Hmac {
                header,
                algorithm,
                encoding,
                prefix,
                timestamp_header,
            } => {
                let ts = match timestamp_header {
                    Some(th) => Some(self.timestamp(headers, th.as_str(), now)?),
                    None => None,
                };
                let mut presented = Vec::new();
                for v in headers.get_all(header) {
                    let Some(v) = v
                        .to_str()
                        .ok()
                        .and_then(|v| v.trim().strip_prefix(prefix.as_str()))
                    else {
                        continue;
                    };
                    let decoded = match encoding {
                        SignatureEncoding::Hex => hex::decode(v).ok(),
                        SignatureEncoding::Base64 => {
                            base64::engine::general_purpose::STANDARD.decode(v).ok()
                        }
                    };
                    presented.extend(decoded);
                }
                if presented.is_empty() && headers.get(header).is_none() {
                    return Err(SignatureFailure::MissingHeader(header.to_string()));
                }
                let signed: Vec<&[u8]> = match ts {
                    Some(ts) => vec![ts.as_bytes(), b".", body],
                    None => vec![body],
                };
                self.any_matches(*algorithm, &signed, &presented, header.as_str())
            }
        }
    }

    /// Every secret's HMAC against every presented signature, in constant time, no early exit.
    fn any_matches(
        &self,
        algorithm: HmacAlgorithm,
        signed: &[&[u8]],
        presented: &[Vec<u8>],
        header: &str,
    ) -> Result<(), SignatureFailure> {
        let mut hit = Choice::from(0);
        for key in &self.keys {
            let expected = mac(algorithm, key.expose_secret(), signed);
            for p in presented {
                // Lengths are public (they follow from the algorithm); contents are compared in
                // constant time.
                hit |= expected.as_slice().ct_eq(p.as_slice());
            }
        }
        if bool::from(hit) {
            Ok(())
        } else {
            Err(SignatureFailure::Mismatch(header.to_string()))
        }
    }

    /// `webhook-id`, `webhook-timestamp` (checked against the tolerance) and the signatures.
    fn standard_headers<'a>(
        &self,
        headers: &'a HeaderMap,
        now: u64,
    ) -> Result<(&'a str, &'a str, &'a str), SignatureFailure> {
        let id = header_str(headers, WEBHOOK_ID)?;
        // The signed content is `id.timestamp.body`: an id holding a `.` could shift the
        // boundary between the parts (the spec forbids it).
        if id.is_empty() || id.contains('.') {
            return Err(SignatureFailure::Malformed {
                header: WEBHOOK_ID.into(),
                reason: "empty or containing '.'",
            });
        }
        let ts = self.timestamp(headers, WEBHOOK_TIMESTAMP, now)?;
        let sigs = header_str(headers, WEBHOOK_SIGNATURE)?;
        Ok((id, ts, sigs))
    }

    /// The timestamp header's text, once it is known to be within the tolerance.
    fn timestamp<'a>(
        &self,
        headers: &'a HeaderMap,
        name: &str,
        now: u64,
    ) -> Result<&'a str, SignatureFailure> {
        let text = header_str(headers, name)?;
        let malformed = || SignatureFailure::Malformed {
            header: name.to_string(),
            reason: "expected a Unix time in seconds",
        };
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let ts: u64 = text.parse().map_err(|_| malformed())?;
        let skew_secs = ts.abs_diff(now);
        if skew_secs > self.tolerance_secs {
            return Err(SignatureFailure::OutsideTolerance {
                header: name.to_string(),
                skew_secs,
                tolerance_secs: self.tolerance_secs,
            });
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests;
