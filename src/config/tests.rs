use super::*;
use crate::validate::assert_paths;

const MINIMAL: &str = r#"
auth: {api_keys: {keys: ["k1"]}}
sinks:
  - {name: archive, type: file, path: /tmp/x.jsonl}
"#;

fn load(text: &str) -> Result<(Settings, Vec<ConfigIssue>), ConfigError> {
    Settings::from_yaml(text, "test", &Env::empty())
}

fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Err(ConfigError::Invalid(v)) => v.iter().map(|i| i.to_string()).collect(),
        Err(e) => vec![format!("{e:#}")],
        Ok(_) => vec![],
    }
}

#[test]
fn shape_and_meaning_are_reported_in_one_run() {
    // A typo'd section, a sink with a shape error and two sinks with semantic errors: every
    // one of them in one run, each sink by its index in the file.
    let errs = errors(
        r#"
auth: {api_keys: {keys: ["k1"]}}
logs: {level: debug}
sinks:
  - {name: bus, type: kafka, brokers: "k:9092", topic: "calls.{knd}"}
  - {name: amqp, type: rabbitmq, url: "amqp://h", exchange: x, routing_key: r, colour: red}
  - {name: archive, type: file, path: ""}
"#,
    );
    let want = [
        "(root): unknown section `logs` (did you mean `log`?)",
        "sinks[1] (amqp).colour: unknown field `colour`",
        "sinks[0] (bus).topic: ",
        "sinks[2] (archive).path: ",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "missing {w:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
    // A required section that does not deserialise leaves nothing meaningful to check.
    let errs = errors("auth: {api_kys: {}}\nsinks: [{name: a, type: file, path: ''}]\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("auth.api_kys"), "{errs:#?}");
    // Sinks taken out do not make the list look empty.
    let errs = errors("auth: {mode: none}\nsinks: [{name: a, type: fil, path: x}]\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
}

#[test]
fn embedded_default_is_valid_and_warns_about_the_sample_key() {
    let (s, warnings) = load(DEFAULT_CONFIG_YAML).expect("default config loads");
    assert_eq!(s.server.listen, "127.0.0.1:8080");
    assert_eq!(s.server.path, "/callback");
    assert_eq!(s.sinks.len(), 1);
    assert!(warnings.iter().any(|w| w.path == "auth.api_keys.keys[0]"));
}

#[test]
fn omitted_scalars_take_defaults() {
    let (s, _) = load(MINIMAL).unwrap();
    assert_eq!(s.server.deadline_ms, 8000);
    assert_eq!(s.server.max_body_bytes, 1 << 20);
    assert_eq!(s.idempotency.window_secs, 1800);
    assert_eq!(s.event.type_prefix, "ai.ringg");
    assert_eq!(s.auth.api_keys.as_ref().unwrap().header, "X-API-Key");
    let c = s.sinks[0].spec().common();
    assert!(c.required);
    assert_eq!(c.timeout_ms, 5000);
    assert!(s.log.redact_pii, "no log section: personal data redacted");
    let (s, _) = load(&format!("log: {{format: json}}\n{MINIMAL}")).unwrap();
    assert!(s.log.redact_pii, "log section without redact_pii: redacted");
    let (s, _) = load(&format!("log: {{redact_pii: false}}\n{MINIMAL}")).unwrap();
    assert!(!s.log.redact_pii, "asked for: verbatim");
}

#[test]
fn a_cap_that_cannot_hold_the_window_at_the_expected_rate_is_warned() {
    let warned = |rate: u64, max: u64| {
        let yaml =
                format!("idempotency: {{window_secs: 1800, max_entries: {max}, expected_rate_per_sec: {rate}}}\n{MINIMAL}");
        let (_, warnings) = load(&yaml).unwrap();
        warnings
            .iter()
            .find(|w| w.path == "idempotency.max_entries")
            .map(|w| w.message.clone())
    };
    assert_eq!(warned(100, 180_000), None, "exactly the window");
    let w = warned(100, 179_999).expect("one short");
    assert!(
        w.contains("holds 1799 s") && w.contains("at least 180000"),
        "{w}"
    );
    assert!(warned(10_000, 100_000).is_some_and(|w| w.contains("holds 10 s")));
    let (_, warnings) = load(MINIMAL).unwrap();
    assert!(
        !warnings.iter().any(|w| w.path == "idempotency.max_entries"),
        "no rate given: nothing to judge"
    );
}

#[test]
fn the_shared_ledger_needs_its_server_and_sane_settings() {
    let (s, _) = load(MINIMAL).unwrap();
    assert_eq!(s.idempotency.store, LedgerStore::Memory);
    let (s, _) = load(&format!(
        "idempotency: {{store: nats-kv, url: \"nats://n:4222\"}}\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(s.idempotency.store, LedgerStore::NatsKv);
    assert_eq!(
        (
            s.idempotency.bucket.as_str(),
            s.idempotency.replicas,
            s.idempotency.lease_secs
        ),
        ("callbridge-ledger", 1, 52)
    );
    let errs = errors(&format!(
            "idempotency: {{store: nats-kv, bucket: \"a.b\", namespace: \"x.y\", replicas: 6, lease_secs: 0, user: u}}\n{MINIMAL}"
        ));
    for path in [
        "idempotency.url",
        "idempotency.bucket",
        "idempotency.namespace",
        "idempotency.replicas",
        "idempotency.lease_secs",
        "idempotency.user",
    ] {
        assert!(errs.iter().any(|e| e.contains(path)), "{path}: {errs:?}");
    }
    assert_eq!(errs.len(), 6, "{errs:?}");
    // The memory store ignores the nats-kv keys.
    assert!(errors(&format!("idempotency: {{replicas: 9}}\n{MINIMAL}")).is_empty());
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    let errs = errors(
        r#"
auth: {api_keys: {keys: ["k1"]}}
sinks:
  - {name: a, type: file, path: /tmp/x}
  - {name: b, type: file, path: /tmp/y, topc: x}
"#,
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("sinks[1]"), "{errs:?}");
    assert!(errs[0].contains("topc"), "{errs:?}");
}

#[test]
fn every_semantic_error_is_reported_by_path() {
    let errs = errors(
        r#"
server: {deadline_ms: 10000, path: callback}
auth: {api_keys: {keys: []}}
sinks:
  - {name: a, type: file, path: /tmp/x, events: [call.nope]}
  - {name: a, type: file, path: /tmp/y, timeout_ms: 0}
"#,
    );
    assert_paths(
        &errs,
        &[
            "server.deadline_ms",
            "server.path",
            "auth.api_keys.keys",
            "sinks[0].events[0]",
            "sinks[1].name",
            "sinks[1].timeout_ms",
        ],
    );
}

#[test]
fn in_flight_limits_are_checked() {
    let sinks = "auth: {mode: none}\nsinks: [{name: a, type: file, path: /tmp/x}]";
    let errs = errors(&format!(
            "server: {{max_in_flight: 0, max_body_bytes: 2048, max_in_flight_bytes: 2047, max_processing_bytes: 100}}\n{sinks}"
        ));
    assert_paths(
        &errs,
        &[
            "server.max_in_flight",
            "server.max_in_flight_bytes",
            "server.max_processing_bytes",
        ],
    );
    let errs = errors(&format!(
        "server: {{max_in_flight_bytes: 8589934592, max_processing_bytes: 8589934592}}\n{sinks}"
    ));
    assert_paths(
        &errs,
        &["server.max_in_flight_bytes", "server.max_processing_bytes"],
    );
    let (s, _) = load(&format!(
            "server: {{max_body_bytes: 2048, max_in_flight_bytes: 2048, max_processing_bytes: 2048}}\n{sinks}"
        ))
        .unwrap();
    assert_eq!(s.server.max_in_flight, 256, "default");
    let (s, _) = load(sinks).unwrap();
    assert_eq!(
        s.server.max_in_flight_bytes,
        32 * s.server.max_body_bytes,
        "many bodies arriving at once"
    );
    assert_eq!(
        s.server.processing_bytes(),
        s.server.max_body_bytes,
        "one maximum-size body parsed at once"
    );
    let (s, _) = load(&format!(
        "server: {{max_body_bytes: 4194304, max_in_flight_bytes: 4194304}}\n{sinks}"
    ))
    .unwrap();
    assert_eq!(
        s.server.processing_bytes(),
        4194304,
        "follows max_body_bytes"
    );
    assert!(errors(&format!("server: {{max_in_flite: 3}}\n{sinks}"))
        .iter()
        .any(|e| e.contains("max_in_flite")));
}

#[test]
fn auth_must_be_explicit() {
    let errs = errors("auth: {}\nsinks: [{name: a, type: file, path: /tmp/x}]");
    assert!(errs.iter().any(|e| e.starts_with("auth:")), "{errs:?}");
    let (_, warnings) =
        load("auth: {mode: none}\nsinks: [{name: a, type: file, path: /tmp/x}]").unwrap();
    assert!(warnings.iter().any(|w| w.path == "auth.mode"));
}

#[test]
fn env_variables_expand_in_place_and_unset_ones_are_named() {
    let env = Env::vars([("CB_TEST_KEY_SET", "from-env")]);
    let errs = match Settings::from_yaml(
            "auth: {api_keys: {keys: [\"${CB_TEST_KEY_UNSET}\"]}}\nsinks: [{name: a, type: file, path: /tmp/x}]",
            "test",
            &env,
        ) {
            Err(ConfigError::Invalid(v)) => v,
            other => panic!("{other:?}"),
        };
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "auth.api_keys.keys[0]", "{errs:?}");
    let (s, _) = Settings::from_yaml(
            "auth: {api_keys: {keys: [\"${CB_TEST_KEY_SET}\"]}}\nsinks: [{name: a, type: file, path: /tmp/x}]",
            "test",
            &env,
        )
        .unwrap();
    assert_eq!(s.auth.api_keys.unwrap().keys[0].expose_secret(), "from-env");
}

#[test]
fn env_overrides_single_values() {
    let env = Env::vars([("CALLBRIDGE__IDEMPOTENCY__MAX_ENTRIES", "77")]);
    let (s, _) = Settings::from_yaml(MINIMAL, "test", &env).unwrap();
    assert_eq!(s.idempotency.max_entries, 77);
    assert_eq!(s.sinks.len(), 1, "sinks are not merged with anything");
}

#[test]
fn warns_when_a_body_can_make_an_event_a_required_sink_never_takes() {
    let config = |body: usize, extra: &str| {
        format!(
            "server: {{max_body_bytes: {body}}}\nauth: {{api_keys: {{keys: [\"k1\"]}}}}\n\
                 sinks:\n  - {{name: k, type: kafka, brokers: \"a:9092\", topic: calls{extra}}}\n"
        )
    };
    let (_, warnings) = load(&config(1 << 20, "")).unwrap();
    let w = warnings
        .iter()
        .find(|w| w.path == "sinks[0] (k)")
        .expect("a warning for the kafka sink");
    assert!(
        w.message.contains("1000000") && w.message.contains("413"),
        "{w}"
    );
    for ok in [config(256 << 10, ""), config(1 << 20, ", required: false")] {
        let (_, warnings) = load(&ok).unwrap();
        assert!(
            !warnings.iter().any(|w| w.path == "sinks[0]"),
            "{warnings:?}"
        );
    }
    let raised = config(1 << 20, ", librdkafka: {\"message.max.bytes\": 3000000}");
    let (_, warnings) = load(&raised).unwrap();
    assert!(
        !warnings.iter().any(|w| w.path == "sinks[0]"),
        "{warnings:?}"
    );
}

/// The security sections: signature, rate limit, TLS, the admin listener.
mod security {
    use crate::config::{ConfigError, Env, Settings};
    use crate::ingest::signature::settings::SignatureScheme;
    use crate::validate::assert_paths;

    fn errors(signature: &str) -> Vec<String> {
        let yaml = format!(
            "auth: {{signature: {signature}}}\nsinks: [{{name: a, type: file, path: /tmp/x}}]"
        );
        match Settings::from_yaml(&yaml, "test", &Env::empty()) {
            Err(ConfigError::Invalid(v)) => v.iter().map(|i| i.to_string()).collect(),
            Err(e) => vec![format!("{e:#}")],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn a_signature_alone_is_enough_authentication_and_takes_defaults() {
        let yaml = "auth: {signature: {scheme: standard-webhooks, secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]}}\n\
                    admin: {tokens: [an-admin-token-of-its-own]}\n\
                    sinks: [{name: a, type: file, path: /tmp/x}]";
        let (s, warnings) = Settings::from_yaml(yaml, "test", &Env::empty()).unwrap();
        let sig = s.auth.signature.unwrap();
        assert_eq!(sig.scheme, SignatureScheme::StandardWebhooks);
        assert_eq!(sig.tolerance_secs, 300);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn scheme_specific_fields_are_checked() {
        assert_paths(
            &errors("{scheme: standard-webhooks, secrets: [not!base64], header: X-Sig}"),
            &["auth.signature.secrets[0]", "auth.signature.header"],
        );
        assert_paths(
            &errors("{scheme: hmac, secrets: [], tolerance_secs: 0}"),
            &[
                "auth.signature.secrets",
                "auth.signature.tolerance_secs",
                "auth.signature.header",
            ],
        );
        assert_paths(
            &errors("{scheme: hmac, secrets: [s3cr3t-s3cr3t-s3cr3t-s3cr3t], header: 'bad header', timestamp_header: 'x:y'}"),
            &["auth.signature.header", "auth.signature.timestamp_header"],
        );
        assert!(
            errors("{scheme: hmac, secrets: [k], header: X-Sig, algorithm: md5}")
                .iter()
                .any(|e| e.contains("md5"))
        );
        assert!(errors(
            "{scheme: hmac, secrets: [s3cr3t-s3cr3t-s3cr3t-s3cr3t], header: X-Hub-Signature-256, algorithm: sha512, encoding: base64, prefix: 'sha512=', timestamp_header: X-Timestamp}"
        )
        .is_empty());
    }

    #[test]
    fn admin_listen_and_rate_limit_are_checked() {
        let errs = |server: &str| {
            match Settings::from_yaml(
            &format!("server: {server}\nauth: {{mode: none}}\nsinks: [{{name: a, type: file, path: /tmp/x}}]"),
            "test",
            &Env::empty(),
        ) {
            Err(ConfigError::Invalid(v)) => v.iter().map(|i| i.to_string()).collect(),
            Err(e) => vec![format!("{e:#}")],
            Ok(_) => vec![],
        }
        };
        assert_paths(&errs("{admin_listen: nope}"), &["server.admin_listen"]);
        assert_paths(
            &errs("{listen: '0.0.0.0:9000', admin_listen: '0.0.0.0:9000'}"),
            &["server.admin_listen"],
        );
        assert_paths(&errs("{listen: '0.0.0.0:9090'}"), &["server.admin_listen"]);
        assert!(errs("{admin_listen: '127.0.0.1:9090'}").is_empty());
        assert!(errs("{listen: '10.0.0.1:9090', admin_listen: '127.0.0.1:9090'}").is_empty());
        assert_paths(
            &errs("{rate_limit: {requests: 0, period_secs: 0, burst: 0}}"),
            &[
                "server.rate_limit.requests",
                "server.rate_limit.period_secs",
                "server.rate_limit.burst",
            ],
        );
        assert!(errs("{rate_limit: {requests: 10, by: nobody}}")
            .iter()
            .any(|e| e.contains("nobody")));
    }

    #[test]
    fn a_short_secret_is_warned_and_a_window_shorter_than_the_tolerance_too() {
        let yaml = "idempotency: {window_secs: 60}\n\
                    auth: {signature: {scheme: hmac, header: X-Sig, secrets: [short]}}\n\
                    sinks: [{name: a, type: file, path: /tmp/x}]";
        let (_, warnings) = Settings::from_yaml(yaml, "test", &Env::empty()).unwrap();
        let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
        assert!(paths.contains(&"auth.signature.secrets[0]"), "{paths:?}");
        assert!(paths.contains(&"idempotency.window_secs"), "{paths:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.path == "idempotency.window_secs" && w.message.contains("tolerance")),
            "{warnings:?}"
        );
    }
}
