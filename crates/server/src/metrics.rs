//! Prometheus metrics, served as text on the HTTP listener's `/metrics`.
//!
//! What every call or verification counts is resolved to its series once (a method's
//! `Ok` counter and latency histogram on its first call, every verdict and cache result
//! up front), so the hot path increments a counter without hashing label values.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use keyward_core::verify::Verdict;
use keyward_store::Store;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Label of the calls to paths the server has no method for.
const UNKNOWN_METHOD: &str = "other";

/// The call metrics of one method: its label, its latency histogram once it has been
/// called, and its `Ok` counter once a call succeeded (no series appears before it counts).
#[derive(Debug)]
pub(crate) struct MethodMetrics {
    pub(crate) name: &'static str,
    ok: OnceLock<IntCounter>,
    latency: OnceLock<Histogram>,
}

/// Where a verification cache lookup ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CacheResult {
    Hit,
    NegativeHit,
    Miss,
}

impl CacheResult {
    const ALL: [Self; 3] = [Self::Hit, Self::NegativeHit, Self::Miss];

    fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::NegativeHit => "negative_hit",
            Self::Miss => "miss",
        }
    }
}

/// Every verdict, in the order of [`verdict_slot`].
const VERDICTS: [Verdict; 10] = [
    Verdict::Valid,
    Verdict::Malformed,
    Verdict::NotFound,
    Verdict::Inactive,
    Verdict::Revoked,
    Verdict::Expired,
    Verdict::InsufficientScope,
    Verdict::NetworkNotAllowed,
    Verdict::UsageExceeded,
    Verdict::RateLimited,
];

fn verdict_slot(verdict: Verdict) -> usize {
    match verdict {
        Verdict::Valid => 0,
        Verdict::Malformed => 1,
        Verdict::NotFound => 2,
        Verdict::Inactive => 3,
        Verdict::Revoked => 4,
        Verdict::Expired => 5,
        Verdict::InsufficientScope => 6,
        Verdict::NetworkNotAllowed => 7,
        Verdict::UsageExceeded => 8,
        Verdict::RateLimited => 9,
    }
}

/// Every metric keyward exports.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Every served method by `package.Service/Method`, and the one for all other paths.
    methods: HashMap<&'static str, Arc<MethodMetrics>, foldhash::fast::RandomState>,
    unknown_method: Arc<MethodMetrics>,
    /// By [`verdict_slot`].
    verifications: [IntCounter; VERDICTS.len()],
    /// By [`CacheResult`] order.
    cache_lookups: [IntCounter; CacheResult::ALL.len()],
    cache_keys: IntGauge,
    cache_refreshes: IntCounter,
    usage_dropped: IntCounter,
    pool: IntGaugeVec,
    invalidations: IntCounter,
    credits_charged: IntCounterVec,
    charge_batches: prometheus::Histogram,
    hold_batches: prometheus::Histogram,
    miss_read_batches: prometheus::Histogram,
    rate_leases: IntCounter,
    rate_tokens_leased: IntCounter,
    rate_tokens_returned: IntCounter,
    webhook_deliveries: IntCounterVec,
    webhook_events: IntGaugeVec,
    outbox_backlog: IntGauge,
    outbox_oldest_age: prometheus::Gauge,
    /// Requests to the HTTP listeners, by route.
    pub(crate) http: crate::http_observe::HttpMetrics,
}

fn registered<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

impl Metrics {
    /// Counts and times one call to the services, by method and status code.
    pub(crate) fn record_call(&self, method: &MethodMetrics, code: tonic::Code, elapsed: std::time::Duration) {
        if code == tonic::Code::Ok {
            method.ok.get_or_init(|| self.requests.with_label_values(&[method.name, code_label(code)])).inc();
        } else {
            self.requests.with_label_values(&[method.name, code_label(code)]).inc();
        }
        let latency = method.latency.get_or_init(|| self.latency.with_label_values(&[method.name]));
        latency.observe(elapsed.as_secs_f64());
    }

