//! The ledger every replica shares: per (event id, sink), a claim or a receipt in a NATS
//! JetStream key-value bucket (`idempotency.store: nats-kv`).
//!
//! The local [`super::Ledger`] still coordinates the deliveries inside one replica (and
//! answers a retry it has seen at once). Before a replica publishes, it **claims** the pair in
//! the bucket with a compare-and-set: create the key if absent, or update it at the revision it
//! read when the previous claim was released or its lease ran out. The claim is a lease (owner,
//! expiry); the publish's outcome then **records** a receipt (or releases the claim). So:
//! - a retry on another replica finds the receipt and answers `duplicate` without publishing;
//! - two replicas delivering one event at once: one wins the CAS, the other waits for its
//!   outcome (the receipt) until the deadline;
//! - a replica that dies mid-publish leaves a lease that expires, and a retry elsewhere takes
//!   over (counted as a takeover).
//!
//! Keys live under the deployment's namespace (`idempotency.namespace`, by default derived from
//! `event.source`): two deployments sharing a bucket and a sink name would otherwise answer each
//! other's events `duplicate` and publish nothing.
//!
//! One key per (event id, sink): sinks of one event never contend for a key. The bucket's max
//! age is the ledger's window, so retention holds at any rate (no count cap). Lease expiry is
//! judged on this replica's clock against the expiry the owner wrote with its own: replicas'
//! clocks must agree to well within `lease_secs` (NTP does).
//!
//! **Unreachable bucket: fail closed.** A claim that cannot be made or read fails that sink's
//! delivery as transient (503, or the spool for a spooling sink, whose replay claims again):
//! never a 200 that skipped the check, never a publish another replica may be making too.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::settings::IdempotencySettings;
use crate::metrics::Metrics;
use crate::sinks::Receipt;

