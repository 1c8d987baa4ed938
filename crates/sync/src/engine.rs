//! One sync run for one tenant: acquire the run (lease), list and sync until done or stopped,
//! then record the end.
//!
//! Data flow: a producer ([`crate::listing`]) lists pages from the run's checkpoint on, checks
//! each with the [`Pager`], validates its records, stores the page (one transaction with the
//! cursor) and sends the ids new to the run down a bounded channel; consumers
//! ([`crate::syncing`]) call the sync endpoint for each id with bounded concurrency and record
//! each success. Campaigns stored but not yet synced by an earlier process of the same run are
//! queued first. Cancellation stops new work, lets in-flight calls finish within a grace
//! period, and leaves the checkpoint to resume from. A lease keeper renews the run's lease;
//! if the run is taken over, every write is refused and the run stops.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use adsync_client::AdClient;
use adsync_store::{
    Lease, RunCounters, RunEnd, RunEnding, RunId, RunRecord, RunStatus, StopReason, Store,
    StoreError,
};
use chrono::Utc;
use tokio::{
    sync::{Mutex, mpsc},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    BreakerConfig, CircuitBreaker, Outcome, Pager, PagerLimits, PlatformDown, Progress, RunReport,
    listing::WarningLog, ownership, report::floor_for,
};

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Tenant whose data is synced.
    pub tenant: String,
    /// Where the data comes from: the platform's base URL, or `simulator`. Recorded on the
    /// run; a run started against one platform is not resumed against another.
    pub platform: String,
    /// Campaigns per page asked for (the server may cap it; a resumed run keeps its own).
    pub page_size: u64,
    /// Start a new run even if an unfinished one exists (which is then marked failed).
    pub fresh: bool,
    /// Sync calls in flight at once; `None` sizes it from the rate limit.
    pub sync_concurrency: Option<usize>,
    /// Rounds of (retried) sync calls a campaign gets while the platform is otherwise
    /// healthy, before it is dead-lettered.
    pub campaign_attempts: u32,
    /// When to stop calling a failing platform.
    pub breaker: BreakerConfig,
    /// After cancellation, how long in-flight calls may take to finish.
    pub shutdown_grace: Duration,
    /// How long the run's lease lasts without renewal (renewed every third of it). A process
    /// that dies holding it blocks the run this long at most.
    pub lease_ttl: Duration,
    /// How long to wait for a held run whose holder may be dead; `None`: the lease time plus
    /// a little, so the lease of a killed process runs out first.
    pub lease_wait: Option<Duration>,
    /// Bounds on the listing.
    pub pager: PagerLimits,
    /// Pages being fetched at once, shared by the runs of a process (a worker); `None`: no
    /// limit (one run per process).
    pub page_permits: Option<Arc<tokio::sync::Semaphore>>,
    /// Pages being stored at once, shared by the runs of a process (a worker), so that the
    /// stores of a thousand first pages leave the rest of the pool to the runs' other writes
    /// (grants, successes); `None`: no limit.
    pub store_permits: Option<Arc<tokio::sync::Semaphore>>,
    /// Records sync successes together with the other runs of a process (a worker); `None`:
    /// each batch is its own statement (one run per process).
    pub recorder: Option<crate::SyncRecorder>,
    /// Who resumes the run if it stops early: what the message it records advises.
    pub resumer: crate::Resumer,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            tenant: "default".into(),
            platform: "simulator".into(),
            page_size: 100,
            fresh: false,
            sync_concurrency: None,
            campaign_attempts: 3,
            breaker: BreakerConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(30),
            lease_wait: None,
            pager: PagerLimits::default(),
            page_permits: None,
            store_permits: None,
            recorder: None,
            resumer: crate::Resumer::Cli,
        }
    }
}

impl SyncConfig {
    /// How long to wait for a held run (see [`SyncConfig::lease_wait`]).
    pub fn lease_wait(&self) -> Duration {
        self.lease_wait
            .unwrap_or(self.lease_ttl + self.lease_ttl / 10 + Duration::from_millis(500))
    }
}

