//! Sync successes of many runs, recorded together. Each run records its successes in small
//! batches (`syncing::flush_synced`, about one per rate window); a worker running a thousand
//! runs made as many fenced statements a second, each its own round trip and transaction
//! (11,000 for a 1,000-tenant bench run, the most frequent write after the budget's grants).
//! A [`SyncRecorder`] shared by a worker's runs gathers what they hand it for a few
//! milliseconds and writes it in one statement ([`Store::mark_synced_many`]), each run's
//! campaigns still fenced by that run's own lease. A run whose lease is gone gets
//! `LeaseLost`, as from its own write; when the shared statement fails, each run writes its
//! own batch (and so gets its own error).

use std::{sync::Arc, time::Duration};

use adsync_store::{Lease, Store, StoreError};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

/// How long the recorder gathers after the first batch arrives: short against the runs' own
/// gathering (a quarter of a window), long enough for a worker's runs to meet.
const GATHER: Duration = Duration::from_millis(20);

/// At most this many campaigns go into one statement.
const MAX_IDS: usize = 20_000;

struct Request {
    lease: Lease,
    ids: Arc<[String]>,
    at: DateTime<Utc>,
    done: oneshot::Sender<Option<bool>>,
}

/// A handle on a worker's recorder (cheap to clone). The recorder's task ends when the last
/// handle is dropped.
#[derive(Debug, Clone)]
pub struct SyncRecorder {
    tx: mpsc::UnboundedSender<Request>,
    store: Store,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("run", &self.lease.run)
            .field("ids", &self.ids.len())
            .finish()
    }
}

impl SyncRecorder {
    /// Starts a recorder writing to `store` (needs a tokio runtime).
    pub fn spawn(store: Store) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store.clone(), rx));
        Self { tx, store }
    }

    /// Records `ids` as synced by the run of `lease` at `at`, with other runs' batches.
    /// `Ok(())`: recorded; `Err(LeaseLost)`: the lease is gone, nothing was written; any
    /// other error is the run's own write's, made when the shared one failed.
    pub async fn record(
        &self,
        lease: &Lease,
        ids: Arc<[String]>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        let request = Request {
            lease: lease.clone(),
            ids: ids.clone(),
            at,
            done,
        };
        let answered = match self.tx.send(request) {
            Ok(()) => answer.await.ok().flatten(),
            Err(_) => None,
        };
        match answered {
            Some(true) => Ok(()),
            Some(false) => Err(StoreError::LeaseLost {
                run: lease.run,
                epoch: lease.epoch,
            }),
            // The shared write failed (or the recorder is gone): this run's own write says
            // why, or succeeds if the database is back.
            None => {
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                self.store.mark_synced(lease, &refs, at).await
            }
        }
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = rx.recv().await {
        tokio::time::sleep(GATHER).await;
        let mut batch = vec![first];
        let mut ids = batch[0].ids.len();
        while ids < MAX_IDS {
            match rx.try_recv() {
                Ok(r) => {
                    ids += r.ids.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        write(&store, batch).await;
    }
}

async fn write(store: &Store, batch: Vec<Request>) {
    // One time for the statement: the latest any of them asked for.
    let at = batch.iter().map(|r| r.at).max().unwrap_or_else(Utc::now);
    let refs: Vec<Vec<&str>> = batch
        .iter()
        .map(|r| r.ids.iter().map(String::as_str).collect())
        .collect();
    let batches: Vec<(&Lease, &[&str])> = batch
        .iter()
        .zip(&refs)
        .map(|(r, ids)| (&r.lease, ids.as_slice()))
        .collect();
    let started = std::time::Instant::now();
    let result = store.mark_synced_many(&batches, at).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let held = match result {
        Ok(held) => {
            tracing::debug!(runs = batch.len(), ms, "sync records written together");
            held.into_iter().map(Some).collect()
        }
        Err(e) => {
            tracing::debug!(runs = batch.len(), ms, error = %e, "shared sync record failed; each run writes its own");
            vec![None; batch.len()]
        }
    };
    drop(batches);
    for (request, held) in batch.into_iter().zip(held) {
        let _ = request.done.send(held);
    }
}
