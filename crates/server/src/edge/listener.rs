//! Where the edge is served: on the main listeners by default (ext_authz beside the other
//! gRPC services, `/v1/forwardAuth` beside REST), or with `KEYWARD_EDGE_ADDR` on a
//! listener of its own that only the proxy reaches, both on one port: gRPC over h2c and
//! forward-auth over HTTP/1.1 or h2c, told apart by path. The edge endpoints then leave
//! the main listeners, so a client that can reach those cannot use them as an oracle.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use super::{
    Edge,
    ext_authz::{AuthorizationServer, CHECK_PATH},
    forward,
};
use crate::{
    activity::InFlight, config::ConnectionConfig, connections, http_observe::HttpObserveLayer, metrics::Metrics,
    observe::ObservabilityLayer,
};

/// The ext_authz service.
pub(crate) fn ext_authz(edge: Edge) -> AuthorizationServer {
    AuthorizationServer::new(edge)
}

/// `/v1/forwardAuth`, for any method.
pub(crate) fn forward_routes(edge: Edge) -> axum::Router {
    axum::Router::new().route(
        "/v1/forwardAuth",
        axum::routing::any(move |headers: axum::http::HeaderMap| {
            let edge = edge.clone();
            async move { forward::answer(&edge, &headers).await }
        }),
    )
}

/// The edge's own listener, while it serves.
#[derive(Debug)]
pub(crate) struct EdgeListener {
    pub(crate) addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl EdgeListener {
    /// Binds `addr` and serves both edge endpoints there, each through the observability
    /// layer of its kind: `Check` counted and traced as a gRPC call, forward-auth as an
    /// HTTP request.
    pub(crate) async fn start(
        addr: SocketAddr,
        edge: Edge,
        metrics: &Arc<Metrics>,
        settings: &ConnectionConfig,
    ) -> anyhow::Result<Self> {
        let listener =
            TcpListener::bind(addr).await.with_context(|| format!("cannot listen on KEYWARD_EDGE_ADDR {addr}"))?;
        let addr = listener.local_addr().context("reading the bound edge address")?;
        tracing::info!(addr = %addr, "edge listening");
        let check = tower::Layer::layer(
            &ObservabilityLayer(Arc::clone(metrics)),
            tonic::service::Routes::new(ext_authz(edge.clone())),
        );
        let router = forward_routes(edge)
            .route_layer(axum::middleware::from_fn(keyward_gateway::name_route))
            .layer(HttpObserveLayer(metrics.http.clone()))
            .route_service(CHECK_PATH, check);
        let incoming = connections::incoming(listener, settings);
        let (shutdown, signal) = oneshot::channel();
        let settings = settings.clone();
        let task = tokio::spawn(async move {
            connections::serve_http(incoming, router, None, &settings, Arc::new(InFlight::default()), signal).await;
        });
        Ok(Self { addr, shutdown, task })
    }

    /// Stops accepting, lets open requests finish until `deadline`, then cuts the rest off.
    pub(crate) async fn stop(self, deadline: tokio::time::Instant) {
        let Self { shutdown, mut task, .. } = self;
        let _ = shutdown.send(());
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
        }
    }
}
