use super::*;
use crate::config::Env;
use crate::sinks::rabbitmq;
use crate::sinks::rabbitmq::preflight::percent_decode;

fn settings(yaml: &str) -> Settings {
    let env = Env::vars([
        ("CALLBRIDGE_API_KEY", "k"),
        ("CALLBRIDGE_BEARER_TOKEN", "t"),
        // The example configs' admin listener (0.0.0.0:9090) needs its token.
        ("CALLBRIDGE_ADMIN_TOKEN", "admin-token-0123456789"),
    ]);
    match Settings::from_yaml(yaml, "test", &env) {
        Ok((s, _)) => s,
        Err(e) => panic!("{e:?}"),
    }
}

const AUTH: &str = "auth: {api_keys: {header: X-API-Key, keys: [k]}}\n";

fn doc(sinks: &str) -> Value {
    document(&settings(&format!("{AUTH}sinks:\n{sinks}"))).unwrap()
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

/// Every example configuration, the embedded default, and configurations with filters,
/// per-call templates, the default exchange and a null sink: the channels are exactly the
/// destinations `validate --connect` enumerates.
#[test]
fn the_channels_are_what_validate_connect_enumerates() {
    let mut configs: Vec<(String, String)> = std::fs::read_dir("examples/configs")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    assert!(configs.len() >= 4, "{configs:?}");
    configs.push((
        "default".into(),
        crate::config::DEFAULT_CONFIG_YAML.to_string(),
    ));
    configs.push((
            "mixed".into(),
            format!(
                "{AUTH}sinks:
  - {{name: k, type: kafka, brokers: \"a:9092,b:9092\", topic: \"calls.{{kind}}.{{call_id}}\"}}
  - {{name: q, type: rabbitmq, url: \"amqp://u:p@h/%2f\", exchange: \"\", routing_key: \"calls.{{kind}}\", events: [call.status.completed, call.analysis]}}
  - {{name: n, type: nats, url: \"nats://h:4222\", subject: \"c.{{kind}}.{{status}}\", events: [call.started]}}
  - {{name: z, type: \"null\"}}
"
            ),
        ));
    for (name, yaml) in configs {
        let s = settings(&yaml);
        let d = document(&s).unwrap();
        let want = sorted(enumerated(&s));
        assert!(!want.is_empty(), "{name}: nothing enumerated");
        assert_eq!(sorted(channel_destinations(&d)), want, "{name}");
        // One operation per channel, sending there.
        let channels = d["channels"].as_object().unwrap();
        let operations = d["operations"].as_object().unwrap();
        assert_eq!(operations.len(), channels.len(), "{name}");
        for (id, op) in operations {
            assert_eq!(op["action"], "send", "{id}");
            let target = op["channel"]["$ref"].as_str().unwrap();
            let channel = target.strip_prefix("#/channels/").unwrap();
            assert!(channels.contains_key(channel), "{id} -> {target}");
        }
    }
}

#[test]
fn every_destination_a_template_gives_is_a_channel_with_the_events_it_carries() {
    let d = doc("  - {name: mq, type: rabbitmq, url: \"amqp://g:g@127.0.0.1:5672/%2f\", exchange: calls, routing_key: \"calls.{kind}.{status}\", declare: {exchange_type: topic}}\n");
    let channels = d["channels"].as_object().unwrap();
    // 6 kinds x (7 known statuses + none)
    assert_eq!(channels.len(), 48);
    let c = &channels["mq.calls.status.completed"];
    assert_eq!(c["address"], "calls.status.completed");
    assert_eq!(
        c[X_DESTINATION],
        "exchange calls key calls.status.completed"
    );
    assert_eq!(
        c["messages"]["status"]["$ref"],
        "#/components/messages/mq.status"
    );
    assert_eq!(c["bindings"]["amqp"]["exchange"]["name"], "calls");
    assert_eq!(c["bindings"]["amqp"]["exchange"]["type"], "topic");
    assert_eq!(c["bindings"]["amqp"]["exchange"]["vhost"], "/");
    let description = c["description"].as_str().unwrap();
    assert!(
        description.contains("call.status.completed"),
        "{description}"
    );
    assert!(description.contains("does not know"), "{description}");
    assert!(channels["mq.calls.started.unknown"]["messages"]["started"].is_object());
}

#[test]
fn per_call_values_are_channel_parameters() {
    let d = doc("  - {name: k, type: kafka, brokers: \"127.0.0.1:9092\", topic: \"calls.{kind}.{call_id}\"}\n");
    let channels = d["channels"].as_object().unwrap();
    assert_eq!(channels.len(), 6);
    let c = &channels["k.calls.status._call_id_"];
    assert_eq!(c["address"], "calls.status.{call_id}");
    assert!(c["parameters"]["call_id"]["description"]
        .as_str()
        .unwrap()
        .contains("call id"));
    assert!(c["bindings"].get("kafka").is_none(), "no fixed topic");
}

#[test]
fn the_events_filter_bounds_the_channels_and_their_messages() {
    let d = doc("  - {name: n, type: nats, url: \"nats://127.0.0.1:4222\", subject: \"calls.{kind}.{status}\", events: [call.status.completed, call.started]}\n");
    let ids: Vec<&String> = d["channels"].as_object().unwrap().keys().collect();
    // `call.started` with any status (the enumeration's, and no status), `call.status` only
    // with `completed`.
    assert_eq!(ids.len(), 8 + 1, "{ids:?}");
    assert!(ids.iter().any(|i| *i == "n.calls.started.unknown"));
    assert!(ids.iter().any(|i| *i == "n.calls.status.completed"));
    assert!(!ids.iter().any(|i| *i == "n.calls.status.failed"));
    let messages = d["components"]["messages"].as_object().unwrap();
    let mut names: Vec<&String> = messages.keys().collect();
    names.sort();
    assert_eq!(names, ["n.started", "n.status"]);
}

#[test]
fn no_credential_reaches_the_document() {
    let d = doc(
            "  - {name: mq, type: rabbitmq, url: \"amqps://alice:s3cretPass@mq.example:5671/prod?heartbeat=5\", exchange: calls, routing_key: calls}
  - {name: js, type: nats, url: \"nats://bob:natsPw0rd@n1.example:4222,tls://n2.example\", subject: calls, token: null}
  - {name: k, type: kafka, brokers: \"k1.example:9093\", topic: calls, librdkafka: {security.protocol: SASL_SSL, sasl.mechanism: SCRAM-SHA-512, sasl.username: carol, sasl.password: kafkaPw9}}
",
        );
    let text = serde_json::to_string(&d).unwrap();
    for secret in [
        "s3cretPass",
        "natsPw0rd",
        "kafkaPw9",
        "alice",
        "bob",
        "carol",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let servers = &d["servers"];
    assert_eq!(servers["mq"]["host"], "mq.example:5671");
    assert_eq!(servers["mq"]["protocol"], "amqps");
    assert_eq!(servers["mq"]["pathname"], "/prod");
    assert_eq!(servers["js-1"]["host"], "n1.example:4222");
    assert_eq!(servers["js-2"]["host"], "n2.example:4222");
    assert_eq!(servers["k"]["protocol"], "kafka-secure");
    assert_eq!(servers["k"]["security"][0]["type"], "scramSha512");
    assert_eq!(
        d["channels"]["mq.calls"]["servers"][0]["$ref"],
        "#/servers/mq"
    );
}

/// The headers each message declares are those the sinks' encoders write: the ones always
/// present are required, and constants are pinned.
#[test]
fn each_protocol_declares_the_cloudevents_binding_the_sink_writes() {
    let d = doc(
            "  - {name: k, type: kafka, brokers: \"127.0.0.1:9092\", topic: \"calls.{kind}\"}
  - {name: mq, type: rabbitmq, url: \"amqp://g:g@127.0.0.1:5672/%2f\", exchange: calls, routing_key: calls}
  - {name: js, type: nats, url: \"nats://127.0.0.1:4222\", subject: calls, jetstream: {stream: CALLS}}
  - {name: core, type: nats, url: \"nats://127.0.0.1:4222\", subject: live, format: structured, jetstream: {enabled: false}}
",
        );
    let m = &d["components"]["messages"];
    let k = &m["k.status"];
    assert_eq!(k["name"], "ai.ringg.call.status.v1");
    assert_eq!(k["contentType"], "application/json");
    let h = &k["headers"];
    let required: Vec<&str> = h["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        required,
        [
            "content-type",
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_subject",
            "ce_time",
            "ce_partitionkey"
        ]
    );
    for optional in [
        "traceparent",
        "ce_callstatus",
        "ce_origin",
        "ce_traceparent",
    ] {
        assert!(h["properties"][optional].is_object(), "{optional}");
    }
    assert_eq!(
        h["properties"]["ce_type"]["const"],
        "ai.ringg.call.status.v1"
    );
    assert_eq!(h["properties"]["ce_specversion"]["const"], "1.0");
    assert_eq!(h["properties"]["ce_origin"]["const"], "reconcile");
    assert!(h["properties"]["ce_id"].get("const").is_none());
    assert!(h["properties"]["ce_callstatus"].get("const").is_none());
    assert_eq!(k["bindings"]["kafka"]["key"]["type"], "string");
    assert_eq!(
        k["payload"]["allOf"][0]["$ref"],
        "#/components/schemas/CallData"
    );

    let mq = &m["mq.analysis"];
    let h = &mq["headers"]["properties"];
    assert!(h["cloudEvents_id"].is_object());
    assert!(
        h.get("cloudEvents_datacontenttype").is_none(),
        "it is content_type"
    );
    assert_eq!(h[rabbitmq::SEQ_HEADER]["type"], "integer");
    let p = &mq["x-amqp-properties"]["properties"];
    assert_eq!(p["delivery_mode"]["const"], 2);
    assert_eq!(p["app_id"]["const"], rabbitmq::APP_ID);
    assert!(p["message_id"].get("const").is_none());
    assert_eq!(p["type"]["const"], "ai.ringg.call.analysis.v1");
    assert_eq!(
        mq["bindings"]["amqp"]["messageType"],
        "ai.ringg.call.analysis.v1"
    );
    assert_eq!(
        d["operations"]["mq.calls.send"]["bindings"]["amqp"]["deliveryMode"],
        2
    );

    let js = &m["js.started"]["headers"];
    assert!(js["required"]
        .as_array()
        .unwrap()
        .contains(&json!("Nats-Msg-Id")));
    assert_eq!(js["properties"]["Nats-Expected-Stream"]["const"], "CALLS");
    assert!(js["properties"]["ce-datacontenttype"].is_object());
    let core = &m["core.started"];
    assert!(core["headers"]["properties"].get("Nats-Msg-Id").is_none());
    assert_eq!(core["contentType"], "application/cloudevents+json");
    assert_eq!(
        core["payload"]["allOf"][0]["$ref"],
        "#/components/schemas/CallEvent"
    );
}

/// The payload schemas are the committed JSON Schema, only moved.
#[test]
fn the_payload_schemas_are_the_committed_json_schema() {
    let schemas = component_schemas();
    let mut back = rewrite_refs(schemas[EVENT_SCHEMA].clone(), SCHEMAS, "#/$defs/");
    let defs: Map<String, Value> = schemas
        .iter()
        .filter(|(k, _)| *k != EVENT_SCHEMA)
        .map(|(k, v)| (k.clone(), rewrite_refs(v.clone(), SCHEMAS, "#/$defs/")))
        .collect();
    back["$defs"] = Value::Object(defs);
    let committed: Value =
        serde_json::from_str(include_str!("../../../docs/schema/call-event.v1.json")).unwrap();
    let mut committed_without = committed.clone();
    committed_without.as_object_mut().unwrap().remove("$schema");
    assert_eq!(back, committed_without);
    let text = serde_json::to_string(&schemas).unwrap();
    assert!(!text.contains("#/$defs/"));
}

#[test]
fn each_sinks_template_lists_the_values_its_variables_take() {
    let d = doc("  - {name: mq, type: rabbitmq, url: \"amqp://g:g@127.0.0.1:5672/%2f\", exchange: calls, routing_key: \"calls.{kind}.{status}\", events: [call.status, call.analysis.completed]}
  - {name: n, type: nats, url: \"nats://127.0.0.1:4222\", subject: \"c.{type}.{call_id}\", events: [call.started.ongoing]}
  - {name: f, type: file, path: /tmp/x.jsonl}
");
    let mq = &d[X_SINKS]["mq"];
    assert_eq!(mq["template"], "calls.{kind}.{status}");
    assert_eq!(
        mq["variables"]["kind"]["enum"],
        json!(["status", "analysis"])
    );
    // `call.status` keeps every status: the list is open.
    assert!(mq["variables"]["status"].get("enum").is_none());
    assert_eq!(mq["variables"]["status"]["examples"][0], "registered");
    let n = &d[X_SINKS]["n"];
    assert_eq!(
        n["variables"]["type"]["enum"],
        json!(["ai.ringg.call.started.v1"])
    );
    assert!(n["variables"]["call_id"]["description"].is_string());
    assert!(d[X_SINKS].get("f").is_none(), "no template");
    let bounded = doc("  - {name: k, type: kafka, brokers: \"127.0.0.1:9092\", topic: \"calls.{status}\", events: [call.status.completed, call.status.failed]}\n");
    assert_eq!(
        bounded[X_SINKS]["k"]["variables"]["status"]["enum"],
        json!(["completed", "failed"])
    );
}

#[test]
fn vhosts_are_decoded() {
    assert_eq!(percent_decode("%2f"), "/");
    assert_eq!(percent_decode("a%2Fb%"), "a/b%");
    assert_eq!(percent_decode("prod"), "prod");
}
