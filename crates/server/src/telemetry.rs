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

struct HeadersMut<'a>(&'a mut HeaderMap);

impl opentelemetry::propagation::Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (tonic::codegen::http::HeaderName::try_from(key), tonic::codegen::http::HeaderValue::try_from(value))
        {
            self.0.insert(name, value);
        }
    }
}

/// Replaces the request's `traceparent` with `span`'s, so the service the request goes on
/// to (in process, or a keyward server behind the standalone gateway) starts its span
/// under this one rather than beside it.
pub(crate) fn hand_on_trace(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = span.context();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut HeadersMut(headers)));
}

/// How often a background loop's poll is traced: its first, then at most one a minute.
const POLL_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The spans of a background loop's polls. Every poll gets one, so the database spans of a
/// poll share a parent instead of each starting a trace; only one poll a minute is sampled
/// — the others are made children of an unsampled remote parent, which the SDK's default
/// parent-based sampler drops along with everything under them.
#[derive(Debug)]
pub(crate) struct PollSpans {
    name: &'static str,
    sampled_at: Option<std::time::Instant>,
}

impl PollSpans {
    pub(crate) const fn new(name: &'static str) -> Self {
        Self { name, sampled_at: None }
    }

    /// The span of the next poll (none when no span is exported).
    pub(crate) fn next(&mut self) -> tracing::Span {
        if !exporting() {
            return tracing::Span::none();
        }
        let span = tracing::info_span!("poll", otel.name = self.name, otel.kind = "internal");
        if self.sampled_at.is_some_and(|at| at.elapsed() < POLL_SAMPLE_EVERY) {
            use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
            // Never exported: any valid (non-zero) identifiers do.
            let unsampled = SpanContext::new(
                TraceId::from(1_u128),
                SpanId::from(1_u64),
                TraceFlags::default(),
                true,
                TraceState::default(),
            );
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(unsampled));
        } else {
            self.sampled_at = Some(std::time::Instant::now());
        }
        span
    }
}
