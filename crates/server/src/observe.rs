//! The one layer every call to the services passes, whether it came over the gRPC socket
//! or in process from the REST gateway: it counts and times the call in `/metrics`,
//! starts the server span (continuing the caller's `traceparent`), and logs it.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tonic::codegen::http;

use crate::metrics::Metrics;

/// Wraps a service so that each of its calls is observed.
#[derive(Debug, Clone)]
pub(crate) struct ObservabilityLayer(pub(crate) Arc<Metrics>);

impl<S> tower::Layer<S> for ObservabilityLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observed { inner, metrics: Arc::clone(&self.0) }
    }
}

/// A service whose calls are counted, traced and logged.
#[derive(Debug, Clone)]
pub(crate) struct Observed<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Observed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = self.metrics.method(request.uri().path());
        let started = Instant::now();
        let metrics = Arc::clone(&self.metrics);
        let span = if crate::telemetry::exporting() {
            let span = tracing::info_span!(
                "grpc.request",
                otel.name = %method.name,
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.method = %method.name,
                rpc.grpc.status_code = tracing::field::Empty,
            );
            crate::telemetry::continue_trace(&span, request.headers());
            span
        } else {
            tracing::Span::none()
        };
        let call = span.in_scope(|| self.inner.call(request));
        Box::pin(tracing::Instrument::instrument(
            async move {
                let response = call.await;
                if let Ok(response) = &response {
                    // Errors come as trailers-only responses, their status in the headers;
                    // a call without one in its headers ended OK.
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.parse::<i32>().ok())
                        .map_or(tonic::Code::Ok, tonic::Code::from_i32);
                    metrics.record_call(&method, code, started.elapsed());
                    tracing::Span::current().record("rpc.grpc.status_code", code as i32);
                    tracing::debug!(method = %method.name, code = ?code, elapsed_us = started.elapsed().as_micros(), "grpc call");
                }
                response
            },
            span,
        ))
    }
}
