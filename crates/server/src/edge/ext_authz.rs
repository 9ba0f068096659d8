//! Envoy's external authorization (`envoy.service.auth.v3.Authorization/Check`). The
//! answer is Envoy's own `CheckResponse` as the `envoy-types` crate generates it; every
//! answer is a gRPC OK carrying the verdict: `OkHttpResponse` with the upstream headers, or
//! `DeniedHttpResponse` with the HTTP status and the JSON body; a failure of keyward's own
//! (database unreachable) is a denial with 503 too, so the client sees the same status
//! behind Envoy as behind forward-auth. The request is read through [`wire`], the fields
//! of Envoy's `CheckRequest` the decision needs, with the same field numbers.

use envoy_types::pb::{
    envoy::{
        config::core::v3::{HeaderMap, HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction},
        service::auth::v3::{CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response::HttpResponse},
        r#type::v3::HttpStatus,
    },
    google::rpc,
};
use keyward_core::{
    Error,
    edge::{self, Answer},
};
use prost::{Message, bytes::Buf};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{
    Status,
    codegen::{Arc, BoxFuture, Context, Poll, Service, StdError, http},
    server::{Grpc, NamedService, UnaryService},
};
use tonic_prost::ProstEncoder;

use super::{Edge, Proxied, body};
use crate::status::to_status;

/// The part of Envoy's `CheckRequest` (`envoy.service.auth.v3`, field numbers unchanged)
/// a decision reads; prost skips the rest unread. `headers` is a `map<string, string>` in
/// Envoy's proto, which on the wire is a repeated entry message: read as a list, it costs no
/// hashing. Decoded into envoy-types' `HashMap`, nine headers cost about 17,000
/// instructions a call under callgrind, a sixth of a whole `Check`. The strings are read as
/// `Bytes`, slices of the received buffer: no copy and no UTF-8 check for the headers a
/// decision never looks at.
pub(crate) mod wire {
    use bytes::Bytes;

    use super::HeaderMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct CheckRequest {
        #[prost(message, optional, tag = "1")]
        pub(crate) attributes: Option<AttributeContext>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct AttributeContext {
        #[prost(message, optional, tag = "4")]
        pub(crate) request: Option<Request>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Request {
        #[prost(message, optional, tag = "2")]
        pub(crate) http: Option<HttpRequest>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct HttpRequest {
        #[prost(bytes = "bytes", tag = "2")]
        pub(crate) method: Bytes,
        #[prost(message, repeated, tag = "3")]
        pub(crate) headers: Vec<Header>,
        #[prost(bytes = "bytes", tag = "4")]
        pub(crate) path: Bytes,
        #[prost(bytes = "bytes", tag = "5")]
        pub(crate) host: Bytes,
        #[prost(message, optional, tag = "13")]
        pub(crate) header_map: Option<HeaderMap>,
    }

    /// One entry of the `headers` map.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Header {
        #[prost(bytes = "bytes", tag = "1")]
        pub(crate) key: Bytes,
        #[prost(bytes = "bytes", tag = "2")]
        pub(crate) value: Bytes,
    }
}

const SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";
/// Envoy's `Check`, the one method of the service.
pub(crate) const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The Authorization service: routes `Check` to [`ExtAuthz`], anything else UNIMPLEMENTED.
#[derive(Debug, Clone)]
pub(crate) struct AuthorizationServer {
    inner: Arc<ExtAuthz>,
}

impl AuthorizationServer {
    pub(crate) fn new(edge: Edge) -> Self {
        Self { inner: Arc::new(ExtAuthz { edge }) }
    }
}

impl NamedService for AuthorizationServer {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for AuthorizationServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            return Box::pin(async { Ok(Status::unimplemented("Authorization has only Check").into_http()) });
        }
        let check = CheckCall(Arc::clone(&self.inner));
        Box::pin(async move {
            let mut grpc = Grpc::new(CheckCodec);
            Ok(grpc.unary(check, request).await)
        })
    }
}

/// Envoy's `CheckResponse` out as prost encodes it; the request in through [`wire`], decoded
/// from the message's bytes taken whole (one split of the received buffer, no copy): prost
/// then reads each string as a slice of them and skips unread fields with a pointer bump,
/// where reading through tonic's buffer costs a split and an advance of it per field.
struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = CheckResponse;
    type Decode = wire::CheckRequest;
    type Encoder = ProstEncoder<CheckResponse>;
    type Decoder = CheckDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckDecoder
    }
}

struct CheckDecoder;

impl Decoder for CheckDecoder {
    type Item = wire::CheckRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let message = buf.copy_to_bytes(buf.remaining());
        // As tonic's own prost decoder answers a message that does not parse.
        wire::CheckRequest::decode(message).map(Some).map_err(|err| Status::internal(err.to_string()))
    }
}

struct CheckCall(Arc<ExtAuthz>);

impl UnaryService<wire::CheckRequest> for CheckCall {
    type Response = CheckResponse;
    type Future = BoxFuture<tonic::Response<CheckResponse>, Status>;

    fn call(&mut self, request: tonic::Request<wire::CheckRequest>) -> Self::Future {
        let ext_authz = Arc::clone(&self.0);
        Box::pin(async move { ext_authz.check(request.into_inner()).await.map(tonic::Response::new) })
    }
}

/// Decides a `Check`.
#[derive(Debug)]
struct ExtAuthz {
    edge: Edge,
}

