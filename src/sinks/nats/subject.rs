//! Subjects: the `subject` template rendered with the shared engine, every substituted value
//! sanitised into exactly one subject token, and the subject-filter arithmetic the stream
//! checks need.

use crate::event::Event;
use crate::template::{Template, NATS_SUBJECT};

/// The `subject` template split into literal text and single-variable templates, so that each
/// value rendered by the shared engine can be sanitised into one token on its own.
#[derive(Debug, Clone)]
pub struct SubjectTemplate {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Lit(String),
    Var(Template),
}

/// Stands in for a variable while checking a template's literal text.
const VAR_MARK: char = '\u{0}';

impl SubjectTemplate {
    pub fn parse(source: &str) -> Result<SubjectTemplate, String> {
        Template::parse(source).map_err(|e| e.to_string())?;
        let mut segments = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                segments.push(Segment::Lit(rest[..open].to_string()));
            }
            let after = &rest[open..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {source:?}"))?;
            let var = Template::parse(&after[..=close]).map_err(|e| e.to_string())?;
            segments.push(Segment::Var(var));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Lit(rest.to_string()));
        }
        let t = SubjectTemplate { segments };
        t.check_literals()?;
        Ok(t)
    }

    /// Literal text must form a valid publish subject around the (always valid) values.
    fn check_literals(&self) -> Result<(), String> {
        let mut marked = String::new();
        for s in &self.segments {
            match s {
                Segment::Lit(l) => marked.push_str(l),
                Segment::Var(_) => marked.push(VAR_MARK),
            }
        }
        for token in marked.split('.') {
            if token.is_empty() {
                return Err("empty subject token (a leading, trailing or doubled '.')".to_string());
            }
            if let Some(c) = token
                .chars()
                .find(|&c| c != VAR_MARK && (c.is_whitespace() || c.is_control()))
            {
                return Err(format!("subjects cannot contain {c:?}"));
            }
            if token.contains(['*', '>']) {
                return Err("a publish subject cannot contain the wildcards '*' or '>'".into());
            }
        }
        Ok(())
    }

    /// The subject for one event; every substituted value is one sanitised token of at most
    /// 128 bytes, the subject at most 1 KiB (see [`NATS_SUBJECT`]).
    pub fn render(&self, event: &Event) -> String {
        let mut out = String::with_capacity(64);
        for s in &self.segments {
            match s {
                Segment::Lit(l) => out.push_str(l),
                Segment::Var(t) => sanitize_token(&t.render(event), &mut out),
            }
        }
        NATS_SUBJECT.cap_name(out)
    }

    /// The set of subjects this template can render to, as a filter: a token holding a variable
    /// becomes `*` (values never contain '.', so they stay inside their token).
    pub fn shape(&self) -> String {
        let mut marked = String::new();
        for s in &self.segments {
            match s {
                Segment::Lit(l) => marked.push_str(l),
                Segment::Var(_) => marked.push(VAR_MARK),
            }
        }
        marked
            .split('.')
            .map(|t| if t.contains(VAR_MARK) { "*" } else { t })
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Writes `value` as one subject token: ASCII letters, digits, `-` and `_` as is, every other
/// byte (including `.`, `*`, `>`, `%`, whitespace, NUL and each byte of non-ASCII characters) as
/// `%XX`; longer than 128 bytes, a prefix, `~` and a hash of the value. An empty value becomes
/// `unknown`, like an absent one.
pub fn sanitize_token(value: &str, out: &mut String) {
    NATS_SUBJECT.write_value(value, out);
}

/// Checks a stream subject filter (`calls.>`, `calls.*.completed`).
pub(super) fn check_filter(filter: &str) -> Result<(), String> {
    let tokens: Vec<&str> = filter.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(format!("{filter:?}: empty token"));
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{filter:?}: subjects cannot contain whitespace"));
        }
        if (t.contains('*') && *t != "*") || (t.contains('>') && *t != ">") {
            return Err(format!("{filter:?}: wildcards must be whole tokens"));
        }
        if *t == ">" && i + 1 != tokens.len() {
            return Err(format!("{filter:?}: '>' must be the last token"));
        }
    }
    Ok(())
}

/// True when every subject matched by `subject` (which may hold wildcards) is matched by
/// `filter`.
pub fn filter_covers(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(st)) => {
                if st == ">" {
                    return false;
                }
            }
            (Some(ft), Some(st)) => {
                if ft != st {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_support::sample_event;

    #[test]
    fn substituted_values_become_one_safe_token() {
        let mut ev = sample_event();
        ev.data.call_id = "a.b *>%c é".into();
        let t = SubjectTemplate::parse("calls.{kind}.{call_id}").unwrap();
        assert_eq!(t.render(&ev), "calls.status.a%2Eb%20%2A%3E%25c%20%C3%A9");
        ev.data.call_id = "abc-DEF_123".into();
        assert_eq!(t.render(&ev), "calls.status.abc-DEF_123");
        ev.data.status = Some(String::new());
        ev.data.direction = None;
        let t = SubjectTemplate::parse("c.{status}.{direction}.x-{kind}").unwrap();
        assert_eq!(t.render(&ev), "c.unknown.unknown.x-status");
        // Distinct values stay distinct.
        let mut a = String::new();
        let mut b = String::new();
        sanitize_token("a.b", &mut a);
        sanitize_token("a%2Eb", &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn literal_text_must_form_a_subject() {
        for bad in [
            "calls..{kind}",
            ".calls",
            "calls.",
            "calls.*",
            "calls.>",
            "calls.a*b",
            "calls here.{kind}",
            "calls.{nope}",
        ] {
            assert!(SubjectTemplate::parse(bad).is_err(), "{bad}");
        }
        let t = SubjectTemplate::parse("calls.{kind}.id-{call_id}.x").unwrap();
        assert_eq!(t.shape(), "calls.*.*.x");
    }

    #[test]
    fn filter_coverage() {
        assert!(filter_covers("calls.>", "calls.*.*"));
        assert!(filter_covers("calls.*.*", "calls.status.x"));
        assert!(filter_covers(">", "a"));
        assert!(!filter_covers("calls.status.*", "calls.*.*"));
        assert!(!filter_covers("calls.*", "calls.*.*"));
        assert!(!filter_covers("calls.*.*", "calls.>"));
        assert!(filter_covers("calls.>", "calls.>"));
        assert!(!filter_covers("calls.>", "calls"));
        assert!(check_filter("calls.>").is_ok());
        assert!(check_filter("calls.>.x").is_err());
        assert!(check_filter("calls.a*").is_err());
        assert!(check_filter("calls..x").is_err());
    }
}
