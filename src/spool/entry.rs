//! The stored forms, the same for every backend: a waiting entry, and a dead-letter record.
//!
//! A backend stores opaque bytes under `(sink, seq)`; only this file knows what is inside, so a
//! spool file written by one version of the bridge is read by the next without a migration.

use std::time::{SystemTime, UNIX_EPOCH};

/// One spooled event, as the replayer gets it back.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    /// When it was spooled (ms since the Unix epoch).
    pub spooled_at_ms: u64,
    pub call_id: String,
    /// The whole event as JSON (CloudEvents structured mode), as it was answered.
    pub event: Vec<u8>,
}

impl Entry {
    /// An entry from its stored bytes; one that does not decode is handed over with no call id
    /// and its raw bytes, for the replayer to dead-letter rather than block the queue.
    pub(crate) fn from_stored(seq: u64, raw: &[u8]) -> Entry {
        decode(seq, raw).unwrap_or(Entry {
            seq,
            spooled_at_ms: 0,
            call_id: String::new(),
            event: raw.to_vec(),
        })
    }
}

/// The stored form: spooled-at (8 bytes, LE), call id length (2 bytes, LE), call id, event JSON.
pub(crate) fn encode(spooled_at_ms: u64, call_id: &str, event: &[u8]) -> Vec<u8> {
    let id = &call_id.as_bytes()[..call_id.len().min(u16::MAX as usize)];
    let mut v = Vec::with_capacity(10 + id.len() + event.len());
    v.extend_from_slice(&spooled_at_ms.to_le_bytes());
    v.extend_from_slice(&(id.len() as u16).to_le_bytes());
    v.extend_from_slice(id);
    v.extend_from_slice(event);
    v
}

pub(crate) fn decode(seq: u64, raw: &[u8]) -> Option<Entry> {
    let at = u64::from_le_bytes(raw.get(..8)?.try_into().ok()?);
    let len = u16::from_le_bytes(raw.get(8..10)?.try_into().ok()?) as usize;
    let call_id = std::str::from_utf8(raw.get(10..10 + len)?)
        .ok()?
        .to_string();
    Some(Entry {
        seq,
        spooled_at_ms: at,
        call_id,
        event: raw.get(10 + len..)?.to_vec(),
    })
}

/// A dead-letter record as stored: the reason, when, the event's id, and the entry's stored
/// bytes. The id is written beside the entry so the spool's bookkeeping (one dead letter per
/// sink and event) reads it at open without decoding every entry.
pub(crate) fn dead_record_bytes(reason: &str, event_id: &str, raw: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "reason": reason,
        "dead_at_ms": now_ms(),
        "event_id": event_id,
        "entry": hex::encode(raw),
    }))
    .unwrap_or_default()
}

/// What the bookkeeping needs of a dead-letter record: when it died and its event id (`None`
/// in a record written before the id was stored beside the entry). Skips the entry's bytes.
pub(crate) fn dead_record_head(record: &[u8]) -> (u64, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        dead_at_ms: u64,
        #[serde(default)]
        event_id: Option<String>,
    }
    serde_json::from_slice::<Head>(record)
        .map(|h| (h.dead_at_ms, h.event_id))
        .unwrap_or((0, None))
}

/// A dead-letter record: (reason, dead at, the entry when it still decodes).
pub(crate) fn dead_record(seq: u64, record: &[u8]) -> (String, u64, Option<Entry>) {
    let v: serde_json::Value = serde_json::from_slice(record).unwrap_or_default();
    let reason = v["reason"].as_str().unwrap_or_default().to_string();
    let at = v["dead_at_ms"].as_u64().unwrap_or(0);
    let entry = v["entry"]
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|raw| decode(seq, &raw));
    (reason, at, entry)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_garbage_does_not_decode() {
        let raw = encode(42, "call-1", b"{\"id\":1}");
        let e = decode(7, &raw).unwrap();
        assert_eq!(
            (
                e.seq,
                e.spooled_at_ms,
                e.call_id.as_str(),
                e.event.as_slice()
            ),
            (7, 42, "call-1", b"{\"id\":1}".as_slice())
        );
        assert!(decode(1, b"short").is_none());
        let mut bad = encode(1, "call", b"x");
        bad[8] = 200; // a call id length past the end
        assert!(decode(1, &bad).is_none());
        let kept = Entry::from_stored(3, b"short");
        assert_eq!(
            (kept.seq, kept.call_id.as_str(), kept.event.as_slice()),
            (3, "", b"short".as_slice())
        );
    }

    #[test]
    fn a_dead_letter_record_keeps_the_reason_and_the_entry() {
        let raw = encode(5, "call-9", b"{}");
        let record = dead_record_bytes("too large", "e-9", &raw);
        let (reason, at, entry) = dead_record(4, &record);
        assert_eq!(reason, "too large");
        assert!(at > 0);
        assert_eq!(dead_record_head(&record), (at, Some("e-9".to_string())));
        assert_eq!(dead_record_head(b"{\"reason\": \"old\"}"), (0, None));
        let entry = entry.unwrap();
        assert_eq!((entry.seq, entry.call_id.as_str()), (4, "call-9"));
    }
}
