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
//! subject, and a value can never add tokens or wildcards.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::header::{self, HeaderMap};
use async_nats::jetstream::{self, context::PublishErrorKind, stream::StorageType};
use async_nats::{ConnectErrorKind, ConnectOptions, ServerAddr};
use async_trait::async_trait;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{Outgoing, Receipt, Sink, SinkError};
use crate::config::{check_template, default_sink_timeout_ms, Issues};
use crate::event::Event;
use crate::template::{Template, ABSENT};

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// Publishes each event to NATS: JetStream with a PubAck per event (default), or core NATS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkSettings {
    pub name: String,
    #[serde(default = "crate::config::default_true")]
    pub required: bool,
    /// Bounds the wait for the PubAck (core: for the flush).
    #[serde(default = "default_sink_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// One server (`nats://host:4222`, `tls://host:4222`) or a comma-separated list for a cluster;
    /// the client fails over between them.
    pub url: String,
    /// Subject template, e.g. `calls.{kind}.{status}`. Substituted values are sanitised into one
    /// token each (see the module docs), so a call id can never add tokens or wildcards.
    pub subject: String,
    /// CloudEvents NATS binding mode: `binary` (attributes as `ce-*` headers, payload = `data`)
    /// or `structured` (payload = the whole event).
    #[serde(default)]
    pub format: NatsFormat,
    /// Username/password authentication (both or neither).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<SecretString>,
    /// Token authentication.
    #[serde(default)]
    pub token: Option<SecretString>,
    /// NKey seed (`SU...`) authentication.
    #[serde(default)]
    pub nkey: Option<SecretString>,
    /// A `.creds` file (JWT + NKey seed), as issued by NGS/Synadia or `nsc`.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: Option<NatsTlsSettings>,
    #[serde(default)]
    pub jetstream: JetStreamSettings,
    /// Most PubAcks awaited at once; beyond it publishes fail fast (`queue_full`) instead of
    /// queueing without bound. Bounds the client's memory under a slow or stuck server.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NatsFormat {
    #[default]
    Binary,
    Structured,
}

/// TLS towards the server. A `tls://` URL enables TLS too.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NatsTlsSettings {
    /// PEM bundle of the CA(s) that signed the server's certificate (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, when the server requires mutual TLS (both or neither).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Refuse to connect without TLS even if the server does not ask for it.
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamSettings {
    /// `false` = core NATS: no acknowledgement, no persistence (a warning at validate time).
    #[serde(default = "crate::config::default_true")]
    pub enabled: bool,
    /// The stream that must store the events. When set, a publish that would land in another
    /// stream is refused by the server (`Nats-Expected-Stream`), and the PubAck is checked.
    #[serde(default)]
    pub stream: Option<String>,
    /// Create the stream if it is missing, or check that it covers these subjects, at startup
    /// (and after reconnects). An existing stream is never modified.
    #[serde(default)]
    pub ensure_stream: Option<EnsureStreamSettings>,
}

