//! Groups concurrent charges, and concurrent holds, into shared transactions. A job waits
//! in its account's queue; the queue's worker takes whatever has queued (up to a batch) and
//! applies it in one transaction, so under load many share one commit instead of each
//! paying for its own. No job is answered before the transaction holding it has committed.
//!
//! Each account (a key, or an owner's pool with all its keys) belongs to one queue, so the
//! batches in flight at once never touch the same balance: one never waits on another's
//! row locks (with shared queues, two batches of random keys out of 1,000 overlapped often
//! enough that two workers charged less than one), and the workers' commits overlap instead.

use std::{future::Future, sync::Arc};

use crate::{log_lines::LineThrottle, metrics::Metrics};
use chrono::Utc;
use keyward_core::{
    Error,
    credit::{Charge, ChargeOutcome},
    error::Result,
    hold::HoldOutcome,
};
use keyward_store::{HoldRequest, Store};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use uuid::Uuid;

/// Jobs waiting for a worker, at most, over all queues; beyond it callers wait to enqueue.
const QUEUE_CAPACITY: usize = 16 * 1024;

/// What a batch came to: each job's outcome where it is known, and why the others are not.
type Applied<T> = (Vec<Option<T>>, Option<Error>);

/// A job the workers batch.
pub(crate) trait Batched: Send + Sized + 'static {
    /// What its caller is answered.
    type Outcome: Send + 'static;
    /// What the log and an unconfirmed answer call it.
    const NAME: &'static str;
    /// The balances it touches (a key's, or its owner's pool's).
    fn account(&self) -> Uuid;
    /// Applies a batch in one transaction.
    fn apply(store: &Store, batch: &[Self]) -> impl Future<Output = Applied<Self::Outcome>> + Send;
    /// Where the logs of failed batches are throttled.
    fn failure_lines() -> &'static LineThrottle;
    /// Records a batch's size.
    fn observe(metrics: &Metrics, size: usize);
}

impl Batched for Charge {
    type Outcome = ChargeOutcome;
    const NAME: &'static str = "charge";

    fn account(&self) -> Uuid {
        Charge::account(self)
    }

    async fn apply(store: &Store, batch: &[Self]) -> Applied<ChargeOutcome> {
        let charged = store.charge(batch, Utc::now()).await;
        (charged.outcomes, charged.failure)
    }

    fn failure_lines() -> &'static LineThrottle {
        static LINES: LineThrottle = LineThrottle::new();
        &LINES
    }

    fn observe(metrics: &Metrics, size: usize) {
        metrics.charge_batch(size);
    }
}

impl Batched for HoldRequest {
    type Outcome = HoldOutcome;
    const NAME: &'static str = "hold";

    fn account(&self) -> Uuid {
        HoldRequest::account(self)
    }

    async fn apply(store: &Store, batch: &[Self]) -> Applied<HoldOutcome> {
        match store.place_holds(batch).await {
            Ok(outcomes) => (outcomes.into_iter().map(Some).collect(), None),
            Err(err) => ((0..batch.len()).map(|_| None).collect(), Some(err)),
        }
    }

    fn failure_lines() -> &'static LineThrottle {
        static LINES: LineThrottle = LineThrottle::new();
        &LINES
    }

    fn observe(metrics: &Metrics, size: usize) {
        metrics.hold_batch(size);
    }
}

type Reply<T> = oneshot::Sender<Result<T>>;

/// A job waiting in its queue, with where its answer goes.
type Queued<J> = (J, Reply<<J as Batched>::Outcome>);

/// Hands jobs to the batching workers.
#[derive(Debug)]
pub(crate) struct Batcher<J: Batched> {
    /// One per worker; an account's jobs all go to the same one.
    queues: Arc<[mpsc::Sender<Queued<J>>]>,
}

impl<J: Batched> Clone for Batcher<J> {
    fn clone(&self) -> Self {
        Self { queues: Arc::clone(&self.queues) }
    }
}

impl<J: Batched> Batcher<J> {
    /// Starts `workers` batching workers over `store`, each applying up to `max_batch`
    /// jobs per transaction.
    pub(crate) fn start(
        store: Store,
        workers: usize,
        max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let workers = workers.max(1);
        let (queues, handles) = (0..workers)
            .map(|_| {
                let (queue, receiver) = mpsc::channel((QUEUE_CAPACITY / workers).max(1));
                let worker = tokio::spawn(work(store.clone(), receiver, max_batch.max(1), Arc::clone(&metrics)));
                (queue, worker)
            })
            .unzip::<_, _, Vec<_>, Vec<_>>();
        (Self { queues: queues.into() }, handles)
    }

    /// Applies one job, sharing a transaction with whatever else is queued.
    pub(crate) async fn apply(&self, job: J) -> Result<J::Outcome> {
        let (reply, answer) = oneshot::channel();
        let stopped =
            || Error::Unavailable(format!("the server is shutting down; the {} was not applied", J::NAME).into());
        // The account's UUID is random (a key's) or a hash (a pool's), so its low bits
        // spread accounts evenly over the queues; a pool's keys share one queue, so its
        // batches never wait on each other's row locks either.
        let queue = &self.queues[(job.account().as_u128() % self.queues.len() as u128) as usize];
        queue.send((job, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn work<J: Batched>(
    store: Store,
    mut receiver: mpsc::Receiver<Queued<J>>,
    max_batch: usize,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        if receiver.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        let (jobs, replies): (Vec<J>, Vec<Reply<J::Outcome>>) = batch.drain(..).unzip();
        J::observe(&metrics, jobs.len());
        let (outcomes, failure) = J::apply(&store, &jobs).await;
        let failure = failure.map(|err| {
            let unconfirmed = outcomes.iter().filter(|outcome| outcome.is_none()).count();
            if let Some(suppressed) = J::failure_lines().admit() {
                tracing::warn!(error = %err, jobs = jobs.len(), unconfirmed, suppressed, "{} batch failed; its unconfirmed {}s may or may not have been applied (a retry with the same request_id is safe)", J::NAME, J::NAME);
            }
            err.to_string()
        });
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let answer = outcome.ok_or_else(|| {
                let message = failure
                    .clone()
                    .unwrap_or_else(|| format!("the {} batch ended without this {}'s outcome", J::NAME, J::NAME));
                Error::Unavailable(message.into())
            });
            let _ = reply.send(answer);
        }
    }
}
