//! callbridge's benchmark harness: how fast a truthful 200 is, against the limits measured in
//! the same run on the same machine.
//!
//! Run it with `scripts/bench` (which builds the release binary and starts
//! Apache Kafka, RabbitMQ and NATS). Scenarios:
//! 1. `direct-*`: each broker alone, published to directly with the client library and the
//!    acknowledgement the sink uses (rdkafka delivery report with acks=all + idempotence, lapin
//!    publisher confirm with mandatory + persistent, pipelined: many unconfirmed publishes per
//!    channel; async-nats JetStream PubAck with Nats-Msg-Id): the broker's acknowledged limit
//!    here.
//! 2. `bridge-null`: the bridge with a `null` sink (HTTP + auth + parse + normalise + ledger),
//!    the ceiling of our own code path.
//! 3. `bridge-<broker>` and `bridge-all`: the bridge with each sink alone, then all three.
//! 4. `bare`: a bare actix-web handler that parses the same JSON (`harness/bare.rs`), the floor
//!    under the bridge's own cost; `bare-wrk` and `bridge-null-wrk` measure both again with a
//!    light load generator, wrk (`harness/wrk.rs`), when it is installed.
//! 5. `bridge-spool`: a JetStream sink with `on_unavailable: spool` whose broker is down, so
//!    every event is spooled (fsynced, group commit) and answered 200; then the broker comes up
//!    and the drain is timed (`harness/spool.rs`).
//! 6. `bridge-null-kv`: `bridge-null` with the shared ledger on a NATS key-value bucket
//!    (`harness/kv.rs`): its cost per event and the bucket's bytes per event.
//!
//! Each scenario runs at fixed concurrency levels for a fixed duration, with unique call ids and
//! the sender's ~1 KB payload, and records throughput and latency percentiles (HdrHistogram). For
//! bridge scenarios it samples the bridge's peak RSS and CPU seconds, and afterwards **verifies**
//! that every event answered 200 is in each broker; a run that lost events fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde_json::Value;

#[path = "harness/bare.rs"]
mod bare;
#[path = "harness/bridge.rs"]
mod bridge;
#[path = "harness/brokers.rs"]
mod brokers;
#[path = "harness/cpu.rs"]
mod cpu;
#[path = "harness/direct.rs"]
mod direct;
#[path = "harness/kv.rs"]
mod kv;
#[path = "harness/load.rs"]
mod load;
#[path = "harness/report.rs"]
mod report;
#[path = "harness/spool.rs"]
mod spool;
#[path = "harness/wrk.rs"]
mod wrk;

// The scenarios' building blocks, named here once so every module of the harness reaches them.
use bridge::{bridge_scenario, sink_yaml, Bridge, Names};
use brokers::{
    declare_rabbit, ensure_stream, kafka_count, kafka_diagnose, nats_count, rabbit_count,
};
use load::{bridge_op, drive, drive_rate, load_bridge, load_levels, payload, Acked};
use report::{best, report};

/// Concurrency levels of the wrk passes (a subset: each point costs a full duration).
const WRK_CONCURRENCY: [usize; 2] = [16, 64];

#[derive(Debug, Clone)]
struct Opts {
    duration: Duration,
    concurrency: Vec<usize>,
    out_md: PathBuf,
    out_svg: PathBuf,
    bridge_bin: PathBuf,
    kafka: String,
    amqp: String,
    nats: String,
    only: Option<Vec<String>>,
    /// `--kafka-no-idempotence`: a diagnostic for the direct baseline only (the sink always
    /// uses the idempotent producer).
    kafka_idempotence: bool,
    /// `--rabbit-channels N`: the RabbitMQ sink's `channels` (default: the sink's default).
    rabbit_channels: Option<usize>,
    /// `--rabbit-in-flight N`: the sink's `max_in_flight_per_channel` (default: the sink's).
    rabbit_in_flight: Option<usize>,
    /// `--rabbit-direct-channels N`: channels of the direct baseline, every worker publishing
    /// on them concurrently (pipelined confirms).
    rabbit_direct_channels: usize,
    /// `--compare-bridge PATH`: run every bridge scenario with this binary as well, as
    /// `<scenario>@baseline`, in the same run (e.g. the build before a change).
    compare_bridge: Option<PathBuf>,
}

