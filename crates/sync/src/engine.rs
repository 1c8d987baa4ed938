//! One sync run for one tenant.
//!
//! Data flow: a producer lists pages from the run's checkpoint on, validates each record,
//! stores the page (one transaction with the checkpoint) and sends the valid ids down a
//! channel; consumers call the sync endpoint for each id with bounded concurrency and record
//! each success. Ids stored but not yet synced by an earlier process of the same run are
//! queued first. Cancellation stops new work, lets in-flight calls finish within a grace
//! period, and leaves the checkpoint to resume from.

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use adsync_client::AdClient;
use adsync_domain::{Campaign, CampaignId, wire::CampaignPage};
use adsync_store::{
    NewDeadLetter, PageBatch, RunCounters, RunId, RunRecord, RunStatus, Stage, Store, StoreError,
};
use chrono::Utc;
use futures::{StreamExt, stream};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{BreakerConfig, CircuitBreaker, PlatformDown, Progress, RunReport};

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Tenant whose data is synced.
    pub tenant: String,
    /// Campaigns per page asked for (the server may cap it; a resumed run keeps its own).
    pub page_size: u64,
    /// Start a new run even if an interrupted one exists (which is then marked failed).
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
    /// How often the run's owner refreshes its heartbeat.
    pub heartbeat_every: Duration,
    /// A `running` run on another host whose heartbeat is older than this is taken over.
    pub stale_after: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            tenant: "default".into(),
            page_size: 100,
            fresh: false,
            sync_concurrency: None,
            campaign_attempts: 3,
            breaker: BreakerConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            heartbeat_every: Duration::from_secs(5),
            stale_after: Duration::from_secs(60),
        }
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
    /// Another live process is syncing this tenant.
    #[error(
        "tenant {tenant:?} is being synced by {owner} (run {run}); wait for it to finish, or stop it first"
    )]
    Busy {
        /// Tenant.
        tenant: String,
        /// The other process.
        owner: String,
        /// Its run.
        run: RunId,
    },
}

/// Why the work of a run stopped early.
#[derive(Debug)]
enum Stop {
    Cancelled,
    PlatformDown(PlatformDown),
    Fatal(adsync_client::Error),
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

impl From<PlatformDown> for Stop {
    fn from(e: PlatformDown) -> Self {
        Stop::PlatformDown(e)
    }
}

/// Runs syncs for one tenant against one platform and one database.
pub struct SyncEngine {
    client: AdClient,
    store: Store,
    config: SyncConfig,
    progress: Arc<Progress>,
    breaker: Arc<CircuitBreaker>,
}

/// The identity of this process, `host:pid`, recorded as a run's owner.
pub fn this_process() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{}:{}", host.trim(), std::process::id())
}

