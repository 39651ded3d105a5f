//! Routing templates shared by every sink: `calls.{kind}.{status}`, `{call_id}`, ...
//!
//! Parsed once at startup (and by `validate`), so an unknown variable is a configuration error
//! rather than a surprise at publish time. Rendering never fails: an absent value renders as
//! `unknown`, which keeps topics, routing keys and subjects well-formed.

use std::fmt;

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