fn opts() -> Result<Opts> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut o = Opts {
        duration: Duration::from_secs(8),
        concurrency: vec![1, 16, 64, 256],
        out_md: root.join("docs/benchmarks.md"),
        out_svg: root.join("docs/benchmarks.svg"),
        bridge_bin: root.join("target/release/callbridge"),
        kafka: std::env::var("CALLBRIDGE_TEST_KAFKA").unwrap_or_default(),
        amqp: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        nats: "nats://127.0.0.1:4222".into(),
        only: None,
        kafka_idempotence: true,
        rabbit_channels: None,
        rabbit_in_flight: None,
        rabbit_direct_channels: 4,
        compare_bridge: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().context(format!("{a} needs a value"));
        match a.as_str() {
            "--duration" => o.duration = Duration::from_secs_f64(val()?.parse()?),
            "--concurrency" => {
                o.concurrency = val()?
                    .split(',')
                    .map(|c| c.parse())
                    .collect::<Result<_, _>>()?
            }
            "--out" => o.out_md = val()?.into(),
            "--svg" => o.out_svg = val()?.into(),
            "--bridge" => o.bridge_bin = val()?.into(),
            "--only" => o.only = Some(val()?.split(',').map(String::from).collect()),
            "--kafka-no-idempotence" => o.kafka_idempotence = false,
            "--rabbit-channels" => o.rabbit_channels = Some(val()?.parse()?),
            "--rabbit-in-flight" => o.rabbit_in_flight = Some(val()?.parse()?),
            "--rabbit-direct-channels" => o.rabbit_direct_channels = val()?.parse()?,
            "--compare-bridge" => o.compare_bridge = Some(val()?.into()),
            "--bench" => {} // passed by `cargo bench`
            other => bail!("unknown argument {other}"),
        }
    }
    if o.kafka.is_empty() {
        bail!("CALLBRIDGE_TEST_KAFKA is not set: run scripts/bench (it starts Apache Kafka)");
    }
    Ok(o)
}

/// One measured point: a scenario at one concurrency.
#[derive(Debug, Clone)]
struct Point {
    scenario: String,
    concurrency: usize,
    ok: u64,
    failed: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// Cores used per process group during the point (`cpu.rs`).
    cpu: cpu::Split,
}

impl Point {
    /// A point from its latency histogram (microseconds).
    fn from_histogram(
        scenario: &str,
        concurrency: usize,
        h: &Histogram<u64>,
        failed: u64,
        secs: f64,
        cpu: cpu::Split,
    ) -> Point {
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        Point {
            scenario: scenario.into(),
            concurrency,
            ok: h.len(),
            failed,
            secs,
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            cpu,
        }
    }

    /// The concurrency column: requests in flight, or "open loop" for a fixed-rate point.
    fn level(&self) -> String {
        match self.concurrency {
            0 => "open loop".into(),
            c => c.to_string(),
        }
    }

    fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }
}

#[derive(Debug, Default, Clone)]
struct ProcStats {
    peak_rss_mib: f64,
    /// At the end of the scenario: anonymous memory (heap, stacks) and file-backed pages (the
    /// binary's and libraries' code actually touched), the two parts of RSS.
    anon_mib: f64,
    file_mib: f64,
    cpu_secs: f64,
}

