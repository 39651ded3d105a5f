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
    /// The admin token `spool`, `dlq` and `reconcile` send to the running bridge's admin
    /// listener (`Authorization: Bearer`). Default: the config's first `admin.tokens`.
    #[arg(
        long,
        global = true,
        env = "CALLBRIDGE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
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
        /// The bridge's admin listener. Default: this config's `server.admin_listen`.
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
        /// The bridge's admin listener. Default: this config's `server.admin_listen`.
        #[arg(long)]
        url: Option<String>,
    },
    /// The audit's report from the running bridge: per sink, the 200s answered since
    /// `--since`, and of their copies how many were verified, missing, unverifiable. Exit 1
    /// when any is missing.
    Audit {
        /// How far back (`1h`, `30m`) or since when (RFC 3339).
        #[arg(long, default_value = "1h")]
        since: String,
        /// The bridge's admin listener. Default: this config's `server.admin_listen`.
        #[arg(long)]
        url: Option<String>,
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

#[derive(Subcommand)]
enum SpoolAction {
    Status {
        /// The bridge's admin listener. Default: this config's `server.admin_listen`.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// Every dead letter (page by page from the bridge).
    List {
        /// Only this sink's dead letters.
        #[arg(long)]
        sink: Option<String>,
        /// The bridge's admin listener. Default: this config's `server.admin_listen`.
        #[arg(long)]
        url: Option<String>,
    },
    /// Dead letters back into their sinks' queues, once the cause is fixed.
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
    /// Removes dead letters for good: of `--sink`, older than `--before`, or `--all`.
    Purge {
        /// Only this sink's dead letters.
        #[arg(long)]
        sink: Option<String>,
        /// Only those that died before this: an RFC 3339 time (`2026-01-31T00:00:00Z`) or an
        /// age (`7d`: dead for longer than seven days).
        #[arg(long)]
        before: Option<String>,
        /// Every dead letter (needed when neither --sink nor --before is given).
        #[arg(long)]
        all: bool,
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

/// The admin client for `url` (default: the config's admin listener) with the token given, or
/// the config's first admin token.
fn admin_client(
    settings: &Settings,
    token: Option<String>,
    url: Option<String>,
    timeout: Duration,
) -> anyhow::Result<cli::AdminClient> {
    let base = url.unwrap_or_else(|| cli::admin_base(settings));
    let token = token.filter(|t| !t.is_empty()).or_else(|| {
        settings
            .admin
            .tokens
            .first()
            .map(|t| t.expose_secret().to_string())
    });
    let cert = settings.server.tls.as_ref().map(|t| t.cert_file.as_path());
    Ok(cli::AdminClient::new(&base, token, cert, timeout)?)
}

/// An admin route's answer; `Ok(None)` when no bridge listens there (the caller may then work
/// on the spool's file itself).
async fn ask(
    admin: &cli::AdminClient,
    req: reqwest::RequestBuilder,
) -> anyhow::Result<Option<serde_json::Value>> {
    match req.send().await {
        Ok(resp) => Ok(Some(
            cli::admin_answer(resp)
                .await
                .with_context(|| format!("asking {}", admin.base))?,
        )),
        Err(e) if e.is_connect() => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("asking {}", admin.base))),
    }
}

/// `deliveries CALL_ID`: the call's timeline, from the running bridge's admin listener.
fn deliveries(
    config: Option<PathBuf>,
    token: Option<String>,
    url: Option<String>,
    call_id: &str,
) -> anyhow::Result<ExitCode> {
    use callbridge::delivery::cli as d;
    let (settings, _, _) = Settings::load(config.as_deref())?;
    let admin = admin_client(&settings, token, url, Duration::from_secs(10))?;
    let request = |path: &str| admin.request(reqwest::Method::GET, path);
    let records = tokio::runtime::Runtime::new()?.block_on(d::call_records(&request, call_id))?;
    print!("{}", d::timeline(call_id, &records));
    Ok(ExitCode::SUCCESS)
}

/// `audit --since`: per sink, answered, verified, missing, unverifiable; exit 1 if any missing.
fn deliveries_audit(
    config: Option<PathBuf>,
    token: Option<String>,
    url: Option<String>,
    since: &str,
) -> anyhow::Result<ExitCode> {
    use callbridge::delivery::cli as d;
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

fn spool_status(
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

/// `--before`: an RFC 3339 time, or an age (`7d`) counted back from now; Unix milliseconds.
fn before_ms(before: &str) -> anyhow::Result<u64> {
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
fn dlq(
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
            Some(callbridge::spool::PurgeFilter {
                sink: sink.clone(),
                before_ms: before.as_deref().map(before_ms).transpose()?,
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
            let spool = callbridge::spool::Spool::open(&spool_settings)?;
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

/// `reconcile`: a pass on the running bridge (`POST /reconcile` on its admin listener), or
/// in this process with `--standalone`.
fn reconcile(
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
            Some(v) => serde_json::from_value::<callbridge::reconcile::PassReport>(v)
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
