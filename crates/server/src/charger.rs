//! Groups concurrent charges into shared transactions. A charge waits in a queue; a
//! worker takes whatever has queued (up to a batch) and applies it in one transaction,
//! so under load many charges share one commit instead of each paying for its own.
//! No charge is answered before the transaction holding it has committed.

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
    sync::{Mutex, mpsc, oneshot},
    task::JoinHandle,
};

/// Charges waiting for a worker, at most; beyond it callers wait to enqueue.
const QUEUE_CAPACITY: usize = 16 * 1024;

type Reply = oneshot::Sender<Result<ChargeOutcome>>;

/// Hands charges to the batching workers.
#[derive(Debug, Clone)]
pub(crate) struct Charger {
    queue: mpsc::Sender<(Charge, Reply)>,
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
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        let handles = (0..workers.max(1))
            .map(|_| tokio::spawn(work(store.clone(), Arc::clone(&receiver), max_batch.max(1), Arc::clone(&metrics))))
            .collect();
        (Self { queue }, handles)
    }

    /// Applies one charge, sharing a transaction with whatever else is queued.
    pub(crate) async fn charge(&self, charge: Charge) -> Result<ChargeOutcome> {
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Unavailable("the server is shutting down; the charge was not applied".into());
        self.queue.send((charge, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn work(
    store: Store,
    receiver: Arc<Mutex<mpsc::Receiver<(Charge, Reply)>>>,
    max_batch: usize,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut batch, max_batch).await == 0 {
                return;
            }
        }
        let (charges, replies): (Vec<Charge>, Vec<Reply>) = batch.drain(..).unzip();
        metrics.charge_batch(charges.len());
        match store.charge(&charges, Utc::now()).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, charges = charges.len(), "charge batch failed; its charges are unconfirmed (a retry with the same request_id is safe)");
                let message = err.to_string();
                for reply in replies {
                    let _ = reply.send(Err(Error::Unavailable(message.clone().into())));
                }
            }
        }
    }
}