impl Default for JetStreamSettings {
    fn default() -> Self {
        JetStreamSettings {
            enabled: true,
            stream: None,
            ensure_stream: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsureStreamSettings {
    /// Subject filters the stream captures, e.g. `["calls.>"]`; must cover `subject`.
    pub subjects: Vec<String>,
    #[serde(default)]
    pub storage: NatsStorage,
    /// The server drops a second message with the same `Nats-Msg-Id` within this window. The
    /// default (30 min) outlasts the sender's retry horizon (21 min), so server-side dedupe holds
    /// even across bridge replicas and restarts; the stream keeps one id per message for it.
    #[serde(default = "default_duplicate_window_secs")]
    pub duplicate_window_secs: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NatsStorage {
    /// Survives server restarts.
    #[default]
    File,
    /// Faster; lost when the server restarts (the sink then recreates the empty stream).
    Memory,
}

fn default_max_in_flight() -> usize {
    4096
}
fn default_duplicate_window_secs() -> u64 {
    1800
}

impl NatsSinkSettings {
    /// Semantic checks; `path` is the sink's field path (`sinks[2]`).
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if self.url.trim().is_empty() {
            issues.error(format!("{path}.url"), "must not be empty");
        } else if let Err(e) = parse_servers(&self.url) {
            issues.error(format!("{path}.url"), e);
        }

        check_template(&self.subject, &format!("{path}.subject"), issues);
        let subject = match SubjectTemplate::parse(&self.subject) {
            Ok(s) => Some(s),
            Err(e) => {
                // The shared engine already reported template syntax errors.
                if Template::parse(&self.subject).is_ok() {
                    issues.error(format!("{path}.subject"), e);
                }
                None
            }
        };

        self.validate_auth(path, issues);

        if self.max_in_flight == 0 {
            issues.error(format!("{path}.max_in_flight"), "must be greater than 0");
        }

        let js = &self.jetstream;
        let jp = format!("{path}.jetstream");
        if !js.enabled {
            issues.warn(
                format!("{jp}.enabled"),
                "core NATS gives no persistence and no acknowledgement: an event is lost if no \
                 subscriber is connected, yet answered 200; use JetStream for anything you keep",
            );
            if js.stream.is_some() || js.ensure_stream.is_some() {
                issues.error(
                    jp.clone(),
                    "stream/ensure_stream need JetStream; remove them or set enabled: true",
                );
            }
            return;
        }
        if let Some(stream) = &js.stream {
            if !valid_stream_name(stream) {
                issues.error(
                    format!("{jp}.stream"),
                    format!("{stream:?} is not a stream name (no spaces, '.', '*', '>')"),
                );
            }
        }
        if let Some(ensure) = &js.ensure_stream {
            let ep = format!("{jp}.ensure_stream");
            if js.stream.is_none() {
                issues.error(
                    format!("{jp}.stream"),
                    "ensure_stream needs the stream's name",
                );
            }
            if ensure.subjects.is_empty() {
                issues.error(format!("{ep}.subjects"), "at least one subject is required");
            }
            for (i, f) in ensure.subjects.iter().enumerate() {
                if let Err(e) = check_filter(f) {
                    issues.error(format!("{ep}.subjects[{i}]"), e);
                }
            }
            if ensure.duplicate_window_secs == 0 {
                issues.error(
                    format!("{ep}.duplicate_window_secs"),
                    "must be greater than 0",
                );
            } else if ensure.duplicate_window_secs < 21 * 60 {
                issues.warn(
                    format!("{ep}.duplicate_window_secs"),
                    "shorter than the sender's 21-minute retry horizon: a late retry that another \
                     replica (or a restarted bridge) handles may be stored twice",
                );
            }
            if let Some(subject) = &subject {
                let shape = subject.shape();
                if !ensure.subjects.iter().any(|f| filter_covers(f, &shape)) {
                    issues.warn(
                        format!("{path}.subject"),
                        format!(
                            "not every subject {:?} can render to is covered by \
                             ensure_stream.subjects: such events get \"no responders\" (503)",
                            self.subject
                        ),
                    );
                }
            }
        }
    }

    fn validate_auth(&self, path: &str, issues: &mut Issues) {
        let mut methods = Vec::new();
        match (&self.user, &self.password) {
            (Some(_), Some(_)) => methods.push("user/password"),
            (None, None) => {}
            (Some(_), None) => issues.error(format!("{path}.password"), "user needs a password"),
            (None, Some(_)) => issues.error(format!("{path}.user"), "password needs a user"),
        }
        if self.token.is_some() {
            methods.push("token");
        }
        if self.nkey.is_some() {
            methods.push("nkey");
        }
        if self.credentials_file.is_some() {
            methods.push("credentials_file");
        }
        if methods.len() > 1 {
            issues.error(
                path,
                format!(
                    "choose one authentication method, got {}",
                    methods.join(", ")
                ),
            );
        }
        for (field, secret) in [
            ("password", &self.password),
            ("token", &self.token),
            ("nkey", &self.nkey),
        ] {
            if secret
                .as_ref()
                .is_some_and(|s| s.expose_secret().is_empty())
            {
                issues.error(format!("{path}.{field}"), "must not be empty");
            }
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                issues.error(
                    format!("{path}.tls"),
                    "cert_file and key_file go together (mutual TLS)",
                );
            }
        }
    }
}

fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_graphic() && c != b'.' && c != b'*' && c != b'>')
}

