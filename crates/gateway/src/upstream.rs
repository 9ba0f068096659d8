//! The gRPC API the gateway calls: in process (the server's own tonic services, no
//! socket) or over a [`tonic::transport::Channel`] to another process.

use std::convert::Infallible;

use http::{HeaderMap, Request, Response};
use keyward_proto::v1::{
    api_key_service_client::ApiKeyServiceClient, rpc_provider_key_service_client::RpcProviderKeyServiceClient,
};
use tonic::{
    body::Body,
    metadata::{AsciiMetadataValue, MetadataMap},
    transport::Channel,
};
use tonic_health::pb::health_client::HealthClient;
use tower::{BoxError, ServiceExt, util::BoxCloneSyncService};

/// The headers passed on to the gRPC API as metadata: credentials and trace context.
const FORWARDED_HEADERS: [&str; 4] = ["authorization", "token", "traceparent", "tracestate"];

/// A gRPC service of any transport, as the generated clients take it.
#[derive(Clone)]
pub struct Upstream(BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>);

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstream")
    }
}

impl Upstream {
    /// The server's own services (its tonic `Routes`, as the server layers them), called
    /// in process.
    pub fn in_process<S>(services: S) -> Self
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        Self(BoxCloneSyncService::new(ServiceExt::<Request<Body>>::map_err(
            services,
            |never: Infallible| match never {},
        )))
    }

    /// Another process, over a channel (which reconnects by itself when the upstream returns).
    pub fn channel(channel: Channel) -> Self {
        Self(BoxCloneSyncService::new(channel.map_err(BoxError::from)))
    }

    pub(crate) fn api_keys(&self) -> ApiKeyServiceClient<Self> {
        ApiKeyServiceClient::new(self.clone())
    }

    pub(crate) fn rpc_provider_keys(&self) -> RpcProviderKeyServiceClient<Self> {
        RpcProviderKeyServiceClient::new(self.clone())
    }

    pub(crate) fn health(&self) -> HealthClient<Self> {
        HealthClient::new(self.clone())
    }
}

impl tower::Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future =
        <BoxCloneSyncService<Request<Body>, Response<Body>, BoxError> as tower::Service<Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.0.call(request)
    }
}

/// `message` with the forwarded headers of the HTTP request as metadata.
pub(crate) fn request<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut metadata = MetadataMap::new();
    for name in FORWARDED_HEADERS {
        for value in headers.get_all(name) {
            // A value that is not visible ASCII cannot be a key or a token: leave it out, and
            // the call fails authentication like any other wrong credential.
            if let Ok(value) = AsciiMetadataValue::try_from(value.as_bytes()) {
                metadata.append(name, value);
            }
        }
    }
    tonic::Request::from_parts(metadata, tonic::Extensions::default(), message)
}
