//! Readiness: whether this process can answer a webhook 200 truthfully now.
//!
//! A pod leaves its Service while it is unready, so readiness must fail exactly when the answer
//! would be a 503 — no sooner. A required sink that reaches its broker is fine. One that does
//! not, with `on_unavailable: spool`, is fine too while the spool can take its events: that is
//! what the spool is for, and were the pod unready during the outage, no webhook would ever
//! reach it to be spooled. A spool that is full (at `spool.max_bytes`, or it refused an event
//! for room since the last entry left) or cannot make a write durable makes the pod unready.
//! Optional sinks never do. `/readyz` gives the verdict and, per sink, why (see [`Readiness`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::fanout::Fanout;
use crate::sinks::OnUnavailable;
use crate::spool::SpoolHealth;

/// Why a sink counts as it does, in `/readyz` (`reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The sink reaches its destination.
    Connected,
    /// Its destination is unreachable; its events go to the spool, which can take them.
    Spooling,
    /// Its destination is unreachable and it does not spool (`on_unavailable: fail`).
    NotConnected,
    /// Its destination is unreachable and the spool has no room.
    SpoolFull,
    /// Its destination is unreachable and the spool cannot make a write durable.
    SpoolUnwritable,
}

/// One sink's part of the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReadiness {
    /// Whether this sink can take an event now: it is connected, or its spool has room. Only a
    /// required sink's counts for the pod.
    pub ready: bool,
    pub required: bool,
    /// Whether the sink reaches its destination (the `callbridge_sink_ready` gauge).
    pub connected: bool,
    pub reason: Reason,
    /// The spool's figures or error, when the spool is what decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The verdict `/readyz` answers (200 when `ready`, else 503), with each sink's part.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub sinks: BTreeMap<String, SinkReadiness>,
}

/// Decides readiness now. The spool is asked (one probe write) only when a spooling sink is
/// disconnected, and once for all of them.
pub async fn readiness(fanout: &Fanout) -> Readiness {
    let spool_needed = fanout
        .sinks()
        .iter()
        .any(|s| s.on_unavailable == OnUnavailable::Spool && !s.sink.is_ready());
    let spool = match (spool_needed, fanout.spool()) {
        (true, Some(spool)) => Some(spool.health().await),
        _ => None,
    };
    let mut ready = true;
    let mut sinks = BTreeMap::new();
    for s in fanout.sinks() {
        let connected = s.sink.is_ready();
        let (reason, detail) = if connected {
            (Reason::Connected, None)
        } else if s.on_unavailable != OnUnavailable::Spool {
            (Reason::NotConnected, None)
        } else {
            match &spool {
                Some(SpoolHealth::Writable { held, max }) => (
                    Reason::Spooling,
                    Some(format!("spool holds {held} of {max} bytes")),
                ),
                Some(SpoolHealth::Full { held, max }) => (
                    Reason::SpoolFull,
                    Some(format!(
                        "spool full: {held} of {max} bytes held, the next event does not fit"
                    )),
                ),
                Some(SpoolHealth::Unwritable { error }) => {
                    (Reason::SpoolUnwritable, Some(error.clone()))
                }
                // Configuration validation requires a spool for a spooling sink.
                None => (Reason::NotConnected, Some("no spool configured".into())),
            }
        };
        let sink_ready = matches!(reason, Reason::Connected | Reason::Spooling);
        ready &= sink_ready || !s.required;
        sinks.insert(
            s.name.clone(),
            SinkReadiness {
                ready: sink_ready,
                required: s.required,
                connected,
                reason,
                detail,
            },
        );
    }
    Readiness { ready, sinks }
}
