//! The consumers of a run: the per-campaign sync calls, with bounded concurrency sized to keep
//! the rate limiter saturated. Successes are recorded in small batches (fenced by the lease):
//! one transaction per success would cost a service running a thousand tenants ten thousand
//! transactions a second; a batch waits [`flush_delay`] (a quarter of the rate window, between
//! 50 ms and 1 s) and, since sync calls start before their page is stored, until that page is
//! stored (see `handoff`). A process killed meanwhile repeats those (idempotent) calls when the
//! run resumes: at most the calls since the last flush, or since its page was handed out while
//! the page's store waits its turn (seconds when a thousand runs list at once).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use adsync_domain::CampaignId;
use adsync_store::{NewDeadLetter, RunWarning, Stage};
use chrono::Utc;
use futures::{StreamExt, stream};
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::engine::{RunCtx, Stop, SyncEngine};

/// How long a success may wait to be recorded with others: a quarter of the rate window
/// (sync calls complete in bursts of up to N per window), between 50 ms and 1 s.
pub fn flush_delay(window: Duration) -> Duration {
    (window / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Successes not yet recorded, each with the number of the page it waits for.
#[derive(Debug, Default)]
pub(crate) struct SyncedBuffer {
    ids: Mutex<Vec<(String, u64)>>,
    added: Notify,
}

impl SyncedBuffer {
    fn push(&self, id: String, page: u64) {
        self.ids.lock().expect("synced buffer").push((id, page));
        self.added.notify_one();
    }

    fn take(&self) -> Vec<(String, u64)> {
        std::mem::take(&mut *self.ids.lock().expect("synced buffer"))
    }
}

impl SyncEngine {
    /// Records successes in batches until the consumers are done, then records the rest.
    pub(crate) async fn flush_synced(
        &self,
        ctx: &RunCtx,
        consumers_done: &CancellationToken,
    ) -> Result<(), Stop> {
        let delay = flush_delay(self.client.config().rate_limit.window);
        loop {
            let last = tokio::select! {
                biased;
                () = consumers_done.cancelled() => true,
                () = ctx.synced.added.notified() => false,
            };
            if !last {
                // Gather what else succeeds meanwhile.
                tokio::select! {
                    () = consumers_done.cancelled() => {}
                    () = tokio::time::sleep(delay) => {}
                }
            }
            let ids = self.recordable(ctx, ctx.synced.take()).await;
            if !ids.is_empty() {
                let count = ids.len();
                match &self.config.recorder {
                    Some(recorder) => recorder.record(&ctx.lease, ids.into(), Utc::now()).await?,
                    None => {
                        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                        self.store
                            .mark_synced(&ctx.lease, &refs, Utc::now())
                            .await?
                    }
                }
                metrics::counter!("adsync_sync_campaigns_synced_total").increment(count as u64);
            }
            if last {
                // The consumers are done: nothing more can arrive.
                return Ok(());
            }
        }
    }

    /// Sync calls with bounded concurrency until the channel closes or the run stops.
    pub(crate) async fn sync_all(
        &self,
        ctx: &RunCtx,
        rx: mpsc::Receiver<(String, u64)>,
    ) -> Result<(), Stop> {
        // Set once the producer closed the channel and every id was taken: only then is the
        // work done. Stopping early (take_until) leaves ids behind even when every call in
        // flight then finishes well, and that run must end interrupted, not finished.
        let drained = Arc::new(AtomicBool::new(false));
        let ids = stream::unfold((rx, drained.clone()), |(mut rx, drained)| async move {
            let next = rx.recv().await;
            if next.is_none() {
                drained.store(true, Ordering::Relaxed);
            }
            next.map(|queued| (queued, (rx, drained)))
        })
        .take_until(ctx.stop.clone().cancelled_owned());
        let results = ids
            .map(|(id, page)| self.sync_one(ctx, id, page))
            .buffer_unordered(self.sync_concurrency());
        let mut results = std::pin::pin!(results);
        let mut first_error = None;
        while let Some(r) = results.next().await {
            if let Err(e) = r
                && first_error.is_none()
            {
                ctx.stop.cancel();
                first_error = Some(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None if !drained.load(Ordering::Relaxed) => Err(Stop::Cancelled),
            None => Ok(()),
        }
    }

    /// One campaign's sync call (retried), and what it means; `page`: the page whose store
    /// its writes wait for.
    async fn sync_one(&self, ctx: &RunCtx, id: String, page: u64) -> Result<(), Stop> {
        let cid = CampaignId::parse(&id).map_err(|e| {
            Stop::Fatal(adsync_client::Error::Contract {
                what: "stored campaign id",
                detail: format!("{id:?}: {e}"),
            })
        })?;
        let mut rounds = 0;
        loop {
            self.admitted(&ctx.stop).await?;
            if !ctx.watch.wait_held(&ctx.stop).await {
                return Err(Stop::Cancelled);
            }
            let started = Instant::now();
            let result = tokio::select! {
                biased;
                _ = ctx.hard.cancelled() => return Err(Stop::Cancelled),
                // Boxed where it is awaited: the call's state is some kilobytes, and a run
                // keeps a window's worth of sync_one futures in its FuturesUnordered, which
                // copies each one several times when it is pushed (callgrind, 100 tenants:
                // those copies were a seventh of the service's instructions).
                r = Box::pin(adsync_client::with_send_gate(
                    ctx.watch.clone(),
                    self.client.sync_campaign(&cid),
                )) => r,
            };
            match result {
                Ok(_) => {
                    self.breaker.record_success();
                    tracing::debug!(campaign = %id, "campaign synced");
                    ctx.synced.push(id, page);
                    let p = &self.progress;
                    p.synced.fetch_add(1, Ordering::Relaxed);
                    p.pending.fetch_sub(1, Ordering::Relaxed);
                    p.record_sync_latency(started.elapsed());
                    return Ok(());
                }
                Err(
                    e @ (adsync_client::Error::InvalidCredentials { .. }
                    | adsync_client::Error::Unauthorized { .. }
                    | adsync_client::Error::Config(_)
                    | adsync_client::Error::SharedBudget {
                        transient: false, ..
                    }),
                ) => return Err(Stop::Fatal(e)),
                Err(adsync_client::Error::Rejected {
                    status: 404,
                    message,
                }) => {
                    // The platform says the campaign is gone (removed after it was listed):
                    // not a failure of the run. A later listing that has it clears the mark.
                    self.breaker.record_success();
                    // Boxed, as the store calls below: a database future is some kilobytes,
                    // and inline it would make every sync_one future (a window's worth of
                    // which wait in the run's FuturesUnordered) as large.
                    return Box::pin(self.campaign_gone(ctx, &id, page, &message)).await;
                }
                Err(e) if !e.is_transient() => {
                    // The platform answered, about this campaign only (a 404, a 4xx, an answer
                    // of the wrong shape): a dead letter with the reason.
                    self.breaker.record_success();
                    return Box::pin(self.dead_letter_sync(ctx, &id, page, e.to_string())).await;
                }
                Err(e) => {
                    // Only failures while the platform is otherwise healthy count against
                    // the campaign; during an outage the breaker holds everyone.
                    if !self.breaker.record_failure() {
                        rounds += 1;
                    }
                    if rounds >= self.config.campaign_attempts {
                        return Box::pin(self.dead_letter_sync(
                            ctx,
                            &id,
                            page,
                            format!("gave up after {rounds} rounds of retries: {e}"),
                        ))
                        .await;
                    }
                    tracing::warn!(campaign = %id, error = %e, "sync failed after retries; trying again");
                }
            }
        }
    }

    /// Waits until `page` is stored (a sync's write needs its campaign's row) and returns
    /// the pages stored then: fewer than `page` if the listing ended without storing it, or
    /// the run was abandoned meanwhile.
    async fn stored_by(&self, ctx: &RunCtx, page: u64) -> u64 {
        tokio::select! {
            biased;
            stored = ctx.handoff.wait_stored(page) => stored,
            _ = ctx.hard.cancelled() => ctx.handoff.stored_so_far(),
        }
    }

    /// Whether `page` is stored, once it is (see [`SyncEngine::stored_by`]).
    async fn page_stored(&self, ctx: &RunCtx, page: u64) -> bool {
        self.stored_by(ctx, page).await >= page
    }

    /// The successes of `synced` whose pages are stored, once they are; those of a page the
    /// listing did not store are left out (a resumed run repeats their calls).
    async fn recordable(&self, ctx: &RunCtx, synced: Vec<(String, u64)>) -> Vec<String> {
        let last = synced.iter().map(|(_, page)| *page).max().unwrap_or(0);
        let stored = self.stored_by(ctx, last).await;
        let total = synced.len();
        let ids: Vec<String> = synced
            .into_iter()
            .filter(|(_, page)| *page <= stored)
            .map(|(id, _)| id)
            .collect();
        if ids.len() < total {
            tracing::debug!(
                count = total - ids.len(),
                "successes whose page was not stored are not recorded; a resumed run repeats them"
            );
        }
        ids
    }

    async fn campaign_gone(
        &self,
        ctx: &RunCtx,
        id: &str,
        page: u64,
        message: &str,
    ) -> Result<(), Stop> {
        if !self.page_stored(ctx, page).await {
            return Err(Stop::Cancelled);
        }
        let warning = RunWarning {
            kind: "vanished".into(),
            message: format!(
                "campaign {id} vanished after it was listed (the platform answers 404 to its sync call: {message}); marked removed"
            ),
        };
        self.warnings.note(std::slice::from_ref(&warning));
        self.store
            .campaign_gone(&ctx.lease, id, &warning, Utc::now())
            .await?;
        self.progress.pending.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    async fn dead_letter_sync(
        &self,
        ctx: &RunCtx,
        id: &str,
        page: u64,
        reason: String,
    ) -> Result<(), Stop> {
        if !self.page_stored(ctx, page).await {
            return Err(Stop::Cancelled);
        }
        tracing::warn!(campaign = %id, %reason, "sync dead-lettered");
        let letter = NewDeadLetter {
            campaign_id: id.to_owned(),
            stage: Stage::Sync,
            payload: serde_json::json!({ "id": id }).to_string(),
            reason,
        };
        self.store
            .dead_letter(&ctx.lease, &letter, Utc::now())
            .await?;
        self.progress.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.progress.pending.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sync calls in flight at once: enough to keep the limiter saturated (rate x expected
    /// latency) and never fewer than the window's burst, capped at 64.
    pub fn sync_concurrency(&self) -> usize {
        self.config.sync_concurrency.unwrap_or_else(|| {
            let c = self.client.config();
            let n = f64::from(c.rate_limit.requests);
            // The platform's sync call takes about a fifth of the default timeout (2 s of 10),
            // and never counts for more than a window (a scaled simulator answers in
            // milliseconds): each call in flight is a future of some kilobytes, and a service
            // runs a thousand tenants' worth of them.
            let latency =
                (c.request_timeout.as_secs_f64() / 5.0).min(c.rate_limit.window.as_secs_f64());
            let in_flight = (n / c.rate_limit.window.as_secs_f64() * latency).ceil();
            (in_flight.max(n) as usize).clamp(1, 64)
        })
    }
}
