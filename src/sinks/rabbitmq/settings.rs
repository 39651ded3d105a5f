//! The `rabbitmq` sink's settings: what the YAML holds, its checks (every problem by field
//! path), and the AMQP URL — parsed with our fixes over the URI crate's, and never shown with
//! its password.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::ExchangeKind;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{RabbitmqSink, CONNECT_TIMEOUT};
use crate::event::binding::Format;
use crate::sinks::{BuildError, Sink, SinkSpec};
use crate::validate::{check_template, default_true, Issues};

/// Heartbeat asked for when the URL does not say: a silently dead peer (no RST) is noticed
/// within about two intervals instead of RabbitMQ's default 60 s.
pub(super) const DEFAULT_HEARTBEAT_SECS: u16 = 10;
/// AMQP short strings (routing keys, message ids) hold at most 255 bytes.
pub(super) const SHORTSTR_MAX: usize = 255;

fn default_channels() -> usize {
    8
}

fn default_max_in_flight_per_channel() -> usize {
    128
}

/// Upper bounds checked by validation.
const MAX_CHANNELS: usize = 1024;
const MAX_IN_FLIGHT_PER_CHANNEL: usize = 4096;

sink_settings! {
    "rabbitmq",
    /// Publishes each event to an exchange, with publisher confirms.
    pub struct RabbitmqSinkSettings {
        /// `amqp://user:password@host:5672/vhost` (or `amqps://`). A secret because it holds the
        /// password; put that in `${RABBITMQ_PASSWORD}`-style variables, never in the file.
        #[schemars(with = "String")]
        pub url: SecretString,
        /// The exchange every event is published to; `""` is the default exchange (the routing key
        /// is then a queue name).
        pub exchange: String,
        /// Routing key template, e.g. `calls.{kind}.{status}`, so consumers can bind to the subset
        /// they need (`calls.status.*`, `calls.analysis.#`).
        pub routing_key: String,
        /// CloudEvents mode: `binary` (body = `data`, attributes as `cloudEvents_*` headers, so
        /// consumers that only want the call record read the body as is) or `structured`.
        #[serde(default)]
        pub format: Format,
        /// Declare the exchange at every (re)connect. Without it the exchange must already exist
        /// (checked at connect; the sink stays not ready until it does).
        #[serde(default)]
        pub declare: Option<ExchangeDeclare>,
        /// Queues to declare and bind at every (re)connect, for simple setups where the bridge owns
        /// the topology. Consumers may equally declare their own.
        #[serde(default)]
        pub queues: Vec<QueueBinding>,
        /// Confirm-mode channels on the connection. Each is one process on the broker, so a few
        /// carry the load; more spread it over the broker's cores.
        #[serde(default = "default_channels")]
        pub channels: usize,
        /// The broker's management HTTP API, e.g. `http://rabbitmq:15672`: read only by
        /// `callbridge validate --connect`, for the exchange's bindings (AMQP cannot list them).
        /// Default: the AMQP URL's host on port 15672 (`https` on 15671 for `amqps://`), with the
        /// AMQP URL's credentials unless this URL has its own. A secret: it may hold a password.
        #[serde(default)]
        #[schemars(with = "Option<String>")]
        pub management_url: Option<SecretString>,
        /// Unconfirmed publishes at once on each channel; more wait for room within their
        /// timeout. Bounds what one stalled channel can hold and what the channel's task polls.
        #[serde(default = "default_max_in_flight_per_channel")]
        pub max_in_flight_per_channel: usize,
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeDeclare {
    /// `topic` (default: routing keys are dotted and consumers bind with wildcards), `direct`,
    /// `fanout` or `headers`.
    #[serde(default)]
    pub exchange_type: ExchangeType,
    /// A durable exchange survives a broker restart; the default.
    #[serde(default = "default_true")]
    pub durable: bool,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    #[default]
    Topic,
    Direct,
    Fanout,
    Headers,
}

impl ExchangeType {
    pub(super) fn kind(self) -> ExchangeKind {
        match self {
            ExchangeType::Topic => ExchangeKind::Topic,
            ExchangeType::Direct => ExchangeKind::Direct,
            ExchangeType::Fanout => ExchangeKind::Fanout,
            ExchangeType::Headers => ExchangeKind::Headers,
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueBinding {
    /// The queue's name.
    pub name: String,
    /// Binding key on the exchange, e.g. `calls.#` (topic) or an exact routing key (direct).
    pub binding_key: String,
    /// A durable queue (with persistent messages, which the sink always sends) survives a
    /// broker restart; the default.
    #[serde(default = "default_true")]
    pub durable: bool,
    /// Most messages the queue holds (`x-max-length`); beyond it the oldest are dropped.
    #[serde(default)]
    pub max_length: Option<u64>,
    /// The audit's queue for this sink: the audit reads each 200's message back from it, by
    /// its message id (RabbitMQ has no read by delivery tag), and consumes what it reads. Bind
    /// it like the real queues (e.g. `#` on a topic exchange), bound its length, and keep its
    /// length above the event rate × `audit.delay_secs`, or the oldest are dropped before they
    /// are read and count as missing (docs/deliveries.md).
    #[serde(default)]
    pub audit: bool,
    /// An audit queue's replica id: the queue is declared and read as `<name>.<replica>`, so
    /// each replica of the bridge has its own and never consumes another's copies (which would
    /// then count as missing there). Default: the `CALLBRIDGE_REPLICA_ID` environment
    /// variable, else the host name (the pod's name on Kubernetes). Only for `audit: true`.
    #[serde(default)]
    pub replica: Option<String>,
}

/// The longest replica id an audit queue name takes (host names are at most 64 bytes).
const REPLICA_MAX: usize = 64;

/// This process's replica id, when the config names none: `CALLBRIDGE_REPLICA_ID`, else the
/// host name (`HOSTNAME`, which container runtimes set to the pod's name, else the kernel's).
pub fn local_replica_id() -> String {
    let from_env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let raw = from_env("CALLBRIDGE_REPLICA_ID")
        .or_else(|| from_env("HOSTNAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .filter(|h| !h.trim().is_empty())
        })
        .unwrap_or_else(|| "callbridge".to_string());
    replica_part(&raw)
}

/// `raw` as a queue name part: trimmed, characters a queue name cannot hold as `-`, at most
/// [`REPLICA_MAX`] bytes.
pub fn replica_part(raw: &str) -> String {
    raw.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') {
                c
            } else {
                '-'
            }
        })
        .take(REPLICA_MAX)
        .collect()
}

impl QueueBinding {
    /// The name the queue is declared, bound and read under: an audit queue's carries the
    /// replica id (`replica`, else [`local_replica_id`]); any other queue's is `name`.
    pub fn declared_name(&self) -> String {
        if !self.audit {
            return self.name.clone();
        }
        let replica = self
            .replica
            .as_deref()
            .map(replica_part)
            .unwrap_or_else(local_replica_id);
        format!("{}.{replica}", self.name)
    }

    /// The queue's arguments at declaration.
    pub(super) fn arguments(&self) -> lapin::types::FieldTable {
        let mut args = lapin::types::FieldTable::default();
        if let Some(n) = self.max_length {
            args.insert(
                "x-max-length".into(),
                lapin::types::AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX)),
            );
        }
        args
    }
}

