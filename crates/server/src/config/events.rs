//! Settings of events and webhook deliveries.

use std::time::Duration;

use clap::Args;

/// How events are found and delivered.
#[derive(Debug, Clone, Args)]
pub struct EventConfig {
    /// Allows webhook endpoints at `http://` URLs and at addresses that are not globally
    /// reachable (loopback, private, link-local, …): for tests and closed networks only.
    /// Applies to stored endpoints too, at each delivery.
    #[arg(long, env = "KEYWARD_WEBHOOK_ALLOW_HTTP", default_value_t = false)]
    pub webhook_allow_http: bool,
    /// Longest one delivery may take, connecting, sending and reading the answer
    /// together; a receiver slower than this counts as a failed attempt.
    #[arg(long, env = "KEYWARD_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = super::parse_positive_duration)]
    pub webhook_timeout: Duration,
    /// Waits before each retry of a failed delivery, comma-separated (the first attempt
    /// is made at once); after the last, the delivery is given up. The short first steps
    /// bring a receiver that was away for seconds its events within seconds; the long
    /// last ones carry a delivery through about a day of outage.
    #[arg(
        long,
        env = "KEYWARD_WEBHOOK_RETRY_SCHEDULE",
        value_delimiter = ',',
        default_value = "5s,30s,2m,10m,30m,2h,5h,10h,10h",
        value_parser = humantime::parse_duration
    )]
    pub webhook_retry_schedule: Vec<Duration>,
    /// Failed attempts in a row after which an endpoint is marked failing (deliveries go
    /// on by their schedules; a success clears the mark).
    #[arg(long, env = "KEYWARD_WEBHOOK_FAILURE_THRESHOLD", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_failure_threshold: u32,
    /// How often each replica looks for due deliveries.
    #[arg(long, env = "KEYWARD_WEBHOOK_POLL_INTERVAL", default_value = "1s", value_parser = super::parse_positive_duration)]
    pub webhook_poll_interval: Duration,
    /// Most deliveries one replica posts at once.
    #[arg(long, env = "KEYWARD_WEBHOOK_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub webhook_concurrency: u32,
    /// Most deliveries one replica posts to one endpoint at once (at most
    /// `KEYWARD_WEBHOOK_CONCURRENCY`): the slots a slow or hanging receiver can hold, so
    /// the other endpoints' deliveries go on.
    #[arg(long, env = "KEYWARD_WEBHOOK_ENDPOINT_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub webhook_endpoint_concurrency: u32,
    /// How long before its expiry a key's `api_key.expiring` event is written.
    #[arg(long, env = "KEYWARD_EXPIRING_LEAD_TIME", default_value = "7d", value_parser = humantime::parse_duration)]
    pub expiring_lead_time: Duration,
    /// How often each replica looks for keys that expire soon or have expired; an
    /// expiry event is written within this long of its time, once however many replicas run.
    #[arg(long, env = "KEYWARD_EXPIRY_SWEEP_INTERVAL", default_value = "10s", value_parser = super::parse_positive_duration)]
    pub expiry_sweep_interval: Duration,
    /// How often each replica releases credit holds past their expiry: a hold's credits
    /// come back (with its `credits.hold_expired` event) within this long of its expiry,
    /// once however many replicas run.
    #[arg(long, env = "KEYWARD_HOLD_SWEEP_INTERVAL", default_value = "5s", value_parser = super::parse_positive_duration)]
    pub hold_sweep_interval: Duration,
}
