//! One reconciliation pass: list the calls of the window, and for each call that ended long
//! enough ago, publish through the normal fan-out whatever of its terminal status and analysis
//! no webhook got confirmed at every required sink.
//!
//! Per call, at most one details request: none when the ledger already holds both the status
//! and (for a completed call, with `analysis: true`) an analysis; otherwise one, with
//! `send_analysis=true` when an analysis is still wanted. A call the API errors on is counted
//! and left for the next pass; the rest of the pass goes on. Publishing goes through
//! [`Fanout::deliver`], so the ledger records the receipts and a webhook arriving afterwards is
//! answered `duplicate`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::client::{list_all, CallSource, CallSummary, Window};
use super::events::{analysis_events, status_event, CallFacts, Expected, TERMINAL_STATUSES};
use crate::event::{Event, EventSettings, Family};
use crate::fanout::Fanout;
use crate::ledger::{DeliveryRecord, LedgerError};
use crate::metrics::Metrics;

/// What a pass is told to do beyond the configuration.
#[derive(Debug, Clone, Copy)]
pub struct PassOptions {
    /// How far back to list calls (the configured `lookback_secs`, or `--since`).
    pub lookback: Duration,
    /// Say what would be published, publish nothing.
    pub dry_run: bool,
}

/// One event a pass published (or, in a dry run, would publish), or could not get confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backfill {
    pub call_id: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub status: Option<String>,
    /// Why it was not confirmed (failed ones only): the required sinks that did not confirm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one pass saw and did: the answer of `POST /reconcile` and what `callbridge reconcile`
/// prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PassReport {
    pub dry_run: bool,
    pub window_start: String,
    pub window_end: String,
    /// Every listing of the window was read to its end (the API may still have failed on some
    /// calls' details: `api_errors`).
    pub complete: bool,
    /// Calls the history listed (each one checked).
    pub calls_checked: u64,
    /// Calls still in progress (no terminal status yet), left for a later pass.
    pub not_ended: u64,
    /// Calls that ended less than `settle_secs` ago: their webhooks may still come.
    pub settling: u64,
    /// Calls whose every expected event some required sink set already confirmed.
    pub already_delivered: u64,
    /// Listings and calls the platform's API failed on (after its retries).
    pub api_errors: Vec<String>,
    /// Published and confirmed by every required sink (dry run: would be published).
    pub published: Vec<Backfill>,
    /// Published but not confirmed by every required sink: tried again next pass.
    pub failed: Vec<Backfill>,
    pub warnings: Vec<String>,
}

/// The reconciliation settings a pass needs.
#[derive(Debug, Clone)]
pub struct PassSettings {
    pub settle: Duration,
    pub agent_ids: Vec<String>,
    pub family: Family,
    pub analysis: bool,
    /// How long the ledger remembers (the memory ledger's window): a lookback beyond it
    /// re-publishes what it forgot, and the report says so.
    pub ledger_window: Duration,
    /// The configured `lookback_secs`: a pass's default.
    pub lookback: Duration,
}

pub struct Reconciler {
    source: Arc<dyn CallSource>,
    fanout: Arc<Fanout>,
    record: Arc<dyn DeliveryRecord>,
    metrics: Arc<Metrics>,
    event: EventSettings,
    settings: PassSettings,
    /// Each backfilled event's publish deadline.
    publish_timeout: Duration,
    /// One pass at a time: a scheduled pass and `callbridge reconcile` never overlap.
    running: tokio::sync::Mutex<()>,
}

