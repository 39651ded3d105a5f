//! The one place where failures become HTTP answers.
//!
//! 4xx only for what the sender got wrong (credentials, size, shape): the sender treats 4xx as
//! final. Everything that is our or a broker's fault is 503 with `Retry-After`, so the sender
//! retries. Every error answer is JSON: `{"error": {"code", "message", "field"?}}`.

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::json;

use super::auth::AuthFailure;
use super::ratelimit::RateLimited;
use super::response::delivery_body;
use super::signature::SignatureFailure;
use crate::event::InvalidPayload;
use crate::fanout::Delivery;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing credentials: send {0}")]
    MissingCredentials(String),
    #[error("invalid credentials")]
    InvalidCredentials,
    /// `auth.signature`: missing, stale or not matching the body.
    #[error("invalid signature: {0}")]
    InvalidSignature(#[from] SignatureFailure),
    #[error("body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("cannot read the body")]
    BodyRead(#[source] actix_web::error::PayloadError),
    /// The body did not arrive completely within the request deadline. Transient (503 +
    /// Retry-After), not 408: the sender treats every 4xx as final, and a slow network on its
    /// side must not lose the event; a client that never sends its body only costs one deadline.
    #[error("the body did not arrive within {deadline_ms} ms; retry later")]
    BodyTimeout {
        deadline_ms: u64,
        retry_after_secs: u64,
    },
    #[error("body is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    #[error("{0}")]
    InvalidPayload(#[source] InvalidPayload),
    #[error("query string is not valid: {0}")]
    InvalidQuery(#[source] serde_urlencoded::de::Error),
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed: use POST, PUT or PATCH")]
    MethodNotAllowed,
    /// A required sink did not acknowledge: the per-sink map says which and why.
    #[error("required sinks did not acknowledge: {}", .delivery.failed_required().join(", "))]
    NotDelivered {
        delivery: Delivery,
        retry_after_secs: u64,
    },
    /// A required sink can never take this event (its size once normalised, with headers):
    /// published nowhere, and a retry would not help.
    #[error("the event is larger than required sinks accept ({}): send a smaller body (its data is about twice the body: the transcript is kept as sent and as turns)", .delivery.failed_required().join(", "))]
    EventTooLarge { delivery: Delivery },
    /// Shed: the in-flight limit (requests or body bytes) is reached; try again later.
    #[error("too many requests in flight ({limit}); retry later")]
    Overloaded {
        limit: &'static str,
        retry_after_secs: u64,
    },
    /// `server.rate_limit`: this client sent more than its budget; it may retry after
    /// `Retry-After`.
    #[error("{0}")]
    RateLimited(#[from] RateLimited),
    #[error("internal error while publishing: {0}")]
    Internal(String, u64),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingCredentials(_) | ApiError::InvalidCredentials => "unauthorized",
            ApiError::InvalidSignature(_) => "invalid_signature",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::EventTooLarge { .. } => "event_too_large",
            ApiError::BodyRead(_) => "body_read_failed",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidPayload(_) => "invalid_payload",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::NotDelivered { .. } => "not_delivered",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Internal(..) => "internal",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::NotDelivered {
                retry_after_secs, ..
            }
            | ApiError::Overloaded {
                retry_after_secs, ..
            }
            | ApiError::BodyTimeout {
                retry_after_secs, ..
            }
            | ApiError::Internal(_, retry_after_secs) => Some(*retry_after_secs),
            ApiError::RateLimited(r) => Some(r.retry_after_secs),
            _ => None,
        }
    }
}

impl From<AuthFailure> for ApiError {
    fn from(f: AuthFailure) -> Self {
        match f {
            AuthFailure::Missing(what) => ApiError::MissingCredentials(what),
            AuthFailure::Invalid => ApiError::InvalidCredentials,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MissingCredentials(_)
            | ApiError::InvalidCredentials
            | ApiError::InvalidSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge { .. } | ApiError::EventTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::BodyRead(_)
            | ApiError::InvalidJson(_)
            | ApiError::InvalidPayload(_)
            | ApiError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotDelivered { .. }
            | ApiError::BodyTimeout { .. }
            | ApiError::Overloaded { .. }
            | ApiError::Internal(..) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let field = match self {
            ApiError::InvalidPayload(p) => Some(p.field.as_str()),
            ApiError::InvalidJson(_)
            | ApiError::BodyRead(_)
            | ApiError::BodyTimeout { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::EventTooLarge { .. } => Some("(body)"),
            ApiError::InvalidQuery(_) => Some("(query)"),
            _ => None,
        };
        let error = ErrorBody {
            code: self.code(),
            message: self.to_string(),
            field,
        };
        let body = match self {
            ApiError::NotDelivered { delivery, .. } | ApiError::EventTooLarge { delivery } => {
                let mut b = delivery_body(delivery, "failed");
                b["error"] = json!(error);
                b
            }
            _ => json!({ "error": error }),
        };
        let mut resp = HttpResponse::build(self.status_code()).json(body);
        if matches!(
            self,
            ApiError::BodyTimeout { .. } | ApiError::Overloaded { .. }
        ) {
            // The rest of the announced body may still come (unread): the connection cannot be
            // reused.
            resp.head_mut().set_connection_type(ConnectionType::Close);
        }
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
