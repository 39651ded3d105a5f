//! The `nats` sink: JetStream (default) or core NATS, with async-nats.
//!
//! **JetStream** — each event is published with `Nats-Msg-Id` = event id (and, when a stream is
//! configured, `Nats-Expected-Stream`), and `publish` returns only once the PubAck arrived: the
//! stream stored it. A PubAck flagged `duplicate` is success too: the stream already holds that
//! event id (within its duplicate window), so a retry by the sender, or by another bridge replica
//! that never saw the first delivery, still leaves exactly one copy. "No responders" (no stream
//! listens on the subject), a timeout or a dropped connection is an error, hence a 503.
//!
//! **Core NATS** (`jetstream.enabled: false`) — publish, then flush the connection: the bytes
//! were written to the server's socket, nothing more. Core NATS has no acknowledgement and no
//! persistence; a subscriber that is not connected at that moment never sees the message. The
//! receipt says `persisted: false` and `validate` warns.
//!
//! **Connection** — async-nats reconnects by itself. Startup tries one bounded connection; if
//! NATS is unreachable the client keeps connecting in the background, the sink reports not-ready
//! and publishes fail fast with `not_connected` until it is back. Bad credentials or TLS setup
//! (a configuration error) fail startup instead. With `jetstream.ensure_stream`, the stream is
//! created (or checked to cover the subjects) at startup and again after every reconnect and after
//! a publish found no stream, so a memory-storage stream lost in a server restart comes back.
//!
//! **Subjects** — the `subject` template is rendered with the shared engine, and every
//! substituted value is sanitised into exactly one subject token: bytes other than ASCII letters,
//! digits, `-` and `_` are written as `%XX` (so `a.b` → `a%2Eb`, `*` → `%2A`, a space → `%20`),
//! an empty value becomes `unknown`. The mapping is injective, so distinct call ids never share a
//! subject, and a value can never add tokens or wildcards. A value longer than 128 bytes once
//! escaped is shortened to a prefix, `~` and a hash of the whole value, and a subject to 1 KiB:
//! a subject beyond the server's control line (4 KiB) would make nats-server close the
//! connection every other publish shares.

mod client;
pub(crate) use client::credentials;
pub mod preflight;
mod settings;
mod stream;
mod subject;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::header::{self, HeaderMap};
use async_nats::jetstream::{self, context::PublishErrorKind};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{BuildError, Outgoing, Receipt, Sink, SinkError};
use crate::event::binding::{Format, Headers};
use crate::event::Event;
use stream::EnsureError;

/// For the audit, which reads JetStream copies back with the sink's connection settings.
pub(crate) use client::connect_options;
pub(crate) use settings::parse_servers;
pub use settings::{
    EnsureStreamSettings, JetStreamSettings, NatsSinkSettings, NatsStorage, NatsTlsSettings,
};
pub use subject::{filter_covers, sanitize_token, SubjectTemplate};

/// The bytes nats-server counts against `max_payload`: the payload and the headers as
/// async-nats writes them (`NATS/1.0\r\n`, `name: value\r\n` each, `\r\n`).
pub fn message_size(headers: &HeaderMap, payload: &[u8]) -> usize {
    let headers_len = if headers.iter().next().is_none() {
        0
    } else {
        "NATS/1.0\r\n\r\n".len()
            + headers
                .iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| AsRef::<[u8]>::as_ref(name).len() + v.as_str().len() + 4)
                })
                .sum::<usize>()
    };
    headers_len + payload.len()
}

/// The headers and payload of one event in the configured mode (without the JetStream headers).
pub fn encode(format: Format, out: &Outgoing) -> (HeaderMap, Bytes) {
    let message = Headers::NATS.encode(format, out);
    let mut headers = HeaderMap::new();
    if let Some(t) = message.traceparent {
        headers.insert("traceparent", t);
    }
    if let Some(c) = message.content_type {
        headers.insert("Content-Type", c);
    }
    for (name, value) in message.attributes {
        headers.insert(name, value.into_owned());
    }
    (headers, message.payload)
}

