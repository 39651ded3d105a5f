//! Shape errors (unknown keys, wrong types, missing fields), all of them at once, with the sink's
//! name beside its index and the nearest known key for a typo.
//!
//! serde stops at the first error of a document. A user fixing a config one error per run is
//! slow, so when the whole file does not deserialise, each top-level section and each sink is
//! deserialised on its own and every failure is kept: one error per section or sink (serde still
//! stops inside one), which covers the common case of several independent mistakes.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{IdempotencySettings, SinkSettings};
use crate::event::EventSettings;
use crate::ingest::auth::settings::AuthSettings;
use crate::ingest::settings::ServerSettings;
use crate::telemetry::settings::{LogSettings, TraceSettings};
use crate::validate::ConfigIssue;

/// Top-level sections, and whether the file must have them.
const SECTIONS: [(&str, bool); 10] = [
    ("server", false),
    ("auth", true),
    ("admin", false),
    ("event", false),
    ("idempotency", false),
    ("log", false),
    ("traces", false),
    ("spool", false),
    ("reconcile", false),
    ("sinks", true),
];

/// Every shape error in `raw`, each named by its field path; `first` (the error of the whole
/// document) is the fallback should the sections alone all deserialise.
pub(super) fn errors(raw: &Value, first: ConfigIssue) -> Vec<ConfigIssue> {
    let mut out = Vec::new();
    let Some(root) = raw.as_object() else {
        return vec![first];
    };
    let known: Vec<&str> = SECTIONS.iter().map(|(k, _)| *k).collect();
    for key in root.keys() {
        if !known.contains(&key.as_str()) {
            let mut message = format!("unknown section `{key}`");
            if let Some(near) = nearest(key, &known) {
                message.push_str(&format!(" (did you mean `{near}`?)"));
            }
            out.push(ConfigIssue {
                path: "(root)".into(),
                message,
            });
        }
    }
    for (key, required) in SECTIONS {
        match root.get(key) {
            None if required => out.push(ConfigIssue {
                path: key.into(),
                message: "missing (this section is required)".into(),
            }),
            None => {}
            Some(value) => match key {
                "server" => check::<ServerSettings>(key, value, &mut out),
                "auth" => check::<AuthSettings>(key, value, &mut out),
                "admin" => check::<crate::admin::AdminSettings>(key, value, &mut out),
                "event" => check::<EventSettings>(key, value, &mut out),
                "idempotency" => check::<IdempotencySettings>(key, value, &mut out),
                "log" => check::<LogSettings>(key, value, &mut out),
                "traces" => check::<TraceSettings>(key, value, &mut out),
                "spool" => check::<Option<super::SpoolSettings>>(key, value, &mut out),
                "reconcile" => {
                    check::<Option<crate::reconcile::ReconcileSettings>>(key, value, &mut out)
                }
                _ => match value.as_array() {
                    Some(sinks) => {
                        for (i, sink) in sinks.iter().enumerate() {
                            check::<SinkSettings>(&format!("sinks[{i}]"), sink, &mut out);
                        }
                    }
                    None => check::<Vec<SinkSettings>>(key, value, &mut out),
                },
            },
        }
    }
    if out.is_empty() {
        out.push(first);
    }
    out
}

/// `raw` with what does not deserialise taken out — unknown top-level sections, optional
/// sections that fail on their own, sinks that fail on their own — so that the meaning of the rest
/// can be checked in the same run (a typo'd `logs:` must not hide a bad routing template). Also
/// the original index of each sink kept. `None` when a required section fails: nothing
/// meaningful is left to check.
pub(super) fn repaired(raw: &Value) -> Option<(Value, Vec<usize>)> {
    let root = raw.as_object()?;
    let mut fixed = serde_json::Map::new();
    let mut kept = Vec::new();
    for (key, value) in root {
        let Some(&(_, required)) = SECTIONS.iter().find(|(k, _)| k == key) else {
            continue;
        };
        let mut probe = Vec::new();
        if key == "sinks" {
            let sinks = value.as_array()?;
            let mut good = Vec::new();
            for (i, sink) in sinks.iter().enumerate() {
                check::<SinkSettings>("", sink, &mut probe);
                if probe.is_empty() {
                    good.push(sink.clone());
                    kept.push(i);
                }
                probe.clear();
            }
            fixed.insert(key.clone(), Value::Array(good));
            continue;
        }
        match key.as_str() {
            "server" => check::<ServerSettings>(key, value, &mut probe),
            "auth" => check::<AuthSettings>(key, value, &mut probe),
            "event" => check::<EventSettings>(key, value, &mut probe),
            "idempotency" => check::<IdempotencySettings>(key, value, &mut probe),
            "log" => check::<LogSettings>(key, value, &mut probe),
            "traces" => check::<TraceSettings>(key, value, &mut probe),
            "spool" => check::<Option<super::SpoolSettings>>(key, value, &mut probe),
            _ => check::<Option<crate::reconcile::ReconcileSettings>>(key, value, &mut probe),
        }
        match (probe.is_empty(), required) {
            (true, _) => {
                fixed.insert(key.clone(), value.clone());
            }
            (false, true) => return None,
            (false, false) => {}
        }
    }
    Some((Value::Object(fixed), kept))
}

