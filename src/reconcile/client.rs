//! The platform's read API (`docs/reconcile.md`, summarised from the platform's reference):
//! `GET /calling/history` (calls by time window, paged with `limit`/`offset` until `total`) and
//! `GET /calling/call-details?id=…[&send_analysis=true]`, both with `X-API-KEY`.
//!
//! Every request waits for the rate limiter, runs under `timeout_ms`, and is tried again on a
//! 429 (after its `Retry-After`), a 5xx, a timeout or a refused connection, with exponential
//! backoff, up to `max_attempts`. Each failed attempt is counted by reason. The key travels
//! only in its header: it is never in a URL, a log line or an error.
//!
//! The key goes to `api_base` and nowhere else: redirects are not followed at all (reqwest's
//! default follows ten, across hosts and from https to http, and keeps `X-API-KEY` on every
//! hop; a same-origin-only policy would still need the key stripped, and the platform's API
//! does not redirect), so a 3xx is an answer like any other non-2xx (`client_error`, not
//! retried). `api_base` must be https unless it is a loopback address (validation). Every
//! answer's body is read as a stream and refused past [`MAX_ANSWER_BYTES`], so a broken or
//! hostile endpoint cannot make a pass hold an unbounded answer.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::settings::ReconcileSettings;
use crate::metrics::Metrics;

/// The auth header the platform's API reads.
pub const API_KEY_HEADER: &str = "X-API-KEY";

/// The longest `Retry-After` honoured; a longer one is cut to this (the call is retried next
/// pass anyway).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The first backoff; it doubles per attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Pages a listing may take before it is cut short (a guard against an API that never ends).
const MAX_PAGES: u64 = 10_000;
/// The largest answer body read. A history page holds at most `MAX_PAGE_SIZE` (500) rows of a
/// few KiB, and a call's details one transcript and its analyses: a few MiB at the very most.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the platform API answered HTTP {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("no answer from the platform API within {0} ms")]
    Timeout(u64),
    #[error("cannot reach the platform API: {0}")]
    Connect(String),
    #[error("unexpected answer from the platform API: {0}")]
    Decode(String),
    /// The answer's body is larger than anything the API sends: not read further.
    #[error("the platform API's answer exceeds {limit} bytes; not read")]
    TooLarge { limit: usize },
}

impl ApiError {
    /// The `reason` label of `callbridge_reconcile_api_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Status { status: 429, .. } => "rate_limited",
            ApiError::Status {
                status: 401 | 403, ..
            } => "unauthorized",
            ApiError::Status { status, .. } if *status >= 500 => "server_error",
            ApiError::Status { .. } => "client_error",
            ApiError::Timeout(_) => "timeout",
            ApiError::Connect(_) => "connect",
            ApiError::Decode(_) => "decode",
            ApiError::TooLarge { .. } => "too_large",
        }
    }

    /// Worth another attempt: the same request may succeed later.
    fn transient(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => *status == 429 || *status >= 500,
            ApiError::Timeout(_) | ApiError::Connect(_) => true,
            ApiError::Decode(_) | ApiError::TooLarge { .. } => false,
        }
    }

    /// reqwest's error without its URL (the URL holds only the window and a call id, but the
    /// error text is kept to what an operator needs).
    fn from_reqwest(e: reqwest::Error, timeout_ms: u64) -> ApiError {
        if e.is_timeout() {
            ApiError::Timeout(timeout_ms)
        } else if e.is_decode() || e.is_body() {
            ApiError::Decode(e.without_url().to_string())
        } else {
            ApiError::Connect(crate::sinks::error_chain(&e.without_url()))
        }
    }
}

/// One row of the call history, as much as reconciliation reads of it; the row itself is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSummary {
    pub id: String,
    pub status: Option<String>,
    pub agent_id: Option<String>,
    pub row: Map<String, Value>,
}

/// One page of `/calling/history`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub calls: Vec<CallSummary>,
    /// Rows without a usable `id` (skipped, counted).
    pub unusable: u64,
    pub total: Option<u64>,
}

/// A time window and an optional agent filter for `/calling/history`.
#[derive(Debug, Clone)]
pub struct Window {
    /// ISO 8601 (RFC 3339, UTC) bounds.
    pub start: String,
    pub end: String,
    pub agent_id: Option<String>,
}

/// Where reconciliation reads calls from: the platform's API, or a fake in unit tests.
#[async_trait::async_trait]
pub trait CallSource: Send + Sync {
    /// One page of the calls in `window`, from `offset`.
    async fn history(&self, window: &Window, offset: u64) -> Result<HistoryPage, ApiError>;
    /// The `data` object of a call's details, with the analyses when `analysis`.
    async fn details(&self, call_id: &str, analysis: bool) -> Result<Map<String, Value>, ApiError>;
    /// Calls per page asked for.
    fn page_size(&self) -> u64;
}

