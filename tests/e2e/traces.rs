//! OTLP traces: a VerifyApiKey call, over gRPC or through the REST gateway, makes a
//! span under the caller's `traceparent`, exported to a collector (a tonic OTLP trace
//! service run by the test), with no secret in any attribute, and is counted in
//! `/metrics` alike.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use keyward_proto::v1;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::Span,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

use crate::helpers::{Backend, Replica, admin, spawn};

#[derive(Default, Clone)]
struct Collector {
    exports: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.exports.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).map(|kv| text(&kv.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_calls_are_traced_under_the_callers_trace() {
    let collector = Collector::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let serving = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(serving))
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
    });

    let app = spawn(Backend::Sqlite).await;
    let (key, secret) = app.create_key("traced", &[]).await;
    let url = app.config.store.database_url();
    let data = tempfile::tempdir().unwrap();
    let replica = Replica::start(
        &url,
        data.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "keyward-e2e"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await
    .expect("starts with OTLP export");

    let (trace_id, parent_id) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut request = admin(v1::VerifyApiKeyRequest { key: secret.clone(), ..Default::default() });
    request.metadata_mut().insert("traceparent", format!("00-{trace_id}-{parent_id}-01").parse().unwrap());
    assert!(replica.client.clone().verify_api_key(request).await.unwrap().into_inner().valid);

    // The same call through the REST gateway, with a trace of its own.
    let (rest_trace_id, rest_parent_id) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("http://{}/v1/apiKeys:verify", replica.http_addr))
        .header("authorization", format!("Bearer {}", crate::helpers::ADMIN_KEY))
        .header("traceparent", format!("00-{rest_trace_id}-{rest_parent_id}-01"))
        .json(&serde_json::json!({"key": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let metrics = http.get(format!("http://{}/metrics", replica.http_addr)).send().await.unwrap().text().await.unwrap();
    let verified = r#"keyward_grpc_requests_total{code="Ok",method="keyward.v1.ApiKeyService/VerifyApiKey"} "#;
    let count = metrics.lines().find_map(|line| line.strip_prefix(verified)).unwrap_or_else(|| panic!("{metrics}"));
    assert_eq!(count, "2", "the gRPC call and the REST call are both counted");
    let route = r#"keyward_http_requests_total{route="/v1/apiKeys:verify",status="200"} "#;
    assert_eq!(metrics.lines().find_map(|line| line.strip_prefix(route)), Some("1"), "the REST call by its route");
    for process in ["process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds "] {
        assert!(metrics.lines().any(|line| line.starts_with(process)), "{process}missing");
    }

    let mut spans: Vec<(Vec<KeyValue>, Span)> = vec![];
    for _ in 0..100 {
        spans = collector
            .exports
            .lock()
            .unwrap()
            .iter()
            .flat_map(|export| export.resource_spans.iter())
            .flat_map(|resource| {
                let attributes = resource.resource.as_ref().map(|r| r.attributes.clone()).unwrap_or_default();
                resource
                    .scope_spans
                    .iter()
                    .flat_map(|scope| scope.spans.clone())
                    .map(move |span| (attributes.clone(), span))
            })
            .collect();
        if spans.iter().filter(|(_, span)| attribute(&span.attributes, "api_key.id").is_some()).count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server_span = |trace: &str| {
        spans
            .iter()
            .find(|(_, span)| {
                attribute(&span.attributes, "rpc.method").as_deref() == Some("keyward.v1.ApiKeyService/VerifyApiKey")
                    && hex(&span.trace_id) == trace
            })
            .unwrap_or_else(|| panic!("no VerifyApiKey server span in trace {trace} among {} spans", spans.len()))
    };
    // The REST call: an HTTP server span under the caller's, with the route template and
    // the status, and the gRPC call it became under that.
    let (_, http_span) = spans
        .iter()
        .find(|(_, span)| hex(&span.trace_id) == rest_trace_id && attribute(&span.attributes, "http.route").is_some())
        .unwrap_or_else(|| panic!("no HTTP server span in trace {rest_trace_id}"));
    assert_eq!(hex(&http_span.parent_span_id), rest_parent_id, "the REST caller's span is the parent");
    assert_eq!(attribute(&http_span.attributes, "http.route").as_deref(), Some("/v1/apiKeys:verify"));
    assert_eq!(attribute(&http_span.attributes, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attribute(&http_span.attributes, "http.request.method").as_deref(), Some("POST"));
    // Named by the method alone: the route is known only once routing is done, and the
    // OpenTelemetry layer does not rename a span after it started.
    assert_eq!(http_span.name, "POST");
    let (_, rest_span) = server_span(rest_trace_id);
    assert_eq!(rest_span.parent_span_id, http_span.span_id, "the gRPC call is under the HTTP span");
    let server = server_span(trace_id);
    let (resource, span) = server;
    assert_eq!(hex(&span.trace_id), trace_id, "the caller's trace");
    assert_eq!(hex(&span.parent_span_id), parent_id, "the caller's span is the parent");
    assert_eq!(attribute(&span.attributes, "rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(attribute(resource, "service.name").as_deref(), Some("keyward-e2e"));
    assert_eq!(attribute(resource, "deployment.environment").as_deref(), Some("test"));
    let handler = spans
        .iter()
        .find(|(_, span)| attribute(&span.attributes, "api_key.id").is_some() && hex(&span.trace_id) == trace_id)
        .expect("a span names the key");
    assert_eq!(attribute(&handler.1.attributes, "api_key.id"), Some(key.id.clone()));
    assert_eq!(hex(&handler.1.trace_id), trace_id);
    for (_, span) in &spans {
        for kv in &span.attributes {
            let value = text(&kv.value);
            assert!(
                !value.contains(&secret) && !value.contains(crate::helpers::ADMIN_KEY),
                "{} holds a secret",
                kv.key
            );
        }
    }
    drop(replica);
    app.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every span the collector received so far.
fn received(collector: &Collector) -> Vec<Span> {
    let exports = collector.exports.lock().unwrap();
    exports
        .iter()
        .flat_map(|export| export.resource_spans.iter())
        .flat_map(|resource| resource.scope_spans.iter())
        .flat_map(|scope| scope.spans.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_polls_are_parented_and_sampled() {
    let collector = Collector::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let serving = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(serving))
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
    });
    let data = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/keyward.db?mode=rwc", data.path().display());
    let replica = Replica::start(
        &url,
        data.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            // The outbox polled every 50 ms: dozens of polls while the test watches.
            ("KEYWARD_WEBHOOK_POLL_INTERVAL", "50ms"),
        ],
    )
    .await
    .expect("starts with OTLP export");
    let is_db = |span: &Span| attribute(&span.attributes, "db.system").is_some();
    let polls = |spans: &[Span]| spans.iter().filter(|span| span.name == "claim deliveries").count();
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = received(&collector);
        if polls(&spans) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(polls(&spans), 1, "the first poll is traced");
    let parentless = |spans: &[Span]| spans.iter().filter(|span| is_db(span) && span.parent_span_id.is_empty()).count();
    // Startup's own statements (migrations, first reads) are parentless and may still be in
    // the exporter's next batch: count from when that number settles. A poll that leaked
    // parentless spans would never let it settle (one poll every 50 ms).
    let mut before = parentless(&spans);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = parentless(&received(&collector));
        if now == before {
            break;
        }
        before = now;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = received(&collector);
    assert_eq!(polls(&spans), 1, "polls within the minute are not sampled");
    assert_eq!(parentless(&spans), before, "no poll's database spans start traces of their own");
    let poll = spans.iter().find(|span| span.name == "claim deliveries").unwrap();
    assert!(
        spans.iter().any(|span| is_db(span) && span.parent_span_id == poll.span_id),
        "the poll's queries are under it"
    );
    let ids: std::collections::HashSet<&[u8]> = spans.iter().map(|span| span.span_id.as_slice()).collect();
    for span in spans.iter().filter(|span| is_db(span) && !span.parent_span_id.is_empty()) {
        assert!(ids.contains(span.parent_span_id.as_slice()), "{} is under a span never exported", span.name);
    }
    drop(replica);
}
