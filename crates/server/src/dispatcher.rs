//! The webhook dispatcher every replica runs: it claims due deliveries (one statement; no
//! transaction stays open while it posts) as slots free up, within a bound in all and a
//! smaller one per endpoint, signs each as the Standard Webhooks specification says,
//! posts it with a timeout and no redirects, and records the outcome with the next
//! attempt's time from the retry schedule.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use keyward_core::{
    address::internal_address,
    crypto::MasterKey,
    validate::Checks,
    webhook::{MAX_EXCERPT_BYTES, Outcome, RetrySchedule, excerpt},
};
use keyward_store::{AttemptResult, Claimed, Room, Store};
use secrecy::ExposeSecret;
use tokio::{
    sync::oneshot,
    task::{JoinHandle, JoinSet},
};
use uuid::Uuid;

use crate::{config::Clock, metrics::Metrics};

/// Time a claim outlives the delivery timeout, so a slow post is cut off well before
/// another replica may take the delivery over.
const CLAIM_MARGIN: Duration = Duration::from_secs(30);
/// How often the outbox's backlog is measured for the metrics.
const BACKLOG_INTERVAL: Duration = Duration::from_secs(5);
/// How long posts in flight at shutdown may go on before they are cut off.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// How long handing back the claims of cut-off posts may take.
const HAND_BACK_BUDGET: Duration = Duration::from_secs(2);

static RECORD_FAILURE_LINES: crate::log_lines::LineThrottle = crate::log_lines::LineThrottle::new();

/// What the dispatcher goes by.
#[derive(Debug, Clone)]
pub(crate) struct DeliverySettings {
    pub(crate) timeout: Duration,
    pub(crate) schedule: RetrySchedule,
    pub(crate) failure_threshold: i64,
    pub(crate) poll_interval: Duration,
    pub(crate) concurrency: u64,
    pub(crate) per_endpoint: u64,
    pub(crate) allow_internal: bool,
}

impl DeliverySettings {
    pub(crate) fn from_config(config: &crate::config::EventConfig) -> Self {
        Self {
            timeout: config.webhook_timeout,
            schedule: RetrySchedule::new(config.webhook_retry_schedule.clone()),
            failure_threshold: i64::from(config.webhook_failure_threshold),
            poll_interval: config.webhook_poll_interval,
            concurrency: u64::from(config.webhook_concurrency),
            per_endpoint: u64::from(config.webhook_endpoint_concurrency.min(config.webhook_concurrency)),
            allow_internal: config.webhook_allow_http,
        }
    }
}

/// The posts this replica has in flight, and what each holds.
#[derive(Default)]
struct InFlight {
    posts: JoinSet<()>,
    held: HashMap<tokio::task::Id, Held>,
    per_endpoint: HashMap<Uuid, u64>,
}

/// The claim a post holds.
struct Held {
    delivery_id: i64,
    endpoint_id: Uuid,
    claimed_until: chrono::DateTime<chrono::Utc>,
}

impl InFlight {
    fn len(&self) -> u64 {
        self.held.len() as u64
    }

    /// Frees the slot of a post that ended (recorded, or failed to record: its claim lapses).
    fn end(&mut self, ended: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let post = match ended {
            Ok((post, ())) => post,
            Err(err) => err.id(),
        };
        let Some(held) = self.held.remove(&post) else { return };
        if let Some(posts) = self.per_endpoint.get_mut(&held.endpoint_id) {
            *posts -= 1;
            if *posts == 0 {
                self.per_endpoint.remove(&held.endpoint_id);
            }
        }
    }
}

