//! TLS on the webhook listener (`server.tls`): rustls with a certificate resolver whose
//! certificate is swapped when the files change.
//!
//! cert-manager (and most rotation tools) replace the files in place; a task checks their
//! modification times every `reload_secs` and loads the pair again. New handshakes get the new
//! certificate, established connections keep theirs. A pair that does not load (half-written,
//! key and certificate not matching) is logged and the previous certificate stays: a bad
//! rotation never takes the listener down.

pub mod settings;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::metrics::Metrics;
use settings::TlsSettings;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}")]
    Cert {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("no certificate in {0}")]
    NoCert(PathBuf),
    #[error("cannot read the private key {path}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the key in {key} does not fit the certificate in {cert}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the TLS configuration")]
    Config(#[source] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its key.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|source| TlsError::Cert {
            path: cert.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert(cert.to_path_buf()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    let mismatch = |source| TlsError::Mismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    };
    CertifiedKey::from_der(chain, private, &provider()).map_err(mismatch)
}

/// Hands every handshake the current certificate.
#[derive(Debug)]
pub struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Resolver {
    fn set(&self, key: CertifiedKey) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(key);
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The listener's TLS configuration and the resolver to swap certificates in.
pub fn server_config(
    settings: &TlsSettings,
) -> Result<(rustls::ServerConfig, Arc<Resolver>), TlsError> {
    let key = load(&settings.cert_file, &settings.key_file)?;
    let resolver = Arc::new(Resolver {
        current: RwLock::new(Arc::new(key)),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    // actix-web is built without HTTP/2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, resolver))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Checks the files every `reload_secs` and swaps the certificate when either changed and the
/// pair loads. Runs until aborted (when the server stops).
pub async fn watch(settings: TlsSettings, resolver: Arc<Resolver>, metrics: Arc<Metrics>) {
    let stamp = |s: &TlsSettings| (modified(&s.cert_file), modified(&s.key_file));
    let mut seen = stamp(&settings);
    let mut tick = tokio::time::interval(Duration::from_secs(settings.reload_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = stamp(&settings);
        if now == seen {
            continue;
        }
        match load(&settings.cert_file, &settings.key_file) {
            Ok(key) => {
                resolver.set(key);
                seen = now;
                metrics.tls_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(cert_file = %settings.cert_file.display(), "tls certificate reloaded");
            }
            // Not remembered as seen: a pair caught half-written loads on a later tick.
            Err(e) => {
                metrics.tls_reloads.with_label_values(&["failed"]).inc();
                tracing::warn!(
                    error = %crate::sinks::error_chain(&e),
                    "tls files changed but do not load; keeping the previous certificate"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn a_pair_loads_and_a_mismatched_missing_or_empty_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (a_cert, a_key) = pair(dir.path(), "a");
        let (_, b_key) = pair(dir.path(), "b");
        assert!(load(&a_cert, &a_key).is_ok());
        assert!(matches!(
            load(&a_cert, &b_key),
            Err(TlsError::Mismatch { .. })
        ));
        assert!(matches!(
            load(&dir.path().join("nope.crt"), &a_key),
            Err(TlsError::Cert { .. })
        ));
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(load(&empty, &a_key), Err(TlsError::NoCert(_))));
        assert!(matches!(load(&a_cert, &empty), Err(TlsError::Key { .. })));
        let settings = TlsSettings {
            cert_file: a_cert,
            key_file: a_key,
            reload_secs: 1,
            admin: false,
        };
        let (config, _) = server_config(&settings).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
