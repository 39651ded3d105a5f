//! What one remembered event id costs: sends 2 x `--ids` ids (default 200 000) through a ledger
//! capped at `--ids`, each acknowledged by three broker sinks with realistic receipts, and
//! reports the growth of this process's resident memory per remembered id, with the bridge's
//! allocator (mimalloc) and, as the bridge, without transparent huge pages. The second half
//! evicts the first: the steady state every bridge reaches once `max_entries` ids went through
//! (eviction leaves tombstones in the map, which then needs twice the buckets; see `Ledger::new`).
//! Prints a Markdown section; `scripts/bench` appends it to docs/benchmarks.md.
//! This is the figure behind `LEDGER_BYTES_PER_ENTRY` (the sizing hint of `validate`).

use std::time::Duration;

use callbridge::ledger::{Ledger, Take};
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

fn main() {
    let mut ids = 200_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--ids" {
            ids = args.next().and_then(|v| v.parse().ok()).unwrap_or(ids);
        }
    }
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    let statuses = ["registered", "ongoing", "completed", "failed"];
    let names: Vec<String> = (0..2 * ids)
        .map(|i| {
            callbridge::event::id::derive(&[
                "callback",
                &format!("call-{i}"),
                "status",
                "completed",
                "0",
            ])
        })
        .collect();
    let before = rss_bytes();
    let ledger = Ledger::new(Duration::from_secs(1800), ids);
    for (i, id) in names.iter().enumerate() {
        let status = statuses[i % statuses.len()];
        let _ = ledger.payload_differs(id, id.as_bytes());
        for (sink, receipt) in [
            (
                "bus",
                Receipt::Kafka {
                    topic: "calls.status".into(),
                    partition: (i % 6) as i32,
                    offset: i as i64,
                },
            ),
            (
                "amqp",
                Receipt::Rabbitmq {
                    exchange: "callbridge".into(),
                    routing_key: format!("calls.status.{status}"),
                },
            ),
            (
                "js",
                Receipt::JetStream {
                    stream: "CALLS".into(),
                    sequence: i as u64,
                    duplicate: false,
                },
            ),
        ] {
            assert_eq!(ledger.take(id, sink), Take::Mine);
            ledger.settle(id, sink, Some(receipt));
        }
    }
    let after = rss_bytes();
    assert_eq!(ledger.len(), ids, "the cap holds");
    let per_id = (after.saturating_sub(before)) as f64 / ids as f64;
    println!("\n## The idempotency ledger's memory\n");
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    println!(
        "Measured {date}: {} ids through a ledger capped at {ids} (the steady state at the cap), each acknowledged by three broker sinks (Kafka, RabbitMQ, JetStream receipts), \
         mimalloc, no transparent huge pages: **{per_id:.0} bytes per remembered id** of resident memory \
         ({:.1} MiB in all; `idempotency.max_entries` 100 000 → {:.1} MiB).",
        2 * ids,
        (after - before) as f64 / 1048576.0,
        per_id * 100_000.0 / 1048576.0
    );
}
