//! Logs and traces. Traces are exported over OTLP/gRPC only when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (with `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES` and the other `OTEL_*` variables read by the SDK); without
//! it no span leaves the process and no request span is even created.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::{global, propagation::Extractor, trace::TracerProvider as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tonic::codegen::http::HeaderMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported, so request spans are worth creating.
pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Flushes exported spans when dropped.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("keyward: flushing traces failed: {err}");
        }
    }
}

/// Installs the global subscriber: `filter` (EnvFilter syntax) in `format`, plus OTLP
/// export when configured.
pub fn init(filter: &str, format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|err| anyhow::anyhow!("KEYWARD_LOG `{filter}` is not a valid filter: {err}"))?;
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .map_err(|err| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT {endpoint}: {err}"))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().build())
                .build();
            global::set_text_map_propagator(TraceContextPropagator::new());
            EXPORTING.store(true, Ordering::Relaxed);
            Some(provider)
        }
        Ok(_) | Err(_) => None,
    };
    let traces =
        provider.as_ref().map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("keyward")));
    let stderr_is_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (json, text) = match format {
        LogFormat::Json => (Some(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr)), None),
        LogFormat::Text => {
            (None, Some(tracing_subscriber::fmt::layer().with_ansi(stderr_is_terminal).with_writer(std::io::stderr)))
        }
    };
    tracing_subscriber::registry().with(filter).with(json).with(text).with(traces).try_init()?;
    Ok(Telemetry { provider })
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// Makes `span` a child of the W3C `traceparent` the caller sent, if any.
pub(crate) fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    let parent = global::get_text_map_propagator(|propagator| propagator.extract(&Headers(headers)));
    // A span the subscriber filtered out has nothing to attach the parent to.
    let _ = span.set_parent(parent);
}
