//! The loops that run beside the services for the life of the server: following key
//! changes, flushing usage, applying refills, sweeping rate-limit slices and key expiries, and reporting
//! health from the database's reachability.

use std::{sync::Arc, time::Duration};

use keyward_store::Store;
use tonic_health::server::HealthReporter;
use tracing::Instrument;

use crate::{cache::KeyCache, config::Clock, limiter, metrics, services, telemetry::PollSpans, usage::UsageRecorder};

/// Applies key changes announced by any replica to the local cache.
pub(crate) async fn follow_changes(
    mut listener: keyward_store::ChangeListener,
    cache: Arc<KeyCache>,
    metrics: Arc<metrics::Metrics>,
) {
    loop {
        match listener.next().await {
            keyward_store::Change::Key(id) => {
                metrics.invalidation_received();
                cache.evict_key(id);
            }
            keyward_store::Change::Owner(owner) => {
                metrics.invalidation_received();
                cache.evict_owner(&owner);
            }
            keyward_store::Change::Lost => cache.suspend(),
            keyward_store::Change::Resynced => cache.resync(),
        }
    }
}

/// How often the routes file is looked at for a change.
const ROUTES_POLL: Duration = Duration::from_secs(1);

/// Reloads the edge's routes when the file changes or on SIGHUP. A bad file is refused
/// with its line and reason, and the rules in force stay; requests in flight finish under
/// the table they started with.
pub(crate) async fn reload_routes(edge: crate::edge::Edge, path: std::path::PathBuf) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch for SIGHUP; the routes file still reloads when it changes");
            None
        }
    };
    let mut seen = crate::config::routes_stamp(&path);
    loop {
        let hangup = async {
            match hangups.as_mut() {
                Some(hangups) => hangups.recv().await,
                None => std::future::pending().await,
            }
        };
        let asked = tokio::select! {
            _ = hangup => true,
            () = tokio::time::sleep(ROUTES_POLL) => false,
        };
        let stamp = crate::config::routes_stamp(&path);
        if !asked && stamp == seen {
            continue;
        }
        seen = stamp;
        match crate::config::read_routes(&path) {
            Ok(routes) => {
                let count = routes.count();
                edge.replace_routes(routes);
                tracing::info!(routes = count, file = %path.display(), "edge routes reloaded");
            }
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "edge routes not reloaded; the previous rules stay")
            }
        }
    }
}

/// Drops the rate-limit slices of buckets no longer in use, so memory follows the buckets served.
pub(crate) async fn sweep_rate_slices(limiter: Arc<limiter::Limiter>) {
    loop {
        tokio::time::sleep(limiter.sweep_interval()).await;
        limiter.sweep();
    }
}

/// Writes the usage gathered in memory on an interval.
pub(crate) async fn flush_usage(store: Store, usage: Arc<UsageRecorder>, interval: Duration) {
    let mut spans = PollSpans::new("flush usage");
    loop {
        tokio::time::sleep(interval).await;
        usage.flush(&store).instrument(spans.next()).await;
    }
}

/// Applies due credit refills on an interval.
pub(crate) async fn apply_refills(store: Store, clock: Clock, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut spans = PollSpans::new("apply refills");
    loop {
        ticks.tick().await;
        match store.apply_due_refills(clock.now()).instrument(spans.next()).await {
            Ok(0) => {}
            Ok(applied) => tracing::info!(applied, "credit refills applied"),
            Err(err) => tracing::warn!(error = %err, "applying credit refills failed; retrying at the next interval"),
        }
    }
}

/// Writes the expiry events of keys on an interval (once across replicas).
pub(crate) async fn sweep_expiry(store: Store, clock: Clock, interval: Duration, lead: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut spans = PollSpans::new("sweep expiry");
    loop {
        ticks.tick().await;
        match store.sweep_expiry(clock.now(), lead).instrument(spans.next()).await {
            Ok(0) => {}
            Ok(written) => tracing::info!(written, "expiry events written"),
            Err(err) => {
                tracing::warn!(error = %err, "sweeping for expiring keys failed; retrying at the next interval")
            }
        }
    }
}

/// Releases expired credit holds on an interval (each once across replicas).
pub(crate) async fn expire_holds(store: Store, clock: Clock, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store.expire_holds(clock.now()).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "expired credit holds released"),
            Err(err) => {
                tracing::warn!(error = %err, "releasing expired credit holds failed; retrying at the next interval")
            }
        }
    }
}

/// Reports NOT_SERVING while the database does not answer, SERVING again once it does.
pub(crate) async fn probe_health(store: Store, reporter: HealthReporter, interval: Duration) {
    let mut serving = true;
    let mut spans = PollSpans::new("probe health");
    loop {
        tokio::time::sleep(interval).await;
        let healthy = store.probe().instrument(spans.next()).await;
        if healthy != serving {
            serving = healthy;
            if healthy {
                tracing::info!("database reachable again; serving");
                report_health(&reporter, tonic_health::ServingStatus::Serving).await;
            } else {
                tracing::error!("database unreachable; not serving");
                report_health(&reporter, tonic_health::ServingStatus::NotServing).await;
            }
        }
    }
}

/// Sets the status of the server as a whole (`""`) and of every keyward service the
/// protos declare, so a service added later cannot be left out.
pub(crate) async fn report_health(reporter: &HealthReporter, status: tonic_health::ServingStatus) {
    for service in services::keyward_services() {
        reporter.set_service_status(service, status).await;
    }
    reporter.set_service_status("", status).await;
}
