//! Typed settings: the YAML users write, `${VAR}` expansion, env overrides and validation.
//!
//! The file given with `--config` (or `CALLBRIDGE_CONFIG`) is the *whole* configuration: serde
//! defaults fill omitted scalar fields only, so a user's `sinks` list is never merged with the
//! embedded default. Environment variables `CALLBRIDGE__SECTION__KEY` override single values.
//! Every string may hold `${VAR}` or `${VAR:-default}` ([`mod@env`]).
//!
//! The sections are here; the `sinks` list is in [`sinks`] and each sink kind's settings live
//! with the sink (`crate::sinks::<kind>`). Every check reports through [`crate::validate::Issues`], a
//! leaf module, so dependencies point one way: config → a sink's settings → validate.

pub mod admin;
pub mod env;
pub mod reference;
pub mod security;
mod shape;
pub mod sinks;

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use crate::event::EventSettings;
pub use crate::ledger::settings::{IdempotencySettings, LedgerStore, LEDGER_BYTES_PER_ENTRY};
pub use crate::spool::settings::SpoolSettings;
pub use crate::validate::{ConfigIssue, Issues};
pub use env::Env;
pub use sinks::SinkSettings;

/// The embedded default configuration: one `file` sink, the documentation's sample API key.
/// Embedded so that `cargo run --release` and the installed binary work from any directory.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../config/default.yaml");

/// The API key printed in the sender's documentation. Accepted only with a loud warning.
pub const DOCS_SAMPLE_API_KEY: &str = "sk_live_1234567890abcdef";

