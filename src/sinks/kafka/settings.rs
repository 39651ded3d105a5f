//! The `kafka` sink's settings: brokers, templates, the CloudEvents mode and raw librdkafka
//! properties (flattened, treated as secrets), the librdkafka configuration derived from them,
//! and their checks.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::KafkaSink;
use crate::event::binding::Format;
use crate::sinks::{BuildError, Sink, SinkSpec};
use crate::template::Template;
use crate::validate::{check_template, Issues};

sink_settings! {
    "kafka",
    /// Settings of one `type: kafka` sink. `timeout_ms` bounds the wait for the delivery report;
    /// `message.timeout.ms` is derived from it so librdkafka reports the real failure first.
    pub struct KafkaSinkSettings {
        /// Bootstrap brokers, `host:port` — a comma-separated string or a list (the string form can be
        /// set from one environment variable).
        #[serde(deserialize_with = "de_brokers")]
        pub brokers: Vec<String>,
        /// Topic template, e.g. `calls.{kind}` to split status and analysis events.
        pub topic: String,
        /// Record key template. The default keeps every event of one call in one partition, so
        /// consumers see a call's statuses in order.
        #[serde(default = "default_key")]
        pub key: String,
        /// CloudEvents mode of the record: `binary` (value = `data`, attributes as `ce_*` headers,
        /// so consumers route on headers without parsing the value) or `structured`.
        #[serde(default)]
        pub format: Format,
        /// Raw librdkafka properties (SASL, TLS, compression, tuning), applied over our defaults.
        /// Values may come from `${ENV}` and are treated as secrets (never logged or printed).
        /// Dotted keys may be written flat (`"sasl.username": x`) or nested (`sasl: {username: x}`).
        #[serde(default, deserialize_with = "de_librdkafka")]
        #[schemars(with = "std::collections::BTreeMap<String, String>")]
        pub librdkafka: BTreeMap<String, SecretString>,
    }
}

fn default_key() -> String {
    "{call_id}".into()
}

fn de_brokers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(str::to_string).collect::<Vec<_>>(),
        OneOrMany::Many(v) => v,
    };
    Ok(list
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Accepts scalar values (YAML may type `linger.ms: 5` as a number) and nested maps, which are
/// flattened back into librdkafka's dotted names.
fn de_librdkafka<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, SecretString>, D::Error> {
    let raw = serde_json::Map::<String, Value>::deserialize(d)?;
    let mut out = BTreeMap::new();
    flatten_props("", &Value::Object(raw), &mut out).map_err(serde::de::Error::custom)?;
    Ok(out)
}

fn flatten_props(
    prefix: &str,
    value: &Value,
    out: &mut BTreeMap<String, SecretString>,
) -> Result<(), String> {
    let scalar = match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_props(&key, v, out)?;
            }
            return Ok(());
        }
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null | Value::Array(_) => {
            return Err(format!(
                "librdkafka.{prefix}: expected a string, number or boolean"
            ))
        }
    };
    if out.insert(prefix.to_string(), scalar.into()).is_some() {
        return Err(format!("librdkafka.{prefix}: set twice"));
    }
    Ok(())
}

/// The topic template's literal text may hold only what a topic name may: `[a-zA-Z0-9._-]`
/// (substituted values are escaped into that set).
pub(super) fn check_topic_literals(topic: &Template) -> Result<(), String> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    match topic.literals().flat_map(str::chars).find(|c| !legal(*c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "a Kafka topic name may contain only [a-zA-Z0-9._-], found {c:?}"
        )),
    }
}

/// Properties we derive from other settings; setting them in `librdkafka` would be ambiguous.
const DERIVED: [&str; 3] = [
    "bootstrap.servers",
    "metadata.broker.list",
    "message.timeout.ms",
];

impl KafkaSinkSettings {
    /// Margin between librdkafka's own give-up time and ours, so its verdict arrives first.
    /// librdkafka scans for timed-out records about once a second, hence the large margin.
    pub(super) fn message_timeout_ms(&self) -> u64 {
        let margin = (self.timeout_ms * 2 / 5).clamp(1, 1200);
        self.timeout_ms.saturating_sub(margin).max(1)
    }