/// Why a run could not start (once it has started, problems end up in its [`RunReport`]).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The platform refused the credentials or could not be reached.
    #[error(transparent)]
    Platform(#[from] adsync_client::Error),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another live process holds the tenant's run (its lease was renewed while we watched).
    #[error(
        "tenant {tenant:?} is being synced by {owner} (run {run}); wait for it to finish, or stop that process first"
    )]
    Busy {
        /// Tenant.
        tenant: String,
        /// The other process.
        owner: String,
        /// Its run.
        run: RunId,
    },
    /// The unfinished run was started against another platform.
    #[error(
        "run {run} of tenant {tenant:?} was started against {started_with}, not {now}: finish it against {started_with}, or pass --fresh to abandon it"
    )]
    OtherPlatform {
        /// The run.
        run: RunId,
        /// Tenant.
        tenant: String,
        /// Its platform.
        started_with: String,
        /// This sync's platform.
        now: String,
    },
}

impl SyncError {
    /// The process exit code: 75 (retry later) for an unreachable platform or database and
    /// a busy tenant, 1 for what the user must fix.
    pub fn exit_code(&self) -> u8 {
        let later = match self {
            SyncError::Platform(e) => e.is_transient(),
            SyncError::Store(e) => e.is_transient(),
            SyncError::Busy { .. } => true,
            SyncError::OtherPlatform { .. } => false,
        };
        if later { 75 } else { 1 }
    }
}

/// Why the work of a run stopped early.
#[derive(Debug)]
pub(crate) enum Stop {
    Cancelled,
    PlatformDown(PlatformDown),
    Fatal(adsync_client::Error),
    /// The platform could not be reached before the run started (a claimed run).
    Unreachable(adsync_client::Error),
    Store(StoreError),
    LeaseLost,
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LeaseLost { .. } => Stop::LeaseLost,
            e => Stop::Store(e),
        }
    }
}

impl From<PlatformDown> for Stop {
    fn from(e: PlatformDown) -> Self {
        Stop::PlatformDown(e)
    }
}

impl Stop {
    /// Which reason wins when several parts stopped: a real failure over the cancellation
    /// it caused.
    fn weight(&self) -> u8 {
        match self {
            Stop::LeaseLost => 4,
            Stop::Fatal(_) | Stop::Store(_) | Stop::PlatformDown(_) | Stop::Unreachable(_) => 3,
            Stop::Cancelled => 1,
        }
    }
}

/// What the parts of a run share.
pub(crate) struct RunCtx {
    pub lease: Lease,
    /// Ends new work: on cancellation, or when a part fails.
    pub stop: CancellationToken,
    /// Abandons in-flight calls once the grace period after `stop` is over.
    pub hard: CancellationToken,
    /// Campaigns whose sync call succeeded, not yet recorded (see `syncing::flush_synced`).
    pub synced: crate::syncing::SyncedBuffer,
    /// Pages handed to the sync calls and pages stored: a sync's write waits for its page.
    pub handoff: crate::handoff::Handoff,
    /// When the lease was last renewed: no platform call goes out on a lease that may have
    /// run out.
    pub watch: Arc<ownership::LeaseWatch>,
}

/// Runs syncs for one tenant against one platform and one database.
pub struct SyncEngine {
    pub(crate) client: AdClient,
    pub(crate) store: Store,
    pub(crate) config: SyncConfig,
    pub(crate) progress: Arc<Progress>,
    pub(crate) breaker: Arc<CircuitBreaker>,
    pub(crate) warnings: WarningLog,
    notice: Arc<dyn Fn(String) + Send + Sync>,
}

impl SyncEngine {
    /// An engine for `config.tenant`.
    pub fn new(client: AdClient, store: Store, config: SyncConfig) -> Self {
        let breaker = Arc::new(CircuitBreaker::new(config.breaker));
        Self {
            client,
            store,
            config,
            progress: Arc::new(Progress::default()),
            breaker,
            warnings: WarningLog::default(),
            notice: Arc::new(|m| tracing::warn!("{m}")),
        }
    }

    /// Where to tell the user something they should know while the run starts (waiting for a
    /// lease): by default a warning in the log.
    pub fn with_notice(mut self, notice: impl Fn(String) + Send + Sync + 'static) -> Self {
        self.notice = Arc::new(notice);
        self
    }

    /// Live counters, for a progress display.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The client this engine calls the platform with.
    pub fn client(&self) -> &AdClient {
        &self.client
    }

