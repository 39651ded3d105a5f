//! Transcripts arrive as a string (callback family) or as an array of turns (agent events:
//! `{"bot": "..."}` / `{"user": "..."}`, or `{"role": ..., "content": ...}`). The event keeps
//! what was sent in `transcript` and gives consumers one normalised form in `transcript_turns`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::type_name;
use super::InvalidPayload;

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Turn {
    /// `agent` (sent as `bot`, `assistant` or `agent`), `user` (`user`, `customer`, `human`),
    /// any other role lowercased as sent, or null when the transcript was one plain string.
    pub speaker: Option<String>,
    pub text: String,
}

fn speaker(raw: &str) -> String {
    match raw.to_ascii_lowercase().as_str() {
        "bot" | "assistant" | "agent" => "agent".into(),
        "user" | "customer" | "human" => "user".into(),
        other => other.to_string(),
    }
}

/// Normalises a transcript value; `field` names it in errors.
pub fn turns(value: &Value, field: &str) -> Result<Vec<Turn>, InvalidPayload> {
    match value {
        Value::String(s) => Ok(vec![Turn {
            speaker: None,
            text: s.clone(),
        }]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| turn(item).ok_or_else(|| {
                InvalidPayload::new(
                    format!("{field}[{i}]"),
                    format!(
                        "expected {{\"bot\": text}}, {{\"user\": text}} or {{\"role\", \"content\"}}, got {}",
                        if item.is_object() { "another object".to_string() } else { type_name(item).to_string() }
                    ),
                )
            }))
            .collect(),
        other => Err(InvalidPayload::new(
            field,
            format!("expected a string or an array of turns, got {}", type_name(other)),
        )),
    }
}

fn turn(item: &Value) -> Option<Turn> {
    let obj = item.as_object()?;
    if let (Some(Value::String(role)), Some(Value::String(content))) =
        (obj.get("role"), obj.get("content"))
    {
        return Some(Turn {
            speaker: Some(speaker(role)),
            text: content.clone(),
        });
    }
    if obj.len() == 1 {
        let (k, v) = obj.iter().next()?;
        return Some(Turn {
            speaker: Some(speaker(k)),
            text: v.as_str()?.to_string(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(speaker: Option<&str>, text: &str) -> Turn {
        Turn {
            speaker: speaker.map(Into::into),
            text: text.into(),
        }
    }

    #[test]
    fn every_shape_becomes_turns() {
        assert_eq!(
            turns(&json!("hello"), "transcript").unwrap(),
            vec![t(None, "hello")]
        );
        assert_eq!(
            turns(&json!([{"bot": "Hi"}, {"user": "Yes?"}]), "transcript").unwrap(),
            vec![t(Some("agent"), "Hi"), t(Some("user"), "Yes?")]
        );
        assert_eq!(
            turns(
                &json!([{"role": "assistant", "content": "Hi"}, {"role": "User", "content": "Yo"},
                          {"role": "tool", "content": "{}"}]),
                "transcript"
            )
            .unwrap(),
            vec![
                t(Some("agent"), "Hi"),
                t(Some("user"), "Yo"),
                t(Some("tool"), "{}")
            ]
        );
        assert_eq!(turns(&json!([]), "transcript").unwrap(), vec![]);
    }

    #[test]
    fn bad_turns_name_their_index() {
        let e = turns(&json!([{"bot": "Hi"}, 5]), "transcript").unwrap_err();
        assert_eq!(e.field, "transcript[1]");
        let e = turns(&json!([{"bot": 1}]), "data.transcript").unwrap_err();
        assert_eq!(e.field, "data.transcript[0]");
        let e = turns(&json!([{"a": "x", "b": "y"}]), "transcript").unwrap_err();
        assert_eq!(e.field, "transcript[0]");
        assert!(turns(&json!(3), "transcript").is_err());
    }
}
