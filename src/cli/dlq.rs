//! `callbridge dlq list | redrive | purge`: the spool's dead letters, through the running bridge or on the file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::admin::{admin_client, ask};
use super::args::*;
use crate::config::Settings;

/// `--before`: an RFC 3339 time, or an age (`7d`) counted back from now; Unix milliseconds.
pub(super) fn before_ms(before: &str) -> anyhow::Result<u64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(before, &Rfc3339) {
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        return Ok(u64::try_from(ms).unwrap_or(0));
    }
    let age = humantime::parse_duration(before).map_err(|e| {
        anyhow::anyhow!("--before {before:?}: neither an RFC 3339 time nor an age like 7d ({e})")
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(u64::try_from(now.saturating_sub(age).as_millis()).unwrap_or(u64::MAX))
}

/// `dlq list|redrive|purge`: asks the running bridge's admin listener, or works on the
/// spool's file when no bridge answers.
pub(super) fn dlq(
    config: Option<PathBuf>,
    token: Option<String>,
    action: DlqAction,
) -> anyhow::Result<ExitCode> {
    let (settings, _, _) = Settings::load(config.as_deref())?;
    let Some(spool_settings) = settings.spool.clone() else {
        anyhow::bail!("this configuration has no `spool` section");
    };
    let url = match &action {
        DlqAction::List { url, .. }
        | DlqAction::Redrive { url, .. }
        | DlqAction::Purge { url, .. } => url.clone(),
    };
    let purge = match &action {
        DlqAction::Purge {
            sink, before, all, ..
        } => {
            if sink.is_none() && before.is_none() && !all {
                anyhow::bail!(
                    "dlq purge removes dead letters for good: name --sink, --before, or --all"
                );
            }
            Some(crate::spool::dead::PurgeFilter {
                sink: sink.clone(),
                before_ms: before.as_deref().map(before_ms).transpose()?,
                ..Default::default()
            })
        }
        _ => None,
    };
    let admin = admin_client(&settings, token, url, Duration::from_secs(30))?;
    let rt = tokio::runtime::Runtime::new()?;
    let from_bridge: Option<serde_json::Value> = rt.block_on(async {
        match &action {
            DlqAction::List { sink, .. } => {
                // Page by page, to the end.
                let mut all = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let mut q: Vec<(&str, String)> = vec![("limit", "1000".into())];
                    if let Some(s) = sink {
                        q.push(("sink", s.clone()));
                    }
                    if let Some(a) = &after {
                        q.push(("after", a.clone()));
                    }
                    let req = admin.request(reqwest::Method::GET, "/spool/dead").query(&q);
                    let Some(page) = ask(&admin, req).await? else {
                        return anyhow::Ok(None);
                    };
                    all.extend(page["dead_letters"].as_array().cloned().unwrap_or_default());
                    match page["next"].as_str() {
                        Some(n) => after = Some(n.to_string()),
                        None => break,
                    }
                }
                Ok(Some(serde_json::json!({ "dead_letters": all })))
            }
            DlqAction::Redrive { sink, seq, .. } => {
                let mut q: Vec<(&str, String)> = Vec::new();
                if let Some(s) = sink {
                    q.push(("sink", s.clone()));
                }
                if let Some(n) = seq {
                    q.push(("seq", n.to_string()));
                }
                let req = admin
                    .request(reqwest::Method::POST, "/spool/redrive")
                    .query(&q);
                ask(&admin, req).await
            }
            DlqAction::Purge { .. } => {
                let f = purge.clone().unwrap_or_default();
                let mut q: Vec<(&str, String)> = Vec::new();
                if let Some(s) = &f.sink {
                    q.push(("sink", s.clone()));
                }
                if let Some(b) = f.before_ms {
                    q.push(("before_ms", b.to_string()));
                }
                let req = admin
                    .request(reqwest::Method::POST, "/spool/dead/purge")
                    .query(&q);
                ask(&admin, req).await
            }
        }
    })?;
    let answer = match from_bridge {
        Some(v) => v,
        None => {
            let spool = crate::spool::Spool::open(&spool_settings)?;
            match &action {
                DlqAction::List { sink, .. } => {
                    let dead: Vec<_> = spool
                        .dead_letters()?
                        .into_iter()
                        .filter(|d| sink.as_deref().is_none_or(|s| s == d.sink))
                        .collect();
                    serde_json::json!({ "dead_letters": dead })
                }
                DlqAction::Redrive { sink, seq, .. } => {
                    serde_json::json!({ "redriven": spool.redrive(sink.as_deref(), *seq)? })
                }
                DlqAction::Purge { .. } => {
                    let per_sink = spool.purge(&purge.clone().unwrap_or_default())?;
                    let n: u64 = per_sink.iter().map(|(_, n)| n).sum();
                    serde_json::json!({ "purged": n })
                }
            }
        }
    };
    match action {
        DlqAction::List { .. } => {
            println!(
                "{:<20} {:>8} {:<38} {:<24} reason",
                "sink", "seq", "event_id", "call_id"
            );
            for d in answer["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                println!(
                    "{:<20} {:>8} {:<38} {:<24} {}",
                    d["sink"].as_str().unwrap_or("?"),
                    d["seq"].as_u64().unwrap_or(0),
                    d["event_id"].as_str().unwrap_or(""),
                    d["call_id"].as_str().unwrap_or(""),
                    d["reason"].as_str().unwrap_or("")
                );
            }
        }
        DlqAction::Redrive { .. } => {
            println!("redriven: {}", answer["redriven"].as_u64().unwrap_or(0));
        }
        DlqAction::Purge { .. } => {
            println!("purged: {}", answer["purged"].as_u64().unwrap_or(0));
        }
    }
    Ok(ExitCode::SUCCESS)
}
