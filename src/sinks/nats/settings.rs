//! The `nats` sink's settings: servers, subject, authentication, TLS and JetStream, with
//! their checks (every problem by field path).

use std::path::PathBuf;
use std::sync::Arc;

use async_nats::ServerAddr;
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::subject::{check_filter, filter_covers, SubjectTemplate};
use super::NatsSink;
use crate::event::binding::Format;
use crate::sinks::{BuildError, Sink, SinkSpec};
use crate::template::Template;
use crate::validate::{check_template, default_true, Issues};

sink_settings! {
    "nats",
    /// Publishes each event to NATS: JetStream with a PubAck per event (default), or core NATS.
    /// `timeout_ms` bounds the wait for the PubAck (core NATS: for the flush).
    pub struct NatsSinkSettings {
        /// One server (`nats://host:4222`, `tls://host:4222`) or a comma-separated list for a cluster;
        /// the client fails over between them.
        pub url: String,
        /// Subject template, e.g. `calls.{kind}.{status}`. Substituted values are sanitised into one
        /// token each (see the module docs), so a call id can never add tokens or wildcards.
        pub subject: String,
        /// CloudEvents NATS binding mode: `binary` (attributes as `ce-*` headers, payload = `data`)
        /// or `structured` (payload = the whole event).
        #[serde(default)]
        pub format: Format,
        /// Username/password authentication (both or neither).
        #[serde(default)]
        pub user: Option<String>,
        /// The password for `user`.
        #[serde(default)]
        #[schemars(with = "Option<String>")]
        pub password: Option<SecretString>,
        /// Token authentication.
        #[serde(default)]
        #[schemars(with = "Option<String>")]
        pub token: Option<SecretString>,
        /// NKey seed (`SU...`) authentication.
        #[serde(default)]
        #[schemars(with = "Option<String>")]
        pub nkey: Option<SecretString>,
        /// A `.creds` file (JWT + NKey seed), as issued by NGS/Synadia or `nsc`.
        #[serde(default)]
        pub credentials_file: Option<PathBuf>,
        /// TLS towards the server (a `tls://` URL enables it too).
        #[serde(default)]
        pub tls: Option<NatsTlsSettings>,
        /// JetStream (on by default): each publish waits for the stream's PubAck.
        #[serde(default)]
        pub jetstream: JetStreamSettings,
        /// Most PubAcks awaited at once; beyond it publishes fail fast (`queue_full`) instead of
        /// queueing without bound. Bounds the client's memory under a slow or stuck server.
        #[serde(default = "default_max_in_flight")]
        pub max_in_flight: usize,
    }
}

/// TLS towards the server. A `tls://` URL enables TLS too.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NatsTlsSettings {
    /// PEM bundle of the CA(s) that signed the server's certificate (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, when the server requires mutual TLS (both or neither).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Refuse to connect without TLS even if the server does not ask for it.
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JetStreamSettings {
    /// `false` = core NATS: no acknowledgement, no persistence (a warning at validate time).
    #[serde(default = "default_true")]
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

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnsureStreamSettings {
    /// Subject filters the stream captures, e.g. `["calls.>"]`; must cover `subject`.
    pub subjects: Vec<String>,
    /// Where the stream keeps its messages.
    #[serde(default)]
    pub storage: NatsStorage,
    /// The server drops a second message with the same `Nats-Msg-Id` within this window. The
    /// default (30 min) outlasts the sender's retry horizon (21 min), so server-side dedupe holds
    /// even across bridge replicas and restarts; the stream keeps one id per message for it.
    #[serde(default = "default_duplicate_window_secs")]
    pub duplicate_window_secs: u64,
}

#[derive(
    Debug, Clone, Copy, Deserialize, schemars::JsonSchema, serde::Serialize, Default, PartialEq, Eq,
)]
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
#[async_trait]
impl SinkSpec for NatsSinkSettings {
    /// Semantic checks; `path` is the sink's field path (`sinks[2]`).
    fn validate(&self, path: &str, issues: &mut Issues) {
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

    async fn build(&self) -> Result<Arc<dyn Sink>, BuildError> {
        Ok(Arc::new(NatsSink::start(self).await?))
    }
}

fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_graphic() && c != b'.' && c != b'*' && c != b'>')
}

pub(crate) fn parse_servers(url: &str) -> Result<Vec<ServerAddr>, String> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<ServerAddr>()
                .map_err(|e| format!("not a NATS server URL {u:?}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::test_support::validated;

    fn validate(yaml: &str) -> Issues {
        validated::<NatsSinkSettings>(yaml).expect("parses").1
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