impl RabbitmqSinkSettings {}

#[async_trait]
impl SinkSpec for RabbitmqSinkSettings {
    /// Checks that types cannot express; every problem is named by its field path.
    fn validate(&self, path: &str, issues: &mut Issues) {
        if let Err(e) = parse_url(self.url.expose_secret()) {
            issues.error(format!("{path}.url"), e);
        }
        check_template(&self.routing_key, &format!("{path}.routing_key"), issues);
        if self.routing_key.len() > SHORTSTR_MAX {
            issues.error(
                format!("{path}.routing_key"),
                format!("longer than {SHORTSTR_MAX} bytes"),
            );
        }
        if let Err(e) = check_name(&self.exchange) {
            issues.error(format!("{path}.exchange"), e);
        }
        if self.declare.is_some() {
            if self.exchange.is_empty() {
                issues.error(
                    format!("{path}.declare"),
                    "the default exchange (\"\") cannot be declared; name an exchange",
                );
            } else if self.exchange.starts_with("amq.") {
                issues.error(
                    format!("{path}.declare"),
                    "exchange names starting with \"amq.\" are reserved by the broker",
                );
            }
        }
        if !self.queues.is_empty() && self.exchange.is_empty() {
            issues.error(
                format!("{path}.queues"),
                "queues cannot be bound to the default exchange (\"\"); name an exchange",
            );
        }
        let mut seen = HashSet::new();
        for (i, q) in self.queues.iter().enumerate() {
            let qpath = format!("{path}.queues[{i}]");
            if q.name.is_empty() {
                issues.error(format!("{qpath}.name"), "must not be empty");
            } else if let Err(e) = check_name(&q.name) {
                issues.error(format!("{qpath}.name"), e);
            } else if q.name.starts_with("amq.") {
                issues.error(
                    format!("{qpath}.name"),
                    "queue names starting with \"amq.\" are reserved by the broker",
                );
            } else if !seen.insert(q.name.as_str()) {
                issues.error(
                    format!("{qpath}.name"),
                    format!("duplicate queue {:?}", q.name),
                );
            }
            if q.binding_key.len() > SHORTSTR_MAX {
                issues.error(
                    format!("{qpath}.binding_key"),
                    format!("longer than {SHORTSTR_MAX} bytes"),
                );
            }
            if q.audit && q.name.len() + 1 + REPLICA_MAX > SHORTSTR_MAX {
                issues.error(
                    format!("{qpath}.name"),
                    format!(
                        "an audit queue's name takes its replica id after it: at most {} bytes",
                        SHORTSTR_MAX - 1 - REPLICA_MAX
                    ),
                );
            }
            if let Some(r) = &q.replica {
                if !q.audit {
                    issues.error(
                        format!("{qpath}.replica"),
                        "only an audit queue (audit: true) takes a replica id",
                    );
                } else if replica_part(r).is_empty() {
                    issues.error(format!("{qpath}.replica"), "must not be empty");
                }
            }
            if q.audit && q.max_length.is_none() {
                issues.warn(
                    format!("{qpath}.max_length"),
                    "an audit queue without a bound grows without limit while the audit is off",
                );
            }
        }
        if self.queues.iter().filter(|q| q.audit).count() > 1 {
            issues.error(format!("{path}.queues"), "at most one audit queue per sink");
        }
        if let Some(m) = &self.management_url {
            if let Err(e) = parse_management_url(m.expose_secret()) {
                issues.error(format!("{path}.management_url"), e);
            }
        }
        if self.channels == 0 || self.channels > MAX_CHANNELS {
            issues.error(
                format!("{path}.channels"),
                format!(
                    "must be between 1 and {MAX_CHANNELS}, got {}",
                    self.channels
                ),
            );
        }
        if self.max_in_flight_per_channel == 0
            || self.max_in_flight_per_channel > MAX_IN_FLIGHT_PER_CHANNEL
        {
            issues.error(
                format!("{path}.max_in_flight_per_channel"),
                format!(
                    "must be between 1 and {MAX_IN_FLIGHT_PER_CHANNEL}, got {}",
                    self.max_in_flight_per_channel
                ),
            );
        }
    }

