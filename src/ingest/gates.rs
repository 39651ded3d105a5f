//! The gates a webhook passes before its event reaches the fan-out, in one place and in order.
//!
//! [`Gates::webhook`] reads as the sequence itself: each line is one gate and says what it
//! answers when the request does not pass. The order is chosen so that what costs the least is
//! checked first and a stranger is turned away before it costs memory: the rate limit and the
//! credential need only the headers, a signature's headers and timestamp too; the budget is a
//! request slot; the body's bytes are counted as they arrive (a client holds only what it has
//! sent); only a body whose signature verified is parsed, under its own byte budget, because
//! parsing is what multiplies memory.
//!
//! Each gate is also a method of its own, so another route (an operator endpoint, a future
//! console) composes the same checks with its own [`Gates`] (its own credential, limits and
//! rate limit) instead of writing them again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{web, HttpRequest};
use futures::StreamExt;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::Authenticator;
use super::error::ApiError;
use super::ratelimit::settings::RateLimitKey;
use super::ratelimit::{Client, RateLimiter};
use super::settings::ServerSettings;
use crate::event::{self, Event, EventSettings};
use crate::metrics::Metrics;

/// What the body buffer starts with at most: a client's announced length is only a claim, so
/// memory is taken as bytes arrive, not on its word.
const INITIAL_BODY_CAPACITY: usize = 16 * 1024;

/// Every check of a request, with the limits and credentials they check against. Shared by all
/// HTTP workers.
pub struct Gates {
    auth: Arc<Authenticator>,
    /// `server.rate_limit`: a request budget per client address or credential.
    rate_limit: Option<RateLimiter>,
    /// `server.max_in_flight`: one permit per request being handled.
    requests: Arc<Semaphore>,
    /// `server.max_in_flight_bytes`: one permit per body byte received, taken as it arrives.
    receiving: Arc<Semaphore>,
    /// `server.max_processing_bytes`: one permit per byte of a verified body being parsed and
    /// delivered.
    processing: Arc<Semaphore>,
    max_body_bytes: usize,
    deadline: Duration,
    retry_after_secs: u64,
    metrics: Arc<Metrics>,
}

/// A body that passed the body gate, and its share of `server.max_in_flight_bytes` (released
/// with it).
pub struct Body {
    pub bytes: web::Bytes,
    _received: Option<OwnedSemaphorePermit>,
}

/// A request that passed every gate: its normalised event, and the request slot and processing
/// budget it holds until it is answered.
pub struct Admitted {
    event: Event,
    held: Held,
}

/// The request slot and processing budget of an admitted request: keep it until the answer is
/// built (dropping it releases them).
pub struct Held {
    _slot: OwnedSemaphorePermit,
    _processing: OwnedSemaphorePermit,
}

impl Admitted {
    pub fn into_parts(self) -> (Event, Held) {
        (self.event, self.held)
    }
}

impl Gates {
    /// The webhook listener's gates: `server`'s limits, `auth`'s credentials.
    pub fn new(server: &ServerSettings, auth: Arc<Authenticator>, metrics: Arc<Metrics>) -> Gates {
        Gates {
            auth,
            rate_limit: server.rate_limit.as_ref().map(RateLimiter::new),
            requests: Arc::new(Semaphore::new(server.max_in_flight)),
            receiving: Arc::new(Semaphore::new(server.max_in_flight_bytes)),
            processing: Arc::new(Semaphore::new(server.processing_bytes())),
            max_body_bytes: server.max_body_bytes,
            deadline: Duration::from_millis(server.deadline_ms),
            retry_after_secs: server.retry_after_secs,
            metrics,
        }
    }

