//! What one indexed event costs: sends 2 x `--events` events (default 200 000) through a
//! delivery index capped at `--events`, each answered 200 with three broker sinks' receipts
//! (Kafka, RabbitMQ, JetStream) and an audit verdict on two of them, and reports the growth of
//! this process's resident memory per held event and the CPU time per recorded answer (one
//! thread, recording plus eviction; the audit's reads are the brokers' cost, not this). The
//! second half evicts the first: the steady state at the cap. Prints a Markdown section.
//! This is the figure behind `delivery::BYTES_PER_EVENT` (the sizing hint of `validate`).

use std::sync::Arc;

use callbridge::delivery::metrics::DeliveryMetrics;
use callbridge::delivery::{
    Answer, AuditResult, Deliveries, DeliverySettings, EventMeta, Outcome, SinkEntry, Verdict,
};
use callbridge::sinks::Receipt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// This process's user + system CPU seconds (/proc/self/stat, clock ticks of 10 ms).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let mut events = 200_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--events" {
            events = args.next().and_then(|v| v.parse().ok()).unwrap_or(events);
        }
    }
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    let statuses = ["registered", "ongoing", "completed", "failed"];
    let metas: Vec<EventMeta> = (0..2 * events)
        .map(|i| EventMeta {
            event_id: callbridge::event::id::derive(&[
                "callback",
                &format!("call-{}", i / 4),
                "status",
                statuses[i % 4],
                "0",
            ]),
            call_id: format!("7f1c4d2e-5b6a-4c3d-9e8f-{:012}", i / 4),
            kind: callbridge::event::EventKind::Status,
            status: Some(statuses[i % 4].into()),
            origin: None,
        })
        .collect();
    let settings = DeliverySettings {
        max_events: events,
        max_age_secs: 1800,
        ..DeliverySettings::default()
    };
    let before = rss_bytes();
    let d = Deliveries::new(&settings, Arc::new(DeliveryMetrics::unregistered()));
    let cpu_before = cpu_secs();
    let wall = std::time::Instant::now();
    for (i, meta) in metas.iter().enumerate() {
        let status = statuses[i % 4];
        let kafka = Receipt::Kafka {
            topic: "calls.status".into(),
            partition: (i % 6) as i32,
            offset: i as i64,
        };
        let js = Receipt::JetStream {
            stream: "CALLS".into(),
            sequence: i as u64,
            duplicate: false,
        };
        let sinks = vec![
            SinkEntry::new("bus", "kafka", true, Outcome::Acked).with_receipt(kafka.clone()),
            SinkEntry::new("amqp", "rabbitmq", true, Outcome::Acked).with_receipt(
                Receipt::Rabbitmq {
                    exchange: "callbridge".into(),
                    routing_key: format!("calls.status.{status}"),
                },
            ),
            SinkEntry::new("js", "nats", true, Outcome::Acked).with_receipt(js.clone()),
        ];
        d.answered(meta, Answer::Accepted, sinks);
        let verdict = AuditResult {
            verdict: Verdict::Verified,
            at_ms: 0,
            detail: None,
        };
        d.audited(&meta.event_id, "bus", &kafka, verdict.clone());
        d.audited(&meta.event_id, "js", &js, verdict);
    }
    let cpu = cpu_secs() - cpu_before;
    let wall = wall.elapsed().as_secs_f64();
    let after = rss_bytes();
    assert_eq!(d.len(), events, "the cap holds");
    let per_event = (after.saturating_sub(before)) as f64 / events as f64;
    let n = (2 * events) as f64;
    println!("\n## The delivery index's cost\n");
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    println!(
        "Measured {date}: {} events through an index capped at {events} (the steady state at the \
         cap), each answered 200 with three broker sinks' receipts (Kafka, RabbitMQ, JetStream) \
         and two audit verdicts, mimalloc, no transparent huge pages: **{per_event:.0} bytes per \
         held event** of resident memory ({:.1} MiB in all; `deliveries.max_events` 100 000 → \
         {:.1} MiB), **{:.2} µs of CPU per event** recorded and audited ({:.2} µs wall, one \
         thread).",
        2 * events,
        (after - before) as f64 / 1048576.0,
        per_event * 100_000.0 / 1048576.0,
        cpu / n * 1e6,
        wall / n * 1e6,
    );
}
