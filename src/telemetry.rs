//! Logs and traces.
//!
//! Logs: `tracing-subscriber`, pretty for people or JSON for collectors. Traces (off by default):
//! `tracing-opentelemetry` with the OTLP/HTTP exporter, so the `webhook` request span and its
//! `publish` child spans (one per sink) reach any OpenTelemetry collector. The W3C trace context
//! goes both ways: an incoming `traceparent` is continued, and the outgoing one is written into
//! the event (the CloudEvents `traceparent` extension) and into every broker message's headers.

pub mod settings;

use std::io::IsTerminal;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use settings::{LogFormat, LogSettings, TraceProtocol, TraceSettings};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter for {endpoint}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Keeps the tracer provider alive; dropping it flushes the spans still buffered.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    /// Flushes the queued log lines when dropped (at exit).
    _log_writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl TelemetryGuard {
    /// Exports every finished span now (tests; shutdown does it too).
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

type BoxedLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Installs the global subscriber. `RUST_LOG` wins over `log.level`; default `DEFAULT_LEVEL`. A second
/// call (as in tests) leaves the first subscriber in place.
pub fn init(log: &LogSettings, traces: &TraceSettings) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(log.level.as_deref().unwrap_or(DEFAULT_LEVEL)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    // Log lines go through a bounded in-memory queue to a dedicated writer thread: a slow or
    // blocked stderr (a full pipe, a stalled log collector) never blocks a runtime thread. When
    // the queue is full, lines are dropped (lossy) rather than waiting.
    let (writer, log_writer) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("callbridge-log")
        .finish(std::io::stderr());
    let fmt: BoxedLayer = match log.format {
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(writer),
        ),
        LogFormat::Pretty => Box::new(
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(writer),
        ),
    };

    let mut layers: Vec<BoxedLayer> = vec![fmt
        .with_filter(tracing_subscriber::filter::FilterExt::and(
            filter,
            tracing_subscriber::filter::filter_fn(never_secret),
        ))
        .boxed()];
    let mut provider = None;
    if traces.enabled {
        let p = tracer_provider(traces)?;
        let tracer = p.tracer("callbridge");
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                // only our own spans: the request and the publishes
                .with_filter(EnvFilter::new("callbridge=info"))
                .boxed(),
        );
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        provider = Some(p);
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(TelemetryGuard {
        provider,
        _log_writer: Some(log_writer),
    })
}

/// `info` for callbridge, nothing from the AMQP and NATS clients: lapin and async-nats log each
/// failed (re)connect themselves (lapin four ERROR lines per attempt), while each sink already
/// reports its client's failures with the sink's name, summarised (`sinks::throttle`).
/// `log.level` or `RUST_LOG` bring them back (`info,lapin=debug`).
const DEFAULT_LEVEL: &str = "info,lapin=off,async_nats=off";

/// Events that carry credentials in clear, dropped whatever `RUST_LOG` says: async-nats traces
/// its whole CONNECT (user, password, token) at TRACE level.
fn never_secret(meta: &tracing::Metadata<'_>) -> bool {
    !(meta.target().starts_with("async_nats::connection") && *meta.level() == tracing::Level::TRACE)
}

fn tracer_provider(traces: &TraceSettings) -> Result<SdkTracerProvider, TelemetryError> {
    let endpoint = traces_url(&traces.endpoint);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(match traces.protocol {
            TraceProtocol::HttpProtobuf => Protocol::HttpBinary,
            TraceProtocol::HttpJson => Protocol::HttpJson,
        })
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|source| TelemetryError::Exporter { endpoint, source })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            traces.sampling_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(traces.service_name.clone())
                .build(),
        )
        .build())
}

/// `http://collector:4318` → `http://collector:4318/v1/traces` (a full URL is kept).
fn traces_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.ends_with("/v1/traces") {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    }
}

struct HeaderExtractor<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` continue the trace of an incoming W3C `traceparent`, when tracing is on.
pub fn continue_trace(span: &tracing::Span, headers: &actix_web::http::header::HeaderMap) {
    if headers.contains_key("traceparent") {
        let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` to hand on to consumers: the request span's own context when tracing is
/// on; otherwise the incoming header passed through unchanged (if well-formed), so a trace
/// started upstream still reaches the consumers.
pub fn outgoing_traceparent(
    span: &tracing::Span,
    headers: &actix_web::http::header::HeaderMap,
) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        return Some(format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        ));
    }
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_traceparent(v))
        .map(str::to_string)
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, not all-zero ids.
pub fn is_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// The trace id of a `traceparent`.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_validation() {
        assert!(is_traceparent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-xyz-b7ad6b7169203331-01",
        ] {
            assert!(!is_traceparent(bad), "{bad}");
        }
        assert_eq!(
            trace_id_of("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
    }

    #[test]
    fn endpoint_gets_the_traces_path_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
