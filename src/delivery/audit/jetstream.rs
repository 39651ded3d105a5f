//! JetStream: the message at the receipt's stream sequence (the `STREAM.MSG.GET` API), its
//! `Nats-Msg-Id` header compared with the event id.
//!
//! The JetStream API is asked directly (a request on `$JS.API.STREAM.MSG.GET.<stream>`), so the
//! answer's error code tells "no message at this sequence" (10037) from a failed read. When the
//! message is gone, the stream's settings say whether it may have been removed legitimately:
//! `max_age` passed, a work-queue or interest stream (consumed messages go), limits that
//! discard old messages (`max_msgs_per_subject`, or `max_msgs`/`max_bytes` with the sequence
//! now before the stream's first) — then it is unverifiable; otherwise missing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use serde::Deserialize;
use tokio::sync::{Notify, OnceCell};

use super::{Finding, ReadError, Reader};
use crate::sinks::nats::NatsSinkSettings;
use crate::sinks::Receipt;

/// The JetStream API's "no message found".
pub const NO_MESSAGE_FOUND: u64 = 10037;

/// What the stream holds at the sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// A message, with its `Nats-Msg-Id` (None: it has none).
    Found(Option<String>),
    NotFound,
}

/// The stream's settings and state that may remove a message legitimately.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Limits {
    /// `limits`, `interest` or `workqueue`.
    #[serde(default)]
    pub retention: String,
    /// Nanoseconds; 0 = none.
    #[serde(default)]
    pub max_age: i64,
    #[serde(default)]
    pub max_msgs: i64,
    #[serde(default)]
    pub max_bytes: i64,
    #[serde(default)]
    pub max_msgs_per_subject: i64,
    /// The stream's first sequence now.
    #[serde(default)]
    pub first_seq: u64,
}

/// The verdict on the copy of `expected` at `sequence`, stored `age_ms` ago.
pub fn verdict(
    expected: &str,
    probe: &Probe,
    sequence: u64,
    age_ms: u64,
    limits: &Limits,
) -> Finding {
    match probe {
        Probe::Found(Some(id)) if id == expected => Finding::verified(),
        Probe::Found(Some(id)) => Finding::missing(format!("another message is there ({id})")),
        Probe::Found(None) => Finding::missing("the message there has no Nats-Msg-Id"),
        Probe::NotFound => {
            if !limits.retention.is_empty() && limits.retention != "limits" {
                return Finding::unverifiable(format!(
                    "a {} stream removes messages once consumed",
                    limits.retention
                ));
            }
            if limits.max_age > 0 && u128::from(age_ms) * 1_000_000 >= limits.max_age as u128 {
                return Finding::unverifiable("the stream's max_age has passed");
            }
            let discards_old = limits.max_msgs_per_subject > 0
                || ((limits.max_msgs > 0 || limits.max_bytes > 0) && sequence < limits.first_seq);
            if discards_old {
                return Finding::unverifiable("the stream's limits may have discarded it");
            }
            Finding::missing(format!("no message at sequence {sequence}"))
        }
    }
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct StoredMessage {
    #[serde(default)]
    hdrs: Option<String>,
}

#[derive(Deserialize)]
struct MsgGet {
    #[serde(default)]
    message: Option<StoredMessage>,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct StreamInfo {
    #[serde(default)]
    config: Limits,
    #[serde(default)]
    state: StreamState,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Deserialize, Default)]
struct StreamState {
    #[serde(default)]
    first_seq: u64,
}

/// The value of `Nats-Msg-Id` in a stored message's headers (`NATS/1.0\r\nName: value\r\n...`).
pub fn msg_id(headers: &[u8]) -> Option<String> {
    String::from_utf8_lossy(headers)
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("Nats-Msg-Id"))
        .map(|(_, v)| v.trim().to_string())
}

