//! The application: binds the listener, wires state and routes, runs until stopped.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle, Service};
use actix_web::{web, App, HttpServer};
use futures::FutureExt;
use secrecy::ExposeSecret;

use crate::admin::{AdminAuth, AdminState};
use crate::config::{Settings, DOCS_SAMPLE_API_KEY};
use crate::fanout::Fanout;
use crate::ingest::auth::Authenticator;
use crate::ingest::handler::{self, AppState};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::sinks::{self, SinkStartError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sink(#[from] SinkStartError),
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    #[error("reconcile: {0}")]
    Reconcile(#[from] crate::reconcile::client::ApiError),
    #[error(transparent)]
    SharedLedger(#[from] crate::ledger::shared::SharedLedgerError),
    #[error("server.tls")]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Deliveries(#[from] crate::delivery::store::StoreError),
}

pub struct Application {
    port: u16,
    server: Server,
    /// `server.admin_listen`: the operator's own server, and its port.
    admin: (u16, Server),
    /// `server.tls`: the task reloading the certificate when its files change.
    tls_watch: Option<tokio::task::JoinHandle<()>>,
    fanout: Arc<Fanout>,
    /// The periodic reconciliation passes (stopped when the application is dropped).
    _reconcile: Option<crate::reconcile::scheduler::Scheduler>,
}

/// What the webhook listener serves besides the webhook paths: the probes, nothing else (the
/// operator routes are on the admin listener only, `crate::admin::routes`).
fn probe_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(handler::healthz))
        .route("/readyz", web::get().to(handler::readyz));
}

fn bind(addr: &str) -> Result<(TcpListener, u16), StartError> {
    let err = |source| StartError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).map_err(err)?;
    let port = listener.local_addr().map_err(err)?.port();
    Ok((listener, port))
}