/// Why one call could not be reconciled this pass.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error(transparent)]
    Api(#[from] super::client::ApiError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl Reconciler {
    pub fn new(
        source: Arc<dyn CallSource>,
        fanout: Arc<Fanout>,
        record: Arc<dyn DeliveryRecord>,
        metrics: Arc<Metrics>,
        event: EventSettings,
        settings: PassSettings,
        publish_timeout: Duration,
    ) -> Reconciler {
        Reconciler {
            source,
            fanout,
            record,
            metrics,
            event,
            settings,
            publish_timeout,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs one pass (waiting for one in progress to end first).
    pub async fn pass(&self, opts: PassOptions) -> PassReport {
        let _one_at_a_time = self.running.lock().await;
        self.run(opts).await
    }

    /// Runs one pass now, or `None` at once when one is in progress (an operator's pass never
    /// queues behind another: `POST /reconcile` answers 409).
    pub async fn try_pass(&self, opts: PassOptions) -> Option<PassReport> {
        let _one_at_a_time = self.running.try_lock().ok()?;
        Some(self.run(opts).await)
    }

    /// The longest lookback a pass may be asked for: the ledger's window (the configured
    /// `lookback_secs` is at most that). Beyond it delivered events are forgotten and would be
    /// published again.
    pub fn max_lookback(&self) -> Duration {
        self.settings.ledger_window.max(self.settings.lookback)
    }

    async fn run(&self, opts: PassOptions) -> PassReport {
        let now = OffsetDateTime::now_utc();
        // Checked: a lookback past the calendar's start must not panic the pass.
        let start = time::Duration::try_from(opts.lookback)
            .ok()
            .and_then(|d| now.checked_sub(d))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        // A call created later than this cannot have ended `settle` ago.
        let end = time::Duration::try_from(self.settings.settle)
            .ok()
            .and_then(|d| now.checked_sub(d))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut report = PassReport {
            dry_run: opts.dry_run,
            window_start: rfc3339(start),
            window_end: rfc3339(end),
            complete: true,
            ..PassReport::default()
        };
        if opts.lookback > self.settings.ledger_window {
            report.warnings.push(format!(
                "the lookback ({} s) is longer than the ledger remembers (idempotency.window_secs \
                 {} s): events delivered before that are published again, with their same ids",
                opts.lookback.as_secs(),
                self.settings.ledger_window.as_secs()
            ));
        }
        if end <= start {
            report
                .warnings
                .push("the window is empty: the lookback is not longer than settle_secs".into());
            return report;
        }
        let agents: Vec<Option<String>> = if self.settings.agent_ids.is_empty() {
            vec![None]
        } else {
            self.settings.agent_ids.iter().cloned().map(Some).collect()
        };
        let mut seen = HashSet::new();
        for agent_id in agents {
            let window = Window {
                start: report.window_start.clone(),
                end: report.window_end.clone(),
                agent_id: agent_id.clone(),
            };
            let (calls, unusable) = match list_all(self.source.as_ref(), &window).await {
                Ok(v) => v,
                Err(e) => {
                    report.complete = false;
                    let which = agent_id
                        .map(|a| format!(" of agent {a}"))
                        .unwrap_or_default();
                    report
                        .api_errors
                        .push(format!("listing the calls{which}: {e}"));
                    continue;
                }
            };
            if unusable > 0 {
                report.warnings.push(format!(
                    "{unusable} history rows without a call id were skipped"
                ));
            }
            for call in calls {
                if !seen.insert(call.id.clone()) {
                    continue;
                }
                self.metrics.reconcile_calls_checked.inc();
                report.calls_checked += 1;
                if let Err(e) = self.call(&call, now, opts.dry_run, &mut report).await {
                    report.api_errors.push(format!("call {}: {e}", call.id));
                }
            }
        }
        if report.complete && !opts.dry_run {
            self.metrics
                .reconcile_last_pass
                .set(OffsetDateTime::now_utc().unix_timestamp() as f64);
        }
        tracing::info!(
            dry_run = opts.dry_run,
            complete = report.complete,
            calls_checked = report.calls_checked,
            already_delivered = report.already_delivered,
            settling = report.settling,
            not_ended = report.not_ended,
            published = report.published.len(),
            failed = report.failed.len(),
            api_errors = report.api_errors.len(),
            "reconcile pass done"
        );
        report
    }

    /// Reconciles one call.
    async fn call(
        &self,
        call: &CallSummary,
        now: OffsetDateTime,
        dry_run: bool,
        report: &mut PassReport,
    ) -> Result<(), CallError> {
        let mut details: Option<Map<String, Value>> = None;
        let status = match &call.status {
            Some(s) => s.clone(),
            // The listing did not say: the details do.
            None => {
                let d = self
                    .source
                    .details(&call.id, self.settings.analysis)
                    .await?;
                let s = d
                    .get("call_status")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                details = Some(d);
                match s {
                    Some(s) => s,
                    None => {
                        report.not_ended += 1;
                        return Ok(());
                    }
                }
            }
        };
        if !TERMINAL_STATUSES.contains(&status.as_str()) {
            report.not_ended += 1;
            return Ok(());
        }
        if let Some(ended) = ended_at(&call.row) {
            if now - ended < self.settings.settle {
                report.settling += 1;
                return Ok(());
            }
        }
        let time = rfc3339(now);
        let wants_analysis = self.settings.analysis && status == "completed";
        // What the ledger says before any details request.
        let probe = CallFacts {
            call_id: &call.id,
            status: &status,
            row: &call.row,
            details: details.as_ref(),
        };
        let status_done = self
            .delivered(&status_event(
                &probe,
                self.settings.family,
                &self.event,
                &time,
            ))
            .await?;
        let analysis_done = if wants_analysis {
            let both = probe_analyses();
            let probe = CallFacts {
                details: Some(&both),
                ..probe
            };
            let mut done = true;
            for e in analysis_events(&probe, self.settings.family, &self.event, &time) {
                done &= self.delivered(&e).await?;
            }
            done
        } else {
            true
        };
        if status_done && analysis_done {
            report.already_delivered += 1;
            return Ok(());
        }
        // Fetched above when the listing lacked the status (with the analyses when configured).
        let details = match details {
            Some(d) => d,
            None => self.source.details(&call.id, wants_analysis).await?,
        };
        let facts = CallFacts {
            call_id: &call.id,
            // The details' status is the newer word on it.
            status: details
                .get("call_status")
                .and_then(Value::as_str)
                .filter(|s| TERMINAL_STATUSES.contains(s))
                .unwrap_or(&status),
            row: &call.row,
            details: Some(&details),
        };
        let mut expected = vec![status_event(
            &facts,
            self.settings.family,
            &self.event,
            &time,
        )];
        if wants_analysis {
            expected.extend(analysis_events(
                &facts,
                self.settings.family,
                &self.event,
                &time,
            ));
        }
        for e in expected {
            // Asked again: the details may have changed the ids (a retry count), and a
            // webhook may have arrived meanwhile.
            if self.delivered(&e).await? {
                continue;
            }
            self.publish(e.event, dry_run, report).await;
        }
        Ok(())
    }

    /// The configured lookback.
    pub fn lookback(&self) -> Duration {
        self.settings.lookback
    }

    /// Whether every required sink can reach its destination.
    pub fn sinks_ready(&self) -> bool {
        self.fanout.ready()
    }

    /// Whether some id of `e` is confirmed by every sink that counts for it. A spooling sink
    /// that still holds events of this call in the spool counts as confirmed for now: the spool
    /// delivers them, and publishing again would only queue another copy each pass; the first
    /// pass after the spool drained looks again.
    async fn delivered(&self, e: &Expected) -> Result<bool, LedgerError> {
        let sinks = self.counting_sinks(&e.event);
        if sinks.is_empty() {
            // No sink wants it: there is nothing to deliver.
            return Ok(true);
        }
        let spooled = |sink: &str| {
            self.fanout.spool().is_some_and(|spool| {
                self.fanout.sinks().iter().any(|s| {
                    s.name == sink && s.on_unavailable == crate::sinks::OnUnavailable::Spool
                }) && spool.has_waiting(sink, &e.event.subject)
            })
        };
        for id in &e.delivered_as {
            let mut all = true;
            for sink in &sinks {
                if !spooled(sink) && !self.record.confirmed(id, sink).await? {
                    all = false;
                    break;
                }
            }
            if all {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The sinks whose confirmation makes an event delivered: the required ones that want it
    /// (as for a webhook's answer), or, when none is required, every one that wants it.
    fn counting_sinks(&self, event: &Event) -> Vec<String> {
        let wanting = self.fanout.sinks().iter().filter(|s| s.wants(event));
        let required: Vec<String> = wanting
            .clone()
            .filter(|s| s.required)
            .map(|s| s.name.clone())
            .collect();
        if required.is_empty() {
            wanting.map(|s| s.name.clone()).collect()
        } else {
            required
        }
    }

    async fn publish(&self, event: Event, dry_run: bool, report: &mut PassReport) {
        let mut b = Backfill {
            call_id: event.subject.clone(),
            event_id: event.id.clone(),
            ty: event.ty.clone(),
            status: event.callstatus.clone(),
            error: None,
        };
        if dry_run {
            report.published.push(b);
            return;
        }
        let kind = event.data.kind;
        let deadline = tokio::time::Instant::now() + self.publish_timeout;
        let delivery = self.fanout.deliver(event, deadline).await;
        if delivery.accepted() {
            self.metrics
                .reconcile_backfilled
                .with_label_values(&[kind.as_str()])
                .inc();
            tracing::info!(event_id = %b.event_id, call_id = %b.call_id, kind = kind.as_str(), "event backfilled");
            report.published.push(b);
        } else {
            self.metrics.reconcile_publish_failed.inc();
            let failed = delivery.failed_required().join(", ");
            tracing::warn!(event_id = %b.event_id, call_id = %b.call_id, sinks = %failed, "backfilled event not confirmed; tried again next pass");
            b.error = Some(format!("not confirmed by {failed}"));
            report.failed.push(b);
        }
    }
}

/// Details with both analyses present, to ask the ledger about analyses before fetching any.
fn probe_analyses() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("platform_analysis".into(), Value::Object(Map::new()));
    m.insert("client_analysis".into(), Value::Object(Map::new()));
    m
}

/// When the call ended: its attempt time (else its creation) plus its duration. `None` when
/// the row has neither time: the window's end (`settle_secs` ago) then bounds it.
pub fn ended_at(row: &Map<String, Value>) -> Option<OffsetDateTime> {
    let started = ["call_attempt_time", "created_at"]
        .iter()
        .filter_map(|k| row.get(*k).and_then(Value::as_str))
        .find_map(|s| OffsetDateTime::parse(s, &Rfc3339).ok())?;
    let duration = row
        .get("call_duration")
        .and_then(Value::as_f64)
        .filter(|d| d.is_finite() && *d >= 0.0)
        .unwrap_or(0.0);
    Some(started + Duration::from_secs_f64(duration.min(86_400.0)))
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Seconds since the Unix epoch (for tests and the CLI).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