/// The answer of `STREAM.MSG.GET` as a probe.
fn parse_get(payload: &[u8]) -> Result<Probe, ReadError> {
    let got: MsgGet =
        serde_json::from_slice(payload).map_err(|e| ReadError::Other(format!("msg get: {e}")))?;
    match (got.message, got.error) {
        (Some(m), _) => {
            let headers = match m.hdrs {
                Some(h) => base64::engine::general_purpose::STANDARD
                    .decode(h)
                    .map_err(|e| ReadError::Other(format!("msg get headers: {e}")))?,
                None => Vec::new(),
            };
            Ok(Probe::Found(msg_id(&headers)))
        }
        (None, Some(e)) if e.err_code == NO_MESSAGE_FOUND => Ok(Probe::NotFound),
        (None, Some(e)) => Err(ReadError::Other(format!(
            "msg get: {} ({})",
            e.description, e.err_code
        ))),
        (None, None) => Err(ReadError::Other("msg get: an empty answer".into())),
    }
}

const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub struct JetStreamReader {
    settings: NatsSinkSettings,
    client: OnceCell<async_nats::Client>,
}

impl JetStreamReader {
    pub fn new(settings: NatsSinkSettings) -> JetStreamReader {
        JetStreamReader {
            settings,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&async_nats::Client, ReadError> {
        self.client
            .get_or_try_init(|| async {
                let servers = crate::sinks::nats::parse_servers(&self.settings.url)
                    .map_err(ReadError::Other)?;
                let options =
                    crate::sinks::nats::connect_options(&self.settings, &Arc::new(Notify::new()))
                        .await
                        .map_err(|e| ReadError::Nats(Box::new(e)))?;
                tokio::time::timeout(READ_TIMEOUT, options.connect(servers))
                    .await
                    .map_err(|_| ReadError::Timeout(READ_TIMEOUT.as_millis() as u64))?
                    .map_err(|e| ReadError::Nats(Box::new(e)))
            })
            .await
    }

    async fn request(
        &self,
        subject: String,
        body: serde_json::Value,
    ) -> Result<bytes::Bytes, ReadError> {
        let client = self.client().await?;
        let reply = tokio::time::timeout(
            READ_TIMEOUT,
            client.request(subject, body.to_string().into()),
        )
        .await
        .map_err(|_| ReadError::Timeout(READ_TIMEOUT.as_millis() as u64))?
        .map_err(|e| ReadError::Nats(Box::new(e)))?;
        Ok(reply.payload)
    }

    async fn limits(&self, stream: &str) -> Result<Limits, ReadError> {
        let payload = self
            .request(
                format!("$JS.API.STREAM.INFO.{stream}"),
                serde_json::json!({}),
            )
            .await?;
        let info: StreamInfo = serde_json::from_slice(&payload)
            .map_err(|e| ReadError::Other(format!("stream info: {e}")))?;
        if let Some(e) = info.error {
            return Err(ReadError::Other(format!(
                "stream info: {} ({})",
                e.description, e.err_code
            )));
        }
        Ok(Limits {
            first_seq: info.state.first_seq,
            ..info.config
        })
    }
}

#[async_trait]
impl Reader for JetStreamReader {
    async fn read(
        &self,
        event_id: &str,
        receipt: &Receipt,
        age: Duration,
    ) -> Result<Finding, ReadError> {
        let Receipt::JetStream {
            stream, sequence, ..
        } = receipt
        else {
            return Err(ReadError::Other("not a JetStream receipt".into()));
        };
        let payload = self
            .request(
                format!("$JS.API.STREAM.MSG.GET.{stream}"),
                serde_json::json!({ "seq": sequence }),
            )
            .await?;
        let probe = parse_get(&payload)?;
        let limits = match probe {
            Probe::NotFound => self.limits(stream).await?,
            Probe::Found(_) => Limits::default(),
        };
        Ok(verdict(
            event_id,
            &probe,
            *sequence,
            age.as_millis() as u64,
            &limits,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Verdict;

    fn limits(retention: &str) -> Limits {
        Limits {
            retention: retention.into(),
            ..Limits::default()
        }
    }

    #[test]
    fn the_same_msg_id_is_verified_another_or_none_is_missing() {
        let l = limits("limits");
        assert_eq!(
            verdict("e1", &Probe::Found(Some("e1".into())), 1, 0, &l).verdict,
            Verdict::Verified
        );
        assert_eq!(
            verdict("e1", &Probe::Found(Some("e2".into())), 1, 0, &l).verdict,
            Verdict::Missing
        );
        assert_eq!(
            verdict("e1", &Probe::Found(None), 1, 0, &l).verdict,
            Verdict::Missing
        );
    }

    #[test]
    fn a_purged_message_of_a_plain_stream_is_missing() {
        let f = verdict("e1", &Probe::NotFound, 42, 10_000, &limits("limits"));
        assert_eq!(f.verdict, Verdict::Missing);
        assert_eq!(f.detail.as_deref(), Some("no message at sequence 42"));
        // An unknown retention (empty) judges like `limits`.
        assert_eq!(
            verdict("e1", &Probe::NotFound, 42, 0, &limits("")).verdict,
            Verdict::Missing
        );
    }

    #[test]
    fn a_gone_message_the_stream_may_have_removed_is_unverifiable() {
        let un = |l: &Limits, seq: u64, age_ms: u64| {
            verdict("e1", &Probe::NotFound, seq, age_ms, l).verdict
        };
        assert_eq!(un(&limits("workqueue"), 1, 0), Verdict::Unverifiable);
        assert_eq!(un(&limits("interest"), 1, 0), Verdict::Unverifiable);
        let aged = Limits {
            max_age: 2_000_000_000,
            ..limits("limits")
        };
        assert_eq!(un(&aged, 1, 2_000), Verdict::Unverifiable);
        assert_eq!(un(&aged, 1, 1_999), Verdict::Missing);
        let per_subject = Limits {
            max_msgs_per_subject: 1,
            ..limits("limits")
        };
        assert_eq!(un(&per_subject, 50, 0), Verdict::Unverifiable);
        for capped in [
            Limits {
                max_msgs: 10,
                first_seq: 5,
                ..limits("limits")
            },
            Limits {
                max_bytes: 10,
                first_seq: 5,
                ..limits("limits")
            },
        ] {
            assert_eq!(un(&capped, 4, 0), Verdict::Unverifiable, "{capped:?}");
            // Still within what the stream holds: its removal was not the limits'.
            assert_eq!(un(&capped, 5, 0), Verdict::Missing, "{capped:?}");
        }
        let first_only = Limits {
            first_seq: 5,
            ..limits("limits")
        };
        assert_eq!(un(&first_only, 4, 0), Verdict::Missing);
    }

    #[test]
    fn the_msg_id_is_read_from_the_stored_headers() {
        assert_eq!(
            msg_id(b"NATS/1.0\r\nce-id: x\r\nNats-Msg-Id: abc \r\n\r\n").as_deref(),
            Some("abc")
        );
        assert_eq!(
            msg_id(b"NATS/1.0\r\nnats-msg-id:abc\r\n\r\n").as_deref(),
            Some("abc")
        );
        assert_eq!(msg_id(b"NATS/1.0\r\nce-id: x\r\n\r\n"), None);
        // The status line is not a header.
        assert_eq!(msg_id(b"Nats-Msg-Id: abc\r\n\r\n"), None);
    }

    #[test]
    fn the_api_answer_is_a_probe_or_an_error() {
        let hdrs =
            base64::engine::general_purpose::STANDARD.encode("NATS/1.0\r\nNats-Msg-Id: e1\r\n\r\n");
        let found = format!(r#"{{"message":{{"subject":"s","seq":3,"hdrs":"{hdrs}","data":""}}}}"#);
        assert_eq!(
            parse_get(found.as_bytes()).ok(),
            Some(Probe::Found(Some("e1".into())))
        );
        assert_eq!(
            parse_get(br#"{"message":{"subject":"s","seq":3}}"#).ok(),
            Some(Probe::Found(None))
        );
        assert_eq!(
            parse_get(
                br#"{"error":{"code":404,"err_code":10037,"description":"no message found"}}"#
            )
            .ok(),
            Some(Probe::NotFound)
        );
        assert!(parse_get(
            br#"{"error":{"code":503,"err_code":10008,"description":"unavailable"}}"#
        )
        .is_err());
        assert!(parse_get(b"{}").is_err());
        assert!(parse_get(b"not json").is_err());
        assert!(parse_get(br#"{"message":{"hdrs":"%%%"}}"#).is_err());
    }
}
