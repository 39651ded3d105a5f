//! # callbridge
//!
//! Takes a voice-AI platform's call webhooks and publishes each one, as a canonical CloudEvents
//! event, to every configured broker — answering **200 only when every required sink has
//! acknowledged it**, and 503 with `Retry-After` (naming the failed sinks) before the sender's
//! 10 s timeout otherwise.
//!
//! ## Layout: the tree follows the data path
//!
//! ```text
//! ingest/        HTTP: gates.rs every check before the fan-out, in order, as one sequence
//!                (rate limit 429, credential 401, signature headers 401, request slot 503,
//!                body 413/503 with its bytes counted as they arrive, signature 401,
//!                processing budget 503, JSON 400); auth.rs the credentials, signature.rs
//!                Standard Webhooks / HMAC on the raw body, ratelimit.rs (each with its
//!                settings.rs), settings.rs the `server:` section; handler.rs the
//!                fan-out and the answer; error.rs is the one place errors become status
//!                codes, response.rs the answer's shapes (per-sink status, error body)
//!   ↓
//! event/         the canonical event (CloudEvents 1.0 + versioned `data`), normalisation of each
//!                webhook family, deterministic ids, the JSON Schema; samples.rs the sample
//!                webhooks `send-test`, the tests and the benchmark post;
//!                binding.rs: the CloudEvents bindings written once (attributes, binary vs
//!                structured, content types, the structured JSON; `Outgoing`)
//!   ↓
//! fanout.rs      per sink a task (fanout/driver.rs): take the sink in the ledger → publish →
//!                settle on the real outcome; the answer waits for the required sinks only;
//!                outcome.rs what it comes to; record.rs the one call that puts every answer
//!                into the delivery index
//! delivery/      the delivery index: per event each answer, per sink the outcome and receipt
//!                (index.rs, pure; store.rs its table in the spool's redb file; routes.rs
//!                `GET /deliveries`, cli.rs `callbridge deliveries|audit`); audit/ reads each
//!                200's copies back by receipt, one file per broker (kafka.rs, jetstream.rs,
//!                rabbitmq.rs: the sink's audit queue, file.rs), each with a pure verdict
//!                function: docs/deliveries.md
//! ledger/        per event id and sink: a receipt or a publish in flight (bounded, windowed);
//!                shared.rs: the claims and receipts every replica shares (NATS KV, CAS + lease);
//!                settings.rs its `idempotency:` section
//! spool/         for `on_unavailable: spool`: what a sink could not confirm, durably —
//!                mod.rs the bookkeeping, dead.rs the dead letters (list, count, redrive,
//!                purge by one filter), store.rs the backend trait, redb_store.rs (group
//!                commit on one writer thread), layout.rs the file's tables, salvage.rs (a
//!                damaged tail cut), entry.rs the stored forms, replay.rs the task per sink
//!                that drains it in order, settings.rs its `spool:` section
//!   ↓
//! sinks/         one trait, `publish(&Outgoing) -> Result<Receipt, SinkError>`, Ok = confirmed;
//!                one way to build a sink (`SinkSpec::build`, one `BuildError`)
//!   file.rs, null.rs              settings and sink in one file each
//!   rabbitmq/  mod.rs (ack contract, publish) settings.rs pool.rs channel.rs settle.rs
//!              supervisor.rs socket.rs message.rs
//!   nats/      mod.rs (ack contract, publish) settings.rs subject.rs stream.rs client.rs
//!   kafka/     mod.rs (ack contract, publish) settings.rs producer.rs health.rs diagnose.rs
//!   throttle.rs                   repeated client complaints summarised (no log storm)
//! ```
//!
//! Around it: [`config`] (typed YAML, assembled from each module's own settings type;
//! `config/env.rs` `${VAR}` and `CALLBRIDGE__` overrides, `config/sinks.rs` the sinks list,
//! `config/shape.rs` every shape error at once with "did you mean", `config/reference.rs`
//! the generated reference, docs/configuration.md), [`template`] (routing templates shared by every sink, and how each kind of destination
//! name escapes and caps the sender's values), [`metrics`] (Prometheus),
//! [`telemetry`] (logs, traces; `log:` and `trace:` in telemetry/settings.rs), [`health`] (readiness: can this process answer 200 now — a
//! spooling sink's outage does not count while its spool takes events), [`preflight`] (`validate --connect`: asks each broker whether
//! every event the config can produce would be stored; the probes are in each sink's folder),
//! [`contract`] (what subscribers read: `callbridge asyncapi`, from the same enumeration as
//! `validate --connect`, docs/asyncapi.md; the event schema's compatibility gate, docs/events.md),
//! [`reconcile`] (asks the platform's call API for what no webhook delivered and backfills it
//! through the fan-out: docs/reconcile.md), [`tls`] (`server.tls`, the certificate reloaded
//! when its files change; tls/settings.rs), [`app`] (the server: `Application::build(settings)` binds both
//! listeners, `port()` and `admin_port()` tell tests where), [`admin`] (the admin plane on
//! `server.admin_listen`: `admin.tokens` (settings.rs) in constant time with failed attempts
//! rate limited (auth.rs), the routes and `/metrics` (routes.rs), spool status, paged dead
//! letters, redrive and purge (spool.rs), one bounded reconcile pass at a time (reconcile.rs));
//! [`console`] (the web page on the admin listener, `/console/`: sessions, CSRF, overview,
//! find, dead letters: docs/console.md).
//!
//! [`validate`] is the issue list every settings type reports its problems to (a leaf).
//!
//! Dependencies point one way, and `tests/it/layout.rs` checks it from the source: no circle
//! between files or between these modules, and [`metrics`] imports nothing of the crate (every
//! part reports to it). `config` only assembles the settings types that live with their modules
//! (ingest, admin, telemetry, tls, sinks, ledger, spool, reconcile, delivery, event); no sink,
//! no part of `ingest` and no part of `event` imports `config`.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod console;
pub mod contract;
pub mod delivery;
pub mod event;
pub mod fanout;
pub mod health;
pub mod ingest;
pub mod ledger;
pub mod metrics;
pub mod preflight;
pub mod reconcile;
pub mod sinks;
pub mod spool;
pub mod telemetry;
pub mod template;
pub mod tls;
pub mod validate;

pub use app::Application;
pub use config::Settings;
