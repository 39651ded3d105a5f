use super::*;
use serde_json::json;

fn committed() -> Value {
    serde_json::from_str(include_str!("../../../docs/schema/call-event.v1.json")).unwrap()
}

fn snapshots() -> Map<String, Value> {
    let mut out = Map::new();
    for entry in std::fs::read_dir("docs/schema/contract").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if let Some(v) = version_of(&name) {
            let text = std::fs::read_to_string(&path).unwrap();
            out.insert(v.to_string(), serde_json::from_str(&text).unwrap());
        }
    }
    out
}

/// The gate: the schema the code generates keeps the committed contract of its version.
#[test]
fn the_event_schema_keeps_its_versions_contract() {
    let snapshots = snapshots();
    assert!(
        snapshots.contains_key("v1"),
        "docs/schema/contract/call-event.v1.json"
    );
    let current = crate::event::json_schema();
    if let Err(e) = gate(crate::event::SCHEMA_VERSION, &current, &snapshots) {
        panic!("{e}");
    }
}

fn mutated(f: impl FnOnce(&mut Value)) -> Vec<String> {
    let old = committed();
    let mut new = old.clone();
    f(&mut new);
    breaking_changes(&old, &new)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn data_props(v: &mut Value) -> &mut Map<String, Value> {
    v["$defs"]["CallData"]["properties"]
        .as_object_mut()
        .unwrap()
}

#[test]
fn the_same_schema_and_description_changes_are_compatible() {
    assert_eq!(mutated(|_| {}), Vec::<String>::new());
    assert_eq!(
        mutated(|v| {
            data_props(v)["status"]["description"] = json!("reworded");
            v["description"] = json!("reworded too");
        }),
        Vec::<String>::new()
    );
}

#[test]
fn an_added_optional_field_is_compatible() {
    assert_eq!(
        mutated(|v| {
            data_props(v).insert(
                "queue_seconds".into(),
                json!({"type": ["number", "null"], "format": "double"}),
            );
        }),
        Vec::<String>::new()
    );
}

#[test]
fn a_removed_field_breaks() {
    assert_eq!(
        mutated(|v| {
            data_props(v).remove("agent_name");
        }),
        ["data.agent_name: removed"]
    );
    assert_eq!(
        mutated(|v| {
            v["properties"].as_object_mut().unwrap().remove("time");
        }),
        ["time: removed"]
    );
}

#[test]
fn a_retyped_field_breaks_both_ways() {
    assert_eq!(
        mutated(|v| data_props(v)["retry"]["type"] = json!(["number", "null"])),
        ["data.retry: retyped: was integer|null, now null|number"]
    );
    // Narrowing (null no longer allowed) breaks the events already published.
    assert_eq!(
        mutated(|v| data_props(v)["status"]["type"] = json!("string")),
        ["data.status: retyped: was null|string, now string"]
    );
    assert_eq!(
        mutated(|v| data_props(v)["duration_seconds"]["format"] = json!("float")),
        ["data.duration_seconds: format changed: was \"double\", now \"float\""]
    );
}

#[test]
fn a_new_required_field_breaks_and_so_does_requiring_an_optional_one() {
    assert_eq!(
        mutated(|v| {
            data_props(v).insert("tenant".into(), json!({"type": "string"}));
            v["$defs"]["CallData"]["required"]
                .as_array_mut()
                .unwrap()
                .push(json!("tenant"));
        }),
        ["data.tenant: new required field"]
    );
    assert_eq!(
        mutated(|v| {
            v["required"]
                .as_array_mut()
                .unwrap()
                .push(json!("callstatus"));
        }),
        ["callstatus: newly required"]
    );
    assert_eq!(
        mutated(|v| {
            let r = v["required"].as_array_mut().unwrap();
            r.retain(|x| x != "subject");
        }),
        ["subject: no longer required"]
    );
}

#[test]
fn an_enum_may_neither_narrow_nor_widen() {
    fn kinds(v: &mut Value) -> &mut Vec<Value> {
        v["$defs"]["EventKind"]["oneOf"].as_array_mut().unwrap()
    }
    assert_eq!(
        mutated(|v| {
            kinds(v).retain(|k| k["const"] != "recording");
        }),
        ["data.kind: enum narrowed: \"recording\" removed"]
    );
    assert_eq!(
        mutated(|v| {
            kinds(v).push(json!({"type": "string", "const": "transfer"}));
        }),
        ["data.kind: enum widened: \"transfer\" added"]
    );
    // Through anyOf [ref, null] too.
    assert_eq!(
        mutated(|v| {
            v["$defs"]["AnalysisSource"]["oneOf"]
                .as_array_mut()
                .unwrap()
                .pop();
        }),
        ["data.analysis_source: enum narrowed: \"client\" removed"]
    );
}

#[test]
fn nested_items_and_maps_are_compared() {
    assert_eq!(
        mutated(|v| {
            v["$defs"]["Turn"]["properties"]["text"]["type"] = json!(["string", "null"]);
        }),
        ["data.transcript_turns[].text: retyped: was string, now null|string"]
    );
    assert_eq!(
        mutated(|v| {
            data_props(v)["callback_params"]["additionalProperties"] = json!(true);
        }),
        ["data.callback_params.*: additional properties changed: was restricted, now any"]
    );
}

#[test]
fn a_new_version_needs_its_snapshot() {
    let e = gate("v2", &committed(), &snapshots()).unwrap_err();
    assert!(e.contains("call-event.v2.json"), "{e}");
    let mut broken = committed();
    data_props(&mut broken).remove("call_id");
    let e = gate("v1", &broken, &snapshots()).unwrap_err();
    assert!(e.contains("data.call_id: removed"), "{e}");
    assert_eq!(version_of("call-event.v1.json"), Some("v1"));
    assert_eq!(version_of("config.json"), None);
}