/// Whether the owner of a `running` run is still at work.
fn owner_alive(owner: &str, heartbeat_age: Option<Duration>, stale_after: Duration) -> bool {
    let me = this_process();
    let (my_host, _) = me.rsplit_once(':').unwrap_or((&me, ""));
    match owner.rsplit_once(':') {
        Some((host, pid)) if host == my_host => {
            // Same machine: the process table is the truth (a kill -9 leaves a fresh
            // heartbeat behind, and the restart should not have to wait it out).
            pid != std::process::id().to_string()
                && std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => heartbeat_age.is_some_and(|age| age < stale_after),
    }
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
        }
    }

    /// Live counters, for a progress display.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The client this engine calls the platform with.
    pub fn client(&self) -> &AdClient {
        &self.client
    }

    /// Sync calls in flight at once: enough to keep the limiter saturated (rate x expected
    /// latency) and never fewer than the window's burst, capped at 64.
    pub fn sync_concurrency(&self) -> usize {
        self.config.sync_concurrency.unwrap_or_else(|| {
            let c = self.client.config();
            let n = f64::from(c.rate_limit.requests);
            // The platform's sync call takes about a fifth of the default timeout (2 s of 10).
            let latency = c.request_timeout.as_secs_f64() / 5.0;
            let in_flight = (n / c.rate_limit.window.as_secs_f64() * latency).ceil();
            (in_flight.max(n) as usize).clamp(1, 64)
        })
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
        let (run, resumed) = self.open_run().await?;
        self.progress
            .page_size
            .store(run.page_size, Ordering::Relaxed);
        tracing::info!(
            run = run.id,
            resumed,
            next_page = run.next_page,
            page_size = run.page_size,
            "sync run started"
        );

        let heartbeat = self.spawn_heartbeat(run.id);
        let outcome = self.drive(&run, &cancel).await;
        heartbeat.abort();

        let client = self.client.stats().since(&client_before);
        let added = RunCounters {
            requests: client.requests as i64,
            retries: client.retries as i64,
            rate_limited: client.rate_limited as i64,
            token_refreshes: client.token_refreshes as i64,
            limiter_wait_seconds: client.limiter_wait_us as f64 / 1e6,
            ..RunCounters::default()
        };
        let (status, error) = match &outcome {
            Ok(()) => (None, None),
            Err(Stop::Cancelled) => (
                Some(RunStatus::Interrupted),
                Some("interrupted; run adsync sync again to resume".to_owned()),
            ),
            Err(Stop::PlatformDown(e)) => (
                Some(RunStatus::Interrupted),
                Some(format!("{e}; run adsync sync again later to resume")),
            ),
            Err(Stop::Fatal(e)) => (Some(RunStatus::Failed), Some(e.to_string())),
            Err(Stop::Store(e)) => (
                Some(RunStatus::Interrupted),
                Some(format!(
                    "{e}; nothing stored was lost, run adsync sync again to resume"
                )),
            ),
        };
        // Recording the end is best effort when the database is what failed: the run then
        // stays `running` and the next `adsync sync` resumes it.
        let record = self.finish(run.id, &added, status, error.as_deref()).await;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "could not record the end of the run");
                RunRecord {
                    status: status.unwrap_or(RunStatus::Interrupted),
                    error: error.clone(),
                    ..run.clone()
                }
            }
        };

        let duration = started.elapsed();
        let snapshot = self.progress.snapshot();
        let calls = snapshot.pages + snapshot.synced;
        let last_call = self.progress.sync_latency().unwrap_or_default();
        let floor = self.client.config().rate_limit.floor(calls, last_call);
        let report = RunReport {
            run_id: run.id,
            tenant: self.config.tenant.clone(),
            status: record.status,
            resumed,
            counters: record.counters,
            client,
            duration,
            floor,
            floor_ratio: if floor.is_zero() {
                0.0
            } else {
                duration.as_secs_f64() / floor.as_secs_f64()
            },
            error: record.error,
        };
        tracing::info!(
            run = report.run_id,
            status = %report.status,
            duration_s = duration.as_secs_f64(),
            "sync run ended"
        );
        Ok(report)
    }

    async fn finish(
        &self,
        run: RunId,
        added: &RunCounters,
        status: Option<RunStatus>,
        error: Option<&str>,
    ) -> Result<RunRecord, StoreError> {
        self.store.add_client_counters(run, added).await?;
        let record = self.store.run(run).await?;
        let status = status.unwrap_or(if record.counters.dead_lettered > 0 {
            RunStatus::Partial
        } else {
            RunStatus::Succeeded
        });
        self.store
            .finish_run(run, status, error, Utc::now())
            .await?;
        self.store.run(run).await
    }

    /// Finds the run to resume, or starts one.
    async fn open_run(&self) -> Result<(RunRecord, bool), SyncError> {
        let tenant = &self.config.tenant;
        let me = this_process();
        let now = Utc::now();
        if let Some(run) = self.store.resumable_run(tenant).await? {
            let age = run.heartbeat_at.and_then(|h| (now - h).to_std().ok());
            if run.status == RunStatus::Running
                && run
                    .owner
                    .as_deref()
                    .is_some_and(|o| owner_alive(o, age, self.config.stale_after))
            {
                return Err(SyncError::Busy {
                    tenant: tenant.clone(),
                    owner: run.owner.unwrap_or_default(),
                    run: run.id,
                });
            }
            if self.config.fresh {
                tracing::warn!(run = run.id, "abandoning the interrupted run (--fresh)");
                self.store
                    .finish_run(
                        run.id,
                        RunStatus::Failed,
                        Some("abandoned: a --fresh run replaced it"),
                        now,
                    )
                    .await?;
            } else {
                if run.page_size != self.config.page_size {
                    tracing::warn!(
                        run_page_size = run.page_size,
                        asked = self.config.page_size,
                        "resuming with the run's own page size (page numbers depend on it)"
                    );
                }
                return Ok((self.store.resume_run(run.id, &me, now).await?, true));
            }
        }
        Ok((
            self.store
                .start_run(tenant, self.config.page_size, &me, now)
                .await?,
            false,
        ))
    }

    fn spawn_heartbeat(&self, run: RunId) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let every = self.config.heartbeat_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = store.heartbeat(run, Utc::now()).await {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
            }
        })
    }

    /// Lists and syncs until done or stopped.
    async fn drive(&self, run: &RunRecord, cancel: &CancellationToken) -> Result<(), Stop> {
        // `stop` ends new work: on cancellation, or when either side fails. `hard` abandons
        // in-flight calls once the grace period after `stop` is over.
        let stop = cancel.child_token();
        let hard = CancellationToken::new();
        let grace = {
            let (stop, hard, grace) = (stop.clone(), hard.clone(), self.config.shutdown_grace);
            tokio::spawn(async move {
                stop.cancelled().await;
                tokio::time::sleep(grace).await;
                hard.cancel();
            })
        };

        let (tx, rx) = mpsc::unbounded_channel::<String>();
        let pending = self.store.pending_syncs(run.id).await?;
        if !pending.is_empty() {
            tracing::info!(
                count = pending.len(),
                "resuming: campaigns stored but not yet synced"
            );
        }
        self.progress
            .pending
            .fetch_add(pending.len() as u64, Ordering::Relaxed);
        for id in pending {
            let _ = tx.send(id);
        }

        let producer = async {
            let r = self.list_pages(run, tx, &stop).await;
            if r.is_err() {
                stop.cancel();
            }
            r
        };
        let consumer = async {
            let r = self.sync_all(run.id, rx, &stop, &hard).await;
            if r.is_err() {
                stop.cancel();
            }
            r
        };
        let (listed, synced) = tokio::join!(producer, consumer);
        grace.abort();
        let cancelled = cancel.is_cancelled();
        // The most telling reason wins: a real failure over the cancellation it caused.
        match (listed, synced) {
            (Err(e @ (Stop::Fatal(_) | Stop::Store(_) | Stop::PlatformDown(_))), _)
            | (_, Err(e @ (Stop::Fatal(_) | Stop::Store(_) | Stop::PlatformDown(_)))) => Err(e),
            _ if cancelled => Err(Stop::Cancelled),
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    /// Waits until the circuit breaker lets a call through, unless the run is stopping.
    async fn admitted(&self, stop: &CancellationToken) -> Result<(), Stop> {
        tokio::select! {
            biased;
            _ = stop.cancelled() => Err(Stop::Cancelled),
            admitted = self.breaker.admit() => Ok(admitted?),
        }
    }

    /// The producer: pages from the checkpoint on, each stored as it arrives.
    async fn list_pages(
        &self,
        run: &RunRecord,
        tx: mpsc::UnboundedSender<String>,
        stop: &CancellationToken,
    ) -> Result<(), Stop> {
        if run.listing_done {
            self.progress.listing_done.store(true, Ordering::Relaxed);
            return Ok(());
        }
        let mut page = run.next_page.max(1);
        loop {
            self.admitted(stop).await?;
            let fetched = tokio::select! {
                biased;
                // Abandoning a page fetch loses nothing: the page is not stored yet.
                _ = stop.cancelled() => return Err(Stop::Cancelled),
                r = self.client.list_campaigns(page, run.page_size) => r,
            };
            let data = match fetched {
                Ok(data) => {
                    self.breaker.record_success();
                    data
                }
                Err(e) if e.is_transient() => {
                    self.breaker.record_failure();
                    tracing::warn!(page, error = %e, "page failed after retries; trying again");
                    continue;
                }
                Err(e) => return Err(Stop::Fatal(e)),
            };
            let has_more = data.pagination.has_more;
            let ids = self.store_page(run.id, page, &data).await?;
            if let Some(total) = data.pagination.total {
                self.progress.total_hint.store(total, Ordering::Relaxed);
            }
            self.progress
                .pending
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
            for id in ids {
                let _ = tx.send(id);
            }
            if !has_more {
                self.progress.listing_done.store(true, Ordering::Relaxed);
                return Ok(());
            }
            page += 1;
        }
    }

    /// Validates and stores one page; returns the ids to sync.
    async fn store_page(
        &self,
        run: RunId,
        page: u64,
        data: &CampaignPage,
    ) -> Result<Vec<String>, StoreError> {
        let (campaigns, dead_letters) = validate_page(page, &data.data);
        for d in &dead_letters {
            tracing::warn!(campaign = %d.campaign_id, reason = %d.reason, "invalid record dead-lettered");
        }
        let batch = PageBatch {
            tenant: &self.config.tenant,
            run,
            page,
            next_page: data.pagination.has_more.then_some(page + 1),
            seen: data.data.len() as u64,
            campaigns: &campaigns,
            dead_letters: &dead_letters,
            observed_at: Utc::now(),
        };
        let outcome = self.store.store_page(&batch).await?;
        let p = &self.progress;
        p.pages.fetch_add(1, Ordering::Relaxed);
        p.seen.fetch_add(data.data.len() as u64, Ordering::Relaxed);
        p.stored.fetch_add(outcome.newly_stored, Ordering::Relaxed);
        p.dead_lettered
            .fetch_add(outcome.dead_lettered, Ordering::Relaxed);
        metrics::counter!("adsync_sync_pages_total").increment(1);
        metrics::counter!("adsync_sync_campaigns_stored_total").increment(outcome.newly_stored);
        tracing::info!(
            page,
            stored = campaigns.len(),
            dead_lettered = dead_letters.len(),
            has_more = data.pagination.has_more,
            "page stored"
        );
        Ok(campaigns
            .into_iter()
            .map(|c| c.id.as_str().to_owned())
            .collect())
    }

    /// The consumers: sync calls with bounded concurrency until the channel closes or `stop`.
    async fn sync_all(
        &self,
        run: RunId,
        rx: mpsc::UnboundedReceiver<String>,
        stop: &CancellationToken,
        hard: &CancellationToken,
    ) -> Result<(), Stop> {
        let ids = stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|id| (id, rx)) },
        )
        .take_until(stop.clone().cancelled_owned());
        let results = ids
            .map(|id| self.sync_one(run, id, stop, hard))
            .buffer_unordered(self.sync_concurrency());
        let mut results = std::pin::pin!(results);
        let mut first_error = None;
        while let Some(r) = results.next().await {
            if let Err(e) = r
                && first_error.is_none()
            {
                stop.cancel();
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn sync_one(
        &self,
        run: RunId,
        id: String,
        stop: &CancellationToken,
        hard: &CancellationToken,
    ) -> Result<(), Stop> {
        let cid = CampaignId::parse(&id).map_err(|e| {
            Stop::Fatal(adsync_client::Error::Protocol(format!(
                "stored id {id:?}: {e}"
            )))
        })?;
        let mut rounds = 0;
        loop {
            self.admitted(stop).await?;
            let result = tokio::select! {
                biased;
                _ = hard.cancelled() => return Err(Stop::Cancelled),
                r = timed(self.client.sync_campaign(&cid)) => r,
            };
            match result {
                Ok((_, took)) => {
                    self.breaker.record_success();
                    self.store
                        .mark_synced(&self.config.tenant, run, &id, Utc::now())
                        .await?;
                    let p = &self.progress;
                    p.synced.fetch_add(1, Ordering::Relaxed);
                    p.pending.fetch_sub(1, Ordering::Relaxed);
                    p.record_sync_latency(took);
                    metrics::counter!("adsync_sync_campaigns_synced_total").increment(1);
                    tracing::debug!(campaign = %id, "campaign synced");
                    return Ok(());
                }
                Err(
                    e @ (adsync_client::Error::InvalidCredentials { .. }
                    | adsync_client::Error::Unauthorized { .. }
                    | adsync_client::Error::Config(_)),
                ) => return Err(Stop::Fatal(e)),
                Err(e) if !e.is_transient() => {
                    // The platform answered, about this campaign only.
                    self.breaker.record_success();
                    return self.dead_letter_sync(run, &id, e.to_string()).await;
                }
                Err(e) => {
                    // Only failures while the platform is otherwise healthy count against
                    // the campaign; during an outage the breaker holds everyone.
                    if !self.breaker.record_failure() {
                        rounds += 1;
                    }
                    if rounds >= self.config.campaign_attempts {
                        return self
                            .dead_letter_sync(
                                run,
                                &id,
                                format!("gave up after {rounds} rounds of retries: {e}"),
                            )
                            .await;
                    }
                    tracing::warn!(campaign = %id, error = %e, "sync failed after retries; trying again");
                }
            }
        }
    }

    async fn dead_letter_sync(&self, run: RunId, id: &str, reason: String) -> Result<(), Stop> {
        tracing::warn!(campaign = %id, %reason, "sync dead-lettered");
        let letter = NewDeadLetter {
            campaign_id: id.to_owned(),
            stage: Stage::Sync,
            payload: serde_json::json!({ "id": id }).to_string(),
            reason,
        };
        self.store
            .dead_letter(&self.config.tenant, run, &letter, Utc::now())
            .await?;
        self.progress.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.progress.pending.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Runs `call` and says how long it took.
async fn timed<T, E>(call: impl Future<Output = Result<T, E>>) -> Result<(T, Duration), E> {
    let started = Instant::now();
    call.await.map(|v| (v, started.elapsed()))
}

/// Splits a page into valid campaigns and dead letters. A record without a usable id is keyed
/// by its position (`page 3 #7`).
pub(crate) fn validate_page(
    page: u64,
    records: &[Box<serde_json::value::RawValue>],
) -> (Vec<Campaign>, Vec<NewDeadLetter>) {
    let mut valid = Vec::with_capacity(records.len());
    let mut dead = Vec::new();
    for (i, raw) in records.iter().enumerate() {
        match Campaign::from_json_text(raw.get()) {
            Ok(c) => valid.push(c),
            Err(invalid) => dead.push(NewDeadLetter {
                campaign_id: invalid
                    .id
                    .filter(|id| CampaignId::parse(id).is_ok())
                    .unwrap_or_else(|| format!("page {page} #{i}")),
                stage: Stage::Validation,
                payload: raw.get().to_owned(),
                reason: invalid.reason,
            }),
        }
    }
    (valid, dead)
}

/// What `adsync dead-letters retry` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetryOutcome {
    /// Dead letters resolved now.
    pub resolved: u64,
    /// Dead letters that failed again.
    pub still_failing: u64,
    /// Validation dead letters whose payload is valid now: the next sync stores them.
    pub now_valid: u64,
}

/// Retries a tenant's unresolved dead letters: sync failures are called again (and resolved
/// on success); invalid records are validated again (a record valid now is stored, and its
/// dead letter resolved, by the next sync, which fetches its current version).
pub async fn retry_dead_letters(
    client: &AdClient,
    store: &Store,
    tenant: &str,
) -> Result<RetryOutcome, SyncError> {
    let mut outcome = RetryOutcome::default();
    for letter in store.dead_letters(tenant, false).await? {
        // Ok(true): resolved now; Ok(false): valid now, the next sync stores it; Err: why not.
        let result: Result<bool, String> = match letter.stage {
            Stage::Sync => match CampaignId::parse(&letter.campaign_id) {
                Ok(id) => match client.sync_campaign(&id).await {
                    Ok(_) => {
                        store
                            .mark_synced(tenant, letter.run_id, &letter.campaign_id, Utc::now())
                            .await?;
                        Ok(true)
                    }
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e),
            },
            Stage::Validation => serde_json::from_str::<serde_json::Value>(&letter.payload)
                .map_err(|e| e.to_string())
                .and_then(|v| Campaign::from_json(&v).map_err(|e| e.reason))
                .map(|_| false),
        };
        match result {
            Ok(true) => outcome.resolved += 1,
            Ok(false) => outcome.now_valid += 1,
            Err(reason) => {
                let again = NewDeadLetter {
                    campaign_id: letter.campaign_id.clone(),
                    stage: letter.stage,
                    payload: letter.payload.clone(),
                    reason,
                };
                store
                    .dead_letter(tenant, letter.run_id, &again, Utc::now())
                    .await?;
                outcome.still_failing += 1;
            }
        }
    }
    Ok(outcome)
}
