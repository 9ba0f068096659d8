//! The keyward server: the gRPC services, caller authentication, configuration and start-up.

#![forbid(unsafe_code)]

mod activity;
mod audit;
mod audit_service;
mod background;
mod batcher;
mod bootstrap;
mod cache;
pub mod config;
mod connections;
pub mod contract;
mod convert;
mod credit_service;
mod dispatcher;
mod edge;
mod gateway;
mod http_observe;
mod https;
mod jwt;
mod limiter;
mod log_lines;
mod message_limits;
mod metrics;
mod miss_reads;
mod observe;
mod queries;
mod rate_limit_service;
mod role_service;
mod rpc_service;
mod secrets;
mod service;
mod services;
pub mod status;
pub mod telemetry;
mod usage;
mod verifier;
mod webhook_service;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use keyward_core::{environment::Environments, secret::SecretHasher};
use keyward_proto::v1::{
    api_key_service_server::ApiKeyServiceServer, audit_service_server::AuditServiceServer,
    credit_service_server::CreditServiceServer, rate_limit_service_server::RateLimitServiceServer,
    role_service_server::RoleServiceServer, rpc_provider_key_service_server::RpcProviderKeyServiceServer,
    webhook_service_server::WebhookServiceServer,
};
use keyward_store::Store;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Server;

pub use crate::{
    audit_service::AuditServiceImpl,
    config::{Clock, Config},
    credit_service::CreditServiceImpl,
    gateway::{RunningGateway, start_gateway},
    rate_limit_service::RateLimitServiceImpl,
    role_service::RoleServiceImpl,
    rpc_service::RpcProviderKeyServiceImpl,
    service::ApiKeyServiceImpl,
    webhook_service::WebhookServiceImpl,
};
use crate::{
    cache::{CacheSettings, KeyCache},
    usage::UsageRecorder,
    verifier::Verifier,
};

/// Largest header block a call may send (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`).
const MAX_HEADER_LIST_BYTES: u32 = 256 * 1024;

/// A started server.
#[derive(Debug)]
pub struct Running {
    /// The address gRPC listens on (the real port when 0 was asked for).
    pub grpc_addr: SocketAddr,
    /// The address HTTP (`/metrics`) listens on.
    pub http_addr: SocketAddr,
    /// The address of the edge's own listener, when `KEYWARD_EDGE_ADDR` gives it one.
    pub edge_addr: Option<SocketAddr>,
    /// The store the server uses, for tests that inspect it.
    pub store: Store,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    http_shutdown: oneshot::Sender<()>,
    http: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    usage: Arc<UsageRecorder>,
    shutdown_timeout: Duration,
    limiter: Arc<limiter::Limiter>,
    grpc_calls: Arc<activity::InFlight>,
    dispatcher: dispatcher::DispatcherHandle,
    edge_listener: Option<edge::listener::EdgeListener>,
}

/// How long a shutdown waits, once no call is in flight, for a call whose bytes had
/// arrived but which had not reached the services yet.
const SHUTDOWN_SETTLE: Duration = Duration::from_millis(100);

/// How long the last usage flush may take at shutdown, once calls have stopped.
const FINAL_FLUSH_BUDGET: Duration = Duration::from_secs(10);

impl Running {
    /// Stops accepting calls and lets in-flight ones finish within
    /// `KEYWARD_SHUTDOWN_TIMEOUT` (calls still running then are cut off, which rolls
    /// their transactions back); then writes the pending usage within a budget of its
    /// own, so calls that hang never cost a flush interval of counters.
    pub async fn stop(self) -> anyhow::Result<()> {
        let Self {
            shutdown,
            mut server,
            http_shutdown,
            mut http,
            background,
            usage,
            store,
            shutdown_timeout,
            limiter,
            grpc_calls,
            dispatcher,
            edge_listener,
            ..
        } = self;
        let _ = shutdown.send(());
        let _ = http_shutdown.send(());
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        // tonic waits for every connection to close, an idle or silent one too; once no
        // call is in flight there is nothing left worth waiting for.
        let nothing_in_flight = async {
            grpc_calls.drained().await;
            tokio::time::sleep(SHUTDOWN_SETTLE).await;
            grpc_calls.drained().await;
        };
        let served = tokio::select! {
            served = tokio::time::timeout_at(deadline, &mut server) => match served {
                Ok(served) => served.context("server task failed")?.context("gRPC server failed"),
                Err(_) => {
                    server.abort();
                    Err(anyhow::anyhow!("in-flight calls did not finish within KEYWARD_SHUTDOWN_TIMEOUT"))
                }
            },
            () = nothing_in_flight => {
                server.abort();
                Ok(())
            }
        };
        match tokio::time::timeout_at(deadline, &mut http).await {
            Ok(finished) => finished.context("HTTP task failed")?,
            Err(_) => http.abort(),
        }
        if let Some(edge_listener) = edge_listener {
            edge_listener.stop(deadline).await;
        }
        dispatcher.stop().await;
        background.iter().for_each(JoinHandle::abort);
        if tokio::time::timeout(FINAL_FLUSH_BUDGET, usage.flush(&store)).await.is_err() {
            tracing::error!("the last usage flush did not finish within 10 s; its counters are lost");
        }
        // Unused rate-limit tokens go back to their buckets instead of waiting out their window.
        if tokio::time::timeout(FINAL_FLUSH_BUDGET, limiter.give_back()).await.is_err() {
            tracing::warn!("giving rate-limit slices back took over 10 s; the rest return when their window ends");
        }
        served
    }

