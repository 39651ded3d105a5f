//! One mode of the run (`on_unavailable: fail` or `spool`): the bridge started, load driven
//! while the faults run, every request written down.

use super::*;

pub(crate) async fn run_mode(
    o: &Opts,
    w: &mut World,
    mode: &str,
    faults: &[Fault],
) -> Result<ModeRun> {
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
         audit: {{delay_secs: 1, sample: 10}}\n\
         {spool_cfg}\
         sinks:\n\
         \x20 - {{name: kafka, type: kafka, brokers: \"{kafka}\", topic: {topic}{extra}}}\n\
         \x20 - {{name: rabbitmq, type: rabbitmq, url: \"{amqp}\", exchange: {exchange}, routing_key: \"calls.{{kind}}.{{status}}\", queues: [{{name: {queue}-audit, binding_key: \"#\", max_length: 1000000, audit: true, replica: chaos}}]{extra}}}\n\
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
    let since_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
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
    // Every answer is in: the audit's verdicts, then the read-back (the bridge still up, so
    // its index can be asked about what the read-back did not find).
    let audit_wait = audit::await_audit(&bridge, Instant::now()).await;
    let mut stored = BTreeMap::new();
    stored.insert("kafka", readback::kafka(&w.kafka.direct, &topic).await?);
    stored.insert(
        "rabbitmq",
        readback::rabbitmq(&w.rabbit.direct_url(), &queue).await?,
    );
    stored.insert("nats", readback::nats(&w.nats.direct_url(), &stream).await?);
    stored.insert("file", readback::file(&file_path)?);
    let recs = std::mem::take(&mut *recs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let audit = audit::compare(&bridge, &recs, &stored, since_ms).await?;
    match bridge
        .signal_and_wait(Signal::SIGTERM, Duration::from_secs(30))
        .await
    {
        Some(d) => notes.push(format!("final SIGTERM: exited in {:.1} s", d.as_secs_f64())),
        None => notes.push("final SIGTERM: did not exit within 30 s".into()),
    }
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
        audit,
        audit_wait,
    })
}

/// Every request of a mode, one line each (kept with the logs: the first thing to read when a
/// check fails): sent and answer time in seconds since the mode's start, the call and status
/// index, the outcome.
pub(crate) fn write_requests(path: &std::path::Path, recs: &[Rec]) -> Result<()> {
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

pub(crate) async fn declare_rabbit(url: &str, exchange: &str, queue: &str) -> Result<()> {
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
