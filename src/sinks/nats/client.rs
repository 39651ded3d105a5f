//! The NATS client: connect options from the settings (credentials, TLS, pings, reconnects),
//! and the bounded first connection at startup.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions, ServerAddr};
use secrecy::ExposeSecret;
use tokio::sync::Notify;

use super::settings::NatsSinkSettings;
use crate::sinks::BuildError;

/// How long startup waits for the first connection before going on in the background.
const STARTUP_CONNECT_WAIT: Duration = Duration::from_secs(2);

/// The client declares the connection dead after 3 unanswered pings, so a server that stops
/// answering without closing the socket is noticed within ~30 s (default: 60 s interval, ~3 min).
/// While it goes unnoticed, every publish times out, and async-nats keeps a small entry (its
/// reply token) for each PubAck that never came: a short interval bounds that too.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// Connects within [`STARTUP_CONNECT_WAIT`]. Bad credentials or TLS setup (a configuration
/// error) fail; an unreachable server does not: the client keeps connecting in the background,
/// and the sink stays not ready until it is connected. `recheck` is woken on every (re)connect.
pub(super) async fn connect(
    settings: &NatsSinkSettings,
    servers: Vec<ServerAddr>,
    recheck: &Arc<Notify>,
) -> Result<async_nats::Client, BuildError> {
    let first = connect_options(settings, recheck)
        .await?
        .connect(servers.clone());
    match tokio::time::timeout(STARTUP_CONNECT_WAIT, first).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e))
            if matches!(
                e.kind(),
                ConnectErrorKind::Authentication
                    | ConnectErrorKind::AuthorizationViolation
                    | ConnectErrorKind::Tls
                    | ConnectErrorKind::ServerParse
            ) =>
        {
            Err(connect_error(settings, e))
        }
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {} ms", STARTUP_CONNECT_WAIT.as_millis()),
            };
            tracing::warn!(
                sink = %settings.name, url = %settings.url, error = %why,
                "nats unreachable at startup; connecting in the background, sink not ready"
            );
            connect_options(settings, recheck)
                .await?
                .retry_on_initial_connect()
                .connect(servers)
                .await
                .map_err(|e| connect_error(settings, e))
        }
    }
}

fn connect_error(settings: &NatsSinkSettings, e: async_nats::ConnectError) -> BuildError {
    BuildError::Broker {
        context: format!("cannot connect to {}", settings.url),
        source: Some(Box::new(e)),
    }
}

/// Connect options carrying NATS credentials: a `.creds` file, user and password, a token, an
/// NKey seed (the NATS sink's and the shared ledger's settings name them alike). A credentials
/// file that cannot be read is returned with its path.
pub(crate) async fn credentials(
    credentials_file: Option<&std::path::Path>,
    user_password: Option<(&str, &secrecy::SecretString)>,
    token: Option<&secrecy::SecretString>,
    nkey: Option<&secrecy::SecretString>,
) -> Result<ConnectOptions, (std::path::PathBuf, std::io::Error)> {
    let mut opts = match credentials_file {
        Some(path) => ConnectOptions::with_credentials_file(path.to_path_buf())
            .await
            .map_err(|e| (path.to_path_buf(), e))?,
        None => ConnectOptions::new(),
    };
    if let Some((user, password)) = user_password {
        opts = opts.user_and_password(user.to_string(), password.expose_secret().to_string());
    }
    if let Some(token) = token {
        opts = opts.token(token.expose_secret().to_string());
    }
    if let Some(seed) = nkey {
        opts = opts.nkey(seed.expose_secret().to_string());
    }
    Ok(opts)
}

pub(crate) async fn connect_options(
    settings: &NatsSinkSettings,
    recheck: &Arc<Notify>,
) -> Result<ConnectOptions, BuildError> {
    let mut opts = credentials(
        settings.credentials_file.as_deref(),
        settings.user.as_deref().zip(settings.password.as_ref()),
        settings.token.as_ref(),
        settings.nkey.as_ref(),
    )
    .await
    .map_err(|(path, source)| BuildError::Io {
        context: format!("cannot read credentials file {}", path.display()),
        source,
    })?;
    if let Some(tls) = &settings.tls {
        if let Some(ca) = &tls.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if tls.required {
            opts = opts.require_tls(true);
        }
    }
    let name = settings.name.clone();
    let recheck = recheck.clone();
    // The client reports every failed reconnect (every ~2 s while the server is down).
    let throttle = std::sync::Arc::new(crate::sinks::throttle::Throttle::default());
    Ok(opts
        .name(format!("callbridge-{}", settings.name))
        .connection_timeout(STARTUP_CONNECT_WAIT)
        .ping_interval(PING_INTERVAL)
        .max_reconnects(None)
        .event_callback(move |event| {
            let name = name.clone();
            let recheck = recheck.clone();
            let throttle = throttle.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(sink = %name, "nats connected");
                        throttle.reset();
                        recheck.notify_one();
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(sink = %name, "nats disconnected; reconnecting")
                    }
                    other => {
                        let kind = std::mem::discriminant(&other);
                        if let Some(repeats) = throttle.admit(&format!("{kind:?}")) {
                            tracing::warn!(sink = %name, event = %other, repeats, "nats client event")
                        }
                    }
                }
            }
        }))
}
