//! Typed reads of a webhook's JSON object, with errors that name the field's path.
//!
//! Shared by both webhook families. `null` always counts as absent; a present value of the wrong
//! type is an [`InvalidPayload`] naming `<prefix><key>`.

use serde_json::{Map, Value};

use super::InvalidPayload;

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What a sender field that can become part of a destination name (topic, routing key,
/// subject) or a broker header may hold. Checked at ingest, so a hostile value is a 400 naming
/// the field before anything is published; each sink still escapes what it renders.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// UTF-8 bytes.
    pub max_bytes: usize,
    /// Printable ASCII without whitespace (`!`..`~`) only; otherwise any character but a
    /// control character (NUL, CR, LF, ...).
    pub ascii_graphic: bool,
}

/// Identifiers the sender makes up (`call_id`, `agent_id`): any text without control characters.
pub(crate) const IDENT: Shape = Shape {
    max_bytes: 256,
    ascii_graphic: false,
};

/// Short codes (`status`, `event_type`, `call_direction`): printable ASCII, no whitespace.
pub(crate) const CODE: Shape = Shape {
    max_bytes: 64,
    ascii_graphic: true,
};

impl Shape {
    /// Why `value` does not fit, if it does not.
    pub fn check(self, value: &str) -> Result<(), String> {
        if value.len() > self.max_bytes {
            return Err(format!(
                "longer than {} bytes ({} bytes)",
                self.max_bytes,
                value.len()
            ));
        }
        let bad = if self.ascii_graphic {
            value.chars().find(|c| !c.is_ascii_graphic())
        } else {
            value.chars().find(|c| c.is_control())
        };
        match bad {
            None => Ok(()),
            Some(c) if self.ascii_graphic => Err(format!(
                "only printable ASCII without whitespace is allowed, found {c:?}"
            )),
            Some(c) => Err(format!("control characters are not allowed, found {c:?}")),
        }
    }
}

/// A JSON object being read, and the path prefix of its fields (`data.` or ``).
pub(crate) struct Fields<'a> {
    pub map: &'a Map<String, Value>,
    prefix: &'static str,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>, prefix: &'static str) -> Self {
        Fields { map, prefix }
    }

    fn invalid(&self, key: &str, message: String) -> InvalidPayload {
        InvalidPayload::new(format!("{}{key}", self.prefix), message)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// A required, non-blank string (the call id), of the [`IDENT`] shape.
    pub fn id(&self, key: &str) -> Result<String, InvalidPayload> {
        match self.map.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => {
                IDENT.check(s).map_err(|m| self.invalid(key, m))?;
                Ok(s.clone())
            }
            Some(Value::String(_)) => Err(self.invalid(key, "must not be empty".into())),
            Some(other) => {
                Err(self.invalid(key, format!("expected a string, got {}", type_name(other))))
            }
            None => Err(self.invalid(key, "required".into())),
        }
    }

    pub fn string(&self, key: &str) -> Result<Option<String>, InvalidPayload> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => {
                Err(self.invalid(key, format!("expected a string, got {}", type_name(other))))
            }
        }
    }

    /// An optional string of the given shape (a field routing templates and headers use).
    pub fn shaped(&self, key: &str, shape: Shape) -> Result<Option<String>, InvalidPayload> {
        let value = self.string(key)?;
        if let Some(v) = &value {
            shape.check(v).map_err(|m| self.invalid(key, m))?;
        }
        Ok(value)
    }

    pub fn object(&self, key: &str) -> Result<Option<Map<String, Value>>, InvalidPayload> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o.clone())),
            Some(other) => {
                Err(self.invalid(key, format!("expected an object, got {}", type_name(other))))
            }
        }
    }

    pub fn array(&self, key: &str) -> Result<Option<Vec<Value>>, InvalidPayload> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a.clone())),
            Some(other) => {
                Err(self.invalid(key, format!("expected an array, got {}", type_name(other))))
            }
        }
    }

    /// Any number (money may be fractional or negative, e.g. a refund).
    pub fn number(&self, key: &str) -> Result<Option<f64>, InvalidPayload> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => {
                Err(self.invalid(key, format!("expected a number, got {}", type_name(other))))
            }
        }
    }

    /// A non-negative number of seconds.
    pub fn seconds(&self, key: &str) -> Result<Option<f64>, InvalidPayload> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f)),
                _ => Err(self.invalid(
                    key,
                    format!("expected a non-negative number of seconds, got {n}"),
                )),
            },
            Some(other) => {
                Err(self.invalid(key, format!("expected a number, got {}", type_name(other))))
            }
        }
    }

    /// A non-negative whole number (`1` and `1.0` both count; `1.5`, `-1` and 1e30 do not).
    pub fn count(&self, key: &str) -> Result<Option<u64>, InvalidPayload> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                if let Some(u) = n.as_u64() {
                    return Ok(Some(u));
                }
                match n.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u32::MAX as f64 => {
                        Ok(Some(f as u64))
                    }
                    _ => Err(self.invalid(
                        key,
                        format!("expected a non-negative whole number, got {n}"),
                    )),
                }
            }
            Some(other) => {
                Err(self.invalid(key, format!("expected a number, got {}", type_name(other))))
            }
        }
    }

    /// Every field not in `known`, verbatim.
    pub fn rest(&self, known: &[&str]) -> Map<String, Value> {
        self.map
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
