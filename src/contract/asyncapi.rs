//! `callbridge asyncapi`: an AsyncAPI 3.0 document of what this deployment publishes, for the
//! services that subscribe (code generators, catalogues, schema registries read it).
//!
//! Everything in it is derived, never restated:
//! * the **channels** are the destinations `validate --connect` checks
//!   ([`preflight::sink_targets`]): one per Kafka topic, AMQP routing key (with its exchange in
//!   the channel binding) and NATS subject each sink's template gives over every event the
//!   configuration can produce; a destination that depends on per-call values (`{call_id}`,
//!   `{agent_id}`, `{direction}`) is one channel whose address keeps them as parameters;
//! * the **servers** are each sink's broker addresses, built from host, port and path only, so
//!   no user name, password or token can reach the document;
//! * the **payload schemas** are the committed JSON Schema ([`crate::event::json_schema`]), its
//!   definitions moved under `components/schemas`;
//! * the **headers and properties** of each message are read off the sinks' own encoders
//!   ([`crate::sinks::kafka::headers`], [`crate::sinks::rabbitmq::message::build_message`],
//!   [`crate::sinks::nats::message`]) run over
//!   synthetic events: a header present on an event without the optional attributes is
//!   required, and one whose value is the same on two events that differ in everything an event
//!   can differ in is a constant. So the document says what the code writes.
//!
//! ```text
//! asyncapi.rs   the document: channels, operations, messages, the sinks' extension
//! wire.rs       synthetic events and each sink's wire form of them; what each header carries
//! bindings.rs   the Kafka and AMQP channel and operation bindings
//! servers.rs    the servers, from host, port and path only (never a credential)
//! error.rs      why no document can be made
//! ```

use serde_json::{json, Map, Value};

use crate::config::{Settings, SinkSettings};
use crate::event::binding::Format;
use crate::event::{json_schema, EventKind, EventSettings, SPEC_VERSION};
use crate::preflight::{self, describe, Destination, Producible, SinkTargets, Target};
use crate::template::{Template, Var};

mod bindings;
mod error;
mod servers;
mod wire;

pub use error::AsyncApiError;

use bindings::{channel_bindings, operation_bindings, AMQP_BINDING, KAFKA_BINDING};
use servers::{amqp_server, kafka_servers, nats_servers};
use wire::{describe_header, describe_property, samples, Protocol};

/// The AsyncAPI version of the document.
pub const ASYNCAPI_VERSION: &str = "3.0.0";
/// Where the committed JSON Schema's definitions go in the document.
const SCHEMAS: &str = "#/components/schemas/";
/// The event (structured form) among them.
pub const EVENT_SCHEMA: &str = "CallEvent";
/// Extension on every channel: the sink that publishes there.
pub const X_SINK: &str = "x-callbridge-sink";
/// Extension on every channel: the destination as `validate --connect` names it.
pub const X_DESTINATION: &str = "x-callbridge-destination";
/// Extension at the root: per sink, its destination template and the values each of the
/// template's variables takes (those the configuration bounds, as an `enum`).
pub const X_SINKS: &str = "x-callbridge-sinks";

/// The document for `settings`, as JSON.
pub fn document(settings: &Settings) -> Result<Value, AsyncApiError> {
    let mut doc = Doc::default();
    for sink in &settings.sinks {
        doc.add_sink(sink, &settings.event)?;
    }
    let description = format!(
        "What this callbridge deployment publishes: every call webhook it accepts becomes one \
         CloudEvents {SPEC_VERSION} event (source `{}`, type `{}.call.<kind>.v1`), published to \
         each channel below whose sink wants it. The event id is the same on every redelivery: \
         deduplicate on it (docs/events.md). Delivery is at-least-once.",
        settings.event.source, settings.event.type_prefix
    );
    Ok(json!({
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "callbridge call events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": description,
        },
        "defaultContentType": "application/json",
        "servers": doc.servers,
        "channels": doc.channels,
        "operations": doc.operations,
        "components": {
            "schemas": component_schemas(),
            "messages": doc.messages,
        },
        X_SINKS: doc.sinks,
    }))
}