/// The whole message of one event: the binding's headers and payload, and in JetStream mode
/// (`jetstream`: `Some(the configured stream, if any)`) `Nats-Msg-Id` and
/// `Nats-Expected-Stream`. Public so that `callbridge asyncapi` documents what is sent.
pub fn message(
    format: Format,
    jetstream: Option<Option<&str>>,
    event: &Outgoing,
) -> (HeaderMap, Bytes) {
    let (mut headers, payload) = encode(format, event);
    if let Some(stream) = jetstream {
        headers.insert(header::NATS_MESSAGE_ID, event.event.id.as_str());
        if let Some(stream) = stream {
            headers.insert(header::NATS_EXPECTED_STREAM, stream);
        }
    }
    (headers, payload)
}

struct Inner {
    name: String,
    url: String,
    client: async_nats::Client,
    /// `None` = core NATS.
    js: Option<jetstream::Context>,
    stream: Option<String>,
    ensure: Option<EnsureStreamSettings>,
    /// False while `ensure_stream` is configured and the stream is not (yet) known to fit.
    stream_ok: AtomicBool,
    /// Wakes the stream checker: on (re)connect and when a publish found no stream.
    recheck: Arc<Notify>,
    timeout: Duration,
    /// The subjects the template renders to, as a filter (`calls.*.*`), checked against the
    /// stream's subjects so a stream that misses some events is reported at startup.
    subject_shape: String,
}

pub struct NatsSink {
    inner: Arc<Inner>,
    subject: SubjectTemplate,
    format: Format,
    checker: Mutex<Option<JoinHandle<()>>>,
}

impl NatsSink {
    /// Connects (bounded), checks or creates the stream, and starts the background checker.
    /// Only configuration problems fail: an unreachable server is retried in the background.
    async fn start(settings: &NatsSinkSettings) -> Result<NatsSink, BuildError> {
        let invalid = |field, message| BuildError::Settings { field, message };
        let subject =
            SubjectTemplate::parse(&settings.subject).map_err(|m| invalid("subject", m))?;
        let servers = settings::parse_servers(&settings.url).map_err(|m| invalid("url", m))?;
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let recheck = Arc::new(Notify::new());
        let client = client::connect(settings, servers, &recheck).await?;

        let js = settings.jetstream.enabled.then(|| {
            jetstream::context::ContextBuilder::new()
                // The PubAck wait is bounded by the context's request timeout, not by
                // `ack_timeout` (async-nats #1558); set both to the sink's timeout.
                .timeout(timeout)
                .ack_timeout(timeout)
                .max_ack_inflight(settings.max_in_flight)
                // Fail fast when too many acks are pending (async-nats #1286) instead of
                // waiting for a permit: the request is answered 503 `queue_full` at once.
                .backpressure_on_inflight(false)
                .build(client.clone())
        });
        let ensure = settings
            .jetstream
            .ensure_stream
            .clone()
            .filter(|_| settings.jetstream.enabled);
        let inner = Arc::new(Inner {
            name: settings.name.clone(),
            url: settings.url.clone(),
            client,
            js,
            stream: settings
                .jetstream
                .stream
                .clone()
                .filter(|_| settings.jetstream.enabled),
            stream_ok: AtomicBool::new(ensure.is_none()),
            ensure,
            recheck,
            timeout,
            subject_shape: subject.shape(),
        });

        // Check the stream now when connected, so a misfit stream fails startup loudly.
        if inner.js.is_some() && inner.client.connection_state() == State::Connected {
            match inner.check_stream().await {
                Ok(()) => {}
                Err(EnsureError::Mismatch(message)) => {
                    return Err(BuildError::Broker {
                        context: format!(
                            "stream {}: {message}",
                            inner.stream.as_deref().unwrap_or_default()
                        ),
                        source: None,
                    })
                }
                Err(e) => tracing::warn!(
                    sink = %inner.name, error = %e, "stream check failed; retrying in the background"
                ),
            }
        }
        let checker = (inner.js.is_some() && inner.stream.is_some()).then(|| {
            let inner = inner.clone();
            tokio::spawn(async move { inner.checker_loop().await })
        });
        Ok(NatsSink {
            inner,
            subject,
            format: settings.format,
            checker: Mutex::new(checker),
        })
    }
}

