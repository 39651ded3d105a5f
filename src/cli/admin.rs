//! How an operator command reaches the running bridge: the admin client from the configuration (listener, TLS, token), and one request to it.

use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;

use crate::cli;
use crate::config::Settings;

/// The admin client for `url` (default: the config's admin listener) with the token given, or
/// the config's first admin token.
pub(super) fn admin_client(
    settings: &Settings,
    token: Option<String>,
    url: Option<String>,
    timeout: Duration,
) -> anyhow::Result<cli::AdminClient> {
    let base = url.unwrap_or_else(|| cli::admin_base(settings));
    let token = token.filter(|t| !t.is_empty()).or_else(|| {
        settings
            .admin
            .tokens
            .first()
            .map(|t| t.expose_secret().to_string())
    });
    let cert = settings.server.tls.as_ref().map(|t| t.cert_file.as_path());
    Ok(cli::AdminClient::new(&base, token, cert, timeout)?)
}

/// An admin route's answer; `Ok(None)` when no bridge listens there (the caller may then work
/// on the spool's file itself).
pub(super) async fn ask(
    admin: &cli::AdminClient,
    req: reqwest::RequestBuilder,
) -> anyhow::Result<Option<serde_json::Value>> {
    match req.send().await {
        Ok(resp) => Ok(Some(
            cli::admin_answer(resp)
                .await
                .with_context(|| format!("asking {}", admin.base))?,
        )),
        Err(e) if e.is_connect() => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("asking {}", admin.base))),
    }
}
