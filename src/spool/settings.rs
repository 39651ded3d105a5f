//! The spool's settings (`spool:` in the configuration).

use std::path::PathBuf;

use serde::Deserialize;

use crate::validate::Issues;

/// Where events wait while a sink with `on_unavailable: spool` cannot take them: an embedded,
/// crash-safe database file (redb), written and fsynced before the webhook is answered.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpoolSettings {
    /// The spool's database file (its directory is created). On Kubernetes, a persistent volume:
    /// a spool on an `emptyDir` is lost with the pod.
    pub path: PathBuf,
    /// Most bytes of events held (all sinks together); when full, a spooling sink fails
    /// (503) like `on_unavailable: fail`. Never unbounded disk, never a silent drop.
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
}

fn default_spool_max_bytes() -> u64 {
    1 << 30
}

impl SpoolSettings {
    /// The spool's own checks; whether a sink may spool without one is the configuration's.
    pub fn validate(&self, issues: &mut Issues) {
        if self.path.as_os_str().is_empty() {
            issues.error("spool.path", "must not be empty");
        }
        if self.max_bytes == 0 {
            issues.error("spool.max_bytes", "must be greater than 0");
        }
    }
}
