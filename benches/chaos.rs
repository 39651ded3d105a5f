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
//! after each fault without a restart; the bridge's RSS bounded and flat. Duplicates are counted
//! (delivery is at-least-once, README). Any failed check: non-zero exit.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

#[path = "chaos/bridge.rs"]
mod bridge;
#[path = "chaos/load.rs"]
mod load;
#[path = "chaos/procs.rs"]
mod procs;
// Shared with the integration tests; `freeze` is theirs only.
#[allow(dead_code)]
#[path = "../tests/it/common/proxy.rs"]
mod proxy;
#[path = "chaos/readback.rs"]
mod readback;

use load::{Outcome, Rec};
use procs::{wait_until, Disk, Kafka, Nats, Rabbit};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KafkaLeaderKill,
    KafkaStop,
    KafkaCut,
    KafkaStall,
    KafkaTwoDown,
    RabbitKill,
    RabbitStop,
    RabbitCut,
    RabbitStall,
    NatsKill,
    NatsStop,
    NatsCut,
    NatsStall,
    BridgeTerm,
    BridgeKill,
    DiskFull,
}

impl Fault {
    const ALL: [Fault; 16] = [
        Fault::KafkaLeaderKill,
        Fault::KafkaStop,
        Fault::KafkaCut,
        Fault::KafkaStall,
        Fault::KafkaTwoDown,
        Fault::RabbitKill,
        Fault::RabbitStop,
        Fault::RabbitCut,
        Fault::RabbitStall,
        Fault::NatsKill,
        Fault::NatsStop,
        Fault::NatsCut,
        Fault::NatsStall,
        Fault::BridgeTerm,
        Fault::BridgeKill,
        Fault::DiskFull,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::KafkaLeaderKill => "kafka-leader-sigkill",
            Fault::KafkaStop => "kafka-leader-sigstop",
            Fault::KafkaCut => "kafka-proxy-cut",
            Fault::KafkaStall => "kafka-proxy-stall",
            Fault::KafkaTwoDown => "kafka-two-of-three-down",
            Fault::RabbitKill => "rabbitmq-sigkill",
            Fault::RabbitStop => "rabbitmq-sigstop",
            Fault::RabbitCut => "rabbitmq-proxy-cut",
            Fault::RabbitStall => "rabbitmq-proxy-stall",
            Fault::NatsKill => "nats-sigkill",
            Fault::NatsStop => "nats-sigstop",
            Fault::NatsCut => "nats-proxy-cut",
            Fault::NatsStall => "nats-proxy-stall",
            Fault::BridgeTerm => "bridge-sigterm",
            Fault::BridgeKill => "bridge-sigkill",
            Fault::DiskFull => "disk-full",
        }
    }

    fn parse(s: &str) -> Result<Fault> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .with_context(|| format!("unknown fault {s}"))
    }

    /// The bridge itself is stopped: refused connections are expected.
    fn stops_bridge(self) -> bool {
        matches!(self, Fault::BridgeTerm | Fault::BridgeKill)
    }
}

/// The short mode's faults: every kind of fault and every broker at least once, split between
/// the two modes so the whole run fits in about five minutes.
fn short_schedule(mode: &str) -> Vec<Fault> {
    if mode == "fail" {
        vec![
            Fault::KafkaLeaderKill,
            Fault::RabbitCut,
            Fault::NatsStop,
            Fault::KafkaStall,
            Fault::BridgeTerm,
        ]
    } else {
        vec![
            Fault::KafkaTwoDown,
            Fault::RabbitKill,
            Fault::NatsStall,
            Fault::BridgeKill,
            Fault::DiskFull,
        ]
    }
}

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

