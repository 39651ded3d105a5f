//! The `callbridge` binary: parse the CLI, load settings, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use secrecy::ExposeSecret;

use callbridge::config::{ConfigError, Settings};
use callbridge::{cli, event, telemetry, Application};

/// mimalloc instead of glibc's malloc: fewer cycles per request and less fragmentation under
/// load (measured in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "callbridge",
    version,
    about = "Call webhooks onto Kafka, RabbitMQ and NATS — 200 only when every required broker acknowledged"
)]
struct Cli {
    /// Configuration file (YAML). Default: the embedded config/default.yaml.
    #[arg(long, global = true, env = "CALLBRIDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge (the default).
    Serve,
    /// Check a configuration: exit 0, or print every error by its field path and exit 1.
    Validate {
        /// Then connect to each broker and check that every event the config can produce would
        /// be stored (topics, exchange and bindings, streams, the file's directory); exit 1 when
        /// a required sink would not store some.
        #[arg(long)]
        connect: bool,
    },
    /// Post a sample webhook to a running bridge, as the sender would: a callback (`--kind
    /// status|analysis`, with the API key) or an agent event (`--kind call-started`, ...,
    /// with a bearer token).
    SendTest {
        /// Webhook URL. Default: this config's listen port and path on 127.0.0.1.
        #[arg(long)]
        url: Option<String>,
        /// API key to send (callbacks). Default: the config's first key.
        #[arg(long)]
        api_key: Option<String>,
        /// Bearer token to send (agent events). Default: the config's first bearer token.
        #[arg(long)]
        bearer: Option<String>,
        #[arg(long, value_enum, default_value_t = Kind::Status)]
        kind: Kind,
        /// Call status to send (status callbacks, `call-completed`, `all-processing-completed`).
        #[arg(long, default_value = "completed")]
        status: String,
        /// Call id. Default: a new `test-call-<millis>`, so each run publishes a new event.
        #[arg(long)]
        call_id: Option<String>,
    },
    /// The durable spool: `status` prints, per sink, the events waiting, their bytes, the oldest
    /// one's age and the dead letters (from the running bridge's `/spool`, or from the file
    /// when no bridge runs).
    Spool {
        #[command(subcommand)]
        action: SpoolAction,
    },
    /// The spool's dead letters (events a sink refused for good): `list`, and `redrive` them
    /// once the cause is fixed (through the running bridge, or the file when none runs).
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Backfill one sink from a file sink's JSONL archive (e.g. a broker that lost data, or a
    /// new sink): every event in file order, with its own id; exit 1 if any was not confirmed.
    Replay {
        /// The JSONL file (a `type: file` sink's output).
        #[arg(long)]
        from: PathBuf,
        /// The configured sink to publish to, by name.
        #[arg(long)]
        to: String,
    },
    /// Ask the platform's call API which calls ended in the last `--since` and publish the
    /// events no webhook got confirmed (`reconcile` section). Runs on the running bridge, whose
    /// ledger knows what was delivered; `--dry-run` prints what it would publish. Exit 1 if an
    /// event was not confirmed or the API failed.
    Reconcile {
        /// How far back, e.g. `6h`, `90m`. Default: the configured `lookback_secs`.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// Print what would be published; publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// The bridge's base URL. Default: this config's listen port on 127.0.0.1.
        #[arg(long)]
        url: Option<String>,
        /// When no bridge runs: run the pass in this process. Its ledger starts empty, so every
        /// terminal call of the window is published again (with the ids it had: consumers and
        /// JetStream drop the copies).
        #[arg(long)]
        standalone: bool,
    },
    /// A call's timeline from the running bridge's delivery index: every event received for
    /// it, each answer, what each sink did and where each copy is.
    Deliveries {
        call_id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The audit's report from the running bridge: per sink, the 200s answered since
    /// `--since`, and of their copies how many were verified, missing, unverifiable. Exit 1
    /// when any is missing.
    Audit {
        /// How far back (`1h`, `30m`) or since when (RFC 3339).
        #[arg(long, default_value = "1h")]
        since: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print the JSON Schema of the canonical event.
    Schema,
    /// Print an AsyncAPI 3.0 document of what this configuration publishes: channels, servers
    /// (without credentials), messages and their CloudEvents bindings (docs/asyncapi.md).
    Asyncapi,
    /// Print the configuration reference (docs/configuration.md), generated from the code.
    ConfigReference {
        /// Print the configuration's JSON Schema (docs/schema/config.json) instead.
        #[arg(long)]
        json: bool,
    },
}

/// How an operator command reaches the running bridge.
#[derive(clap::Args)]
struct AdminArgs {
    /// The bridge's base URL. Default: this config's admin (else listen) port on 127.0.0.1.
    #[arg(long)]
    url: Option<String>,
    /// Bearer token. Default: the config's first webhook credential.
    #[arg(long, env = "CALLBRIDGE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum SpoolAction {
    Status {
        /// The bridge's base URL. Default: this config's listen port on 127.0.0.1.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    List {
        /// The bridge's base URL. Default: this config's listen port on 127.0.0.1.
        #[arg(long)]
        url: Option<String>,
    },
    Redrive {
        /// Only this sink's dead letters.
        #[arg(long)]
        sink: Option<String>,
        /// Only this one (its `seq` in `dlq list`).
        #[arg(long)]
        seq: Option<u64>,
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// A status callback.
    Status,
    /// An analysis callback.
    Analysis,
    CallStarted,
    CallCompleted,
    RecordingCompleted,
    PlatformAnalysisCompleted,
    ClientAnalysisCompleted,
    AllProcessingCompleted,
}

impl Kind {
    /// The agent event's `event_type`, or `None` for the callback family.
    fn event_type(self) -> Option<&'static str> {
        match self {
            Kind::Status | Kind::Analysis => None,
            Kind::CallStarted => Some("call_started"),
            Kind::CallCompleted => Some("call_completed"),
            Kind::RecordingCompleted => Some("recording_completed"),
            Kind::PlatformAnalysisCompleted => Some("platform_analysis_completed"),
            Kind::ClientAnalysisCompleted => Some("client_analysis_completed"),
            Kind::AllProcessingCompleted => Some("all_processing_completed"),
        }
    }
}

fn main() -> ExitCode {
    // No transparent huge pages. mimalloc asks for them on its arenas (MADV_HUGEPAGE), so a
    // 2 MiB page becomes resident as soon as one byte of it is touched: measured with the null
    // sink at the ledger's cap, 30 MiB of a 78 MiB peak RSS were huge pages (69 MiB without,
    // same throughput; docs/benchmarks.md). A heap this size gains nothing from them, and the
    // RSS is what a container's memory limit counts. Checked at every page fault, so the pages
    // mapped before `main` are covered too.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Schema => {
            print!("{}", event::json_schema_pretty());
            Ok(ExitCode::SUCCESS)
        }
        Command::Asyncapi => {
            let (settings, _, _) = Settings::load(cli.config.as_deref())?;
            print!(
                "{}",
                callbridge::contract::asyncapi::document_pretty(&settings)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::ConfigReference { json } => {
            if json {
                print!("{}", callbridge::config::reference::json_schema_pretty());
            } else {
                print!("{}", callbridge::config::reference::markdown());
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
                    let report = callbridge::preflight::check(&settings)?;
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
        } => spool_status(cli.config, url),
        Command::Dlq { action } => dlq(cli.config, action),
        Command::Deliveries { call_id, admin } => deliveries(cli.config, admin, &call_id),
        Command::Audit { since, admin } => deliveries_audit(cli.config, admin, &since),
        Command::Replay { from, to } => replay(cli.config, &from, &to),
        Command::Reconcile {
            since,
            dry_run,
            url,
            standalone,
        } => reconcile(cli.config, since, dry_run, url, standalone),
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

/// The bridge's base URL and the credential for an operator command.
fn admin_target(
    config: Option<PathBuf>,
    admin: AdminArgs,
) -> anyhow::Result<(String, callbridge::delivery::cli::Credential)> {
    use callbridge::delivery::cli::Credential;
    if let (Some(url), Some(token)) = (&admin.url, &admin.token) {
        return Ok((url.clone(), Credential::Bearer(token.clone())));
    }
    let (settings, _, _) = Settings::load(config.as_deref())?;
    let base = admin.url.unwrap_or_else(|| {
        let addr = settings
            .server
            .admin_listen
            .as_ref()
            .unwrap_or(&settings.server.listen);
        format!(
            "http://127.0.0.1:{}",
            addr.rsplit(':').next().unwrap_or("8080")
        )
    });
    let credential = match (admin.token, &settings.auth.api_keys, &settings.auth.bearer) {
        (Some(t), _, _) => Credential::Bearer(t),
        (None, Some(k), _) if !k.keys.is_empty() => {
            Credential::Header(k.header.clone(), k.keys[0].expose_secret().to_string())
        }
        (None, _, Some(b)) if !b.tokens.is_empty() => {
            Credential::Bearer(b.tokens[0].expose_secret().to_string())
        }
        _ => Credential::None,
    };
    Ok((base, credential))
}

/// `deliveries CALL_ID`: the call's timeline.
fn deliveries(
    config: Option<PathBuf>,
    admin: AdminArgs,
    call_id: &str,
) -> anyhow::Result<ExitCode> {
    use callbridge::delivery::cli;
    let (base, credential) = admin_target(config, admin)?;
    let records =
        tokio::runtime::Runtime::new()?.block_on(cli::call_records(&base, call_id, &credential))?;
    print!("{}", cli::timeline(call_id, &records));
    Ok(ExitCode::SUCCESS)
}

/// `audit --since`: per sink, answered, verified, missing, unverifiable; exit 1 if any missing.
fn deliveries_audit(
    config: Option<PathBuf>,
    admin: AdminArgs,
    since: &str,
) -> anyhow::Result<ExitCode> {
    use callbridge::delivery::cli;
    let (base, credential) = admin_target(config, admin)?;
    let sinks =
        tokio::runtime::Runtime::new()?.block_on(cli::audit_report(&base, since, &credential))?;
    print!("{}", cli::audit_table(&sinks));
    Ok(if sinks.iter().any(|s| s.missing > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn spool_status(config: Option<PathBuf>, url: Option<String>) -> anyhow::Result<ExitCode> {
    let (settings, _, _) = Settings::load(config.as_deref())?;
    let Some(spool_settings) = settings.spool.clone() else {
        anyhow::bail!("this configuration has no `spool` section");
    };
    let base = url.unwrap_or_else(|| {
        let port = settings.server.listen.rsplit(':').next().unwrap_or("8080");
        format!("http://127.0.0.1:{port}")
    });
    let rt = tokio::runtime::Runtime::new()?;
    // A running bridge holds the spool's file; it answers for it.
    let from_bridge = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let resp = client.get(format!("{base}/spool")).send().await?;
        resp.error_for_status()?.json::<serde_json::Value>().await
    });
    let queues: Vec<serde_json::Value> = match from_bridge {
        Ok(v) => v["sinks"].as_array().cloned().unwrap_or_default(),
        Err(e) if e.is_connect() => {
            let spooling: Vec<String> = settings
                .sinks
                .iter()
                .map(|s| s.spec().common())
                .filter(|c| c.on_unavailable == callbridge::sinks::OnUnavailable::Spool)
                .map(|c| c.name.to_string())
                .collect();
            let spool = callbridge::spool::Spool::open(&spool_settings)?;
            spool
                .status_of(&spooling)?
                .into_iter()
                .map(|q| serde_json::to_value(q).unwrap_or_default())
                .collect()
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("asking {base}/spool"))),
    };
    println!(
        "{:<24} {:>8} {:>12} {:>12} {:>8}",
        "sink", "depth", "bytes", "oldest_s", "dead"
    );
    for q in &queues {
        println!(
            "{:<24} {:>8} {:>12} {:>12.1} {:>8}",
            q["sink"].as_str().unwrap_or("?"),
            q["depth"].as_u64().unwrap_or(0),
            q["bytes"].as_u64().unwrap_or(0),
            q["oldest_age_secs"].as_f64().unwrap_or(0.0),
            q["dead_letters"].as_u64().unwrap_or(0)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `dlq list|redrive`: asks the running bridge (authenticated with the config's first
/// credential), or works on the spool's file when no bridge answers.
fn dlq(config: Option<PathBuf>, action: DlqAction) -> anyhow::Result<ExitCode> {
    let (settings, _, _) = Settings::load(config.as_deref())?;
    let Some(spool_settings) = settings.spool.clone() else {
        anyhow::bail!("this configuration has no `spool` section");
    };
    let url = match &action {
        DlqAction::List { url } | DlqAction::Redrive { url, .. } => url.clone(),
    };
    let base = url.unwrap_or_else(|| {
        let port = settings.server.listen.rsplit(':').next().unwrap_or("8080");
        format!("http://127.0.0.1:{port}")
    });
    let auth = |req: reqwest::RequestBuilder| match (&settings.auth.api_keys, &settings.auth.bearer)
    {
        (Some(k), _) if !k.keys.is_empty() => {
            req.header(k.header.as_str(), k.keys[0].expose_secret())
        }
        (_, Some(b)) if !b.tokens.is_empty() => req.bearer_auth(b.tokens[0].expose_secret()),
        _ => req,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let from_bridge = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let req = match &action {
            DlqAction::List { .. } => client.get(format!("{base}/spool/dead")),
            DlqAction::Redrive { sink, seq, .. } => {
                let mut q: Vec<(&str, String)> = Vec::new();
                if let Some(s) = sink {
                    q.push(("sink", s.clone()));
                }
                if let Some(n) = seq {
                    q.push(("seq", n.to_string()));
                }
                client.post(format!("{base}/spool/redrive")).query(&q)
            }
        };
        auth(req)
            .send()
            .await?
            .error_for_status()?
            .json::<serde_json::Value>()
            .await
    });
    let answer = match from_bridge {
        Ok(v) => v,
        Err(e) if e.is_connect() => {
            let spool = callbridge::spool::Spool::open(&spool_settings)?;
            match &action {
                DlqAction::List { .. } => {
                    serde_json::json!({ "dead_letters": spool.dead_letters()? })
                }
                DlqAction::Redrive { sink, seq, .. } => {
                    serde_json::json!({ "redriven": spool.redrive(sink.as_deref(), *seq)? })
                }
            }
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("asking {base}"))),
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
    }
    Ok(ExitCode::SUCCESS)
}

fn replay(config: Option<PathBuf>, from: &std::path::Path, to: &str) -> anyhow::Result<ExitCode> {
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
        let sinks = callbridge::sinks::build_all(std::iter::once(spec)).await?;
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

/// `reconcile`: a pass on the running bridge (`POST /reconcile`), or in this process with
/// `--standalone`.
fn reconcile(
    config: Option<PathBuf>,
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
        let base = url.unwrap_or_else(|| {
            let port = settings.server.listen.rsplit(':').next().unwrap_or("8080");
            format!("http://127.0.0.1:{port}")
        });
        let answer = rt.block_on(async {
            // A pass is paced by the API's rate limit: it may take minutes.
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(3600))
                .build()?;
            let mut req = client.post(format!("{base}/reconcile")).query(&[
                ("since_secs", lookback.as_secs().to_string()),
                ("dry_run", dry_run.to_string()),
            ]);
            req = match (&settings.auth.api_keys, &settings.auth.bearer) {
                (Some(k), _) if !k.keys.is_empty() => {
                    req.header(k.header.as_str(), k.keys[0].expose_secret())
                }
                (_, Some(b)) if !b.tokens.is_empty() => {
                    req.bearer_auth(b.tokens[0].expose_secret())
                }
                _ => req,
            };
            req.send()
                .await?
                .error_for_status()?
                .json::<callbridge::reconcile::PassReport>()
                .await
        });
        match answer {
            Ok(report) => report,
            Err(e) if e.is_connect() => anyhow::bail!(
                "no bridge answered at {base}: a pass needs the running bridge's ledger to know                  what was delivered; --standalone runs it here with an empty ledger (every                  terminal call of the window is published again, with its same ids)"
            ),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("asking {base}/reconcile"))),
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
async fn reconcile_here(
    settings: &Settings,
    r: &callbridge::reconcile::ReconcileSettings,
    lookback: Duration,
    dry_run: bool,
) -> anyhow::Result<callbridge::reconcile::PassReport> {
    use std::sync::Arc;
    let metrics = Arc::new(callbridge::metrics::Metrics::new());
    let handles = callbridge::sinks::build_all(settings.sinks.iter().map(|s| s.spec())).await?;
    let ledger = callbridge::ledger::Ledger::new(
        Duration::from_secs(settings.idempotency.window_secs),
        settings.idempotency.max_entries,
    );
    let fanout = Arc::new(callbridge::fanout::Fanout::new(
        handles,
        ledger,
        metrics.clone(),
    ));
    let reconciler = callbridge::reconcile::build(
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
        .pass(callbridge::reconcile::PassOptions { lookback, dry_run })
        .await;
    fanout.close().await;
    Ok(report)
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
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
