//! `validate --connect` for RabbitMQ: does the exchange exist, and is a queue bound for each
//! routing key the config can render?
//!
//! **The exchange** is declared passively, each time on a channel of its own (a failed passive
//! declare closes its channel). A missing exchange is fine when `declare` is set: the bridge
//! declares it at connect. With the default exchange (`""`), a routing key reaches the queue of
//! that name, so each key's queue is declared passively instead: an exact answer.
//!
//! **Bindings.** AMQP 0-9-1 cannot list bindings, and every publish that could reveal a
//! `basic.return` also stores the message wherever it routes. Tried and measured against
//! RabbitMQ 3.10: on a channel in transaction mode (`tx.select`), a `mandatory` publish to an
//! unroutable key gets no `basic.return` at publish time; RabbitMQ routes it, holds the result
//! with the message until `tx.commit`, and only then returns it (`NO_ROUTE`). `tx.rollback`
//! discards message and return alike, so a rolled-back probe cannot tell routable from
//! unroutable, and committing would enqueue the routable ones. So, in this order:
//!
//! 1. the **management HTTP API** (`management_url`; by default the AMQP host's
//!    `http://host:15672`, or `https://host:15671` for `amqps`, with the AMQP credentials), when
//!    it answers: the exchange's type and its bindings, matched here as the exchange would (topic
//!    wildcards, direct equality, fanout);
//! 2. otherwise the **bindings this config declares** (`queues`, which the bridge binds at every
//!    connect): a key they match is routable; any other key is reported as not verifiable,
//!    because a binding made elsewhere cannot be seen — a warning, not a failure.

use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, LongString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::settings::{parse_management_url, parse_url, ExchangeType, RabbitmqSinkSettings};
use crate::sinks::preflight::{Check, Probe, ProbeError};

/// The longest wait for the management API, which may well be absent or firewalled.
const MANAGEMENT_WAIT: Duration = Duration::from_secs(3);

/// Connects within `budget` and checks the exchange and each of `keys`.
pub async fn probe(
    settings: &RabbitmqSinkSettings,
    keys: &[String],
    budget: Duration,
) -> Result<Probe, ProbeError> {
    let deadline = Instant::now() + budget;
    let uri = parse_url(settings.url.expose_secret()).map_err(ProbeError::Client)?;
    let props = ConnectionProperties::default().with_connection_name(LongString::from(format!(
        "callbridge preflight {}",
        settings.name
    )));
    let connection =
        match tokio::time::timeout(budget, Connection::connect_uri(uri.clone(), props)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(ProbeError::connect(
                    "the broker refused or is unreachable",
                    e,
                ))
            }
            Err(_) => {
                return Err(ProbeError::Connect {
                    message: format!("no answer within {} ms", budget.as_millis()),
                    source: None,
                })
            }
        };
    let result = check(&connection, settings, &uri, keys, deadline).await;
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        connection.close(200, "preflight done"),
    )
    .await;
    result
}

async fn check(
    connection: &Connection,
    settings: &RabbitmqSinkSettings,
    uri: &AMQPUri,
    keys: &[String],
    deadline: Instant,
) -> Result<Probe, ProbeError> {
    let exchange = settings.exchange.as_str();
    if exchange.is_empty() {
        let mut checks = Vec::with_capacity(keys.len());
        for key in keys {
            checks.push(match passive(connection, Passive::Queue(key)).await? {
                true => Check::ok(format!(
                    "queue {key} exists (the default exchange routes a key to the queue of \
                     that name)"
                )),
                false => Check::missing(format!(
                    "no queue named {key}: the default exchange routes a key only to the queue \
                     of that name"
                )),
            });
        }
        return Ok(Probe {
            checks,
            notes: Vec::new(),
        });
    }

    let exists = passive(connection, Passive::Exchange(exchange)).await?;
    if !exists && settings.declare.is_none() {
        let why = format!(
            "exchange {exchange} does not exist (declare it, or set declare: so the bridge does)"
        );
        return Ok(Probe {
            checks: keys.iter().map(|_| Check::missing(why.clone())).collect(),
            notes: Vec::new(),
        });
    }

    let wait = deadline
        .saturating_duration_since(Instant::now())
        .min(MANAGEMENT_WAIT);
    let mut notes = Vec::new();
    if !exists {
        notes.push(format!(
            "exchange {exchange} does not exist yet; the bridge declares it at connect (declare:)"
        ));
    }
    let by_management = match Management::locate(settings, uri) {
        Ok(m) if exists => m.bindings(&uri.vhost, exchange, wait).await,
        Ok(_) => Err("the exchange does not exist yet".into()),
        Err(e) => Err(format!("management_url {e}")),
    };
    let checks = match by_management {
        Ok((kind, bindings)) => {
            notes.push(format!(
                "bindings read from the management API ({} exchange, {} binding(s))",
                kind,
                bindings.len()
            ));
            keys.iter()
                .map(|k| judge_with(&kind, &bindings, k, "bound"))
                .collect()
        }
        Err(why) => {
            notes.push(format!(
                "bindings cannot be verified over AMQP (no way to list them without storing a \
                 message) and the management API was not usable ({why}); evidence: the queues \
                 this config binds"
            ));
            let kind = match &settings.declare {
                Some(d) => exchange_type_name(d.exchange_type).to_string(),
                None => "topic".to_string(),
            };
            let declared: Vec<Binding> = settings
                .queues
                .iter()
                .map(|q| Binding {
                    destination: q.declared_name(),
                    destination_type: "queue".into(),
                    routing_key: q.binding_key.clone(),
                })
                .collect();
            keys.iter()
                .map(
                    |k| match judge_with(&kind, &declared, k, "bound by this config") {
                        c @ Check {
                            verdict: crate::sinks::preflight::Verdict::Ok(_),
                            ..
                        } => c,
                        _ => Check::unverified(
                            "bindings cannot be verified: no queue of this config binds this key, \
                         and bindings made elsewhere cannot be seen over AMQP",
                        ),
                    },
                )
                .collect()
        }
    };
    Ok(Probe { checks, notes })
}

