//! The command line: what `callbridge` accepts (clap), parsed by the thin binary and handed to
//! [`super::run`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "callbridge",
    version,
    about = "Call webhooks onto Kafka, RabbitMQ and NATS — 200 only when every required broker acknowledged"
)]
pub struct Cli {
    /// Configuration file (YAML). Default: the embedded config/default.yaml.
    #[arg(long, global = true, env = "CALLBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The admin token `spool`, `dlq` and `reconcile` send to the running bridge's admin
    /// listener (`Authorization: Bearer`). Default: the config's first `admin.tokens`.
    #[arg(
        long,
        global = true,
        env = "CALLBRIDGE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
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
pub enum SpoolAction {
    Status {
        /// The bridge's admin listener. Default: this config's `server.admin_listen`.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum DlqAction {
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
pub enum Kind {
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
    pub(super) fn event_type(self) -> Option<&'static str> {
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