    /// The metrics of the method a request path names (`/package.Service/Method`); any
    /// path the server has no method for shares one label, so made-up paths cannot grow
    /// the label set.
    pub(crate) fn method(&self, path: &str) -> Arc<MethodMetrics> {
        let method = path.strip_prefix('/').and_then(|name| self.methods.get(name));
        Arc::clone(method.unwrap_or(&self.unknown_method))
    }

    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "keyward_grpc_requests_total",
                "calls to the services by method and status code, over gRPC or from the REST gateway",
            ),
            &["method", "code"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("keyward_grpc_request_duration_seconds", "gRPC call latency by method").buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["method"],
        )
        .expect("valid metric");
        let verifications = IntCounterVec::new(
            Opts::new("keyward_verifications_total", "VerifyApiKey answers by verification code"),
            &["outcome"],
        )
        .expect("valid metric");
        let cache_lookups = IntCounterVec::new(
            Opts::new("keyward_cache_lookups_total", "verification cache lookups by result (hit, negative_hit, miss)"),
            &["result"],
        )
        .expect("valid metric");
        let cache_keys =
            IntGauge::new("keyward_cache_keys", "keys held by the verification cache").expect("valid metric");
        let pool = IntGaugeVec::new(
            Opts::new("keyward_db_pool_connections", "database pool connections by state (in_use, idle)"),
            &["state"],
        )
        .expect("valid metric");
        let cache_refreshes = IntCounter::new(
            "keyward_cache_refreshes_total",
            "cached keys read again in the background before their entry expired (refresh-ahead)",
        )
        .expect("valid metric");
        let usage_dropped = IntCounter::new(
            "keyward_usage_dropped_total",
            "usage counter entries not counted because the pending pile was full (flushes failing)",
        )
        .expect("valid metric");
        let invalidations = IntCounter::new(
            "keyward_invalidation_notifications_total",
            "key-change notifications received from replicas (LISTEN/NOTIFY)",
        )
        .expect("valid metric");
        let credits_charged = IntCounterVec::new(
            Opts::new(
                "keyward_credits_charged_total",
                "credits in valid metered VerifyApiKey answers, by unit (a replayed request_id counts again)",
            ),
            &["unit"],
        )
        .expect("valid metric");
        let batch_buckets = vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
        let charge_batches = prometheus::Histogram::with_opts(
            HistogramOpts::new("keyward_charge_batch_size", "charges applied per database transaction")
                .buckets(batch_buckets.clone()),
        )
        .expect("valid metric");
        let hold_batches = prometheus::Histogram::with_opts(
            HistogramOpts::new("keyward_hold_batch_size", "credit holds placed per database transaction")
                .buckets(batch_buckets.clone()),
        )
        .expect("valid metric");
        let miss_read_batches = prometheus::Histogram::with_opts(
            HistogramOpts::new("keyward_cache_miss_read_batch_size", "cache misses read per database statement")
                .buckets(batch_buckets),
        )
        .expect("valid metric");
        let rate_leases = IntCounter::new(
            "keyward_rate_limit_leases_total",
            "statements that leased rate-limit tokens from a shared bucket (or gave a slice back)",
        )
        .expect("valid metric");
        let rate_tokens_leased =
            IntCounter::new("keyward_rate_limit_tokens_leased_total", "rate-limit tokens leased from shared buckets")
                .expect("valid metric");
        let rate_tokens_returned = IntCounter::new(
            "keyward_rate_limit_tokens_returned_total",
            "unused rate-limit tokens given back to shared buckets",
        )
        .expect("valid metric");
        let webhook_deliveries = IntCounterVec::new(
            Opts::new(
                "keyward_webhook_deliveries_total",
                "webhook delivery attempts of this replica by outcome (delivered, failed and retried later, given_up)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let webhook_events = IntGaugeVec::new(
            Opts::new("keyward_webhook_events_created", "events written to the outbox by every replica, by type"),
            &["type"],
        )
        .expect("valid metric");
        let outbox_backlog =
            IntGauge::new("keyward_webhook_outbox_backlog", "webhook deliveries not yet done nor given up")
                .expect("valid metric");
        let outbox_oldest_age = prometheus::Gauge::new(
            "keyward_webhook_outbox_oldest_age_seconds",
            "age of the event of the oldest pending webhook delivery (0 when none is pending)",
        )
        .expect("valid metric");
        let method =
            |name: &'static str| Arc::new(MethodMetrics { name, ok: OnceLock::new(), latency: OnceLock::new() });
        let http = crate::http_observe::HttpMetrics::register(&registry);
        register_process(&registry);
        let verifications = registered(&registry, verifications);
        let cache_lookups = registered(&registry, cache_lookups);
        Self {
            methods: crate::services::methods().map(|name| (name, method(name))).collect(),
            unknown_method: method(UNKNOWN_METHOD),
            verifications: VERDICTS.map(|verdict| verifications.with_label_values(&[crate::usage::outcome(verdict)])),
            cache_lookups: CacheResult::ALL.map(|result| cache_lookups.with_label_values(&[result.label()])),
            webhook_deliveries: registered(&registry, webhook_deliveries),
            webhook_events: registered(&registry, webhook_events),
            outbox_backlog: registered(&registry, outbox_backlog),
            outbox_oldest_age: registered(&registry, outbox_oldest_age),
            rate_leases: registered(&registry, rate_leases),
            rate_tokens_leased: registered(&registry, rate_tokens_leased),
            rate_tokens_returned: registered(&registry, rate_tokens_returned),
            credits_charged: registered(&registry, credits_charged),
            charge_batches: registered(&registry, charge_batches),
            hold_batches: registered(&registry, hold_batches),
            miss_read_batches: registered(&registry, miss_read_batches),
            requests: registered(&registry, requests),
            latency: registered(&registry, latency),
            cache_keys: registered(&registry, cache_keys),
            cache_refreshes: registered(&registry, cache_refreshes),
            usage_dropped: registered(&registry, usage_dropped),
            pool: registered(&registry, pool),
            invalidations: registered(&registry, invalidations),
            http,
            registry,
        }
    }

    pub(crate) fn verified(&self, verdict: Verdict) {
        self.verifications[verdict_slot(verdict)].inc();
    }

    pub(crate) fn usage_dropped(&self, entries: u64) {
        self.usage_dropped.inc_by(entries);
    }

    pub(crate) fn charged(&self, credits: &[keyward_core::credit::Credit]) {
        for credit in credits {
            self.credits_charged.with_label_values(&[credit.unit.as_str()]).inc_by(credit.amount.unsigned_abs());
        }
    }

    pub(crate) fn rate_leased(&self, returned: i64, leased: i64) {
        self.rate_leases.inc();
        self.rate_tokens_returned.inc_by(returned.unsigned_abs());
        self.rate_tokens_leased.inc_by(leased.unsigned_abs());
    }

    pub(crate) fn webhook_delivered(&self, outcome: &'static str) {
        self.webhook_deliveries.with_label_values(&[outcome]).inc();
    }

    pub(crate) fn outbox(&self, pending: i64, oldest_age_seconds: f64) {
        self.outbox_backlog.set(pending);
        self.outbox_oldest_age.set(oldest_age_seconds);
    }

    pub(crate) fn events_written(&self, counts: &[(String, i64)]) {
        for (kind, count) in counts {
            self.webhook_events.with_label_values(&[kind.as_str()]).set(*count);
        }
    }

    pub(crate) fn charge_batch(&self, size: usize) {
        self.charge_batches.observe(size as f64);
    }

    pub(crate) fn hold_batch(&self, size: usize) {
        self.hold_batches.observe(size as f64);
    }

    pub(crate) fn miss_read_batch(&self, size: usize) {
        self.miss_read_batches.observe(size as f64);
    }

    pub(crate) fn cache_lookup(&self, result: CacheResult) {
        self.cache_lookups[result as usize].inc();
    }

    pub(crate) fn cache_refreshed(&self) {
        self.cache_refreshes.inc();
    }

    pub(crate) fn invalidation_received(&self) {
        self.invalidations.inc();
    }

    /// The text exposition, with gauges sampled now.
    pub(crate) fn render(&self, store: &Store, cache_keys: u64) -> String {
        self.cache_keys.set(i64::try_from(cache_keys).unwrap_or(i64::MAX));
        let (in_use, idle) = store.pool_connections();
        self.pool.with_label_values(&["in_use"]).set(i64::from(in_use));
        self.pool.with_label_values(&["idle"]).set(i64::from(idle));
        encode(&self.registry)
    }
}