    async fn build(&self) -> Result<Arc<dyn Sink>, BuildError> {
        Ok(Arc::new(RabbitmqSink::start(self).await?))
    }
}

/// Exchange and queue names: at most 255 bytes of letters, digits, `-`, `_`, `.` and `:`.
fn check_name(name: &str) -> Result<(), String> {
    if name.len() > SHORTSTR_MAX {
        return Err(format!("longer than {SHORTSTR_MAX} bytes"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(format!(
            "{name:?} contains {c:?}; use letters, digits, '-', '_', '.' or ':'"
        ));
    }
    Ok(())
}

/// Parses the AMQP URL. Errors never repeat the URL (it holds the password).
pub(super) fn parse_url(raw: &str) -> Result<AMQPUri, String> {
    if !(raw.starts_with("amqp://") || raw.starts_with("amqps://")) {
        return Err("must start with amqp:// or amqps://".into());
    }
    let mut uri = AMQPUri::from_str(raw).map_err(|e| {
        if e.contains(raw) {
            "not a valid AMQP URL".to_string()
        } else {
            format!("not a valid AMQP URL: {e}")
        }
    })?;
    // amq-protocol-uri 8 reads the host with `Url::domain()`, which is None for an IP literal,
    // and then falls back to "localhost": amqp://10.0.0.5 would silently connect to localhost.
    if let Some(host) = ip_host(raw) {
        uri.authority.host = host;
    }
    if uri.authority.host.is_empty() {
        return Err("has no host".into());
    }
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_SECS);
    }
    if uri.query.connection_timeout.is_none() {
        uri.query.connection_timeout = Some(CONNECT_TIMEOUT.as_millis() as u64);
    }
    Ok(uri)
}