fn parse_servers(url: &str) -> Result<Vec<ServerAddr>, String> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<ServerAddr>()
                .map_err(|e| format!("not a NATS server URL {u:?}: {e}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Subjects
// ---------------------------------------------------------------------------------------------

/// The `subject` template split into literal text and single-variable templates, so that each
/// value rendered by the shared engine can be sanitised into one token on its own.
#[derive(Debug, Clone)]
pub struct SubjectTemplate {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Lit(String),
    Var(Template),
}

/// Stands in for a variable while checking a template's literal text.
const VAR_MARK: char = '\u{0}';

impl SubjectTemplate {
    pub fn parse(source: &str) -> Result<SubjectTemplate, String> {
        Template::parse(source).map_err(|e| e.to_string())?;
        let mut segments = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                segments.push(Segment::Lit(rest[..open].to_string()));
            }
            let after = &rest[open..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {source:?}"))?;
            let var = Template::parse(&after[..=close]).map_err(|e| e.to_string())?;
            segments.push(Segment::Var(var));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Lit(rest.to_string()));
        }
        let t = SubjectTemplate { segments };
        t.check_literals()?;
        Ok(t)
    }

    /// Literal text must form a valid publish subject around the (always valid) values.
    fn check_literals(&self) -> Result<(), String> {
        let mut marked = String::new();
        for s in &self.segments {
            match s {
                Segment::Lit(l) => marked.push_str(l),
                Segment::Var(_) => marked.push(VAR_MARK),
            }
        }
        for token in marked.split('.') {
            if token.is_empty() {
                return Err("empty subject token (a leading, trailing or doubled '.')".to_string());
            }
            if let Some(c) = token
                .chars()
                .find(|&c| c != VAR_MARK && (c.is_whitespace() || c.is_control()))
            {
                return Err(format!("subjects cannot contain {c:?}"));
            }
            if token.contains(['*', '>']) {
                return Err("a publish subject cannot contain the wildcards '*' or '>'".into());
            }
        }
        Ok(())
    }

    /// The subject for one event; every substituted value is one sanitised token.
    pub fn render(&self, event: &Event) -> String {
        let mut out = String::with_capacity(64);
        for s in &self.segments {
            match s {
                Segment::Lit(l) => out.push_str(l),
                Segment::Var(t) => sanitize_token(&t.render(event), &mut out),
            }
        }
        out
    }

    /// The set of subjects this template can render to, as a filter: a token holding a variable
    /// becomes `*` (values never contain '.', so they stay inside their token).
    pub fn shape(&self) -> String {
        let mut marked = String::new();
        for s in &self.segments {
            match s {
                Segment::Lit(l) => marked.push_str(l),
                Segment::Var(_) => marked.push(VAR_MARK),
            }
        }
        marked
            .split('.')
            .map(|t| if t.contains(VAR_MARK) { "*" } else { t })
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Writes `value` as one subject token: ASCII letters, digits, `-` and `_` as is, every other
/// byte (including `.`, `*`, `>`, `%`, whitespace and each byte of non-ASCII characters) as `%XX`.
/// An empty value becomes `unknown`, like an absent one.
pub fn sanitize_token(value: &str, out: &mut String) {
    if value.is_empty() {
        out.push_str(ABSENT);
        return;
    }
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Checks a stream subject filter (`calls.>`, `calls.*.completed`).
fn check_filter(filter: &str) -> Result<(), String> {
    let tokens: Vec<&str> = filter.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(format!("{filter:?}: empty token"));
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{filter:?}: subjects cannot contain whitespace"));
        }
        if (t.contains('*') && *t != "*") || (t.contains('>') && *t != ">") {
            return Err(format!("{filter:?}: wildcards must be whole tokens"));
        }
        if *t == ">" && i + 1 != tokens.len() {
            return Err(format!("{filter:?}: '>' must be the last token"));
        }
    }
    Ok(())
}

/// True when every subject matched by `subject` (which may hold wildcards) is matched by
/// `filter`.
pub fn filter_covers(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(st)) => {
                if st == ">" {
                    return false;
                }
            }
            (Some(ft), Some(st)) => {
                if ft != st {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CloudEvents NATS binding
// ---------------------------------------------------------------------------------------------

/// Percent-encodes a header value as the CloudEvents NATS (and HTTP) binding asks: space, `"`,
/// `%`, and every byte outside printable ASCII (each UTF-8 byte of a non-ASCII character) become
/// `%XX`; everything else is kept.
pub fn percent_encode(value: &str) -> Cow<'_, str> {
    let keep = |b: u8| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%';
    if value.bytes().all(keep) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    Cow::Owned(out)
}

/// Every CloudEvents attribute of the event, by name, in the order of the structured form.
pub fn ce_attributes(ev: &Event) -> Vec<(&'static str, &str)> {
    let mut a = vec![
        ("specversion", ev.specversion.as_str()),
        ("id", ev.id.as_str()),
        ("source", ev.source.as_str()),
        ("type", ev.ty.as_str()),
        ("subject", ev.subject.as_str()),
        ("time", ev.time.as_str()),
        ("datacontenttype", ev.datacontenttype.as_str()),
    ];
    if let Some(s) = &ev.callstatus {
        a.push(("callstatus", s.as_str()));
    }
    a.push(("partitionkey", ev.partitionkey.as_str()));
    if let Some(t) = &ev.traceparent {
        a.push(("traceparent", t.as_str()));
    }
    a
}

/// The headers and payload of one event in the configured mode (without the JetStream headers).
pub fn encode(format: NatsFormat, out: &Outgoing) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    // W3C trace context for consumers' tracing libraries, in both modes.
    if let Some(t) = &out.event.traceparent {
        headers.insert("traceparent", t.as_str());
    }
    match format {
        NatsFormat::Binary => {
            for (name, value) in ce_attributes(&out.event) {
                headers.insert(format!("ce-{name}"), percent_encode(value).into_owned());
            }
            (headers, out.data.clone())
        }
        NatsFormat::Structured => {
            headers.insert("Content-Type", "application/cloudevents+json");
            (headers, out.structured.clone())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The sink
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum NatsBuildError {
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("cannot read credentials file {path}")]
    Credentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("stream {stream}: {message}")]
    Stream { stream: String, message: String },
}

/// Why the stream check failed.
#[derive(Debug, thiserror::Error)]
enum EnsureError {
    /// The stream exists but does not fit: an operator must act; retrying will not help.
    #[error("{0}")]
    Mismatch(String),
    /// The server did not answer (yet); retried.
    #[error("{message}")]
    Transient {
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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
    format: NatsFormat,
    checker: Mutex<Option<JoinHandle<()>>>,
}

/// How long startup waits for the first connection before going on in the background.
const STARTUP_CONNECT_WAIT: Duration = Duration::from_secs(2);

/// The client declares the connection dead after 3 unanswered pings, so a server that stops
/// answering without closing the socket is noticed within ~30 s (default: 60 s interval, ~3 min).
/// While it goes unnoticed, every publish times out, and async-nats keeps a small entry (its
/// reply token) for each PubAck that never came: a short interval bounds that too.
const PING_INTERVAL: Duration = Duration::from_secs(10);

impl NatsSink {
    /// Connects (bounded), checks or creates the stream, and starts the background checker.
    /// Only configuration problems fail: an unreachable server is retried in the background.
    pub async fn connect(settings: &NatsSinkSettings) -> Result<NatsSink, NatsBuildError> {
        let subject =
            SubjectTemplate::parse(&settings.subject).map_err(NatsBuildError::Settings)?;
        let servers = parse_servers(&settings.url).map_err(NatsBuildError::Settings)?;
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let recheck = Arc::new(Notify::new());

        let first = connect_options(settings, &recheck)
            .await?
            .connect(servers.clone());
        let client = match tokio::time::timeout(STARTUP_CONNECT_WAIT, first).await {
            Ok(Ok(client)) => client,
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    ConnectErrorKind::Authentication
                        | ConnectErrorKind::AuthorizationViolation
                        | ConnectErrorKind::Tls
                        | ConnectErrorKind::ServerParse
                ) =>
            {
                return Err(NatsBuildError::Connect {
                    url: settings.url.clone(),
                    source: e,
                });
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {} ms", STARTUP_CONNECT_WAIT.as_millis()),
                };
                tracing::warn!(
                    sink = %settings.name, url = %settings.url, error = %why,
                    "nats unreachable at startup; connecting in the background, sink not ready"
                );
                connect_options(settings, &recheck)
                    .await?
                    .retry_on_initial_connect()
                    .connect(servers)
                    .await
                    .map_err(|e| NatsBuildError::Connect {
                        url: settings.url.clone(),
                        source: e,
                    })?
            }
        };

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
                    return Err(NatsBuildError::Stream {
                        stream: inner.stream.clone().unwrap_or_default(),
                        message,
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

async fn connect_options(
    settings: &NatsSinkSettings,
    recheck: &Arc<Notify>,
) -> Result<ConnectOptions, NatsBuildError> {
    let mut opts = match &settings.credentials_file {
        Some(path) => ConnectOptions::with_credentials_file(path.clone())
            .await
            .map_err(|source| NatsBuildError::Credentials {
                path: path.clone(),
                source,
            })?,
        None => ConnectOptions::new(),
    };
    if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
        opts = opts.user_and_password(user.clone(), password.expose_secret().to_string());
    }
    if let Some(token) = &settings.token {
        opts = opts.token(token.expose_secret().to_string());
    }
    if let Some(seed) = &settings.nkey {
        opts = opts.nkey(seed.expose_secret().to_string());
    }
    if let Some(tls) = &settings.tls {
        if let Some(ca) = &tls.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if tls.required {
            opts = opts.require_tls(true);
        }
    }
    let name = settings.name.clone();
    let recheck = recheck.clone();
    Ok(opts
        .name(format!("callbridge-{}", settings.name))
        .connection_timeout(STARTUP_CONNECT_WAIT)
        .ping_interval(PING_INTERVAL)
        .max_reconnects(None)
        .event_callback(move |event| {
            let name = name.clone();
            let recheck = recheck.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(sink = %name, "nats connected");
                        recheck.notify_one();
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(sink = %name, "nats disconnected; reconnecting")
                    }
                    other => tracing::warn!(sink = %name, event = %other, "nats client event"),
                }
            }
        }))
}

impl Inner {
    /// Re-checks the stream whenever woken, retrying transient failures while connected.
    async fn checker_loop(&self) {
        loop {
            self.recheck.notified().await;
            let mut backoff = Duration::from_millis(250);
            while self.client.connection_state() == State::Connected {
                match self.check_stream().await {
                    Ok(()) => break,
                    Err(EnsureError::Mismatch(msg)) => {
                        tracing::error!(sink = %self.name, error = %msg, "stream does not fit the configuration; sink not ready");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(sink = %self.name, error = %e, "stream check failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
    }

    /// With `ensure_stream`: create the stream, or check it covers the subjects. With only
    /// `stream`: warn when it does not exist (publishes will fail until it does).
    async fn check_stream(&self) -> Result<(), EnsureError> {
        let (Some(js), Some(stream)) = (&self.js, &self.stream) else {
            return Ok(());
        };
        let transient = |message: String, e: Box<dyn std::error::Error + Send + Sync>| {
            EnsureError::Transient { message, source: e }
        };
        let existing = match js.get_stream(stream).await {
            Ok(mut s) => Some(
                s.info()
                    .await
                    .cloned()
                    .map_err(|e| transient(format!("cannot read stream {stream}"), Box::new(e)))?,
            ),
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(je)
                    if je.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    None
                }
                _ => {
                    return Err(transient(
                        format!("cannot look up stream {stream}"),
                        Box::new(e),
                    ))
                }
            },
        };
        if let Some(info) = &existing {
            if !info
                .config
                .subjects
                .iter()
                .any(|f| filter_covers(f, &self.subject_shape))
            {
                tracing::warn!(
                    sink = %self.name, stream = %stream, stream_subjects = ?info.config.subjects,
                    subject = %self.subject_shape,
                    "the stream does not capture every subject this sink publishes to; those events will be refused (503)"
                );
            }
        }
        let Some(ensure) = &self.ensure else {
            if existing.is_none() {
                tracing::warn!(sink = %self.name, stream = %stream, "stream does not exist; publishes fail until it is created");
            }
            return Ok(());
        };
        let result = match existing {
            Some(info) => check_existing(&info.config, ensure),
            None => {
                let config = jetstream::stream::Config {
                    name: stream.clone(),
                    subjects: ensure.subjects.clone(),
                    storage: match ensure.storage {
                        NatsStorage::File => StorageType::File,
                        NatsStorage::Memory => StorageType::Memory,
                    },
                    duplicate_window: Duration::from_secs(ensure.duplicate_window_secs),
                    ..Default::default()
                };
                match js.create_stream(config).await {
                    Ok(_) => {
                        tracing::info!(sink = %self.name, stream = %stream, subjects = ?ensure.subjects, "stream created");
                        Ok(())
                    }
                    // A replica may have created it meanwhile (with another config), or the
                    // subjects overlap another stream's: both need an operator, unless the
                    // stream now exists and fits.
                    Err(e) => match js.get_stream(stream).await {
                        Ok(mut s) => match s.info().await {
                            Ok(info) => check_existing(&info.config, ensure),
                            Err(_) => Err(EnsureError::Mismatch(format!(
                                "cannot create stream {stream}: {e}"
                            ))),
                        },
                        Err(_) => match e.kind() {
                            jetstream::context::CreateStreamErrorKind::JetStream(_) => {
                                Err(EnsureError::Mismatch(format!(
                                    "cannot create stream {stream}: {e}"
                                )))
                            }
                            _ => Err(transient(
                                format!("cannot create stream {stream}"),
                                Box::new(e),
                            )),
                        },
                    },
                }
            }
        };
        self.stream_ok.store(result.is_ok(), Ordering::Release);
        result
    }
}

/// An existing stream is never changed; it must cover every configured subject.
fn check_existing(
    config: &jetstream::stream::Config,
    ensure: &EnsureStreamSettings,
) -> Result<(), EnsureError> {
    let missing: Vec<&String> = ensure
        .subjects
        .iter()
        .filter(|s| !config.subjects.iter().any(|f| filter_covers(f, s)))
        .collect();
    if !missing.is_empty() {
        return Err(EnsureError::Mismatch(format!(
            "exists with subjects {:?}, which do not cover {:?}; the bridge never modifies an \
             existing stream: add the subjects or fix ensure_stream.subjects",
            config.subjects, missing
        )));
    }
    let wanted = Duration::from_secs(ensure.duplicate_window_secs);
    if config.duplicate_window < wanted {
        tracing::warn!(
            stream = %config.name,
            duplicate_window_secs = config.duplicate_window.as_secs(),
            wanted_secs = wanted.as_secs(),
            "existing stream has a shorter duplicate window than configured"
        );
    }
    Ok(())
}

impl NatsSink {
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
                let not_match = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<jetstream::Error>())
                    .is_some_and(|je| je.error_code() == jetstream::ErrorCode::STREAM_NOT_MATCH);
                if not_match {
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
        let (mut headers, payload) = encode(self.format, event);

        // An oversized message makes the server close the connection, failing every other
        // publish in flight: refuse it here instead.
        let max = inner.client.server_info().max_payload;
        if max > 0 && payload.len() > max {
            return Err(SinkError::Rejected(format!(
                "event of {} bytes exceeds the server's max_payload of {max} bytes",
                payload.len()
            )));
        }

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

        headers.insert(header::NATS_MESSAGE_ID, event.event.id.as_str());
        if let Some(stream) = &inner.stream {
            headers.insert(header::NATS_EXPECTED_STREAM, stream.as_str());
        }
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
    use crate::event::test_support::sample_event;

    #[test]
    fn percent_encoding_follows_the_binding() {
        assert_eq!(percent_encode("plain-Value_1.2:3/x"), "plain-Value_1.2:3/x");
        assert!(matches!(percent_encode("abc"), Cow::Borrowed(_)));
        assert_eq!(percent_encode("a b"), "a%20b");
        assert_eq!(percent_encode("say \"hi\""), "say%20%22hi%22");
        assert_eq!(percent_encode("100%"), "100%25");
        assert_eq!(percent_encode("tab\there"), "tab%09here");
        assert_eq!(percent_encode("line\r\nbreak"), "line%0D%0Abreak");
        assert_eq!(percent_encode("\u{7f}"), "%7F");
        // Non-ASCII: each UTF-8 byte.
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_encode("Euro €"), "Euro%20%E2%82%AC");
        // Printable ASCII other than '"' and '%' stays.
        let printable: String = (0x21u8..=0x7e)
            .filter(|b| *b != b'"' && *b != b'%')
            .map(char::from)
            .collect();
        assert_eq!(percent_encode(&printable), printable);
    }

    #[test]
    fn binary_mode_has_a_header_for_every_attribute() {
        let mut ev = sample_event();
        ev.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        ev.source = "/call bridge".into();
        let out = Outgoing::new(ev);
        let (headers, payload) = encode(NatsFormat::Binary, &out);
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
        let (headers, payload) = encode(NatsFormat::Structured, &out);
        assert_eq!(payload, out.structured);
        assert_eq!(
            headers.get("Content-Type").unwrap().as_str(),
            "application/cloudevents+json"
        );
    }

    #[test]
    fn substituted_values_become_one_safe_token() {
        let mut ev = sample_event();
        ev.data.call_id = "a.b *>%c é".into();
        let t = SubjectTemplate::parse("calls.{kind}.{call_id}").unwrap();
        assert_eq!(t.render(&ev), "calls.status.a%2Eb%20%2A%3E%25c%20%C3%A9");
        ev.data.call_id = "abc-DEF_123".into();
        assert_eq!(t.render(&ev), "calls.status.abc-DEF_123");
        ev.data.status = Some(String::new());
        ev.data.direction = None;
        let t = SubjectTemplate::parse("c.{status}.{direction}.x-{kind}").unwrap();
        assert_eq!(t.render(&ev), "c.unknown.unknown.x-status");
        // Distinct values stay distinct.
        let mut a = String::new();
        let mut b = String::new();
        sanitize_token("a.b", &mut a);
        sanitize_token("a%2Eb", &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn literal_text_must_form_a_subject() {
        for bad in [
            "calls..{kind}",
            ".calls",
            "calls.",
            "calls.*",
            "calls.>",
            "calls.a*b",
            "calls here.{kind}",
            "calls.{nope}",
        ] {
            assert!(SubjectTemplate::parse(bad).is_err(), "{bad}");
        }
        let t = SubjectTemplate::parse("calls.{kind}.id-{call_id}.x").unwrap();
        assert_eq!(t.shape(), "calls.*.*.x");
    }

    #[test]
    fn filter_coverage() {
        assert!(filter_covers("calls.>", "calls.*.*"));
        assert!(filter_covers("calls.*.*", "calls.status.x"));
        assert!(filter_covers(">", "a"));
        assert!(!filter_covers("calls.status.*", "calls.*.*"));
        assert!(!filter_covers("calls.*", "calls.*.*"));
        assert!(!filter_covers("calls.*.*", "calls.>"));
        assert!(filter_covers("calls.>", "calls.>"));
        assert!(!filter_covers("calls.>", "calls"));
        assert!(check_filter("calls.>").is_ok());
        assert!(check_filter("calls.>.x").is_err());
        assert!(check_filter("calls.a*").is_err());
        assert!(check_filter("calls..x").is_err());
    }

    fn validate(yaml: &str) -> Issues {
        let s: NatsSinkSettings = serde_yaml::from_str(yaml).expect("parses");
        let mut issues = Issues::default();
        s.validate("sinks[0]", &mut issues);
        issues
    }

    #[test]
    fn validation_names_fields() {
        let i = validate(
            "{name: n, url: 'nats://127.0.0.1:4222', subject: 'calls.{kind}', \
             jetstream: {enabled: false}}",
        );
        assert!(i.errors.is_empty(), "{:?}", i.errors);
        assert!(i
            .warnings
            .iter()
            .any(|w| w.path == "sinks[0].jetstream.enabled" && w.message.contains("persistence")));

        let i = validate(
            "{name: n, url: 'nats://127.0.0.1:4222', subject: 'calls..{kind}', user: u, \
             token: t, tls: {cert_file: /x}, \
             jetstream: {stream: 'a.b', ensure_stream: {subjects: ['x.>.y'], duplicate_window_secs: 0}}}",
        );
        let paths: Vec<&str> = i.errors.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "sinks[0].subject",
            "sinks[0].password",
            "sinks[0].tls",
            "sinks[0].jetstream.stream",
            "sinks[0].jetstream.ensure_stream.subjects[0]",
            "sinks[0].jetstream.ensure_stream.duplicate_window_secs",
        ] {
            assert!(paths.contains(&p), "missing {p} in {paths:?}");
        }

        let i = validate(
            "{name: n, url: 'nats://127.0.0.1:4222', subject: 'calls.{kind}.{call_id}', \
             jetstream: {stream: S, ensure_stream: {subjects: ['calls.status.*']}}}",
        );
        assert!(i.errors.is_empty(), "{:?}", i.errors);
        assert!(i.warnings.iter().any(|w| w.path == "sinks[0].subject"));
    }
}