impl NatsSink {
    /// The whole message of one event: see [`message`].
    fn message(&self, event: &Outgoing) -> (HeaderMap, Bytes) {
        let jetstream = self.inner.js.as_ref().map(|_| self.inner.stream.as_deref());
        message(self.format, jetstream, event)
    }

    /// Refuses a message above the server's `max_payload`, which counts headers and payload:
    /// sent anyway, the server would close the connection every publish in flight shares.
    fn fits(&self, headers: &HeaderMap, payload: &[u8]) -> Result<(), SinkError> {
        let max = self.inner.client.server_info().max_payload;
        let size = message_size(headers, payload);
        if max > 0 && size > max {
            return Err(SinkError::TooLarge(format!(
                "message of {size} bytes (payload {} and headers) exceeds the server's \
                 max_payload of {max} bytes",
                payload.len()
            )));
        }
        Ok(())
    }

    fn not_connected(&self, state: State) -> SinkError {
        SinkError::NotConnected(format!("nats {} is {state}", self.inner.url))
    }

    fn map_js_error(&self, e: jetstream::context::PublishError, subject: &str) -> SinkError {
        let inner = &self.inner;
        match e.kind() {
            PublishErrorKind::StreamNotFound => {
                if inner.ensure.is_some() {
                    inner.recheck.notify_one();
                }
                SinkError::Rejected(format!(
                    "no stream captures subject {subject} (no responders)"
                ))
            }
            PublishErrorKind::TimedOut => SinkError::Timeout(inner.timeout.as_millis() as u64),
            PublishErrorKind::BrokenPipe => {
                SinkError::NotConnected("connection lost before the PubAck arrived".into())
            }
            PublishErrorKind::MaxAckPending => {
                SinkError::QueueFull("max_in_flight PubAcks already pending".into())
            }
            _ => {
                let code = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<jetstream::Error>())
                    .map(|je| je.error_code());
                let not_match = code == Some(jetstream::ErrorCode::STREAM_NOT_MATCH);
                // The stream's own `max_msg_size` (or its header limit): no retry fits it.
                let too_large = code.is_some_and(|c| {
                    c == jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
                        || c == jetstream::ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM
                });
                if too_large {
                    SinkError::TooLarge(format!(
                        "stream {} refused the message for its size (its max_msg_size)",
                        inner.stream.as_deref().unwrap_or("?")
                    ))
                } else if not_match {
                    SinkError::Rejected(format!(
                        "subject {subject} is not captured by stream {}",
                        inner.stream.as_deref().unwrap_or("?")
                    ))
                } else {
                    SinkError::broker("jetstream publish failed", e)
                }
            }
        }
    }
}

#[async_trait]
impl Sink for NatsSink {
    fn destination(&self, event: &Event) -> String {
        self.subject.render(event)
    }