impl Application {
    /// Builds the sinks (connecting to brokers), binds the listener and prepares the server.
    /// Must be called inside a Tokio runtime: the broker clients live on it.
    pub async fn build(settings: Settings) -> Result<Application, StartError> {
        if let Some(keys) = &settings.auth.api_keys {
            if keys
                .keys
                .iter()
                .any(|k| k.expose_secret() == DOCS_SAMPLE_API_KEY)
            {
                tracing::warn!(
                    "!!! accepting the sample api key printed in the sender's public documentation; \
                     set CALLBRIDGE_API_KEY or configure your own keys before exposing this endpoint !!!"
                );
            }
        }
        if settings.admin.tokens.is_empty() {
            tracing::warn!(
                admin_listen = %settings.server.admin_listen,
                "no admin tokens (admin.tokens): anyone on this host can use the operator routes of the admin listener"
            );
        }
        if settings.auth.mode == Some(crate::ingest::auth::settings::AuthMode::None) {
            tracing::warn!("authentication is disabled (auth.mode: none): anyone who can reach the endpoint can publish");
        }

        let metrics = Arc::new(Metrics::new());
        metrics.set_build_info(crate::event::SCHEMA_VERSION);
        let handles = sinks::build_all(settings.sinks.iter().map(|s| s.spec())).await?;
        let ledger = Ledger::new(
            Duration::from_secs(settings.idempotency.window_secs),
            settings.idempotency.max_entries,
        );
        let mut fanout = Fanout::new(handles, ledger, metrics.clone());
        if settings.idempotency.store == crate::config::LedgerStore::NatsKv {
            let namespace = crate::ledger::shared::namespace(
                settings.idempotency.namespace.as_deref(),
                &settings.event.source,
            );
            let shared = crate::ledger::shared::SharedLedger::connect(
                &settings.idempotency,
                &namespace,
                metrics.clone(),
            )
            .await?;
            tracing::info!(bucket = %settings.idempotency.bucket, namespace, "shared ledger (nats-kv)");
            fanout = fanout.with_shared_ledger(Arc::new(shared));
        }
        let spool = settings
            .spool
            .as_ref()
            .map(crate::spool::Spool::open)
            .transpose()?;
        let deliveries = if settings.deliveries.enabled {
            let d = start_deliveries(&settings, &metrics, spool.as_ref())?;
            fanout = fanout.with_deliveries(d.clone());
            Some(d)
        } else {
            tracing::info!("delivery index off: no record and no audit");
            None
        };
        if let Some(spool) = spool {
            tracing::info!(path = %spool.path().display(), held_bytes = spool.bytes(), "spool open");
            fanout = fanout.with_spool(spool);
        }
        let fanout = Arc::new(fanout);
        log_largest_event(&fanout, settings.server.max_body_bytes);
        let (reconciler, scheduler) = start_reconcile(&settings, &fanout, &metrics)?;

        let server_settings = &settings.server;
        let (listener, port) = bind(&server_settings.listen)?;
        let admin_listener = bind(&server_settings.admin_listen)?;

        let auth = Arc::new(Authenticator::new(&settings.auth));
        let state = web::Data::new(AppState {
            gates: crate::ingest::gates::Gates::new(server_settings, auth.clone(), metrics.clone()),
            auth,
            fanout: fanout.clone(),
            metrics: metrics.clone(),
            event: settings.event.clone(),
            deadline: Duration::from_millis(server_settings.deadline_ms),
            retry_after_secs: server_settings.retry_after_secs,
            redact_pii: settings.log.redact_pii,
            publisher: tokio::runtime::Handle::current(),
        });
        let admin_state = web::Data::new(AdminState {
            auth: AdminAuth::new(&settings.admin),
            fanout: fanout.clone(),
            metrics: metrics.clone(),
            reconciler,
            publisher: tokio::runtime::Handle::current(),
        });
        // The delivery index's routes are operator routes: on the admin listener, behind
        // `admin.tokens` (the same check and failure budget as the spool's).
        let routes_state = web::Data::new(crate::delivery::routes::RouteState {
            deliveries,
            authorize: {
                let admin = admin_state.clone();
                Arc::new(move |req: &actix_web::HttpRequest| {
                    admin
                        .authenticate(req)
                        .err()
                        .map(|e| actix_web::ResponseError::error_response(&e))
                })
            },
        });
        // The console (`/console/`): its sessions are made with the admin plane's credential
        // check and failure budget.
        let console_state = web::Data::new(crate::console::ConsoleState::start(
            {
                let admin = admin_state.clone();
                Arc::new(move |headers: &actix_web::http::header::HeaderMap, peer| {
                    admin
                        .auth
                        .check(headers, peer)
                        .err()
                        .map(|e| actix_web::ResponseError::error_response(&e))
                })
            },
            fanout.clone(),
            metrics.clone(),
            settings.admin.tokens.is_empty(),
            settings.log.redact_pii,
            server_settings.tls.as_ref().is_some_and(|t| t.admin),
        ));
        let paths: Vec<String> = std::iter::once(server_settings.path.clone())
            .chain(server_settings.extra_paths.iter().cloned())
            .collect();

        let route_paths = paths.clone();
        let tls_metrics = metrics.clone();
        let probe_state = state.clone();
        let server = HttpServer::new(move || {
            let metrics = metrics.clone();
            let mut app = App::new()
                .app_data(state.clone())
                .wrap_fn(move |req, srv| {
                    let metrics = metrics.clone();
                    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
                    metrics.in_flight.inc();
                    let timer = metrics
                        .request_seconds
                        .with_label_values(&[&route])
                        .start_timer();
                    srv.call(req).map(move |res| {
                        metrics.in_flight.dec();
                        timer.observe_duration();
                        let code = match &res {
                            Ok(r) => r.status().as_u16(),
                            Err(e) => e.as_response_error().status_code().as_u16(),
                        };
                        metrics
                            .requests
                            .with_label_values(&[&route, &code.to_string()])
                            .inc();
                        res
                    })
                })
                .configure(probe_routes);
            for p in &route_paths {
                app = app.service(
                    web::resource(p.as_str())
                        .route(web::post().to(handler::webhook))
                        .route(web::put().to(handler::webhook))
                        .route(web::patch().to(handler::webhook))
                        .default_service(web::to(handler::method_not_allowed)),
                );
            }
            app.default_service(web::to(handler::not_found))
        })
        // In-flight requests finish (each answered 200 or 503) before the process exits.
        .shutdown_timeout(server_settings.deadline_ms / 1000 + 2)
        .workers(if server_settings.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            server_settings.workers
        });
        let bind_err = |source| StartError::Bind {
            addr: server_settings.listen.clone(),
            source,
        };
        let mut tls_watch = None;
        let mut admin_tls = None;
        let server = match &server_settings.tls {
            Some(tls) => {
                let (config, resolver) = crate::tls::server_config(tls)?;
                tls_watch = Some(tokio::spawn(crate::tls::watch(
                    tls.clone(),
                    resolver,
                    tls_metrics.clone(),
                )));
                // The same certificate (and its reloads: one resolver) on the admin listener.
                admin_tls = tls.admin.then(|| config.clone());
                server.listen_rustls_0_23(listener, config)
            }
            None => server.listen(listener),
        }
        .map_err(bind_err)?
        .run();

