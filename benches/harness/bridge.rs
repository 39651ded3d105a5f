//! The bridge under load: its process, the sinks it is configured with, and one scenario
//! (every concurrency level, then the verification against the brokers).

use super::*;

pub(crate) struct Bridge {
    pub(crate) child: Child,
    pub(crate) port: u16,
    /// The admin listener's port (`/metrics`).
    pub(crate) admin_port: u16,
    pub(crate) _dir: tempfile::TempDir,
}

impl Bridge {
    /// The bridge with `sinks_yaml` and more top-level sections (`top_yaml`, e.g. the spool).
    pub(crate) fn start_with(bin: &Path, top_yaml: &str, sinks_yaml: &str) -> Result<Bridge> {
        let dir = tempfile::tempdir()?;
        let cfg = dir.path().join("bench.yaml");
        std::fs::write(
            &cfg,
            format!(
                "server: {{listen: \"127.0.0.1:0\", admin_listen: \"127.0.0.1:0\"}}\nlog: {{format: json, level: warn}}\n\
                 auth: {{api_keys: {{keys: [bench-key]}}}}\n{top_yaml}\
                 sinks:\n{sinks_yaml}"
            ),
        )?;
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn,callbridge::app=info")
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            let port_of = |line: &str| {
                serde_json::from_str::<Value>(line).ok().and_then(|v| {
                    v["addr"]
                        .as_str()
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|p| p.parse::<u16>().ok())
                })
            };
            // The admin listener is logged before the webhook listener's `listening`.
            let mut admin_port = None;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if !sent && line.contains("\"message\":\"admin listener") {
                    admin_port = port_of(&line);
                } else if !sent && line.contains("\"message\":\"listening\"") {
                    let _ = tx.send(port_of(&line).zip(admin_port));
                    sent = true;
                } else if !sent || line.contains("\"level\":\"ERROR\"") {
                    eprintln!("bridge: {line}");
                }
            }
        });
        let (port, admin_port) = rx
            .recv_timeout(Duration::from_secs(60))
            .context("bridge did not start")?
            .context("no port in the listening or admin listener line")?;
        Ok(Bridge {
            child,
            port,
            admin_port,
            _dir: dir,
        })
    }

    /// Peak RSS (VmHWM) and CPU seconds (utime + stime) so far.
    pub(crate) fn stats(&self) -> ProcStats {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = |field: &str| -> f64 {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        ProcStats {
            peak_rss_mib: kb("VmHWM:") / 1024.0,
            anon_mib: kb("RssAnon:") / 1024.0,
            file_mib: kb("RssFile:") / 1024.0,
            cpu_secs: cpu::cpu_secs(pid).unwrap_or(0.0),
        }
    }

    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

pub(crate) struct Names {
    pub(crate) kafka_topic: String,
    pub(crate) exchange: String,
    pub(crate) queue: String,
    pub(crate) stream: String,
    pub(crate) subject: String,
}

impl Names {
    /// Names around an existing exchange (only `exchange` is meant to be used).
    pub(crate) fn with_exchange(exchange: &str) -> Names {
        let mut n = Names::new("sink");
        n.exchange = exchange.to_string();
        n
    }

    pub(crate) fn new(tag: &str) -> Names {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Names {
            kafka_topic: format!("bench-{tag}-{n}"),
            exchange: format!("bench-{tag}-{n}"),
            queue: format!("bench-{tag}-{n}"),
            stream: format!("BENCH_{}_{n}", tag.replace('-', "_").to_uppercase()),
            subject: format!("bench.{tag}.{n}"),
        }
    }
}

pub(crate) fn sink_yaml(kind: &str, o: &Opts, n: &Names) -> String {
    match kind {
        "null" => "  - {name: noop, type: \"null\"}\n".into(),
        "kafka" => format!(
            "  - {{name: kafka, type: kafka, brokers: \"{}\", topic: {}}}\n",
            o.kafka, n.kafka_topic
        ),
        "rabbitmq" => {
            // Only what was asked for: a build before `max_in_flight_per_channel` refuses it.
            let mut extra = String::new();
            if let Some(c) = o.rabbit_channels {
                extra.push_str(&format!(", channels: {c}"));
            }
            if let Some(m) = o.rabbit_in_flight {
                extra.push_str(&format!(", max_in_flight_per_channel: {m}"));
            }
            // The audit's queue beside the real one (RabbitMQ has no read by receipt).
            format!(
                "  - {{name: rabbitmq, type: rabbitmq, url: \"{}\", exchange: {}, routing_key: \"calls.{{kind}}.{{status}}\", \
                 queues: [{{name: {}-audit, binding_key: \"#\", durable: false, max_length: 2000000, audit: true, replica: bench}}]{extra}}}\n",
                o.amqp, n.exchange, n.queue
            )
        }
        "nats" => format!(
            "  - {{name: nats, type: nats, url: \"{}\", subject: \"{}.{{kind}}\", jetstream: {{enabled: true, stream: {}}}}}\n",
            o.nats, n.subject, n.stream
        ),
        _ => String::new(),
    }
}

pub(crate) async fn bridge_scenario(
    o: &Opts,
    bin: &Path,
    name: &str,
    sinks: &[&str],
    points: &mut Vec<Point>,
) -> Result<(ProcStats, Vec<String>)> {
    let n = Names::new(&name.replace('@', "-"));
    if sinks.contains(&"kafka") {
        direct::kafka_topic(&o.kafka, &n.kafka_topic).await?;
    }
    if sinks.contains(&"rabbitmq") {
        let conn =
            lapin::Connection::connect(&o.amqp, lapin::ConnectionProperties::default()).await?;
        declare_rabbit(&conn.create_channel().await?, &n.exchange, &n.queue).await?;
        let _ = conn.close(200, "bye").await;
    }
    if sinks.contains(&"nats") {
        ensure_stream(
            &async_nats::jetstream::new(async_nats::connect(&o.nats).await?),
            &n.stream,
            &n.subject,
        )
        .await?;
    }
    let yaml: String = sinks.iter().map(|k| sink_yaml(k, o, &n)).collect();
    // The audit reads each copy back a second after its 200; `@no-index` runs the same
    // scenario without the delivery index (and so without the audit), for its cost.
    let no_index = name.ends_with("@no-index");
    let top = if no_index {
        "deliveries: {enabled: false}\n"
    } else {
        "audit: {delay_secs: 1}\n"
    };
    let bridge = Bridge::start_with(bin, top, &yaml)?;
    let acked_events: Acked = Arc::default();
    let mut acked = load_levels(o, bridge.port, name, &acked_events, points).await;
    if name == "bridge-all" || name == "bridge-all@no-index" {
        // The latency target is at half the peak rate: offered open loop at exactly that.
        if let Some(peak) = best(points, name) {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()?;
            let op = bridge_op(
                client,
                bridge.port,
                format!("{name}-open"),
                acked_events.clone(),
            );
            let p = drive_rate(&format!("{name}-open"), peak.rate() / 2.0, o.duration, op).await;
            acked += p.ok;
            points.push(p);
        }
    }
    if name == "bridge-null" && wrk::available() {
        for c in WRK_CONCURRENCY {
            points.push(wrk::run(
                "bridge-null-wrk",
                bridge.port,
                c,
                o.duration,
                &payload("__CALL_ID__"),
            )?);
        }
    }
    let mut verdicts = Vec::new();
    if !no_index {
        verdicts.extend(audit_verdicts(&bridge, name, sinks).await);
    }
    let stats = bridge.stats();
    bridge.stop();

    for s in sinks {
        let count = match *s {
            "kafka" => kafka_count(&o.kafka, &n.kafka_topic).await?,
            "rabbitmq" => rabbit_count(&o.amqp, &n.queue).await?,
            "nats" => nats_count(&o.nats, &n.stream).await?,
            _ => continue,
        };
        let ok = count >= acked;
        verdicts.push(format!(
            "{name}: {s} holds {count} messages for {acked} events answered 200 — {}",
            if ok { "verified" } else { "LOST EVENTS" }
        ));
        if !ok && *s == "kafka" {
            let events = acked_events.lock().map(|a| a.clone()).unwrap_or_default();
            let diagnosis = kafka_diagnose(&o.kafka, &n.kafka_topic, &events).await?;
            verdicts.push(format!("{name}: {diagnosis}"));
        }
    }
    Ok((stats, verdicts))
}

/// Once the audit judged every 200 offered to it (its oldest unaudited age back at 0, within a
/// deadline), what it found per sink: a copy it calls missing is a lost event.
async fn audit_verdicts(bridge: &Bridge, name: &str, sinks: &[&str]) -> Vec<String> {
    let client = reqwest::Client::new();
    let admin = |path: &str| format!("http://127.0.0.1:{}{path}", bridge.admin_port);
    let last_answer = Instant::now();
    let deadline = last_answer + Duration::from_secs(180);
    let mut waited = None;
    while Instant::now() < deadline {
        let gauge = async {
            let text = client
                .get(admin("/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.lines().find_map(|l| {
                l.strip_prefix("callbridge_audit_oldest_unaudited_seconds ")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        }
        .await;
        // The gauge is refreshed each second: believed once read after a refresh.
        if gauge == Some(0.0) && last_answer.elapsed() > Duration::from_millis(1100) {
            waited = Some(last_answer.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report: Option<Value> = async {
        client
            .get(admin("/deliveries/audit?since=1h"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }
    .await;
    let mut out = vec![format!(
        "{name}: the audit (every copy read back by its receipt 1 s after its 200) {}",
        waited.map_or(
            "did NOT judge every 200 within 180 s of the last answer".into(),
            |w| { format!("judged every 200 offered to it {w:.1} s after the last answer") }
        )
    )];
    for s in sinks.iter().filter(|s| **s != "null") {
        let a = report
            .as_ref()
            .and_then(|r| {
                r["sinks"]
                    .as_array()?
                    .iter()
                    .find(|x| x["sink"] == *s)
                    .cloned()
            })
            .unwrap_or_default();
        let n = |k: &str| a[k].as_u64().unwrap_or(0);
        out.push(format!(
            "{name}: the audit at {s}: {} verified, {} missing, {} unverifiable, {} unaudited of {} answered 200 — {}",
            n("verified"),
            n("missing"),
            n("unverifiable"),
            n("unaudited"),
            n("answered"),
            if n("missing") == 0 { "none missing" } else { "LOST EVENTS (the audit's missing)" }
        ));
    }
    out
}
