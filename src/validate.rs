//! What every part of the configuration uses to check itself: the issue list, the template
//! check and the serde defaults shared by several sections.
//!
//! A leaf on purpose: `config` uses each sink's settings, and each sink's settings use this
//! module, so dependencies point one way (config → a sink's settings → validate) and a
//! sink never needs the rest of `config`.

use std::fmt;

use crate::template::Template;

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

/// Checks a template string at validate time; used by every broker sink's settings.
pub fn check_template(value: &str, path: &str, issues: &mut Issues) {
    if let Err(e) = Template::parse(value) {
        issues.error(path, e.to_string());
    }
}

/// Serde default for `required` and other on-by-default flags (shared by every sink kind).
pub fn default_true() -> bool {
    true
}

/// Serde default of every sink's `timeout_ms`.
pub fn default_sink_timeout_ms() -> u64 {
    5000
}

/// Asserts that every field path in `paths` has an error among `errors` (each `path: message`).
#[cfg(test)]
pub fn assert_paths(errors: &[String], paths: &[&str]) {
    // `sinks[1] (bus).topic` is `sinks[1].topic` named for people.
    let unnamed = |e: &String| match (e.find("] ("), e.find(')')) {
        (Some(open), Some(close)) if open < close => format!("{}{}", &e[..=open], &e[close + 1..]),
        _ => e.clone(),
    };
    for path in paths {
        assert!(
            errors
                .iter()
                .any(|e| unnamed(e).starts_with(&format!("{path}:"))),
            "missing {path} in {errors:?}"
        );
    }
}