/// Parses the management API URL. Errors never repeat the URL (it may hold a password).
pub(super) fn parse_management_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must start with http:// or https://".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(url)
}

/// The host of `scheme://[userinfo@]host[:port][/...]` when it is an IP literal.
fn ip_host(raw: &str) -> Option<String> {
    let rest = raw.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = hostport.strip_prefix('[') {
        let addr = v6.split(']').next()?;
        return addr
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|a| a.to_string());
    }
    let host = hostport.split(':').next()?;
    host.parse::<std::net::Ipv4Addr>()
        .ok()
        .map(|a| a.to_string())
}

/// `amqp://user@host:port/vhost`: for logs and errors, without the password.
pub(super) fn redacted(uri: &AMQPUri) -> String {
    let scheme = match uri.scheme {
        AMQPScheme::AMQP => "amqp",
        AMQPScheme::AMQPS => "amqps",
    };
    format!(
        "{scheme}://{}@{}:{}/{}",
        uri.authority.userinfo.username,
        uri.authority.host,
        uri.authority.port,
        uri.vhost.replace('/', "%2f")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::test_support::validated;
    use crate::validate::assert_paths;

    fn load(yaml: &str) -> Result<RabbitmqSinkSettings, Vec<String>> {
        let (s, issues) = validated::<RabbitmqSinkSettings>(yaml).map_err(|e| vec![e])?;
        if issues.errors.is_empty() {
            Ok(s)
        } else {
            Err(issues.errors.iter().map(ToString::to_string).collect())
        }
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let r = load("{name: mq, url: \"amqp://u:p@127.0.0.1:5672/%2f\", exchange: calls, routing_key: \"calls.{kind}.{status}\"}").unwrap();
        assert_eq!(r.format, Format::Binary);
        assert!(r.required);
        assert_eq!(r.timeout_ms, 5000);
        assert_eq!(r.channels, 8);
        assert_eq!(r.max_in_flight_per_channel, 128);
        assert!(r.declare.is_none() && r.queues.is_empty());
    }

    #[test]
    fn every_problem_is_named_by_path_and_the_password_never_shows() {
        let errs = load(
            "{name: mq, url: \"http://u:hunter2@h\", exchange: \"bad name\", \
             routing_key: \"calls.{nope}\", declare: {exchange_type: topic}, channels: 0, \
             max_in_flight_per_channel: 5000, queues: [{name: q, binding_key: \"#\"}, {name: q, binding_key: \"#\"}], \
             management_url: \"ftp://u:hunter2@h:15672\"}",
        )
        .unwrap_err();
        assert_paths(
            &errs,
            &[
                "sinks[0].url",
                "sinks[0].management_url",
                "sinks[0].exchange",
                "sinks[0].routing_key",
                "sinks[0].channels",
                "sinks[0].max_in_flight_per_channel",
                "sinks[0].queues[1].name",
            ],
        );
        assert!(errs.iter().all(|e| !e.contains("hunter2")), "{errs:?}");

        let errs = load("{name: mq, url: \"amqp://h\", exchange: \"\", routing_key: q, declare: {}, queues: [{name: q, binding_key: q}]}").unwrap_err();
        assert!(
            errs.iter().any(|e| e.starts_with("sinks[0].declare:")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with("sinks[0].queues:")),
            "{errs:?}"
        );

        let errs =
            load("{name: mq, url: \"amqp://h\", exchange: x, routing_key: q, formt: binary}")
                .unwrap_err();
        assert!(errs[0].contains("formt"), "{errs:?}");
    }

    #[test]
    fn url_keeps_ip_hosts_and_redacts_the_password() {
        let uri = parse_url("amqp://guest:s3cret@127.0.0.1:5673/%2f").unwrap();
        assert_eq!(uri.authority.host, "127.0.0.1");
        assert_eq!(uri.authority.port, 5673);
        assert_eq!(uri.query.heartbeat, Some(DEFAULT_HEARTBEAT_SECS));
        let shown = redacted(&uri);
        assert_eq!(shown, "amqp://guest@127.0.0.1:5673/%2f");
        assert!(!shown.contains("s3cret"));
        assert_eq!(
            parse_url("amqps://u:p@[::1]/v").unwrap().authority.host,
            "::1"
        );
        assert_eq!(
            parse_url("amqp://u:p@rabbit.internal?heartbeat=30")
                .unwrap()
                .authority
                .host,
            "rabbit.internal"
        );
        assert_eq!(
            parse_url("amqp://rabbit?heartbeat=30")
                .unwrap()
                .query
                .heartbeat,
            Some(30)
        );
    }

    #[test]
    fn an_audit_queue_is_named_per_replica_and_other_queues_as_configured() {
        let r = load(
            "{name: mq, url: \"amqp://u:p@h/%2f\", exchange: calls, routing_key: \"k\", queues: [\
             {name: calls, binding_key: \"#\", replica: r1}, \
             {name: audit, binding_key: \"#\", max_length: 10, audit: true, replica: \" pod/7 \"}]}",
        );
        assert_paths(
            &r.err().unwrap_or_default(),
            &["sinks[0].queues[0].replica"],
        );
        let r = load(
            "{name: mq, url: \"amqp://u:p@h/%2f\", exchange: calls, routing_key: \"k\", queues: [\
             {name: calls, binding_key: \"#\"}, \
             {name: audit, binding_key: \"#\", max_length: 10, audit: true, replica: \" pod/7 \"}]}",
        )
        .unwrap();
        assert_eq!(r.queues[0].declared_name(), "calls");
        assert_eq!(r.queues[1].declared_name(), "audit.pod-7");
        let unnamed = QueueBinding {
            replica: None,
            ..r.queues[1].clone()
        };
        assert_eq!(
            unnamed.declared_name(),
            format!("audit.{}", local_replica_id())
        );
        assert!(!local_replica_id().is_empty());
    }

    #[test]
    fn a_replica_id_is_a_bounded_queue_name_part() {
        assert_eq!(replica_part("callbridge-7f9c-x2"), "callbridge-7f9c-x2");
        assert_eq!(replica_part(" a b/c:d.e_f "), "a-b-c:d.e_f");
        assert_eq!(replica_part(&"x".repeat(100)).len(), REPLICA_MAX);
        let long = "q".repeat(SHORTSTR_MAX - REPLICA_MAX);
        let yaml = |name: &str, replica: &str| {
            format!(
                "{{name: mq, url: \"amqp://u:p@h/%2f\", exchange: calls, routing_key: \"k\", \
                 queues: [{{name: {name}, binding_key: \"#\", max_length: 1, audit: true, replica: \"{replica}\"}}]}}"
            )
        };
        assert_paths(
            &load(&yaml(&long, "r")).err().unwrap_or_default(),
            &["sinks[0].queues[0].name"],
        );
        assert!(load(&yaml(&long[1..], "r")).is_ok());
        assert_paths(
            &load(&yaml("a", " ")).err().unwrap_or_default(),
            &["sinks[0].queues[0].replica"],
        );
    }
}
