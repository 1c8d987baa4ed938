//! A worker: claims queued runs (up to `slots` at once), runs each with the sync engine
//! under the lease the claim granted, and settles how it ended: requeued after a shutdown or
//! an outage (with a backoff), cancelled when asked. It also reaps runs whose lease ran out
//! (their worker died), and checks for cancellation requests. Any number of workers on any
//! number of machines share one PostgreSQL.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use adsync_client::{
    AdClient, ClientConfig, RetryPolicy, SharedBudget, SlidingWindowLimiter, StatsSnapshot,
};
use adsync_domain::RateLimit;
use adsync_store::{RunCounters, RunId, RunStatus, StopReason};
use adsync_sync::{BreakerConfig, Outcome, Progress, SyncConfig, SyncEngine, SyncRecorder};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::{
    Result, Service, ServiceError,
    budget::{BudgetKey, BudgetOptions, DbBudget, Granter},
    events::{Events, RunEvent},
    queue::{Claimed, Settle, platform_backoff},
    tenants::Tenant,
    vault::Credentials,
};

/// Listing pages being fetched at once by a worker's runs (each some hundred kilobytes; a
/// checked page waiting for its store keeps its records, at most one per run).
const PAGES_AT_ONCE: usize = 32;

/// Listing pages being stored at once by a worker's runs: one per two cores of this machine,
/// at least one. A page's store is the largest write of a run (milliseconds of the database's
/// time), and at the start of a thousand runs a thousand of them queue. Nothing waits for
/// them but the runs' records of their sync calls (the calls start before their page is
/// stored, see `adsync_sync::Handoff`), while the calls themselves wait for grants, which
/// need the database's CPU too: stores that take all of it make the grants late, and a late
/// slot is lost. On this project's 2-core machine, one store at a time ended a thousand runs
/// at 1.153-1.167 x floor against 1.19-1.20 with four (BENCHMARKS.md section 6).
fn stores_at_once() -> usize {
    (cores() / 2).max(1)
}

/// The workers' default database pool: two connections per core of this machine, 4 to 32. A
/// worker's writes are short statements, and more backends than the cores can run only
/// queue for them and for the cores the workers need: on this project's 2-core machine
/// (PostgreSQL on the same host), a thousand runs ended at 1.17-1.25 x floor with 4
/// connections against 1.20-1.49 with 16, and their budgets dropped tens of late slots
/// instead of thousands (BENCHMARKS.md section 6).
pub fn default_pool() -> u32 {
    u32::try_from(cores() * 2).unwrap_or(u32::MAX).clamp(4, 32)
}

/// Cores this process may use (the cgroup's quota counts), 1 if unknown.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// How often a running run's live counters are published (when they moved).
const LIVE_EVERY: Duration = Duration::from_millis(500);

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Runs at once (each is a few async tasks; the rate limit, not the CPU, paces them).
    pub slots: usize,
    /// The lease of a claimed run: a worker that dies holding it delays the run this long.
    pub lease_ttl: Duration,
    /// How often a worker looks for queued runs (and cancellations, and runs to reap). On
    /// PostgreSQL it also wakes when a run is queued (`LISTEN`).
    pub poll: Duration,
    /// Who this worker is (`host:pid`), recorded as the run's owner.
    pub owner: String,
    /// Spend each client id's rate budget in the database (shared with every worker and
    /// tenant using it). Off only for a single process alone with its database.
    pub shared_budgets: bool,
    /// After a shutdown request, how long runs get to checkpoint.
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            slots: 4,
            lease_ttl: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            owner: adsync_sync::this_process(),
            shared_budgets: true,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Limiters and budgets of this process, one per (platform, client id): tenants sharing a
