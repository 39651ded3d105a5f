//! `callbridge deliveries CALL_ID` and `callbridge audit`: the delivery index and the audit, from the running bridge.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::admin::admin_client;
use crate::config::Settings;

/// `deliveries CALL_ID`: the call's timeline, from the running bridge's admin listener.
pub(super) fn deliveries(
    config: Option<PathBuf>,
    token: Option<String>,
    url: Option<String>,
    call_id: &str,
) -> anyhow::Result<ExitCode> {
    use crate::delivery::cli as d;
    let (settings, _, _) = Settings::load(config.as_deref())?;
    let admin = admin_client(&settings, token, url, Duration::from_secs(10))?;
    let request = |path: &str| admin.request(reqwest::Method::GET, path);
    let records = tokio::runtime::Runtime::new()?.block_on(d::call_records(&request, call_id))?;
    print!("{}", d::timeline(call_id, &records));
    Ok(ExitCode::SUCCESS)
}

/// `audit --since`: per sink, answered, verified, missing, unverifiable; exit 1 if any missing.
pub(super) fn deliveries_audit(
    config: Option<PathBuf>,
    token: Option<String>,
    url: Option<String>,
    since: &str,
) -> anyhow::Result<ExitCode> {
    use crate::delivery::cli as d;
    let (settings, _, _) = Settings::load(config.as_deref())?;
    let admin = admin_client(&settings, token, url, Duration::from_secs(10))?;
    let request = |path: &str| admin.request(reqwest::Method::GET, path);
    let sinks = tokio::runtime::Runtime::new()?.block_on(d::audit_report(&request, since))?;
    print!("{}", d::audit_table(&sinks));
    Ok(if sinks.iter().any(|s| s.missing > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
