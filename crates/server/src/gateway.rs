//! `keyward gateway`: the REST gateway alone, over a channel to a keyward server, with
//! `/metrics` of its own (its HTTP requests and its process).

use std::net::SocketAddr;

use anyhow::Context;
use keyward_gateway::Upstream;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Endpoint;

use crate::{config::GatewayConfig, connections};

/// A started standalone gateway.
#[derive(Debug)]
pub struct RunningGateway {
    /// The address it listens on (the real port when 0 was asked for).
    pub addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl RunningGateway {
    /// Stops accepting requests, lets in-flight ones finish and waits for the end.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.server.await.context("gateway task failed")
    }

    /// Waits until the gateway ends on its own (it does not, unless it fails).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server).await.context("gateway task failed")
    }
}

/// Binds the listener and serves the REST routes, calling `--upstream` lazily: the
/// upstream may be down at start or later; requests then fail with 503 and succeed
/// again once it is back, without a restart.
pub async fn start_gateway(config: GatewayConfig) -> anyhow::Result<RunningGateway> {
    let endpoint = Endpoint::from_shared(config.upstream.clone())
        .with_context(|| format!("KEYWARD_UPSTREAM {} is not a URL", config.upstream))?
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(5));
    anyhow::ensure!(
        config.upstream.starts_with("http://"),
        "KEYWARD_UPSTREAM must be an http:// URL (TLS to the upstream is not supported yet)"
    );
    let channel = endpoint.connect_lazy();
    // The upstream's environments are not known here: the document lists none.
    let settings =
        keyward_gateway::Settings { field_rules: crate::contract::field_rules(&[]), ..config.rest.gateway_settings() };
    // Its own metrics: its HTTP requests and its process (the services' are the upstream's).
    let registry = prometheus::Registry::new();
    let http_metrics = crate::http_observe::HttpMetrics::register(&registry);
    crate::metrics::register_process(&registry);
    let router = keyward_gateway::router(Upstream::channel(channel), settings)
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = crate::metrics::encode(&registry);
                async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            }),
        )
        .route_layer(axum::middleware::from_fn(keyward_gateway::name_route))
        .layer(crate::http_observe::HttpObserveLayer(http_metrics));
    let listener = TcpListener::bind(config.gateway_addr)
        .await
        .with_context(|| format!("cannot listen on KEYWARD_GATEWAY_ADDR {}", config.gateway_addr))?;
    let addr = listener.local_addr().context("reading the bound gateway address")?;
    tracing::info!(addr = %addr, upstream = %config.upstream, "gateway listening");
    let (shutdown, signal) = oneshot::channel::<()>();
    let incoming = connections::incoming(listener, &config.connections);
    let server = tokio::spawn(async move {
        let calls = std::sync::Arc::new(crate::activity::InFlight::default());
        connections::serve_http(incoming, router, None, &config.connections, calls, signal).await;
    });
    Ok(RunningGateway { addr, shutdown, server })
}