    /// Runs (or resumes) the tenant's sync until it is done, cancelled, or stopped by the
    /// platform or the database. Errors before the run starts (wrong credentials, platform
    /// unreachable, database down, tenant busy) are returned as [`SyncError`]; everything
    /// after is in the report.
    #[tracing::instrument(skip_all, fields(tenant = %self.config.tenant))]
    pub async fn run(&self, cancel: CancellationToken) -> Result<RunReport, SyncError> {
        let started = Instant::now();
        let client_before = self.client.stats();
        // Credentials first: a wrong password fails before anything is written.
        self.client.authenticate().await?;
        let acquired =
            ownership::acquire(&self.store, &self.config, &cancel, &*self.notice).await?;
        self.run_acquired(acquired, cancel, started, client_before)
            .await
    }

    /// Runs a run a worker claimed from the queue under `lease` (see the service's queue),
    /// from its checkpoint. Unlike [`SyncEngine::run`], the run exists and is held before the
    /// platform is asked anything, so a refused login fails the run (`failed`, with the
    /// platform's reason) and an unreachable platform stops it (`interrupted`,
    /// `platform_down`): both are in the report.
    #[tracing::instrument(skip_all, fields(tenant = %self.config.tenant, run = run.id))]
    pub async fn run_claimed(
        &self,
        run: RunRecord,
        lease: Lease,
        cancel: CancellationToken,
    ) -> Result<RunReport, SyncError> {
        let started = Instant::now();
        let client_before = self.client.stats();
        let resumed = run.attempts > 1 || run.resumes > 0 || run.counters.pages > 0;
        if let Err(e) = self.client.authenticate().await {
            let stop = if e.is_transient() {
                Stop::Unreachable(e)
            } else {
                Stop::Fatal(e)
            };
            let client = self.client.stats().since(&client_before);
            return self
                .end(&run, &lease, Err(stop), client, started.elapsed(), resumed)
                .await;
        }
        let acquired = ownership::Acquired {
            run,
            lease,
            resumed,
        };
        self.run_acquired(acquired, cancel, started, client_before)
            .await
    }

    async fn run_acquired(
        &self,
        acquired: ownership::Acquired,
        cancel: CancellationToken,
        started: Instant,
        client_before: adsync_client::StatsSnapshot,
    ) -> Result<RunReport, SyncError> {
        let ownership::Acquired {
            run,
            lease,
            resumed,
        } = acquired;
        self.progress
            .page_size
            .store(run.page_size, Ordering::Relaxed);
        self.progress.set_cursor(&run.cursor);
        tracing::info!(
            run = run.id,
            resumed,
            epoch = lease.epoch,
            pass = run.cursor.pass,
            next_page = run.cursor.next_page,
            page_size = run.page_size,
            "sync run started"
        );

        let ctx = RunCtx {
            lease,
            stop: cancel.child_token(),
            hard: CancellationToken::new(),
            synced: Default::default(),
            handoff: Default::default(),
            watch: Arc::new(ownership::LeaseWatch::new(self.config.lease_ttl)),
        };
        let kept_because = Arc::new(Mutex::new(None));
        // Dies with this future, even when the caller drops it mid-run: a lease renewed by an
        // orphaned task would keep every other process out of the run.
        let keeper = AbortOnDrop(ownership::keep(
            self.store.clone(),
            ctx.lease.clone(),
            ctx.watch.clone(),
            ctx.stop.clone(),
            ctx.hard.clone(),
            kept_because.clone(),
        ));
        let outcome = self.drive(&run, &ctx).await;
        drop(keeper);
        let outcome = match (kept_because.lock().await.take(), outcome) {
            (Some(keeper_reason), Err(e)) if keeper_reason.weight() >= e.weight() => {
                Err(keeper_reason)
            }
            (_, outcome) => outcome,
        };
        let client = self.client.stats().since(&client_before);
        let duration = started.elapsed();
        self.end(&run, &ctx.lease, outcome, client, duration, resumed)
            .await
    }