async fn run_mode(o: &Opts, w: &mut World, mode: &str, faults: &[Fault]) -> Result<ModeRun> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let tag = format!("chaos-{mode}-{nonce}");
    let topic = tag.clone();
    let exchange = tag.clone();
    let queue = tag.clone();
    let stream = format!("CHAOS_{}_{nonce}", mode.to_uppercase());
    let subject = format!("chaos.{mode}.{nonce}");
    w.kafka.create_topic(&topic, 3).await?;
    declare_rabbit(&w.rabbit.direct_url(), &exchange, &queue).await?;
    {
        let js = async_nats::jetstream::new(async_nats::connect(w.nats.direct_url()).await?);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{subject}.>")],
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("create stream: {e}"))?;
    }
    if !w
        .kafka
        .wait_healthy(Some(&topic), Duration::from_secs(60))
        .await
    {
        bail!("topic {topic} has no full ISR");
    }
    let dir = w.root.path().join(format!("bridge-{mode}"));
    std::fs::create_dir_all(&dir)?;
    let disk = w
        .disk
        .as_ref()
        .map(|d| d.path.clone())
        .unwrap_or_else(|| dir.clone());
    let file_path = disk.join(format!("events-{mode}.jsonl"));
    let spool = mode == "spool";
    let extra = if spool { ", on_unavailable: spool" } else { "" };
    let yaml = format!(
        "server: {{listen: \"127.0.0.1:{port}\", admin_listen: \"127.0.0.1:{admin_port}\"}}\n\
         log: {{format: json, level: warn}}\n\
         auth: {{api_keys: {{keys: [{KEY}]}}}}\n\
         {spool_cfg}\
         sinks:\n\
         \x20 - {{name: kafka, type: kafka, brokers: \"{kafka}\", topic: {topic}{extra}}}\n\
         \x20 - {{name: rabbitmq, type: rabbitmq, url: \"{amqp}\", exchange: {exchange}, routing_key: \"calls.{{kind}}.{{status}}\"{extra}}}\n\
         \x20 - {{name: nats, type: nats, url: \"{nats}\", subject: \"{subject}.{{kind}}\", jetstream: {{enabled: true, stream: {stream}}}{extra}}}\n\
         \x20 - {{name: file, type: file, path: \"{file}\"{extra}}}\n",
        port = procs::free_port()?,
        admin_port = procs::free_port()?,
        spool_cfg = if spool {
            format!(
                "spool: {{path: \"{}\", max_bytes: 268435456}}\n",
                disk.join("spool.redb").display()
            )
        } else {
            String::new()
        },
        kafka = w.kafka.proxied,
        amqp = w.rabbit.proxied_url(),
        nats = w.nats.proxied_url(),
        file = file_path.display(),
    );
    let port_at = |n: usize| -> Option<u16> {
        yaml.split("127.0.0.1:")
            .nth(n)
            .and_then(|s| s.split('"').next())
            .and_then(|p| p.parse().ok())
    };
    let port = port_at(1).context("port")?;
    // The admin listener (`/spool`, `/metrics`): loopback and without tokens, as by default.
    let admin_port = port_at(2).context("admin port")?;
    let mut bridge = bridge::Bridge::new(&o.bridge, &dir, &yaml, port, admin_port)?;
    bridge.start().await?;
    if !wait_until(Duration::from_secs(60), || bridge.ready()).await {
        bail!(
            "the bridge is not ready (log: {})",
            bridge.log_path().display()
        );
    }
    eprintln!(
        "== mode {mode}: bridge ready on {port}; {} faults",
        faults.len()
    );

    let t0 = Instant::now();
    let recs: load::Recs = Arc::default();
    let load = load::Load::start(port, o.rate, tag.clone(), t0, recs.clone());
    let rss: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (rss, sampling, pid) = (rss.clone(), sampling.clone(), bridge.pid.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(m) = bridge::rss_mib(pid.load(Ordering::Relaxed)) {
                    if let Ok(mut r) = rss.lock() {
                        r.push((secs(t0), m));
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(if o.long { 15 } else { 5 })).await;
    let mut phases = Vec::new();
    let mut notes = Vec::new();
    for &f in faults {
        if f == Fault::DiskFull && w.disk.is_none() {
            notes.push(format!("{}: skipped ({})", f.name(), w.disk_note));
            continue;
        }
        eprintln!("   {:>5.1} s  {}", secs(t0), f.name());
        let p = fault(o, w, &mut bridge, f, &topic, t0).await?;
        eprintln!(
            "   {:>5.1} s  healed at {:.1}, ready {}  {}",
            p.end,
            p.heal,
            p.ready
                .map_or("NEVER".into(), |r| format!("+{:.1} s", r - p.heal)),
            p.note
        );
        phases.push(p);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    load.finish().await;
    let duration = secs(t0);
    let spool_drain = if spool {
        let before = Instant::now();
        let drained = wait_until(Duration::from_secs(120), || async {
            bridge.spool_depth().await == Some(0)
        })
        .await;
        drained.then(|| before.elapsed().as_secs_f64())
    } else {
        None
    };
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    match bridge
        .signal_and_wait(Signal::SIGTERM, Duration::from_secs(30))
        .await
    {
        Some(d) => notes.push(format!("final SIGTERM: exited in {:.1} s", d.as_secs_f64())),
        None => notes.push("final SIGTERM: did not exit within 30 s".into()),
    }
    let mut stored = BTreeMap::new();
    stored.insert("kafka", readback::kafka(&w.kafka.direct, &topic).await?);
    stored.insert(
        "rabbitmq",
        readback::rabbitmq(&w.rabbit.direct_url(), &queue).await?,
    );
    stored.insert("nats", readback::nats(&w.nats.direct_url(), &stream).await?);
    stored.insert("file", readback::file(&file_path)?);
    let recs = std::mem::take(&mut *recs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    write_requests(&dir.join("requests.tsv"), &recs)?;
    let rss = std::mem::take(&mut *rss.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    eprintln!("== mode {mode}: {} requests, read back", recs.len());
    Ok(ModeRun {
        mode: mode.to_string(),
        phases,
        recs,
        stored,
        rss,
        spool_drain,
        duration,
        notes,
    })
}

/// Every request of a mode, one line each (kept with the logs: the first thing to read when a
/// check fails): sent and answer time in seconds since the mode's start, the call and status
/// index, the outcome.
fn write_requests(path: &std::path::Path, recs: &[Rec]) -> Result<()> {
    use std::fmt::Write as _;
    let mut out = String::from("sent\tlatency\tcall\tseq\toutcome\tevent_id\n");
    for r in recs {
        let (outcome, id) = match &r.outcome {
            Outcome::Answer {
                code,
                event_id,
                error,
                ..
            } => (
                format!("{code} {}", error.as_deref().unwrap_or("")),
                event_id.as_deref().unwrap_or(""),
            ),
            Outcome::Refused => ("refused".into(), ""),
            Outcome::Timeout => ("timeout".into(), ""),
            Outcome::Broken(e) => (format!("broken {e}"), ""),
        };
        let _ = writeln!(
            out,
            "{:.3}\t{:.3}\t{}\t{}\t{}\t{id}",
            r.sent,
            r.latency,
            r.call,
            r.seq,
            outcome.trim()
        );
    }
    std::fs::write(path, out)?;
    Ok(())
}

async fn declare_rabbit(url: &str, exchange: &str, queue: &str) -> Result<()> {
    use lapin::options::*;
    use lapin::types::FieldTable;
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.exchange_declare(
        exchange,
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        queue,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        queue,
        exchange,
        "#",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let _ = conn.close(200, "bye").await;
    Ok(())
}

/// Applies one fault for its time, undoes it, and waits for the bridge to be ready again and
/// the brokers healthy (so faults do not compound).
async fn fault(
    o: &Opts,
    w: &mut World,
    bridge: &mut bridge::Bridge,
    f: Fault,
    topic: &str,
    t0: Instant,
) -> Result<Phase> {
    let start = secs(t0);
    let hold = o.hold;
    let stop = Duration::from_secs(STOP_SECS);
    let mut note = String::new();
    let leader = match w.kafka.leader(topic).await {
        Some(l) if l != 1 && l > 0 => l as usize,
        _ => 2,
    };
    match f {
        Fault::KafkaLeaderKill => {
            w.kafka.kill(leader);
            note = format!("node {leader} (leader of partition 0) SIGKILLed");
            tokio::time::sleep(hold).await;
            w.kafka.start_node(leader)?;
        }
        Fault::KafkaStop => {
            w.kafka.signal(leader, Signal::SIGSTOP);
            note = format!("node {leader} (leader of partition 0) SIGSTOPped");
            tokio::time::sleep(stop).await;
            w.kafka.signal(leader, Signal::SIGCONT);
        }
        Fault::KafkaCut | Fault::KafkaStall => {
            for p in &w.kafka.proxies {
                if f == Fault::KafkaCut {
                    p.cut()
                } else {
                    p.stall_replies()
                }
            }
            tokio::time::sleep(hold).await;
            for p in &w.kafka.proxies {
                p.restore();
            }
        }
        Fault::KafkaTwoDown => {
            w.kafka.kill(2);
            w.kafka.kill(3);
            note = "nodes 2 and 3 SIGKILLed (ISR below min.insync.replicas=2)".into();
            tokio::time::sleep(hold).await;
            w.kafka.start_node(2)?;
            w.kafka.start_node(3)?;
        }
        Fault::RabbitKill => {
            w.rabbit.kill();
            tokio::time::sleep(hold).await;
            w.rabbit.start_node()?;
        }
        Fault::RabbitStop => {
            w.rabbit.signal(Signal::SIGSTOP);
            tokio::time::sleep(stop).await;
            w.rabbit.signal(Signal::SIGCONT);
        }
        Fault::RabbitCut => {
            w.rabbit.proxy.cut();
            tokio::time::sleep(hold).await;
            w.rabbit.proxy.restore();
        }
        Fault::RabbitStall => {
            w.rabbit.proxy.stall_replies();
            tokio::time::sleep(hold).await;
            w.rabbit.proxy.restore();
        }
        Fault::NatsKill => {
            w.nats.kill();
            tokio::time::sleep(hold).await;
            w.nats.start_node()?;
        }
        Fault::NatsStop => {
            w.nats.signal(Signal::SIGSTOP);
            tokio::time::sleep(stop).await;
            w.nats.signal(Signal::SIGCONT);
        }
        Fault::NatsCut => {
            w.nats.proxy.cut();
            tokio::time::sleep(hold).await;
            w.nats.proxy.restore();
        }
        Fault::NatsStall => {
            w.nats.proxy.stall_replies();
            tokio::time::sleep(hold).await;
            w.nats.proxy.restore();
        }
        Fault::BridgeTerm | Fault::BridgeKill => {
            let sig = if f == Fault::BridgeTerm {
                Signal::SIGTERM
            } else {
                Signal::SIGKILL
            };
            note = match bridge.signal_and_wait(sig, Duration::from_secs(30)).await {
                Some(d) => format!(
                    "exited {:.1} s after the signal; restarted",
                    d.as_secs_f64()
                ),
                None => "did not exit within 30 s (killed); restarted".into(),
            };
            bridge.start().await?;
        }
        Fault::DiskFull => {
            if let Some(d) = &w.disk {
                let n = d.fill()?;
                note = format!("tmpfs filled ({} MiB filler)", n >> 20);
                tokio::time::sleep(hold).await;
                d.free();
            }
        }
    }
    let heal = secs(t0);
    let ready = wait_until(Duration::from_secs(120), || bridge.ready())
        .await
        .then(|| secs(t0));
    // Let the brokers finish healing before the next fault (not counted as recovery).
    let _ = tokio::join!(
        w.kafka.wait_healthy(Some(topic), Duration::from_secs(120)),
        w.rabbit.wait_up(Duration::from_secs(120)),
        w.nats.wait_up(Duration::from_secs(60))
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(Phase {
        fault: f,
        start,
        heal,
        ready,
        end: secs(t0),
        note,
    })
}

// ---------------------------------------------------------------------------------------------
// Judging a run

/// One row of the table: a fault (or the steady load between faults) in one mode.
#[derive(Debug, Default, Clone)]
struct Row {
    requests: u64,
    ok: u64,
    unavailable: u64,
    /// Answers after the sender's 10 s, or none within the client's 15 s.
    late: u64,
    refused: u64,
    broken: u64,
    /// Refused or broken while the bridge was running (a failure).
    stray: u64,
    /// 4xx, or 5xx other than 503.
    wrong_code: u64,
    no_retry_after: u64,
    spooled: u64,
    max_answer: f64,
    lost: BTreeMap<&'static str, u64>,
    duplicates: BTreeMap<&'static str, u64>,
    /// Error codes of the 503s, counted.
    reasons: BTreeMap<String, u64>,
}

struct Judged {
    rows: Vec<(String, Option<Phase>, Row)>,
    order_violations: BTreeMap<&'static str, u64>,
    stored_not_acked: BTreeMap<&'static str, u64>,
    corrupt_lines: u64,
    missing_examples: Vec<String>,
    /// The first few connections broken without an answer: where, and the client's error.
    broken_examples: Vec<String>,
}

fn analyse(run: &ModeRun) -> Judged {
    let phase_of = |sent: f64| {
        run.phases
            .iter()
            .position(|p| sent >= p.start && sent < p.end)
    };
    let mut rows: Vec<Row> = vec![Row::default(); run.phases.len() + 1];
    let idx = |p: Option<usize>| p.map_or(0, |i| i + 1);
    let mut acked: HashMap<&str, usize> = HashMap::new();
    let mut call_of: HashMap<&str, (&str, usize)> = HashMap::new();
    let mut broken_examples = Vec::new();
    for r in &run.recs {
        // An answer belongs to the phase it was sent in; a connection that failed, to the
        // phase it failed in: a request sent during one fault can be cut off by the next one
        // (a bridge SIGKILLed while earlier requests still wait for a stalled broker).
        let failed = matches!(r.outcome, Outcome::Refused | Outcome::Broken(_));
        let at = if failed { r.sent + r.latency } else { r.sent };
        let phase = phase_of(at);
        let row = &mut rows[idx(phase)];
        row.requests += 1;
        // Refused or broken is expected only while the bridge is down: from its signal until
        // it was started again (a second of slack for the restart to start accepting).
        let bridge_down = phase.is_some_and(|i| {
            let p = &run.phases[i];
            p.fault.stops_bridge() && at >= p.start && at <= p.heal + 1.0
        });
        if failed && !bridge_down {
            row.stray += 1;
        }
        if r.latency > SENDER_TIMEOUT {
            row.late += 1;
        }
        if let Outcome::Answer { .. } = r.outcome {
            row.max_answer = row.max_answer.max(r.latency);
        }
        match &r.outcome {
            Outcome::Answer {
                code,
                retry_after,
                sinks,
                error,
                event_id,
            } => {
                if let Some(id) = event_id {
                    call_of.insert(id, (&r.call, r.seq));
                }
                match code {
                    200 => {
                        row.ok += 1;
                        if sinks.values().any(|s| s.spooled) {
                            row.spooled += 1;
                        }
                        if let Some(id) = event_id {
                            acked.insert(id, idx(phase_of(r.sent)));
                        }
                    }
                    503 => {
                        row.unavailable += 1;
                        if !retry_after {
                            row.no_retry_after += 1;
                        }
                        let mut why: Vec<String> = sinks
                            .iter()
                            .filter(|(_, s)| !s.ok)
                            .map(|(n, s)| format!("{n}:{}", s.code.as_deref().unwrap_or("?")))
                            .collect();
                        if why.is_empty() {
                            why.push(error.clone().unwrap_or_else(|| "?".into()));
                        }
                        *row.reasons.entry(why.join("+")).or_default() += 1;
                    }
                    _ => row.wrong_code += 1,
                }
            }
            Outcome::Refused => row.refused += 1,
            Outcome::Broken(e) => {
                row.broken += 1;
                if broken_examples.len() < 5 {
                    let phase = phase.map_or("steady load", |i| run.phases[i].fault.name());
                    broken_examples.push(format!(
                        "{phase}, {:.2} s after the request was sent (at {at:.2} s{}): {e}",
                        r.latency,
                        if bridge_down { ", the bridge down" } else { "" }
                    ));
                }
            }
            Outcome::Timeout => row.late += 1,
        }
    }
    let mut order_violations = BTreeMap::new();
    let mut stored_not_acked = BTreeMap::new();
    let mut missing_examples = Vec::new();
    let mut corrupt_lines = 0;
    for sink in SINKS {
        let Some(seqs) = run.stored.get(sink) else {
            continue;
        };
        let mut count: HashMap<&str, u64> = HashMap::new();
        let mut violations = 0;
        for seq in seqs {
            let mut last: HashMap<&str, usize> = HashMap::new();
            for id in seq {
                if id == "<corrupt>" {
                    corrupt_lines += 1;
                    continue;
                }
                let c = count.entry(id.as_str()).or_default();
                *c += 1;
                if *c > 1 || !acked.contains_key(id.as_str()) {
                    continue;
                }
                if let Some((call, s)) = call_of.get(id.as_str()) {
                    let prev = last.insert(call, *s);
                    if prev.is_some_and(|p| p > *s) {
                        violations += 1;
                    }
                }
            }
        }
        order_violations.insert(sink, violations);
        let mut extra = 0;
        for (id, n) in &count {
            match acked.get(id) {
                Some(&row) => {
                    if *n > 1 {
                        *rows[row].duplicates.entry(sink).or_default() += n - 1;
                    }
                }
                None => extra += 1,
            }
        }
        stored_not_acked.insert(sink, extra);
        for (id, &row) in &acked {
            if !count.contains_key(id) {
                *rows[row].lost.entry(sink).or_default() += 1;
                if missing_examples.len() < 20 {
                    let (call, seq) = call_of.get(id).copied().unwrap_or(("?", 0));
                    missing_examples.push(format!(
                        "{}: {sink} lacks event {id} (call {call}, status #{seq}) answered 200 during {}",
                        run.mode,
                        if row == 0 { "steady load".to_string() } else { run.phases[row - 1].fault.name().to_string() }
                    ));
                }
            }
        }
    }
    let mut out = vec![(
        "steady load (between faults)".to_string(),
        None,
        rows[0].clone(),
    )];
    for (p, row) in run.phases.iter().zip(rows.into_iter().skip(1)) {
        out.push((p.fault.name().to_string(), Some(p.clone()), row));
    }
    Judged {
        rows: out,
        order_violations,
        stored_not_acked,
        corrupt_lines,
        missing_examples,
        broken_examples,
    }
}

/// Every check of every mode: (passed, what).
fn judge(runs: &[ModeRun]) -> Vec<(bool, String)> {
    let mut v = Vec::new();
    for run in runs {
        let j = analyse(run);
        let m = &run.mode;
        let sum = |f: &dyn Fn(&Row) -> u64| j.rows.iter().map(|(_, _, r)| f(r)).sum::<u64>();
        let lost = sum(&|r| r.lost.values().sum());
        let ok = sum(&|r| r.ok);
        v.push((
            lost == 0,
            format!("{m}: events answered 200 missing from a sink: {lost} (of {ok} answered 200)"),
        ));
        for e in &j.missing_examples {
            v.push((false, e.clone()));
        }
        let late = sum(&|r| r.late);
        v.push((
            late == 0,
            format!("{m}: requests answered after {SENDER_TIMEOUT} s or not at all: {late}"),
        ));
        let nra = sum(&|r| r.no_retry_after);
        v.push((
            nra == 0,
            format!("{m}: 503 answers without Retry-After: {nra}"),
        ));
        let wrong = sum(&|r| r.wrong_code);
        v.push((
            wrong == 0,
            format!("{m}: answers other than 200/503 (4xx for our own failures, 500s): {wrong}"),
        ));
        let order: u64 = j.order_violations.values().sum();
        v.push((
            order == 0,
            format!(
                "{m}: statuses of a call stored out of order (per sink: {:?}): {order}",
                j.order_violations
            ),
        ));
        v.push((
            j.corrupt_lines == 0,
            format!(
                "{m}: file sink lines that are not an event: {}",
                j.corrupt_lines
            ),
        ));
        let stray = sum(&|r| r.stray);
        v.push((
            stray == 0,
            format!("{m}: connections refused or broken while the bridge was running: {stray}"),
        ));
        let drain_broken: u64 = j
            .rows
            .iter()
            .filter(|(_, p, _)| p.as_ref().is_some_and(|p| p.fault == Fault::BridgeTerm))
            .map(|(_, _, r)| r.broken)
            .sum();
        v.push((true, format!("{m}: requests cut off without an answer by SIGTERM (drain; informational): {drain_broken}")));
        for (_, p, _) in &j.rows {
            if let Some(p) = p {
                v.push((
                    p.ready.is_some(),
                    format!(
                        "{m}: /readyz ready again after {} without a restart: {}",
                        p.fault.name(),
                        p.ready.map_or("NO (not within 120 s)".into(), |r| format!(
                            "yes, {:.1} s after it was undone",
                            r - p.heal
                        ))
                    ),
                ));
            }
        }
        if m == "spool" {
            v.push((
                run.spool_drain.is_some(),
                format!(
                    "{m}: the spool drained after the load: {}",
                    run.spool_drain
                        .map_or("NO (not within 120 s)".into(), |d| format!(
                            "yes, in {d:.1} s"
                        ))
                ),
            ));
        }
        let peak = run.rss.iter().map(|s| s.1).fold(0.0, f64::max);
        let third = run.duration / 3.0;
        let max_in = |a: f64, b: f64| {
            run.rss
                .iter()
                .filter(|s| s.0 >= a && s.0 < b)
                .map(|s| s.1)
                .fold(0.0, f64::max)
        };
        let (first, last) = (max_in(0.0, third), max_in(2.0 * third, f64::MAX));
        v.push((
            peak > 0.0 && peak < RSS_PEAK_MIB,
            format!("{m}: bridge peak RSS {peak:.0} MiB (bound {RSS_PEAK_MIB:.0})"),
        ));
        v.push((
            last - first < RSS_GROWTH_MIB,
            format!("{m}: bridge RSS peak in the first third {first:.0} MiB, in the last third {last:.0} MiB (growth bound {RSS_GROWTH_MIB:.0})"),
        ));
    }
    v
}

// ---------------------------------------------------------------------------------------------
// The report

fn machine() -> String {
    let cmd = |c: &str, a: &[&str]| {
        std::process::Command::new(c)
            .args(a)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!(
        "nproc {} ({cpu}), {mem:.1} GiB RAM, `{}`",
        cmd("nproc", &[]),
        cmd("uname", &["-srvm"])
    )
}

fn per_sink(m: &BTreeMap<&'static str, u64>) -> String {
    SINKS
        .iter()
        .map(|s| m.get(s).copied().unwrap_or(0).to_string())
        .collect::<Vec<_>>()
        .join(" / ")
}

fn report(
    o: &Opts,
    w: &World,
    runs: &[ModeRun],
    verdicts: &[(bool, String)],
    took: Duration,
) -> Result<()> {
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut md = String::new();
    md.push_str("# Reliability: the fault suite\n\n");
    md.push_str("<!-- generated by scripts/chaos (benches/chaos.rs); edit the runner or docs/reliability-notes.md, not this file -->\n\n");
    md.push_str(&format!(
        "Run {date} ({} mode, {:.0} s in all) on {}.\n\n",
        if o.long { "long" } else { "short" },
        took.as_secs_f64(),
        machine()
    ));
    md.push_str(&format!(
        "Load: {:.0} events/s open loop (a new call on a fixed tick; one call in three sends `registered`, `ongoing`, `completed`, each after the previous answer), unique call ids, ~0.6 KB bodies, a 15 s client deadline. \
         Bridge: the {} binary, four **required** sinks — Kafka (3 nodes, replication 3, min.insync.replicas 2, 3 partitions led by node 2), RabbitMQ (durable queue), NATS JetStream (file storage), a file on {} — each broker reached only through a proxy the runner controls. \
         Faults are held {} s (SIGSTOP: {STOP_SECS} s), then undone; the next starts once `/readyz` is ready and the brokers are healthy again. \
         The machine has 2 cores shared with the three brokers' JVM/BEAM/Go processes, the load generator and other builds: **answer times are noisy**, a slow answer here is not a benchmark.\n\n",
        o.rate,
        if o.bridge.components().any(|c| c.as_os_str() == "debug") {
            "debug (unoptimised)"
        } else {
            "release"
        },
        w.disk_note,
        o.hold.as_secs()
    ));
    md.push_str("Columns per sink are `kafka / rabbitmq / nats / file`. *lost* = answered 200 but not in that sink when read back after the run (must be 0); *dup* = extra copies of events answered 200 (allowed: delivery is at-least-once, README); *max s* = slowest answer; *recovery* = from the fault being undone to `/readyz` 200 (for the bridge faults: from the restart). A request is counted in the phase it was sent in, except one that got no answer: in the phase its connection failed in (a request sent during a broker stall can be cut off by the bridge SIGKILL that follows).\n\n");
    for run in runs {
        let j = analyse(run);
        md.push_str(&format!("## `on_unavailable: {}`\n\n", run.mode));
        md.push_str("| fault | requests | 200 | 200 spooled | 503 | no answer (refused / broken / late) | lost | dup | max s | recovery s | 503 reasons |\n|---|---:|---:|---:|---:|---|---|---|---:|---:|---|\n");
        for (name, p, r) in &j.rows {
            let reasons: Vec<String> = r.reasons.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
            md.push_str(&format!(
                "| {name}{} | {} | {} | {} | {} | {} / {} / {} | {} | {} | {:.2} | {} | {} |\n",
                p.as_ref()
                    .filter(|p| !p.note.is_empty())
                    .map_or(String::new(), |p| format!(" ({})", p.note)),
                r.requests,
                r.ok,
                r.spooled,
                r.unavailable,
                r.refused,
                r.broken,
                r.late,
                per_sink(&r.lost),
                per_sink(&r.duplicates),
                r.max_answer,
                p.as_ref().map_or("—".into(), |p| p
                    .ready
                    .map_or("NEVER".into(), |x| format!("{:.1}", x - p.heal))),
                reasons.join(", ")
            ));
        }
        let acked: u64 = j.rows.iter().map(|r| r.2.ok).sum();
        md.push_str(&format!(
            "\nStored but never answered 200 (a 503 or no answer whose publish landed anyway; the sender's retry dedupes by id): {}. ",
            per_sink(&j.stored_not_acked)
        ));
        md.push_str(&format!("Events answered 200: {acked}. "));
        let peak = run.rss.iter().map(|s| s.1).fold(0.0, f64::max);
        let low = run.rss.iter().map(|s| s.1).fold(f64::MAX, f64::min);
        md.push_str(&format!(
            "Bridge RSS sampled every second: {low:.0}–{peak:.0} MiB"
        ));
        if let Some(d) = run.spool_drain {
            md.push_str(&format!(
                "; the spool drained {d:.1} s after the load stopped"
            ));
        }
        md.push_str(".\n");
        for n in &run.notes {
            md.push_str(&format!("- {n}\n"));
        }
        for e in &j.broken_examples {
            md.push_str(&format!(
                "- a connection broken without an answer during {e}\n"
            ));
        }
        md.push('\n');
    }
    md.push_str("## Checks\n\n");
    for (ok, v) in verdicts {
        md.push_str(&format!(
            "- {} {v}\n",
            if *ok { "pass" } else { "**FAIL**" }
        ));
    }
    md.push('\n');
    if let Ok(extra) = std::fs::read_to_string(o.out.with_file_name("reliability-notes.md")) {
        md.push_str(&extra);
    }
    std::fs::write(&o.out, md)?;
    eprintln!("wrote {}", o.out.display());
    Ok(())
}