/// client id share them, as the platform counts them together.
#[derive(Default, Debug)]
struct Pacers {
    by_key: Mutex<HashMap<(String, String), Pacer>>,
    /// One HTTP client (connection pools, TLS roots) for every tenant of the process: one
    /// per tenant cost about 0.3 MB and a connection pool each.
    http: std::sync::OnceLock<reqwest::Client>,
    /// Listing pages being fetched at once, over every run of the worker.
    pages: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
    /// Listing pages being stored at once, over every run of the worker.
    stores: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
    /// Records the sync successes of every run of the worker together.
    recorder: std::sync::OnceLock<SyncRecorder>,
    /// Makes the grants of every shared budget of the worker together (PostgreSQL).
    granter: std::sync::OnceLock<Option<Granter>>,
}

/// The limit it was made for, the limiter, and the shared budget (when budgets are shared).
type Pacer = (RateLimit, Arc<SlidingWindowLimiter>, Option<Arc<DbBudget>>);

impl Pacers {
    fn get(
        &self,
        service: &Service,
        url: &Url,
        client_id: &str,
        limit: RateLimit,
        shared: bool,
    ) -> (Arc<SlidingWindowLimiter>, Option<Arc<DbBudget>>) {
        let key = (url.as_str().to_owned(), client_id.to_owned());
        let mut map = self.by_key.lock().expect("pacers lock");
        if let Some((l, limiter, budget)) = map.get(&key)
            && *l == limit
        {
            return (limiter.clone(), budget.clone());
        }
        let limiter = Arc::new(SlidingWindowLimiter::new(limit));
        let budget = shared.then(|| {
            // Grants reach half a window ahead: a burst of sends takes one transaction, and
            // a holder still cannot keep more than half a window from the others sharing
            // the client id.
            let options = BudgetOptions {
                horizon: Some(limit.window / 2),
                ..BudgetOptions::default()
            };
            let budget = DbBudget::with_options(
                service.store.clone(),
                BudgetKey::new(url, client_id),
                limit,
                limiter.clone(),
                options,
            );
            let granter = self.granter.get_or_init(|| match &service.store {
                adsync_store::Store::Postgres(pool) => Some(Granter::spawn(pool.clone())),
                adsync_store::Store::Sqlite(_) => None,
            });
            Arc::new(match granter {
                Some(granter) => budget.gathered(granter.clone()),
                None => budget,
            })
        });
        map.insert(key, (limit, limiter.clone(), budget.clone()));
        (limiter, budget)
    }
}

/// A worker over a [`Service`].
#[derive(Debug, Clone)]
pub struct Worker {
    service: Service,
    config: WorkerConfig,
    pacers: Arc<Pacers>,
}

/// PostgreSQL's `LISTEN` on the queue's channel: a hint that a run was queued, so an idle
/// worker claims it at once instead of at its next poll. Only a hint: notifications are lost
/// while the connection is down, so workers poll anyway, and without it they only poll.
struct Wake {
    listener: Option<sqlx::postgres::PgListener>,
}

impl Wake {
    async fn listen(store: &adsync_store::Store) -> Self {
        let listener = match store {
            adsync_store::Store::Postgres(pool) => {
                match adsync_store::listen::listener(pool, crate::queue::pg::WAKE_CHANNEL).await {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for queued runs; polling only");
                        None
                    }
                }
            }
            adsync_store::Store::Sqlite(_) => None,
        };
        Self { listener }
    }

    /// Returns when a run may have been queued; never, once listening failed.
    async fn notified(&mut self) {
        let Some(listener) = self.listener.as_mut() else {
            return std::future::pending().await;
        };
        match listener.recv().await {
            // A thousand runs queued at once are one wake-up, not a thousand.
            Ok(_) => while listener.next_buffered().is_some() {},
            Err(e) => {
                tracing::warn!(error = %e, "lost the queue's notifications; polling only");
                self.listener = None;
            }
        }
    }
}

/// A run in progress here.
struct Active {
    cancel: CancellationToken,
    cancel_requested: Arc<std::sync::atomic::AtomicBool>,
}

impl Worker {
    /// A worker for `service`.
    pub fn new(service: Service, config: WorkerConfig) -> Self {
        Self {
            service,
            config,
            pacers: Arc::default(),
        }
    }

