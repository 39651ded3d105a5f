//! callbridge's fault suite (issue 17): steady load against the real bridge binary while a
//! schedule of faults runs, then every broker is read back and the run is judged.
//!
//! Run it with `scripts/chaos [--short|--long]`, which builds the release binary and this
//! runner and regenerates docs/reliability.md. The runner starts its **own** brokers on free
//! loopback ports — a three-node Apache Kafka cluster, a RabbitMQ node, a NATS server with
//! JetStream — each behind a TCP proxy it controls (tests/it/common/proxy.rs, shared), and a
//! small tmpfs for the file sink and the spool. It never touches the machine's shared brokers.
//!
//! The bridge has four required sinks (Kafka, RabbitMQ, NATS JetStream, a file) and runs twice:
//! once with `on_unavailable: fail`, once with `on_unavailable: spool`. Faults: per broker
//! SIGKILL + restart, SIGSTOP 20 s + SIGCONT, proxy cut + restore, stall (requests flow,
//! replies are held); Kafka's partition leader killed, two of three brokers down; the bridge
//! SIGTERMed (drain) and SIGKILLed under load, then restarted; the tmpfs filled.
//!
//! Checks, every run: no event answered 200 missing from any sink; no answer after 10 s; every
//! 503 with Retry-After; no 4xx; per call, statuses answered 200 stored in order (per Kafka
//! partition, in the queue, the stream and the file); the spool drained; `/readyz` ready again
//! after each fault without a restart; the bridge's RSS bounded and flat; the bridge's own audit
//! (one 200 in ten read back by its receipts a second after the answer) with verified copies
//! at every sink, calling missing exactly what the read-back did not find.
//! Duplicates are counted (delivery is at-least-once, README). Any failed check: non-zero exit.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

#[path = "chaos/audit.rs"]
mod audit;
#[path = "chaos/bridge.rs"]
mod bridge;
#[path = "chaos/fault.rs"]
mod fault;
#[path = "chaos/judge.rs"]
mod judge;
#[path = "chaos/load.rs"]
mod load;
#[path = "chaos/mode.rs"]
mod mode;
#[path = "chaos/procs.rs"]
mod procs;
// Shared with the integration tests; `freeze` is theirs only.
#[allow(dead_code)]
#[path = "../tests/it/common/proxy.rs"]
mod proxy;
#[path = "chaos/readback.rs"]
mod readback;
#[path = "chaos/report.rs"]
mod report;

// The run's building blocks, named here once so every module of the runner reaches them.
use fault::{fault, short_schedule, Fault};
use judge::{analyse, judge};
use load::{Outcome, Rec};
use mode::run_mode;
use procs::{wait_until, Disk, Kafka, Nats, Rabbit};
use report::report;

/// The API key of the bridge under test.
pub const KEY: &str = "chaos-key";
/// The sinks, all required, in the order of the report's columns.
const SINKS: [&str; 4] = ["kafka", "rabbitmq", "nats", "file"];
/// The sender gives up on an answer after this long.
const SENDER_TIMEOUT: f64 = 10.0;
/// How long a process stays SIGSTOPped.
const STOP_SECS: u64 = 20;
/// Bounds on the bridge's resident memory (MiB): the peak, and the growth between the first
/// and the last third of the run.
const RSS_PEAK_MIB: f64 = 512.0;
const RSS_GROWTH_MIB: f64 = 96.0;

#[derive(Debug, Clone)]
struct Opts {
    long: bool,
    rate: f64,
    hold: Duration,
    bridge: PathBuf,
    out: PathBuf,
    modes: Vec<String>,
    faults: Option<Vec<Fault>>,
}

