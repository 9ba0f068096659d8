//! Cache misses read together. A miss joins the queue; while fewer reads are running than
//! the store has lookup connections, it starts one, which takes the whole queue (up to a
//! batch) into one statement and, when done, the queue that gathered meanwhile. Alone, a
//! miss is read at once by the one-key statement, as before; under load, the misses that
//! arrive while the connections are busy share the next round trip instead of each
//! waiting for a connection of its own, so the database runs one statement, and the
//! server makes one hand-off, for many keys.
//!
//! The reads run in tasks of their own, so a caller that gives up (its call cancelled)
//! takes no one else's answer with it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use keyward_core::{Error, error::Result, secret::SecretHash};
use keyward_store::{KeyRecord, Store};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// Misses read by one statement, at most: the statement's array of hashes stays a few
/// kilobytes, and one batch never holds a connection for long.
const MAX_BATCH: usize = 64;

type Answer = Result<Option<Arc<KeyRecord>>>;

/// A queued miss, and where its answer goes.
type Waiting = (SecretHash, oneshot::Sender<Answer>);

/// Reads the keys of missed hashes, batching concurrent misses.
#[derive(Debug)]
pub(crate) struct MissReads {
    store: Store,
    metrics: Arc<Metrics>,
    /// Reads that may run at once: the store's lookup connections.
    readers: usize,
    queue: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: Vec<Waiting>,
    running: usize,
}

impl MissReads {
    pub(crate) fn new(store: Store, metrics: Arc<Metrics>) -> Arc<Self> {
        let readers = store.lookup_concurrency().max(1);
        Arc::new(Self { store, metrics, readers, queue: Mutex::default() })
    }

    /// The key one of whose secrets hashes to `hash`, with all its secrets.
    pub(crate) async fn read(self: &Arc<Self>, hash: SecretHash) -> Answer {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.lock();
            queue.waiting.push((hash, reply));
            let start = queue.running < self.readers;
            queue.running += usize::from(start);
            start
        };
        if start {
            tokio::spawn(Arc::clone(self).run());
        }
        answer.await.map_err(|_| Error::Unavailable("the server is shutting down; the key was not read".into()))?
    }

    /// Reads batches until the queue is empty.
    async fn run(self: Arc<Self>) {
        let mut reader = Reader { reads: &self, running: true };
        while let Some(batch) = reader.next_batch() {
            match self.read_batch(&batch).await {
                Ok(answers) => {
                    for ((_, reply), answer) in batch.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                // The misses queued meanwhile fail with it: they have waited for the
                // database as long as this batch did (a whole acquire timeout, when it is
                // away), and waiting as long again for their own read would make a call
                // cost two.
                Err(err) => {
                    for (_, reply) in batch.into_iter().chain(reader.take_queue()) {
                        let _ = reply.send(Err(again(&err)));
                    }
                }
            }
        }
    }

    async fn read_batch(&self, batch: &[Waiting]) -> Result<Vec<Option<Arc<KeyRecord>>>> {
        self.metrics.miss_read_batch(batch.len());
        if let [(hash, _)] = batch {
            return Ok(vec![Box::pin(self.store.find_record_by_secret(hash)).await?.map(Arc::new)]);
        }
        let hashes: Vec<SecretHash> = batch.iter().map(|(hash, _)| *hash).collect();
        let records = Box::pin(self.store.find_records_by_secrets(&hashes)).await?;
        let mut by_hash = HashMap::with_capacity(hashes.len());
        for record in records.into_iter().map(Arc::new) {
            for secret in &record.secrets {
                by_hash.insert(secret.hash, Arc::clone(&record));
            }
        }
        Ok(hashes.iter().map(|hash| by_hash.get(hash).cloned()).collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue is only pushed, drained and counted; a panic elsewhere cannot leave it half-changed.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The same failure, for another caller of the read that failed.
fn again(err: &Error) -> Error {
    match err {
        Error::Unavailable(source) => Error::Unavailable(source.to_string().into()),
        Error::DataLoss { reason, message } => Error::DataLoss { reason, message: message.clone() },
        // A read fails for want of the database or for what it read back; nothing else is
        // expected of it, and anything else is a bug the callers are told of as one.
        other @ (Error::InvalidArgument(_)
        | Error::Unauthenticated { .. }
        | Error::PermissionDenied { .. }
        | Error::NotFound { .. }
        | Error::AlreadyExists { .. }
        | Error::FailedPrecondition { .. }
        | Error::ResourceExhausted { .. }
        | Error::Aborted { .. }
        | Error::Internal(_)) => Error::Internal(other.to_string().into()),
    }
}

/// A running read: it takes the queue's batches, and gives its place back when it finds
/// the queue empty (under the same lock, so a miss queued just then starts a reader of its
/// own) or when it panics, so the readers never dwindle.
struct Reader<'a> {
    reads: &'a MissReads,
    running: bool,
}

impl Reader<'_> {
    fn next_batch(&mut self) -> Option<Vec<Waiting>> {
        let mut queue = self.reads.lock();
        if queue.waiting.is_empty() {
            queue.running -= 1;
            self.running = false;
            return None;
        }
        let taken = queue.waiting.len().min(MAX_BATCH);
        Some(queue.waiting.drain(..taken).collect())
    }

    fn take_queue(&mut self) -> Vec<Waiting> {
        std::mem::take(&mut self.reads.lock().waiting)
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if self.running {
            self.reads.lock().running -= 1;
        }
    }
}
