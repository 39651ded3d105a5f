//! `bridge-null-kv`: the shared ledger's cost (`idempotency.store: nats-kv`).
//!
//! The bridge with the `null` sink, as `bridge-null`, but every publish claimed and recorded in
//! a NATS key-value bucket (two bucket round trips per event and sink). The ratio to
//! `bridge-null` in the same run is the price of several replicas sharing one memory; the
//! bucket's bytes per event are what the window costs in storage.

use std::path::Path;

use anyhow::Result;

use super::{load_levels, Acked, Bridge, Opts, Point, ProcStats};

pub async fn scenario(
    o: &Opts,
    bin: &Path,
    points: &mut Vec<Point>,
) -> Result<(ProcStats, Vec<String>)> {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let bucket = format!("bench-ledger-{n}");
    let top = format!(
        "idempotency: {{store: nats-kv, url: \"{}\", bucket: {bucket}}}\n",
        o.nats
    );
    let bridge = Bridge::start_with(bin, &top, "  - {name: noop, type: \"null\"}\n")?;
    let acked = load_levels(o, bridge.port, "bridge-null-kv", &Acked::default(), points).await;
    let stats = bridge.stats();
    bridge.stop();
    let js = async_nats::jetstream::new(async_nats::connect(&o.nats).await?);
    let mut stream = js.get_stream(format!("KV_{bucket}")).await?;
    let state = stream.info().await?.state.clone();
    let _ = js.delete_stream(format!("KV_{bucket}")).await;
    let per_event = state.bytes as f64 / acked.max(1) as f64;
    let verdicts = vec![format!(
        "bridge-null-kv: {acked} events answered 200, the bucket holds {} keys in {} bytes: \
         {per_event:.0} bytes per event and sink, {:.0} MB per million events per sink — {}",
        state.messages,
        state.bytes,
        per_event,
        if state.messages >= acked {
            "verified (a receipt for every event)"
        } else {
            "LOST RECEIPTS"
        }
    )];
    Ok((stats, verdicts))
}
