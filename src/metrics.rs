//! Prometheus metrics, one registry per [`crate::Application`] (so tests can run many apps).
//!
//! Names follow the Prometheus conventions: `callbridge_*_total` counters, `*_seconds`
//! histograms. Label values are bounded: routes are patterns, sinks are configured names, event
//! types come from the fixed set we emit, outcomes from [`crate::sinks::SinkError::code`].

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// What the idempotency ledger reports about itself ([`Metrics::observe_ledger`]). Defined here
/// so that `metrics` stays a leaf: the ledger reports to it, it imports nothing of the crate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerStats {
    pub entries: usize,
    pub expired: u64,
    pub evicted_early: u64,
    /// Age of the oldest entry: how far back a redelivery is still recognised right now
    /// (the window when the cap is large enough, less when it is not).
    pub retention: std::time::Duration,
}

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub in_flight: IntGauge,
    pub events: IntCounterVec,
    pub publish_seconds: HistogramVec,
    pub sink_outcomes: IntCounterVec,
    pub idempotency_hits: IntCounterVec,
    pub sink_ready: IntGaugeVec,
    pub unknown_status: IntCounter,
    pub unknown_event_type: IntCounter,
    /// Requests shed, by which limit (`requests`, `bytes`, `processing`: 503; `rate`: 429).
    pub shed: IntCounterVec,
    /// `server.tls` certificate reloads after a file change, by outcome (`ok`, `failed`).
    pub tls_reloads: IntCounterVec,
    pub ledger_entries: IntGauge,
    pub ledger_evicted: IntCounterVec,
    pub ledger_retention: Gauge,
    pub id_payload_mismatch: IntCounter,
    /// Events waiting in the spool, by sink, and the bytes they hold (all sinks).
    pub spool_depth: IntGaugeVec,
    pub spool_bytes: IntGauge,
    /// Dead letters kept per sink, and those not kept because `spool.max_dead_letters` was
    /// reached (since the start).
    pub spool_dead_letters: IntGaugeVec,
    pub spool_dead_letters_discarded: IntGaugeVec,
    /// Reconciliation (docs/reconcile.md): calls listed and judged, events published because
    /// their webhook never arrived (by kind), events it could not get confirmed, platform API
    /// errors (by reason), and when the last pass completed (Unix seconds).
    pub reconcile_calls_checked: IntCounter,
    pub reconcile_backfilled: IntCounterVec,
    pub reconcile_publish_failed: IntCounter,
    pub reconcile_api_errors: IntCounterVec,
    pub reconcile_last_pass: Gauge,
    /// The shared ledger (`idempotency.store: nats-kv`): claims by outcome (`mine`, `acked`,
    /// `busy`, `error`), lost compare-and-set races, expired claims taken over, and the time
    /// of each bucket round (`claim`, `record`).
    pub ledger_kv_claims: IntCounterVec,
    pub ledger_kv_conflicts: IntCounter,
    pub ledger_kv_takeovers: IntCounter,
    pub ledger_kv_seconds: HistogramVec,
    /// Always 1; its labels say which build is running (dashboards join on it across a rollout).
    pub build_info: IntGaugeVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "callbridge_http_requests_total",
                "HTTP requests by route and status code",
            ),
            &["route", "code"],
        )
        .expect("valid metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "callbridge_http_request_duration_seconds",
                "Time from request to answer, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new(
            "callbridge_http_requests_in_flight",
            "Requests being processed right now",
        )
        .expect("valid metric");
        let events = IntCounterVec::new(
            Opts::new(
                "callbridge_events_total",
                "Webhooks normalised into events, by CloudEvents type",
            ),
            &["type"],
        )
        .expect("valid metric");
        let publish_seconds = HistogramVec::new(
            HistogramOpts::new(
                "callbridge_sink_publish_duration_seconds",
                "Time from publish to the broker's acknowledgement (or failure), by sink",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["sink"],
        )
        .expect("valid metric");
        let sink_outcomes = IntCounterVec::new(
            Opts::new(
                "callbridge_sink_publish_total",
                "Publish outcomes by sink: acked, skipped, timeout, or the failure reason",
            ),
            &["sink", "outcome"],
        )
        .expect("valid metric");
        let idempotency_hits = IntCounterVec::new(
            Opts::new(
                "callbridge_idempotency_hits_total",
                "Redeliveries not published again because the sink had already acknowledged them",
            ),
            &["sink"],
        )
        .expect("valid metric");
        let sink_ready = IntGaugeVec::new(
            Opts::new(
                "callbridge_sink_ready",
                "1 when the sink can reach its destination",
            ),
            &["sink"],
        )
        .expect("valid metric");
        let unknown_status = IntCounter::new(
            "callbridge_unknown_status_total",
            "Webhooks whose call status is not one of the documented ones (forwarded unchanged)",
        )
        .expect("valid metric");
        let unknown_event_type = IntCounter::new(
            "callbridge_unknown_event_type_total",
            "Agent events whose event_type is not one of the documented ones (forwarded as kind other)",
        )
        .expect("valid metric");
        let shed = IntCounterVec::new(
            Opts::new(
                "callbridge_http_shed_total",
                "Webhook requests shed by a limit: requests, bytes being received or processing bytes in flight (503), rate (server.rate_limit, 429)",
            ),
            &["limit"],
        )
        .expect("valid metric");
        let tls_reloads = IntCounterVec::new(
            Opts::new(
                "callbridge_tls_reloads_total",
                "TLS certificate reloads after its files changed, by outcome (failed: the previous certificate stays)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let spool_depth = IntGaugeVec::new(
            Opts::new(
                "callbridge_spool_depth",
                "Events waiting in the spool for a sink (on_unavailable: spool)",
            ),
            &["sink"],
        )
        .expect("valid metric");
        let spool_bytes = IntGauge::new(
            "callbridge_spool_bytes",
            "Bytes of events held in the spool, all sinks (bounded by spool.max_bytes)",
        )
        .expect("valid metric");
        let spool_dead_letters = IntGaugeVec::new(
            Opts::new(
                "callbridge_spool_dead_letters",
                "Dead letters kept in the spool for a sink, one per event (bounded by spool.max_dead_letters)",
            ),
            &["sink"],
        )
        .expect("valid metric");
        let spool_dead_letters_discarded = IntGaugeVec::new(
            Opts::new(
                "callbridge_spool_dead_letters_discarded",
                "Dead letters of a sink not kept since the start because spool.max_dead_letters was reached",
            ),
            &["sink"],
        )
        .expect("valid metric");
        let ledger_kv_claims = IntCounterVec::new(
            Opts::new(
                "callbridge_ledger_kv_claims_total",
                "Claims on the shared ledger (nats-kv) by outcome: mine, acked, busy, error",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let ledger_kv_conflicts = IntCounter::new(
            "callbridge_ledger_kv_conflicts_total",
            "Compare-and-set races on the shared ledger lost to another delivery",
        )
        .expect("valid metric");
        let ledger_kv_takeovers = IntCounter::new(
            "callbridge_ledger_kv_takeovers_total",
            "Expired claims of another replica taken over on the shared ledger",
        )
        .expect("valid metric");
        let ledger_kv_seconds = HistogramVec::new(
            prometheus::HistogramOpts::new(
                "callbridge_ledger_kv_seconds",
                "Time of a shared-ledger round (claim, record)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["op"],
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "callbridge_build_info",
                "Always 1: the running version and the event schema version it emits",
            ),
            &["version", "schema"],
        )
        .expect("valid metric");
        let ledger_entries = IntGauge::new(
            "callbridge_ledger_entries",
            "Event ids the idempotency ledger remembers",
        )
        .expect("valid metric");
        let ledger_evicted = IntCounterVec::new(
            Opts::new(
                "callbridge_ledger_evicted_total",
                "Ledger entries let go: reason=window (expired, as intended) or reason=cap \
                 (max_entries reached inside the window: a redelivery of it would publish again)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let ledger_retention = Gauge::new(
            "callbridge_ledger_retention_seconds",
            "Age of the oldest ledger entry: how far back a redelivery is recognised right now",
        )
        .expect("valid metric");
        let id_payload_mismatch = IntCounter::new(
            "callbridge_event_id_payload_mismatch_total",
            "Deliveries whose event id was seen before with different content",
        )
        .expect("valid metric");
        let reconcile_calls_checked = IntCounter::new(
            "callbridge_reconcile_calls_checked_total",
            "Calls reconciliation listed from the platform's API and checked against the ledger",
        )
        .expect("valid metric");
        let reconcile_backfilled = IntCounterVec::new(
            Opts::new(
                "callbridge_reconcile_events_backfilled_total",
                "Events reconciliation published (confirmed by every required sink) because \
                 their webhook never arrived, by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let reconcile_publish_failed = IntCounter::new(
            "callbridge_reconcile_publish_failed_total",
            "Backfilled events a required sink did not confirm (tried again next pass)",
        )
        .expect("valid metric");
        let reconcile_api_errors = IntCounterVec::new(
            Opts::new(
                "callbridge_reconcile_api_errors_total",
                "Failed requests to the platform's API, by reason (rate_limited, server_error, \
                 client_error, unauthorized, timeout, connect, decode, too_large)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let reconcile_last_pass = Gauge::new(
            "callbridge_reconcile_last_complete_pass_timestamp_seconds",
            "When the last reconciliation pass that listed every call of its window ended \
             (Unix time; 0: none yet)",
        )
        .expect("valid metric");
        for c in [
            Box::new(reconcile_calls_checked.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_backfilled.clone()),
            Box::new(reconcile_publish_failed.clone()),
            Box::new(reconcile_api_errors.clone()),
            Box::new(reconcile_last_pass.clone()),
            Box::new(id_payload_mismatch.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(build_info.clone()),
            Box::new(ledger_kv_claims.clone()),
            Box::new(ledger_kv_conflicts.clone()),
            Box::new(ledger_kv_takeovers.clone()),
            Box::new(ledger_kv_seconds.clone()),
            Box::new(spool_depth.clone()),
            Box::new(spool_bytes.clone()),
            Box::new(spool_dead_letters.clone()),
            Box::new(spool_dead_letters_discarded.clone()),
            Box::new(ledger_entries.clone()),
            Box::new(ledger_evicted.clone()),
            Box::new(ledger_retention.clone()),
            Box::new(shed.clone()),
            Box::new(tls_reloads.clone()),
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_seconds.clone()),
            Box::new(in_flight.clone()),
            Box::new(events.clone()),
            Box::new(publish_seconds.clone()),
            Box::new(sink_outcomes.clone()),
            Box::new(idempotency_hits.clone()),
            Box::new(sink_ready.clone()),
            Box::new(unknown_status.clone()),
            Box::new(unknown_event_type.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            requests,
            request_seconds,
            in_flight,
            events,
            publish_seconds,
            sink_outcomes,
            idempotency_hits,
            sink_ready,
            unknown_status,
            unknown_event_type,
            shed,
            tls_reloads,
            ledger_entries,
            ledger_evicted,
            ledger_retention,
            id_payload_mismatch,
            reconcile_calls_checked,
            reconcile_backfilled,
            reconcile_publish_failed,
            reconcile_api_errors,
            reconcile_last_pass,
            build_info,
            spool_depth,
            spool_bytes,
            spool_dead_letters,
            spool_dead_letters_discarded,
            ledger_kv_claims,
            ledger_kv_conflicts,
            ledger_kv_takeovers,
            ledger_kv_seconds,
        }
    }

    /// `callbridge_build_info{version, schema}` = 1; the caller names the event schema it emits.
    pub fn set_build_info(&self, schema: &str) {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), schema])
            .set(1);
    }

    /// Brings the ledger's figures up to date (at scrape time: the ledger keeps the counts).
    pub fn observe_ledger(&self, stats: LedgerStats) {
        self.ledger_entries.set(stats.entries as i64);
        for (reason, total) in [("window", stats.expired), ("cap", stats.evicted_early)] {
            let counter = self.ledger_evicted.with_label_values(&[reason]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.ledger_retention.set(stats.retention.as_secs_f64());
    }

    pub fn sink_outcome(&self, sink: &str, outcome: &str) {
        self.sink_outcomes.with_label_values(&[sink, outcome]).inc();
    }

    pub fn publish_latency(&self, sink: &str, latency: Duration) {
        self.publish_seconds
            .with_label_values(&[sink])
            .observe(latency.as_secs_f64());
    }

    pub fn idempotency_hit(&self, sink: &str) {
        self.idempotency_hits.with_label_values(&[sink]).inc();
    }

    /// Registers a module's own metrics (the delivery index's, the audit's) with the rest.
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(c) {
            tracing::warn!(error = %e, "a metric could not be registered");
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
