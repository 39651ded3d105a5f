//! The bridge's own audit beside the runner's read-back: once every answer is in, the runner
//! awaits the audit (the oldest unaudited 200's age back at 0) and asks the admin plane which
//! copies the audit judged missing, per sink. Then the two must agree: the audit calls missing
//! exactly the copies the read-back did not find, except those the audit never judged (its
//! queue is in memory: a bridge killed or stopped loses the 200s still waiting, and without a
//! spool file the index itself).

use std::collections::BTreeSet;

use super::*;

/// One sink's audit after a mode, beside the read-back.
#[derive(Debug, Clone, Default)]
pub(crate) struct SinkAudit {
    /// 200s the index holds a stored copy of, and what the audit found of them.
    pub(crate) answered: u64,
    pub(crate) verified: u64,
    pub(crate) missing: u64,
    pub(crate) unverifiable: u64,
    pub(crate) unaudited: u64,
    /// Answered 200 and not found by the read-back.
    pub(crate) readback_missing: u64,
    /// Called missing by the audit and found by the read-back (a false alarm).
    pub(crate) false_missing: Vec<String>,
    /// Not found by the read-back, and judged present (verified) by the audit.
    pub(crate) overlooked: Vec<String>,
    /// Not found by the read-back and never judged by the audit (unaudited, or no longer in
    /// the index).
    pub(crate) unjudged: u64,
}

impl SinkAudit {
    pub(crate) fn agrees(&self) -> bool {
        self.false_missing.is_empty() && self.overlooked.is_empty()
    }
}

/// How long the audit may take after the last answer.
const AUDIT_DEADLINE: Duration = Duration::from_secs(90);

/// Waits for the audit to judge every 200 offered to it (the gauge is refreshed each second,
/// so it is believed only once read after a refresh that followed `last_answer`).
pub(crate) async fn await_audit(bridge: &bridge::Bridge, last_answer: Instant) -> Option<f64> {
    let started = Instant::now();
    let done = wait_until(AUDIT_DEADLINE, || async {
        last_answer.elapsed() > Duration::from_millis(1100)
            && bridge
                .metric("callbridge_audit_oldest_unaudited_seconds")
                .await
                == Some(0.0)
    })
    .await;
    done.then(|| started.elapsed().as_secs_f64())
}

/// The audit's verdicts per sink, against what the read-back found.
pub(crate) async fn compare(
    bridge: &bridge::Bridge,
    recs: &[Rec],
    stored: &BTreeMap<&'static str, readback::Stored>,
    since_ms: u64,
) -> Result<BTreeMap<&'static str, SinkAudit>> {
    let acked: BTreeSet<&str> = recs
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Answer {
                code: 200,
                event_id: Some(id),
                ..
            } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let summary = bridge
        .admin_json(&format!("/deliveries/audit?since={}", rfc3339(since_ms)))
        .await
        .context("GET /deliveries/audit")?;
    let mut out = BTreeMap::new();
    for sink in SINKS {
        let s = summary["sinks"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["sink"] == sink))
            .cloned()
            .unwrap_or_default();
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        let mut a = SinkAudit {
            answered: n("answered"),
            verified: n("verified"),
            missing: n("missing"),
            unverifiable: n("unverifiable"),
            unaudited: n("unaudited"),
            ..SinkAudit::default()
        };
        let found: BTreeSet<&str> = stored
            .get(sink)
            .into_iter()
            .flatten()
            .flatten()
            .map(String::as_str)
            .collect();
        let audit_missing = missing_ids(bridge, sink, since_ms).await?;
        for id in &audit_missing {
            if found.contains(id.as_str()) {
                a.false_missing.push(id.clone());
            }
        }
        for id in acked.iter().filter(|id| !found.contains(**id)) {
            a.readback_missing += 1;
            if audit_missing.contains(*id) {
                continue;
            }
            match verdict_of(bridge, id, sink).await?.as_deref() {
                Some("verified") => a.overlooked.push(id.to_string()),
                _ => a.unjudged += 1,
            }
        }
        out.insert(sink, a);
    }
    Ok(out)
}

/// Every event id the audit judged missing at `sink`, page by page.
async fn missing_ids(
    bridge: &bridge::Bridge,
    sink: &str,
    since_ms: u64,
) -> Result<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    let mut after = None;
    loop {
        let page = bridge
            .admin_json(&format!(
                "/deliveries?sink={sink}&outcome=missing&since={}&limit=1000{}",
                rfc3339(since_ms),
                after.map_or(String::new(), |a: u64| format!("&after={a}"))
            ))
            .await
            .context("GET /deliveries")?;
        for d in page["deliveries"].as_array().into_iter().flatten() {
            if let Some(id) = d["event_id"].as_str() {
                ids.insert(id.to_string());
            }
        }
        match page["next"].as_u64() {
            Some(n) => after = Some(n),
            None => return Ok(ids),
        }
    }
}

/// The audit's verdict on `event_id`'s copy at `sink` (None: not judged, or not on record).
async fn verdict_of(bridge: &bridge::Bridge, event_id: &str, sink: &str) -> Result<Option<String>> {
    let page = bridge
        .admin_json(&format!("/deliveries?event_id={event_id}"))
        .await
        .context("GET /deliveries?event_id=")?;
    Ok(page["deliveries"][0]["sinks"]
        .as_array()
        .and_then(|s| s.iter().find(|e| e["sink"] == sink))
        .and_then(|e| e["audit"]["verdict"].as_str())
        .map(str::to_string))
}

fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
