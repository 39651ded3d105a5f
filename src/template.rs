//! Routing templates shared by every sink: `calls.{kind}.{status}`, `{call_id}`, ...
//!
//! Parsed once at startup (and by `validate`), so an unknown variable is a configuration error
//! rather than a surprise at publish time. Rendering never fails: an absent value renders as
//! `unknown`, which keeps topics, routing keys and subjects well-formed.
//!
//! Values come from the sender. A sink renders them through its [`Escape`]: every byte its
//! destination names treat specially (separators, wildcards, whitespace, NUL, anything outside
//! the legal set) is escaped, so a value is always one word of the name and never adds words or
//! wildcards; a value or a name longer than the sink's caps is shortened to a prefix plus a
//! marker and a hash of the whole, so distinct values stay distinct.

use std::fmt;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::event::Event;

/// The variables a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    CallId,
    Kind,
    Status,
    AgentId,
    Direction,
    Type,
}

impl Var {
    /// Values the sender chooses freely (as opposed to `kind` and `type`, which take a few
    /// values fixed by this version): as part of a Kafka topic each new value is a new topic.
    pub fn is_free_form(self) -> bool {
        matches!(
            self,
            Var::CallId | Var::Status | Var::AgentId | Var::Direction
        )
    }

    pub fn name(self) -> &'static str {
        Var::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    pub const ALL: [(&'static str, Var); 6] = [
        ("call_id", Var::CallId),
        ("kind", Var::Kind),
        ("status", Var::Status),
        ("agent_id", Var::AgentId),
        ("direction", Var::Direction),
        ("type", Var::Type),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown template variable {{{0}}}; known: {{call_id}} {{kind}} {{status}} {{agent_id}} {{direction}} {{type}}")]
    UnknownVar(String),
    #[error("unclosed '{{' in template {0:?}")]
    Unclosed(String),
    #[error("template must not be empty")]
    Empty,
}

/// What a rendered value stands in for when the event has no such field.
pub const ABSENT: &str = "unknown";

/// How one kind of destination name takes substituted values.
#[derive(Debug, Clone, Copy)]
pub struct Escape {
    /// Bytes a value keeps; every other byte is written as `escape` and two hex digits.
    pub keep: fn(u8) -> bool,
    /// Must not be kept, so escaping is injective.
    pub escape: char,
    /// Precedes the hash of a shortened value or name; neither kept nor `escape`, so a
    /// shortened value never equals an escaped one.
    pub marker: char,
    /// Longest escaped value, in bytes.
    pub max_value: usize,
    /// Longest rendered name, in bytes.
    pub max_name: usize,
}

/// Hex digits of the hash that ends a shortened value or name.
const HASH_HEX: usize = 16;

fn keep_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn keep_kafka(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// One NATS subject token: `.`, `*`, `>`, whitespace and NUL (every byte but letters, digits,
/// `-`, `_`) as `%XX`. The subject stays well under the server's control line (4 KiB).
pub const NATS_SUBJECT: Escape = Escape {
    keep: keep_word,
    escape: '%',
    marker: '~',
    max_value: 128,
    max_name: 1024,
};

/// One AMQP routing-key word: `.`, `#`, `*`, whitespace and NUL as `%XX`; a routing key is a
/// short string (255 bytes).
pub const AMQP_ROUTING_KEY: Escape = Escape {
    keep: keep_word,
    escape: '%',
    marker: '~',
    max_value: 128,
    max_name: 255,
};

/// Part of a Kafka topic name (legal: `[a-zA-Z0-9._-]`, at most 249): every byte but letters,
/// digits and `-` as `_XX`, the marker `.`.
pub const KAFKA_TOPIC: Escape = Escape {
    keep: keep_kafka,
    escape: '_',
    marker: '.',
    max_value: 96,
    max_name: 249,
};

impl Escape {
    /// Writes `value` escaped (an empty value as [`ABSENT`]), shortened to `max_value`.
    pub fn write_value(&self, value: &str, out: &mut String) {
        if value.is_empty() {
            out.push_str(ABSENT);
            return;
        }
        let start = out.len();
        for b in value.bytes() {
            if (self.keep)(b) {
                out.push(b as char);
            } else {
                let _ = write!(out, "{}{b:02X}", self.escape);
            }
        }
        if out.len() - start > self.max_value {
            out.truncate(start + self.max_value - HASH_HEX - 1);
            self.push_hash(value, out);
        }
    }

    /// Shortens a whole rendered name beyond `max_name` the same way.
    pub fn cap_name(&self, mut name: String) -> String {
        if name.len() <= self.max_name {
            return name;
        }
        let full = name.clone();
        let mut cut = self.max_name - HASH_HEX - 1;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
        self.push_hash(&full, &mut name);
        name
    }

    fn push_hash(&self, of: &str, out: &mut String) {
        out.push(self.marker);
        let digest = Sha256::digest(of.as_bytes());
        out.push_str(&hex::encode(&digest[..HASH_HEX / 2]));
    }
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        if source.is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(source.to_string()))?;
            let name = &after[..close];
            let var = Var::ALL
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| TemplateError::UnknownVar(name.to_string()))?;
            parts.push(Part::Var(var));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// True when the template has no variables: the same destination for every event.
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Literal text, in order (a sink checks it against its name rules).
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Lit(s) => Some(s.as_str()),
            Part::Var(_) => None,
        })
    }

    /// The variables used, in order.
    pub fn vars(&self) -> impl Iterator<Item = Var> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(*v),
            Part::Lit(_) => None,
        })
    }

    /// The destination name for `event`: every value escaped and capped by `escape`, then the
    /// whole name capped.
    pub fn render_escaped(&self, event: &Event, escape: &Escape) -> String {
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => escape.write_value(value_of(*v, event).unwrap_or(ABSENT), &mut out),
            }
        }
        escape.cap_name(out)
    }

    /// The values as they are: for record keys and file names, not for destination names.
    pub fn render(&self, event: &Event) -> String {
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => out.push_str(value_of(*v, event).unwrap_or(ABSENT)),
            }
        }
        out
    }
}

