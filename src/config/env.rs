//! The environment's part in a configuration: `${VAR}` / `${VAR:-default}` in any string, and
//! `CALLBRIDGE__SECTION__KEY` variables that override single values.
//!
//! Expansion happens on parsed values, never on the raw YAML text, so a variable's value cannot
//! inject YAML structure. Where the variables come from is an [`Env`], so tests hand in their own
//! instead of mutating the process environment (which races with every other test thread).

use std::collections::HashMap;

use serde_json::Value;

use crate::validate::Issues;

/// The prefix of override variables: `CALLBRIDGE__SERVER__LISTEN` sets `server.listen`.
const OVERRIDE_PREFIX: &str = "CALLBRIDGE";
const OVERRIDE_SEPARATOR: &str = "__";

/// Where `${VAR}` values and `CALLBRIDGE__*` overrides are read from.
#[derive(Debug, Clone)]
pub enum Env {
    /// The process environment: what the `callbridge` binary uses.
    Process,
    /// A fixed set of variables (tests); nothing is read from the process.
    Vars(HashMap<String, String>),
}

impl Env {
    /// A fixed environment holding exactly these variables.
    pub fn vars<const N: usize>(pairs: [(&str, &str); N]) -> Env {
        Env::Vars(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// A fixed, empty environment: no overrides, and `${VAR}` only with a default.
    pub fn empty() -> Env {
        Env::Vars(HashMap::new())
    }

    fn get(&self, name: &str) -> Option<String> {
        match self {
            Env::Process => std::env::var(name).ok(),
            Env::Vars(vars) => vars.get(name).cloned(),
        }
    }

    /// The `config` crate source holding the `CALLBRIDGE__*` overrides of this environment.
    pub(super) fn overrides(&self) -> config::Environment {
        let source = config::Environment::with_prefix(OVERRIDE_PREFIX)
            .prefix_separator(OVERRIDE_SEPARATOR)
            .separator(OVERRIDE_SEPARATOR)
            .try_parsing(true);
        match self {
            Env::Process => source,
            Env::Vars(vars) => source.source(Some(vars.clone().into_iter().collect())),
        }
    }

    /// Replaces `${VAR}` and `${VAR:-default}` in every string of the tree. An unset variable
    /// without a default is an error naming the field, never a silent empty string.
    pub(super) fn expand_tree(&self, value: &mut Value, path: &str, issues: &mut Issues) {
        match value {
            Value::String(s) if s.contains("${") => match self.expand(s) {
                Ok(expanded) => *s = expanded,
                Err(msg) => issues.error(if path.is_empty() { "(root)" } else { path }, msg),
            },
            Value::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    self.expand_tree(v, &format!("{path}[{i}]"), issues);
                }
            }
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    self.expand_tree(v, &p, issues);
                }
            }
            _ => {}
        }
    }

    /// Expands one string. `$${` escapes a literal `${`.
    pub fn expand(&self, input: &str) -> Result<String, String> {
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
                // POSIX semantics: `${VAR:-d}` takes the default when VAR is unset or empty,
                // `${VAR-d}` only when it is unset (an empty value stays empty, so a secret set
                // to "" by mistake is an error rather than a silent fallback).
                let (name, default, empty_takes_default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d), true),
                    None => match expr.split_once('-') {
                        Some((n, d)) => (n, Some(d), false),
                        None => (expr, None, false),
                    },
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("invalid variable name {name:?}"));
                }
                match (self.get(name), default) {
                    (Some(v), None) => out.push_str(&v),
                    (Some(v), Some(_)) if !(v.is_empty() && empty_takes_default) => {
                        out.push_str(&v)
                    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_with_defaults_and_errors() {
        let env = Env::vars([("CB_TEST_KEY_SET", "from-env"), ("CB_TEST_EMPTY", "")]);
        assert_eq!(env.expand("${CB_TEST_KEY_SET}").unwrap(), "from-env");
        assert_eq!(
            env.expand("a-${CB_TEST_KEY_UNSET:-dflt}-b").unwrap(),
            "a-dflt-b"
        );
        assert_eq!(env.expand("${CB_TEST_EMPTY:-dflt}").unwrap(), "dflt");
        // `-` without the colon: the default only for an unset variable.
        assert_eq!(env.expand("${CB_TEST_EMPTY-dflt}").unwrap(), "");
        assert_eq!(env.expand("${CB_TEST_KEY_UNSET-dflt}").unwrap(), "dflt");
        assert_eq!(env.expand("${CB_TEST_KEY_SET-dflt}").unwrap(), "from-env");
        assert_eq!(env.expand("${CB_TEST_KEY_UNSET-a-b}").unwrap(), "a-b");
        assert_eq!(env.expand("$${LITERAL}").unwrap(), "${LITERAL}");
        assert_eq!(env.expand("cost $5").unwrap(), "cost $5");
        assert!(env.expand("${CB_TEST_KEY_UNSET}").is_err());
        assert!(env.expand("${unclosed").is_err());
        assert!(env.expand("${bad name}").is_err());
    }
}
