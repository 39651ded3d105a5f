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
//!   ([`kafka::headers`], [`rabbitmq::message::build_message`], [`nats::message`]) run over
//!   synthetic events: a header present on an event without the optional attributes is
//!   required, and one whose value is the same on two events that differ in everything an event
//!   can differ in is a constant. So the document says what the code writes.

use lapin::types::AMQPValue;
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};

use crate::config::{Settings, SinkSettings};
use crate::event::binding::{Format, Headers, Outgoing, ORIGIN_RECONCILE};
use crate::event::{json_schema, EventKind, EventSettings, SPEC_VERSION};
use crate::preflight::{self, describe, Destination, Producible, SinkTargets, Target};
use crate::sinks::kafka::KafkaSinkSettings;
use crate::sinks::nats::NatsSinkSettings;
use crate::sinks::rabbitmq::preflight::percent_decode;
use crate::sinks::rabbitmq::RabbitmqSinkSettings;
use crate::sinks::{kafka, nats, rabbitmq};
use crate::template::{Template, TemplateError, Var};

/// The AsyncAPI version of the document.
pub const ASYNCAPI_VERSION: &str = "3.0.0";
const KAFKA_BINDING: &str = "0.5.0";
const AMQP_BINDING: &str = "0.3.0";
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

/// Why no document can be made (only for settings that `validate` would refuse).
#[derive(Debug, thiserror::Error)]
pub enum AsyncApiError {
    #[error("sink {sink}: invalid destination template: {message}")]
    Destination { sink: String, message: String },
    #[error("sink {sink}: invalid key template")]
    Key {
        sink: String,
        #[source]
        source: TemplateError,
    },
    /// The message never repeats the URL (it may hold a password).
    #[error("sink {sink}: the broker URL does not parse: {message}")]
    Url { sink: String, message: String },
}

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

