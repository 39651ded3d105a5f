//! The JSON the console's page reads, and the two actions it takes (redrive, purge).
//!
//! Every route needs a session or an admin token ([`authorize`]); every POST also passes
//! [`authorize_change`] (not from another site; the session's CSRF token when made with the
//! cookie). Redrive and purge take the filter a dry-run count was made with and that count
//! (`expected`): when the filter selects another number now the answer is 409 and nothing is
//! done, so the confirmation the operator read is what happens. Every action is logged with
//! its filter and count.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::filter::{self, DeadQuery};
use super::guard::{authorize, authorize_change, peer, AuthRefusal, Caller};
use super::sampler::{self, quantile_ms};
use super::{ConsoleError, ConsoleState};
use crate::delivery::index::Query;
use crate::delivery::now_ms;
use crate::spool::dead::DeadFilter;
use crate::spool::{Spool, SpoolError};

type Answer = Result<HttpResponse, AuthRefusal>;

fn ok(v: Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(v)
}

/// `GET /console/api/session`: the CSRF token the page sends with each POST.
pub async fn session(req: HttpRequest, state: web::Data<ConsoleState>) -> Answer {
    let caller = authorize(&req, &state)?;
    let csrf = match &caller {
        Caller::Session(id) => state.sessions.csrf_of(id, Instant::now()),
        Caller::Bearer => None,
    };
    Ok(ok(json!({
        "signed_in": matches!(caller, Caller::Session(_)),
        "csrf_token": csrf,
        "redact_pii": state.redact_pii,
    })))
}

fn spool_of(state: &ConsoleState) -> Result<Arc<Spool>, ConsoleError> {
    state
        .fanout
        .spool()
        .cloned()
        .ok_or(ConsoleError::NotConfigured("spool"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, ConsoleError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ConsoleError::Spool),
        Err(e) => Err(ConsoleError::Internal(e.to_string())),
    }
}

/// How far back the overview's rates and percentiles look (at least; the ring's snapshot
/// just older than this is the baseline).
const RATE_WINDOW_MS: u64 = 60_000;
/// The overview's audit figures: the last 15 minutes.
const AUDIT_WINDOW_MS: u64 = 15 * 60_000;

