//! TLS on the listeners (`server.tls`) and its checks.

use std::path::PathBuf;

use serde::Deserialize;

use crate::validate::Issues;

/// TLS on the webhook listener (rustls), and on the admin listener with `admin: true`. The files are read again when they change, as
/// cert-manager rotates them, without a restart; a change that does not load (a half-written
/// pair, a key that does not fit) keeps the previous certificate and is logged.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the files' modification times are checked, in seconds.
    #[serde(default = "default_tls_reload_secs")]
    pub reload_secs: u64,
    /// Serve the admin listener (`server.admin_listen`) over TLS too, with this certificate;
    /// `callbridge` commands then connect with `https`. Off: the admin listener is plain HTTP
    /// (the usual setup with a loopback admin listener, or `kubectl port-forward`).
    #[serde(default)]
    pub admin: bool,
}

fn default_tls_reload_secs() -> u64 {
    30
}

impl TlsSettings {
    pub fn validate(&self, issues: &mut Issues) {
        for (name, path) in [("cert_file", &self.cert_file), ("key_file", &self.key_file)] {
            if path.as_os_str().is_empty() {
                issues.error(format!("server.tls.{name}"), "must not be empty");
            }
        }
        if self.reload_secs == 0 {
            issues.error("server.tls.reload_secs", "must be greater than 0");
        }
    }
}