/// Every call of `window`, page by page, until `offset >= total` (or a short page when the API
/// gives no total). Rows without an id are skipped and counted in the second value.
pub async fn list_all(
    source: &dyn CallSource,
    window: &Window,
) -> Result<(Vec<CallSummary>, u64), ApiError> {
    let mut calls = Vec::new();
    let mut unusable = 0;
    let mut offset = 0u64;
    for _ in 0..MAX_PAGES {
        let page = source.history(window, offset).await?;
        let rows = page.calls.len() as u64 + page.unusable;
        calls.extend(page.calls);
        unusable += page.unusable;
        offset += rows;
        let done = match page.total {
            Some(total) => offset >= total,
            None => rows < source.page_size(),
        };
        if done || rows == 0 {
            break;
        }
    }
    Ok((calls, unusable))
}

/// The HTTP client of the platform's API.
pub struct PlatformClient {
    http: reqwest::Client,
    base: String,
    key: SecretString,
    page_size: u32,
    timeout_ms: u64,
    max_attempts: u32,
    limiter: DefaultDirectRateLimiter,
    metrics: Arc<Metrics>,
}

impl PlatformClient {
    pub fn new(settings: &ReconcileSettings, metrics: Arc<Metrics>) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            // The key is sent to `api_base` only (module docs).
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("callbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Connect(crate::sinks::error_chain(&e)))?;
        let rate = NonZeroU32::new(settings.requests_per_sec).unwrap_or(NonZeroU32::MIN);
        Ok(PlatformClient {
            http,
            base: settings.api_base.trim_end_matches('/').to_string(),
            key: settings.api_key.clone(),
            page_size: settings.page_size,
            timeout_ms: settings.timeout_ms,
            max_attempts: settings.max_attempts.max(1),
            // One request per 1/rate seconds, no burst beyond one: a pass spreads its requests.
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(NonZeroU32::MIN)),
            metrics,
        })
    }

    /// GET `path` with `query`, as JSON, with the rate limit, retries and backoff.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.limiter.until_ready().await;
            let error = match self.once(&url, query).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            self.metrics
                .reconcile_api_errors
                .with_label_values(&[error.reason()])
                .inc();
            if !error.transient() || attempt >= self.max_attempts {
                tracing::warn!(path, attempt, reason = error.reason(), error = %error, "platform api request failed");
                return Err(error);
            }
            let backoff = match &error {
                ApiError::Status {
                    retry_after: Some(after),
                    ..
                } => (*after).min(MAX_RETRY_AFTER),
                _ => BACKOFF_BASE.saturating_mul(1 << (attempt - 1).min(6)),
            };
            tracing::info!(
                path,
                attempt,
                reason = error.reason(),
                backoff_ms = backoff.as_millis() as u64,
                "platform api request failed; trying again"
            );
            tokio::time::sleep(backoff).await;
        }
    }

    async fn once(&self, url: &str, query: &[(&str, String)]) -> Result<Value, ApiError> {
        let resp = self
            .http
            .get(url)
            .query(query)
            .header(API_KEY_HEADER, self.key.expose_secret())
            .send()
            .await
            .map_err(|e| ApiError::from_reqwest(e, self.timeout_ms))?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(ApiError::Status {
                status: status.as_u16(),
                retry_after,
            });
        }
        let body = read_capped(resp, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| match e {
                Capped::TooLarge => ApiError::TooLarge {
                    limit: MAX_ANSWER_BYTES,
                },
                Capped::Read(e) => ApiError::from_reqwest(e, self.timeout_ms),
            })?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Decode(e.to_string()))
    }
}

enum Capped {
    TooLarge,
    Read(reqwest::Error),
}