fn value_of(var: Var, event: &Event) -> Option<&str> {
    let d = &event.data;
    match var {
        Var::CallId => Some(&d.call_id),
        Var::Kind => Some(d.kind.as_str()),
        Var::Status => d.status.as_deref(),
        Var::AgentId => d.agent_id.as_deref(),
        Var::Direction => d.direction.as_deref(),
        Var::Type => Some(&event.ty),
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_support::sample_event;

    #[test]
    fn renders_every_variable() {
        let ev = sample_event();
        let t = Template::parse("{type}/{kind}/{status}/{call_id}/{agent_id}/{direction}").unwrap();
        assert_eq!(
            t.render(&ev),
            format!(
                "{}/status/completed/test-call-123/830f767a-397e-4b39-82ff-235cd344e2f9/outbound",
                ev.ty
            )
        );
        assert!(!t.is_static());
        assert!(Template::parse("calls").unwrap().is_static());
    }

    #[test]
    fn absent_values_render_as_unknown() {
        let mut ev = sample_event();
        ev.data.direction = None;
        assert_eq!(
            Template::parse("d.{direction}").unwrap().render(&ev),
            "d.unknown"
        );
    }

    #[test]
    fn escaped_values_never_add_words_and_stay_distinct() {
        let mut ev = sample_event();
        let t = Template::parse("calls.{kind}.{status}").unwrap();
        ev.data.status = Some("a.b#*>".into());
        assert_eq!(
            t.render_escaped(&ev, &AMQP_ROUTING_KEY),
            "calls.status.a%2Eb%23%2A%3E"
        );
        ev.data.status = Some("x y\0".into());
        assert_eq!(
            t.render_escaped(&ev, &NATS_SUBJECT),
            "calls.status.x%20y%00"
        );
        assert_eq!(t.render_escaped(&ev, &KAFKA_TOPIC), "calls.status.x_20y_00");
        ev.data.status = Some("a_b".into());
        assert_eq!(t.render_escaped(&ev, &KAFKA_TOPIC), "calls.status.a_5Fb");
        ev.data.status = Some(String::new());
        assert_eq!(t.render_escaped(&ev, &KAFKA_TOPIC), "calls.status.unknown");
    }

    #[test]
    fn long_values_and_names_are_shortened_with_a_hash() {
        let mut ev = sample_event();
        let t = Template::parse("calls.{status}.x").unwrap();
        for escape in [NATS_SUBJECT, AMQP_ROUTING_KEY, KAFKA_TOPIC] {
            ev.data.status = Some("s".repeat(5000));
            let a = t.render_escaped(&ev, &escape);
            assert_eq!(
                a.len(),
                "calls.".len() + escape.max_value + ".x".len(),
                "{a}"
            );
            assert!(a.ends_with(".x"));
            assert_eq!(
                a.matches('.').count(),
                2 + usize::from(escape.marker == '.')
            );
            ev.data.status = Some(format!("{}t", "s".repeat(4999)));
            let b = t.render_escaped(&ev, &escape);
            assert_ne!(a, b, "distinct values stay distinct");
        }
        let many = Template::parse("{status}.{status}.{status}.{status}").unwrap();
        ev.data.status = Some("s".repeat(500));
        let name = many.render_escaped(&ev, &KAFKA_TOPIC);
        assert_eq!(name.len(), KAFKA_TOPIC.max_name);
        assert!(name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
    }

    #[test]
    fn rejects_unknown_and_unclosed() {
        assert_eq!(
            Template::parse("calls.{callid}"),
            Err(TemplateError::UnknownVar("callid".into()))
        );
        assert!(matches!(
            Template::parse("calls.{kind"),
            Err(TemplateError::Unclosed(_))
        ));
        assert_eq!(Template::parse(""), Err(TemplateError::Empty));
    }
}