    /// Records the end of the run (unless the lease was lost) and builds the report.
    async fn end(
        &self,
        run: &RunRecord,
        lease: &Lease,
        outcome: Result<(), Stop>,
        client: adsync_client::StatsSnapshot,
        duration: Duration,
        resumed: bool,
    ) -> Result<RunReport, SyncError> {
        let resumer = self.config.resumer;
        let (ending, error) = match &outcome {
            Ok(()) => (RunEnding::Finished, None),
            Err(Stop::Cancelled) => (
                RunEnding::Stopped(StopReason::Cancelled),
                Some(resumer.interrupted()),
            ),
            Err(Stop::PlatformDown(e)) => (
                RunEnding::Stopped(StopReason::PlatformDown),
                Some(resumer.platform_down(e)),
            ),
            Err(Stop::Unreachable(e)) => (
                RunEnding::Stopped(StopReason::PlatformDown),
                Some(format!("{e}; the run is resumed later")),
            ),
            Err(Stop::Store(e)) => (
                RunEnding::Stopped(StopReason::DatabaseDown),
                Some(resumer.store_down(e)),
            ),
            Err(Stop::LeaseLost) => (
                RunEnding::Stopped(StopReason::LeaseLost),
                Some(
                    "another process took this run over; this one stopped without writing"
                        .to_owned(),
                ),
            ),
            Err(Stop::Fatal(e)) => (
                RunEnding::Failed,
                Some(resumer.failed(&self.config.tenant, e)),
            ),
        };
        let cursor = self.progress.cursor().unwrap_or(run.cursor);
        let error = error.or_else(|| {
            (cursor.done && !cursor.complete).then(|| {
                "the listing could not be proven complete (see the run's warnings); nothing was marked removed"
                    .to_owned()
            })
        });
        let last_call = self.progress.sync_latency().unwrap_or_default();
        let stored = self.progress.snapshot().stored as i64;
        // The floor at the limit the platform enforced: a lower one learned from its 429s
        // (the configured one said more than it allows), else the configured one.
        let configured = self.client.config().rate_limit;
        let learned = u32::try_from(self.client.limiter().requests())
            .ok()
            .filter(|&n| n < configured.requests)
            .and_then(|n| adsync_domain::RateLimit::new(n, configured.window));
        let limit = learned.unwrap_or(configured);
        let floor = floor_for(limit, &cursor, run.page_size, stored, last_call);
        let end = RunEnd {
            ending,
            error: error.clone(),
            client: RunCounters {
                requests: client.requests as i64,
                retries: client.retries as i64,
                rate_limited: client.rate_limited as i64,
                token_refreshes: client.token_refreshes as i64,
                limiter_wait_seconds: client.limiter_wait_us as f64 / 1e6,
                ..RunCounters::default()
            },
            active_seconds: duration.as_secs_f64(),
            throttled_seconds: client.throttled_us as f64 / 1e6,
            floor_seconds: floor.map(|f| f.as_secs_f64()),
            at: Utc::now(),
        };
        // A process that lost its lease must not write, not even the end of the run.
        let recorded = match ending {
            RunEnding::Stopped(StopReason::LeaseLost) => self.store.run(run.id).await,
            _ => self.store.finish_run(lease, &end).await,
        };
        let (record, outcome) = match recorded {
            Ok(record) if ending != RunEnding::Stopped(StopReason::LeaseLost) => {
                let outcome = Outcome::of(record.status, record.stop_reason);
                (record, outcome)
            }
            Ok(record) => (
                RunRecord {
                    status: RunStatus::Interrupted,
                    ..record
                },
                Outcome::LeaseLost,
            ),
            Err(StoreError::NotFound(_)) if ending == RunEnding::Stopped(StopReason::LeaseLost) => {
                deleted_while_running(run)
            }
            Err(e @ StoreError::LeaseLost { .. }) => {
                if let Err(StoreError::NotFound(_)) = self.store.run(run.id).await {
                    deleted_while_running(run)
                } else {
                    // Taken over between the last write and the end: the new owner records it.
                    tracing::error!(error = %e, "lost the run's lease before recording its end");
                    (run.clone(), Outcome::LeaseLost)
                }
            }
            Err(e) => {
                // The database is what failed: the run stays `running`, and the next
                // `adsync sync` takes it over once the lease runs out.
                tracing::error!(error = %e, "could not record the end of the run");
                let outcome = match ending {
                    RunEnding::Stopped(StopReason::Cancelled) => Outcome::Cancelled,
                    RunEnding::Failed => Outcome::Failed,
                    _ => Outcome::DatabaseDown,
                };
                (run.clone(), outcome)
            }
        };
        let warnings = self.store.run_warnings(run.id).await.unwrap_or_default();
        let active = Duration::from_secs_f64(record.active_seconds.max(duration.as_secs_f64()));
        let report = RunReport {
            run_id: run.id,
            tenant: self.config.tenant.clone(),
            status: record.status,
            outcome,
            resumed,
            counters: record.counters,
            listing: cursor,
            warnings,
            client,
            duration,
            active,
            throttled: Duration::from_secs_f64(record.throttled_seconds.max(0.0)),
            floor,
            floor_ratio: floor
                .filter(|f| !f.is_zero())
                .map(|f| active.as_secs_f64() / f.as_secs_f64()),
            learned_limit: learned.map(|l| l.to_string()),
            error: record.error.or(error),
        };
        tracing::info!(
            run = report.run_id,
            status = %report.status,
            outcome = ?report.outcome,
            duration_s = duration.as_secs_f64(),
            "sync run ended"
        );
        Ok(report)
    }

