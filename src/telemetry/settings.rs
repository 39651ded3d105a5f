//! The log and trace settings (`log`, `trace`).

use serde::Deserialize;

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