    /// The webhook's gates, in the order a request passes them, each with its answer when it
    /// does not. `deadline` bounds the body's arrival (the rest of the request's time is the
    /// fan-out's).
    pub async fn webhook(
        &self,
        req: &HttpRequest,
        payload: web::Payload,
        settings: &EventSettings,
        deadline: tokio::time::Instant,
    ) -> Result<Admitted, ApiError> {
        // 429 `rate_limited` + Retry-After: by address, before anything else is looked at.
        self.rate_limit(req, RateLimitKey::Address)?;
        // 401 `unauthorized`: the API key or bearer token (none needed when signature-only).
        self.credential(req)?;
        // 429 `rate_limited`: by the credential that just authenticated.
        self.rate_limit(req, RateLimitKey::Credential)?;
        // 401 `invalid_signature`: signature headers missing, or a timestamp out of tolerance.
        self.signature_headers(req)?;
        // 503 `overloaded` + Retry-After: no request slot left.
        let slot = self.budget()?;
        // 413 `payload_too_large`; 503 `overloaded` (bytes received), `body_timeout`; 400.
        let body = self.body(req, payload, deadline).await?;
        // 401 `invalid_signature`: no configured secret signed these bytes.
        self.signature(req, &body.bytes)?;
        // 503 `overloaded` (processing bytes); 400 `invalid_json`, `invalid_query`,
        // `invalid_payload` naming the field.
        let processing = self.processing(&body)?;
        let event = parse(req, &body.bytes, settings)?;
        Ok(Admitted {
            event,
            held: Held {
                _slot: slot,
                _processing: processing,
            },
        })
    }

    /// The credential the request's headers carry (`auth.api_keys`, `auth.bearer`).
    pub fn credential(&self, req: &HttpRequest) -> Result<(), ApiError> {
        Ok(self.auth.check(req.headers())?)
    }

    /// `auth.signature`'s checks that need no body: its headers are there and the timestamp is
    /// within the tolerance, so a stale or unsigned request costs no body.
    pub fn signature_headers(&self, req: &HttpRequest) -> Result<(), ApiError> {
        Ok(self.auth.check_signature_headers(req.headers())?)
    }

    /// `auth.signature` over the raw bytes, before anything parses them.
    pub fn signature(&self, req: &HttpRequest, body: &[u8]) -> Result<(), ApiError> {
        Ok(self.auth.verify_signature(req.headers(), body)?)
    }

    /// `server.rate_limit`, at the step of the request path its key belongs to: by address before
    /// authentication (also slows down guessing credentials), by credential after it (only a
    /// credential that authenticated counts; signature-only requests count by address).
    pub fn rate_limit(&self, req: &HttpRequest, step: RateLimitKey) -> Result<(), ApiError> {
        let Some(limiter) = self.rate_limit.as_ref().filter(|l| l.by == step) else {
            return Ok(());
        };
        let credential = match step {
            RateLimitKey::Address => None,
            RateLimitKey::Credential => self.auth.matched_credential(req.headers()),
        };
        let client = match (credential, req.peer_addr()) {
            (Some(c), _) => Client::Credential(c),
            (None, Some(addr)) => Client::Address(addr.ip()),
            // No peer address (not over TCP): nothing to key by.
            (None, None) => return Ok(()),
        };
        limiter.check(&client).map_err(|limited| {
            self.metrics.shed.with_label_values(&["rate"]).inc();
            ApiError::RateLimited(limited)
        })
    }