/// Deserialises one section and records its first error under `prefix`.
fn check<T: DeserializeOwned>(prefix: &str, value: &Value, out: &mut Vec<ConfigIssue>) {
    if let Err(e) = serde_path_to_error::deserialize::<_, T>(value.clone()) {
        let inner = e.path().to_string();
        let path = if inner == "." {
            prefix.to_string()
        } else {
            format!("{prefix}.{inner}")
        };
        out.push(issue(path, e.into_inner().to_string()));
    }
}

/// An issue from a serde message, with a suggestion when the message names an unknown field or
/// variant and lists the expected ones.
pub(super) fn issue(mut path: String, message: String) -> ConfigIssue {
    // Inside a tagged enum (a sink), serde reports an unknown field at the sink's own path.
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field)
    {
        if !path.ends_with(field) {
            path = format!("{path}.{field}");
        }
    }
    let message = match suggestion(&message) {
        Some(near) => format!("{message} (did you mean `{near}`?)"),
        None => message,
    };
    ConfigIssue { path, message }
}

/// serde says "unknown field `listn`, expected one of `listen`, `path`" (or "expected `a` or
/// `b`"); this picks the expected name nearest to the unknown one, if any is near.
fn suggestion(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (unknown, expected) = rest.split_once('`')?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    nearest(unknown, &candidates).map(str::to_string)
}

/// The candidate most similar to `word`, when it is similar enough to be a typo (Jaro-Winkler
/// ≥ 0.8, as clap uses for its own suggestions) or differs only in case.
fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| {
            let score = if c.eq_ignore_ascii_case(word) {
                1.0
            } else {
                strsim::jaro_winkler(&word.to_ascii_lowercase(), c)
            };
            (score, *c)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_nearest_known_name() {
        assert_eq!(
            suggestion("unknown field `listn`, expected one of `listen`, `path`, `deadline_ms`"),
            Some("listen".into())
        );
        assert_eq!(
            suggestion("unknown variant `rabitmq`, expected one of `file`, `null`, `nats`, `rabbitmq`, `kafka`"),
            Some("rabbitmq".into())
        );
        assert_eq!(
            suggestion("unknown field `Topic`, expected `topic` or `key`"),
            Some("topic".into())
        );
        assert_eq!(
            suggestion("unknown field `zzz`, expected one of `listen`, `path`"),
            None
        );
        assert_eq!(suggestion("invalid type: string, expected u64"), None);
    }

    #[test]
    fn every_section_and_sink_reports_its_own_error() {
        let raw = serde_json::json!({
            "server": {"listn": "x"},
            "log": {"format": "jsn"},
            "sink": [],
            "sinks": [
                {"type": "file", "name": "a", "path": "x"},
                {"type": "kafka", "name": "bus", "brokers": "k:9092", "topik": "t"},
                {"type": "rabitmq", "name": "amqp"}
            ]
        });
        let first = ConfigIssue {
            path: "x".into(),
            message: "y".into(),
        };
        let got: Vec<String> = errors(&raw, first).iter().map(|i| i.to_string()).collect();
        let want = [
            "(root): unknown section `sink` (did you mean `sinks`?)",
            "server.listn: unknown field `listn`",
            "log.format: unknown variant `jsn`",
            "auth: missing",
            "sinks[1].topik: unknown field `topik`",
            "sinks[2].type: unknown variant `rabitmq`",
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for w in want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w:?} in {got:#?}"
            );
        }
        assert!(got.iter().any(|g| g.contains("did you mean `listen`")));
        assert!(got.iter().any(|g| g.contains("did you mean `json`")));
        assert!(got.iter().any(|g| g.contains("did you mean `topic`")));
        assert!(got.iter().any(|g| g.contains("did you mean `rabbitmq`")));
    }

    #[test]
    fn without_a_section_error_the_whole_documents_error_is_kept() {
        let raw = serde_json::json!({"auth": {"mode": "none"}, "sinks": []});
        let first = ConfigIssue {
            path: "p".into(),
            message: "m".into(),
        };
        assert_eq!(errors(&raw, first.clone()), vec![first]);
        let not_a_map = serde_json::json!([1]);
        let first = ConfigIssue {
            path: "(root)".into(),
            message: "expected a map".into(),
        };
        assert_eq!(errors(&not_a_map, first.clone()), vec![first]);
    }
}