    /// The full librdkafka configuration: our defaults, then the user's properties, then the
    /// derived ones.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in [
            // The guarantees: every in-sync replica, exactly one copy per producer session, in order.
            ("acks", "all"),
            ("enable.idempotence", "true"),
            // Small batches: latency matters more than throughput for a webhook answer.
            ("linger.ms", "2"),
            // Bounded memory: beyond this, publishes wait for room (back-pressure).
            ("queue.buffering.max.messages", "100000"),
            ("queue.buffering.max.kbytes", "65536"),
            // Fail fast on a dead connection and reconnect quickly.
            ("socket.connection.setup.timeout.ms", "5000"),
            ("reconnect.backoff.ms", "50"),
            ("reconnect.backoff.max.ms", "1000"),
            ("client.id", "callbridge"),
        ] {
            c.set(k, v);
        }
        for (k, v) in &self.librdkafka {
            c.set(k, v.expose_secret());
        }
        c.set("bootstrap.servers", self.brokers.join(","));
        c.set("message.timeout.ms", self.message_timeout_ms().to_string());
        c.set_log_level(RDKafkaLogLevel::Warning);
        c
    }
}

#[async_trait]
impl SinkSpec for KafkaSinkSettings {
    /// Checks that the types alone cannot express. Never connects.
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.brokers.is_empty() {
            issues.error(
                format!("{path}.brokers"),
                "at least one host:port is required",
            );
        }
        for (i, b) in self.brokers.iter().enumerate() {
            if b.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                issues.error(
                    format!("{path}.brokers[{i}]"),
                    format!("expected host:port, got {b:?}"),
                );
            }
        }
        check_template(&self.topic, &format!("{path}.topic"), issues);
        if let Ok(t) = Template::parse(&self.topic) {
            if let Err(m) = check_topic_literals(&t) {
                issues.error(format!("{path}.topic"), m);
            }
            for var in t.vars().filter(|v| v.is_free_form()) {
                issues.warn(
                    format!("{path}.topic"),
                    format!(
                        "{{{}}} is chosen by the sender: every new value names a new topic \
                         (a 503 until it exists, or unbounded topics with auto-creation); \
                         route on it with a header or the key instead",
                        var.name()
                    ),
                );
            }
        }
        check_template(&self.key, &format!("{path}.key"), issues);
        for (k, v) in &self.librdkafka {
            let field = format!("{path}.librdkafka.{k}");
            let v = v.expose_secret();
            if DERIVED.contains(&k.as_str()) {
                issues.error(
                    field,
                    "set by callbridge (use brokers / timeout_ms instead)",
                );
            } else if k == "acks" || k == "request.required.acks" {
                if !matches!(v, "all" | "-1") {
                    issues.error(
                        field,
                        "a 200 promises the event is on every in-sync replica: only all/-1",
                    );
                }
            } else if k == "enable.idempotence" && v == "false" {
                issues.warn(
                    field,
                    "without idempotence a broker retry may duplicate or reorder a call's events",
                );
            } else if k == "transactional.id" {
                issues.error(field, "transactions are not supported by this sink");
            } else if k == "delivery.timeout.ms" {
                issues.error(
                    field,
                    "alias of message.timeout.ms, derived from timeout_ms",
                );
            }
        }
        // librdkafka checks every property name and value locally.
        if let Err(e) = self.client_config().create_native_config() {
            issues.error(format!("{path}.librdkafka"), redact_config_error(&e));
        }
    }

    fn max_message_bytes(&self) -> Option<usize> {
        Some(
            self.librdkafka
                .get("message.max.bytes")
                .and_then(|v| v.expose_secret().parse().ok())
                .unwrap_or(super::DEFAULT_MESSAGE_MAX_BYTES),
        )
    }

    async fn build(&self) -> Result<Arc<dyn Sink>, BuildError> {
        // Creating the producer blocks: it runs on the blocking pool, not a runtime worker.
        let settings = self.clone();
        let sink = tokio::task::spawn_blocking(move || KafkaSink::start(&settings))
            .await
            .map_err(|e| BuildError::Broker {
                context: "kafka producer creation did not finish".into(),
                source: Some(Box::new(e)),
            })??;
        Ok(Arc::new(sink))
    }
}

