//! The document's servers: each sink's broker addresses from host, port and path only, so no
//! user name, password or token can reach the document.

use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::error::AsyncApiError;
use crate::sinks::kafka::KafkaSinkSettings;
use crate::sinks::nats::NatsSinkSettings;
use crate::sinks::rabbitmq::preflight::percent_decode;
use crate::sinks::rabbitmq::RabbitmqSinkSettings;

/// One server per bootstrap broker.
pub(super) fn kafka_servers(k: &KafkaSinkSettings) -> Vec<(String, Value)> {
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
pub(super) fn amqp_vhost(r: &RabbitmqSinkSettings) -> String {
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
pub(super) fn amqp_server(r: &RabbitmqSinkSettings) -> Result<Value, AsyncApiError> {
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
pub(super) fn nats_servers(n: &NatsSinkSettings) -> Result<Vec<(String, Value)>, AsyncApiError> {
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
