//! `callbridge spool status`: the spool per sink, from the running bridge or its file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::admin::{admin_client, ask};
use crate::config::Settings;

pub(super) fn spool_status(
    config: Option<PathBuf>,
    token: Option<String>,
    url: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (settings, _, _) = Settings::load(config.as_deref())?;
    let Some(spool_settings) = settings.spool.clone() else {
        anyhow::bail!("this configuration has no `spool` section");
    };
    let admin = admin_client(&settings, token, url, Duration::from_secs(5))?;
    let rt = tokio::runtime::Runtime::new()?;
    // A running bridge holds the spool's file; it answers for it.
    let from_bridge =
        rt.block_on(async { ask(&admin, admin.request(reqwest::Method::GET, "/spool")).await })?;
    let queues: Vec<serde_json::Value> = match from_bridge {
        Some(v) => v["sinks"].as_array().cloned().unwrap_or_default(),
        None => {
            let spooling: Vec<String> = settings
                .sinks
                .iter()
                .map(|s| s.spec().common())
                .filter(|c| c.on_unavailable == crate::sinks::OnUnavailable::Spool)
                .map(|c| c.name.to_string())
                .collect();
            let spool = crate::spool::Spool::open(&spool_settings)?;
            spool
                .status_of(&spooling)?
                .into_iter()
                .map(|q| serde_json::to_value(q).unwrap_or_default())
                .collect()
        }
    };
    println!(
        "{:<24} {:>8} {:>12} {:>12} {:>8} {:>10}",
        "sink", "depth", "bytes", "oldest_s", "dead", "discarded"
    );
    for q in &queues {
        println!(
            "{:<24} {:>8} {:>12} {:>12.1} {:>8} {:>10}",
            q["sink"].as_str().unwrap_or("?"),
            q["depth"].as_u64().unwrap_or(0),
            q["bytes"].as_u64().unwrap_or(0),
            q["oldest_age_secs"].as_f64().unwrap_or(0.0),
            q["dead_letters"].as_u64().unwrap_or(0),
            q["dead_letters_discarded"].as_u64().unwrap_or(0)
        );
    }
    Ok(ExitCode::SUCCESS)
}
