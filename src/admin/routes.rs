//! The admin listener's routes: the probes (also on the webhook listener), `/metrics`, and the
//! operator routes, which need `admin.tokens`.

use actix_web::{web, HttpResponse};

use super::{reconcile, spool, AdminState};
use crate::ingest::handler;

/// The probes, `/metrics` and the operator routes; the webhook listener has none but the
/// probes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(handler::healthz))
        .route("/readyz", web::get().to(handler::readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/spool", web::get().to(spool::status))
        .route("/spool/dead", web::get().to(spool::dead_letters))
        .route("/spool/dead/purge", web::post().to(spool::purge))
        .route("/spool/redrive", web::post().to(spool::redrive))
        .route("/reconcile", web::post().to(reconcile::reconcile))
        .configure(crate::delivery::routes::routes)
        .configure(crate::console::configure);
}

/// `GET /metrics`: Prometheus text. Not behind the admin token: it is what a scraper reads
/// (counts and sink names, no event content), and the admin listener it is on is loopback
/// unless tokens are configured.
pub async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    let m = &state.metrics;
    handler::refresh_readiness(&state.fanout, m);
    m.observe_ledger(state.fanout.ledger_stats());
    if let Some(spool) = state.fanout.spool() {
        m.spool_bytes.set(spool.bytes() as i64);
        for sink in state.fanout.sinks() {
            let depth = spool
                .depths()
                .into_iter()
                .find(|(s, _)| *s == sink.name)
                .map_or(0, |(_, d)| d);
            m.spool_depth
                .with_label_values(&[&sink.name])
                .set(depth as i64);
        }
        for (sink, kept, discarded) in spool.dead_counts() {
            m.spool_dead_letters
                .with_label_values(&[&sink])
                .set(i64::try_from(kept).unwrap_or(i64::MAX));
            m.spool_dead_letters_discarded
                .with_label_values(&[&sink])
                .set(i64::try_from(discarded).unwrap_or(i64::MAX));
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(m.render())
}