    /// Claims and runs until `shutdown`; then stops its runs (each checkpointed and
    /// requeued for another worker) within the grace period and returns.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let active: Arc<Mutex<HashMap<RunId, Active>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let reap_every = (self.config.lease_ttl / 2).max(Duration::from_millis(100));
        let mut next_reap = tokio::time::Instant::now();
        let mut failures = 0u32;
        let mut wake = Wake::listen(&self.service.store).await;
        tracing::info!(owner = %self.config.owner, slots = self.config.slots, "worker started");
        let started_at = chrono::Utc::now();
        loop {
            // Runs that ended.
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a run task panicked");
                }
            }
            let step = async {
                if tokio::time::Instant::now() >= next_reap {
                    next_reap = tokio::time::Instant::now() + reap_every;
                    // Alive, for the dashboard's workers page (a worker holding no run leaves
                    // no other trace).
                    crate::workers::beat(
                        &self.service.store,
                        &self.config.owner,
                        self.config.slots,
                        tasks.len(),
                        self.config.lease_ttl,
                        started_at,
                    )
                    .await?;
                    let reaped = self.service.queue.reap().await?;
                    if !reaped.is_empty() {
                        metrics::counter!("adsync_lease_takeovers_total")
                            .increment(reaped.len() as u64);
                        tracing::warn!(runs = ?reaped, "requeued runs whose lease ran out");
                        for id in reaped {
                            self.publish_stored(id, None).await;
                        }
                    }
                }
                self.check_cancellations(&active).await?;
                let free = self.config.slots.saturating_sub(tasks.len());
                let claimed = self
                    .service
                    .queue
                    .claim(&self.config.owner, self.config.lease_ttl, free)
                    .await?;
                Ok::<_, ServiceError>(claimed)
            };
            match step.await {
                Ok(claimed) => {
                    failures = 0;
                    let mut prepared = self.prepare(&claimed).await;
                    if self.config.shared_budgets {
                        self.create_budgets(&prepared).await;
                    }
                    // Their starts, in one notification: after the claim, so after the
                    // `queued` each was published with, and never coalesced away by it.
                    let starts: Vec<RunEvent> = claimed
                        .iter()
                        .map(|c| {
                            RunEvent::with_counters(
                                c.run.id,
                                &c.run.tenant_id,
                                RunStatus::Running.as_str(),
                                &c.run.counters,
                            )
                        })
                        .collect();
                    self.service.events.publish_many(&starts).await;
                    for c in claimed {
                        let tenant = prepared.remove(&c.run.tenant_id);
                        let token = shutdown.child_token();
                        let requested = Arc::new(std::sync::atomic::AtomicBool::new(false));
                        active.lock().expect("active lock").insert(
                            c.run.id,
                            Active {
                                cancel: token.clone(),
                                cancel_requested: requested.clone(),
                            },
                        );
                        let this = self.clone();
                        let active = active.clone();
                        tasks.spawn(async move {
                            let id = c.run.id;
                            this.execute(c, tenant, token, requested).await;
                            active.lock().expect("active lock").remove(&id);
                        });
                    }
                }
                Err(e) => {
                    failures += 1;
                    let level_error = failures == 1 || failures.is_multiple_of(30);
                    if level_error {
                        tracing::error!(error = %e, "worker: the queue is unreachable; retrying");
                    }
                }
            }
            // A free slot is filled at the next poll, or at once when PostgreSQL says a run
            // was queued; a run ending here frees its slot for the next poll.
            let idle = self.config.poll;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(idle) => {}
                () = wake.notified() => {}
            }
        }
        tracing::info!(
            runs = tasks.len(),
            "worker stopping: checkpointing its runs"
        );
        let deadline = self.config.shutdown_grace + Duration::from_secs(5);
        if tokio::time::timeout(deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("runs did not stop within the grace period; their leases will run out");
            tasks.abort_all();
        }
        if let Err(e) = crate::workers::gone(&self.service.store, &self.config.owner).await {
            tracing::warn!(error = %e, "could not remove this worker from the registry");
        }
        Ok(())
    }

    async fn check_cancellations(&self, active: &Mutex<HashMap<RunId, Active>>) -> Result<()> {
        let ids: Vec<RunId> = active
            .lock()
            .expect("active lock")
            .keys()
            .copied()
            .collect();
        for id in self.service.queue.cancel_requested(&ids).await? {
            if let Some(a) = active.lock().expect("active lock").get(&id) {
                a.cancel_requested
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                a.cancel.cancel();
            }
        }
        Ok(())
    }

    /// The claimed runs' tenants and credentials, read together (a run missing here reads
    /// its own in [`Worker::engine_for`]).
    async fn prepare(&self, claimed: &[Claimed]) -> HashMap<String, Result<(Tenant, Credentials)>> {
        if claimed.is_empty() {
            return HashMap::new();
        }
        let ids: Vec<&str> = claimed.iter().map(|c| c.run.tenant_id.as_str()).collect();
        match self.service.tenants.for_runs(&ids).await {
            Ok(prepared) => prepared,
            Err(e) => {
                tracing::debug!(error = %e, "claimed runs' tenants not read together; each reads its own");
                HashMap::new()
            }
        }
    }

    /// The claimed runs' budget rows, created together before their first grants (see
    /// [`crate::budget::create_missing`]); a run whose row this misses creates its own.
    async fn create_budgets(&self, prepared: &HashMap<String, Result<(Tenant, Credentials)>>) {
        let budgets: Vec<(BudgetKey, RateLimit)> = prepared
            .values()
            .filter_map(|p| p.as_ref().ok())
            .filter_map(|(t, _)| {
                Some((
                    BudgetKey::new(&platform_url(t).ok()?, &t.client_id),
                    t.limit(),
                ))
            })
            .collect();
        if let Err(e) = crate::budget::create_missing(&self.service.store, &budgets).await {
            tracing::debug!(error = %e, "claimed runs' budgets not created together; each first grant creates its own");
        }
    }

    /// Runs one claimed run to its end and settles it.
    async fn execute(
        &self,
        claimed: Claimed,
        prepared: Option<Result<(Tenant, Credentials)>>,
        cancel: CancellationToken,
        cancel_requested: Arc<std::sync::atomic::AtomicBool>,
    ) {
        let Claimed { run, lease } = claimed;
        let id = run.id;
        if run.attempts > 1 {
            metrics::counter!("adsync_run_resumes_total").increment(1);
        }
        let engine = match self
            .engine_for(&run.tenant_id, run.page_size, prepared)
            .await
        {
            Ok(engine) => engine,
            Err(e) => {
                tracing::error!(run = id, error = %e, "cannot prepare the run");
                let end = adsync_store::RunEnd {
                    ending: if e.is_transient() {
                        adsync_store::RunEnding::Stopped(StopReason::DatabaseDown)
                    } else {
                        adsync_store::RunEnding::Failed
                    },
                    error: Some(e.to_string()),
                    client: Default::default(),
                    active_seconds: 0.0,
                    throttled_seconds: 0.0,
                    floor_seconds: None,
                    at: chrono::Utc::now(),
                };
                if self.service.store.finish_run(&lease, &end).await.is_ok() && e.is_transient() {
                    let _ = self
                        .service
                        .queue
                        .settle(
                            &lease,
                            Settle::Requeue {
                                after: platform_backoff(run.attempts),
                            },
                        )
                        .await;
                }
                self.publish_stored(id, Some(&run.tenant_id)).await;
                return;
            }
        };
        let attempts = run.attempts;
        let tenant = run.tenant_id.clone();
        let events = &self.service.events;
        let live = Live {
            events: events.clone(),
            run: id,
            tenant: tenant.clone(),
            base: run.counters,
            progress: engine.progress(),
            client: engine.client().clone(),
            client_before: engine.client().stats(),
        };
        // The start went out with the claim's (`Worker::run`): one notification for every
        // run claimed at once, not one round trip each before the first page.
        let started = live.event();
        let stop_live = CancellationToken::new();
        let live_task = tokio::spawn(live.publish_until(started, stop_live.clone()));
        let result = engine.run_claimed(run, lease.clone(), cancel).await;
        // The last live event goes out before the final one.
        stop_live.cancel();
        let _ = live_task.await;
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(run = id, error = %e, "run could not start");
                self.publish_stored(id, Some(&tenant)).await;
                return;
            }
        };
        metrics::counter!("adsync_runs_total", "outcome" => format!("{:?}", report.outcome).to_lowercase())
            .increment(1);
        metrics::counter!("adsync_campaigns_synced_total")
            .increment(report.counters.campaigns_synced.max(0) as u64);
        metrics::histogram!("adsync_run_duration_seconds").record(report.duration.as_secs_f64());
        let requested = cancel_requested.load(std::sync::atomic::Ordering::SeqCst);
        // The report's outcome already says why the run stopped (its status and stop
        // reason as recorded); a run that did not stop early needs no settling.
        let settle = match report.outcome {
            Outcome::Cancelled if requested => Some(Settle::Cancel),
            Outcome::Cancelled => Some(Settle::Requeue {
                after: Duration::ZERO,
            }),
            Outcome::PlatformDown | Outcome::DatabaseDown => Some(Settle::Requeue {
                after: platform_backoff(attempts),
            }),
            _ => None,
        };
        let mut status = report.status;
        if let Some(how) = settle {
            match self.service.queue.settle(&lease, how).await {
                Ok(true) => {
                    tracing::info!(run = id, ?how, "run settled");
                    status = match how {
                        Settle::Requeue { .. } => RunStatus::Queued,
                        Settle::Cancel => RunStatus::Cancelled,
                    };
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(run = id, error = %e, "could not settle the run; the reaper will requeue it after a minute")
                }
            }
        }
        let mut ended = RunEvent::with_counters(id, &tenant, status.as_str(), &report.counters);
        ended.total_hint = report.listing.reported_total;
        ended.pending = Some(engine.progress().snapshot().pending);
        events.publish(&ended).await;
        tracing::info!(
            run = id,
            status = %report.status,
            synced = report.counters.campaigns_synced,
            duration_s = report.duration.as_secs_f64(),
            ratio = report.floor_ratio,
            "run ended"
        );
    }

    /// Publishes the run as stored (after an end the worker did not see through): its status
    /// and counters. Never fails.
    async fn publish_stored(&self, id: RunId, tenant: Option<&str>) {
        match self.service.store.run(id).await {
            Ok(run) => {
                let event = RunEvent::with_counters(
                    id,
                    tenant.unwrap_or(&run.tenant_id),
                    run.status.as_str(),
                    &run.counters,
                );
                self.service.events.publish(&event).await;
            }
            Err(e) => tracing::debug!(run = id, error = %e, "run event not published"),
        }
    }

    /// An engine for the tenant: its credentials opened, its client paced by the limiter
    /// and budget of its (platform, client id).
    async fn engine_for(
        &self,
        tenant_id: &str,
        page_size: u64,
        prepared: Option<Result<(Tenant, Credentials)>>,
    ) -> Result<SyncEngine> {
        let (tenant, creds) = match prepared {
            Some(prepared) => prepared?,
            None => (
                self.service.tenants.get(tenant_id).await?,
                self.service.tenants.credentials(tenant_id).await?,
            ),
        };
        let url = platform_url(&tenant)?;
        let limit = tenant.limit();
        // Delays scale with the window: a platform (or simulator) with 1 s windows retries
        // and cools down sixty times faster than one with 60 s windows.
        let scale = (Duration::from_secs(60).as_secs_f64() / limit.window.as_secs_f64()).max(1.0);
        let (limiter, budget) = self.pacers.get(
            &self.service,
            &url,
            &tenant.client_id,
            limit,
            self.config.shared_budgets,
        );
        let mut config = ClientConfig::new(
            url,
            adsync_client::Credentials {
                email: creds.email.clone(),
                password: creds.password.clone(),
            },
        );
        config.client_id = tenant.client_id.clone();
        config.http = Some(match self.pacers.http.get() {
            Some(http) => http.clone(),
            None => {
                let http = AdClient::http_client(config.connect_timeout)
                    .map_err(|e| ServiceError::Invalid(e.to_string()))?;
                self.pacers.http.get_or_init(|| http).clone()
            }
        });
        config.rate_limit = limit;
        config.retry = RetryPolicy::default().scaled(scale);
        if let Some(budget) = budget {
            config = config.with_shared_budget(budget as Arc<dyn SharedBudget>);
        }
        let client = AdClient::with_limiter(config, limiter)
            .map_err(|e| ServiceError::Invalid(format!("tenant {tenant_id}: {e}")))?;
        let sync = SyncConfig {
            tenant: tenant.id.clone(),
            platform: tenant.api_url.clone(),
            page_size,
            breaker: BreakerConfig::default().scaled(scale),
            lease_ttl: self.config.lease_ttl,
            shutdown_grace: self.config.shutdown_grace,
            page_permits: Some(
                self.pacers
                    .pages
                    .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(PAGES_AT_ONCE)))
                    .clone(),
            ),
            store_permits: Some(
                self.pacers
                    .stores
                    .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(stores_at_once())))
                    .clone(),
            ),
            recorder: Some(
                self.pacers
                    .recorder
                    .get_or_init(|| SyncRecorder::spawn(self.service.store.clone()))
                    .clone(),
            ),
            resumer: adsync_sync::Resumer::Service,
            ..SyncConfig::default()
        };
        Ok(SyncEngine::new(client, self.service.store.clone(), sync))
    }
}

