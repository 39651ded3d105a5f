//! `callbridge replay`: backfill one sink from a file sink's JSONL archive.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli;
use crate::config::Settings;

pub(super) fn replay(
    config: Option<PathBuf>,
    from: &std::path::Path,
    to: &str,
) -> anyhow::Result<ExitCode> {
    let (settings, _, _) = Settings::load(config.as_deref())?;
    let Some(spec) = settings
        .sinks
        .iter()
        .map(|s| s.spec())
        .find(|s| s.common().name == to)
    else {
        let names: Vec<&str> = settings
            .sinks
            .iter()
            .map(|s| s.spec().common().name)
            .collect();
        anyhow::bail!(
            "no sink named {to:?} in this configuration (sinks: {})",
            names.join(", ")
        );
    };
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(async {
        let sinks = crate::sinks::build_all(std::iter::once(spec)).await?;
        let sink = &sinks[0];
        // A broker sink connects in the background: give it a moment to become ready.
        let ready_by = tokio::time::Instant::now() + Duration::from_secs(10);
        while !sink.sink.is_ready() && tokio::time::Instant::now() < ready_by {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let report = cli::replay_file(from, sink)
            .await
            .with_context(|| format!("reading {}", from.display()))?;
        sink.sink.close().await;
        anyhow::Ok(report)
    })?;
    for (line, why) in &report.failed {
        eprintln!("line {line}: {why}");
    }
    println!(
        "read {}, published {}, skipped {} (events filter), failed {}",
        report.read,
        report.published,
        report.skipped,
        report.failed.len()
    );
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