    /// Lists and syncs until done or stopped.
    async fn drive(&self, run: &RunRecord, ctx: &RunCtx) -> Result<(), Stop> {
        let grace = {
            let (stop, hard, grace) = (
                ctx.stop.clone(),
                ctx.hard.clone(),
                self.config.shutdown_grace,
            );
            AbortOnDrop(tokio::spawn(async move {
                stop.cancelled().await;
                tokio::time::sleep(grace).await;
                hard.cancel();
            }))
        };
        // A run with nothing stored has no checkpoint to read: skipping the two reads saved
        // a thousand runs started at once two thousand queries before their first page.
        let (pending, listed) = if run.nothing_stored() {
            (Vec::new(), Vec::new())
        } else {
            (
                self.store.pending_syncs(run.id).await?,
                self.store.listed(run.id).await?,
            )
        };
        if !pending.is_empty() {
            tracing::info!(
                count = pending.len(),
                "resuming: campaigns stored but not yet synced"
            );
        }
        let pager = Pager::resume(run.cursor, run.page_size, self.config.pager, listed);
        // Bounded: the listing may run ahead of the sync calls by a couple of pages at most.
        let capacity = (run.page_size as usize).saturating_mul(2).clamp(64, 20_000);
        // Each id with the number of the page its writes wait for (0: stored by an earlier
        // process; see `handoff`).
        let (tx, rx) = mpsc::channel::<(String, u64)>(capacity);
        let producer = async {
            self.progress
                .pending
                .fetch_add(pending.len() as u64, Ordering::Relaxed);
            for id in pending {
                if tx.send((id, 0)).await.is_err() {
                    return Err(Stop::Cancelled);
                }
            }
            let r = self.list_pages(ctx, pager, tx).await;
            ctx.handoff.close();
            if r.is_err() {
                ctx.stop.cancel();
            }
            r
        };
        let consumers_done = CancellationToken::new();
        let consumer = async {
            let r = self.sync_all(ctx, rx).await;
            consumers_done.cancel();
            if r.is_err() {
                ctx.stop.cancel();
            }
            r
        };
        let recorder = async {
            let r = self.flush_synced(ctx, &consumers_done).await;
            if r.is_err() {
                ctx.stop.cancel();
            }
            r
        };
        let (listed, synced, recorded) = tokio::join!(producer, consumer, recorder);
        drop(grace);
        [listed, synced, recorded]
            .into_iter()
            .filter_map(Result::err)
            .max_by_key(Stop::weight)
            .map_or(Ok(()), Err)
    }

    /// Waits until the circuit breaker lets a call through, unless the run is stopping.
    pub(crate) async fn admitted(&self, stop: &CancellationToken) -> Result<(), Stop> {
        tokio::select! {
            biased;
            _ = stop.cancelled() => Err(Stop::Cancelled),
            admitted = self.breaker.admit() => Ok(admitted?),
        }
    }
}

/// A spawned task that is aborted when this guard is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The end of a run whose row is gone: its tenant was deleted while it ran (a tenant's delete
/// takes its runs with it), so every write since was refused and there is nothing to record.
fn deleted_while_running(run: &RunRecord) -> (RunRecord, Outcome) {
    tracing::info!(
        run = run.id,
        tenant = %run.tenant_id,
        "the run was deleted while it ran (with its tenant); stopped without writing"
    );
    (
        RunRecord {
            status: RunStatus::Interrupted,
            ..run.clone()
        },
        Outcome::LeaseLost,
    )
}
