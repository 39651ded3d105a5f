//! The JetStream stream behind the sink: with `ensure_stream`, created if missing or checked to
//! cover the subjects (an existing stream is never modified); checked again after every
//! reconnect and after a publish found no stream, so a memory stream lost in a restart returns.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, stream::StorageType};

use super::settings::{EnsureStreamSettings, NatsStorage};
use super::subject::filter_covers;
use super::Inner;

/// Why the stream check failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum EnsureError {
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

impl Inner {
    /// Re-checks the stream whenever woken, retrying transient failures while connected.
    pub(super) async fn checker_loop(&self) {
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
    pub(super) async fn check_stream(&self) -> Result<(), EnsureError> {
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