/// How one sink writes its messages.
#[derive(Clone, Copy)]
enum Protocol<'a> {
    Kafka(&'a KafkaSinkSettings, &'a Template),
    Amqp(&'a RabbitmqSinkSettings),
    Nats(&'a NatsSinkSettings),
    File,
}

/// A message's wire form for one synthetic event: headers, protocol properties (AMQP), the
/// record key (Kafka), the payload's content type.
#[derive(Default)]
struct Wire {
    headers: Vec<(String, Value)>,
    properties: Vec<(String, Value)>,
    key: Option<String>,
    content_type: Option<String>,
}

impl Protocol<'_> {
    fn format(self) -> Format {
        match self {
            Protocol::Kafka(k, _) => k.format,
            Protocol::Amqp(r) => r.format,
            Protocol::Nats(n) => n.format,
            Protocol::File => Format::Structured,
        }
    }

    /// The message the sink writes for `out` (`variant` numbers AMQP's publish sequence).
    fn wire(self, out: &Outgoing, variant: u64) -> Wire {
        match self {
            Protocol::Kafka(k, key) => {
                use rdkafka::message::Headers as _;
                let h = kafka::headers(&Headers::KAFKA.encode(k.format, out));
                let headers: Vec<(String, Value)> = h
                    .iter()
                    .map(|h| {
                        let v = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                        (h.key.to_string(), Value::String(v))
                    })
                    .collect();
                let content_type = headers
                    .iter()
                    .find(|(n, _)| n == "content-type")
                    .and_then(|(_, v)| v.as_str().map(str::to_string));
                Wire {
                    headers,
                    properties: Vec::new(),
                    key: Some(key.render(&out.event)),
                    content_type,
                }
            }
            Protocol::Amqp(r) => {
                let (_, props) = rabbitmq::message::build_message(r.format, out, variant);
                let value = |v: &AMQPValue| match v {
                    AMQPValue::LongString(s) => {
                        Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
                    }
                    AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
                    AMQPValue::LongLongInt(n) => json!(n),
                    other => Value::String(format!("{other:?}")),
                };
                let headers = props
                    .headers()
                    .as_ref()
                    .map(|t| {
                        t.inner()
                            .iter()
                            .map(|(k, v)| (k.as_str().to_string(), value(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                let short = |s: &Option<lapin::types::ShortString>| {
                    s.as_ref().map(|s| Value::String(s.as_str().to_string()))
                };
                let properties = [
                    ("content_type", short(props.content_type())),
                    ("delivery_mode", props.delivery_mode().map(|m| json!(m))),
                    ("message_id", short(props.message_id())),
                    ("timestamp", props.timestamp().map(|t| json!(t))),
                    ("type", short(props.kind())),
                    ("app_id", short(props.app_id())),
                ]
                .into_iter()
                .filter_map(|(n, v)| v.map(|v| (n.to_string(), v)))
                .collect::<Vec<_>>();
                let content_type = properties
                    .iter()
                    .find(|(n, _)| n == "content_type")
                    .and_then(|(_, v)| v.as_str().map(str::to_string));
                Wire {
                    headers,
                    properties,
                    key: None,
                    content_type,
                }
            }
            Protocol::Nats(n) => {
                let js = n.jetstream.enabled.then_some(n.jetstream.stream.as_deref());
                let (h, _) = nats::message(n.format, js, out);
                let mut headers: Vec<(String, Value)> = h
                    .iter()
                    .filter_map(|(name, values)| {
                        let v = values.first()?.as_str().to_string();
                        Some((name.to_string(), Value::String(v)))
                    })
                    .collect();
                // A hash map: in a stable order for the document.
                headers.sort_by(|a, b| a.0.cmp(&b.0));
                let content_type = match n.format {
                    Format::Binary => Some(out.event.datacontenttype.clone()),
                    Format::Structured => headers
                        .iter()
                        .find(|(n, _)| n == "Content-Type")
                        .and_then(|(_, v)| v.as_str().map(str::to_string)),
                };
                Wire {
                    headers,
                    properties: Vec::new(),
                    key: None,
                    content_type,
                }
            }
            Protocol::File => Wire {
                content_type: Some("application/cloudevents+json".into()),
                ..Wire::default()
            },
        }
    }
}

/// Three synthetic events of `kind`: two with every optional attribute, differing in every
/// value an event can differ in, and one with none of them.
fn samples(kind: EventKind, settings: &EventSettings) -> [Outgoing; 3] {
    let make = |variant: usize, full: bool| {
        let status = full.then_some(["completed", "failed"][variant]);
        let mut e = preflight::synthetic_event(Producible { kind, status }, settings);
        e.id = format!("00000000-0000-8000-8000-00000000000{variant}");
        e.time = ["2026-01-01T00:00:00Z", "2026-02-03T04:05:06Z"][variant].into();
        let call = format!("contract-call-{variant}");
        e.data.call_id = call.clone();
        e.subject = call.clone();
        e.partitionkey = call;
        if full {
            e.origin = Some(ORIGIN_RECONCILE.into());
            e.traceparent = Some(format!(
                "00-0af7651916cd43dd8448eb211c80319{variant}-b7ad6b7169203331-01"
            ));
        }
        Outgoing::new(e)
    };
    [make(0, true), make(1, true), make(0, false)]
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

/// What each attribute header (any binding's prefix) and each other header carries.
fn describe_header(name: &str) -> String {
    let attribute = ["ce_", "ce-", "cloudEvents_"]
        .iter()
        .find_map(|p| name.strip_prefix(p));
    let encoded = if name.starts_with("ce-") {
        " Percent-encoded (the CloudEvents NATS binding): decode before use."
    } else {
        ""
    };
    let what = match attribute {
        Some("specversion") => "CloudEvents `specversion`.",
        Some("id") => {
            "CloudEvents `id`: the event id, the same on every redelivery of the same webhook: \
             deduplicate on it."
        }
        Some("source") => "CloudEvents `source` (the configured `event.source`).",
        Some("type") => "CloudEvents `type`: `<type_prefix>.call.<kind>.v1`.",
        Some("subject") => "CloudEvents `subject`: the call id.",
        Some("time") => "CloudEvents `time`: when the bridge received the webhook (RFC 3339).",
        Some("datacontenttype") => "CloudEvents `datacontenttype` of the payload.",
        Some("callstatus") => "Extension `callstatus`: the call status, on events that have one.",
        Some("partitionkey") => "Extension `partitionkey`: the call id.",
        Some("origin") => {
            "Extension `origin`: `reconcile` on an event backfilled from the platform's call \
             API because its webhook never arrived; absent on events from webhooks."
        }
        Some("traceparent") => "Extension `traceparent`: W3C trace context, when traced.",
        _ => match name {
            "traceparent" => {
                "W3C trace context of the publish (for tracing libraries), when traced."
            }
            "content-type" | "Content-Type" => "The payload's content type.",
            "Nats-Msg-Id" => {
                "The event id: JetStream drops a second message with the same id within the \
                 stream's duplicate window."
            }
            "Nats-Expected-Stream" => {
                "The stream the message must be stored in (the server refuses the publish \
                 otherwise)."
            }
            rabbitmq::SEQ_HEADER => {
                "Internal: the bridge's sequence number of this publish, with which it matches \
                 a returned message to its publish. Not the event id; ignore it."
            }
            _ => "",
        },
    };
    format!("{what}{encoded}")
}

/// What each AMQP message property carries.
fn describe_property(name: &str) -> String {
    match name {
        "content_type" => "The payload's content type.",
        "delivery_mode" => "2: persistent.",
        "message_id" => "The event id (CloudEvents `id`): deduplicate on it.",
        "timestamp" => "CloudEvents `time`, in whole seconds since the Unix epoch.",
        "type" => "CloudEvents `type`.",
        "app_id" => "The publishing application.",
        _ => "",
    }
    .to_string()
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

fn channel_bindings(protocol: Protocol<'_>, name: &str, per_call: bool) -> Option<Value> {
    match protocol {
        Protocol::Kafka(..) if !per_call => {
            Some(json!({"kafka": {"topic": name, "bindingVersion": KAFKA_BINDING}}))
        }
        Protocol::Amqp(r) => {
            let vhost = amqp_vhost(r);
            if r.exchange.is_empty() {
                return Some(json!({"amqp": {
                    "is": "queue",
                    "queue": {"name": name, "vhost": vhost},
                    "bindingVersion": AMQP_BINDING,
                }}));
            }
            let mut exchange = json!({"name": r.exchange, "vhost": vhost});
            if let Some(d) = &r.declare {
                exchange["type"] = serde_json::to_value(d.exchange_type).unwrap_or(Value::Null);
                exchange["durable"] = json!(d.durable);
                exchange["autoDelete"] = json!(false);
            }
            Some(json!({"amqp": {
                "is": "routingKey",
                "exchange": exchange,
                "bindingVersion": AMQP_BINDING,
            }}))
        }
        _ => None,
    }
}

fn operation_bindings(protocol: Protocol<'_>, settings: &EventSettings) -> Option<Value> {
    match protocol {
        Protocol::Amqp(r) => {
            let [full, ..] = samples(EventKind::Status, settings);
            let (_, props) = rabbitmq::message::build_message(r.format, &full, 0);
            Some(json!({"amqp": {
                "deliveryMode": props.delivery_mode().unwrap_or(1),
                // Every publish is mandatory: an unroutable message comes back and fails it.
                "mandatory": true,
                "timestamp": props.timestamp().is_some(),
                "bindingVersion": AMQP_BINDING,
            }}))
        }
        _ => None,
    }
}

/// One server per bootstrap broker.
fn kafka_servers(k: &KafkaSinkSettings) -> Vec<(String, Value)> {
    let prop = |name: &str| {
        k.librdkafka
            .get(name)
            .map(|v| v.expose_secret().to_ascii_uppercase())
    };
    let security = prop("security.protocol");
    let secure = matches!(security.as_deref(), Some("SSL" | "SASL_SSL"));
    let scheme = match prop("sasl.mechanism").as_deref() {
        _ if !matches!(security.as_deref(), Some("SASL_SSL" | "SASL_PLAINTEXT")) => None,
        Some("PLAIN") | None => Some("plain"),
        Some("SCRAM-SHA-256") => Some("scramSha256"),
        Some("SCRAM-SHA-512") => Some("scramSha512"),
        Some("GSSAPI") => Some("gssapi"),
        Some(_) => None,
    };
    let n = k.brokers.len();
    k.brokers
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let id = if n == 1 {
                k.name.clone()
            } else {
                format!("{}-{}", k.name, i + 1)
            };
            let mut s = json!({
                "host": b,
                "protocol": if secure { "kafka-secure" } else { "kafka" },
                "description": format!("Kafka bootstrap broker {} of {n} of sink `{}`.", i + 1, k.name),
            });
            if let Some(t) = scheme {
                s["security"] = json!([{"type": t}]);
            }
            (id, s)
        })
        .collect()
}

/// The vhost of a RabbitMQ sink's URL (`/` when the URL has no path).
fn amqp_vhost(r: &RabbitmqSinkSettings) -> String {
    reqwest::Url::parse(r.url.expose_secret())
        .ok()
        .map(|u| {
            let path = u.path().strip_prefix('/').unwrap_or(u.path()).to_string();
            if path.is_empty() {
                "/".to_string()
            } else {
                percent_decode(&path)
            }
        })
        .unwrap_or_else(|| "/".into())
}

/// The RabbitMQ server: scheme, host, port and vhost of the URL; never its user or password.
fn amqp_server(r: &RabbitmqSinkSettings) -> Result<Value, AsyncApiError> {
    let url = reqwest::Url::parse(r.url.expose_secret()).map_err(|e| AsyncApiError::Url {
        sink: r.name.clone(),
        message: e.to_string(),
    })?;
    let secure = url.scheme() == "amqps";
    let host = url.host_str().unwrap_or("localhost");
    let port = url.port().unwrap_or(if secure { 5671 } else { 5672 });
    let mut s = json!({
        "host": format!("{host}:{port}"),
        "pathname": format!("/{}", url.path().trim_start_matches('/')),
        "protocol": if secure { "amqps" } else { "amqp" },
        "protocolVersion": "0-9-1",
        "description": format!("RabbitMQ of sink `{}`, vhost `{}`.", r.name, amqp_vhost(r)),
    });
    if !url.username().is_empty() {
        s["security"] = json!([{"type": "userPassword"}]);
    }
    Ok(s)
}

/// One server per URL of a NATS sink's list; host and port only.
fn nats_servers(n: &NatsSinkSettings) -> Result<Vec<(String, Value)>, AsyncApiError> {
    let urls: Vec<&str> = n
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let count = urls.len();
    let auth =
        n.user.is_some() || n.token.is_some() || n.nkey.is_some() || n.credentials_file.is_some();
    let mut out = Vec::new();
    for (i, raw) in urls.into_iter().enumerate() {
        let with_scheme = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("nats://{raw}")
        };
        let url = reqwest::Url::parse(&with_scheme).map_err(|e| AsyncApiError::Url {
            sink: n.name.clone(),
            message: e.to_string(),
        })?;
        let host = url.host_str().unwrap_or("localhost");
        let port = url.port().unwrap_or(4222);
        let tls = url.scheme() == "tls" || n.tls.is_some();
        let id = if count == 1 {
            n.name.clone()
        } else {
            format!("{}-{}", n.name, i + 1)
        };
        let mode = if n.jetstream.enabled {
            "JetStream: each message is stored and acknowledged by the stream"
        } else {
            "core NATS: nothing is stored; only subscribers connected at the time receive it"
        };
        let mut s = json!({
            "host": format!("{host}:{port}"),
            "protocol": "nats",
            "description": format!(
                "NATS server {} of {count} of sink `{}` ({mode}){}.",
                i + 1,
                n.name,
                if tls { ", over TLS" } else { "" }
            ),
        });
        if auth || !url.username().is_empty() {
            s["security"] = json!([{"type": "userPassword"}]);
        }
        out.push((id, s));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