/// A running dispatcher.
#[derive(Debug)]
pub(crate) struct DispatcherHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl DispatcherHandle {
    /// Stops claiming, lets posts in flight end within [`STOP_GRACE`] and hands back the
    /// claims of the rest.
    pub(crate) async fn stop(self) {
        let Self { stop, mut task } = self;
        let _ = stop.send(());
        // The hand-back is one statement; a database that does not answer lets the claims
        // lapse instead of holding up the shutdown.
        if tokio::time::timeout(STOP_GRACE + HAND_BACK_BUDGET, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Posts due deliveries of this replica's share of the outbox.
#[derive(Debug, Clone)]
pub(crate) struct Dispatcher {
    store: Store,
    master: MasterKey,
    client: reqwest::Client,
    settings: Arc<DeliverySettings>,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    pub(crate) fn new(
        store: Store,
        master: MasterKey,
        settings: DeliverySettings,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        // No proxy from the environment: a proxy would resolve and connect to names the
        // resolver below refuses, and would be asked for internal names.
        let mut client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("keyward-webhooks/", env!("CARGO_PKG_VERSION")));
        if !settings.allow_internal {
            client = client.dns_resolver(Arc::new(PublicOnly));
        }
        let client = client.build().map_err(|err| anyhow::anyhow!("building the webhook HTTP client: {err}"))?;
        Ok(Self { store, master, client, settings: Arc::new(settings), clock, metrics })
    }

    /// Starts posting, until [`DispatcherHandle::stop`].
    pub(crate) fn spawn(self) -> DispatcherHandle {
        let (stop, stopped) = oneshot::channel();
        DispatcherHandle { stop, task: tokio::spawn(self.run(stopped)) }
    }

    /// Posts as a pipeline: a claim takes due deliveries into the slots that are free, and
    /// each post frees its slot when its outcome is recorded, so a slow receiver holds only
    /// its own slots (at most `per_endpoint`) while the others' deliveries go on.
    async fn run(self, mut stopped: oneshot::Receiver<()>) {
        let mut ticks = tokio::time::interval(self.settings.poll_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut measured = tokio::time::Instant::now() - BACKLOG_INTERVAL;
        let mut flight = InFlight::default();
        // Whether to claim as soon as a slot is free: at each poll, and when a post ends
        // while the last claim found work (when it found none, the next poll looks again).
        let (mut wanted, mut busy) = (true, false);
        let (mut claims, mut measures) =
            (crate::telemetry::PollSpans::new("claim deliveries"), crate::telemetry::PollSpans::new("measure outbox"));
        loop {
            if wanted && flight.len() < self.settings.concurrency {
                wanted = false;
                busy = tracing::Instrument::instrument(self.claim(&mut flight), claims.next()).await;
            }
            if measured.elapsed() >= BACKLOG_INTERVAL {
                measured = tokio::time::Instant::now();
                tracing::Instrument::instrument(self.measure(), measures.next()).await;
            }
            tokio::select! {
                _ = &mut stopped => break,
                _ = ticks.tick() => wanted = true,
                Some(ended) = flight.posts.join_next_with_id() => {
                    flight.end(ended);
                    while let Some(ended) = flight.posts.try_join_next_with_id() {
                        flight.end(ended);
                    }
                    wanted |= busy;
                }
            }
        }
        self.hand_back(flight).await;
    }

    /// Claims into the free slots; whether it found any delivery.
    async fn claim(&self, flight: &mut InFlight) -> bool {
        let now = self.clock.now();
        let lease = chrono::Duration::from_std(self.settings.timeout + CLAIM_MARGIN).unwrap_or(chrono::Duration::MAX);
        let busy: Vec<(Uuid, u64)> = flight.per_endpoint.iter().map(|(id, posts)| (*id, *posts)).collect();
        let room = Room {
            total: self.settings.concurrency - flight.len(),
            per_endpoint: self.settings.per_endpoint,
            busy: &busy,
        };
        let claimed = match self.store.claim_deliveries(&self.master, now, now + lease, &room).await {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::warn!(error = %err, "claiming webhook deliveries failed; retrying at the next poll");
                return false;
            }
        };
        let found = !claimed.is_empty();
        for delivery in claimed {
            let held = Held {
                delivery_id: delivery.delivery_id,
                endpoint_id: delivery.endpoint_id,
                claimed_until: delivery.claimed_until,
            };
            let dispatcher = self.clone();
            let post = flight.posts.spawn(async move { dispatcher.deliver(delivery).await });
            *flight.per_endpoint.entry(held.endpoint_id).or_default() += 1;
            flight.held.insert(post.id(), held);
        }
        found
    }

    /// At shutdown: posts in flight get [`STOP_GRACE`] to end and be recorded; the rest are
    /// cut off and their claims handed back, so they are posted again at once (by another
    /// replica, or this one's next start) rather than when the lease ends. A receiver may
    /// have had a cut-off post already: delivery is at least once.
    async fn hand_back(&self, mut flight: InFlight) {
        let grace = tokio::time::sleep(STOP_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                _ = &mut grace => break,
                ended = flight.posts.join_next_with_id() => match ended {
                    Some(ended) => flight.end(ended),
                    None => return,
                },
            }
        }
        flight.posts.abort_all();
        while let Some(ended) = flight.posts.join_next_with_id().await {
            // Cut off: its claim is handed back below. Ended before the cut: done.
            if let Ok((post, ())) = ended {
                flight.held.remove(&post);
            }
        }
        let claims: Vec<(i64, chrono::DateTime<chrono::Utc>)> =
            flight.held.values().map(|held| (held.delivery_id, held.claimed_until)).collect();
        match self.store.release_claims(&claims).await {
            Ok(released) => tracing::info!(released, "handed back the claims of webhook posts cut off by shutdown"),
            Err(err) => tracing::warn!(
                error = %err,
                claims = claims.len(),
                "handing back webhook claims failed; they are posted again when their lease ends"
            ),
        }
    }

    async fn deliver(&self, claimed: Claimed) {
        let at = self.clock.now();
        let outcome = self.post(&claimed, at).await;
        let next_attempt_at = match &outcome {
            Outcome::Delivered { .. } => None,
            Outcome::Failed { .. } => self
                .settings
                .schedule
                .after(claimed.attempt)
                .map(|wait| at + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)),
        };
        let label = match (&outcome, next_attempt_at) {
            (Outcome::Delivered { .. }, _) => "delivered",
            (Outcome::Failed { .. }, Some(_)) => "failed",
            (Outcome::Failed { .. }, None) => "given_up",
        };
        self.metrics.webhook_delivered(label);
        match &outcome {
            Outcome::Delivered { .. } => {
                tracing::debug!(event.id = %claimed.event_id, endpoint.id = %claimed.endpoint_id, "webhook delivered");
            }
            Outcome::Failed { error, .. } => tracing::info!(
                event.id = %claimed.event_id,
                endpoint.id = %claimed.endpoint_id,
                attempt = claimed.attempt,
                error,
                "webhook delivery failed"
            ),
        }
        let result = AttemptResult {
            outcome: &outcome,
            at,
            next_attempt_at,
            failure_threshold: self.settings.failure_threshold,
        };
        if let Err(err) = self.store.record_attempt(&claimed, &result).await {
            // The claim lapses and the delivery is posted again: at least once.
            if let Some(suppressed) = RECORD_FAILURE_LINES.admit() {
                tracing::warn!(error = %err, event.id = %claimed.event_id, suppressed, "recording a webhook attempt failed");
            }
        }
    }

