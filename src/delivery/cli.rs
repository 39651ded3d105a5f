//! `callbridge deliveries CALL_ID` and `callbridge audit --since 1h`: ask the running bridge
//! and print what it knows, for people at a terminal.

use std::fmt::Write as _;

use time::format_description::well_known::Rfc3339;

use super::index::SinkAudit;
use super::{Record, SinkEntry};
use crate::sinks::Receipt;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("asking {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
}

/// Builds the request for an admin path: the CLI's admin client, which knows the listener's
/// URL, its TLS and the token (and refuses to send a token where it must not).
pub type Requester<'a> = &'a (dyn Fn(&str) -> reqwest::RequestBuilder + Sync);

async fn get<T: serde::de::DeserializeOwned>(
    request: Requester<'_>,
    path: &str,
    query: &[(&str, String)],
) -> Result<T, CliError> {
    let request_error = |source| CliError::Request {
        url: path.to_string(),
        source,
    };
    let resp = request(path)
        .query(query)
        .send()
        .await
        .map_err(request_error)?;
    let status = resp.status().as_u16();
    if status != 200 {
        let body = resp.text().await.unwrap_or_default();
        return Err(CliError::Refused {
            url: path.to_string(),
            status,
            body,
        });
    }
    resp.json().await.map_err(request_error)
}

