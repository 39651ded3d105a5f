//! The `sinks` list: which kinds exist, and the checks every entry gets whatever its kind (name,
//! timeout, events filter). Each kind's own settings and checks live with the sink, behind
//! [`SinkSpec`], so adding a kind means one variant here and nothing else in `config`.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;

use crate::event::EventFilter;
use crate::sinks::file::FileSinkSettings;
use crate::sinks::kafka::KafkaSinkSettings;
use crate::sinks::nats::NatsSinkSettings;
use crate::sinks::null::NullSinkSettings;
use crate::sinks::rabbitmq::RabbitmqSinkSettings;
use crate::sinks::SinkSpec;
use crate::validate::Issues;

/// One configured sink. The `type` key selects the kind.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkSettings {
    File(FileSinkSettings),
    Null(NullSinkSettings),
    Nats(Box<NatsSinkSettings>),
    Rabbitmq(RabbitmqSinkSettings),
    Kafka(KafkaSinkSettings),
}

impl SinkSettings {
    /// The entry as its kind's settings: common fields, checks, and how to build the sink.
    pub fn spec(&self) -> &dyn SinkSpec {
        match self {
            SinkSettings::File(s) => s,
            SinkSettings::Null(s) => s,
            SinkSettings::Nats(s) => s.as_ref(),
            SinkSettings::Rabbitmq(s) => s,
            SinkSettings::Kafka(s) => s,
        }
    }

    /// Where the audit reads this sink's copies back.
    pub fn audit_source(&self) -> crate::delivery::audit::Source<'_> {
        use crate::delivery::audit::Source;
        match self {
            SinkSettings::Kafka(s) => Source::Kafka(s),
            SinkSettings::Nats(s) => Source::Nats(s.as_ref()),
            SinkSettings::Rabbitmq(s) => Source::Rabbitmq(s),
            SinkSettings::File(_) => Source::File,
            SinkSettings::Null(_) => Source::None,
        }
    }
}

/// Checks every entry: the fields all kinds share, then the kind's own. `deadline_ms` is the
/// server's answer deadline, which a sink's timeout should not exceed.
pub(super) fn validate(sinks: &[SinkSettings], deadline_ms: u64, issues: &mut Issues) {
    if sinks.is_empty() {
        issues.error("sinks", "at least one sink is required");
    } else if sinks.len() > crate::ledger::MAX_SINKS {
        issues.error(
            "sinks",
            format!(
                "at most {} sinks, got {}",
                crate::ledger::MAX_SINKS,
                sinks.len()
            ),
        );
    }
    let mut names = HashSet::new();
    for (i, sink) in sinks.iter().enumerate() {
        let path = format!("sinks[{i}]");
        let c = sink.spec().common();
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
        } else if c.timeout_ms > deadline_ms {
            issues.warn(
                format!("{path}.timeout_ms"),
                format!(
                    "{} ms exceeds server.deadline_ms ({deadline_ms} ms); the deadline wins",
                    c.timeout_ms
                ),
            );
        }
        if let Some(events) = c.events {
            for (j, f) in events.iter().enumerate() {
                if let Err(e) = EventFilter::parse(f) {
                    issues.error(format!("{path}.events[{j}]"), e);
                }
            }
        }
        sink.spec().validate(&path, issues);
    }
    if !sinks.iter().any(|s| s.spec().common().required) && !sinks.is_empty() {
        issues.warn(
            "sinks",
            "no sink is required: every webhook will be answered 200 even if nothing stored it",
        );
    }
}

/// YAML reads an unquoted `type: null` as null, not as the string "null": accept it as the
/// `null` sink kind rather than fail with a puzzling "invalid type: null".
pub(super) fn unquoted_null_sink_type(raw: &mut Value) {
    if let Some(Value::Array(sinks)) = raw.get_mut("sinks") {
        for sink in sinks {
            if let Some(t @ Value::Null) = sink.get_mut("type") {
                *t = Value::String("null".into());
            }
        }
    }
}

/// Each kind's settings through the whole loading path (the `config` crate, `${VAR}`,
/// overrides), where a kind depends on it.
#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::config::{Env, Settings};
    use crate::sinks::rabbitmq::ExchangeType;

    fn first_sink(sink_yaml: &str, env: &Env) -> SinkSettings {
        let yaml = format!("auth: {{mode: none}}\nsinks:\n  - {sink_yaml}\n");
        match Settings::from_yaml(&yaml, "test", env) {
            Ok((mut s, _)) => s.sinks.remove(0),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_documented_rabbitmq_example_is_valid() {
        let doc = include_str!("../../docs/rabbitmq.md");
        let yaml = doc
            .split("```yaml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/rabbitmq.md has a yaml example");
        let env = Env::vars([("RABBITMQ_PASSWORD", "from-env")]);
        let (s, _) = Settings::from_yaml(&format!("auth: {{mode: none}}\n{yaml}"), "docs", &env)
            .unwrap_or_else(|e| panic!("{e}"));
        let SinkSettings::Rabbitmq(r) = &s.sinks[0] else {
            panic!("not a rabbitmq sink")
        };
        assert_eq!(r.queues.len(), 3);
        assert_eq!(
            r.queues[0].binding_key, "calls.#",
            "the example binds a catch-all first, so every event kind is routable"
        );
        assert!(r.queues[2].durable, "durable by default");
        assert_eq!(
            r.declare.as_ref().map(|d| d.exchange_type),
            Some(ExchangeType::Topic)
        );
        assert!(r.url.expose_secret().contains(":from-env@"));
    }

    /// The `config` crate treats dots in keys as paths; librdkafka's names are dotted.
    #[test]
    fn dotted_librdkafka_keys_arrive_intact() {
        let env = Env::vars([("CB_KAFKA_TEST_SASL_PASSWORD", "s3cret-value")]);
        let sink = first_sink(
            "{name: k, type: kafka, brokers: [\"a:9092\"], topic: calls, librdkafka: \
             {\"linger.ms\": \"1\", \"sasl.username\": \"x\", \"sasl.password\": \"${CB_KAFKA_TEST_SASL_PASSWORD}\", \
             \"security.protocol\": SASL_PLAINTEXT, \"sasl.mechanisms\": PLAIN, \"batch.num.messages\": 7}}",
            &env,
        );
        let SinkSettings::Kafka(k) = &sink else {
            panic!("not kafka: {sink:?}")
        };
        let keys: Vec<&str> = k.librdkafka.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "batch.num.messages",
                "linger.ms",
                "sasl.mechanisms",
                "sasl.password",
                "sasl.username",
                "security.protocol"
            ]
        );
        let c = k.client_config();
        assert_eq!(c.get("linger.ms"), Some("1"));
        assert_eq!(c.get("sasl.username"), Some("x"));
        assert_eq!(c.get("sasl.password"), Some("s3cret-value"));
        assert_eq!(c.get("batch.num.messages"), Some("7"));
        let debug = format!("{sink:?}");
        assert!(!debug.contains("s3cret-value"), "{debug}");
        assert!(debug.contains("sasl.password"), "{debug}");

        // The nested form is the same thing.
        let sink = first_sink(
            "{name: k, type: kafka, brokers: \"a:9092\", topic: calls, librdkafka: {linger: {ms: 1}}}",
            &env,
        );
        let SinkSettings::Kafka(k) = &sink else {
            panic!("not kafka: {sink:?}")
        };
        assert_eq!(k.client_config().get("linger.ms"), Some("1"));
    }
}
