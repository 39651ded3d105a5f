//! The dead-letter filter of the console's API, from a query string: `sink`, `reason` (part of
//! the reason, any case), `since` and `until` (RFC 3339 or a duration back: `15m`), `seq`,
//! and for a page `after`/`limit`, for an action `expected`. Every problem is a 400 naming
//! the parameter.

use std::collections::BTreeMap;

use crate::delivery::routes::parse_since;
use crate::spool::dead::{DeadCursor, DeadFilter};

use super::ConsoleError;

/// Dead letters per page unless `limit` says otherwise, and the most a page holds.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub struct DeadQuery {
    pub filter: DeadFilter,
    pub after: Option<DeadCursor>,
    pub limit: usize,
    /// What the confirmation said the action takes (required by redrive and purge).
    pub expected: Option<u64>,
}

const PARAMS: [&str; 8] = [
    "sink", "reason", "since", "until", "seq", "after", "limit", "expected",
];

fn bad(m: String) -> ConsoleError {
    ConsoleError::BadRequest(m)
}

/// Reads `query` at `now_ms`.
pub fn parse(query: &str, now_ms: u64) -> Result<DeadQuery, ConsoleError> {
    let params: BTreeMap<String, String> =
        serde_urlencoded::from_str(query).map_err(|e| bad(format!("the query string: {e}")))?;
    if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown parameter {unknown:?}; expected one of {}",
            PARAMS.join(", ")
        )));
    }
    // An empty field of the page's form means "any".
    let text = |k: &str| params.get(k).filter(|v| !v.trim().is_empty()).cloned();
    let number = |k: &str| -> Result<Option<u64>, ConsoleError> {
        text(k)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| bad(format!("{k}: expected a whole number, got {v:?}")))
            })
            .transpose()
    };
    let time = |k: &str| -> Result<Option<u64>, ConsoleError> {
        text(k)
            .map(|v| {
                parse_since(v.trim(), now_ms)
                    .map_err(|e| bad(e.to_string().replacen("since", k, 1)))
            })
            .transpose()
    };
    let since_ms = time("since")?;
    let before_ms = time("until")?;
    if let (Some(s), Some(u)) = (since_ms, before_ms) {
        if s >= u {
            return Err(bad("since: must be before until".into()));
        }
    }
    let after = text("after")
        .map(|a| {
            DeadCursor::parse(&a).ok_or_else(|| {
                bad("after: expected the `next` of a previous page (<sink>:<seq>)".into())
            })
        })
        .transpose()?;
    let limit = match number("limit")? {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => n as usize,
        Some(n) => return Err(bad(format!("limit: between 1 and {MAX_LIMIT}, got {n}"))),
    };
    Ok(DeadQuery {
        filter: DeadFilter {
            sink: text("sink"),
            reason: text("reason"),
            since_ms,
            before_ms,
            seq: number("seq")?,
        },
        after,
        limit,
        expected: number("expected")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 10_000_000;

    fn message(q: &str) -> String {
        match parse(q, NOW) {
            Err(ConsoleError::BadRequest(m)) => m,
            other => panic!("{q}: expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn every_parameter_is_read_and_empty_ones_mean_any() {
        let q = parse(
            "sink=k&reason=NO_ROUTE&since=15m&until=1m&seq=7&after=k:3&limit=5&expected=2",
            NOW,
        )
        .unwrap();
        assert_eq!(
            q.filter,
            DeadFilter {
                sink: Some("k".into()),
                reason: Some("NO_ROUTE".into()),
                since_ms: Some(NOW - 900_000),
                before_ms: Some(NOW - 60_000),
                seq: Some(7),
            }
        );
        assert_eq!(q.after, DeadCursor::parse("k:3"));
        assert_eq!((q.limit, q.expected), (5, Some(2)));
        let any = parse("sink=&reason=&since=&until=", NOW).unwrap();
        assert_eq!(any.filter, DeadFilter::default());
        assert_eq!((any.limit, any.expected), (DEFAULT_LIMIT, None));
        let t = parse("since=2026-01-02T03:04:05Z", NOW).unwrap();
        assert_eq!(t.filter.since_ms, Some(1_767_323_045_000));
    }

    #[test]
    fn bad_input_is_a_400_that_names_the_parameter() {
        assert!(message("sinks=k").contains("unknown parameter \"sinks\""));
        assert!(message("limit=0").contains("limit: between 1 and 500"));
        assert!(message("limit=x").contains("limit: expected a whole number"));
        assert!(message("expected=-1").contains("expected: expected a whole number"));
        assert!(message("seq=1.5").contains("seq"));
        assert!(message("since=yesterday").starts_with("since:"));
        assert!(
            message("until=soon").starts_with("until:"),
            "{}",
            message("until=soon")
        );
        assert!(message("since=1m&until=15m").contains("before until"));
        assert!(message("after=nocolon").contains("after"));
    }
}
