//! Observability: metrics after known traffic, OTLP spans with a child per sink, the trace
//! context carried into the events, and no secrets in logs. Tracing and logs are process-wide,
//! so those tests run the binary (`Bridge`): the other tests of this binary keep tracing off.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use actix_web::{web, App, HttpResponse, HttpServer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

type Received = Arc<Mutex<Vec<Span>>>;

/// A minimal OTLP/HTTP (protobuf) receiver: collects every span posted to /v1/traces.
async fn otlp_receiver() -> (String, Received, actix_web::dev::ServerHandle) {
    let spans: Received = Arc::default();
    let data = web::Data::new(spans.clone());
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).route(
            "/v1/traces",
            web::post().to(|body: web::Bytes, spans: web::Data<Received>| async move {
                let req =
                    ExportTraceServiceRequest::decode(body.as_ref()).expect("valid OTLP protobuf");
                let mut out = spans.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        out.extend(ss.spans);
                    }
                }
                HttpResponse::Ok().finish()
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("http://{addr}"), spans, handle)
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str(span: &Span, key: &str) -> Option<String> {
    match attr(span, key) {
        Some(AnyValue::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The binary with traces on, exporting to an in-test OTLP receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_and_the_trace_continues_into_the_event() {
    let (endpoint, spans, receiver) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let yaml = format!(
        "log: {{format: json}}\ntraces: {{enabled: true, endpoint: \"{endpoint}\"}}\n{}",
        config_with_sinks(&format!(
            "{}  - {{name: fast, type: null}}\n",
            file_sink("archive", &path, "")
        ))
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let resp = reqwest::Client::new()
        .post(format!("{}/callback", bridge.base()))
        .header("X-API-Key", KEY)
        .header("traceparent", format!("00-{trace_id}-{parent_span}-01"))
        .body(status_payload(&unique("trace"), "completed").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // the event carries the trace on: same trace id, our own span as the parent
    let line = &read_lines(&path)[0];
    let tp = line["traceparent"].as_str().expect("traceparent extension");
    assert!(callbridge::telemetry::is_traceparent(tp), "{tp}");
    assert_eq!(callbridge::telemetry::trace_id_of(tp), Some(trace_id));
    assert!(!tp.contains(parent_span), "a new span id: {tp}");

    // The exporter sends what is left at shutdown at the latest.
    let (status, _) = bridge.stop().await;
    assert!(status.success(), "exit status {status:?}");
    let want_trace = hex::decode(trace_id).unwrap();
    let (server, children) = eventually(Duration::from_secs(20), "spans exported", || {
        let spans = spans.lock().unwrap().clone();
        let want_trace = want_trace.clone();
        async move {
            let server = spans
                .iter()
                .find(|s| s.trace_id == want_trace && s.name == "POST /callback")?
                .clone();
            let children: Vec<Span> = spans
                .iter()
                .filter(|s| s.parent_span_id == server.span_id && s.name.starts_with("send "))
                .cloned()
                .collect();
            (children.len() == 2).then_some((server, children))
        }
    })
    .await;
    assert_eq!(
        server.parent_span_id,
        hex::decode(parent_span).unwrap(),
        "continues the sender's span"
    );
    assert_eq!(
        hex::encode(&server.span_id),
        tp.split('-').nth(2).unwrap(),
        "the event names our span"
    );
    let mut systems: Vec<String> = children
        .iter()
        .map(|c| attr_str(c, "messaging.system").unwrap())
        .collect();
    systems.sort();
    assert_eq!(systems, ["file", "null"]);
    for c in &children {
        assert_eq!(
            attr_str(c, "messaging.message.id"),
            line["id"].as_str().map(String::from)
        );
        assert!(attr_str(c, "messaging.destination.name").is_some());
        assert_eq!(c.kind, 4, "SPAN_KIND_PRODUCER");
    }
    receiver.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_known_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let app = spawn(&config_with_sinks(&format!(
        "{}\
         \x20 - {{name: broken, type: file, path: /dev/full, required: false}}\n\
         \x20 - {{name: analyses, type: null, events: [call.analysis]}}\n",
        file_sink("archive", &path, "")
    )))
    .await;
    let a = status_payload(&unique("m"), "completed");
    assert_eq!(app.post(&a).await.status, 200);
    assert_eq!(app.post(&a).await.status, 200); // duplicate
    assert_eq!(
        app.post(&status_payload(&unique("m"), "voicemail"))
            .await
            .status,
        200
    );
    assert_eq!(app.post_raw("/callback", "{").await.status, 400);
    // The optional sink may finish after the answer (it never delays it): await its outcomes.
    let app_ref = &app;
    eventually(
        Duration::from_secs(5),
        "the optional sink's outcomes",
        || async move {
            app_ref
                .metrics()
                .await
                .contains(r#"callbridge_sink_publish_total{outcome="io",sink="broken"} 3"#)
                .then_some(())
        },
    )
    .await;
    let m = app.metrics().await;
    for expected in [
        r#"callbridge_http_requests_total{code="200",route="/callback"} 3"#,
        r#"callbridge_http_requests_total{code="400",route="/callback"} 1"#,
        r#"callbridge_events_total{type="ai.ringg.call.status.v1"} 3"#,
        r#"callbridge_sink_publish_total{outcome="acked",sink="archive"} 2"#,
        r#"callbridge_sink_publish_total{outcome="io",sink="broken"} 3"#,
        r#"callbridge_sink_publish_total{outcome="skipped",sink="analyses"} 3"#,
        r#"callbridge_idempotency_hits_total{sink="archive"} 1"#,
        r#"callbridge_sink_publish_duration_seconds_count{sink="archive"} 2"#,
        r#"callbridge_http_request_duration_seconds_count{route="/callback"} 4"#,
        r#"callbridge_sink_ready{sink="archive"} 1"#,
        "callbridge_unknown_status_total 1",
        // the scrape is on the admin listener, outside the webhook listener's gauge
        "callbridge_http_requests_in_flight 0",
        &format!(
            r#"callbridge_build_info{{schema="v1",version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(
            m.lines().any(|l| l == expected),
            "missing `{expected}` in:\n{m}"
        );
    }
    app.stop().await;
}

/// Runs the binary at debug level with secrets in its config and requests; none may be logged,
/// and redaction (on by default) keeps everything in `data` that is not an identifier out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_redacted_fields_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let secret_key = "sk-very-secret-4f1d9a";
    let secret_token = "tok-very-secret-77c2";
    // broker credentials of optional sinks that cannot connect: their errors get logged
    let rabbit_pw = "rmq-secret-pw-9d";
    let nats_pw = "nats-secret-pw-3e";
    let kafka_pw = "kafka-secret-pw-5f";
    let yaml = format!(
        "server: {{listen: \"127.0.0.1:0\"}}\nlog: {{format: json}}\n\
         auth: {{api_keys: {{keys: [\"${{CB_LOG_TEST_KEY}}\"]}}, bearer: {{tokens: [\"{secret_token}\"]}}}}\n\
         sinks:\n  - {{name: archive, type: file, path: \"{}\"}}\n\
         \x20 - {{name: mq, type: rabbitmq, required: false, timeout_ms: 500, exchange: x,\
                 routing_key: k, url: \"amqp://cb:{rabbit_pw}@127.0.0.1:1/%2f\"}}\n\
         \x20 - {{name: bus, type: nats, required: false, timeout_ms: 500, subject: s,\
                 url: \"nats://127.0.0.1:4222\", user: cb, password: \"{nats_pw}\", jetstream: {{enabled: false}}}}\n\
         \x20 - {{name: log, type: kafka, required: false, timeout_ms: 500, topic: t, brokers: \"127.0.0.1:1\",\
                 librdkafka: {{security.protocol: SASL_PLAINTEXT, sasl.mechanism: PLAIN, sasl.username: cb,\
                 sasl.password: \"{kafka_pw}\"}}}}\n",
        path.display()
    );
    let bridge = Bridge::start(
        dir.path(),
        &yaml,
        &[("CB_LOG_TEST_KEY", secret_key), ("RUST_LOG", "trace")],
    );
    let client = reqwest::Client::new();
    let url = format!("{}/callback", bridge.base());
    let call_id = unique("logs");
    let mut body = status_payload(&call_id, "completed");
    body["data"]["custom_args"] = serde_json::json!({"customer_email": "jane.doe@example.com"});
    body["data"]["customer_note"] = serde_json::Value::from("note-about-a-person-8a");
    let body = body.to_string();
    for (h, v) in [
        ("X-API-Key", secret_key.to_string()),
        ("Authorization", format!("Bearer {secret_token}")),
    ] {
        let r = client
            .post(&url)
            .header(h, v)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let r = client
        .post(&url)
        .header("X-API-Key", "sk-wrong-guess-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let (_, logs) = bridge.stop().await;
    assert!(
        logs.contains("normalised event"),
        "debug event log present:\n{logs}"
    );
    assert!(logs.contains("[redacted]"));
    let event_line = logs
        .lines()
        .find(|l| l.contains("normalised event"))
        .unwrap_or_default();
    assert!(
        event_line.contains(&call_id),
        "identifiers stay: {event_line}"
    );
    for secret in [
        secret_key,
        secret_token,
        rabbit_pw,
        nats_pw,
        kafka_pw,
        "sk-wrong-guess-1",
        "+1987654321",
        "Hello, this is a test call",
        "jane.doe@example.com",
        "note-about-a-person-8a",
    ] {
        let leak = logs.lines().find(|l| l.contains(secret));
        assert!(
            leak.is_none(),
            "{secret} leaked into the logs: {}",
            leak.unwrap_or_default()
        );
    }
    // the events themselves keep the data
    assert_eq!(read_lines(&path)[0]["data"]["from_number"], "+1987654321");
}

/// A port where every connection is accepted and closed at once (a broker that keeps failing),
/// and how many connections were tried.
async fn slamming_door() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = tries.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            drop(socket);
        }
    });
    (port, tries)
}

/// Brokers that fail every connection for as long as the test runs: each sink says so in a
/// few lines, however many times its client retries (it was two lines per Kafka retry, 2,719
/// lines in 40 s), and the count of what was held back is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_a_few_lines_not_a_log_storm() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let (kafka, kafka_tries) = slamming_door().await;
    let (amqp, amqp_tries) = slamming_door().await;
    let (nats, nats_tries) = slamming_door().await;
    let yaml = format!(
        "server: {{listen: \"127.0.0.1:0\"}}\nlog: {{format: json}}\nauth: {{mode: none}}\n\
         sinks:\n\
         \x20 - {{name: bus, type: kafka, topic: t, brokers: \"127.0.0.1:{kafka}\"}}\n\
         \x20 - {{name: mq, type: rabbitmq, exchange: x, routing_key: k, url: \"amqp://guest:guest@127.0.0.1:{amqp}/%2f\"}}\n\
         \x20 - {{name: js, type: nats, subject: s, url: \"nats://127.0.0.1:{nats}\"}}\n"
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    // Every client retries several times: the storm's conditions.
    eventually(Duration::from_secs(60), "each client to retry", || async {
        let tries = [&kafka_tries, &amqp_tries, &nats_tries].map(|t| t.load(Relaxed));
        (tries[0] >= 12 && tries[1] >= 5 && tries[2] >= 5).then_some(())
    })
    .await;
    let tries = [&kafka_tries, &amqp_tries, &nats_tries].map(|t| t.load(Relaxed));
    let (_, logs) = bridge.stop().await;
    for sink in ["bus", "mq", "js"] {
        let lines: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(&format!("\"sink\":\"{sink}\"")))
            .collect();
        assert!(
            !lines.is_empty() && lines.len() <= 5,
            "{sink}: {} lines for tries {tries:?}:\n{}",
            lines.len(),
            lines.join("\n")
        );
    }
    // The clients' own lines per failed attempt are not in the default level, and the whole
    // log stays short (startup, a few lines per sink, shutdown).
    for client in ["lapin", "async_nats", "rdkafka"] {
        assert!(
            !logs.contains(&format!("\"target\":\"{client}")),
            "{client} lines at the default level: {logs}"
        );
    }
    let total = logs.lines().count();
    assert!(total <= 30, "{total} lines for tries {tries:?}:\n{logs}");
}
