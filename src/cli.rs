//! What the subcommands do, kept in the library so tests can call it.

use serde_json::Value;

pub use crate::event::samples::{sample_agent_event, sample_payload};

/// How `send-test` authenticates, as each webhook family does.
pub enum SendAuth {
    /// The callback family: a static key in a header (`callback_args.headers`).
    ApiKey {
        header: String,
        key: String,
    },
    /// Agent event subscriptions: `Authorization: Bearer <token>`.
    Bearer(String),
    None,
}

/// The answer to a `send-test` post.
pub struct SendTestResult {
    pub status: u16,
    pub body: String,
}

/// Posts a payload the way the sender does: JSON body, its credential, and (like the sender by
/// default) no Content-Type.
pub async fn send_test(
    url: &str,
    auth: &SendAuth,
    payload: &Value,
    timeout: std::time::Duration,
) -> Result<SendTestResult, reqwest::Error> {
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    let mut req = client.post(url).body(payload.to_string());
    match auth {
        SendAuth::ApiKey { header, key } => req = req.header(header.as_str(), key.as_str()),
        SendAuth::Bearer(token) => req = req.bearer_auth(token),
        SendAuth::None => {}
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let body = resp.text().await?;
    Ok(SendTestResult { status, body })
}

/// What `callbridge replay --from FILE --to SINK` did.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// Events read from the file.
    pub read: u64,
    /// Confirmed by the sink (a JetStream duplicate of an id it already holds counts: stored once).
    pub published: u64,
    /// Not wanted by the sink's `events` filter.
    pub skipped: u64,
    /// (line number, reason) of every event the sink did not confirm.
    pub failed: Vec<(usize, String)>,
}

/// Backfills `sink` from a file sink's JSONL archive (one structured event per line), in file
/// order, with the events' own ids (so brokers and consumers dedupe what they already have).
/// A line that is not an event is reported, not fatal; each publish waits for the sink's
/// confirmation under its timeout, one at a time, so a call's events keep their order.
pub async fn replay_file(
    path: &std::path::Path,
    sink: &crate::sinks::SinkHandle,
) -> std::io::Result<ReplayReport> {
    use tokio::io::AsyncBufReadExt;
    let file = tokio::fs::File::open(path).await?;
    let mut lines = tokio::io::BufReader::new(file).lines();
    let mut report = ReplayReport::default();
    let mut n = 0usize;
    while let Some(line) = lines.next_line().await? {
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        let event: crate::event::Event = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(e) => {
                report.failed.push((n, format!("not an event: {e}")));
                continue;
            }
        };
        report.read += 1;
        if !sink.wants(&event) {
            report.skipped += 1;
            continue;
        }
        let out = crate::sinks::Outgoing::new(event);
        let result = match tokio::time::timeout(sink.timeout, sink.sink.publish(&out)).await {
            Ok(r) => r,
            Err(_) => Err(crate::sinks::SinkError::Timeout(
                sink.timeout.as_millis() as u64
            )),
        };
        match result {
            Ok(_) => report.published += 1,
            Err(e) => report
                .failed
                .push((n, format!("{}: {}", e.code(), e.detail()))),
        }
    }
    Ok(report)
}

/// What `callbridge reconcile` prints for a pass: one line per event (published, or in a dry
/// run what would be), the failures, then a summary line.
pub fn render_reconcile(report: &crate::reconcile::PassReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "window {} .. {}{}",
        report.window_start,
        report.window_end,
        if report.dry_run {
            " (dry run: nothing published)"
        } else {
            ""
        }
    );
    let verb = if report.dry_run {
        "would publish"
    } else {
        "published"
    };
    for b in &report.published {
        let _ = writeln!(
            out,
            "{verb} {} {} call {} status {}",
            b.event_id,
            b.ty,
            b.call_id,
            b.status.as_deref().unwrap_or("-")
        );
    }
    for b in &report.failed {
        let _ = writeln!(
            out,
            "not confirmed {} {} call {}: {}",
            b.event_id,
            b.ty,
            b.call_id,
            b.error.as_deref().unwrap_or("")
        );
    }
    for e in &report.api_errors {
        let _ = writeln!(out, "api error: {e}");
    }
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let _ = writeln!(
        out,
        "checked {} calls: {} already delivered, {} settling, {} not ended; {} {}, {} not confirmed, {} api errors{}",
        report.calls_checked,
        report.already_delivered,
        report.settling,
        report.not_ended,
        verb,
        report.published.len(),
        report.failed.len(),
        report.api_errors.len(),
        if report.complete { "" } else { " (incomplete: a listing failed)" }
    );
    out
}