/// The delivery index's (and its audit's) cost: `bridge-all` against `bridge-all@no-index`
/// measured in the same run, as CPU per event answered 200 and memory per event held.
fn index_cost(points: &[Point], stats: &BTreeMap<String, ProcStats>) -> Option<String> {
    let events = |name: &str| -> u64 {
        points
            .iter()
            .filter(|p| p.scenario == name || p.scenario == format!("{name}-open"))
            .map(|p| p.ok)
            .sum()
    };
    let (on, off) = (stats.get("bridge-all")?, stats.get("bridge-all@no-index")?);
    let (n_on, n_off) = (events("bridge-all"), events("bridge-all@no-index"));
    if n_on == 0 || n_off == 0 {
        return None;
    }
    let cpu = |s: &ProcStats, n: u64| s.cpu_secs / n as f64 * 1e6;
    let (c_on, c_off) = (cpu(on, n_on), cpu(off, n_off));
    // The index holds at most its default cap of events.
    let held = n_on.min(100_000);
    let bytes = (on.anon_mib - off.anon_mib) * 1024.0 * 1024.0 / held as f64;
    Some(format!(
        "index cost (bridge-all with the delivery index and the audit against bridge-all@no-index, same run): \
         CPU {c_on:.1} µs per event answered 200 against {c_off:.1} µs (×{:.2}); anonymous memory at the end \
         {:.0} MiB against {:.0} MiB (×{:.2}), {bytes:.0} bytes per event held ({held} events)",
        c_on / c_off,
        on.anon_mib,
        off.anon_mib,
        on.anon_mib / off.anon_mib.max(1.0)
    ))
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--serve-bare") {
        return bare::serve();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<()> {
    let o = opts()?;
    let want = |s: &str| o.only.as_ref().is_none_or(|l| l.iter().any(|x| x == s));
    let mut points = Vec::new();
    let mut stats = BTreeMap::new();
    let mut verdicts = Vec::new();

    let direct = |b: &str| want("direct") || want(&format!("direct-{b}"));
    if direct("kafka") {
        for &c in &o.concurrency {
            let n = Names::new("direct");
            direct::kafka_topic(&o.kafka, &n.kafka_topic).await?;
            let p = direct::kafka(&o, c, &n.kafka_topic).await?;
            let count = kafka_count(&o.kafka, &n.kafka_topic).await?;
            verdicts.push(format!(
                "direct-kafka c={c}: the topic holds {count} records for {} delivery reports — {}",
                p.ok,
                if count >= p.ok {
                    "verified"
                } else {
                    "LOST RECORDS (the broker acknowledged records it does not hold)"
                }
            ));
            points.push(p);
        }
    }
    if direct("rabbitmq") {
        for &c in &o.concurrency {
            let n = Names::new("direct");
            points.push(direct::rabbitmq(&o, c, None, false, &n.exchange, &n.queue).await?);
            let _ = rabbit_count(&o.amqp, &n.queue).await;
        }
        for &c in &o.concurrency {
            let n = Names::new("direct-ce");
            points.push(direct::rabbitmq(&o, c, None, true, &n.exchange, &n.queue).await?);
            let _ = rabbit_count(&o.amqp, &n.queue).await;
        }
    }
    // Opt-in only: a diagnostic, not part of the published table.
    if o.only
        .as_ref()
        .is_some_and(|l| l.iter().any(|x| x == "sink-rabbitmq"))
    {
        for &c in &o.concurrency {
            let n = Names::new("sink");
            points.push(direct::sink_rabbitmq(&o, c, &n.exchange, &n.queue).await?);
            let _ = rabbit_count(&o.amqp, &n.queue).await;
        }
    }
    if direct("nats") {
        for &c in &o.concurrency {
            let n = Names::new("direct");
            points.push(direct::nats(&o, c, &n.stream, &n.subject).await?);
            let _ = nats_count(&o.nats, &n.stream).await;
        }
    }
    if want("bare") {
        let server = bare::Bare::start()?;
        for &c in &o.concurrency {
            points.push(load_bridge(server.port, "bare", c, o.duration, 0, Acked::default()).await);
        }
        if wrk::available() {
            for c in WRK_CONCURRENCY {
                points.push(wrk::run(
                    "bare-wrk",
                    server.port,
                    c,
                    o.duration,
                    &payload("__CALL_ID__"),
                )?);
            }
        }
    }
    for (name, sinks) in [
        ("bridge-null", vec!["null"]),
        ("bridge-kafka", vec!["kafka"]),
        ("bridge-rabbitmq", vec!["rabbitmq"]),
        ("bridge-nats", vec!["nats"]),
        ("bridge-all", vec!["kafka", "rabbitmq", "nats"]),
        ("bridge-all@no-index", vec!["kafka", "rabbitmq", "nats"]),
    ] {
        let wanted = want(name) || (name == "bridge-all@no-index" && want("bridge-all"));
        if !wanted && !want("bridge") {
            continue;
        }
        let (s, v) = bridge_scenario(&o, &o.bridge_bin, name, &sinks, &mut points).await?;
        stats.insert(name.to_string(), s);
        verdicts.extend(v);
        if let Some(before) = o.compare_bridge.as_ref().filter(|_| !name.contains('@')) {
            let name = format!("{name}@baseline");
            let (s, v) = bridge_scenario(&o, before, &name, &sinks, &mut points).await?;
            stats.insert(name, s);
            verdicts.extend(v);
        }
    }
    if let Some(v) = index_cost(&points, &stats) {
        verdicts.push(v);
    }
    // RabbitMQ alone, open loop at the rate bridge-all-open was offered: the broker's own
    // latency at that rate, beside the bridge's.
    if let Some(open) = points
        .iter()
        .find(|p| p.scenario == "bridge-all-open")
        .cloned()
    {
        let n = Names::new("direct-open");
        let rate = open.ok as f64 / open.secs;
        points.push(direct::rabbitmq(&o, 0, Some(rate), false, &n.exchange, &n.queue).await?);
        let _ = rabbit_count(&o.amqp, &n.queue).await;
    }
    if want("bridge-null-kv") || want("bridge") {
        let (s, v) = kv::scenario(&o, &o.bridge_bin, &mut points).await?;
        stats.insert("bridge-null-kv".to_string(), s);
        verdicts.extend(v);
    }
    if want("bridge-spool") || want("bridge") {
        let (s, v) = spool::scenario(&o, &o.bridge_bin, &mut points).await?;
        stats.insert("bridge-spool".to_string(), s);
        verdicts.extend(v);
    }
    report(&o, &points, &stats, &verdicts)?;
    let lost: Vec<&String> = verdicts.iter().filter(|v| v.contains("LOST")).collect();
    if !lost.is_empty() {
        bail!(
            "events were lost (the report says where):\n{}",
            lost.iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}
