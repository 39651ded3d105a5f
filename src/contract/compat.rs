//! Whether a change of the event's JSON Schema keeps every v1 consumer working (the rules of
//! docs/events.md, "Compatibility").
//!
//! Within one major version (`.v1` in every `type`) both directions must hold, because a
//! consumer meets events of every bridge version on one topic (a rolling upgrade, a replay, the
//! spool, an archive):
//! * an event of the **new** schema must be read by a consumer generated from the **old** one:
//!   no field removed, none that was required made optional, no type or value added;
//! * an event of the **old** schema must be read by a consumer generated from the **new** one:
//!   no field made required (a new field included), no type or value taken away.
//!
//! So what stays compatible is adding an optional field, and changing descriptions. Anything
//! else is a new major version (`v2`, a new `type`, a new schema file and snapshot).
//!
//! [`breaking_changes`] compares two schemas structurally: each node is reduced to a [`Shape`]
//! (its JSON types, allowed values, constraints, properties, required names, items and
//! additional properties, `$ref`s resolved against the document's `$defs`), and the shapes
//! are compared path by path.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// Keywords that restrict values; any change of one is a change of what validates.
const CONSTRAINTS: [&str; 9] = [
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
];

/// One node of a schema, reduced to what decides which values validate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shape {
    /// JSON types (`string`, `null`, ...); empty: any value.
    pub types: BTreeSet<String>,
    /// The only non-null values allowed (`const`, `enum`, `oneOf` of consts), if restricted.
    pub values: Option<BTreeSet<String>>,
    pub constraints: BTreeMap<String, Value>,
    pub properties: BTreeMap<String, Shape>,
    pub required: BTreeSet<String>,
    /// `additionalProperties`: `None` = allowed (absent or `true`), `Some(None)` = forbidden,
    /// `Some(Some(shape))` = each must match the shape.
    pub additional: Option<Option<Box<Shape>>>,
    pub items: Option<Box<Shape>>,
}

/// A change that breaks a consumer of the other version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The field's path: `data.status`, `data.transcript_turns[].text`, `data.callback_params.*`.
    pub path: String,
    pub what: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.what)
    }
}

/// The schema node at `node`, reduced. `root` resolves `#/$defs/...` and `#/definitions/...`.
pub fn shape(root: &Value, node: &Value) -> Shape {
    shape_depth(root, node, 0)
}

fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

fn shape_depth(root: &Value, node: &Value, depth: usize) -> Shape {
    let mut s = Shape::default();
    // A reference cycle (none today) ends as "any value" rather than recursing forever.
    if depth > 32 {
        return s;
    }
    let Some(obj) = node.as_object() else {
        // `true` / `false` schemas: any value / none.
        if node == &Value::Bool(false) {
            s.values = Some(BTreeSet::new());
        }
        return s;
    };
    if let Some(target) = obj
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| resolve(root, r))
    {
        s = shape_depth(root, target, depth + 1);
    }
    match obj.get("type") {
        Some(Value::String(t)) => {
            s.types.insert(t.clone());
        }
        Some(Value::Array(ts)) => s
            .types
            .extend(ts.iter().filter_map(Value::as_str).map(str::to_string)),
        _ => {}
    }
    if let Some(c) = obj.get("const") {
        s.values = Some(BTreeSet::from([c.to_string()]));
    }
    if let Some(Value::Array(e)) = obj.get("enum") {
        let non_null: BTreeSet<String> = e
            .iter()
            .filter(|v| !v.is_null())
            .map(Value::to_string)
            .collect();
        if e.iter().any(Value::is_null) {
            s.types.insert("null".into());
        }
        s.values = Some(non_null);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(branches)) = obj.get(key) {
            merge_union(
                &mut s,
                branches.iter().map(|b| shape_depth(root, b, depth + 1)),
            );
        }
    }
    if let Some(Value::Array(all)) = obj.get("allOf") {
        for b in all {
            let b = shape_depth(root, b, depth + 1);
            merge_all(&mut s, b);
        }
    }
    for c in CONSTRAINTS {
        if let Some(v) = obj.get(c) {
            s.constraints.insert(c.to_string(), v.clone());
        }
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (name, p) in props {
            s.properties
                .insert(name.clone(), shape_depth(root, p, depth + 1));
        }
    }
    if let Some(Value::Array(req)) = obj.get("required") {
        s.required
            .extend(req.iter().filter_map(Value::as_str).map(str::to_string));
    }
    match obj.get("additionalProperties") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => s.additional = Some(None),
        Some(other) => {
            s.additional = Some(Some(Box::new(shape_depth(root, other, depth + 1))));
        }
    }
    if let Some(items) = obj.get("items") {
        s.items = Some(Box::new(shape_depth(root, items, depth + 1)));
    }
    s
}

/// `oneOf`/`anyOf`: a value matches one branch. Types and values are the union; a branch that
/// is only `null` adds the type.
fn merge_union(s: &mut Shape, branches: impl Iterator<Item = Shape>) {
    let mut values: Option<BTreeSet<String>> = Some(BTreeSet::new());
    let mut any_restricted = false;
    for b in branches {
        let null_only = b.types.len() == 1 && b.types.contains("null");
        s.types.extend(b.types.iter().cloned());
        if null_only {
            continue;
        }
        match (&mut values, b.values) {
            (Some(all), Some(vs)) => {
                any_restricted = true;
                all.extend(vs);
            }
            (_, None) => values = None,
            (None, Some(_)) => {}
        }
        for (k, v) in b.properties {
            s.properties.entry(k).or_insert(v);
        }
        s.required.extend(b.required);
        if s.items.is_none() {
            s.items = b.items;
        }
        for (k, v) in b.constraints {
            s.constraints.entry(k).or_insert(v);
        }
    }
    if any_restricted {
        if let Some(vs) = values {
            s.values = Some(vs);
        }
    }
}