fn opts() -> Result<Opts> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut o = Opts {
        long: false,
        rate: 200.0,
        hold: Duration::from_secs(8),
        bridge: root.join("target/release/callbridge"),
        out: root.join("docs/reliability.md"),
        modes: vec!["fail".into(), "spool".into()],
        faults: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().context(format!("{a} needs a value"));
        match a.as_str() {
            "--short" => o.long = false,
            "--long" => {
                o.long = true;
                o.hold = Duration::from_secs(15);
            }
            "--rate" => o.rate = val()?.parse()?,
            "--hold" => o.hold = Duration::from_secs(val()?.parse()?),
            "--bridge" => o.bridge = val()?.into(),
            "--out" => o.out = val()?.into(),
            "--modes" => o.modes = val()?.split(',').map(String::from).collect(),
            "--faults" => {
                o.faults = Some(val()?.split(',').map(Fault::parse).collect::<Result<_>>()?)
            }
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

struct World {
    root: tempfile::TempDir,
    kafka: Kafka,
    rabbit: Rabbit,
    nats: Nats,
    disk: Option<Disk>,
    disk_note: String,
}

/// One fault as it happened, in seconds since the mode's start.
#[derive(Debug, Clone)]
struct Phase {
    fault: Fault,
    start: f64,
    /// The fault was undone (process restarted or continued, proxy restored, disk freed).
    heal: f64,
    /// `/readyz` answered 200 again (None: not within the limit).
    ready: Option<f64>,
    end: f64,
    note: String,
}

struct ModeRun {
    mode: String,
    phases: Vec<Phase>,
    recs: Vec<Rec>,
    stored: BTreeMap<&'static str, readback::Stored>,
    rss: Vec<(f64, f64)>,
    spool_drain: Option<f64>,
    duration: f64,
    notes: Vec<String>,
    /// The bridge's audit per sink, beside the read-back.
    audit: BTreeMap<&'static str, audit::SinkAudit>,
    /// Seconds the audit took to judge every 200 after the last answer (None: not in time).
    audit_wait: Option<f64>,
}

fn main() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<()> {
    let o = opts()?;
    let started = Instant::now();
    let root = tempfile::Builder::new()
        .prefix("callbridge-chaos-")
        .tempdir()?;
    eprintln!(
        "== chaos: {} mode, brokers under {}",
        if o.long { "long" } else { "short" },
        root.path().display()
    );
    let (disk, disk_note) = match Disk::mount(&root.path().join("disk"), 512) {
        Ok(d) => (
            Some(d),
            "a 512 MiB tmpfs of the runner's own (root)".to_string(),
        ),
        Err(e) => (
            None,
            format!("no tmpfs: {e:#}; the disk-full fault is skipped"),
        ),
    };
    let (kafka, rabbit, nats) = (
        Kafka::start(root.path()).await?,
        Rabbit::start(root.path()).await?,
        Nats::start(root.path()).await?,
    );
    let up = tokio::join!(
        kafka.wait_healthy(None, Duration::from_secs(120)),
        rabbit.wait_up(Duration::from_secs(120)),
        nats.wait_up(Duration::from_secs(60))
    );
    if up != (true, true, true) {
        let root = root.keep();
        bail!(
            "brokers did not start (kafka, rabbitmq, nats up: {up:?}); logs under {}",
            root.display()
        );
    }
    eprintln!(
        "== brokers up after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let mut w = World {
        root,
        kafka,
        rabbit,
        nats,
        disk,
        disk_note,
    };
    let mut runs = Vec::new();
    for mode in o.modes.clone() {
        let faults: Vec<Fault> = match &o.faults {
            Some(f) => f.clone(),
            None if o.long => Fault::ALL.to_vec(),
            None => short_schedule(&mode),
        };
        runs.push(run_mode(&o, &mut w, &mode, &faults).await?);
    }
    let verdicts = judge(&runs);
    report(&o, &w, &runs, &verdicts, started.elapsed())?;
    let failed: Vec<&String> = verdicts
        .iter()
        .filter_map(|(ok, v)| (!ok).then_some(v))
        .collect();
    eprintln!("== chaos took {:.0} s", started.elapsed().as_secs_f64());
    if !failed.is_empty() {
        for v in &failed {
            eprintln!("FAILED: {v}");
        }
        // Keep the broker and bridge logs for the investigation.
        let kept = w.root.keep();
        bail!(
            "{} checks failed (logs kept under {})",
            failed.len(),
            kept.display()
        );
    }
    Ok(())
}

fn secs(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}