/// What a running run's live events are made of: the counters stored when it was claimed
/// (earlier processes' work) plus this worker's progress and client counters.
struct Live {
    events: Events,
    run: RunId,
    tenant: String,
    base: RunCounters,
    progress: Arc<Progress>,
    client: AdClient,
    client_before: StatsSnapshot,
}

impl Live {
    /// The run now.
    fn event(&self) -> RunEvent {
        let p = self.progress.snapshot();
        let c = self.client.stats().since(&self.client_before);
        let b = &self.base;
        let add = |stored: i64, here: u64| Some(u64::try_from(stored).unwrap_or(0) + here);
        RunEvent {
            pages: add(b.pages, p.pages),
            stored: add(b.campaigns_stored, p.stored),
            synced: add(b.campaigns_synced, p.synced),
            dead_lettered: add(b.dead_lettered, p.dead_lettered),
            pending: Some(p.pending),
            total_hint: (p.total_hint > 0).then_some(p.total_hint),
            requests: add(b.requests, c.requests),
            retries: add(b.retries, c.retries),
            rate_limited: add(b.rate_limited, c.rate_limited),
            token_refreshes: add(b.token_refreshes, c.token_refreshes),
            limiter_wait_ms: Some(
                (b.limiter_wait_seconds.max(0.0) * 1000.0) as u64 + c.limiter_wait_us / 1000,
            ),
            ..RunEvent::status(self.run, &self.tenant, RunStatus::Running.as_str())
        }
    }

    /// Publishes the run every [`LIVE_EVERY`] while its counters move, until `stop`.
    async fn publish_until(self, mut last: RunEvent, stop: CancellationToken) {
        let mut tick = tokio::time::interval(LIVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = self.event();
            if now.changed_since(&last) {
                self.events.publish_live(now.clone());
                last = now;
            }
        }
    }
}

/// The platform's base URL of `tenant` (with the trailing slash its paths are joined to).
fn platform_url(tenant: &Tenant) -> Result<Url> {
    Url::parse(&format!("{}/", tenant.api_url))
        .map_err(|e| ServiceError::Invalid(format!("tenant {} api_url: {e}", tenant.id)))
}
