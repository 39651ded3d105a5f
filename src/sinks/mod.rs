//! Sinks: where events go, and what "acknowledged" means for each.
//!
//! Every sink implements one narrow trait, [`Sink`]: `publish` returns `Ok(Receipt)` only once
//! the destination has durably confirmed the event (the file sink: written and fsynced; Kafka:
//! the delivery report with acks=all; RabbitMQ: a publisher confirm with no `basic.return`;
//! JetStream: the PubAck). Anything else is a [`SinkError`], and the fan-out turns it into a 503.
//!
//! Each kind's settings live with it and implement [`SinkSpec`]: its checks, and the one way to
//! build it ([`SinkSpec::build`], one [`BuildError`]), so [`build_all`] is one call per entry.
//! The file and null sinks are a file each; a broker sink is a folder whose `mod.rs` holds the
//! ack contract and `publish`, the other files one concern each (settings, connection, ...).

/// Declares a sink kind's settings struct: the fields every kind has (`name`, `required`,
/// `timeout_ms`, `events`), written here once with their defaults, then the kind's own fields;
/// and implements [`CommonFields`] for it. The common fields cannot be a struct of their own
/// flattened into each kind: serde does not refuse unknown keys (`deny_unknown_fields`) through
/// `flatten`, and a typo in a sink's keys must be an error naming it.
macro_rules! sink_settings {
    (
        $kind:literal,
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($fields:tt)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// The sink's name in answers, metrics and logs: letters, digits, `-` and `_`.
            pub name: String,
            /// A failed required sink fails the webhook (503); an optional one is only reported.
            #[serde(default = "crate::validate::default_true")]
            pub required: bool,
            /// How long a publish may wait for the destination's confirmation.
            #[serde(default = "crate::validate::default_sink_timeout_ms")]
            pub timeout_ms: u64,
            /// Which events this sink wants (`call.status`, `call.analysis.completed`, ...);
            /// every event when absent.
            #[serde(default)]
            pub events: Option<Vec<String>>,
            /// What a publish that cannot be confirmed within `timeout_ms` does: `fail` (the
            /// webhook is answered 503 and the sender retries) or `spool` (the event is written
            /// to the durable spool, the answer is 200 with `"spooled": true`, and it is
            /// replayed to this sink, in order per call, once it recovers; needs `spool`).
            #[serde(default)]
            pub on_unavailable: $crate::sinks::OnUnavailable,
            $($fields)*
        }

        impl $crate::sinks::CommonFields for $name {
            fn kind(&self) -> &'static str {
                $kind
            }

            fn common(&self) -> $crate::sinks::SinkCommon<'_> {
                $crate::sinks::SinkCommon {
                    name: &self.name,
                    required: self.required,
                    timeout_ms: self.timeout_ms,
                    events: self.events.as_deref(),
                    on_unavailable: self.on_unavailable,
                }
            }
        }
    };
}

pub mod file;
pub mod kafka;
pub mod nats;
pub mod null;
pub mod preflight;
pub mod rabbitmq;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

pub use crate::event::binding::Outgoing;
use crate::event::{Event, EventFilter};
use crate::validate::Issues;

/// Proof that a destination stored the event, echoed in the HTTP answer.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Receipt {
    /// Byte offset of the line in the file.
    File { path: String, offset: u64 },
    /// The null sink stores nothing; the receipt says so.
    Null { stored: bool },
    Kafka {
        topic: String,
        partition: i32,
        offset: i64,
    },
    Rabbitmq {
        exchange: String,
        routing_key: String,
    },
    JetStream {
        stream: String,
        sequence: u64,
        /// The stream already had this event id (a redelivery): still stored exactly once.
        duplicate: bool,
    },
    /// Core NATS: the server received the message; nothing was persisted.
    NatsCore { subject: String, persisted: bool },
}

