//! `callbridge serve`: the bridge itself.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Settings;
use crate::{telemetry, Application};

pub(super) fn serve(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (settings, warnings, source) = Settings::load(config.as_deref())?;
    let _telemetry = telemetry::init(&settings.log, &settings.traces)?;
    tracing::info!(config = %source, "configuration loaded");
    for w in &warnings {
        tracing::warn!(field = %w.path, "{}", w.message);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("callbridge-publish")
        .build()?;
    rt.block_on(async move {
        let app = Application::build(settings).await?;
        app.run_until_stopped().await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
