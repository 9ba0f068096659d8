//! Groups concurrent charges into shared transactions. A charge waits in its key's
//! queue; the queue's worker takes whatever has queued (up to a batch) and applies it in
//! one transaction, so under load many charges share one commit instead of each paying
//! for its own. No charge is answered before the transaction holding it has committed.
//!
//! Each account (a key, or an owner's pool with all its keys) belongs to one queue, so the batches in flight at once never touch the same
//! balance: one never waits on another's row locks (with shared queues, two batches of
//! random keys out of 1,000 overlapped often enough that two workers charged less than
//! one), and the workers' commits overlap instead.

use std::sync::Arc;

use crate::metrics::Metrics;
use chrono::Utc;
use keyward_core::{
    Error,
    credit::{Charge, ChargeOutcome},
    error::Result,
};
use keyward_store::Store;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

/// Charges waiting for a worker, at most, over all queues; beyond it callers wait to enqueue.
const QUEUE_CAPACITY: usize = 16 * 1024;

type Reply = oneshot::Sender<Result<ChargeOutcome>>;

/// Hands charges to the batching workers.
#[derive(Debug, Clone)]
pub(crate) struct Charger {
    /// One per worker; a key's charges all go to the same one.
    queues: Arc<[mpsc::Sender<(Charge, Reply)>]>,
}

impl Charger {
    /// Starts `workers` batching workers over `store`, each applying up to `max_batch`
    /// charges per transaction.
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

    /// Applies one charge, sharing a transaction with whatever else is queued.
    pub(crate) async fn charge(&self, charge: Charge) -> Result<ChargeOutcome> {
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Unavailable("the server is shutting down; the charge was not applied".into());
        // The account's UUID is random (a key's) or a hash (a pool's), so its low bits
        // spread accounts evenly over the queues; a pool's keys share one queue, so its
        // batches never wait on each other's row locks either.
        let queue = &self.queues[(charge.account().as_u128() % self.queues.len() as u128) as usize];
        queue.send((charge, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

static CHARGE_FAILURE_LINES: crate::log_lines::LineThrottle = crate::log_lines::LineThrottle::new();

async fn work(store: Store, mut receiver: mpsc::Receiver<(Charge, Reply)>, max_batch: usize, metrics: Arc<Metrics>) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        if receiver.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        let (charges, replies): (Vec<Charge>, Vec<Reply>) = batch.drain(..).unzip();
        metrics.charge_batch(charges.len());
        let charged = store.charge(&charges, Utc::now()).await;
        let failure = charged.failure.map(|err| {
            let unconfirmed = charged.outcomes.iter().filter(|outcome| outcome.is_none()).count();
            if let Some(suppressed) = CHARGE_FAILURE_LINES.admit() {
                tracing::warn!(error = %err, charges = charges.len(), unconfirmed, suppressed, "charge batch failed; its unconfirmed charges may or may not have been applied (a retry with the same request_id is safe)");
            }
            err.to_string()
        });
        for (reply, outcome) in replies.into_iter().zip(charged.outcomes) {
            let answer = outcome.ok_or_else(|| {
                let message =
                    failure.clone().unwrap_or_else(|| "the charge batch ended without this charge's outcome".into());
                Error::Unavailable(message.into())
            });
            let _ = reply.send(answer);
        }
    }
}