/// Why a publish did not produce a receipt. Every variant answers 503 to the sender: a broker's
/// or our own failure is never the sender's fault.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("no acknowledgement within {0} ms")]
    Timeout(u64),
    #[error("not connected to the broker: {0}")]
    NotConnected(String),
    #[error("the broker refused the event: {0}")]
    Rejected(String),
    #[error("local queue full: {0}")]
    QueueFull(String),
    /// The event is larger than the destination ever accepts (counted as the broker counts:
    /// payload and headers): the sender's to fix, answered 413 when a required sink says it.
    #[error("event too large: {0}")]
    TooLarge(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{message}")]
    Broker {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A spooling sink could not confirm the event and the spool could not keep it either
    /// (full, or its disk failing): `message` says why it was not published.
    #[error("{message}")]
    NotSpooled {
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SinkError {
    /// A short machine-readable reason, for the HTTP body and the metrics.
    pub fn code(&self) -> &'static str {
        match self {
            SinkError::Timeout(_) => "timeout",
            SinkError::NotConnected(_) => "not_connected",
            SinkError::Rejected(_) => "rejected",
            SinkError::QueueFull(_) => "queue_full",
            SinkError::TooLarge(_) => "too_large",
            SinkError::Io { .. } => "io",
            SinkError::Broker { .. } => "broker",
            SinkError::NotSpooled { .. } => "spool_failed",
        }
    }

    /// Transient failures are expected to heal by themselves (the sender's retry will succeed);
    /// permanent ones need an operator (an unroutable message, a rejected publish).
    pub fn is_transient(&self) -> bool {
        !matches!(self, SinkError::Rejected(_) | SinkError::TooLarge(_))
    }

    /// The message with its whole `source` chain, for logs and the dead-letter store: it can
    /// name files, destinations and quote the broker.
    pub fn detail(&self) -> String {
        error_chain(self)
    }

    /// What the sender is told, beside [`SinkError::code`]: the kind of failure in our words,
    /// never a file path, a destination's name or the broker's own text (those describe our
    /// infrastructure to whoever can post a webhook; the log line has them).
    pub fn public_message(&self) -> String {
        match self {
            SinkError::Timeout(ms) => format!("no acknowledgement within {ms} ms"),
            SinkError::NotConnected(_) => "the destination is not reachable now".into(),
            SinkError::Rejected(_) => "the destination refused the event".into(),
            SinkError::QueueFull(_) => "too many events waiting for this destination".into(),
            SinkError::TooLarge(_) => "the event is larger than this destination accepts".into(),
            SinkError::Io { .. } => "the destination could not be written".into(),
            SinkError::Broker { .. } => "the destination failed to store the event".into(),
            SinkError::NotSpooled { .. } => {
                "not confirmed by the destination, and the spool could not keep it".into()
            }
        }
    }

    pub fn broker(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        SinkError::Broker {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// A destination for events.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Publishes one event. `Ok` means the destination confirmed it durably; the caller bounds
    /// the wait with the sink's timeout, so implementations may simply await the confirmation.
    async fn publish(&self, event: &Outgoing) -> Result<Receipt, SinkError>;

    /// Where this event goes (topic, exchange/routing key, subject, file), for the publish
    /// span's `messaging.destination.name`.
    fn destination(&self, event: &Event) -> String {
        let _ = event;
        String::new()
    }

    /// Checks, without any I/O, that the destination can take `event` at all: its size as the
    /// broker counts it against the broker's limit. The fan-out asks every required sink before
    /// publishing anywhere, so an event one of them can never take is published nowhere (413).
    fn check_size(&self, event: &Outgoing) -> Result<(), SinkError> {
        let _ = event;
        Ok(())
    }

    /// The largest message (payload and headers, as the broker counts) the destination accepts,
    /// when it has such a limit and it is known: logged at startup next to `max_body_bytes`.
    fn max_message_bytes(&self) -> Option<usize> {
        None
    }

    /// Whether the sink can currently reach its destination (`/readyz`).
    fn is_ready(&self) -> bool {
        true
    }

    /// Flushes and releases resources at shutdown, after the last request was answered.
    async fn close(&self) {}
}

/// A configured sink with the settings the fan-out needs.
#[derive(Clone)]
pub struct SinkHandle {
    pub name: String,
    pub kind: &'static str,
    /// A failed required sink fails the request (503); an optional one is reported only.
    pub required: bool,
    pub timeout: Duration,
    /// `None` = every event.
    pub filters: Option<Vec<EventFilter>>,
    /// Whether a transient failure spools the event instead of failing the webhook.
    pub on_unavailable: OnUnavailable,
    pub sink: Arc<dyn Sink>,
}

impl SinkHandle {
    pub fn wants(&self, event: &Event) -> bool {
        match &self.filters {
            None => true,
            Some(f) => f.iter().any(|f| f.matches(event)),
        }
    }
}

/// The fields every sink kind has, whatever its `type`.
#[derive(Debug, Clone, Copy)]
pub struct SinkCommon<'a> {
    pub name: &'a str,
    pub required: bool,
    pub timeout_ms: u64,
    pub events: Option<&'a [String]>,
    pub on_unavailable: OnUnavailable,
}

/// A sink's `on_unavailable`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// Answer 503 (the sender retries, for minutes).
    #[default]
    Fail,
    /// Keep the event in the durable spool and replay it when the sink recovers.
    Spool,
}

/// The fields every sink kind has, and its `type` (implemented by `sink_settings!`).
pub trait CommonFields {
    /// The `type` that selects this kind in the configuration.
    fn kind(&self) -> &'static str;

    fn common(&self) -> SinkCommon<'_>;
}

/// What each sink kind's settings provide, so that validation and startup treat every kind the
/// same way: the common fields, the kind's own checks, and the one way to build the sink.
#[async_trait]
pub trait SinkSpec: CommonFields + Send + Sync {
    /// Checks what the types cannot express; `path` is the entry's field path (`sinks[2]`).
    /// Never connects.
    fn validate(&self, path: &str, issues: &mut Issues);

    /// The largest message the destination accepts, when the settings alone say it (Kafka's
    /// producer `message.max.bytes`); `validate` compares it with `server.max_body_bytes`.
    fn max_message_bytes(&self) -> Option<usize> {
        None
    }

    /// Builds the sink from validated settings. Only configuration problems fail: a broker that
    /// is down at startup leaves the sink not ready, and it connects in the background.
    async fn build(&self) -> Result<Arc<dyn Sink>, BuildError>;
}

/// Why a sink could not be built: the one error type of every kind's [`SinkSpec::build`].
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A setting that validation refuses too (kept so a bypassed `validate` still fails clearly).
    #[error("invalid {field}: {message}")]
    Settings {
        field: &'static str,
        message: String,
    },
    #[error("invalid {field}")]
    Template {
        field: &'static str,
        #[source]
        source: crate::template::TemplateError,
    },
    /// A local resource the sink needs (a file, a credentials file).
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The broker refused us for good at startup: credentials, TLS, a misfit topology.
    #[error("{context}")]
    Broker {
        context: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// A configured sink that could not start, by name: what [`build_all`] reports.
#[derive(Debug, thiserror::Error)]
#[error("sink {name} ({kind}) cannot start")]
pub struct SinkStartError {
    pub name: String,
    pub kind: &'static str,
    #[source]
    pub source: BuildError,
}

/// Builds every configured sink, in order: one [`SinkSpec::build`] call per entry. Settings
/// are assumed validated.
pub async fn build_all<'a>(
    specs: impl IntoIterator<Item = &'a dyn SinkSpec>,
) -> Result<Vec<SinkHandle>, SinkStartError> {
    let mut out = Vec::new();
    for spec in specs {
        let c = spec.common();
        let sink = spec.build().await.map_err(|source| SinkStartError {
            name: c.name.to_string(),
            kind: spec.kind(),
            source,
        })?;
        let filters = c.events.map(|list| {
            list.iter()
                .filter_map(|f| EventFilter::parse(f).ok())
                .collect::<Vec<_>>()
        });
        out.push(SinkHandle {
            name: c.name.to_string(),
            kind: spec.kind(),
            required: c.required,
            timeout: Duration::from_millis(c.timeout_ms),
            filters,
            on_unavailable: c.on_unavailable,
            sink,
        });
    }
    Ok(out)
}

/// Helpers for the sinks' unit tests.
/// An error with its whole `source` chain, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
pub(crate) mod test_support {
    use serde::de::DeserializeOwned;

    use super::SinkSpec;
    use crate::validate::Issues;

    /// One sink entry's settings (YAML without `type`) and what its checks found, as if it were
    /// the first entry of `sinks`. Err: the YAML does not parse (the serde message).
    pub fn validated<T: DeserializeOwned + SinkSpec>(yaml: &str) -> Result<(T, Issues), String> {
        let settings: T = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        let mut issues = Issues::default();
        settings.validate("sinks[0]", &mut issues);
        Ok((settings, issues))
    }
}