/// Where a configuration came from, for logs and error messages.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    Embedded,
    File(PathBuf),
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Embedded => f.write_str("embedded config/default.yaml"),
            ConfigSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {source_name}")]
    Parse {
        source_name: String,
        #[source]
        source: config::ConfigError,
    },
    /// Every problem found, each named by its field path (`sinks[1].topic: ...`).
    #[error("invalid configuration:\n{}", .0.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigIssue>),
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The HTTP listener: address, paths, limits and the answer deadline.
    #[serde(default)]
    pub server: ServerSettings,
    /// Required: disabling authentication must be a visible decision (`auth: {mode: none}`).
    pub auth: AuthSettings,
    /// The operator's credential for the admin listener (`server.admin_listen`); never a
    /// webhook credential.
    #[serde(default)]
    pub admin: admin::AdminSettings,
    /// The CloudEvents envelope every event gets.
    #[serde(default)]
    pub event: EventSettings,
    /// How long delivered event ids are remembered, so a sender's retry is answered from memory
    /// instead of publishing again.
    #[serde(default)]
    pub idempotency: IdempotencySettings,
    /// Log format, level and redaction.
    #[serde(default)]
    pub log: LogSettings,
    /// OpenTelemetry traces (off by default).
    #[serde(default)]
    pub traces: TraceSettings,
    /// The durable spool for sinks with `on_unavailable: spool` (absent: no spool).
    #[serde(default)]
    pub spool: Option<SpoolSettings>,
    /// Reconciliation with the platform's call API: backfill what no webhook delivered
    /// (absent: off; docs/reconcile.md).
    #[serde(default)]
    pub reconcile: Option<crate::reconcile::ReconcileSettings>,
    /// The delivery index: per event, each answer and what each sink did with it, where each
    /// copy is (`GET /deliveries`, `callbridge deliveries CALL_ID`; docs/deliveries.md). Kept
    /// in memory, and in the spool's database when a spool is configured.
    #[serde(default)]
    pub deliveries: crate::delivery::DeliverySettings,
    /// The audit: each copy answered 200 read back from its broker by its receipt, counted
    /// verified or missing (`callbridge audit`; docs/deliveries.md).
    #[serde(default)]
    pub audit: crate::delivery::audit::AuditSettings,
    /// Where events go. Every event is published to every sink whose `events` filter it matches,
    /// concurrently; the answer is 200 only when every required sink confirmed.
    pub sinks: Vec<SinkSettings>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address and port to listen on. Behind an ingress keep the default; the embedded
    /// configuration listens on 127.0.0.1 unless `CALLBRIDGE_LISTEN` says otherwise.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The admin listener (address and port): the operator routes (`/spool`, `/spool/dead`,
    /// `/spool/redrive`, `/spool/dead/purge`, `/reconcile`) and `/metrics` are served here only,
    /// never through the webhook listener (and so never through the ingress in front of it);
    /// `/healthz` and `/readyz` are on both. A non-loopback address needs `admin.tokens`.
    /// Plain HTTP unless `server.tls.admin`.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// The webhook path the sender is given.
    #[serde(default = "default_path")]
    pub path: String,
    /// Extra paths that accept the same webhooks (e.g. a separate URL per webhook family).
    #[serde(default)]
    pub extra_paths: Vec<String>,
    /// Largest request body accepted; a larger one is answered 413. The sender's payloads are a
    /// few KiB, transcripts included.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Every request is answered within this budget. Must stay below the sender's 10 s timeout,
    /// otherwise the sender gives up and retries while we may still be publishing.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Sent as `Retry-After` on 503 answers.
    #[serde(default = "default_retry_after_secs")]
    pub retry_after_secs: u64,
    /// HTTP worker threads; 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    /// Webhook requests handled at once; more are answered 503 + `Retry-After` at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Body bytes being received at once, all requests together, counted as they arrive (a
    /// client that announces a large body and sends it slowly holds only what it has sent); a
    /// request whose next bytes do not fit is answered 503 + `Retry-After` and its connection
    /// closed. At least `max_body_bytes`.
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
    /// Body bytes being parsed and delivered at once, all requests together: a body whose
    /// signature (when configured) has been verified takes its size from this budget until it
    /// is answered, or is answered 503 + `Retry-After` when it does not fit. Parsing multiplies
    /// a body's memory (a 1 MiB body of tiny JSON values costs tens of MiB), so this is the
    /// knob that bounds memory. At least `max_body_bytes`; `max_body_bytes` when omitted (one
    /// maximum-size body at a time, hundreds of ordinary few-KiB ones).
    #[serde(default)]
    pub max_processing_bytes: Option<usize>,
    /// A request rate limit per client address or credential (429 + `Retry-After`); off when
    /// absent.
    #[serde(default)]
    pub rate_limit: Option<security::RateLimitSettings>,
    /// TLS on the webhook listener; plain HTTP when absent (the usual setup behind an ingress
    /// that terminates TLS).
    #[serde(default)]
    pub tls: Option<security::TlsSettings>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            path: default_path(),
            extra_paths: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
            deadline_ms: default_deadline_ms(),
            retry_after_secs: default_retry_after_secs(),
            workers: 0,
            max_in_flight: default_max_in_flight(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            max_processing_bytes: None,
            rate_limit: None,
            tls: None,
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}
fn default_path() -> String {
    "/callback".into()
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
/// Requests are cheap until their bodies arrive; memory is bounded by the byte limit.
fn default_max_in_flight() -> usize {
    256
}
/// 32 maximum-size bodies: bytes still arriving cost only their own size (they are not parsed
/// yet), so 32 MiB is a twelfth of the Helm chart's 384 MiB limit beside the processing budget's
/// worst case (the chart checks the sum), and admits 32 large bodies or thousands of ordinary few-KiB ones arriving at
/// once. A slow or hostile client holds only the bytes it has sent: 32 connections announcing
/// 1 MiB and sending a byte a second hold a few hundred bytes of it, not all of it.
fn default_max_in_flight_bytes() -> usize {
    32 * 1024 * 1024
}

impl ServerSettings {
    /// `max_processing_bytes`, or one maximum-size body when omitted: a hostile 1 MiB body of
    /// tiny JSON values was measured at about 70 MiB of peak memory once parsed, normalised and
    /// serialised; four of them took the process past 256 MiB, and two peaked at 210–275 MiB
    /// (the top under a loaded machine). Ordinary bodies
    /// are a few KiB, so 1 MiB still admits hundreds.
    pub fn processing_bytes(&self) -> usize {
        self.max_processing_bytes.unwrap_or(self.max_body_bytes)
    }
}
fn default_deadline_ms() -> u64 {
    8000
}
fn default_retry_after_secs() -> u64 {
    60
}
/// The sender's own request timeout; our deadline must be below it.
pub const SENDER_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// `none` disables authentication; anything else is configured through the credentials below.
    #[serde(default)]
    pub mode: Option<AuthMode>,
    /// Static API keys in a header, as the callback family sends them
    /// (`callback_args.headers`).
    #[serde(default)]
    pub api_keys: Option<ApiKeySettings>,
    /// Bearer tokens, as agent event subscriptions send them.
    #[serde(default)]
    pub bearer: Option<BearerSettings>,
    /// An HMAC signature over each body (and a timestamp), verified before the body is parsed.
    /// Alone, it authenticates; beside `api_keys`/`bearer`, a request needs both.
    #[serde(default)]
    pub signature: Option<security::SignatureSettings>,
}