/// Compare-and-set rounds before a claim gives up and reports the pair busy.
const MAX_ROUNDS: usize = 8;
/// How long one bucket operation may take before the claim fails (the deadline is 10 s).
const KV_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SharedLedgerError {
    #[error("the shared ledger at {url} is unreachable")]
    Connect {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the shared ledger's bucket {bucket} cannot be opened or created")]
    Bucket {
        bucket: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the shared ledger did not answer a {what}")]
    Kv {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot read the credentials file {path}")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn kv_err(
    what: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> SharedLedgerError {
    SharedLedgerError::Kv {
        what,
        source: Box::new(e),
    }
}

/// What the bucket holds for one (event id, sink).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    /// A replica is publishing; nobody else may until `until_ms` (Unix ms).
    Lease { owner: String, until_ms: u64 },
    /// The sink's broker confirmed it.
    Acked { receipt: Receipt },
    /// The publish failed: the next delivery may claim it.
    Released,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Ours to publish; record the outcome at this revision.
    Mine { revision: u64 },
    /// Some replica's publish was confirmed: do not publish again.
    Acked(Receipt),
    /// Another replica holds an unexpired lease.
    Busy,
}

pub struct SharedLedger {
    settings: IdempotencySettings,
    /// The keys' prefix with its `.`, or empty ([`namespace`]).
    prefix: String,
    client: async_nats::Client,
    store: OnceCell<kv::Store>,
    /// This process: a random id, so a restarted replica never mistakes its old leases for
    /// its own.
    owner: String,
    lease: Duration,
    metrics: Arc<Metrics>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A bucket key part: the text itself when it is a valid key token, else a digest of it.
fn token(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        s.to_string()
    } else {
        format!("h{}", hex::encode(&Sha256::digest(s.as_bytes())[..16]))
    }
}

/// This process among every replica, past and present: host, pid and start time, digested.
fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!("{}:{}:{started}", host.trim(), std::process::id());
    hex::encode(&Sha256::digest(seed.as_bytes())[..8])
}

/// The key of (event id, sink) without a namespace.
pub fn key(id: &str, sink: &str) -> String {
    format!("{}.{}", token(id), token(sink))
}

/// The namespace of this deployment's keys: `idempotency.namespace` when set (validated as a
/// key token; empty for none), else derived from `event.source` — the source itself when it is
/// a valid key token, a digest of it otherwise (a source is usually a URI reference).
pub fn namespace(configured: Option<&str>, source: &str) -> String {
    match configured {
        Some(ns) => ns.to_string(),
        None => token(source),
    }
}

impl SharedLedger {
    /// The bucket key of (event id, sink) in this deployment's namespace.
    fn key(&self, id: &str, sink: &str) -> String {
        format!("{}{}", self.prefix, key(id, sink))
    }
}

/// Reconciliation's question, answered from the bucket: every replica's receipts, across
/// restarts, for the bucket's max age (`idempotency.window_secs`). A lease or a release is not
/// a confirmation. An unreachable bucket is an error, never a "no": the pass then skips the call
/// rather than publish what another replica may have delivered.
#[async_trait::async_trait]
impl super::DeliveryRecord for SharedLedger {
    async fn confirmed(&self, id: &str, sink: &str) -> Result<bool, super::LedgerError> {
        let unavailable =
            |e: SharedLedgerError| super::LedgerError::Unavailable(crate::sinks::error_chain(&e));
        let store = self.store().await.map_err(unavailable)?;
        let found = tokio::time::timeout(KV_TIMEOUT, store.entry(self.key(id, sink)))
            .await
            .map_err(|e| unavailable(kv_err("read", e)))?
            .map_err(|e| unavailable(kv_err("read", e)))?;
        Ok(found.is_some_and(|e| {
            e.operation == kv::Operation::Put
                && matches!(
                    serde_json::from_slice::<Record>(&e.value),
                    Ok(Record::Acked { .. })
                )
        }))
    }
}

impl SharedLedger {
    /// Connects to the NATS server(s) within a few seconds, or keeps connecting in the
    /// background (claims fail, closed, until it is connected). The bucket is opened or
    /// created on first use.
    pub async fn connect(
        settings: &IdempotencySettings,
        namespace: &str,
        metrics: Arc<Metrics>,
    ) -> Result<SharedLedger, SharedLedgerError> {
        let url = settings.url.clone().unwrap_or_default();
        let connect_err =
            |e: Box<dyn std::error::Error + Send + Sync>| SharedLedgerError::Connect {
                url: url.clone(),
                source: e,
            };
        let opts = crate::sinks::nats::credentials(
            settings.credentials_file.as_deref(),
            settings.user.as_deref().zip(settings.password.as_ref()),
            settings.token.as_ref(),
            settings.nkey.as_ref(),
        )
        .await
        .map_err(|(path, source)| SharedLedgerError::Credentials {
            path: path.display().to_string(),
            source,
        })?;
        let servers: Vec<async_nats::ServerAddr> = url
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e| connect_err(Box::new(e)))?;
        let client = opts
            .name("callbridge-ledger")
            .connection_timeout(KV_TIMEOUT)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(servers)
            .await
            .map_err(|e| connect_err(Box::new(e)))?;
        Ok(SharedLedger {
            settings: settings.clone(),
            prefix: if namespace.is_empty() {
                String::new()
            } else {
                format!("{namespace}.")
            },
            client,
            store: OnceCell::new(),
            owner: owner_id(),
            lease: Duration::from_secs(settings.lease_secs),
            metrics,
        })
    }

    /// The bucket, opened (or created) once; a failure is retried by the next claim.
    async fn store(&self) -> Result<&kv::Store, SharedLedgerError> {
        self.store
            .get_or_try_init(|| async {
                let js = async_nats::jetstream::new(self.client.clone());
                let bucket = self.settings.bucket.clone();
                let bucket_err =
                    |e: Box<dyn std::error::Error + Send + Sync>| SharedLedgerError::Bucket {
                        bucket: bucket.clone(),
                        source: e,
                    };
                // The bucket's stream laid out as NATS lays out a key-value bucket (`KV_<bucket>`
                // on `$KV.<bucket>.>`, one value per key, rollups, no deletes), created with
                // the stream API: async-nats's `create_key_value` first asks for the account's
                // API level, which servers before 2.10 answer in a shape it cannot read.
                let made = tokio::time::timeout(KV_TIMEOUT, async {
                    if let Ok(store) = js.get_key_value(&bucket).await {
                        return Ok(store);
                    }
                    js.get_or_create_stream(async_nats::jetstream::stream::Config {
                        name: format!("KV_{bucket}"),
                        subjects: vec![format!("$KV.{bucket}.>")],
                        max_messages_per_subject: 1,
                        max_age: Duration::from_secs(self.settings.window_secs),
                        storage: async_nats::jetstream::stream::StorageType::File,
                        num_replicas: self.settings.replicas,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        discard: async_nats::jetstream::stream::DiscardPolicy::New,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| bucket_err(Box::new(e)))?;
                    js.get_key_value(&bucket)
                        .await
                        .map_err(|e| bucket_err(Box::new(e)))
                })
                .await;
                match made {
                    Ok(r) => r,
                    Err(e) => Err(bucket_err(Box::new(e))),
                }
            })
            .await
    }

    /// Claims (id, sink) for this replica, or finds its receipt, or finds it busy.
    pub async fn claim(&self, id: &str, sink: &str) -> Result<Claim, SharedLedgerError> {
        let started = Instant::now();
        let result = self.claim_inner(id, sink).await;
        self.metrics
            .ledger_kv_seconds
            .with_label_values(&["claim"])
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(Claim::Mine { .. }) => "mine",
            Ok(Claim::Acked(_)) => "acked",
            Ok(Claim::Busy) => "busy",
            Err(_) => "error",
        };
        self.metrics
            .ledger_kv_claims
            .with_label_values(&[outcome])
            .inc();
        result
    }

    async fn claim_inner(&self, id: &str, sink: &str) -> Result<Claim, SharedLedgerError> {
        let store = self.store().await?;
        let key = self.key(id, sink);
        for _ in 0..MAX_ROUNDS {
            let lease = serde_json::to_vec(&Record::Lease {
                owner: self.owner.clone(),
                until_ms: now_ms() + self.lease.as_millis() as u64,
            })
            .unwrap_or_default();
            let found = tokio::time::timeout(KV_TIMEOUT, store.entry(key.clone()))
                .await
                .map_err(|e| kv_err("read", e))?
                .map_err(|e| kv_err("read", e))?;
            let current = found.as_ref().and_then(|e| match e.operation {
                kv::Operation::Put => serde_json::from_slice::<Record>(&e.value).ok(),
                _ => None,
            });
            let written = match (&found, &current) {
                (_, Some(Record::Acked { receipt })) => return Ok(Claim::Acked(receipt.clone())),
                (_, Some(Record::Lease { until_ms, .. })) if *until_ms > now_ms() => {
                    return Ok(Claim::Busy)
                }
                (None, _) => tokio::time::timeout(KV_TIMEOUT, store.create(&key, lease.into()))
                    .await
                    .map_err(|e| kv_err("claim", e))?
                    .map_err(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => None,
                        _ => Some(kv_err("claim", e)),
                    }),
                (Some(entry), _) => tokio::time::timeout(
                    KV_TIMEOUT,
                    store.update(&key, lease.into(), entry.revision),
                )
                .await
                .map_err(|e| kv_err("claim", e))?
                .map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => None,
                    _ => Some(kv_err("claim", e)),
                }),
            };
            match written {
                Ok(revision) => {
                    if matches!(current, Some(Record::Lease { .. })) {
                        // An expired lease: its owner died or lost touch mid-publish.
                        self.metrics.ledger_kv_takeovers.inc();
                        tracing::warn!(event_id = id, sink, "a replica's expired claim taken over");
                    }
                    return Ok(Claim::Mine { revision });
                }
                // Another replica wrote first: look again.
                Err(None) => self.metrics.ledger_kv_conflicts.inc(),
                Err(Some(e)) => return Err(e),
            }
        }
        Ok(Claim::Busy)
    }

    /// Records the outcome of the publish claimed at `revision`: the receipt (whatever
    /// happened to the claim meanwhile: the broker has the event), or the claim released.
    pub async fn record(
        &self,
        id: &str,
        sink: &str,
        revision: u64,
        receipt: Option<&Receipt>,
    ) -> Result<(), SharedLedgerError> {
        let started = Instant::now();
        let store = self.store().await?;
        let key = self.key(id, sink);
        let result = match receipt {
            Some(r) => {
                let value =
                    serde_json::to_vec(&Record::Acked { receipt: r.clone() }).unwrap_or_default();
                tokio::time::timeout(KV_TIMEOUT, store.put(&key, value.into()))
                    .await
                    .map_err(|e| kv_err("receipt", e))?
                    .map(|_| ())
                    .map_err(|e| kv_err("receipt", e))
            }
            None => {
                let value = serde_json::to_vec(&Record::Released).unwrap_or_default();
                match tokio::time::timeout(KV_TIMEOUT, store.update(&key, value.into(), revision))
                    .await
                    .map_err(|e| kv_err("release", e))?
                {
                    Ok(_) => Ok(()),
                    // Taken over meanwhile: the new owner's claim stands.
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(()),
                    Err(e) => Err(kv_err("release", e)),
                }
            }
        };
        self.metrics
            .ledger_kv_seconds
            .with_label_values(&["record"])
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_tokens_and_distinct() {
        assert_eq!(
            key("1b4e28ba-2fa1-11d2-883f-0016d3cca427", "bus_1"),
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427.bus_1"
        );
        let odd = key("id with space", "sink.name");
        let (a, b) = odd.split_once('.').unwrap();
        assert!(a.starts_with('h') && b.starts_with('h') && a != b, "{odd}");
        assert_ne!(key("a", "b.c"), key("a", "b_c"));
        assert!(token("").starts_with('h'));
    }

    #[test]
    fn namespaces_come_from_the_configuration_or_the_source() {
        assert_eq!(namespace(Some("prod-eu"), "/callbridge"), "prod-eu");
        assert_eq!(namespace(Some(""), "/callbridge"), "");
        assert_eq!(namespace(None, "billing_bridge"), "billing_bridge");
        let a = namespace(None, "/callbridge");
        let b = namespace(None, "/callbridge-eu");
        assert_eq!(
            a, "hd9b82506917319f36c0ffeb5d418ae5d",
            "as docs/shared-ledger.md says"
        );
        assert!(b.starts_with('h') && a != b, "{a} {b}");
        assert_eq!(
            a,
            namespace(None, "/callbridge"),
            "the same on every replica"
        );
    }

    #[test]
    fn records_round_trip_with_receipts() {
        for r in [
            Record::Lease {
                owner: "ab".into(),
                until_ms: 5,
            },
            Record::Released,
            Record::Acked {
                receipt: Receipt::Kafka {
                    topic: "t".into(),
                    partition: 1,
                    offset: 9,
                },
            },
            Record::Acked {
                receipt: Receipt::JetStream {
                    stream: "S".into(),
                    sequence: 3,
                    duplicate: false,
                },
            },
        ] {
            let bytes = serde_json::to_vec(&r).unwrap();
            assert_eq!(serde_json::from_slice::<Record>(&bytes).unwrap(), r);
        }
    }
}