    /// The request's slot among `server.max_in_flight`, or shed at once (never queued).
    pub fn budget(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.shed("requests"))
    }

    /// The body, up to `server.max_body_bytes` (an announced Content-Length above it is refused
    /// without reading), within `deadline` (a client that announces more than it sends is
    /// answered then, connection closed). Each chunk's bytes are taken from
    /// `server.max_in_flight_bytes` as it arrives: shed when they do not fit.
    pub async fn body(
        &self,
        req: &HttpRequest,
        payload: web::Payload,
        deadline: tokio::time::Instant,
    ) -> Result<Body, ApiError> {
        tokio::time::timeout_at(deadline, self.read_body(req, payload))
            .await
            .map_err(|_| ApiError::BodyTimeout {
                deadline_ms: self.deadline.as_millis() as u64,
                retry_after_secs: self.retry_after_secs,
            })?
    }

    async fn read_body(
        &self,
        req: &HttpRequest,
        mut payload: web::Payload,
    ) -> Result<Body, ApiError> {
        let limit = self.max_body_bytes;
        let declared = declared_length(req);
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let mut buf =
            web::BytesMut::with_capacity(declared.unwrap_or(1024).min(INITIAL_BODY_CAPACITY));
        let mut received: Option<OwnedSemaphorePermit> = None;
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(ApiError::BodyRead)?;
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            let more = self.take(&self.receiving, chunk.len(), "bytes")?;
            match received.as_mut() {
                Some(held) => held.merge(more),
                None => received = Some(more),
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Body {
            bytes: buf.freeze(),
            _received: received,
        })
    }

    /// The body's size from `server.max_processing_bytes`, held until the answer: what bounds
    /// the memory of parsing and delivering.
    pub fn processing(&self, body: &Body) -> Result<OwnedSemaphorePermit, ApiError> {
        self.take(&self.processing, body.bytes.len(), "processing")
    }

    /// `n` permits of `budget` at once, or shed. Validation keeps every budget within u32.
    fn take(
        &self,
        budget: &Arc<Semaphore>,
        n: usize,
        limit: &'static str,
    ) -> Result<OwnedSemaphorePermit, ApiError> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| self.shed(limit))
    }

    /// Counts a shed request and says why (503 + `Retry-After`).
    fn shed(&self, limit: &'static str) -> ApiError {
        self.metrics.shed.with_label_values(&[limit]).inc();
        tracing::warn!(limit, "in-flight limit reached, request shed");
        ApiError::Overloaded {
            limit,
            retry_after_secs: self.retry_after_secs,
        }
    }
}

fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// JSON whatever the Content-Type says (the sender sets none by default), then normalise.
fn parse(req: &HttpRequest, body: &[u8], settings: &EventSettings) -> Result<Event, ApiError> {
    let now = time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    parse_body(req.query_string(), body, settings, now)
}

/// The parsing gate free of HTTP types: the query string and the raw body to a normalised
/// event. Public for the fuzzer (fuzz/), which drives exactly this.
pub fn parse_body(
    query: &str,
    body: &[u8],
    settings: &EventSettings,
    now: String,
) -> Result<Event, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(ApiError::InvalidJson)?;
    let params: BTreeMap<String, String> =
        serde_urlencoded::from_str(query).map_err(ApiError::InvalidQuery)?;
    event::normalize(&value, params, settings, now).map_err(ApiError::InvalidPayload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gates(server_yaml: &str) -> Gates {
        let server: ServerSettings = serde_yaml::from_str(server_yaml).unwrap();
        let auth = crate::ingest::auth::settings::AuthSettings {
            mode: Some(crate::ingest::auth::settings::AuthMode::None),
            api_keys: None,
            bearer: None,
            signature: None,
        };
        Gates::new(
            &server,
            Arc::new(Authenticator::new(&auth)),
            Arc::new(Metrics::new()),
        )
    }

    fn body(n: usize) -> Body {
        Body {
            bytes: web::Bytes::from(vec![b' '; n]),
            _received: None,
        }
    }

    #[test]
    fn the_processing_budget_is_held_until_released_and_sheds_what_does_not_fit() {
        let g = gates("{max_body_bytes: 100, max_processing_bytes: 100}");
        let first = g.processing(&body(60)).expect("fits");
        match g.processing(&body(60)) {
            Err(ApiError::Overloaded { limit, .. }) => assert_eq!(limit, "processing"),
            other => panic!("shed expected, got {:?}", other.map(|_| ())),
        }
        assert!(g.processing(&body(40)).is_ok(), "what is left still fits");
        drop(first);
        assert!(g.processing(&body(100)).is_ok(), "released with its holder");
        assert_eq!(g.metrics.shed.with_label_values(&["processing"]).get(), 1);
    }

    #[test]
    fn request_slots_are_shed_at_once_beyond_max_in_flight() {
        let g = gates("{max_in_flight: 1}");
        let slot = g.budget().expect("one slot");
        assert!(matches!(
            g.budget(),
            Err(ApiError::Overloaded {
                limit: "requests",
                ..
            })
        ));
        drop(slot);
        assert!(g.budget().is_ok());
    }
}