/// Every record of `call_id`, every page of it.
pub async fn call_records(request: Requester<'_>, call_id: &str) -> Result<Vec<Record>, CliError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let mut q = vec![("call_id", call_id.to_string()), ("limit", "1000".into())];
        if let Some(a) = after {
            q.push(("after", format!("{a}")));
        }
        let page: PageIn = get(request, "/deliveries", &q).await?;
        out.extend(page.deliveries);
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

#[derive(serde::Deserialize)]
struct PageIn {
    deliveries: Vec<Record>,
    #[serde(default)]
    next: Option<u64>,
}

/// The audit's per-sink report since `since` (`1h`, an RFC 3339 time).
pub async fn audit_report(request: Requester<'_>, since: &str) -> Result<Vec<SinkAudit>, CliError> {
    #[derive(serde::Deserialize)]
    struct Report {
        sinks: Vec<SinkAudit>,
    }
    let r: Report = get(
        request,
        "/deliveries/audit",
        &[("since", since.to_string())],
    )
    .await?;
    Ok(r.sinks)
}

fn time_of(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Where a copy is, in a few characters.
pub fn receipt_text(r: &Receipt) -> String {
    match r {
        Receipt::Kafka {
            topic,
            partition,
            offset,
        } => format!("{topic}[{partition}]@{offset}"),
        Receipt::JetStream {
            stream, sequence, ..
        } => format!("{stream}#{sequence}"),
        Receipt::Rabbitmq {
            exchange,
            routing_key,
        } => format!("exchange {exchange:?} key {routing_key:?}"),
        Receipt::File { path, offset } => format!("{path}@{offset}"),
        Receipt::NatsCore { subject, .. } => format!("subject {subject} (not stored)"),
        Receipt::Null { .. } => "(nothing stored)".into(),
    }
}

fn sink_line(e: &SinkEntry) -> String {
    let mut s = format!("    {:<20} {:<14}", e.sink, e.outcome.as_str());
    if let Some(r) = &e.receipt {
        let _ = write!(s, " {}", receipt_text(r));
    }
    if let Some(seq) = e.spool_seq {
        let _ = write!(s, " spool seq {seq}");
    }
    if let Some(err) = &e.error {
        let _ = write!(s, " ({err})");
    }
    if let Some(a) = &e.audit {
        let _ = write!(s, " — audit: {}", a.verdict.as_str());
        if let Some(d) = &a.detail {
            let _ = write!(s, ": {d}");
        }
    }
    s
}

/// The call's timeline: each event received for it, each answer, what each sink did and where
/// each copy is.
pub fn timeline(call_id: &str, records: &[Record]) -> String {
    if records.is_empty() {
        return format!("call {call_id}: no deliveries on record\n");
    }
    let mut out = format!("call {call_id}: {} event(s)\n", records.len());
    for r in records {
        let what = match &r.status {
            Some(st) => format!("{} {st}", r.kind.as_str()),
            None => r.kind.as_str().to_string(),
        };
        let answers: Vec<String> = r
            .attempts
            .iter()
            .map(|a| format!("{} at {}", a.http_status, time_of(a.at_ms)))
            .collect();
        let _ = writeln!(
            out,
            "{}  {what}  event {}{}",
            time_of(r.received_at_ms),
            r.event_id,
            r.origin
                .as_deref()
                .map(|o| format!(" (origin {o})"))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "    answered: {}", answers.join(", "));
        for e in &r.sinks {
            let _ = writeln!(out, "{}", sink_line(e));
        }
    }
    out
}

/// The audit report as a table; the missing ones listed by id below it.
pub fn audit_table(sinks: &[SinkAudit]) -> String {
    let mut out = format!(
        "{:<24} {:>9} {:>9} {:>8} {:>13} {:>10}\n",
        "sink", "answered", "verified", "missing", "unverifiable", "unaudited"
    );
    for s in sinks {
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>9} {:>8} {:>13} {:>10}",
            s.sink, s.answered, s.verified, s.missing, s.unverifiable, s.unaudited
        );
    }
    for s in sinks.iter().filter(|s| !s.missing_ids.is_empty()) {
        let _ = writeln!(out, "missing at {}: {}", s.sink, s.missing_ids.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::index::Attempt;
    use crate::delivery::{Answer, AuditResult, Outcome, Verdict};

    #[test]
    fn the_timeline_shows_each_answer_each_sink_and_where_each_copy_is() {
        let mut kafka =
            SinkEntry::new("k", "kafka", true, Outcome::Acked).with_receipt(Receipt::Kafka {
                topic: "calls".into(),
                partition: 2,
                offset: 41,
            });
        kafka.audit = Some(AuditResult {
            verdict: Verdict::Missing,
            at_ms: 0,
            detail: Some("deleted".into()),
        });
        let spooled = SinkEntry::new("r", "rabbitmq", true, Outcome::Spooled)
            .with_spool_seq(Some(9))
            .with_reason("not_connected: down");
        let r = Record {
            seq: 1,
            event_id: "e1".into(),
            call_id: "c1".into(),
            kind: crate::event::EventKind::Status,
            status: Some("completed".into()),
            origin: None,
            received_at_ms: 0,
            answer: Some(Answer::Accepted),
            attempts: vec![
                Attempt {
                    at_ms: 0,
                    http_status: 503,
                    answer: Answer::NotDelivered,
                },
                Attempt {
                    at_ms: 60_000,
                    http_status: 200,
                    answer: Answer::Accepted,
                },
            ],
            sinks: vec![kafka, spooled],
        };
        let t = timeline("c1", &[r]);
        assert!(
            t.starts_with(
                "call c1: 1 event(s)\n1970-01-01T00:00:00Z  status completed  event e1\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("answered: 503 at 1970-01-01T00:00:00Z, 200 at 1970-01-01T00:01:00Z"),
            "{t}"
        );
        assert!(t.contains("calls[2]@41 — audit: missing: deleted"), "{t}");
        assert!(
            t.contains("spooled        spool seq 9 (not_connected: down)"),
            "{t}"
        );
        assert_eq!(timeline("c2", &[]), "call c2: no deliveries on record\n");
    }

    #[test]
    fn receipts_read_as_places() {
        let js = Receipt::JetStream {
            stream: "S".into(),
            sequence: 5,
            duplicate: false,
        };
        assert_eq!(receipt_text(&js), "S#5");
        assert_eq!(
            receipt_text(&Receipt::File {
                path: "/a".into(),
                offset: 3
            }),
            "/a@3"
        );
        assert_eq!(
            receipt_text(&Receipt::Rabbitmq {
                exchange: "x".into(),
                routing_key: "k".into()
            }),
            "exchange \"x\" key \"k\""
        );
        assert_eq!(
            receipt_text(&Receipt::NatsCore {
                subject: "a.b".into(),
                persisted: false
            }),
            "subject a.b (not stored)"
        );
        assert_eq!(
            receipt_text(&Receipt::Null { stored: false }),
            "(nothing stored)"
        );
    }

    #[test]
    fn the_audit_table_lists_the_missing_by_id() {
        let t = audit_table(&[SinkAudit {
            sink: "k".into(),
            answered: 3,
            verified: 1,
            missing: 2,
            unverifiable: 0,
            unaudited: 0,
            missing_ids: vec!["e1".into(), "e2".into()],
        }]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["k", "3", "1", "2", "0", "0"]
        );
        assert_eq!(lines[2], "missing at k: e1 e2");
    }
}
