//! `GET /deliveries` (the records a query selects, paginated) and `GET /deliveries/audit`
//! (per sink: 200s answered, verified, missing, unverifiable), for operators.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use super::index::{OutcomeFilter, Query};
use super::{now_ms, Deliveries};

/// Records per page unless `limit` says otherwise, and the most a page holds.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// Who may read the index: the bridge's operator credential check, which answers a refused
/// request itself (401, or 429 once an address spent its failure budget).
pub type Authorize = Arc<dyn Fn(&HttpRequest) -> Option<HttpResponse> + Send + Sync>;

/// What the routes need: the index (None when the bridge keeps none) and the credential check.
pub struct RouteState {
    pub deliveries: Option<Arc<Deliveries>>,
    pub authorize: Authorize,
}

/// Why a request is refused; this module's answers to it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RouteError {
    #[error("{0}")]
    BadQuery(String),
    #[error("no delivery index in this bridge")]
    NotKept,
}

impl ResponseError for RouteError {
    fn status_code(&self) -> StatusCode {
        match self {
            RouteError::BadQuery(_) => StatusCode::BAD_REQUEST,
            RouteError::NotKept => StatusCode::NOT_FOUND,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({"error": self.to_string()}))
    }
}

/// The routes, for the operator plane's `configure`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/deliveries", web::get().to(list))
        .route("/deliveries/audit", web::get().to(audit));
}

const PARAMS: [&str; 7] = [
    "call_id", "event_id", "sink", "outcome", "since", "after", "limit",
];

/// `since=`: an RFC 3339 time, or a duration back from `now_ms` (`90s`, `15m`, `1h`).
pub fn parse_since(value: &str, now_ms: u64) -> Result<u64, RouteError> {
    if let Ok(t) = time::OffsetDateTime::parse(value, &Rfc3339) {
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        return u64::try_from(ms)
            .map_err(|_| RouteError::BadQuery(format!("since: {value:?} is before 1970")));
    }
    match humantime::parse_duration(value) {
        Ok(d) => Ok(now_ms.saturating_sub(d.as_millis() as u64)),
        Err(_) => Err(RouteError::BadQuery(format!(
            "since: expected an RFC 3339 time (2026-01-02T03:04:05Z) or a duration (90s, 15m, 1h), got {value:?}"
        ))),
    }
}

/// The query string of `GET /deliveries` as a [`Query`]; every problem is a 400 naming it.
pub fn parse_query(query: &str, now_ms: u64) -> Result<Query, RouteError> {
    let params: BTreeMap<String, String> = serde_urlencoded::from_str(query)
        .map_err(|e| RouteError::BadQuery(format!("the query string: {e}")))?;
    if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(RouteError::BadQuery(format!(
            "unknown parameter {unknown:?}; expected one of {}",
            PARAMS.join(", ")
        )));
    }
    let text = |k: &str| -> Result<Option<String>, RouteError> {
        match params.get(k) {
            Some(v) if v.is_empty() => Err(RouteError::BadQuery(format!("{k}: empty"))),
            other => Ok(other.cloned()),
        }
    };
    let number = |k: &str| -> Result<Option<u64>, RouteError> {
        params
            .get(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    RouteError::BadQuery(format!("{k}: expected a whole number, got {v:?}"))
                })
            })
            .transpose()
    };
    let outcome = text("outcome")?
        .map(|o| {
            OutcomeFilter::parse(&o).ok_or_else(|| {
                RouteError::BadQuery(format!(
                    "outcome: {o:?} is none of acked, already_acked, skipped, spooled, \
                     in_progress, pending, failed, replayed, dead_lettered, verified, missing, \
                     unverifiable, unaudited"
                ))
            })
        })
        .transpose()?;
    let limit = match number("limit")? {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => n as usize,
        Some(n) => {
            return Err(RouteError::BadQuery(format!(
                "limit: between 1 and {MAX_LIMIT}, got {n}"
            )))
        }
    };
    Ok(Query {
        call_id: text("call_id")?,
        event_id: text("event_id")?,
        sink: text("sink")?,
        outcome,
        since_ms: text("since")?
            .map(|s| parse_since(&s, now_ms))
            .transpose()?,
        after: number("after")?,
        limit,
    })
}

fn deliveries(state: &RouteState) -> Result<Arc<Deliveries>, RouteError> {
    state.deliveries.clone().ok_or(RouteError::NotKept)
}

/// The credential check first (its refusal is the answer), then the route.
async fn list(req: HttpRequest, state: web::Data<RouteState>) -> HttpResponse {
    if let Some(refused) = (state.authorize)(&req) {
        return refused;
    }
    answer(list_of(&req, &state))
}