/// The process's own `process_*` metrics (CPU seconds, resident memory, open and
/// maximum file descriptors, threads, start time), read from `/proc` at each scrape.
pub(crate) fn register_process(registry: &Registry) {
    registry
        .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
        .expect("metric names are unique");
}

/// The text exposition of `registry`.
pub(crate) fn encode(registry: &Registry) -> String {
    let mut out = Vec::new();
    if let Err(err) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::error!(error = %err, "could not encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The code's name as the `code` label shows it, without formatting per call.
fn code_label(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "Ok",
        tonic::Code::Cancelled => "Cancelled",
        tonic::Code::Unknown => "Unknown",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::DeadlineExceeded => "DeadlineExceeded",
        tonic::Code::NotFound => "NotFound",
        tonic::Code::AlreadyExists => "AlreadyExists",
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::ResourceExhausted => "ResourceExhausted",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::Aborted => "Aborted",
        tonic::Code::OutOfRange => "OutOfRange",
        tonic::Code::Unimplemented => "Unimplemented",
        tonic::Code::Internal => "Internal",
        tonic::Code::Unavailable => "Unavailable",
        tonic::Code::DataLoss => "DataLoss",
        tonic::Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_keep_their_name() {
        let metrics = Metrics::new();
        let label = |path: &str| metrics.method(path).name;
        assert_eq!(label("/keyward.v1.ApiKeyService/VerifyApiKey"), "keyward.v1.ApiKeyService/VerifyApiKey");
        assert_eq!(label("/keyward.v1.CreditService/GetUsage"), "keyward.v1.CreditService/GetUsage");
        assert_eq!(label("/grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check");
        assert_ne!(label("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), UNKNOWN_METHOD);
        assert_ne!(label("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"), UNKNOWN_METHOD);
        assert_eq!(label("/keyward.v1.ApiKeyService/Invented"), UNKNOWN_METHOD);
        assert_eq!(label("/keyward.v1.ApiKeyService"), UNKNOWN_METHOD);
        assert_eq!(label("keyward.v1.ApiKeyService/VerifyApiKey"), UNKNOWN_METHOD);
    }
}