/// The document as pretty JSON with a trailing newline.
pub fn document_pretty(settings: &Settings) -> Result<String, AsyncApiError> {
    let mut s = serde_json::to_string_pretty(&document(settings)?).unwrap_or_default();
    s.push('\n');
    Ok(s)
}

/// Every destination `validate --connect` enumerates, as `(sink, destination)` in its words.
pub fn enumerated(settings: &Settings) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for sink in &settings.sinks {
        let name = sink.spec().common().name.to_string();
        match preflight::sink_targets(sink, &settings.event) {
            Ok(SinkTargets::Broker(t)) => {
                for d in t.routes.checkable.iter().chain(&t.routes.per_call) {
                    out.push((name.clone(), t.named(&d.name)));
                }
            }
            Ok(SinkTargets::File { settings: f, .. }) => {
                out.push((name, format!("file {}", f.path.display())));
            }
            Ok(SinkTargets::Nothing) | Err(_) => {}
        }
    }
    out
}

/// The `(sink, destination)` of every channel of a document.
pub fn channel_destinations(doc: &Value) -> Vec<(String, String)> {
    doc["channels"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .map(|c| {
            (
                c[X_SINK].as_str().unwrap_or_default().to_string(),
                c[X_DESTINATION].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The committed JSON Schema's definitions, and the event itself as [`EVENT_SCHEMA`], with
/// every `#/$defs/X` reference pointing at `#/components/schemas/X`.
pub fn component_schemas() -> Map<String, Value> {
    let mut root = json_schema();
    let defs = root
        .as_object_mut()
        .and_then(|o| {
            o.remove("$schema");
            o.remove("$defs")
        })
        .and_then(|d| match d {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default();
    let mut out = Map::new();
    out.insert(EVENT_SCHEMA.into(), rewrite_refs(root, "#/$defs/", SCHEMAS));
    for (name, schema) in defs {
        out.insert(name, rewrite_refs(schema, "#/$defs/", SCHEMAS));
    }
    out
}

/// `value` with every `$ref` that starts with `from` starting with `to` instead.
pub fn rewrite_refs(value: Value, from: &str, to: &str) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("$ref", Value::String(s)) if s.starts_with(from) => {
                            Value::String(format!("{to}{}", &s[from.len()..]))
                        }
                        (_, v) => rewrite_refs(v, from, to),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| rewrite_refs(v, from, to)).collect()),
        v => v,
    }
}

#[derive(Default)]
struct Doc {
    servers: Map<String, Value>,
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    messages: Map<String, Value>,
    /// [`X_SINKS`]: each broker sink's template and the values of its variables.
    sinks: Map<String, Value>,
}

/// A JSON Schema object of `fields` (name → value on three samples): required when the bare
/// sample has it, `const` when both full samples agree.
fn fields_schema(
    full: &[(String, Value)],
    other: &[(String, Value)],
    bare: &[(String, Value)],
    describe: impl Fn(&str) -> String,
) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, value) in full {
        let ty = if value.is_string() {
            "string"
        } else {
            "integer"
        };
        let mut p = Map::new();
        p.insert("type".into(), json!(ty));
        p.insert("description".into(), json!(describe(name)));
        if other.iter().any(|(n, v)| n == name && v == value) {
            p.insert("const".into(), value.clone());
        }
        properties.insert(name.clone(), Value::Object(p));
        if bare.iter().any(|(n, _)| n == name) {
            required.push(json!(name));
        }
    }
    json!({"type": "object", "properties": properties, "required": required})
}

/// The kind's description, from the committed schema's `EventKind`.
fn kind_summary(kind: EventKind) -> String {
    let schema = json_schema();
    schema["$defs"]["EventKind"]["oneOf"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["const"] == kind.as_str()))
        .and_then(|v| v["description"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// `name` with every character a component or operation key may not hold as `_`.
fn key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The per-call values a template may use, as channel parameters.
const PER_CALL: [(&str, &str); 3] = [
    ("call_id", "The call id."),
    (
        "agent_id",
        "The agent's id (`unknown` when the event has none).",
    ),
    (
        "direction",
        "The call's direction as sent: `inbound`, `outbound`, `webcall`, ... (`unknown` when \
         the event has none).",
    ),
];

impl Doc {
    fn add_sink(
        &mut self,
        sink: &SinkSettings,
        settings: &EventSettings,
    ) -> Result<(), AsyncApiError> {
        let spec = sink.spec();
        let common = spec.common();
        let name = common.name.to_string();
        let targets = preflight::sink_targets(sink, settings).map_err(|message| {
            AsyncApiError::Destination {
                sink: name.clone(),
                message,
            }
        })?;
        let key_template;
        let (protocol, servers, template) = match (sink, &targets) {
            (_, SinkTargets::Nothing) => return Ok(()),
            (SinkSettings::File(f), _) => {
                let dir = f
                    .path
                    .parent()
                    .map(|p| p.display().to_string())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| ".".into());
                let server = json!({
                    "host": "localhost",
                    "pathname": dir,
                    "protocol": "file",
                    "description": format!(
                        "The bridge's local file system (sink `{name}`): one event per line, \
                         each the whole event as JSON."
                    ),
                });
                (Protocol::File, vec![(name.clone(), server)], None)
            }
            (SinkSettings::Kafka(k), _) => {
                key_template = Template::parse(&k.key).map_err(|source| AsyncApiError::Key {
                    sink: name.clone(),
                    source,
                })?;
                (
                    Protocol::Kafka(k, &key_template),
                    kafka_servers(k),
                    Some(k.topic.as_str()),
                )
            }
            (SinkSettings::Rabbitmq(r), _) => (
                Protocol::Amqp(r),
                vec![(name.clone(), amqp_server(r)?)],
                Some(r.routing_key.as_str()),
            ),
            (SinkSettings::Nats(n), _) => (
                Protocol::Nats(n),
                nats_servers(n)?,
                Some(n.subject.as_str()),
            ),
            (SinkSettings::Null(_), _) => return Ok(()),
        };
        let server_refs: Vec<Value> = servers
            .iter()
            .map(|(id, _)| json!({"$ref": format!("#/servers/{id}")}))
            .collect();
        for (id, server) in servers {
            self.servers.insert(id, server);
        }
        let parsed = template.and_then(|t| Template::parse(t).ok());
        let unknown_statuses = parsed
            .as_ref()
            .is_some_and(|t| t.vars().any(|v| v == Var::Status));
        if let (Some(t), SinkTargets::Broker(target)) = (&parsed, &targets) {
            self.sinks.insert(
                name.clone(),
                template_variables(spec.kind(), t, target, common.events, settings),
            );
        }
        let role = if common.required {
            "required"
        } else {
            "optional: the webhook's answer does not wait for it"
        };
        let channels: Vec<(Destination, String, bool)> = match &targets {
            SinkTargets::File {
                settings: f,
                routes,
            } => routes
                .checkable
                .iter()
                .map(|d| (d.clone(), format!("file {}", f.path.display()), false))
                .collect(),
            SinkTargets::Broker(t) => named(t),
            SinkTargets::Nothing => Vec::new(),
        };
        for (dest, destination, per_call) in channels {
            let id = self.unique_channel_id(&key(&format!("{name}.{}", dest.name)));
            let mut messages = Map::new();
            let mut kinds: Vec<EventKind> = Vec::new();
            for p in &dest.events {
                if !kinds.contains(&p.kind) {
                    kinds.push(p.kind);
                }
            }
            for kind in &kinds {
                let message_id = format!("{name}.{kind}");
                if !self.messages.contains_key(&message_id) {
                    let m = message(protocol, *kind, settings, &name);
                    self.messages.insert(message_id.clone(), m);
                }
                messages.insert(
                    kind.to_string(),
                    json!({"$ref": format!("#/components/messages/{message_id}")}),
                );
            }
            let mut description = format!(
                "Sink `{name}` ({}, {role}) publishes here: {}.",
                spec.kind(),
                describe(&dest.events)
            );
            if unknown_statuses && !per_call {
                description.push_str(
                    " A status this version does not know goes to a destination of its own \
                     (the status escaped in place of `{status}`), not listed here.",
                );
            }
            let mut channel = Map::new();
            channel.insert("address".into(), json!(dest.name));
            channel.insert("title".into(), json!(destination));
            channel.insert("description".into(), json!(description));
            channel.insert("servers".into(), json!(server_refs));
            channel.insert("messages".into(), Value::Object(messages));
            let parameters: Map<String, Value> = PER_CALL
                .iter()
                .filter(|(var, _)| dest.name.contains(&format!("{{{var}}}")))
                .map(|(var, what)| {
                    let text = format!(
                        "{what} Escaped into one word of the name: bytes the name treats \
                         specially become `%XX` (Kafka: `_XX`), a long value is shortened to a \
                         prefix and a hash."
                    );
                    (var.to_string(), json!({"description": text}))
                })
                .collect();
            if !parameters.is_empty() {
                channel.insert("parameters".into(), Value::Object(parameters));
            }
            if let Some(b) = channel_bindings(protocol, &dest.name, per_call) {
                channel.insert("bindings".into(), b);
            }
            if let Protocol::Nats(n) = protocol {
                channel.insert(
                    "x-nats-jetstream".into(),
                    json!({
                        "enabled": n.jetstream.enabled,
                        "stream": n.jetstream.stream,
                    }),
                );
            }
            channel.insert(X_SINK.into(), json!(name));
            channel.insert(X_DESTINATION.into(), json!(destination));
            let operation_messages: Vec<Value> = kinds
                .iter()
                .map(|k| json!({"$ref": format!("#/channels/{id}/messages/{k}")}))
                .collect();
            let mut operation = json!({
                "action": "send",
                "channel": {"$ref": format!("#/channels/{id}")},
                "summary": format!("Sink `{name}` publishes each event it wants here."),
                "messages": operation_messages,
            });
            if let Some(b) = operation_bindings(protocol, settings) {
                operation["bindings"] = b;
            }
            self.operations.insert(format!("{id}.send"), operation);
            self.channels.insert(id, Value::Object(channel));
        }
        Ok(())
    }

    fn unique_channel_id(&self, base: &str) -> String {
        let mut id = base.to_string();
        let mut n = 2;
        while self.channels.contains_key(&id) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }
}

/// A broker sink's template and, for each variable in it, the values it takes: `kind` and
/// `type` those of the kinds the sink's events filter keeps; `status` the known statuses (and
/// `unknown`) the filter keeps, open to new ones unless the filter names every status; the
/// per-call values unbounded.
fn template_variables(
    kind: &str,
    t: &Template,
    target: &Target,
    events: Option<&[String]>,
    settings: &EventSettings,
) -> Value {
    let all: Vec<&Producible> = target
        .routes
        .checkable
        .iter()
        .chain(&target.routes.per_call)
        .flat_map(|d| &d.events)
        .collect();
    let mut kinds: Vec<EventKind> = Vec::new();
    let mut statuses: Vec<&str> = Vec::new();
    for p in &all {
        if !kinds.contains(&p.kind) {
            kinds.push(p.kind);
        }
        let s = p.status.unwrap_or(crate::template::ABSENT);
        if !statuses.contains(&s) {
            statuses.push(s);
        }
    }
    // Each entry `call.<kind>.<status>` pins a status; one `call.<kind>` lets any through.
    let statuses_bounded =
        events.is_some_and(|list| list.iter().all(|e| e.matches('.').count() == 2));
    let escaping = "Each value is escaped into one word of the destination name: bytes the name \
                    treats specially become `%XX` (Kafka topics: `_XX`), a long value is \
                    shortened to a prefix and a hash.";
    let mut variables = Map::new();
    for var in t.vars() {
        let v = match var {
            Var::Kind => json!({"enum": kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>()}),
            Var::Type => json!({
                "enum": kinds
                    .iter()
                    .map(|k| crate::event::event_type(settings, *k))
                    .collect::<Vec<_>>(),
            }),
            Var::Status if statuses_bounded => json!({"enum": statuses}),
            Var::Status => json!({
                "examples": statuses,
                "description": "The call status (`unknown` on events without one); a status \
                                the sender adds goes out unchanged, so the list is open.",
            }),
            Var::CallId | Var::AgentId | Var::Direction => {
                json!({"description": "A per-call value: not bounded by the configuration."})
            }
        };
        variables.insert(var.name().to_string(), v);
    }
    json!({
        "type": kind,
        "template": t.as_str(),
        "variables": variables,
        "description": escaping,
    })
}

/// Every destination of a broker sink, with its name in the report's words and whether it
/// depends on per-call values.
fn named(t: &Target) -> Vec<(Destination, String, bool)> {
    let checkable = t.routes.checkable.iter().map(|d| (d, false));
    let per_call = t.routes.per_call.iter().map(|d| (d, true));
    checkable
        .chain(per_call)
        .map(|(d, per_call)| (d.clone(), t.named(&d.name), per_call))
        .collect()
}

/// The message one sink writes for events of `kind`.
fn message(protocol: Protocol<'_>, kind: EventKind, settings: &EventSettings, sink: &str) -> Value {
    let [full, other, bare] = samples(kind, settings);
    let (wf, wo, wb) = (
        protocol.wire(&full, 1),
        protocol.wire(&other, 2),
        protocol.wire(&bare, 3),
    );
    let format = protocol.format();
    let ty = full.event.ty.clone();
    let payload = match format {
        Format::Binary => json!({"allOf": [
            {"$ref": format!("{SCHEMAS}CallData")},
            {"type": "object", "properties": {"kind": {"const": kind.as_str()}}},
        ]}),
        Format::Structured => json!({"allOf": [
            {"$ref": format!("{SCHEMAS}{EVENT_SCHEMA}")},
            {"type": "object", "properties": {
                "type": {"const": ty},
                "data": {"type": "object", "properties": {"kind": {"const": kind.as_str()}}},
            }},
        ]}),
    };
    let mode = match format {
        Format::Binary => "binary: the payload is the event's `data`, the attributes are headers",
        Format::Structured => "structured: the payload is the whole event",
    };
    let mut m = Map::new();
    m.insert("name".into(), json!(ty));
    m.insert("title".into(), json!(format!("call.{kind} ({sink})")));
    m.insert("summary".into(), json!(kind_summary(kind)));
    m.insert(
        "description".into(),
        json!(format!("CloudEvents {SPEC_VERSION}, {mode}.")),
    );
    if let Some(c) = &wf.content_type {
        m.insert("contentType".into(), json!(c));
    }
    if !wf.headers.is_empty() {
        m.insert(
            "headers".into(),
            fields_schema(&wf.headers, &wo.headers, &wb.headers, describe_header),
        );
    }
    m.insert("payload".into(), payload);
    let mut bindings = Map::new();
    match protocol {
        Protocol::Kafka(k, _) => {
            let what = if k.key == "{call_id}" {
                "The call id: one call's events share a partition and stay in order.".to_string()
            } else {
                format!("The key template `{}` over the event.", k.key)
            };
            let key = match (&wf.key, &wo.key) {
                (Some(a), Some(b)) if a == b => {
                    json!({"type": "string", "const": a, "description": what})
                }
                _ => json!({"type": "string", "description": what}),
            };
            bindings.insert(
                "kafka".into(),
                json!({"key": key, "bindingVersion": KAFKA_BINDING}),
            );
        }
        Protocol::Amqp(_) => {
            bindings.insert(
                "amqp".into(),
                json!({"messageType": ty, "bindingVersion": AMQP_BINDING}),
            );
            m.insert(
                "x-amqp-properties".into(),
                fields_schema(
                    &wf.properties,
                    &wo.properties,
                    &wb.properties,
                    describe_property,
                ),
            );
        }
        Protocol::Nats(_) | Protocol::File => {}
    }
    if !bindings.is_empty() {
        m.insert("bindings".into(), Value::Object(bindings));
    }
    m.insert(
        "x-cloudevents".into(),
        json!({
            "specversion": SPEC_VERSION,
            "type": ty,
            "mode": match format { Format::Binary => "binary", Format::Structured => "structured" },
        }),
    );
    Value::Object(m)
}

#[cfg(test)]
mod tests;
