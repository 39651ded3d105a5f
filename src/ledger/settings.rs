//! The ledger's settings (`idempotency:` in the configuration): how long and how many event ids
//! it remembers, and where (this replica's memory, or a NATS KV bucket every replica shares).

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

use crate::validate::Issues;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    /// How long the bridge remembers which sinks acknowledged an event id. The default (30 min)
    /// outlasts the sender's retry horizon (1 + 5 + 15 minutes).
    #[serde(default = "default_window_secs")]
    pub window_secs: u64,
    /// Hard cap on remembered ids, so memory stays bounded under any load. The ledger holds
    /// its window only while `max_entries` ≥ `window_secs` × the event rate; beyond that the
    /// oldest ids go early (`callbridge_ledger_evicted_total{reason="cap"}`).
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// The peak event rate this deployment expects (events per second, optional). Only for
    /// `validate`: it warns when `max_entries` cannot hold `window_secs` at this rate.
    #[serde(default)]
    pub expected_rate_per_sec: Option<u64>,
    /// Where the ledger lives: `memory` (this replica's own, the default) or `nats-kv` (a NATS
    /// JetStream key-value bucket every replica shares: a retry that lands on another replica
    /// publishes only to the sinks without a receipt, and two replicas never publish one event
    /// to one sink at once). With `nats-kv` the local ledger still answers first; the bucket
    /// is asked before each publish. docs/shared-ledger.md.
    #[serde(default)]
    pub store: LedgerStore,
    /// `nats-kv`: the NATS server(s) holding the bucket (`nats://host:4222`, comma-separated for a
    /// cluster), as the NATS sink's `url`.
    #[serde(default)]
    pub url: Option<String>,
    /// `nats-kv`: the bucket; created when absent, with `replicas` and a max age of
    /// `window_secs` (the bucket's retention is the window, at any rate).
    #[serde(default = "default_ledger_bucket")]
    pub bucket: String,
    /// `nats-kv`: the prefix of this deployment's keys in the bucket, so deployments sharing a
    /// bucket (and sink names) never answer each other's events `duplicate`. Default: derived
    /// from `event.source` (deployments with different sources are apart); every replica of one
    /// deployment must have the same. Letters, digits, `-` and `_`; `""` writes keys without a
    /// prefix (as before namespaces existed).
    #[serde(default)]
    pub namespace: Option<String>,
    /// `nats-kv`: replicas of the bucket when the bridge creates it (3 on a three-node cluster).
    #[serde(default = "default_ledger_replicas")]
    pub replicas: usize,
    /// `nats-kv`: how long a replica's claim on (event id, sink) holds while it publishes. A
    /// replica that dies mid-publish blocks that sink for this long; the default outlasts the
    /// longest a publish stays in doubt (50 s), so a takeover never races a publish that may
    /// still land.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// `nats-kv`: username/password authentication (both or neither).
    #[serde(default)]
    pub user: Option<String>,
    /// `nats-kv`: the password for `user`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub password: Option<SecretString>,
    /// `nats-kv`: token authentication.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub token: Option<SecretString>,
    /// `nats-kv`: NKey seed (`SU...`) authentication.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub nkey: Option<SecretString>,
    /// `nats-kv`: a `.creds` file (JWT + NKey seed).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

/// Where the idempotency ledger lives.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum LedgerStore {
    /// In this replica's memory (bounded by `max_entries`).
    #[default]
    Memory,
    /// In a NATS JetStream key-value bucket shared by every replica.
    NatsKv,
}

fn default_ledger_bucket() -> String {
    "callbridge-ledger".into()
}
fn default_ledger_replicas() -> usize {
    1
}
fn default_lease_secs() -> u64 {
    52
}

/// Measured ledger memory per remembered id with three broker sinks' receipts, in the steady
/// state at the cap (`benches/ledger_memory.rs`: 400 000 ids through a cap of 200 000,
/// mimalloc: 364–396 bytes between runs): what sizing `max_entries` costs.
pub const LEDGER_BYTES_PER_ENTRY: u64 = 400;

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            window_secs: default_window_secs(),
            max_entries: default_max_entries(),
            expected_rate_per_sec: None,
            store: LedgerStore::Memory,
            url: None,
            bucket: default_ledger_bucket(),
            namespace: None,
            replicas: default_ledger_replicas(),
            lease_secs: default_lease_secs(),
            user: None,
            password: None,
            token: None,
            nkey: None,
            credentials_file: None,
        }
    }
}

fn default_window_secs() -> u64 {
    1800
}
fn default_max_entries() -> usize {
    100_000
}

impl IdempotencySettings {
    /// The `nats-kv` store's own checks (nothing to check for `memory`).
    pub fn validate_shared(&self, issues: &mut Issues) {
        let l = self;
        if l.store != LedgerStore::NatsKv {
            return;
        }
        if l.url.as_deref().is_none_or(|u| u.trim().is_empty()) {
            issues.error("idempotency.url", "is required with `store: nats-kv`");
        }
        if l.bucket.is_empty()
            || !l
                .bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            issues.error(
                "idempotency.bucket",
                format!("`{}`: letters, digits, `-` and `_` only", l.bucket),
            );
        }
        if let Some(ns) = &l.namespace {
            if !ns
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                issues.error(
                    "idempotency.namespace",
                    format!("`{ns}`: letters, digits, `-` and `_` only"),
                );
            }
        }
        if !(1..=5).contains(&l.replicas) {
            issues.error("idempotency.replicas", "must be between 1 and 5");
        }
        if l.lease_secs == 0 {
            issues.error("idempotency.lease_secs", "must be greater than 0");
        }
        if l.user.is_some() != l.password.is_some() {
            issues.error(
                "idempotency.user",
                "`user` and `password` go together (both or neither)",
            );
        }
    }
}
