//! Typed settings: the YAML users write, `${VAR}` expansion, env overrides and validation.
//!
//! The file given with `--config` (or `CALLBRIDGE_CONFIG`) is the *whole* configuration: serde
//! defaults fill omitted scalar fields only, so a user's `sinks` list is never merged with the
//! embedded default. Environment variables `CALLBRIDGE__SECTION__KEY` override single values.
//! Every string may hold `${VAR}` or `${VAR:-default}` ([`mod@env`]).
//!
//! Each section's type lives with the module it configures (`server` and `auth` in
//! `crate::ingest`, `admin`, `log`/`trace` in `crate::telemetry`, `spool`, `idempotency` in
//! `crate::ledger`, `reconcile`, `audit`, `events`); here they are assembled into [`Settings`].
//! The `sinks` list is in [`sinks`] and each sink kind's settings live with the sink
//! (`crate::sinks::<kind>`). Every check reports through [`crate::validate::Issues`], a
//! leaf module, so dependencies point one way: config → a sink's settings → validate.

pub mod env;
pub mod reference;

mod shape;
pub mod sinks;

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;

use crate::event::EventSettings;
use crate::ingest::auth::settings::{AuthMode, AuthSettings};
use crate::ingest::settings::{ServerSettings, SENDER_TIMEOUT_MS};
pub use crate::ledger::settings::{IdempotencySettings, LedgerStore, LEDGER_BYTES_PER_ENTRY};
pub use crate::spool::settings::SpoolSettings;
use crate::telemetry::settings::{LogSettings, TraceSettings};
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
    pub admin: crate::admin::AdminSettings,
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