fn list_of(req: &HttpRequest, state: &RouteState) -> Result<HttpResponse, RouteError> {
    let d = deliveries(state)?;
    let q = parse_query(req.query_string(), now_ms())?;
    Ok(HttpResponse::Ok().json(d.query(&q)))
}

fn answer(result: Result<HttpResponse, RouteError>) -> HttpResponse {
    result.unwrap_or_else(|e| e.error_response())
}

/// How far back `GET /deliveries/audit` looks without `since`.
pub const AUDIT_DEFAULT_SINCE: Duration = Duration::from_secs(3600);

async fn audit(req: HttpRequest, state: web::Data<RouteState>) -> HttpResponse {
    if let Some(refused) = (state.authorize)(&req) {
        return refused;
    }
    answer(audit_of(&req, &state))
}

fn audit_of(req: &HttpRequest, state: &RouteState) -> Result<HttpResponse, RouteError> {
    let d = deliveries(state)?;
    let params: BTreeMap<String, String> = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| RouteError::BadQuery(format!("the query string: {e}")))?;
    if let Some(unknown) = params.keys().find(|k| k.as_str() != "since") {
        return Err(RouteError::BadQuery(format!(
            "unknown parameter {unknown:?}; expected since"
        )));
    }
    let now = now_ms();
    let since = match params.get("since") {
        Some(s) => parse_since(s, now)?,
        None => now.saturating_sub(AUDIT_DEFAULT_SINCE.as_millis() as u64),
    };
    Ok(HttpResponse::Ok().json(json!({
        "since_ms": since,
        "sinks": d.audit_summary(since),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Outcome, Verdict};

    const NOW: u64 = 10_000_000;

    fn bad(q: &str) -> String {
        match parse_query(q, NOW) {
            Err(RouteError::BadQuery(m)) => m,
            other => panic!("{q}: expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn every_parameter_is_read() {
        let q = parse_query(
            "call_id=c1&event_id=e1&sink=k&outcome=missing&since=1m&after=7&limit=5",
            NOW,
        )
        .expect("valid");
        assert_eq!(
            q,
            Query {
                call_id: Some("c1".into()),
                event_id: Some("e1".into()),
                sink: Some("k".into()),
                outcome: Some(OutcomeFilter::Audit(Verdict::Missing)),
                since_ms: Some(NOW - 60_000),
                after: Some(7),
                limit: 5,
            }
        );
        let q = parse_query("", NOW).expect("valid");
        assert_eq!(
            q,
            Query {
                limit: DEFAULT_LIMIT,
                ..Query::default()
            }
        );
        assert_eq!(
            parse_query("outcome=spooled", NOW).expect("valid").outcome,
            Some(OutcomeFilter::Outcome(Outcome::Spooled))
        );
        assert_eq!(
            parse_query("outcome=unaudited", NOW)
                .expect("valid")
                .outcome,
            Some(OutcomeFilter::Unaudited)
        );
        assert_eq!(parse_query("limit=1", NOW).expect("valid").limit, 1);
        assert_eq!(
            parse_query("limit=1000", NOW).expect("valid").limit,
            MAX_LIMIT
        );
    }

    #[test]
    fn since_is_a_time_or_a_duration_back() {
        assert_eq!(
            parse_since("2026-01-02T03:04:05Z", NOW),
            Ok(1_767_323_045_000)
        );
        assert_eq!(
            parse_since("2026-01-02T03:04:05.250+01:00", NOW),
            Ok(1_767_319_445_250)
        );
        assert_eq!(parse_since("90s", NOW), Ok(NOW - 90_000));
        assert_eq!(parse_since("1h", 1000), Ok(0), "never before 1970");
        assert!(parse_since("1969-01-01T00:00:00Z", NOW).is_err());
        assert!(parse_since("yesterday", NOW).is_err());
    }

    #[test]
    fn a_bad_parameter_is_a_400_that_names_it() {
        assert!(bad("callid=c1").contains("unknown parameter \"callid\""));
        assert!(bad("outcome=lost").contains("outcome: \"lost\""));
        assert!(bad("limit=0").contains("limit"));
        assert!(bad("limit=1001").contains("limit"));
        assert!(bad("limit=x").contains("limit: expected a whole number"));
        assert!(bad("after=-1").contains("after"));
        assert!(bad("since=soon").contains("since"));
        assert!(bad("call_id=").contains("call_id: empty"));
        assert!(bad("sink=").contains("sink: empty"));
        assert!(bad("event_id=").contains("event_id: empty"));
    }

    #[test]
    fn refusals_answer_their_status() {
        assert_eq!(
            RouteError::BadQuery("x".into()).status_code(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(RouteError::NotKept.status_code(), StatusCode::NOT_FOUND);
    }
}