#[derive(
    Debug, Clone, Copy, Deserialize, schemars::JsonSchema, serde::Serialize, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    None,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// The header the customer put in the sender's `callback_args.headers`.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// Every listed key is accepted, so keys can be rotated without downtime.
    #[schemars(with = "Vec<String>")]
    pub keys: Vec<SecretString>,
}

fn default_api_key_header() -> String {
    "X-API-Key".into()
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BearerSettings {
    /// Accepted `Authorization: Bearer <token>` values (agent event subscriptions use these).
    #[schemars(with = "Vec<String>")]
    pub tokens: Vec<SecretString>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` for people at a terminal, `json` (one object per line) for log collectors.
    #[serde(default)]
    pub format: LogFormat,
    /// `tracing` filter directive; `RUST_LOG` wins when set. The default is
    /// `info,lapin=off,async_nats=off`: the AMQP and NATS clients log every failed reconnect,
    /// which the sinks already report (by sink name, repeats summarised every 30 s).
    #[serde(default)]
    #[schemars(extend("default" = "info,lapin=off,async_nats=off"))]
    pub level: Option<String>,
    /// Replace every field of `data` that is not an identifier (phone numbers, transcripts,
    /// analysis, custom arguments, extras, …) with `[redacted]` wherever an event is logged
    /// (debug level). On by default: logs must not hold personal data unless asked to.
    #[serde(default = "crate::validate::default_true")]
    pub redact_pii: bool,
}

/// Not derived: an omitted `log:` section must redact, like an omitted `redact_pii`.
impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::default(),
            level: None,
            redact_pii: true,
        }
    }
}

/// OpenTelemetry traces over OTLP. Off by default.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceSettings {
    /// Export spans (the request, each sink's publish) to the collector.
    #[serde(default)]
    pub enabled: bool,
    /// Collector base URL (`/v1/traces` is appended unless present).
    #[serde(default = "default_otlp_endpoint")]
    pub endpoint: String,
    /// OTLP over HTTP: protobuf or JSON.
    #[serde(default)]
    pub protocol: TraceProtocol,
    /// Share of new traces to record (0.0 to 1.0); an incoming sampled `traceparent` is honoured.
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// `service.name` of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

impl Default for TraceSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: default_otlp_endpoint(),
            protocol: TraceProtocol::default(),
            sampling_ratio: default_sampling_ratio(),
            service_name: default_service_name(),
        }
    }
}

#[derive(
    Debug, Clone, Copy, Deserialize, schemars::JsonSchema, serde::Serialize, Default, PartialEq, Eq,
)]
pub enum TraceProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}

fn default_otlp_endpoint() -> String {
    "http://localhost:4318".into()
}
fn default_sampling_ratio() -> f64 {
    1.0
}
fn default_service_name() -> String {
    "callbridge".into()
}

#[derive(
    Debug, Clone, Copy, Deserialize, schemars::JsonSchema, serde::Serialize, Default, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// `sinks[1].topic` → `sinks[1] (bus).topic`: an operator knows sinks by name, not by index.
/// When the file has shape errors, the semantic errors of what does deserialise (the shape
/// errors' sections and sinks taken out), so one `validate` run reports both. Sink indices are
/// those of the file; a check about the sinks list as a whole is left out when a sink was taken
/// out (it would be about a list the file does not have).
fn meaning_of_the_rest(raw: &Value) -> Vec<ConfigIssue> {
    let Some((fixed, kept)) = shape::repaired(raw) else {
        return Vec::new();
    };
    let total = raw
        .get("sinks")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let Ok(settings) = serde_json::from_value::<Settings>(fixed) else {
        return Vec::new();
    };
    let mut issues = Issues::default();
    settings.validate(&mut issues);
    issues
        .errors
        .into_iter()
        .filter_map(|mut issue| {
            if let Some(rest) = issue.path.strip_prefix("sinks[") {
                let (index, tail) = rest.split_once(']')?;
                let original = kept.get(index.parse::<usize>().ok()?)?;
                issue.path = format!("sinks[{original}]{tail}");
            } else if issue.path == "sinks" && kept.len() < total {
                return None;
            }
            Some(issue)
        })
        .collect()
}

fn name_sinks(raw: &Value, issues: &mut [ConfigIssue]) {
    for issue in issues {
        let Some(rest) = issue.path.strip_prefix("sinks[") else {
            continue;
        };
        let Some((index, tail)) = rest.split_once(']') else {
            continue;
        };
        let name = index
            .parse::<usize>()
            .ok()
            .and_then(|i| raw.get("sinks")?.get(i)?.get("name")?.as_str());
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            issue.path = format!("sinks[{index}] ({name}){tail}");
        }
    }
}

impl Settings {
    /// Loads the file (or the embedded default), applies env overrides and `${VAR}` expansion
    /// from the process environment, then validates. Warnings are returned beside the settings
    /// so the caller can log them.
    pub fn load(
        path: Option<&Path>,
    ) -> Result<(Settings, Vec<ConfigIssue>, ConfigSource), ConfigError> {
        let (text, source) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?,
                ConfigSource::File(p.to_path_buf()),
            ),
            None => (DEFAULT_CONFIG_YAML.to_string(), ConfigSource::Embedded),
        };
        let (settings, warnings) = Self::from_yaml(&text, &source.to_string(), &Env::Process)?;
        Ok((settings, warnings, source))
    }

    /// Parses YAML text with `env`'s `CALLBRIDGE__*` overrides and `${VAR}` values, then
    /// validates.
    pub fn from_yaml(
        text: &str,
        source_name: &str,
        env: &Env,
    ) -> Result<(Settings, Vec<ConfigIssue>), ConfigError> {
        let parse_err = |source| ConfigError::Parse {
            source_name: source_name.to_string(),
            source,
        };
        let mut raw: Value = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Yaml))
            .add_source(env.overrides())
            .build()
            .map_err(parse_err)?
            .try_deserialize()
            .map_err(parse_err)?;

        let mut issues = Issues::default();
        sinks::unquoted_null_sink_type(&mut raw);
        env.expand_tree(&mut raw, "", &mut issues);
        if !issues.errors.is_empty() {
            return Err(ConfigError::Invalid(issues.errors));
        }
        let settings: Settings = match serde_path_to_error::deserialize(raw.clone()) {
            Ok(s) => s,
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { "(root)".into() } else { path };
                let first = shape::issue(path, e.into_inner().to_string());
                let mut errors = shape::errors(&raw, first);
                errors.extend(meaning_of_the_rest(&raw));
                name_sinks(&raw, &mut errors);
                return Err(ConfigError::Invalid(errors));
            }
        };
        settings.validate(&mut issues);
        name_sinks(&raw, &mut issues.errors);
        name_sinks(&raw, &mut issues.warnings);
        if issues.errors.is_empty() {
            Ok((settings, issues.warnings))
        } else {
            Err(ConfigError::Invalid(issues.errors))
        }
    }

    /// Semantic checks that types alone cannot express. Collects every problem.
    pub fn validate(&self, issues: &mut Issues) {
        let s = &self.server;
        if s.listen.parse::<std::net::SocketAddr>().is_err() {
            issues.error(
                "server.listen",
                format!("expected host:port, got {:?}", s.listen),
            );
        }
        self.validate_admin(issues);
        for (i, p) in std::iter::once(&s.path).chain(&s.extra_paths).enumerate() {
            let field = if i == 0 {
                "server.path".to_string()
            } else {
                format!("server.extra_paths[{}]", i - 1)
            };
            if !p.starts_with('/') {
                issues.error(field, format!("must start with '/', got {p:?}"));
            } else if ["/healthz", "/readyz", "/metrics", "/reconcile"].contains(&p.as_str())
                || p == "/spool"
                || p.starts_with("/spool/")
            {
                issues.error(field, format!("{p} is reserved"));
            }
        }
        if s.max_body_bytes == 0 {
            issues.error("server.max_body_bytes", "must be greater than 0");
        }
        if s.max_in_flight == 0 {
            issues.error("server.max_in_flight", "must be greater than 0");
        }
        for (field, bytes) in [
            ("server.max_in_flight_bytes", s.max_in_flight_bytes),
            ("server.max_processing_bytes", s.processing_bytes()),
        ] {
            if bytes < s.max_body_bytes {
                issues.error(
                    field,
                    format!(
                        "must be at least server.max_body_bytes ({}), or a body of the allowed size could never be admitted",
                        s.max_body_bytes
                    ),
                );
            } else if bytes > u32::MAX as usize {
                issues.error(field, format!("must be at most {}", u32::MAX));
            }
        }
        if s.deadline_ms == 0 {
            issues.error("server.deadline_ms", "must be greater than 0");
        } else if s.deadline_ms >= SENDER_TIMEOUT_MS {
            issues.error(
                "server.deadline_ms",
                format!(
                    "must be below the sender's {SENDER_TIMEOUT_MS} ms timeout, got {}",
                    s.deadline_ms
                ),
            );
        }

        self.validate_auth(issues);
        if let Some(r) = &s.rate_limit {
            r.validate(issues);
        }
        if let Some(t) = &s.tls {
            t.validate(issues);
        }

        if self.event.source.is_empty() {
            issues.error("event.source", "must not be empty");
        }
        if self.event.type_prefix.is_empty() {
            issues.error("event.type_prefix", "must not be empty");
        }
        if self.idempotency.window_secs < 21 * 60 {
            issues.warn(
                "idempotency.window_secs",
                "shorter than the sender's 21-minute retry horizon: late retries may publish again",
            );
        }
        self.idempotency.validate_shared(issues);
        if self.idempotency.max_entries == 0 {
            issues.error("idempotency.max_entries", "must be greater than 0");
        }
        if let Some(rate) = self.idempotency.expected_rate_per_sec {
            let needed = self.idempotency.window_secs.saturating_mul(rate);
            if (self.idempotency.max_entries as u64) < needed {
                issues.warn(
                    "idempotency.max_entries",
                    format!(
                        "at {rate} events/s the cap of {} ids holds {} s, not window_secs {} s: \
                         set max_entries to at least {needed} (about {} MiB at ~{} bytes per id)",
                        self.idempotency.max_entries,
                        self.idempotency.max_entries as u64 / rate.max(1),
                        self.idempotency.window_secs,
                        needed.saturating_mul(LEDGER_BYTES_PER_ENTRY) >> 20,
                        LEDGER_BYTES_PER_ENTRY
                    ),
                );
            }
        }

        if !(0.0..=1.0).contains(&self.traces.sampling_ratio) {
            issues.error("traces.sampling_ratio", "must be between 0.0 and 1.0");
        }
        if self.traces.enabled && !self.traces.endpoint.starts_with("http") {
            issues.error(
                "traces.endpoint",
                format!("expected an http(s) URL, got {:?}", self.traces.endpoint),
            );
        }

        sinks::validate(&self.sinks, s.deadline_ms, issues);
        self.validate_spool(issues);
        for (path, message, error) in self
            .deliveries
            .check(self.idempotency.expected_rate_per_sec)
        {
            if error {
                issues.error(path, message);
            } else {
                issues.warn(path, message);
            }
        }
        for (path, message) in self.audit.check() {
            issues.error(path, message);
        }
        if let Some(r) = &self.reconcile {
            r.validate(self.idempotency.window_secs, issues);
        }
        let worst_case = crate::event::worst_case_event_bytes(s.max_body_bytes);
        for (i, sink) in self.sinks.iter().enumerate() {
            let spec = sink.spec();
            let limit = spec.max_message_bytes().filter(|_| spec.common().required);
            if let Some(limit) = limit.filter(|l| worst_case > *l) {
                issues.warn(
                    format!("sinks[{i}]"),
                    format!(
                        "takes events up to {limit} bytes, but a body of server.max_body_bytes \
                         ({}) can make an event of up to {worst_case} bytes (the transcript \
                         is kept twice); larger events are answered 413",
                        s.max_body_bytes
                    ),
                );
            }
        }
    }

    fn validate_spool(&self, issues: &mut Issues) {
        if let Some(spool) = &self.spool {
            spool.validate(issues);
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            let c = sink.spec().common();
            if c.on_unavailable == crate::sinks::OnUnavailable::Spool && self.spool.is_none() {
                issues.error(
                    format!("sinks[{i}].on_unavailable"),
                    "spool needs a top-level `spool: {path: ...}` section",
                );
            }
        }
    }

    /// The admin listener: its own address, and the credential it needs there.
    fn validate_admin(&self, issues: &mut Issues) {
        let s = &self.server;
        let Ok(admin) = s.admin_listen.parse::<std::net::SocketAddr>() else {
            issues.error(
                "server.admin_listen",
                format!("expected host:port, got {:?}", s.admin_listen),
            );
            return;
        };
        if let Ok(listen) = s.listen.parse::<std::net::SocketAddr>() {
            // Two listeners on one port collide when their addresses overlap (equal, or either
            // is the unspecified address); port 0 picks a free one each.
            let overlap = admin.ip() == listen.ip()
                || admin.ip().is_unspecified()
                || listen.ip().is_unspecified();
            if admin.port() != 0 && admin.port() == listen.port() && overlap {
                issues.error(
                    "server.admin_listen",
                    format!(
                        "{} and server.listen ({}) would share a port: give the admin listener \
                         its own (the default is 127.0.0.1:9090)",
                        s.admin_listen, s.listen
                    ),
                );
            }
        }
        let mut webhook: Vec<&str> = Vec::new();
        if let Some(k) = &self.auth.api_keys {
            webhook.extend(k.keys.iter().map(|k| k.expose_secret()));
        }
        if let Some(b) = &self.auth.bearer {
            webhook.extend(b.tokens.iter().map(|t| t.expose_secret()));
        }
        self.admin.validate(
            &s.admin_listen,
            admin.ip().is_loopback(),
            &webhook,
            DOCS_SAMPLE_API_KEY,
            issues,
        );
        if s.tls.as_ref().is_some_and(|t| t.admin) && admin.ip().is_loopback() {
            issues.warn(
                "server.tls.admin",
                "TLS on a loopback admin listener: the CLI then needs a certificate valid for \
                 the address it connects to",
            );
        }
    }

    fn validate_auth(&self, issues: &mut Issues) {
        /// The sample key is public: it may only guard an endpoint nobody else can reach.
        fn listens_on_loopback(server: &ServerSettings) -> bool {
            server
                .listen
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback())
        }
        let a = &self.auth;
        let has_creds = a.api_keys.is_some() || a.bearer.is_some() || a.signature.is_some();
        if let Some(sig) = &a.signature {
            sig.validate(issues);
            if self.idempotency.window_secs < sig.tolerance_secs {
                issues.warn(
                    "idempotency.window_secs",
                    format!(
                        "shorter than auth.signature.tolerance_secs ({}): a replayed signed \
                         request could publish again",
                        sig.tolerance_secs
                    ),
                );
            }
        }
        match a.mode {
            Some(AuthMode::None) if has_creds => issues.error(
                "auth.mode",
                "mode: none disables authentication; remove api_keys/bearer/signature or remove mode",
            ),
            Some(AuthMode::None) => issues.warn(
                "auth.mode",
                "authentication is disabled: anyone who can reach the endpoint can publish events",
            ),
            None if !has_creds => issues.error(
                "auth",
                "configure api_keys, bearer and/or signature, or set mode: none explicitly",
            ),
            None => {}
        }
        if let Some(k) = &a.api_keys {
            if k.header
                .parse::<actix_web::http::header::HeaderName>()
                .is_err()
            {
                issues.error(
                    "auth.api_keys.header",
                    format!("not a valid header name: {:?}", k.header),
                );
            }
            if k.header.eq_ignore_ascii_case("authorization") {
                issues.error(
                    "auth.api_keys.header",
                    "use auth.bearer for the Authorization header",
                );
            }
            if k.keys.is_empty() {
                issues.error("auth.api_keys.keys", "at least one key is required");
            }
            for (i, key) in k.keys.iter().enumerate() {
                let key = key.expose_secret();
                if key.is_empty() {
                    issues.error(format!("auth.api_keys.keys[{i}]"), "must not be empty");
                } else if key == DOCS_SAMPLE_API_KEY && !listens_on_loopback(&self.server) {
                    issues.error(
                        format!("auth.api_keys.keys[{i}]"),
                        format!(
                            "this is the sample key printed in the sender's public documentation, \
                             accepted only on a loopback listener (server.listen is {}): set \
                             CALLBRIDGE_API_KEY (or configure your own keys)",
                            self.server.listen
                        ),
                    );
                } else if key == DOCS_SAMPLE_API_KEY {
                    issues.warn(
                        format!("auth.api_keys.keys[{i}]"),
                        "this is the sample key printed in the sender's public documentation; \
                         set CALLBRIDGE_API_KEY (or your own key) before exposing the bridge",
                    );
                }
            }
        }
        if let Some(b) = &a.bearer {
            if b.tokens.is_empty() {
                issues.error("auth.bearer.tokens", "at least one token is required");
            }
            for (i, t) in b.tokens.iter().enumerate() {
                if t.expose_secret().is_empty() {
                    issues.error(format!("auth.bearer.tokens[{i}]"), "must not be empty");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
