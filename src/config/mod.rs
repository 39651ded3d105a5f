//! Typed settings: the YAML users write, `${VAR}` expansion, env overrides and validation.
//!
//! The file given with `--config` (or `CALLBRIDGE_CONFIG`) is the *whole* configuration: serde
//! defaults fill omitted scalar fields only, so a user's `sinks` list is never merged with the
//! embedded default. Environment variables `CALLBRIDGE__SECTION__KEY` override single values.
//! Every string may hold `${VAR}` or `${VAR:-default}`; expansion happens on parsed values, never
//! on the raw YAML text, so a variable's value cannot inject YAML structure.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use crate::template::Template;

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

/// One problem with the configuration, named by the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects errors and warnings while validating, so `validate` can report all of them at once.
#[derive(Debug, Default)]
pub struct Issues {
    pub errors: Vec<ConfigIssue>,
    pub warnings: Vec<ConfigIssue>,
}

impl Issues {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }
    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    /// Required: disabling authentication must be a visible decision (`auth: {mode: none}`).
    pub auth: AuthSettings,
    #[serde(default)]
    pub event: EventSettings,
    #[serde(default)]
    pub idempotency: IdempotencySettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub traces: TraceSettings,
    pub sinks: Vec<SinkSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The webhook path the sender is given.
    #[serde(default = "default_path")]
    pub path: String,
    /// Extra paths that accept the same webhooks (e.g. a separate URL per webhook family).
    #[serde(default)]
    pub extra_paths: Vec<String>,
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
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            path: default_path(),
            extra_paths: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
            deadline_ms: default_deadline_ms(),
            retry_after_secs: default_retry_after_secs(),
            workers: 0,
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_path() -> String {
    "/callback".into()
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_deadline_ms() -> u64 {
    8000
}
fn default_retry_after_secs() -> u64 {
    60
}
/// Serde default for `required` and other on-by-default flags (shared by every sink kind).
pub fn default_true() -> bool {
    true
}

/// The sender's own request timeout; our deadline must be below it.
pub const SENDER_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// `none` disables authentication; anything else is configured through the credentials below.
    #[serde(default)]
    pub mode: Option<AuthMode>,
    #[serde(default)]
    pub api_keys: Option<ApiKeySettings>,
    #[serde(default)]
    pub bearer: Option<BearerSettings>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// The header the customer put in the sender's `callback_args.headers`.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// Every listed key is accepted, so keys can be rotated without downtime.
    pub keys: Vec<SecretString>,
}

fn default_api_key_header() -> String {
    "X-API-Key".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerSettings {
    /// Accepted `Authorization: Bearer <token>` values (agent event subscriptions use these).
    pub tokens: Vec<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// CloudEvents `source` of every event.
    #[serde(default = "default_source")]
    pub source: String,
    /// Prefix of the CloudEvents `type` (`<prefix>.call.status.v1`).
    #[serde(default = "default_type_prefix")]
    pub type_prefix: String,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            source: default_source(),
            type_prefix: default_type_prefix(),
        }
    }
}

fn default_source() -> String {
    "/callbridge".into()
}
fn default_type_prefix() -> String {
    "ai.ringg".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    /// How long the bridge remembers which sinks acknowledged an event id. The default (30 min)
    /// outlasts the sender's retry horizon (1 + 5 + 15 minutes).
    #[serde(default = "default_window_secs")]
    pub window_secs: u64,
    /// Hard cap on remembered ids, so memory stays bounded under any load.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            window_secs: default_window_secs(),
            max_entries: default_max_entries(),
        }
    }
}

fn default_window_secs() -> u64 {
    1800
}
fn default_max_entries() -> usize {
    100_000
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    #[serde(default)]
    pub format: LogFormat,
    /// `tracing` filter directive; `RUST_LOG` wins when set.
    #[serde(default)]
    pub level: Option<String>,
    /// Replace phone numbers and transcripts with `[redacted]` wherever an event is logged
    /// (debug level), for deployments whose logs must not hold personal data.
    #[serde(default)]
    pub redact_pii: bool,
}

/// OpenTelemetry traces over OTLP. Off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSettings {
    #[serde(default)]
    pub enabled: bool,
    /// Collector base URL (`/v1/traces` is appended unless present).
    #[serde(default = "default_otlp_endpoint")]
    pub endpoint: String,
    #[serde(default)]
    pub protocol: TraceProtocol,
    /// Share of new traces to record (0.0 to 1.0); an incoming sampled `traceparent` is honoured.
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
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

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// One configured sink. The `type` key selects the kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkSettings {
    File(FileSinkSettings),
    Null(NullSinkSettings),
    Nats(Box<crate::sinks::nats::NatsSinkSettings>),
    Rabbitmq(crate::sinks::rabbitmq::RabbitmqSinkSettings),
    Kafka(crate::sinks::kafka::KafkaSinkSettings),
}