        let (admin_listener, admin_port) = admin_listener;
        let admin_addr = server_settings.admin_listen.clone();
        let admin_err = |source| StartError::Bind {
            addr: admin_addr.clone(),
            source,
        };
        let admin = HttpServer::new(move || {
            App::new()
                .app_data(probe_state.clone())
                .app_data(admin_state.clone())
                .app_data(routes_state.clone())
                .app_data(console_state.clone())
                .configure(crate::admin::routes::configure)
                .default_service(web::to(handler::not_found))
        })
        .workers(1)
        .shutdown_timeout(server_settings.deadline_ms / 1000 + 2);
        let admin = match admin_tls {
            Some(config) => admin.listen_rustls_0_23(admin_listener, config),
            None => admin.listen(admin_listener),
        }
        .map_err(admin_err)?
        .run();
        tracing::info!(
            addr = %format!("{}:{}", host_of(&server_settings.admin_listen), admin_port),
            tls = server_settings.tls.as_ref().is_some_and(|t| t.admin),
            tokens = settings.admin.tokens.len(),
            "admin listener: /spool, /spool/dead, /spool/redrive, /reconcile, /deliveries, /console/, /metrics, /healthz, /readyz"
        );
        let admin = (admin_port, admin);

        tracing::info!(
            addr = %format!("{}:{}", host_of(&server_settings.listen), port),
            paths = ?paths,
            sinks = fanout.sinks().len(),
            "listening"
        );
        Ok(Application {
            port,
            server,
            admin,
            tls_watch,
            fanout,
            _reconcile: scheduler,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin listener's port (`server.admin_listen`).
    pub fn admin_port(&self) -> u16 {
        self.admin.0
    }

    /// A handle to stop the server gracefully (what SIGTERM does).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT or [`ServerHandle::stop`]; in-flight requests are answered,
    /// then sinks are flushed.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application {
            server,
            admin,
            tls_watch,
            fanout,
            _reconcile: reconcile,
            ..
        } = self;
        let admin = {
            let (_, server) = admin;
            let handle = server.handle();
            (handle, tokio::spawn(server))
        };
        let result = server.await;
        // No reconciliation pass starts publishing into sinks being closed.
        drop(reconcile);
        if let Some(watch) = tls_watch {
            watch.abort();
        }
        // The admin listener lives as long as the webhook listener (readiness stays answerable
        // while in-flight webhooks finish).
        {
            let (handle, task) = admin;
            handle.stop(true).await;
            let _ = task.await;
        }
        tracing::info!("server stopped; flushing sinks");
        fanout.close().await;
        if let Some(d) = fanout.deliveries() {
            d.flush();
        }
        tracing::info!("shutdown complete");
        result
    }
}

/// The host part of a `host:port` address, for the log line that names where it listens.
fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(h, _)| h).unwrap_or("0.0.0.0")
}

