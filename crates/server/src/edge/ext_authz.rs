//! Envoy's external authorization (`envoy.service.auth.v3.Authorization/Check`), Envoy's
//! own proto as the `envoy-types` crate generates it. Every answer is a gRPC OK carrying
//! the verdict: `OkHttpResponse` with the upstream headers, or `DeniedHttpResponse` with
//! the HTTP status and the JSON body; a failure of keyward's own (database unreachable)
//! is a denial with 503 too, so the client sees the same status behind Envoy as behind
//! forward-auth.

use envoy_types::pb::{
    envoy::{
        config::core::v3::{HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction},
        service::auth::v3::{
            CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse, attribute_context::HttpRequest,
            authorization_server::Authorization, check_response::HttpResponse,
        },
        r#type::v3::HttpStatus,
    },
    google::rpc,
};
use keyward_core::{
    Error,
    edge::{self, Answer},
};
use tonic::{Request, Response, Status};

use super::{Edge, Proxied, body};
use crate::status::to_status;

/// The Authorization service.
#[derive(Debug, Clone)]
pub(crate) struct ExtAuthz {
    edge: Edge,
}

impl ExtAuthz {
    pub(crate) fn new(edge: Edge) -> Self {
        Self { edge }
    }
}

/// A request header as Envoy sends it: in `headers` (lower-case names), or in
/// `header_map` when Envoy is set to send raw header bytes.
fn header<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
    if let Some(value) = http.headers.get(name) {
        return Some(value);
    }
    let raw = http.header_map.as_ref()?.headers.iter().find(|header| header.key.eq_ignore_ascii_case(name))?;
    if raw.value.is_empty() { std::str::from_utf8(&raw.raw_value).ok() } else { Some(&raw.value) }
}

/// Every header name of the request, as Envoy sent it.
fn header_names(http: &HttpRequest) -> impl Iterator<Item = &str> {
    let raw = http.header_map.iter().flat_map(|map| map.headers.iter().map(|header| header.key.as_str()));
    http.headers.keys().map(String::as_str).chain(raw)
}

fn header_option(name: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: name.to_owned(), value, raw_value: Vec::new() }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        ..Default::default()
    }
}

/// The gRPC code Envoy logs for a denial (it answers the client with the HTTP status).
fn rpc_code(answer: Answer) -> tonic::Code {
    match answer.status {
        200 => tonic::Code::Ok,
        401 => tonic::Code::Unauthenticated,
        402 | 429 => tonic::Code::ResourceExhausted,
        503 => tonic::Code::Unavailable,
        500 => tonic::Code::Internal,
        _ => tonic::Code::PermissionDenied,
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    #[tracing::instrument(name = "ext_authz.Check", skip_all)]
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let request = request.into_inner();
        let http = request.attributes.as_ref().and_then(|attributes| attributes.request.as_ref()?.http.as_ref());
        let Some(http) = http else {
            return Err(to_status(Error::invalid("attributes.request.http", "is required: the HTTP request to check")));
        };
        let host = if http.host.is_empty() { header(http, ":authority").unwrap_or_default() } else { &http.host };
        let path = if http.path.is_empty() { header(http, ":path").unwrap_or_default() } else { &http.path };
        let method = if http.method.is_empty() { header(http, ":method").unwrap_or_default() } else { &http.method };
        let decision = self.edge.check(Proxied { method, host, path }, |name| header(http, name)).await;
        let answer = decision.answer;
        let http_response = if answer.admits() {
            let headers: Vec<HeaderValueOption> =
                decision.upstream.iter().map(|(name, value)| header_option(name, value.clone())).collect();
            // Ours overwrite the client's copies; the client's others of these names go.
            // Envoy sends header names in lower case.
            let headers_to_remove = header_names(http)
                .filter(|name| {
                    edge::is_upstream_header(name) && !decision.upstream.iter().any(|(ours, _)| ours == name)
                })
                .map(str::to_owned)
                .collect();
            HttpResponse::OkResponse(OkHttpResponse { headers, headers_to_remove, ..Default::default() })
        } else {
            let mut headers = vec![
                header_option("content-type", "application/json".to_owned()),
                header_option("x-keyward-code", answer.code.to_owned()),
            ];
            if answer.status == 401 {
                headers.push(header_option("www-authenticate", "Bearer".to_owned()));
            }
            if let Some(seconds) = decision.retry_after {
                headers.push(header_option("retry-after", seconds.to_string()));
            }
            HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: i32::from(answer.status) }),
                headers,
                body: body(answer),
            })
        };
        let code = rpc_code(answer);
        let message = if answer.admits() { String::new() } else { answer.message.to_owned() };
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status { code: code as i32, message, details: Vec::new() }),
            http_response: Some(http_response),
            dynamic_metadata: None,
        }))
    }
}