/// The fields every sink kind has.
#[derive(Debug, Clone, Copy)]
pub struct SinkCommon<'a> {
    pub name: &'a str,
    pub required: bool,
    pub timeout_ms: u64,
    pub events: Option<&'a [String]>,
}

impl SinkSettings {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkSettings::File(_) => "file",
            SinkSettings::Null(_) => "null",
            SinkSettings::Nats(_) => "nats",
            SinkSettings::Rabbitmq(_) => "rabbitmq",
            SinkSettings::Kafka(_) => "kafka",
        }
    }

    pub fn common(&self) -> SinkCommon<'_> {
        macro_rules! common {
            ($s:expr) => {
                SinkCommon {
                    name: &$s.name,
                    required: $s.required,
                    timeout_ms: $s.timeout_ms,
                    events: $s.events.as_deref(),
                }
            };
        }
        match self {
            SinkSettings::File(s) => common!(s),
            SinkSettings::Null(s) => common!(s),
            SinkSettings::Nats(s) => common!(s),
            SinkSettings::Rabbitmq(s) => common!(s),
            SinkSettings::Kafka(s) => common!(s),
        }
    }

    fn validate_kind(&self, path: &str, issues: &mut Issues) {
        match self {
            SinkSettings::File(s) => {
                if s.path.as_os_str().is_empty() {
                    issues.error(format!("{path}.path"), "must not be empty");
                }
            }
            SinkSettings::Null(_) => issues.warn(
                path,
                "a null sink acknowledges without storing anything (benchmarks and drills only)",
            ),
            SinkSettings::Nats(s) => s.validate(path, issues),
            SinkSettings::Rabbitmq(s) => s.validate(path, issues),
            SinkSettings::Kafka(s) => s.validate(path, issues),
        }
    }
}

pub fn default_sink_timeout_ms() -> u64 {
    5000
}

/// Appends each event as one JSON line and fsyncs before acknowledging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkSettings {
    pub name: String,
    #[serde(default = "default_true")]
    pub required: bool,
    #[serde(default = "default_sink_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Relative paths are relative to the working directory.
    pub path: PathBuf,
}

/// Acknowledges at once (after `latency_ms`) without storing anything: the ceiling of the
/// bridge's own code path in benchmarks, and a slow sink in drills.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullSinkSettings {
    pub name: String,
    #[serde(default = "default_true")]
    pub required: bool,
    #[serde(default = "default_sink_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Simulated broker latency.
    #[serde(default)]
    pub latency_ms: u64,
}