/// The delivery index (its own table in the spool's database when a spool is configured) and,
/// unless `audit.enabled` is false, the audit reading each 200's copies back.
fn start_deliveries(
    settings: &Settings,
    metrics: &Metrics,
    spool: Option<&Arc<crate::spool::Spool>>,
) -> Result<Arc<crate::delivery::Deliveries>, StartError> {
    use crate::delivery::{audit, metrics::DeliveryMetrics, store, Deliveries};
    let m = DeliveryMetrics::register(metrics);
    let mut d = Deliveries::new(&settings.deliveries, m.clone());
    if let Some(spool) = spool.filter(|s| s.database().is_some()) {
        let spool = spool.clone();
        let db: store::Db = Arc::new(move || spool.database());
        d = d.with_store(Arc::new(store::Redb::new(db)))?;
        tracing::info!(
            events = d.len(),
            "delivery index kept in the spool's database"
        );
    }
    let mut worker = None;
    if settings.audit.enabled {
        let readers = audit::Readers::build(
            settings
                .sinks
                .iter()
                .map(|s| (s.spec().common().name.to_string(), s.audit_source())),
        );
        let (queue, w) = audit::channel(&settings.audit, readers, m);
        d = d.with_audit(queue);
        worker = Some(w);
    }
    let d = Arc::new(d);
    if let Some(w) = worker {
        w.spawn(Arc::downgrade(&d));
    }
    Ok(d)
}

type Reconcile = (
    Option<Arc<crate::reconcile::Reconciler>>,
    Option<crate::reconcile::scheduler::Scheduler>,
);

/// The reconciler when `reconcile` is configured, and its periodic passes unless
/// `interval_secs` is 0.
fn start_reconcile(
    settings: &Settings,
    fanout: &Arc<Fanout>,
    metrics: &Arc<Metrics>,
) -> Result<Reconcile, StartError> {
    let Some(r) = &settings.reconcile else {
        return Ok((None, None));
    };
    let reconciler = Arc::new(crate::reconcile::build(
        r,
        fanout.clone(),
        metrics.clone(),
        settings.event.clone(),
        Duration::from_secs(settings.idempotency.window_secs),
        Duration::from_millis(settings.server.deadline_ms),
    )?);
    tracing::info!(
        interval_secs = r.interval_secs,
        lookback_secs = r.lookback_secs,
        settle_secs = r.settle_secs,
        "reconciliation with the platform's call api on"
    );
    let scheduler = (r.interval_secs > 0).then(|| {
        crate::reconcile::scheduler::spawn(
            reconciler.clone(),
            Duration::from_secs(r.interval_secs),
            Duration::from_secs(r.lookback_secs),
        )
    });
    Ok((Some(reconciler), scheduler))
}

/// Works out the largest event every required sink accepts and says how it relates to
/// `server.max_body_bytes`: an event's `data` can be about twice its body (the transcript is
/// kept as sent and as turns), so a body under the limit can still make an event a sink never
/// takes. Such an event is answered 413 (published nowhere), never a 503 retried in vain.
fn log_largest_event(fanout: &Fanout, max_body_bytes: usize) {
    let limits: Vec<(&str, usize)> = fanout
        .sinks()
        .iter()
        .filter(|s| s.required)
        .filter_map(|s| s.sink.max_message_bytes().map(|m| (s.name.as_str(), m)))
        .collect();
    let Some((sink, largest)) = limits.iter().min_by_key(|(_, m)| *m).copied() else {
        return;
    };
    let worst_case = crate::event::worst_case_event_bytes(max_body_bytes);
    if worst_case > largest {
        tracing::warn!(
            largest_event_bytes = largest,
            sink,
            max_body_bytes,
            "a body under server.max_body_bytes can make an event larger than a required sink \
             accepts; such events are answered 413"
        );
    } else {
        tracing::info!(
            largest_event_bytes = largest,
            sink,
            max_body_bytes,
            "largest event every required sink accepts"
        );
    }
}
