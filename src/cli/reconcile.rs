//! `callbridge reconcile`: a pass through the running bridge, or `--standalone` in this process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::admin::{admin_client, ask};
use crate::cli;
use crate::config::Settings;

/// `reconcile`: a pass on the running bridge (`POST /reconcile` on its admin listener), or
/// in this process with `--standalone`.
pub(super) fn reconcile(
    config: Option<PathBuf>,
    token: Option<String>,
    since: Option<Duration>,
    dry_run: bool,
    url: Option<String>,
    standalone: bool,
) -> anyhow::Result<ExitCode> {
    let (settings, _, _) = Settings::load(config.as_deref())?;
    let Some(r) = settings.reconcile.clone() else {
        anyhow::bail!("this configuration has no `reconcile` section");
    };
    let lookback = since.unwrap_or(Duration::from_secs(r.lookback_secs));
    let rt = tokio::runtime::Runtime::new()?;
    let report = if standalone {
        rt.block_on(reconcile_here(&settings, &r, lookback, dry_run))?
    } else {
        // A pass is paced by the API's rate limit: it may take minutes.
        let admin = admin_client(&settings, token, url, Duration::from_secs(3600))?;
        let req = admin.request(reqwest::Method::POST, "/reconcile").query(&[
            ("since_secs", lookback.as_secs().to_string()),
            ("dry_run", dry_run.to_string()),
        ]);
        let answer = rt.block_on(ask(&admin, req))?;
        match answer {
            Some(v) => serde_json::from_value::<crate::reconcile::PassReport>(v)
                .with_context(|| format!("reading the report of {}/reconcile", admin.base))?,
            None => anyhow::bail!(
                "no bridge answered at {}: a pass needs the running bridge's ledger to know \
                 what was delivered; --standalone runs it here with an empty ledger (every \
                 terminal call of the window is published again, with its same ids)",
                admin.base
            ),
        }
    };
    print!("{}", cli::render_reconcile(&report));
    Ok(
        if report.failed.is_empty() && report.api_errors.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// One pass in this process, over the configured sinks, with a fresh (empty) ledger.
pub(super) async fn reconcile_here(
    settings: &Settings,
    r: &crate::reconcile::ReconcileSettings,
    lookback: Duration,
    dry_run: bool,
) -> anyhow::Result<crate::reconcile::PassReport> {
    use std::sync::Arc;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let handles = crate::sinks::build_all(settings.sinks.iter().map(|s| s.spec())).await?;
    let ledger = crate::ledger::Ledger::new(
        Duration::from_secs(settings.idempotency.window_secs),
        settings.idempotency.max_entries,
    );
    let fanout = Arc::new(crate::fanout::Fanout::new(handles, ledger, metrics.clone()));
    let reconciler = crate::reconcile::build(
        r,
        fanout.clone(),
        metrics,
        settings.event.clone(),
        Duration::from_secs(settings.idempotency.window_secs),
        Duration::from_millis(settings.server.deadline_ms),
    )?;
    // Broker sinks connect in the background: give them a moment to become ready.
    let ready_by = tokio::time::Instant::now() + Duration::from_secs(10);
    while !fanout.ready() && tokio::time::Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = reconciler
        .pass(crate::reconcile::PassOptions { lookback, dry_run })
        .await;
    fanout.close().await;
    Ok(report)
}
