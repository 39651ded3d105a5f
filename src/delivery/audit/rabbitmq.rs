//! RabbitMQ: no message can be read by its delivery tag, so the sink declares an audit queue
//! bound beside the real ones (`queues: [{..., audit: true, max_length: N}]`) and the audit
//! reads it: at a copy's turn it takes messages from the queue (`basic.get`, acknowledged on
//! receipt) until it meets the event's message id, remembering the ids it passed for the
//! copies still to come. The queue drained without it: missing (purged, dropped, never routed
//! there). The queue holds the messages in the order RabbitMQ confirmed them, and copies are
//! judged in the order they were answered, so a search rarely passes more than the copies
//! answered within `audit.delay_secs`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::BasicGetOptions;
use secrecy::{ExposeSecret, SecretString};

use super::{Finding, ReadError, Reader};
use crate::sinks::rabbitmq::RabbitmqSinkSettings;
use crate::sinks::Receipt;

/// Message ids taken from the queue and not asked for yet, oldest first, at most `cap`.
#[derive(Debug, Default)]
pub struct Passed {
    ids: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
    next: u64,
    cap: usize,
}

impl Passed {
    pub fn new(cap: usize) -> Passed {
        Passed {
            cap: cap.max(1),
            ..Passed::default()
        }
    }

    /// Remembers `id` (the oldest is forgotten beyond the cap).
    pub fn insert(&mut self, id: String) {
        self.next += 1;
        self.ids.insert(id.clone(), self.next);
        self.order.push_back((self.next, id));
        while self.ids.len() > self.cap {
            match self.order.pop_front() {
                Some((n, old)) if self.ids.get(&old) == Some(&n) => {
                    self.ids.remove(&old);
                }
                Some(_) => {}
                None => break,
            }
        }
    }

    /// Whether `id` was passed; it is forgotten then (each copy is asked for once).
    pub fn take(&mut self, id: &str) -> bool {
        self.ids.remove(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// What one search found: the id met, or the queue drained.
pub fn verdict(found: bool, queue: &str) -> Finding {
    if found {
        Finding::verified()
    } else {
        Finding::missing(format!("not in the audit queue {queue:?}"))
    }
}

const READ_TIMEOUT: Duration = Duration::from_secs(5);

struct Conn {
    _connection: lapin::Connection,
    channel: lapin::Channel,
}

struct State {
    conn: Option<Conn>,
    passed: Passed,
}

pub struct RabbitmqReader {
    url: SecretString,
    queue: String,
    state: tokio::sync::Mutex<State>,
}

impl RabbitmqReader {
    /// The reader of the sink's audit queue, when it has one.
    pub fn new(s: &RabbitmqSinkSettings) -> Option<RabbitmqReader> {
        let q = s.queues.iter().find(|q| q.audit)?;
        let cap = q.max_length.map_or(100_000, |n| n as usize).min(1_000_000);
        Some(RabbitmqReader {
            url: s.url.clone(),
            queue: q.declared_name(),
            state: tokio::sync::Mutex::new(State {
                conn: None,
                passed: Passed::new(cap),
            }),
        })
    }

    async fn connect(&self) -> Result<Conn, ReadError> {
        let connect = lapin::Connection::connect(
            self.url.expose_secret(),
            lapin::ConnectionProperties::default(),
        );
        let connection = tokio::time::timeout(READ_TIMEOUT, connect)
            .await
            .map_err(|_| ReadError::Timeout(READ_TIMEOUT.as_millis() as u64))?
            .map_err(|e| ReadError::Other(format!("connect: {e}")))?;
        let channel = tokio::time::timeout(READ_TIMEOUT, connection.create_channel())
            .await
            .map_err(|_| ReadError::Timeout(READ_TIMEOUT.as_millis() as u64))?
            .map_err(|e| ReadError::Other(format!("channel: {e}")))?;
        Ok(Conn {
            _connection: connection,
            channel,
        })
    }
}

#[async_trait]
impl Reader for RabbitmqReader {
    async fn read(
        &self,
        event_id: &str,
        receipt: &Receipt,
        _: Duration,
    ) -> Result<Finding, ReadError> {
        if !matches!(receipt, Receipt::Rabbitmq { .. }) {
            return Err(ReadError::Other("not a RabbitMQ receipt".into()));
        }
        let mut state = self.state.lock().await;
        if state.passed.take(event_id) {
            return Ok(verdict(true, &self.queue));
        }
        if state.conn.is_none() {
            state.conn = Some(self.connect().await?);
        }
        loop {
            let Some(conn) = state.conn.as_ref() else {
                return Err(ReadError::Other("no connection".into()));
            };
            let got = tokio::time::timeout(
                READ_TIMEOUT,
                conn.channel
                    .basic_get(&self.queue, BasicGetOptions { no_ack: true }),
            )
            .await;
            let got = match got {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    state.conn = None;
                    return Err(ReadError::Other(format!("basic.get: {e}")));
                }
                Err(_) => {
                    state.conn = None;
                    return Err(ReadError::Timeout(READ_TIMEOUT.as_millis() as u64));
                }
            };
            let Some(message) = got else {
                return Ok(verdict(false, &self.queue));
            };
            let id = message
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_string());
            match id {
                Some(id) if id == event_id => return Ok(verdict(true, &self.queue)),
                Some(id) => state.passed.insert(id),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Verdict;

    #[test]
    fn a_passed_id_is_found_once() {
        let mut p = Passed::new(10);
        assert!(p.is_empty());
        p.insert("a".into());
        p.insert("b".into());
        assert_eq!(p.len(), 2);
        assert!(p.take("a"));
        assert!(!p.take("a"), "asked for once");
        assert!(!p.take("c"));
        assert!(p.take("b"));
        assert!(p.is_empty());
    }

    #[test]
    fn the_oldest_passed_ids_are_forgotten_beyond_the_cap() {
        let mut p = Passed::new(2);
        for id in ["a", "b", "c"] {
            p.insert(id.into());
        }
        assert_eq!(p.len(), 2);
        assert!(!p.take("a"));
        assert!(p.take("b") && p.take("c"));
        // An id seen again counts from its latest sight.
        let mut p = Passed::new(2);
        for id in ["a", "b", "a", "c"] {
            p.insert(id.into());
        }
        assert!(p.take("a"), "{p:?}");
        assert!(p.take("c"));
        assert!(!p.take("b"));
        assert_eq!(Passed::new(0).cap, 1);
    }

    #[test]
    fn met_is_verified_and_drained_is_missing() {
        assert_eq!(verdict(true, "q").verdict, Verdict::Verified);
        let f = verdict(false, "q");
        assert_eq!(f.verdict, Verdict::Missing);
        assert_eq!(f.detail.as_deref(), Some("not in the audit queue \"q\""));
    }
}
