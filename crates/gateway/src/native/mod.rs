//! The native API over HTTP: every `google.api.http` rule of the descriptor set, served
//! with the proto3 JSON mapping. Rules are read at start from the descriptor, so a new
//! RPC with a rule is served without a line here.
//!
//! Paths are matched here rather than by axum's router: AIP custom verbs
//! (`/v1/apiKeys/{id}:rotate`) put a variable and a literal in one segment, which axum's
//! matcher refuses.

mod codec;
pub(crate) mod error;
mod rule;
mod transcode;

use std::{str::FromStr, sync::Arc};

use axum::{
    Router,
    extract::{State, rejection::BytesRejection},
    response::{IntoResponse, Response},
    routing::any,
};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, uri::PathAndQuery};
use prost_reflect::DescriptorPool;

pub use self::rule::{Rule, rules, short_name};
use crate::{Failure, Upstream, upstream};

/// The native API's rules and the upstream they call.
#[derive(Debug, Clone)]
pub struct Native {
    pool: DescriptorPool,
    rules: Arc<Vec<Rule>>,
    upstream: Upstream,
}

impl Native {
    /// The rules of keyward's descriptor set, over `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        let pool = DescriptorPool::decode(keyward_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set compiled into keyward-proto decodes");
        Self { rules: Arc::new(rules(&pool)), pool, upstream }
    }

    /// The descriptor set the rules come from.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The rules served.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// One catch-all route per first path segment of the rules (`/v1/...`).
    pub(crate) fn routes(self) -> Router {
        let mut prefixes: Vec<String> = self
            .rules
            .iter()
            .filter_map(|rule| rule.template.split('/').nth(1).map(|s| s.split(':').next().unwrap_or(s).to_owned()))
            .collect();
        prefixes.sort();
        prefixes.dedup();
        let state = Arc::new(self);
        let mut router = Router::new();
        for prefix in prefixes {
            router =
                router.route(&format!("/{prefix}/{{*rest}}"), any(handle)).route(&format!("/{prefix}"), any(handle));
        }
        router.with_state(state)
    }

    async fn call(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Response, Failure> {
        let body = body?;
        let (rule, variables) = rule::route(&self.rules, method, uri.path())?;
        let message = transcode::request_message(rule, &variables, uri.query().unwrap_or_default(), &body)?;
        let grpc_path = PathAndQuery::from_str(&rule.grpc_path)
            .map_err(|err| Failure::Status(tonic::Status::internal(err.to_string())))?;
        let mut grpc = tonic::client::Grpc::new(self.upstream.clone());
        // Answered as any unreachable upstream is (`Failure::code_and_message`).
        grpc.ready().await.map_err(|err| Failure::Status(tonic::Status::unavailable(err.to_string())))?;
        let response = grpc
            .unary(upstream::request(headers, message), grpc_path, codec::DynamicCodec { output: rule.output.clone() })
            .await?
            .into_inner();
        let response = transcode::response_json(rule, &response)?;
        let mut response = (StatusCode::OK, axum::Json(response)).into_response();
        response.extensions_mut().insert(crate::HttpRoute(rule.template.clone()));
        Ok(response)
    }
}

async fn handle(
    State(native): State<Arc<Native>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match native.call(&method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(Failure::MethodNotAllowed) => {
            let mut response = error::respond(Failure::MethodNotAllowed);
            response.headers_mut().insert(http::header::ALLOW, rule::allowed(&native.rules, uri.path()));
            response
        }
        Err(failure) => error::respond(failure),
    }
}