    async fn post(&self, claimed: &Claimed, at: chrono::DateTime<chrono::Utc>) -> Outcome {
        let failed = |error: String| Outcome::Failed { status: None, error, excerpt: String::new() };
        // Checked again as stored: an endpoint made while http or internal addresses were
        // allowed is not posted to once they are not. (A name's addresses are checked by
        // the resolver; an address in the URL never reaches it.)
        let mut checks = Checks::new();
        checks.webhook_url("url", &claimed.url, self.settings.allow_internal);
        if let Err(err) = checks.finish() {
            return failed(format!("not posted: {err}"));
        }
        let message_id = claimed.event_id.to_string();
        let signature = standardwebhooks::Webhook::new(claimed.secret.expose_secret())
            .and_then(|signer| signer.sign(&message_id, at.timestamp(), claimed.payload.as_bytes()));
        let signature = match signature {
            Ok(signature) => signature,
            Err(err) => return failed(format!("cannot sign: {err}")),
        };
        let sent = self
            .client
            .post(&claimed.url)
            .header("content-type", "application/json")
            .header("webhook-id", &message_id)
            .header("webhook-timestamp", at.timestamp().to_string())
            .header("webhook-signature", signature)
            .body(claimed.payload.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(err) => return failed(describe(&err)),
        };
        let status = response.status();
        let mut body = Vec::new();
        while body.len() < MAX_EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        let excerpt = excerpt(&body);
        if status.is_success() {
            Outcome::Delivered { status: status.as_u16(), excerpt }
        } else {
            Outcome::Failed { status: Some(status.as_u16()), error: format!("answered {status}"), excerpt }
        }
    }

    async fn measure(&self) {
        match self.store.outbox_backlog().await {
            Ok(backlog) => {
                let age = backlog.oldest.map_or(0.0, |oldest| (self.clock.now() - oldest).as_seconds_f64().max(0.0));
                self.metrics.outbox(backlog.pending, age);
            }
            Err(err) => tracing::debug!(error = %err, "measuring the outbox failed"),
        }
        match self.store.events_by_type().await {
            Ok(counts) => self.metrics.events_written(&counts),
            Err(err) => tracing::debug!(error = %err, "counting events failed"),
        }
    }
}

/// A failed request in words, with its cause.
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves names to public addresses only, so an endpoint's name cannot lead a
/// delivery into the service's own network (unless the operator allows it).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|addr| !internal_address(addr.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{} resolves to no public address", name.as_str()).into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}