    /// Writes the usage gathered so far now, instead of at the next interval.
    pub async fn flush_usage(&self) {
        self.usage.flush(&self.store).await;
    }

    /// Waits until the server ends on its own (it does not, unless it fails).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server).await.context("server task failed")?.context("gRPC server failed")
    }
}

/// Opens the database and applies pending migrations.
pub async fn open_store(config: &config::StoreConfig) -> anyhow::Result<Store> {
    if !config.is_postgres() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create KEYWARD_DATA_DIR {}", config.data_dir.display()))?;
    }
    let url = checked_database_url(config)?;
    let pool = keyward_store::PoolSettings {
        max_connections: config.database_max_connections,
        acquire_timeout: config.database_acquire_timeout,
        connect_timeout: config.database_connect_timeout,
    };
    let store = Store::connect(&url, &pool, &config.notify_channel)
        .await
        .map_err(|err| anyhow::anyhow!("cannot open KEYWARD_DATABASE_URL: {}", source_chain(&err)))?;
    store.migrate().await.map_err(|err| anyhow::anyhow!("database migration failed: {}", source_chain(&err)))?;
    Ok(store)
}

fn checked_database_url(config: &config::StoreConfig) -> anyhow::Result<String> {
    let url = config.database_url();
    if !["sqlite:", "postgres://", "postgresql://"].iter().any(|scheme| url.starts_with(scheme)) {
        anyhow::bail!("KEYWARD_DATABASE_URL must start with sqlite:// or postgres://");
    }
    Ok(url)
}

/// An error and its causes on one line, skipping causes its message already repeats.
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// `keyward rotate-master-key`: re-encrypts every RPC provider key under the key in
/// `--new-key-file`; returns how many were re-encrypted.
pub async fn rotate_master_key(args: &config::RotateMasterKeyArgs) -> anyhow::Result<usize> {
    let old = secrets::master_key(&args.master_key, &args.store)?;
    let text = std::fs::read_to_string(&args.new_key_file)
        .with_context(|| format!("cannot read --new-key-file {}", args.new_key_file.display()))?;
    let new = keyward_core::crypto::MasterKey::from_base64(&secrecy::SecretString::from(text.trim().to_owned()))
        .map_err(|problem| anyhow::anyhow!("--new-key-file {problem}"))?;
    let store = open_store(&args.store).await?;
    store.rotate_master_key(&old, &new).await.map_err(|err| anyhow::anyhow!(source_chain(&err)))
}

