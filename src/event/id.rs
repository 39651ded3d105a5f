//! Deterministic event ids.
//!
//! The id is a pure function of what identifies one webhook delivery, so the same webhook gets
//! the same id on every retry and on every replica; brokers and consumers dedupe on it
//! (Kafka `ce_id`, AMQP `message_id`, `Nats-Msg-Id`).
//!
//! Derivation (v1): SHA-256 over the UTF-8 string
//! `callbridge/v1` 0x1F `<family key parts joined by 0x1F>`; the first 16 bytes are shown as a
//! UUID with version 8 ("custom") and the RFC 9562 variant bits set. For the callback family the
//! parts are `callback`, call_id, kind, status (empty when absent), retry (0 when absent).

use sha2::{Digest, Sha256};

const DOMAIN: &str = "callbridge/v1";
const SEP: u8 = 0x1f;

/// Derives an id from the parts that identify one delivery.
pub fn derive(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN.as_bytes());
    for p in parts {
        h.update([SEP]);
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
    let hex = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_sensitive_to_every_part() {
        let a = derive(&["callback", "c1", "status", "completed", "0"]);
        assert_eq!(a, derive(&["callback", "c1", "status", "completed", "0"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "uuid version 8: {a}");
        for other in [
            derive(&["callback", "c2", "status", "completed", "0"]),
            derive(&["callback", "c1", "analysis", "completed", "0"]),
            derive(&["callback", "c1", "status", "failed", "0"]),
            derive(&["callback", "c1", "status", "completed", "1"]),
            // the separator keeps part boundaries: "c1s" + "tatus" is not "c1" + "status"
            derive(&["callback", "c1s", "tatus", "completed", "0"]),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn pinned_value_never_changes() {
        // Changing the derivation would re-publish every in-window retry downstream: if this
        // test fails on purpose, bump the domain string and document it in docs/events.md.
        assert_eq!(
            derive(&["callback", "test-call-123", "status", "completed", "0"]),
            PINNED
        );
    }
    const PINNED: &str = "60c97bfc-7a69-80b7-a061-3bea50d828e7";
}
