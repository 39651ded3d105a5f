//! Dispatch: each subcommand to the file that does it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;

use super::args::*;
use super::{deliveries::*, dlq::*, reconcile::*, replay::*, serve::*, spool::*};
use crate::config::{ConfigError, Settings};
use crate::{cli, event};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Schema => {
            print!("{}", event::json_schema_pretty());
            Ok(ExitCode::SUCCESS)
        }
        Command::Asyncapi => {
            let (settings, _, _) = Settings::load(cli.config.as_deref())?;
            print!("{}", crate::contract::asyncapi::document_pretty(&settings)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::ConfigReference { json } => {
            if json {
                print!("{}", crate::config::reference::json_schema_pretty());
            } else {
                print!("{}", crate::config::reference::markdown());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { connect } => match Settings::load(cli.config.as_deref()) {
            Ok((settings, warnings, source)) => {
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
                println!("{source}: ok");
                if connect {
                    let report = crate::preflight::check(&settings)?;
                    print!("{report}");
                    return Ok(if report.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    });
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(ConfigError::Invalid(issues)) => {
                for i in &issues {
                    eprintln!("{i}");
                }
                eprintln!("{} error(s)", issues.len());
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e.into()),
        },
        Command::Serve => serve(cli.config),
        Command::Spool {
            action: SpoolAction::Status { url },
        } => spool_status(cli.config, cli.token, url),
        Command::Dlq { action } => dlq(cli.config, cli.token, action),
        Command::Deliveries { call_id, url } => deliveries(cli.config, cli.token, url, &call_id),
        Command::Audit { since, url } => deliveries_audit(cli.config, cli.token, url, &since),
        Command::Replay { from, to } => replay(cli.config, &from, &to),
        Command::Reconcile {
            since,
            dry_run,
            url,
            standalone,
        } => reconcile(cli.config, cli.token, since, dry_run, url, standalone),
        Command::SendTest {
            url,
            api_key,
            bearer,
            kind,
            status,
            call_id,
        } => {
            let (settings, _, _) = Settings::load(cli.config.as_deref())?;
            let url = url.unwrap_or_else(|| {
                let port = settings.server.listen.rsplit(':').next().unwrap_or("8080");
                format!("http://127.0.0.1:{port}{}", settings.server.path)
            });
            let call_id = call_id.unwrap_or_else(|| {
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                format!("test-call-{ms}")
            });
            let keys = settings.auth.api_keys.as_ref();
            let api_key = || {
                let header = keys
                    .map(|k| k.header.clone())
                    .unwrap_or_else(|| "X-API-Key".into());
                api_key
                    .clone()
                    .or_else(|| {
                        keys.and_then(|k| k.keys.first())
                            .map(|k| k.expose_secret().to_string())
                    })
                    .map(|key| cli::SendAuth::ApiKey { header, key })
            };
            let bearer = || {
                bearer
                    .clone()
                    .or_else(|| {
                        let tokens = settings.auth.bearer.as_ref()?;
                        tokens.tokens.first().map(|t| t.expose_secret().to_string())
                    })
                    .map(cli::SendAuth::Bearer)
            };
            // Each family with its own credential, falling back to the other's if the config
            // only has that one (a bridge accepts any configured credential on either).
            let (payload, auth) = match kind.event_type() {
                None => {
                    let kind = if matches!(kind, Kind::Analysis) {
                        "analysis"
                    } else {
                        "status"
                    };
                    let auth = api_key().or_else(bearer);
                    (cli::sample_payload(&call_id, kind, &status), auth)
                }
                Some(event_type) => {
                    let auth = bearer().or_else(api_key);
                    (cli::sample_agent_event(&call_id, event_type, &status), auth)
                }
            };
            let rt = tokio::runtime::Runtime::new()?;
            let res = rt
                .block_on(cli::send_test(
                    &url,
                    &auth.unwrap_or(cli::SendAuth::None),
                    &payload,
                    Duration::from_secs(15),
                ))
                .with_context(|| format!("posting to {url}"))?;
            println!("{} {}", res.status, res.body);
            Ok(if res.status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
