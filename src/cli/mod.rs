//! The command line's subcommands, in the library so tests can call them: `args.rs` what
//! `callbridge` accepts, `run.rs` the dispatch, a file per subcommand (`serve.rs`, `spool.rs`,
//! `dlq.rs`, `replay.rs`, `reconcile.rs`, `deliveries.rs`), `admin.rs` how the operator
//! commands reach the running bridge; here: `send-test`, the replay of a file, the reconcile
//! report, and the admin HTTP client.

mod admin;
mod args;
mod deliveries;
mod dlq;
mod reconcile;
mod replay;
mod run;
mod serve;
mod spool;

pub use args::Cli;
pub use run::run;

use serde_json::Value;

pub use crate::event::samples::{sample_agent_event, sample_payload};

/// How `send-test` authenticates, as each webhook family does.
pub enum SendAuth {
    /// The callback family: a static key in a header (`callback_args.headers`).
    ApiKey {
        header: String,
        key: String,
    },
    /// Agent event subscriptions: `Authorization: Bearer <token>`.
    Bearer(String),
    None,
}

/// The answer to a `send-test` post.
pub struct SendTestResult {
    pub status: u16,
    pub body: String,
}

/// Posts a payload the way the sender does: JSON body, its credential, and (like the sender by
/// default) no Content-Type.
pub async fn send_test(
    url: &str,
    auth: &SendAuth,
    payload: &Value,
    timeout: std::time::Duration,
) -> Result<SendTestResult, reqwest::Error> {
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    let mut req = client.post(url).body(payload.to_string());
    match auth {
        SendAuth::ApiKey { header, key } => req = req.header(header.as_str(), key.as_str()),
        SendAuth::Bearer(token) => req = req.bearer_auth(token),
        SendAuth::None => {}
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let body = resp.text().await?;
    Ok(SendTestResult { status, body })
}

/// What `callbridge replay --from FILE --to SINK` did.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// Events read from the file.
    pub read: u64,
    /// Confirmed by the sink (a JetStream duplicate of an id it already holds counts: stored once).
    pub published: u64,
    /// Not wanted by the sink's `events` filter.
    pub skipped: u64,
    /// (line number, reason) of every event the sink did not confirm.
    pub failed: Vec<(usize, String)>,
}

/// Backfills `sink` from a file sink's JSONL archive (one structured event per line), in file
/// order, with the events' own ids (so brokers and consumers dedupe what they already have).
/// A line that is not an event is reported, not fatal; each publish waits for the sink's
/// confirmation under its timeout, one at a time, so a call's events keep their order.
pub async fn replay_file(
    path: &std::path::Path,
    sink: &crate::sinks::SinkHandle,
) -> std::io::Result<ReplayReport> {
    use tokio::io::AsyncBufReadExt;
    let file = tokio::fs::File::open(path).await?;
    let mut lines = tokio::io::BufReader::new(file).lines();
    let mut report = ReplayReport::default();
    let mut n = 0usize;
    while let Some(line) = lines.next_line().await? {
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        let event: crate::event::Event = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(e) => {
                report.failed.push((n, format!("not an event: {e}")));
                continue;
            }
        };
        report.read += 1;
        if !sink.wants(&event) {
            report.skipped += 1;
            continue;
        }
        let out = crate::sinks::Outgoing::new(event);
        let result = match tokio::time::timeout(sink.timeout, sink.sink.publish(&out)).await {
            Ok(r) => r,
            Err(_) => Err(crate::sinks::SinkError::Timeout(
                sink.timeout.as_millis() as u64
            )),
        };
        match result {
            Ok(_) => report.published += 1,
            Err(e) => report
                .failed
                .push((n, format!("{}: {}", e.code(), e.detail()))),
        }
    }
    Ok(report)
}

/// What `callbridge reconcile` prints for a pass: one line per event (published, or in a dry
/// run what would be), the failures, then a summary line.
pub fn render_reconcile(report: &crate::reconcile::PassReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "window {} .. {}{}",
        report.window_start,
        report.window_end,
        if report.dry_run {
            " (dry run: nothing published)"
        } else {
            ""
        }
    );
    let verb = if report.dry_run {
        "would publish"
    } else {
        "published"
    };
    for b in &report.published {
        let _ = writeln!(
            out,
            "{verb} {} {} call {} status {}",
            b.event_id,
            b.ty,
            b.call_id,
            b.status.as_deref().unwrap_or("-")
        );
    }
    for b in &report.failed {
        let _ = writeln!(
            out,
            "not confirmed {} {} call {}: {}",
            b.event_id,
            b.ty,
            b.call_id,
            b.error.as_deref().unwrap_or("")
        );
    }
    for e in &report.api_errors {
        let _ = writeln!(out, "api error: {e}");
    }
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let _ = writeln!(
        out,
        "checked {} calls: {} already delivered, {} settling, {} not ended; {} {}, {} not confirmed, {} api errors{}",
        report.calls_checked,
        report.already_delivered,
        report.settling,
        report.not_ended,
        verb,
        report.published.len(),
        report.failed.len(),
        report.api_errors.len(),
        if report.complete { "" } else { " (incomplete: a listing failed)" }
    );
    out
}