/// Starts the server: opens and migrates the store, imports the bootstrap admin key,
/// binds the gRPC listener and serves until [`Running::stop`].
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let environments = Environments::new(config.environments.clone(), &config.default_environment)
        .map_err(|problem| anyhow::anyhow!("invalid KEYWARD_ENVIRONMENTS / KEYWARD_DEFAULT_ENVIRONMENT: {problem}"))?;
    checked_database_url(&config.store)?;
    let tls = bootstrap::tls_config(&config.tls)?;
    let https = https::server_config(&config.tls)?;
    let hash_secret = secrets::hash_secret(&config)?;
    let hasher = SecretHasher::new(&hash_secret);
    let master_key = secrets::master_key(&config.master_key, &config.store)?;
    let store = open_store(&config.store).await?;
    store
        .check_master_key(&master_key)
        .await
        .map_err(|err| anyhow::anyhow!("refusing to start: {}", source_chain(&err)))?;
    let environment_names: Vec<String> = environments.names().into_iter().map(str::to_owned).collect();
    bootstrap::bootstrap_admin(&config, &store, &hasher, &environments).await?;

    let cache_settings = CacheSettings {
        capacity: config.cache_capacity,
        ttl: config.cache_ttl,
        negative_ttl: config.negative_cache_ttl,
    };
    let listener = store
        .change_listener()
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen for key changes: {}", source_chain(&err)))?;
    // With other replicas possible, the cache waits for the listener before it is trusted.
    let cache = Arc::new(KeyCache::new(cache_settings, listener.is_some()));
    let metrics = Arc::new(metrics::Metrics::new());
    let units = keyward_core::credit::CountedUnits::new(config.usage_units.iter().cloned())
        .map_err(|err| anyhow::anyhow!("KEYWARD_USAGE_UNITS: {err}"))?;
    let usage = Arc::new(UsageRecorder::new(units, Arc::clone(&metrics)));
    let mut background =
        vec![tokio::spawn(background::flush_usage(store.clone(), Arc::clone(&usage), config.usage_flush_interval))];
    if let Some(listener) = listener {
        background.push(tokio::spawn(background::follow_changes(listener, Arc::clone(&cache), Arc::clone(&metrics))));
    }
    let jwt = match jwt::JwtSettings::from_config(&config.jwt)? {
        Some(settings) => {
            let jwt = Arc::new(jwt::JwtVerifier::new(settings).await?);
            background.push(tokio::spawn(Arc::clone(&jwt).refresh_periodically()));
            Some(jwt)
        }
        None => None,
    };
    // One by default: a batch gathers while the one before commits, and on a database
    // beside the server more workers only split batches (metered.sh: 0.89 of pgbench
    // with one, 0.79 with two).
    let charge_workers = config.charge_workers.max(1);
    let charge_workers = usize::try_from(charge_workers).unwrap_or(1);
    let charge_batch = usize::try_from(config.charge_batch).unwrap_or(1);
    let (charger, workers) = batcher::Batcher::start(store.clone(), charge_workers, charge_batch, Arc::clone(&metrics));
    background.extend(workers);
    // Holds take the same path: a hold costs what a metered verify costs.
    let (holder, workers) = batcher::Batcher::start(store.clone(), charge_workers, charge_batch, Arc::clone(&metrics));
    background.extend(workers);
    background.push(tokio::spawn(background::apply_refills(
        store.clone(),
        config.clock.clone(),
        config.refill_interval,
    )));
    let limiter = Arc::new(limiter::Limiter::new(
        store.clone(),
        config.rate_limit_lease,
        config.clock.clone(),
        Arc::clone(&metrics),
    ));
    background.push(tokio::spawn(background::sweep_rate_slices(Arc::clone(&limiter))));
    let verifier = Verifier::new(
        store.clone(),
        hasher,
        environments.clone(),
        Arc::clone(&cache),
        Arc::clone(&usage),
        jwt,
        Arc::clone(&metrics),
        charger,
        holder,
        Arc::clone(&limiter),
    );
    let credit_environments = environments.clone();
    let settings = keyward_core::cases::KeySettings {
        environments,
        undelete_retention: config.undelete_retention,
        max_rotation_grace: config.max_rotation_grace,
    };
    let dispatcher = dispatcher::Dispatcher::new(
        store.clone(),
        master_key.clone(),
        dispatcher::DeliverySettings::from_config(&config.events),
        config.clock.clone(),
        Arc::clone(&metrics),
    )?;
    let dispatcher = dispatcher.spawn();
    background.push(tokio::spawn(background::sweep_expiry(
        store.clone(),
        config.clock.clone(),
        config.events.expiry_sweep_interval,
        config.events.expiring_lead_time,
    )));
    background.push(tokio::spawn(background::expire_holds(
        store.clone(),
        config.clock.clone(),
        config.events.hold_sweep_interval,
    )));
    let audit_service = AuditServiceImpl::new(store.clone(), verifier.clone());
    let webhook_service =
        WebhookServiceImpl::new(store.clone(), verifier.clone(), master_key.clone(), config.events.webhook_allow_http);
    let rpc_service = RpcProviderKeyServiceImpl::new(store.clone(), verifier.clone(), master_key);
    let credit_service = CreditServiceImpl::new(store.clone(), verifier.clone(), credit_environments);
    let rate_limit_service = RateLimitServiceImpl::new(store.clone(), verifier.clone());
    let role_service = RoleServiceImpl::new(store.clone(), verifier.clone());
    // The edge verifies with the same verifier as VerifyApiKey: one cache, one path.
    let edge = config.edge.settings()?.map(|settings| edge::Edge::new(settings, verifier.clone()));
    if let (Some(edge), Some(path)) = (&edge, &config.edge.edge_routes) {
        background.push(tokio::spawn(background::reload_routes(edge.clone(), path.clone())));
    }
    // On a listener of its own, the edge leaves the main ones.
    let (edge, edge_listener) = match (edge, config.edge.edge_addr) {
        (Some(edge), Some(addr)) => {
            (None, Some(edge::listener::EdgeListener::start(addr, edge, &metrics, &config.connections).await?))
        }
        (edge, _) => (edge, None),
    };
    let edge_addr = edge_listener.as_ref().map(|listener| listener.addr);
    let service = ApiKeyServiceImpl::new(store.clone(), verifier, settings);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    background::report_health(&health_reporter, tonic_health::ServingStatus::Serving).await;
    background.push(tokio::spawn(background::probe_health(store.clone(), health_reporter, config.health_interval)));

    // The REST gateway calls the same services in process: authentication and validation
    // live in them, so both surfaces pass through them alike.
    let in_process = tonic::service::Routes::new(ApiKeyServiceServer::new(service.clone()))
        // Masumi's health route answers from the same health as gRPC clients see.
        .add_service(health_service.clone())
        .add_service(RpcProviderKeyServiceServer::new(rpc_service.clone()))
        .add_service(CreditServiceServer::new(credit_service.clone()))
        .add_service(RateLimitServiceServer::new(rate_limit_service.clone()))
        .add_service(AuditServiceServer::new(audit_service.clone()))
        .add_service(WebhookServiceServer::new(webhook_service.clone()))
        .add_service(RoleServiceServer::new(role_service.clone()));
    // Through the same observability layer as the socket, so REST calls are counted and
    // traced alike and the `traceparent` the gateway forwards starts the server span.
    let in_process = tower::Layer::layer(&observe::ObservabilityLayer(Arc::clone(&metrics)), in_process);
    let gateway = keyward_gateway::router(
        keyward_gateway::Upstream::in_process(in_process),
        keyward_gateway::Settings {
            field_rules: contract::field_rules(&environment_names),
            ..config.rest.gateway_settings()
        },
    );

    let reflection_v1 = services::reflection().build_v1().context("building reflection v1")?;
    let reflection_v1alpha = services::reflection().build_v1alpha().context("building reflection v1alpha")?;

    let listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on KEYWARD_GRPC_ADDR {}", config.grpc_addr))?;
    let grpc_addr = listener.local_addr().context("reading the bound gRPC address")?;
    tracing::info!(addr = %grpc_addr, "grpc listening");

    let (shutdown, shutdown_signal) = oneshot::channel::<()>();
    let incoming = connections::incoming(listener, &config.connections);
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on KEYWARD_HTTP_ADDR {}", config.http_addr))?;
    let http_addr = http_listener.local_addr().context("reading the bound HTTP address")?;
    tracing::info!(addr = %http_addr, "http listening");
    let (http_shutdown, http_signal) = oneshot::channel::<()>();
    let exposition = (Arc::clone(&metrics), store.clone(), Arc::clone(&cache));
    let router = gateway.route(
        "/metrics",
        axum::routing::get(move || {
            let (metrics, store, cache) = exposition.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics.render(&store, cache.key_count()),
                )
            }
        }),
    );
    let router = match &edge {
        Some(edge) => router.merge(edge::listener::forward_routes(edge.clone())),
        None => router,
    };
    let router = router
        .route_layer(axum::middleware::from_fn(keyward_gateway::name_route))
        .layer(http_observe::HttpObserveLayer(metrics.http.clone()));
    let http_incoming = connections::incoming(http_listener, &config.connections);
    let connection_settings = config.connections.clone();
    let https = https.map(|tls| (tls, config.tls.tls_handshake_timeout));
    let http_calls = Arc::new(activity::InFlight::default());
    let http = tokio::spawn(async move {
        connections::serve_http(http_incoming, router, https, &connection_settings, http_calls, http_signal).await;
    });
    let grpc_calls = Arc::new(activity::InFlight::default());

    let mut builder = Server::builder()
        // Large enough that an oversized credential reaches authentication and is refused
        // there with UNAUTHENTICATED, instead of the connection being torn down.
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_keepalive_interval(Some(config.connections.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(config.connections.http2_keepalive_timeout))
        .max_concurrent_streams(config.connections.max_concurrent_streams)
        .layer(activity::ActivityLayer(Arc::clone(&grpc_calls)))
        .layer(observe::ObservabilityLayer(Arc::clone(&metrics)))
        .layer(message_limits::MessageLimitsLayer::new(config.connections.request_buffer_bytes));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).context("KEYWARD_TLS_CERT / KEYWARD_TLS_KEY")?;
    }
    let router = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ApiKeyServiceServer::new(service))
        .add_service(RpcProviderKeyServiceServer::new(rpc_service))
        .add_service(CreditServiceServer::new(credit_service))
        .add_service(RateLimitServiceServer::new(rate_limit_service))
        .add_service(AuditServiceServer::new(audit_service))
        .add_service(WebhookServiceServer::new(webhook_service))
        .add_service(RoleServiceServer::new(role_service))
        .add_optional_service(edge.map(edge::listener::ext_authz));
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = shutdown_signal.await;
    }));
    let shutdown_timeout = config.shutdown_timeout;
    Ok(Running {
        grpc_addr,
        http_addr,
        edge_addr,
        store,
        shutdown,
        server,
        http_shutdown,
        http,
        background,
        usage,
        shutdown_timeout,
        limiter,
        grpc_calls,
        dispatcher,
        edge_listener,
    })
}