enum Passive<'a> {
    Exchange(&'a str),
    Queue(&'a str),
}

/// Declares passively on a throwaway channel: true when it exists, false on NOT_FOUND.
async fn passive(connection: &Connection, what: Passive<'_>) -> Result<bool, ProbeError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| ProbeError::broker("cannot open a channel", e))?;
    let result = match what {
        Passive::Exchange(name) => channel
            .exchange_declare(
                name,
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|_| ()),
        Passive::Queue(name) => channel
            .queue_declare(
                name,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|_| ()),
    };
    match result {
        Ok(()) => {
            let _ = channel.close(200, "checked").await;
            Ok(true)
        }
        Err(e) if matches!(e.kind(), lapin::ErrorKind::ProtocolError(a) if a.get_id() == 404) => {
            Ok(false)
        }
        Err(e) => Err(ProbeError::broker("a passive declare failed", e)),
    }
}

/// One binding whose source is the exchange, as the management API lists it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
struct Binding {
    destination: String,
    destination_type: String,
    routing_key: String,
}

#[derive(Deserialize)]
struct ExchangeInfo {
    #[serde(rename = "type")]
    kind: String,
}

fn exchange_type_name(t: ExchangeType) -> &'static str {
    match t {
        ExchangeType::Topic => "topic",
        ExchangeType::Direct => "direct",
        ExchangeType::Fanout => "fanout",
        ExchangeType::Headers => "headers",
    }
}

/// Where the management API is, and who to be there.
struct Management {
    /// Up to the API's root, without credentials and without a trailing `/`.
    base: String,
    /// `scheme://host:port`, for the report.
    shown: String,
    user: String,
    password: String,
}

impl Management {
    /// `management_url` when set (its credentials, else the AMQP URL's), else the AMQP URL's host
    /// on the management plugin's default port.
    fn locate(settings: &RabbitmqSinkSettings, uri: &AMQPUri) -> Result<Management, String> {
        let amqp_user = &uri.authority.userinfo;
        let Some(raw) = &settings.management_url else {
            let (scheme, port) = match uri.scheme {
                AMQPScheme::AMQP => ("http", 15672),
                AMQPScheme::AMQPS => ("https", 15671),
            };
            let host = if uri.authority.host.contains(':') {
                format!("[{}]", uri.authority.host)
            } else {
                uri.authority.host.clone()
            };
            let base = format!("{scheme}://{host}:{port}");
            return Ok(Management {
                shown: base.clone(),
                base,
                user: amqp_user.username.clone(),
                password: amqp_user.password.clone(),
            });
        };
        let mut url = parse_management_url(raw.expose_secret())?;
        let (user, password) = if url.username().is_empty() {
            (amqp_user.username.clone(), amqp_user.password.clone())
        } else {
            (
                percent_decode(url.username()),
                percent_decode(url.password().unwrap_or_default()),
            )
        };
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let shown = url.origin().ascii_serialization();
        Ok(Management {
            base: url.as_str().trim_end_matches('/').to_string(),
            shown,
            user,
            password,
        })
    }

    /// The exchange's type and the bindings whose source it is. Err: why the API could not be
    /// used (absent, refused, not authorised).
    async fn bindings(
        &self,
        vhost: &str,
        exchange: &str,
        wait: Duration,
    ) -> Result<(String, Vec<Binding>), String> {
        let url = format!(
            "{}/api/exchanges/{}/{}",
            self.base,
            encode_segment(vhost),
            encode_segment(exchange)
        );
        let client = reqwest::Client::builder()
            .timeout(wait)
            .connect_timeout(wait)
            .build()
            .map_err(|e| e.to_string())?;
        let failed = |e: reqwest::Error| {
            let e = e.without_url();
            let mut why = format!("{}: {e}", self.shown);
            let mut cur = std::error::Error::source(&e);
            while let Some(inner) = cur {
                why.push_str(&format!(": {inner}"));
                cur = inner.source();
            }
            why
        };
        let get = |url: String| async {
            let resp = client
                .get(url)
                .basic_auth(&self.user, Some(&self.password))
                .send()
                .await
                .map_err(failed)?;
            if resp.status().is_success() {
                Ok(resp)
            } else {
                Err(format!("{} answered {}", self.shown, resp.status()))
            }
        };
        let info: ExchangeInfo = get(url.clone()).await?.json().await.map_err(failed)?;
        let bindings: Vec<Binding> = get(format!("{url}/bindings/source"))
            .await?
            .json()
            .await
            .map_err(failed)?;
        Ok((info.kind, bindings))
    }
}