    #[tracing::instrument(skip_all, fields(sink = %self.inner.name, event_id = %event.event.id, subject = tracing::field::Empty))]
    async fn publish(&self, event: &Outgoing) -> Result<Receipt, SinkError> {
        let inner = &self.inner;
        let state = inner.client.connection_state();
        if state != State::Connected {
            return Err(self.not_connected(state));
        }
        let subject = self.subject.render(&event.event);
        tracing::Span::current().record("subject", subject.as_str());
        let (headers, payload) = self.message(event);
        self.fits(&headers, &payload)?;

        let Some(js) = &inner.js else {
            inner
                .client
                .publish_with_headers(subject.clone(), headers, payload)
                .await
                .map_err(|e| match e.kind() {
                    async_nats::client::PublishErrorKind::Send => {
                        SinkError::NotConnected(e.to_string())
                    }
                    _ => SinkError::Rejected(e.to_string()),
                })?;
            inner
                .client
                .flush()
                .await
                .map_err(|e| SinkError::broker("flush failed", e))?;
            return Ok(Receipt::NatsCore {
                subject,
                persisted: false,
            });
        };

        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .headers(headers);
        let ack_future = js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| self.map_js_error(e, &subject))?;
        let ack = ack_future
            .await
            .map_err(|e| self.map_js_error(e, &subject))?;
        if let Some(stream) = &inner.stream {
            if &ack.stream != stream {
                return Err(SinkError::Rejected(format!(
                    "stored in stream {} (sequence {}), not in the configured stream {stream}",
                    ack.stream, ack.sequence
                )));
            }
        }
        if ack.duplicate {
            tracing::debug!(stream = %ack.stream, sequence = ack.sequence, "stream already had this event id");
        }
        Ok(Receipt::JetStream {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    fn check_size(&self, event: &Outgoing) -> Result<(), SinkError> {
        let (headers, payload) = self.message(event);
        self.fits(&headers, &payload)
    }

    fn max_message_bytes(&self) -> Option<usize> {
        Some(self.inner.client.server_info().max_payload).filter(|m| *m > 0)
    }

    fn is_ready(&self) -> bool {
        self.inner.client.connection_state() == State::Connected
            && self.inner.stream_ok.load(Ordering::Acquire)
    }

    async fn close(&self) {
        if let Ok(mut c) = self.checker.lock() {
            if let Some(h) = c.take() {
                h.abort();
            }
        }
        // Push out anything still buffered (each publish already flushed or awaited its ack);
        // while disconnected there is nothing to push, and shutdown must not wait.
        if self.inner.client.connection_state() == State::Connected {
            let _ = tokio::time::timeout(self.inner.timeout, self.inner.client.flush()).await;
        }
    }
}

impl Drop for NatsSink {
    fn drop(&mut self) {
        if let Ok(mut c) = self.checker.lock() {
            if let Some(h) = c.take() {
                h.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::binding::percent_encode;
    use crate::event::test_support::sample_event;

    #[test]
    fn binary_mode_has_a_header_for_every_attribute() {
        let mut ev = sample_event();
        ev.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        ev.source = "/call bridge".into();
        let out = Outgoing::new(ev);
        let (headers, payload) = encode(Format::Binary, &out);
        assert_eq!(payload, out.data);
        let structured: serde_json::Value = serde_json::from_slice(&out.structured).unwrap();
        let obj = structured.as_object().unwrap();
        for (k, v) in obj.iter().filter(|(k, _)| *k != "data") {
            let h = headers
                .get(format!("ce-{k}").as_str())
                .unwrap_or_else(|| panic!("missing ce-{k}"));
            assert_eq!(h.as_str(), percent_encode(v.as_str().unwrap()), "ce-{k}");
        }
        assert_eq!(headers.get("ce-source").unwrap().as_str(), "/call%20bridge");
        assert_eq!(
            headers.get("ce-datacontenttype").unwrap().as_str(),
            "application/json"
        );
        let n = headers.iter().count();
        // the attributes, plus the W3C `traceparent` header when the event carries one
        let expected = obj.len() - 1 + usize::from(out.event.traceparent.is_some());
        assert_eq!(n, expected, "no header beyond the attributes");
    }

    #[test]
    fn structured_mode_carries_the_whole_event() {
        let out = Outgoing::new(sample_event());
        let (headers, payload) = encode(Format::Structured, &out);
        assert_eq!(payload, out.structured);
        assert_eq!(
            headers.get("Content-Type").unwrap().as_str(),
            "application/cloudevents+json"
        );
    }
}