/// A request header as Envoy sends it: in `headers` (lower-case names; the last entry of a
/// name wins, as in a map), or in `header_map` when Envoy is set to send raw header bytes.
/// A value that is not UTF-8 is no header a decision can use: absent.
fn header<'a>(http: &'a wire::HttpRequest, name: &str) -> Option<&'a str> {
    if let Some(entry) = http.headers.iter().rev().find(|entry| entry.key == name.as_bytes()) {
        return std::str::from_utf8(&entry.value).ok();
    }
    let raw = http.header_map.as_ref()?.headers.iter().find(|header| header.key.eq_ignore_ascii_case(name))?;
    if raw.value.is_empty() { std::str::from_utf8(&raw.raw_value).ok() } else { Some(&raw.value) }
}

/// A string field of the request, or the pseudo-header that carries it when Envoy left the
/// field empty.
fn field<'a>(http: &'a wire::HttpRequest, value: &'a [u8], pseudo: &str, name: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        return Ok(header(http, pseudo).unwrap_or_default());
    }
    std::str::from_utf8(value).map_err(|_| {
        to_status(Error::invalid(
            format!("attributes.request.http.{name}"),
            "is not UTF-8, as a string field of Envoy's proto must be",
        ))
    })
}

/// The request's headers of the names the edge sets upstream, as Envoy sent them: judged on
/// their bytes, so the names of every other header are never checked as UTF-8.
fn client_upstream_headers(http: &wire::HttpRequest) -> impl Iterator<Item = &str> {
    let raw = http.header_map.iter().flat_map(|map| map.headers.iter().map(|header| header.key.as_str()));
    let listed = http.headers.iter().filter(|entry| edge::is_upstream_header(&entry.key));
    listed
        .filter_map(|entry| std::str::from_utf8(&entry.key).ok())
        .chain(raw.filter(|name| edge::is_upstream_header(name)))
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

impl ExtAuthz {
    #[tracing::instrument(name = "ext_authz.Check", skip_all)]
    async fn check(&self, request: wire::CheckRequest) -> Result<CheckResponse, Status> {
        let http = request.attributes.as_ref().and_then(|attributes| attributes.request.as_ref()?.http.as_ref());
        let Some(http) = http else {
            return Err(to_status(Error::invalid("attributes.request.http", "is required: the HTTP request to check")));
        };
        let host = field(http, &http.host, ":authority", "host")?;
        let path = field(http, &http.path, ":path", "path")?;
        let method = field(http, &http.method, ":method", "method")?;
        let decision = self.edge.check(Proxied { method, host, path }, |name| header(http, name)).await;
        let answer = decision.answer;
        let http_response = if answer.admits() {
            // Ours overwrite the client's copies; the client's others of these names go.
            // Envoy sends header names in lower case.
            let headers_to_remove = client_upstream_headers(http)
                .filter(|name| !decision.upstream.iter().any(|(ours, _)| ours == name))
                .map(str::to_owned)
                .collect();
            let headers: Vec<HeaderValueOption> =
                decision.upstream.into_iter().map(|(name, value)| header_option(&name, value)).collect();
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
        Ok(CheckResponse {
            status: Some(rpc::Status { code: code as i32, message, details: Vec::new() }),
            http_response: Some(http_response),
            dynamic_metadata: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::{
        config::core::v3::HeaderValue,
        service::auth::v3::{AttributeContext, CheckRequest, attribute_context},
    };
    use prost::Message;

    use super::*;

    /// Envoy's own message, encoded by envoy-types, reads the same through the view.
    #[test]
    fn the_wire_view_reads_envoys_check_request() {
        let headers = HashMap::from([
            ("authorization".to_owned(), "Bearer kw_x".to_owned()),
            (":path".to_owned(), "/a".to_owned()),
            ("x-keyward-owner".to_owned(), "forged".to_owned()),
            ("ratelimit".to_owned(), "forged".to_owned()),
        ]);
        let raw = HeaderMap {
            headers: vec![
                HeaderValue { key: "x-api-key".to_owned(), value: String::new(), raw_value: b"k".to_vec() },
                HeaderValue { key: "x-keyward-scopes".to_owned(), value: "forged".to_owned(), raw_value: Vec::new() },
            ],
        };
        let http = attribute_context::HttpRequest {
            id: "1".to_owned(),
            method: "POST".to_owned(),
            headers,
            header_map: Some(raw),
            path: "/v1/documents/7?x=1".to_owned(),
            host: "api.example.com".to_owned(),
            scheme: "https".to_owned(),
            protocol: "HTTP/2".to_owned(),
            body: "ignored".to_owned(),
            ..Default::default()
        };
        let request = attribute_context::Request { time: None, http: Some(http) };
        let envoy = CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(attribute_context::Peer { service: "client".to_owned(), ..Default::default() }),
                request: Some(request),
                context_extensions: HashMap::from([("k".to_owned(), "v".to_owned())]),
                ..Default::default()
            }),
        };
        let view = wire::CheckRequest::decode(envoy.encode_to_vec().as_slice()).unwrap();
        let http = view.attributes.unwrap().request.unwrap().http.unwrap();
        assert_eq!(
            (&http.method[..], &http.path[..], &http.host[..]),
            (&b"POST"[..], &b"/v1/documents/7?x=1"[..], &b"api.example.com"[..])
        );
        assert_eq!(header(&http, "authorization"), Some("Bearer kw_x"));
        assert_eq!(header(&http, ":path"), Some("/a"));
        assert_eq!(header(&http, "x-api-key"), Some("k"));
        assert_eq!(header(&http, "cookie"), None);
        let mut names: Vec<&str> = client_upstream_headers(&http).collect();
        names.sort_unstable();
        assert_eq!(names, ["ratelimit", "x-keyward-owner", "x-keyward-scopes"]);
    }
}
