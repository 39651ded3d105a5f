//! `bridge-spool`: what taking responsibility costs, and how fast the spool drains.
//!
//! The bridge runs with one JetStream sink, `on_unavailable: spool`, pointed at a port where no
//! NATS listens yet: every event fails over to the spool (written and fsynced, group commit)
//! and is answered 200 `spooled`. The rate is that path's, compared with `bridge-null` in the
//! same run. Then a private `nats-server` starts on that port, the stream is created, and the
//! time until the spool is empty gives the drain rate; the stream must then hold every event
//! answered 200 (the run fails otherwise).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{ensure_stream, load_levels, nats_count, Acked, Bridge, Names, Opts, Point, ProcStats};

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The events waiting in the spool for `sink`, from the bridge's /metrics (on its admin
/// listener, `admin_port`).
async fn depth(port: u16, sink: &str) -> Option<u64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("callbridge_spool_depth{{sink=\"{sink}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs the scenario; returns the bridge's stats, the verdict lines, and the drain rate.
pub async fn scenario(
    o: &Opts,
    bin: &Path,
    points: &mut Vec<Point>,
) -> Result<(ProcStats, Vec<String>)> {
    let port = free_port()?;
    let n = Names::new("spool");
    let dir = tempfile::tempdir()?;
    let top = format!(
        "spool: {{path: \"{}\", max_bytes: 8589934592}}\n",
        dir.path().join("spool.redb").display()
    );
    let sinks = format!(
        "  - {{name: nats, type: nats, url: \"nats://127.0.0.1:{port}\", subject: \"{}.{{kind}}\", jetstream: {{enabled: true, stream: {}}}, on_unavailable: spool}}\n",
        n.subject, n.stream
    );
    let bridge = Bridge::start_with(bin, &top, &sinks)?;
    let acked = load_levels(o, bridge.port, "bridge-spool", &Acked::default(), points).await;
    let stats = bridge.stats();
    let held = depth(bridge.admin_port, "nats").await.unwrap_or(0);

    // The broker comes up: the replayer drains the spool into the stream.
    let store = tempfile::tempdir()?;
    let mut server = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a private nats-server")?;
    let url = format!("nats://127.0.0.1:{port}");
    let started = Instant::now();
    let client = loop {
        match async_nats::connect(&url).await {
            Ok(c) => break c,
            Err(_) if started.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => bail!("the private nats-server did not start: {e}"),
        }
    };
    ensure_stream(&async_nats::jetstream::new(client), &n.stream, &n.subject).await?;
    let drain_started = Instant::now();
    let limit = Duration::from_secs(900);
    loop {
        if depth(bridge.admin_port, "nats").await == Some(0) {
            break;
        }
        if drain_started.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain = drain_started.elapsed();
    let left = depth(bridge.admin_port, "nats").await.unwrap_or(u64::MAX);
    bridge.stop();
    let count = nats_count(&url, &n.stream).await?;
    let _ = server.kill();
    let _ = server.wait();
    let ok = count >= acked && left == 0;
    let verdicts = vec![
        format!(
            "bridge-spool: {acked} events answered 200 `spooled` ({held} held at the end of the load); \
             the broker then came up and the spool drained in {:.1} s ({:.0} events/s); \
             the stream holds {count} — {}",
            drain.as_secs_f64(),
            held as f64 / drain.as_secs_f64().max(0.001),
            if ok { "verified" } else { "LOST EVENTS (or the drain did not finish)" }
        ),
    ];
    Ok((stats, verdicts))
}