/// `GET /console/api/overview`: per sink readiness and why, events per second, p50/p99
/// publish latency, outcomes, spool depth and oldest age, dead letters, the audit's verdicts;
/// and the 15-minute history of the charts.
pub async fn overview(req: HttpRequest, state: web::Data<ConsoleState>) -> Answer {
    authorize(&req, &state)?;
    let readiness = crate::health::readiness(&state.fanout).await;
    let now = now_ms();
    let current = sampler::snapshot(&state.fanout, &state.metrics, now);
    let (baseline, history) = {
        let ring = state.sampler.ring();
        (
            ring.at_least_ago(now, RATE_WINDOW_MS).cloned(),
            ring.history(),
        )
    };
    let queues = match state.fanout.spool().cloned() {
        Some(spool) => {
            let names: Vec<String> = state
                .fanout
                .sinks()
                .iter()
                .map(|s| s.name.clone())
                .collect();
            blocking(move || spool.status_of(&names)).await?
        }
        None => Vec::new(),
    };
    let audit = state
        .fanout
        .deliveries()
        .map(|d| d.audit_summary(now.saturating_sub(AUDIT_WINDOW_MS)))
        .unwrap_or_default();
    let mut sinks = Vec::new();
    for s in state.fanout.sinks() {
        let c = current.sinks.get(&s.name).cloned().unwrap_or_default();
        let before = baseline
            .as_ref()
            .filter(|b| b.at_ms < now)
            .and_then(|b| b.sinks.get(&s.name).cloned().map(|c| (b.at_ms, c)));
        let (rate, old_buckets) = match &before {
            Some((at, old)) => (
                Some(sampler::point(&c, old, now, *at).events_per_sec),
                old.buckets.clone(),
            ),
            None => (None, Vec::new()),
        };
        let r = readiness.sinks.get(&s.name);
        let q = queues.iter().find(|q| q.sink == s.name);
        let a = audit.iter().find(|a| a.sink == s.name);
        sinks.push(json!({
            "name": s.name,
            "kind": s.kind,
            "required": s.required,
            "ready": r.map(|r| r.ready),
            "connected": r.map(|r| r.connected),
            "reason": r.map(|r| r.reason),
            "detail": r.and_then(|r| r.detail.clone()),
            "events_per_sec": rate,
            "p50_ms": quantile_ms(&c.buckets, &old_buckets, 0.5),
            "p99_ms": quantile_ms(&c.buckets, &old_buckets, 0.99),
            "acked": c.acked(),
            "spooled": c.spooled(),
            "failed": c.failed(),
            "duplicate": c.duplicate(),
            "spool_depth": q.map_or(c.spool_depth, |q| q.depth),
            "spool_oldest_age_secs": q.map(|q| q.oldest_age_secs),
            "dead_letters": q.map_or(0, |q| q.dead_letters),
            "audit": a.map(|a| json!({
                "answered": a.answered,
                "verified": a.verified,
                "missing": a.missing,
                "unverifiable": a.unverifiable,
                "unaudited": a.unaudited,
            })),
        }));
    }
    Ok(ok(json!({
        "ready": readiness.ready,
        "at_ms": now,
        "spool": state.fanout.spool().is_some(),
        "sinks": sinks,
        "history": {
            "interval_secs": sampler::INTERVAL.as_secs(),
            "points": history,
        },
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindQuery {
    q: Option<String>,
}

/// Longest id the find box takes.
const MAX_ID: usize = 512;

/// `GET /console/api/find?q=`: an event id, else a call id → its records in the delivery
/// index (each delivery's time and answer, per sink the outcome, receipt and audit verdict).
pub async fn find(req: HttpRequest, state: web::Data<ConsoleState>) -> Answer {
    authorize(&req, &state)?;
    let query: FindQuery = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ConsoleError::BadRequest(format!("the query string: {e} (expected q=)")))?;
    let id = query.q.unwrap_or_default().trim().to_string();
    if id.is_empty() {
        return Err(ConsoleError::BadRequest("q: a call id or an event id".into()).into());
    }
    if id.len() > MAX_ID {
        return Err(ConsoleError::BadRequest(format!("q: at most {MAX_ID} bytes")).into());
    }
    let d = state
        .fanout
        .deliveries()
        .ok_or(ConsoleError::NotConfigured("delivery index"))?;
    let mut matched = "event_id";
    let mut page = d.query(&Query {
        event_id: Some(id.clone()),
        limit: 1,
        ..Query::default()
    });
    if page.deliveries.is_empty() {
        matched = "call_id";
        page = d.query(&Query {
            call_id: Some(id.clone()),
            limit: 200,
            ..Query::default()
        });
    }
    tracing::info!(
        found = page.deliveries.len(),
        matched,
        "admin: console find"
    );
    Ok(ok(json!({
        "matched": if page.deliveries.is_empty() { Value::Null } else { json!(matched) },
        "records": page.deliveries,
        "more": page.next.is_some(),
    })))
}

fn dead_query(req: &HttpRequest) -> Result<DeadQuery, ConsoleError> {
    filter::parse(req.query_string(), now_ms())
}

/// `GET /console/api/dead?sink=&reason=&since=&until=&after=&limit=`: a page of the dead
/// letters the filter picks.
pub async fn dead_letters(req: HttpRequest, state: web::Data<ConsoleState>) -> Answer {
    authorize(&req, &state)?;
    let q = dead_query(&req)?;
    let spool = spool_of(&state)?;
    let page = blocking(move || spool.dead_letter_page_where(&q.filter, q.after.as_ref(), q.limit))
        .await?;
    Ok(ok(json!(page)))
}

/// `GET /console/api/dead/count?<filter>`: how many dead letters the filter picks now — what
/// the confirmation states before a redrive or purge.
pub async fn dead_count(req: HttpRequest, state: web::Data<ConsoleState>) -> Answer {
    authorize(&req, &state)?;
    let q = dead_query(&req)?;
    let spool = spool_of(&state)?;
    let n = blocking(move || spool.count_dead(&q.filter)).await?;
    Ok(ok(json!({ "count": n })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryQuery {
    sink: String,
    seq: u64,
}

/// `GET /console/api/dead/entry?sink=&seq=`: one dead letter, its reason and its event (the
/// `data` redacted as the logs redact it unless `log.redact_pii` is off).
pub async fn dead_entry(req: HttpRequest, state: web::Data<ConsoleState>) -> Answer {
    authorize(&req, &state)?;
    let q: EntryQuery = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ConsoleError::BadRequest(format!("expected sink=<name>&seq=<number>: {e}")))?;
    let spool = spool_of(&state)?;
    let (sink, seq) = (q.sink.clone(), q.seq);
    let found = blocking(move || spool.dead_letter_event(&sink, seq)).await?;
    let Some((letter, event)) = found else {
        return Err(ConsoleError::NotFound(format!("no dead letter {}:{}", q.sink, q.seq)).into());
    };
    let mut event: Value = serde_json::from_slice(&event).unwrap_or(Value::Null);
    if state.redact_pii {
        crate::ingest::handler::redact_data(&mut event);
    }
    Ok(ok(json!({
        "dead_letter": letter,
        "event": event,
        "redacted": state.redact_pii,
    })))
}

/// The filter, the expected count (required), and a description of both for the log.
fn action_query(req: &HttpRequest) -> Result<(DeadFilter, u64), ConsoleError> {
    let q = dead_query(req)?;
    let expected = q.expected.ok_or_else(|| {
        ConsoleError::BadRequest(
            "expected: the count the confirmation stated (GET /console/api/dead/count)".into(),
        )
    })?;
    Ok((q.filter, expected))
}

fn described(f: &DeadFilter) -> BTreeMap<&'static str, String> {
    let mut m = BTreeMap::new();
    if let Some(s) = &f.sink {
        m.insert("sink", s.clone());
    }
    if let Some(r) = &f.reason {
        m.insert("reason", r.clone());
    }
    if let Some(t) = f.since_ms {
        m.insert("since_ms", t.to_string());
    }
    if let Some(t) = f.before_ms {
        m.insert("until_ms", t.to_string());
    }
    if let Some(s) = f.seq {
        m.insert("seq", s.to_string());
    }
    m
}

/// `POST /console/api/dead/redrive?<filter>&expected=N`: the dead letters the filter picks
/// back into their queues — only when they are still N (else 409, nothing moved).
pub async fn redrive(req: HttpRequest, state: web::Data<ConsoleState>) -> Answer {
    confirmed(&req, &state, "redriven", |spool, f| spool.redrive_where(f)).await
}

/// `POST /console/api/dead/purge?<filter>&expected=N`: removes the dead letters the filter
/// picks for good — only when they are still N (else 409, nothing removed).
pub async fn purge(req: HttpRequest, state: web::Data<ConsoleState>) -> Answer {
    confirmed(&req, &state, "purged", |spool, f| {
        Ok(spool.purge(f)?.iter().map(|(_, n)| n).sum())
    })
    .await
}

/// A change to the dead letters the filter picks, done only when the operator's confirmed
/// count (`expected`) is still the count: the count and the change run in one blocking call,
/// a different count is a 409 with nothing done. Logged with the filter and the count either
/// way; the answer is `{"<done>": n}`.
async fn confirmed(
    req: &HttpRequest,
    state: &ConsoleState,
    done: &'static str,
    action: impl FnOnce(&Spool, &DeadFilter) -> Result<u64, SpoolError> + Send + 'static,
) -> Answer {
    authorize_change(req, state)?;
    let (filter, expected) = action_query(req)?;
    let spool = spool_of(state)?;
    let f = filter.clone();
    let result = blocking(move || {
        let actual = spool.count_dead(&f)?;
        if actual != expected {
            return Ok(Err(actual));
        }
        action(&spool, &f).map(Ok)
    })
    .await?;
    let filter_text = format!("{:?}", described(&filter));
    match result {
        Err(actual) => {
            tracing::info!(filter = %filter_text, expected, actual, action = done, "admin: console change refused, the count changed");
            Err(ConsoleError::CountChanged { expected, actual }.into())
        }
        Ok(n) => {
            tracing::info!(filter = %filter_text, expected, count = n, action = done, peer = %peer(req), "admin: dead letters changed from the console");
            let mut body = serde_json::Map::new();
            body.insert(done.to_string(), n.into());
            Ok(ok(serde_json::Value::Object(body)))
        }
    }
}
