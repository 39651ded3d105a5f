//! Who may post: API-key headers and Bearer tokens, compared in constant time.
//!
//! Candidates and configured credentials are both hashed with SHA-256 first, so the comparison
//! takes the same time whatever the lengths, and every configured credential is compared (no
//! early exit), so timing reveals neither which key matched nor how much of one did.

pub mod settings;

use actix_web::http::header::{HeaderMap, HeaderName, AUTHORIZATION};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::signature::{SignatureFailure, Verifier};
use settings::{AuthMode, AuthSettings};

pub struct Authenticator {
    disabled: bool,
    api_key_header: Option<HeaderName>,
    /// The header as configured, for messages (HeaderName prints lowercase).
    api_key_header_display: String,
    api_keys: Vec<[u8; 32]>,
    bearer_tokens: Vec<[u8; 32]>,
    /// `auth.signature`: checked on the raw body once it is read (signature.rs).
    signature: Option<Verifier>,
}

/// Why a request was refused; the message is safe to return (it reveals no credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    Missing(String),
    Invalid,
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn any_matches(candidate: &[u8], known: &[[u8; 32]]) -> bool {
    let d = digest(candidate);
    let mut hit = Choice::from(0);
    for k in known {
        hit |= d.ct_eq(k);
    }
    hit.into()
}

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> Authenticator {
        let api = settings.api_keys.as_ref();
        Authenticator {
            disabled: settings.mode == Some(AuthMode::None),
            api_key_header: api.and_then(|a| a.header.parse().ok()),
            api_key_header_display: api.map(|a| a.header.clone()).unwrap_or_default(),
            api_keys: api
                .map(|a| {
                    a.keys
                        .iter()
                        .map(|k| digest(k.expose_secret().as_bytes()))
                        .collect()
                })
                .unwrap_or_default(),
            bearer_tokens: settings
                .bearer
                .as_ref()
                .map(|b| {
                    b.tokens
                        .iter()
                        .map(|t| digest(t.expose_secret().as_bytes()))
                        .collect()
                })
                .unwrap_or_default(),
            signature: settings.signature.as_ref().map(Verifier::new),
        }
    }

    /// The signature check that needs no body (headers present, timestamp within the
    /// tolerance); `Ok` when no signature is configured.
    pub fn check_signature_headers(&self, headers: &HeaderMap) -> Result<(), SignatureFailure> {
        match &self.signature {
            Some(v) if !self.disabled => v.check_headers(headers, super::signature::unix_now()),
            _ => Ok(()),
        }
    }

    /// The signature over the raw body bytes, before anything parses them; `Ok` when no
    /// signature is configured.
    pub fn verify_signature(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), SignatureFailure> {
        match &self.signature {
            Some(v) if !self.disabled => v.verify(headers, body, super::signature::unix_now()),
            _ => Ok(()),
        }
    }

    /// The header credentials (API key, bearer token). With a signature and neither of them
    /// configured, the signature alone authenticates: nothing to check here.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        if self.disabled
            || (self.signature.is_some()
                && self.api_key_header.is_none()
                && self.bearer_tokens.is_empty())
        {
            return Ok(());
        }
        let mut presented = false;
        let mut ok = false;
        if let Some(h) = &self.api_key_header {
            for v in headers.get_all(h) {
                presented = true;
                ok |= any_matches(v.as_bytes(), &self.api_keys);
            }
        }
        if !self.bearer_tokens.is_empty() {
            for v in headers.get_all(AUTHORIZATION) {
                let v = v.as_bytes();
                if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
                    presented = true;
                    ok |= any_matches(v[7..].trim_ascii(), &self.bearer_tokens);
                }
            }
        }
        if ok {
            Ok(())
        } else if presented {
            Err(AuthFailure::Invalid)
        } else {
            Err(AuthFailure::Missing(self.expected()))
        }
    }

    /// The digest of the credential that authenticates this request (the first presented API
    /// key or bearer token that is a configured one), to key a rate limit by; `None` when none
    /// does (signature-only or disabled authentication).
    pub fn matched_credential(&self, headers: &HeaderMap) -> Option<[u8; 32]> {
        let keys = self
            .api_key_header
            .iter()
            .flat_map(|h| headers.get_all(h))
            .map(|v| (v.as_bytes(), &self.api_keys));
        let tokens = headers.get_all(AUTHORIZATION).filter_map(|v| {
            let v = v.as_bytes();
            (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
                .then(|| (v[7..].trim_ascii(), &self.bearer_tokens))
        });
        keys.chain(tokens)
            .find(|(candidate, known)| any_matches(candidate, known))
            .map(|(candidate, _)| digest(candidate))
    }

    /// Names what the request should have carried.
    fn expected(&self) -> String {
        let mut what = Vec::new();
        if self.api_key_header.is_some() {
            what.push(format!("the {} header", self.api_key_header_display));
        }
        if !self.bearer_tokens.is_empty() {
            what.push("Authorization: Bearer <token>".to_string());
        }
        what.join(" or ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn auth(yaml: &str) -> Authenticator {
        let s: AuthSettings = serde_yaml::from_str(yaml).unwrap();
        Authenticator::new(&s)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.parse().unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn any_listed_key_is_accepted_and_header_names_are_case_insensitive() {
        let a = auth("api_keys: {header: X-API-Key, keys: [old, new]}");
        assert_eq!(a.check(&headers(&[("x-api-key", "old")])), Ok(()));
        assert_eq!(a.check(&headers(&[("X-API-KEY", "new")])), Ok(()));
        assert_eq!(
            a.check(&headers(&[("X-API-Key", "ne")])),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            a.check(&headers(&[("X-API-Key", "newer")])),
            Err(AuthFailure::Invalid)
        );
        assert!(matches!(
            a.check(&headers(&[])),
            Err(AuthFailure::Missing(_))
        ));
    }

    #[test]
    fn bearer_tokens() {
        let a = auth("bearer: {tokens: [t1]}\napi_keys: {keys: [k1]}");
        assert_eq!(a.check(&headers(&[("Authorization", "Bearer t1")])), Ok(()));
        assert_eq!(
            a.check(&headers(&[("authorization", "bearer  t1 ")])),
            Ok(())
        );
        assert_eq!(
            a.check(&headers(&[("Authorization", "Bearer t2")])),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(a.check(&headers(&[("X-API-Key", "k1")])), Ok(()));
        // a key is not a token and a token is not a key
        assert_eq!(
            a.check(&headers(&[("Authorization", "Bearer k1")])),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            a.check(&headers(&[("X-API-Key", "t1")])),
            Err(AuthFailure::Invalid)
        );
        assert!(matches!(
            a.check(&headers(&[("Authorization", "Basic eDp5")])),
            Err(AuthFailure::Missing(_))
        ));
    }

    #[test]
    fn the_matched_credential_is_the_valid_one_not_any_presented_one() {
        let a = auth("bearer: {tokens: [t1]}\napi_keys: {keys: [k1]}");
        let random_key_beside_a_valid_token =
            headers(&[("X-API-Key", "random"), ("Authorization", "Bearer t1")]);
        assert_eq!(a.check(&random_key_beside_a_valid_token), Ok(()));
        assert_eq!(
            a.matched_credential(&random_key_beside_a_valid_token),
            Some(digest(b"t1"))
        );
        assert_eq!(
            a.matched_credential(&headers(&[("X-API-Key", "k1")])),
            Some(digest(b"k1"))
        );
        assert_eq!(a.matched_credential(&headers(&[("X-API-Key", "t1")])), None);
    }

    #[test]
    fn mode_none_accepts_everything() {
        assert_eq!(auth("mode: none").check(&headers(&[])), Ok(()));
    }
}