/// Why `callbridge spool|dlq|reconcile` will not talk to the admin listener it was pointed at.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("not a URL: {url:?} ({reason})")]
    BadUrl { url: String, reason: String },
    #[error(
        "refusing to send the admin token over plain http to {host}, which is not a loopback \
         address: use https (server.tls with admin: true), or reach it through a loopback \
         address (e.g. kubectl port-forward)"
    )]
    PlainHttpToRemote { host: String },
    #[error("cannot read the certificate {path} (server.tls.cert_file)")]
    Certificate {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the http client")]
    Client(#[source] reqwest::Error),
}

/// The running bridge's admin listener from its configuration: `server.admin_listen` (an
/// unspecified address reached through loopback), `https` when `server.tls.admin`.
pub fn admin_base(settings: &crate::config::Settings) -> String {
    let scheme = if settings.server.tls.as_ref().is_some_and(|t| t.admin) {
        "https"
    } else {
        "http"
    };
    let addr = &settings.server.admin_listen;
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() && a.is_ipv6() => {
            format!("{scheme}://[::1]:{}", a.port())
        }
        Ok(a) if a.ip().is_unspecified() => format!("{scheme}://127.0.0.1:{}", a.port()),
        Ok(a) => format!("{scheme}://{a}"),
        Err(_) => format!("{scheme}://{addr}"),
    }
}

/// Whether a URL's host is this machine's loopback: `localhost`, 127.0.0.0/8, `[::1]`.
fn is_loopback_host(host: &str) -> bool {
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A client for the admin listener at `base`, sending `token` as `Authorization: Bearer`.
/// Refused before anything is sent when a token would cross plain http to a host that is not
/// loopback. With `https`, the configured certificate (`cert_file`) is trusted too, so a
/// bridge with its own certificate authority is reachable.
pub struct AdminClient {
    pub base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl AdminClient {
    pub fn new(
        base: &str,
        token: Option<String>,
        cert_file: Option<&std::path::Path>,
        timeout: std::time::Duration,
    ) -> Result<AdminClient, AdminClientError> {
        let url = reqwest::Url::parse(base).map_err(|e| AdminClientError::BadUrl {
            url: base.to_string(),
            reason: e.to_string(),
        })?;
        if token.is_some()
            && url.scheme() != "https"
            && !url.host_str().is_some_and(is_loopback_host)
        {
            return Err(AdminClientError::PlainHttpToRemote {
                host: url.host_str().unwrap_or_default().to_string(),
            });
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect would carry the token elsewhere.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = cert_file.filter(|_| url.scheme() == "https") {
            let pem = std::fs::read(path).map_err(|source| AdminClientError::Certificate {
                path: path.to_path_buf(),
                source,
            })?;
            if let Ok(cert) = reqwest::Certificate::from_pem(&pem) {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            client: builder.build().map_err(AdminClientError::Client)?,
            token,
        })
    }

    /// A request to `path` (e.g. `/spool/dead`) with the token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }
}

/// What an admin route answered: its JSON, or the error it named (status, code, message).
pub async fn admin_answer(resp: reqwest::Response) -> Result<serde_json::Value, AdminAnswerError> {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        Err(AdminAnswerError {
            status: status.as_u16(),
            message: body["error"]["message"]
                .as_str()
                .map(str::to_string)
                .or_else(|| body["error"].as_str().map(str::to_string))
                .unwrap_or_default(),
        })
    }
}

/// An admin route's refusal, as the CLI prints it.
#[derive(Debug, thiserror::Error)]
#[error("the bridge answered {status}: {message}")]
pub struct AdminAnswerError {
    pub status: u16,
    pub message: String,
}

#[cfg(test)]
mod admin_client_tests {
    use super::*;
    use std::time::Duration;

    fn client(base: &str, token: Option<&str>) -> Result<AdminClient, AdminClientError> {
        AdminClient::new(
            base,
            token.map(str::to_string),
            None,
            Duration::from_secs(1),
        )
    }

    #[test]
    fn a_token_never_goes_over_plain_http_to_a_remote_host() {
        for remote in [
            "http://10.1.2.3:9090",
            "http://bridge.example.com:9090",
            "http://[2001:db8::1]:9090",
        ] {
            assert!(
                matches!(
                    client(remote, Some("t")),
                    Err(AdminClientError::PlainHttpToRemote { .. })
                ),
                "{remote}"
            );
            assert!(
                client(remote, None).is_ok(),
                "no token, nothing to leak: {remote}"
            );
        }
        for local in [
            "http://127.0.0.1:9090",
            "http://localhost:9090",
            "http://[::1]:9090",
            "https://10.1.2.3:9090",
        ] {
            assert!(client(local, Some("t")).is_ok(), "{local}");
        }
        assert!(matches!(
            client("nope", Some("t")),
            Err(AdminClientError::BadUrl { .. })
        ));
    }

    #[test]
    fn the_admin_base_comes_from_admin_listen_and_its_tls() {
        let base = |server: &str| {
            let yaml = format!("server: {server}\nauth: {{mode: none}}\nadmin: {{tokens: [a-long-admin-token-1234]}}\nsinks: [{{name: a, type: file, path: /tmp/x}}]");
            let (s, _) =
                crate::config::Settings::from_yaml(&yaml, "test", &crate::config::Env::empty())
                    .unwrap();
            admin_base(&s)
        };
        assert_eq!(base("{}"), "http://127.0.0.1:9090");
        assert_eq!(
            base("{admin_listen: '0.0.0.0:9191'}"),
            "http://127.0.0.1:9191"
        );
        assert_eq!(base("{admin_listen: '[::]:9191'}"), "http://[::1]:9191");
        assert_eq!(
            base(
                "{admin_listen: '10.0.0.5:9191', tls: {cert_file: /c, key_file: /k, admin: true}}"
            ),
            "https://10.0.0.5:9191"
        );
        assert_eq!(
            base("{admin_listen: '10.0.0.5:9191', tls: {cert_file: /c, key_file: /k}}"),
            "http://10.0.0.5:9191",
            "server.tls alone is the webhook listener's"
        );
    }
}
