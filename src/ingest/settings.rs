//! The webhook listener's settings (`server`): where it listens, its bounds and deadlines, its
//! TLS and rate limit. The ingest module owns them; `config` only assembles the sections.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address and port to listen on. Behind an ingress keep the default; the embedded
    /// configuration listens on 127.0.0.1 unless `CALLBRIDGE_LISTEN` says otherwise.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The admin listener (address and port): the operator routes (`/spool`, `/spool/dead`,
    /// `/spool/redrive`, `/spool/dead/purge`, `/reconcile`) and `/metrics` are served here only,
    /// never through the webhook listener (and so never through the ingress in front of it);
    /// `/healthz` and `/readyz` are on both. A non-loopback address needs `admin.tokens`.
    /// Plain HTTP unless `server.tls.admin`.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// The webhook path the sender is given.
    #[serde(default = "default_path")]
    pub path: String,
    /// Extra paths that accept the same webhooks (e.g. a separate URL per webhook family).
    #[serde(default)]
    pub extra_paths: Vec<String>,
    /// Largest request body accepted; a larger one is answered 413. The sender's payloads are a
    /// few KiB, transcripts included.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Every request is answered within this budget. Must stay below the sender's 10 s timeout,
    /// otherwise the sender gives up and retries while we may still be publishing.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Sent as `Retry-After` on 503 answers.
    #[serde(default = "default_retry_after_secs")]
    pub retry_after_secs: u64,
    /// HTTP worker threads; 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    /// Webhook requests handled at once; more are answered 503 + `Retry-After` at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Body bytes being received at once, all requests together, counted as they arrive (a
    /// client that announces a large body and sends it slowly holds only what it has sent); a
    /// request whose next bytes do not fit is answered 503 + `Retry-After` and its connection
    /// closed. At least `max_body_bytes`.
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
    /// Body bytes being parsed and delivered at once, all requests together: a body whose
    /// signature (when configured) has been verified takes its size from this budget until it
    /// is answered, or is answered 503 + `Retry-After` when it does not fit. Parsing multiplies
    /// a body's memory (a 1 MiB body of tiny JSON values costs tens of MiB), so this is the
    /// knob that bounds memory. At least `max_body_bytes`; `max_body_bytes` when omitted (one
    /// maximum-size body at a time, hundreds of ordinary few-KiB ones).
    #[serde(default)]
    pub max_processing_bytes: Option<usize>,
    /// A request rate limit per client address or credential (429 + `Retry-After`); off when
    /// absent.
    #[serde(default)]
    pub rate_limit: Option<super::ratelimit::settings::RateLimitSettings>,
    /// TLS on the webhook listener; plain HTTP when absent (the usual setup behind an ingress
    /// that terminates TLS).
    #[serde(default)]
    pub tls: Option<crate::tls::settings::TlsSettings>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            path: default_path(),
            extra_paths: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
            deadline_ms: default_deadline_ms(),
            retry_after_secs: default_retry_after_secs(),
            workers: 0,
            max_in_flight: default_max_in_flight(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            max_processing_bytes: None,
            rate_limit: None,
            tls: None,
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}
fn default_path() -> String {
    "/callback".into()
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
/// Requests are cheap until their bodies arrive; memory is bounded by the byte limit.
fn default_max_in_flight() -> usize {
    256
}
/// 32 maximum-size bodies: bytes still arriving cost only their own size (they are not parsed
/// yet), so 32 MiB is a twelfth of the Helm chart's 384 MiB limit beside the processing budget's
/// worst case (the chart checks the sum), and admits 32 large bodies or thousands of ordinary few-KiB ones arriving at
/// once. A slow or hostile client holds only the bytes it has sent: 32 connections announcing
/// 1 MiB and sending a byte a second hold a few hundred bytes of it, not all of it.
fn default_max_in_flight_bytes() -> usize {
    32 * 1024 * 1024
}

impl ServerSettings {
    /// `max_processing_bytes`, or one maximum-size body when omitted: a hostile 1 MiB body of
    /// tiny JSON values was measured at about 70 MiB of peak memory once parsed, normalised and
    /// serialised; four of them took the process past 256 MiB, and two peaked at 210–275 MiB
    /// (the top under a loaded machine). Ordinary bodies
    /// are a few KiB, so 1 MiB still admits hundreds.
    pub fn processing_bytes(&self) -> usize {
        self.max_processing_bytes.unwrap_or(self.max_body_bytes)
    }
}
fn default_deadline_ms() -> u64 {
    8000
}
fn default_retry_after_secs() -> u64 {
    60
}
/// The sender's own request timeout; our deadline must be below it.
pub const SENDER_TIMEOUT_MS: u64 = 10_000;