/// Percent-decodes a part of an AMQP URL (userinfo, the vhost); `%` without two hex digits stays
/// as it is.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A path segment with every byte but unreserved ones as `%XX` (the vhost `/` is `%2F`).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether an exchange of type `kind` with `bindings` routes `key` to a queue; `how` words the
/// evidence ("bound", "bound by this config").
fn judge_with(kind: &str, bindings: &[Binding], key: &str, how: &str) -> Check {
    let routes = |b: &Binding| match kind {
        "topic" => topic_matches(&b.routing_key, key),
        "direct" => b.routing_key == key,
        "fanout" => true,
        _ => false,
    };
    if kind == "headers" {
        return Check::unverified(
            "a headers exchange routes on message headers, not on the routing key: not checked",
        );
    }
    if !matches!(kind, "topic" | "direct" | "fanout") {
        return Check::unverified(format!("a {kind} exchange's routing is not known here"));
    }
    let matching: Vec<&Binding> = bindings.iter().filter(|b| routes(b)).collect();
    if let Some(q) = matching.iter().find(|b| b.destination_type == "queue") {
        return Check::ok(format!(
            "queue {} is {how} with {:?}",
            q.destination, q.routing_key
        ));
    }
    if let Some(x) = matching.first() {
        return Check::unverified(format!(
            "routed on to exchange {} (bound with {:?}), whose bindings are not followed here",
            x.destination, x.routing_key
        ));
    }
    Check::missing(
        "unroutable: no queue is bound for this key (a publish is returned NO_ROUTE, 503)",
    )
}

/// AMQP topic matching: words split on `.`, `*` matches exactly one word, `#` zero or more.
fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|skip| go(rest, &k[skip..])),
            Some((&w, rest)) => match k.split_first() {
                Some((&kw, krest)) => (w == "*" || w == kw) && go(rest, krest),
                None => false,
            },
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::preflight::Verdict;

    #[test]
    fn topic_wildcards_match_as_rabbitmq_does() {
        for (p, k) in [
            ("calls.status.#", "calls.status.completed"),
            ("calls.status.#", "calls.status"),
            ("calls.*.completed", "calls.status.completed"),
            ("#", "calls.started.unknown"),
            ("calls.#.unknown", "calls.started.unknown"),
            ("calls.status.completed", "calls.status.completed"),
        ] {
            assert!(topic_matches(p, k), "{p} should match {k}");
        }
        for (p, k) in [
            ("calls.status.#", "calls.started.unknown"),
            ("calls.*", "calls.status.completed"),
            ("calls.status.*", "calls.status"),
            ("calls.status", "calls.status.completed"),
        ] {
            assert!(!topic_matches(p, k), "{p} should not match {k}");
        }
    }

    #[test]
    fn keys_are_judged_by_exchange_type() {
        let b = |dest: &str, ty: &str, key: &str| Binding {
            destination: dest.into(),
            destination_type: ty.into(),
            routing_key: key.into(),
        };
        let bindings = [
            b("q1", "queue", "calls.status.#"),
            b("x2", "exchange", "calls.started.*"),
        ];
        assert!(matches!(
            judge_with("topic", &bindings, "calls.status.completed", "bound").verdict,
            Verdict::Ok(ref m) if m.contains("q1")
        ));
        assert!(matches!(
            judge_with("topic", &bindings, "calls.started.unknown", "bound").verdict,
            Verdict::Unverified(ref m) if m.contains("x2")
        ));
        assert!(matches!(
            judge_with("topic", &bindings, "calls.analysis.unknown", "bound").verdict,
            Verdict::Missing(ref m) if m.contains("unroutable")
        ));
        assert!(matches!(
            judge_with("direct", &bindings, "calls.status.completed", "bound").verdict,
            Verdict::Missing(_)
        ));
        assert!(matches!(
            judge_with("fanout", &bindings[..1], "anything", "bound").verdict,
            Verdict::Ok(_)
        ));
        assert!(matches!(
            judge_with("headers", &bindings, "k", "bound").verdict,
            Verdict::Unverified(_)
        ));
        assert_eq!(encode_segment("/"), "%2F");
        assert_eq!(encode_segment("calls.x:y"), "calls.x%3Ay");
        assert_eq!(percent_decode("p%40ss%3Aw"), "p@ss:w");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