/// librdkafka's config errors quote the value; it may be a secret.
pub(super) fn redact_config_error(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, value) => {
            let desc = if value.is_empty() {
                desc.clone()
            } else {
                desc.replace(value.as_str(), "[REDACTED]")
            };
            format!("property {key:?} rejected by librdkafka: {desc}")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::test_support::validated;
    use crate::validate::assert_paths;

    fn load(yaml: &str) -> Result<(KafkaSinkSettings, Issues), String> {
        validated::<KafkaSinkSettings>(yaml)
    }

    fn errors(yaml: &str) -> Vec<String> {
        match load(yaml) {
            Ok((_, issues)) => issues.errors.iter().map(ToString::to_string).collect(),
            Err(e) => vec![e],
        }
    }

    #[test]
    fn defaults() {
        let (k, _) = load("{name: k, brokers: \"a:9092, b:9092\", topic: calls}").expect("loads");
        assert_eq!(k.brokers, ["a:9092", "b:9092"]);
        assert_eq!(k.key, "{call_id}");
        assert_eq!(k.format, Format::Binary);
        assert!(k.required);
        assert_eq!(k.timeout_ms, 5000);
        let c = k.client_config();
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(c.get("message.timeout.ms"), Some("3800"));
    }

    #[test]
    fn validation_names_fields() {
        let errs = errors(
            "{name: k, brokers: \"nohost\", topic: \"calls.{nope}\", key: \"{callid}\", \
             librdkafka: {acks: \"1\", \"bootstrap.servers\": x, \"no.such.property\": y}}",
        );
        assert_paths(
            &errs,
            &[
                "sinks[0].brokers[0]",
                "sinks[0].topic",
                "sinks[0].key",
                "sinks[0].librdkafka.acks",
                "sinks[0].librdkafka.bootstrap.servers",
            ],
        );
        let errs =
            errors("{name: k, brokers: \"a:1\", topic: t, librdkafka: {\"no.such.property\": y}}");
        assert!(
            errs.iter()
                .any(|e| e.starts_with("sinks[0].librdkafka:") && e.contains("no.such.property")),
            "{errs:?}"
        );
        // Built with OpenSSL and zstd: TLS and zstd compression are accepted.
        let (_, issues) = load(
            "{name: k, brokers: \"a:1\", topic: t, librdkafka: \
             {\"security.protocol\": SASL_SSL, \"sasl.mechanisms\": SCRAM-SHA-512, \
             \"compression.type\": zstd}}",
        )
        .expect("parses");
        assert!(
            issues.errors.is_empty(),
            "TLS, SCRAM and zstd are available: {:?}",
            issues.errors
        );
        assert!(issues.warnings.is_empty(), "{:?}", issues.warnings);
        let errs = errors("{name: k, brokers: \"a:1\", topic: t, format: avro}");
        assert!(errs.iter().any(|e| e.contains("avro")), "{errs:?}");
    }

    #[test]
    fn topic_names_hold_only_legal_characters_and_sender_values_warn() {
        for bad in [
            "calls topic",
            "calls/x.{kind}",
            "calls\\0.{kind}",
            "calls:{kind}",
        ] {
            let errs = errors(&format!("{{name: k, brokers: \"a:1\", topic: \"{bad}\"}}"));
            assert_paths(&errs, &["sinks[0].topic"]);
        }
        let (_, issues) = load("{name: k, brokers: \"a:1\", topic: \"calls.{kind}\"}").unwrap();
        assert!(issues.warnings.is_empty(), "{:?}", issues.warnings);
        for var in ["status", "call_id", "agent_id", "direction"] {
            let yaml = format!("{{name: k, brokers: \"a:1\", topic: \"calls.{{{var}}}\"}}");
            let (_, issues) = load(&yaml).unwrap();
            assert!(issues.errors.is_empty(), "{:?}", issues.errors);
            assert!(
                issues.warnings.iter().any(
                    |w| w.path == "sinks[0].topic" && w.message.contains(&format!("{{{var}}}"))
                ),
                "{var}: {:?}",
                issues.warnings
            );
        }
    }
}
