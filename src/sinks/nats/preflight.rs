//! `validate --connect` for NATS: would each subject the config can render be stored?
//!
//! JetStream: the server is asked which stream captures each subject (the stream-names API with
//! a subject filter), so the answer is the server's own matching, including streams created
//! outside this configuration. A subject no stream captures is what a publish answers "no
//! responders" for (503). With `jetstream.stream`, the capturing stream must be that one (the
//! sink sends `Nats-Expected-Stream`); with `ensure_stream`, a stream that does not exist yet
//! counts when its configured subjects cover the subject, because the bridge creates it at
//! startup.
//!
//! Core NATS stores nothing: a message reaches the subscribers connected at that moment, so
//! there is nothing to check beyond the connection, and the report says so.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::GetStreamByNameErrorKind};
use tokio::sync::Notify;

use super::client::connect_options;
use super::settings::{parse_servers, NatsSinkSettings};
use super::subject::filter_covers;
use crate::sinks::preflight::{Check, Probe, ProbeError};

/// Connects within `budget` and checks each of `subjects`.
pub async fn probe(
    settings: &NatsSinkSettings,
    subjects: &[String],
    budget: Duration,
) -> Result<Probe, ProbeError> {
    let servers = parse_servers(&settings.url).map_err(ProbeError::Client)?;
    let options = connect_options(settings, &Arc::new(Notify::new()))
        .await
        .map_err(|e| ProbeError::Client(e.to_string()))?;
    let client = match tokio::time::timeout(budget, options.connect(servers)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(ProbeError::connect(
                "the server refused or is unreachable",
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

    if !settings.jetstream.enabled {
        let why = "core NATS: a message reaches only the subscribers connected at that moment; \
                   nothing stores it, so there is nothing to check (use JetStream to keep events)";
        return Ok(Probe {
            checks: subjects.iter().map(|_| Check::unverified(why)).collect(),
            notes: vec!["connected; core NATS (jetstream.enabled: false)".into()],
        });
    }

    let js = jetstream::context::ContextBuilder::new()
        .timeout(budget)
        .build(client.clone());
    let expected = settings.jetstream.stream.as_deref();
    let ensure = settings.jetstream.ensure_stream.as_ref();
    // With ensure_stream, whether the named stream exists decides what a subject nobody
    // captures means: the bridge creates a missing stream, never changes an existing one.
    let ensured_missing = match (expected, ensure) {
        (Some(name), Some(_)) => match js.get_stream(name).await {
            Ok(_) => false,
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(je)
                    if je.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    true
                }
                _ => return Err(ProbeError::broker("JetStream did not answer", e)),
            },
        },
        _ => false,
    };

    let mut checks = Vec::with_capacity(subjects.len());
    for subject in subjects {
        let check = match js.stream_by_subject(subject.as_str()).await {
            Ok(found) => match expected {
                Some(name) if name != found => Check::missing(format!(
                    "captured by stream {found}, not by {name} (jetstream.stream): the server \
                     refuses the publish (Nats-Expected-Stream)"
                )),
                _ => Check::ok(format!("stream {found} captures it")),
            },
            Err(e) => match e.kind() {
                GetStreamByNameErrorKind::NotFound => match (expected, ensure) {
                    (Some(name), Some(ensure))
                        if ensured_missing
                            && ensure.subjects.iter().any(|f| filter_covers(f, subject)) =>
                    {
                        Check::ok(format!(
                            "stream {name} does not exist yet; the bridge creates it at startup \
                             with subjects {:?}",
                            ensure.subjects
                        ))
                    }
                    _ => Check::missing(
                        "no stream captures this subject: a publish gets \"no responders\" (503)",
                    ),
                },
                _ => {
                    return Err(ProbeError::broker(
                        "JetStream did not answer the stream-names request (is JetStream enabled \
                         for this account?)",
                        e,
                    ))
                }
            },
        };
        checks.push(check);
    }
    Ok(Probe {
        checks,
        notes: Vec::new(),
    })
}
