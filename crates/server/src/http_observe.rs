//! The layer every HTTP request passes (REST, `/v1/forwardAuth`, `/metrics`, on the main
//! HTTP listener, the edge listener and the standalone gateway): an HTTP server span
//! with the route template and the status, and the request counted by route and status
//! in `keyward_http_requests_total`. REST calls are also counted by gRPC method in
//! `keyward_grpc_requests_total`, as the in-process call they become.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use axum::http;
use keyward_gateway::HttpRoute;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Label of requests no route matched: unknown paths cannot grow the label set.
const NO_ROUTE: &str = "other";

/// The HTTP request metrics.
#[derive(Debug, Clone)]
pub(crate) struct HttpMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl HttpMetrics {
    /// The metrics, registered in `registry`.
    pub(crate) fn register(registry: &Registry) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "keyward_http_requests_total",
                "HTTP requests by route template and status (REST, /v1/forwardAuth, /metrics; `other` when no route matched)",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("keyward_http_request_duration_seconds", "HTTP request latency by route template")
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
            &["route"],
        )
        .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("metric names are unique");
        registry.register(Box::new(latency.clone())).expect("metric names are unique");
        Self { requests, latency }
    }
}

/// Wraps an HTTP service so that each request is traced and counted.
#[derive(Debug, Clone)]
pub(crate) struct HttpObserveLayer(pub(crate) HttpMetrics);

impl<S> tower::Layer<S> for HttpObserveLayer {
    type Service = HttpObserved<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpObserved { inner, metrics: self.0.clone() }
    }
}

/// An HTTP service whose requests are traced and counted.
#[derive(Debug, Clone)]
pub(crate) struct HttpObserved<S> {
    inner: S,
    metrics: HttpMetrics,
}

impl<S, B, R> tower::Service<http::Request<B>> for HttpObserved<S>
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let method = request.method().clone();
        let span = if crate::telemetry::exporting() {
            let span = tracing::info_span!(
                "http.request",
                otel.name = %method,
                otel.kind = "server",
                http.request.method = %method,
                url.path = %request.uri().path(),
                http.route = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
            );
            crate::telemetry::continue_trace(&span, request.headers());
            crate::telemetry::hand_on_trace(&span, request.headers_mut());
            span
        } else {
            tracing::Span::none()
        };
        let call = span.in_scope(|| self.inner.call(request));
        Box::pin(tracing::Instrument::instrument(
            async move {
                let response = call.await;
                if let Ok(response) = &response {
                    let route = response.extensions().get::<HttpRoute>().map_or(NO_ROUTE, |route| route.0.as_str());
                    let status = response.status();
                    metrics.requests.with_label_values(&[route, status.as_str()]).inc();
                    metrics.latency.with_label_values(&[route]).observe(started.elapsed().as_secs_f64());
                    let span = tracing::Span::current();
                    span.record("http.response.status_code", status.as_u16());
                    if route != NO_ROUTE {
                        span.record("http.route", route);
                    }
                }
                response
            },
            span,
        ))
    }
}