/// The answer's body, chunk by chunk, refused as soon as it passes `limit` (an announced
/// Content-Length above it is refused before reading anything).
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, Capped> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Capped::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Capped::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(Capped::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[async_trait::async_trait]
impl CallSource for PlatformClient {
    async fn history(&self, window: &Window, offset: u64) -> Result<HistoryPage, ApiError> {
        let mut query = vec![
            ("start_date", window.start.clone()),
            ("end_date", window.end.clone()),
            ("limit", self.page_size.to_string()),
            ("offset", offset.to_string()),
        ];
        if let Some(agent) = &window.agent_id {
            query.push(("agent_id", agent.clone()));
        }
        let body = self.get("/calling/history", &query).await?;
        parse_history(&body)
    }

    async fn details(&self, call_id: &str, analysis: bool) -> Result<Map<String, Value>, ApiError> {
        let mut query = vec![("id", call_id.to_string())];
        if analysis {
            query.push(("send_analysis", "true".into()));
        }
        let body = self.get("/calling/call-details", &query).await?;
        match body.get("data") {
            Some(Value::Object(d)) => Ok(d.clone()),
            _ => Err(ApiError::Decode(
                "call details without a `data` object".into(),
            )),
        }
    }

    fn page_size(&self) -> u64 {
        u64::from(self.page_size)
    }
}

/// A history answer: `{"calls": [...], "total": n, ...}`. Fields are optional except a row's
/// `id`; a row without one is counted, not fatal.
pub fn parse_history(body: &Value) -> Result<HistoryPage, ApiError> {
    let rows = match body.get("calls") {
        Some(Value::Array(rows)) => rows,
        Some(Value::Null) | None => {
            return Err(ApiError::Decode(
                "call history without a `calls` array".into(),
            ))
        }
        Some(_) => {
            return Err(ApiError::Decode(
                "call history: `calls` is not an array".into(),
            ))
        }
    };
    let mut calls = Vec::with_capacity(rows.len());
    let mut unusable = 0;
    for row in rows {
        let Some(row) = row.as_object() else {
            unusable += 1;
            continue;
        };
        let Some(id) = row
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
        else {
            unusable += 1;
            continue;
        };
        let agent_id = row
            .get("agent")
            .and_then(|a| a.get("id"))
            .or_else(|| row.get("agent_id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        calls.push(CallSummary {
            id: id.to_string(),
            status: row
                .get("status")
                .and_then(Value::as_str)
                .map(str::to_string),
            agent_id,
            row: row.clone(),
        });
    }
    Ok(HistoryPage {
        calls,
        unusable,
        total: body.get("total").and_then(Value::as_u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn history_rows_are_read_leniently() {
        let page = parse_history(&json!({"calls": [
            {"id": "a", "status": "completed", "agent": {"id": "ag"}, "call_cost": 3},
            {"id": ""}, {"status": "failed"}, 7,
            {"id": "b"}
        ], "limit": 10, "offset": 0, "count": 5, "total": 42}))
        .unwrap();
        assert_eq!(page.total, Some(42));
        assert_eq!(page.unusable, 3);
        assert_eq!(page.calls.len(), 2);
        assert_eq!(page.calls[0].agent_id.as_deref(), Some("ag"));
        assert_eq!(page.calls[0].row["call_cost"], 3, "the row is kept");
        assert_eq!(page.calls[1].status, None);
        assert!(parse_history(&json!({"total": 1})).is_err());
        assert!(parse_history(&json!({"calls": {}})).is_err());
    }

    #[test]
    fn reasons_and_which_errors_are_tried_again() {
        let st = |status| ApiError::Status {
            status,
            retry_after: None,
        };
        assert_eq!(st(429).reason(), "rate_limited");
        assert!(st(429).transient());
        assert_eq!(st(503).reason(), "server_error");
        assert!(st(503).transient());
        assert_eq!(st(401).reason(), "unauthorized");
        assert!(!st(401).transient());
        assert_eq!(st(404).reason(), "client_error");
        assert!(!st(404).transient());
        assert!(ApiError::Timeout(1).transient());
        assert!(!ApiError::Decode("x".into()).transient());
    }

    struct Pages {
        total: Option<u64>,
        rows: u64,
        size: u64,
    }

    #[async_trait::async_trait]
    impl CallSource for Pages {
        async fn history(&self, _: &Window, offset: u64) -> Result<HistoryPage, ApiError> {
            let n = self.rows.saturating_sub(offset).min(self.size);
            Ok(HistoryPage {
                calls: (offset..offset + n)
                    .map(|i| CallSummary {
                        id: format!("c{i}"),
                        status: None,
                        agent_id: None,
                        row: Map::new(),
                    })
                    .collect(),
                unusable: 0,
                total: self.total,
            })
        }
        async fn details(&self, _: &str, _: bool) -> Result<Map<String, Value>, ApiError> {
            Ok(Map::new())
        }
        fn page_size(&self) -> u64 {
            self.size
        }
    }

    #[tokio::test]
    async fn listing_pages_until_total_or_a_short_page() {
        let w = Window {
            start: "a".into(),
            end: "b".into(),
            agent_id: None,
        };
        for (total, rows, size) in [(Some(7), 7, 3), (None, 7, 3), (None, 6, 3), (Some(0), 0, 3)] {
            let (calls, _) = list_all(&Pages { total, rows, size }, &w).await.unwrap();
            assert_eq!(calls.len() as u64, rows, "{total:?} {rows} {size}");
            let ids: std::collections::HashSet<_> = calls.iter().map(|c| &c.id).collect();
            assert_eq!(ids.len() as u64, rows, "no page read twice");
        }
    }
}