/// `allOf`: every branch applies.
fn merge_all(s: &mut Shape, b: Shape) {
    if s.types.is_empty() {
        s.types = b.types;
    } else if !b.types.is_empty() {
        s.types = s.types.intersection(&b.types).cloned().collect();
    }
    if b.values.is_some() {
        s.values = b.values;
    }
    s.constraints.extend(b.constraints);
    for (k, v) in b.properties {
        s.properties.entry(k).or_insert(v);
    }
    s.required.extend(b.required);
    if b.additional.is_some() {
        s.additional = b.additional;
    }
    if b.items.is_some() {
        s.items = b.items;
    }
}

/// Every change from `old` to `new` (whole schema documents) that breaks a consumer of either.
pub fn breaking_changes(old: &Value, new: &Value) -> Vec<Break> {
    let mut out = Vec::new();
    compare("", &shape(old, old), &shape(new, new), &mut out);
    out
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn list(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "any".into()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join("|")
    }
}

fn compare(path: &str, old: &Shape, new: &Shape, out: &mut Vec<Break>) {
    let here = if path.is_empty() { "(event)" } else { path };
    let mut brk = |what: String| {
        out.push(Break {
            path: here.to_string(),
            what,
        })
    };
    if old.types != new.types {
        brk(format!(
            "retyped: was {}, now {}",
            list(&old.types),
            list(&new.types)
        ));
    }
    match (&old.values, &new.values) {
        (None, Some(vs)) => brk(format!("values narrowed to {}", list(vs))),
        (Some(vs), None) => brk(format!("values widened: was only {}", list(vs))),
        (Some(a), Some(b)) => {
            let removed: BTreeSet<String> = a.difference(b).cloned().collect();
            let added: BTreeSet<String> = b.difference(a).cloned().collect();
            if !removed.is_empty() {
                brk(format!("enum narrowed: {} removed", list(&removed)));
            }
            if !added.is_empty() {
                brk(format!("enum widened: {} added", list(&added)));
            }
        }
        (None, None) => {}
    }
    let keys: BTreeSet<&String> = old
        .constraints
        .keys()
        .chain(new.constraints.keys())
        .collect();
    for k in keys {
        let (a, b) = (old.constraints.get(k), new.constraints.get(k));
        if a != b {
            let show = |v: Option<&Value>| v.map_or("none".to_string(), Value::to_string);
            brk(format!("{k} changed: was {}, now {}", show(a), show(b)));
        }
    }
    for (name, o) in &old.properties {
        let p = join(path, name);
        match new.properties.get(name) {
            None => out.push(Break {
                path: p,
                what: "removed".into(),
            }),
            Some(n) => {
                if old.required.contains(name) && !new.required.contains(name) {
                    out.push(Break {
                        path: p.clone(),
                        what: "no longer required".into(),
                    });
                }
                if !old.required.contains(name) && new.required.contains(name) {
                    out.push(Break {
                        path: p.clone(),
                        what: "newly required".into(),
                    });
                }
                compare(&p, o, n, out);
            }
        }
    }
    for name in new
        .properties
        .keys()
        .filter(|n| !old.properties.contains_key(*n))
    {
        let p = join(path, name);
        if new.required.contains(name) {
            out.push(Break {
                path: p.clone(),
                what: "new required field".into(),
            });
        }
        match &old.additional {
            Some(None) => out.push(Break {
                path: p,
                what: "new field where the old schema allowed none".into(),
            }),
            Some(Some(shape)) => {
                compare(&p, shape, &new.properties[name], out);
            }
            None => {}
        }
    }
    match (&old.additional, &new.additional) {
        (None, None) | (Some(None), Some(None)) => {}
        (Some(Some(a)), Some(Some(b))) => compare(&join(path, "*"), a, b, out),
        (a, b) => {
            let show = |x: &Option<Option<Box<Shape>>>| match x {
                None => "any",
                Some(None) => "none",
                Some(Some(_)) => "restricted",
            };
            out.push(Break {
                path: join(path, "*"),
                what: format!(
                    "additional properties changed: was {}, now {}",
                    show(a),
                    show(b)
                ),
            });
        }
    }
    match (&old.items, &new.items) {
        (Some(a), Some(b)) => compare(&format!("{path}[]"), a, b, out),
        (None, None) => {}
        (a, _) => out.push(Break {
            path: format!("{here}[]"),
            what: if a.is_some() {
                "items no longer described".into()
            } else {
                "items newly restricted".into()
            },
        }),
    }
}

/// The major version of a schema file name: `call-event.v1.json` → `v1`.
pub fn version_of(file_name: &str) -> Option<&str> {
    file_name.strip_prefix("call-event.")?.strip_suffix(".json")
}

/// Why the current schema may not ship: the breaks against the snapshot of its own version.
/// No snapshot for the current version means it is new: commit its snapshot first.
pub fn gate(
    current_version: &str,
    current: &Value,
    snapshots: &Map<String, Value>,
) -> Result<(), String> {
    let Some(snapshot) = snapshots.get(current_version) else {
        return Err(format!(
            "no snapshot of the {current_version} contract: a new major version starts with \
             its schema copied to docs/schema/contract/call-event.{current_version}.json"
        ));
    };
    let breaks = breaking_changes(snapshot, current);
    if breaks.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = breaks.iter().map(ToString::to_string).collect();
    Err(format!(
        "the event schema breaks {current_version} consumers (docs/events.md, \
         \"Compatibility\"); keep the field as it was, or move the event to the next major \
         version:\n  {}",
        list.join("\n  ")
    ))
}

#[cfg(test)]
mod tests;