impl Settings {
    /// Loads the file (or the embedded default), applies env overrides and `${VAR}` expansion,
    /// then validates. Warnings are returned beside the settings so the caller can log them.
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
        let (settings, warnings) = Self::from_yaml_with_env(&text, &source.to_string(), true)?;
        Ok((settings, warnings, source))
    }

    /// Parses YAML text; `with_env` applies `CALLBRIDGE__*` overrides.
    pub fn from_yaml_with_env(
        text: &str,
        source_name: &str,
        with_env: bool,
    ) -> Result<(Settings, Vec<ConfigIssue>), ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Yaml));
        if with_env {
            builder = builder.add_source(
                config::Environment::with_prefix("CALLBRIDGE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            );
        }
        let parse_err = |source| ConfigError::Parse {
            source_name: source_name.to_string(),
            source,
        };
        let mut raw: Value = builder
            .build()
            .map_err(parse_err)?
            .try_deserialize()
            .map_err(parse_err)?;

        let mut issues = Issues::default();
        unquoted_null_sink_type(&mut raw);
        expand_env(&mut raw, "", &mut issues);
        if !issues.errors.is_empty() {
            return Err(ConfigError::Invalid(issues.errors));
        }
        let settings: Settings = serde_path_to_error::deserialize(raw).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Invalid(vec![ConfigIssue {
                path: if path == "." { "(root)".into() } else { path },
                message: e.into_inner().to_string(),
            }])
        })?;
        settings.validate(&mut issues);
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
        for (i, p) in std::iter::once(&s.path).chain(&s.extra_paths).enumerate() {
            let field = if i == 0 {
                "server.path".to_string()
            } else {
                format!("server.extra_paths[{}]", i - 1)
            };
            if !p.starts_with('/') {
                issues.error(field, format!("must start with '/', got {p:?}"));
            } else if ["/healthz", "/readyz", "/metrics"].contains(&p.as_str()) {
                issues.error(field, format!("{p} is reserved"));
            }
        }
        if s.max_body_bytes == 0 {
            issues.error("server.max_body_bytes", "must be greater than 0");
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
        if self.idempotency.max_entries == 0 {
            issues.error("idempotency.max_entries", "must be greater than 0");
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

        if self.sinks.is_empty() {
            issues.error("sinks", "at least one sink is required");
        }
        let mut names = HashSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            let path = format!("sinks[{i}]");
            let c = sink.common();
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                issues.error(
                    format!("{path}.name"),
                    format!(
                        "must be non-empty letters, digits, '-' or '_', got {:?}",
                        c.name
                    ),
                );
            } else if !names.insert(c.name.to_string()) {
                issues.error(
                    format!("{path}.name"),
                    format!("duplicate sink name {:?}", c.name),
                );
            }
            if c.timeout_ms == 0 {
                issues.error(format!("{path}.timeout_ms"), "must be greater than 0");
            } else if c.timeout_ms > s.deadline_ms {
                issues.warn(
                    format!("{path}.timeout_ms"),
                    format!(
                        "{} ms exceeds server.deadline_ms ({} ms); the deadline wins",
                        c.timeout_ms, s.deadline_ms
                    ),
                );
            }
            if let Some(events) = c.events {
                for (j, f) in events.iter().enumerate() {
                    if let Err(e) = crate::event::EventFilter::parse(f) {
                        issues.error(format!("{path}.events[{j}]"), e);
                    }
                }
            }
            sink.validate_kind(&path, issues);
        }
        if !self.sinks.iter().any(|s| s.common().required) && !self.sinks.is_empty() {
            issues.warn(
                "sinks",
                "no sink is required: every webhook will be answered 200 even if nothing stored it",
            );
        }
    }

    fn validate_auth(&self, issues: &mut Issues) {
        let a = &self.auth;
        let has_creds = a.api_keys.is_some() || a.bearer.is_some();
        match a.mode {
            Some(AuthMode::None) if has_creds => issues.error(
                "auth.mode",
                "mode: none disables authentication; remove api_keys/bearer or remove mode",
            ),
            Some(AuthMode::None) => issues.warn(
                "auth.mode",
                "authentication is disabled: anyone who can reach the endpoint can publish events",
            ),
            None if !has_creds => issues.error(
                "auth",
                "configure api_keys and/or bearer, or set mode: none explicitly",
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

/// Checks a template string at validate time; used by every broker sink's settings.
pub fn check_template(value: &str, path: &str, issues: &mut Issues) {
    if let Err(e) = Template::parse(value) {
        issues.error(path, e.to_string());
    }
}

/// YAML reads an unquoted `type: null` as null, not as the string "null": accept it as the
/// `null` sink kind rather than fail with a puzzling "invalid type: null".
fn unquoted_null_sink_type(raw: &mut Value) {
    if let Some(Value::Array(sinks)) = raw.get_mut("sinks") {
        for sink in sinks {
            if let Some(t @ Value::Null) = sink.get_mut("type") {
                *t = Value::String("null".into());
            }
        }
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string of the tree. An unset variable
/// without a default is an error naming the field, never a silent empty string.
fn expand_env(value: &mut Value, path: &str, issues: &mut Issues) {
    match value {
        Value::String(s) if s.contains("${") => match expand_str(s) {
            Ok(expanded) => *s = expanded,
            Err(msg) => issues.error(if path.is_empty() { "(root)" } else { path }, msg),
        },
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                expand_env(v, &format!("{path}[{i}]"), issues);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                expand_env(v, &p, issues);
            }
        }
        _ => {}
    }
}

/// Expands one string. `$${` escapes a literal `${`.
pub fn expand_str(input: &str) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {input:?}"))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name {name:?}"));
            }
            // POSIX `:-` semantics: the default applies when the variable is unset or empty.
            match (std::env::var(name).ok(), default) {
                (Some(v), None) => out.push_str(&v),
                (Some(v), Some(_)) if !v.is_empty() => out.push_str(&v),
                (_, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
auth: {api_keys: {keys: ["k1"]}}
sinks:
  - {name: archive, type: file, path: /tmp/x.jsonl}
"#;

    fn load(text: &str) -> Result<(Settings, Vec<ConfigIssue>), ConfigError> {
        Settings::from_yaml_with_env(text, "test", false)
    }

    fn errors(text: &str) -> Vec<String> {
        match load(text) {
            Err(ConfigError::Invalid(v)) => v.iter().map(|i| i.to_string()).collect(),
            Err(e) => vec![format!("{e:#}")],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn embedded_default_is_valid_and_warns_about_the_sample_key() {
        let (s, warnings) = load(DEFAULT_CONFIG_YAML).expect("default config loads");
        assert_eq!(s.server.listen, "0.0.0.0:8080");
        assert_eq!(s.server.path, "/callback");
        assert_eq!(s.sinks.len(), 1);
        assert!(warnings.iter().any(|w| w.path == "auth.api_keys.keys[0]"));
    }

    #[test]
    fn omitted_scalars_take_defaults() {
        let (s, _) = load(MINIMAL).unwrap();
        assert_eq!(s.server.deadline_ms, 8000);
        assert_eq!(s.server.max_body_bytes, 1 << 20);
        assert_eq!(s.idempotency.window_secs, 1800);
        assert_eq!(s.event.type_prefix, "ai.ringg");
        assert_eq!(s.auth.api_keys.as_ref().unwrap().header, "X-API-Key");
        let c = s.sinks[0].common();
        assert!(c.required);
        assert_eq!(c.timeout_ms, 5000);
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_path() {
        let errs = errors(
            r#"
auth: {api_keys: {keys: ["k1"]}}
sinks:
  - {name: a, type: file, path: /tmp/x}
  - {name: b, type: file, path: /tmp/y, topc: x}
"#,
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("sinks[1]"), "{errs:?}");
        assert!(errs[0].contains("topc"), "{errs:?}");
    }

    #[test]
    fn every_semantic_error_is_reported_by_path() {
        let errs = errors(
            r#"
server: {deadline_ms: 10000, path: callback}
auth: {api_keys: {keys: []}}
sinks:
  - {name: a, type: file, path: /tmp/x, events: [call.nope]}
  - {name: a, type: file, path: /tmp/y, timeout_ms: 0}
"#,
        );
        for expected in [
            "server.deadline_ms",
            "server.path",
            "auth.api_keys.keys",
            "sinks[0].events[0]",
            "sinks[1].name",
            "sinks[1].timeout_ms",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(&format!("{expected}:"))),
                "missing {expected} in {errs:?}"
            );
        }
    }

    #[test]
    fn auth_must_be_explicit() {
        let errs = errors("auth: {}\nsinks: [{name: a, type: file, path: /tmp/x}]");
        assert!(errs.iter().any(|e| e.starts_with("auth:")), "{errs:?}");
        let (_, warnings) =
            load("auth: {mode: none}\nsinks: [{name: a, type: file, path: /tmp/x}]").unwrap();
        assert!(warnings.iter().any(|w| w.path == "auth.mode"));
    }

    #[test]
    fn env_expansion_with_defaults_and_errors() {
        std::env::set_var("CB_TEST_KEY_SET", "from-env");
        std::env::remove_var("CB_TEST_KEY_UNSET");
        assert_eq!(expand_str("${CB_TEST_KEY_SET}").unwrap(), "from-env");
        assert_eq!(
            expand_str("a-${CB_TEST_KEY_UNSET:-dflt}-b").unwrap(),
            "a-dflt-b"
        );
        assert_eq!(expand_str("$${LITERAL}").unwrap(), "${LITERAL}");
        assert_eq!(expand_str("cost $5").unwrap(), "cost $5");
        assert!(expand_str("${CB_TEST_KEY_UNSET}").is_err());
        assert!(expand_str("${unclosed").is_err());

        let errs = errors(
            "auth: {api_keys: {keys: [\"${CB_TEST_KEY_UNSET}\"]}}\nsinks: [{name: a, type: file, path: /tmp/x}]",
        );
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("auth.api_keys.keys[0]:"), "{errs:?}");
        let (s, _) = load(
            "auth: {api_keys: {keys: [\"${CB_TEST_KEY_SET}\"]}}\nsinks: [{name: a, type: file, path: /tmp/x}]",
        )
        .unwrap();
        assert_eq!(s.auth.api_keys.unwrap().keys[0].expose_secret(), "from-env");
    }

    #[test]
    fn env_overrides_single_values() {
        // Unique variable so parallel tests do not interfere.
        std::env::set_var("CALLBRIDGE__IDEMPOTENCY__MAX_ENTRIES", "77");
        let (s, _) = Settings::from_yaml_with_env(MINIMAL, "test", true).unwrap();
        std::env::remove_var("CALLBRIDGE__IDEMPOTENCY__MAX_ENTRIES");
        assert_eq!(s.idempotency.max_entries, 77);
        assert_eq!(s.sinks.len(), 1, "sinks are not merged with anything");
    }
}
