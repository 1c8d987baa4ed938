//! Runs as jobs. The queue is `sync_runs` itself: a run is `queued`, claimed by a worker
//! (`running`, on the lease of `adsync_store`: owner, fencing epoch, expiry renewed by the
//! engine's keeper), and ends. A partial unique index keeps one queued-or-running run per
//! tenant. Workers claim with `FOR UPDATE SKIP LOCKED` on PostgreSQL (a `BEGIN IMMEDIATE`
//! transaction on SQLite), the least recently served tenant first; the reaper requeues runs
//! whose lease ran out, from the run row alone; a requeued run resumes from its checkpoint.
//!
//! Why not a queue crate: apalis-postgres, graphile_worker and underway (checked 2026-11)
//! offer no "one active job per key" with a fencing epoch, and the run row already is the
//! job with its checkpoint and lease; a second table would be a second truth.

pub(crate) mod pg;
pub(crate) mod sqlite;

use std::{collections::HashMap, time::Duration};

use adsync_store::{Lease, RunId, RunRecord, RunStatus, Store, StoreError};
use serde::Serialize;

use crate::{
    Result,
    audit::Actor,
    events::{Events, RunEvent},
};

/// What [`Queue::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "run", rename_all = "snake_case")]
pub enum Enqueued {
    /// A new run was queued.
    Queued(RunId),
    /// The tenant's interrupted run was queued again (it resumes from its checkpoint).
    Requeued(RunId),
    /// The tenant already has a queued or running run: nothing changed.
    AlreadyActive(RunId),
}

impl Enqueued {
    /// The run concerned.
    pub fn run(self) -> RunId {
        match self {
            Enqueued::Queued(r) | Enqueued::Requeued(r) | Enqueued::AlreadyActive(r) => r,
        }
    }

    /// The `queued` event the tenant's subscribers get, if a run was queued (none when one
    /// was already active).
    pub fn queued_event(self, tenant: &str) -> Option<RunEvent> {
        match self {
            Enqueued::Queued(run) | Enqueued::Requeued(run) => {
                Some(RunEvent::status(run, tenant, RunStatus::Queued.as_str()))
            }
            Enqueued::AlreadyActive(_) => None,
        }
    }
}

/// What to queue: a tenant's run with its settings.
#[derive(Debug, Clone, Copy)]
pub struct RunRequest<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Page size for a new run (a requeued run keeps its own).
    pub page_size: u64,
    /// The platform's base URL (an interrupted run against another one is not resumed).
    pub platform: &'a str,
    /// `schedule`, `api:<key id>`, `retry`.
    pub requested_by: &'a str,
}

/// What a request for a run does with the tenant's open run (the newest queued, running or
/// interrupted one): the rule both databases' `enqueue` follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenRun {
    /// Queued or running: nothing changes.
    Active,
    /// Stopped because someone cancelled it, its worker not yet having recorded it so: it is
    /// closed as cancelled, and a new run is queued.
    Cancelled,
    /// Interrupted: queued again, its checkpoint kept.
    Resume,
    /// Interrupted, but started against another platform: closed as failed, and a new run
    /// is queued.
    Abandon,
}

impl OpenRun {
    pub(crate) fn of(
        status: &str,
        platform: Option<&str>,
        cancel_requested: bool,
        wanted_platform: &str,
    ) -> Self {
        if status != "interrupted" {
            OpenRun::Active
        } else if cancel_requested {
            OpenRun::Cancelled
        } else if platform.is_none_or(|p| p == wanted_platform) {
            OpenRun::Resume
        } else {
            OpenRun::Abandon
        }
    }
}

/// A run a worker now holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The run as claimed (its checkpoint included).
    pub run: RunRecord,
    /// The lease every write of the run must carry.
    pub lease: Lease,
}

/// What happens to a run its worker stopped early (it is `interrupted` after
/// `finish_run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Back in the queue, claimable after `after` (a worker shutting down: zero; the
    /// platform down: a backoff).
    Requeue {
        /// Delay before a worker may claim it.
        after: Duration,
    },
    /// Over for good, as asked (`cancelled`).
    Cancel,
}

/// What [`Queue::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The run was queued (or interrupted): it is cancelled.
    Cancelled,
    /// The run is running: its worker was asked to stop it (it ends `cancelled`).
    Requested,
    /// The run had already ended: nothing changed.
    AlreadyFinished(RunStatus),
}

/// The run queue over a [`Store`]'s database.
#[derive(Debug, Clone)]
pub struct Queue {
    store: Store,
    events: Events,
}

impl Queue {
    /// The queue in `store`'s database (migrated by `Store::connect`), publishing its events
    /// through a hub of its own (which reaches every subscriber on PostgreSQL, none on
    /// SQLite: there, use [`Queue::with_events`]).
    pub fn new(store: Store) -> Self {
        let events = Events::new(&store);
        Self::with_events(store, events)
    }

    /// The queue in `store`'s database, publishing a run event when a run is queued or
    /// cancelled to `events`.
    pub fn with_events(store: Store, events: Events) -> Self {
        Self { store, events }
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Queues a run for the tenant unless one is queued or running; an interrupted run is
    /// queued again rather than replaced (its checkpoint is kept), unless it was started
    /// against another platform (then it is closed as failed and a new one queued). With an
    /// actor, the change is audited in the same transaction.
    pub async fn enqueue(&self, req: RunRequest<'_>, actor: Option<&Actor>) -> Result<Enqueued> {
        let outcome = match &self.store {
            Store::Postgres(p) => pg::enqueue(p, &req, actor).await?,
            Store::Sqlite(p) => sqlite::enqueue(p, &req, actor).await?,
        };
        if let Some(event) = outcome.queued_event(req.tenant) {
            self.events.publish(&event).await;
        }
        Ok(outcome)
    }

    /// Queues many runs at once, each by [`Queue::enqueue`]'s rule, in one transaction of a
    /// few statements on PostgreSQL (four, plus a few for each tenant whose open run is
    /// interrupted: a queued or running one is decided without a round trip), and
    /// publishes their events in one notification. Outcomes in the order of `reqs`; a tenant
    /// asked for twice gets its first request's run as `AlreadyActive`. Not audited: for
    /// the scheduler and the benchmarks.
    pub async fn enqueue_many(&self, reqs: &[RunRequest<'_>]) -> Result<Vec<Enqueued>> {
        let outcomes = match &self.store {
            Store::Postgres(p) => {
                let mut tx = adsync_store::tx::begin_pg(p).await?;
                let outcomes = pg::enqueue_many_in(&mut tx, reqs).await?;
                tx.commit().await?;
                outcomes
            }
            Store::Sqlite(p) => {
                let mut tx = adsync_store::tx::begin_sqlite(p).await?;
                let mut outcomes = Vec::with_capacity(reqs.len());
                for req in reqs {
                    outcomes.push(sqlite::enqueue_in(&mut tx, req).await?);
                }
                tx.commit().await?;
                outcomes
            }
        };
        let events: Vec<RunEvent> = reqs
            .iter()
            .zip(&outcomes)
            .filter_map(|(req, outcome)| outcome.queued_event(req.tenant))
            .collect();
        self.events.publish_many(&events).await;
        Ok(outcomes)
    }

    /// Claims up to `max` queued runs for `owner` with a lease of `ttl`: fair across
    /// tenants (least recently served first), never a run of a paused tenant, never one
    /// whose `run_after` is in the future. Each claim increments the run's epoch.
    pub async fn claim(&self, owner: &str, ttl: Duration, max: usize) -> Result<Vec<Claimed>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let ttl = ttl.min(Duration::from_secs(86_400 * 365));
        let claimed = match &self.store {
            Store::Postgres(p) => pg::claim(p, owner, ttl, max).await?,
            Store::Sqlite(p) => sqlite::claim(p, owner, ttl, max).await?,
        };
        // The runs read back in one query: one each cost a thousand claimed runs a fifth
        // of a second before the first of them could start.
        let ids: Vec<RunId> = claimed.iter().map(|(id, _, _)| *id).collect();
        let mut runs: HashMap<RunId, RunRecord> = self
            .store
            .runs_by_id(&ids)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let mut out = Vec::with_capacity(claimed.len());
        for (id, tenant, epoch) in claimed {
            let run = runs
                .remove(&id)
                .ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
            out.push(Claimed {
                run,
                lease: Lease {
                    run: id,
                    tenant,
                    epoch,
                    owner: owner.to_owned(),
                },
            });
        }
        Ok(out)
    }

    /// Requeues every service run (its tenant exists) whose lease ran out: its worker died,
    /// hangs, or lost the database; and every service run left `interrupted` and never
    /// settled for [`UNSETTLED_GRACE`] (its worker stopped between ending the run and
    /// requeueing it). Returns the runs requeued. Safe to run anywhere, any number of times:
    /// the condition is on the row alone.
    pub async fn reap(&self) -> Result<Vec<RunId>> {
        let mut reaped = match &self.store {
            Store::Postgres(p) => pg::reap(p).await,
            Store::Sqlite(p) => sqlite::reap(p).await,
        }?;
        reaped.extend(self.reap_unsettled(UNSETTLED_GRACE).await?);
        Ok(reaped)
    }

    /// Requeues (or, when a cancel was asked for, cancels) every service run that ended
    /// `interrupted` more than `grace` ago and was never settled, if it is its tenant's latest
    /// run. A worker settles its run at once after ending it, so only a worker that died in
    /// between (or lost the database then) leaves one; without this, the run would wait for
    /// the tenant's next scheduled tick or request. Runs that were never queued (plain
    /// `adsync sync` runs) are left alone: someone stopped them on purpose. A service run that
    /// `adsync sync` resumed and was stopped is still the service's, and is requeued. The
    /// grace is measured against the `finished_at` its worker wrote, on the worker's clock.
    pub async fn reap_unsettled(&self, grace: Duration) -> Result<Vec<RunId>> {
        match &self.store {
            Store::Postgres(p) => pg::reap_unsettled(p, grace).await,
            Store::Sqlite(p) => sqlite::reap_unsettled(p, grace).await,
        }
    }

    /// After `finish_run` stopped the run (`interrupted`), requeue or cancel it, if `lease`
    /// was the last to hold it. Returns whether it did.
    pub async fn settle(&self, lease: &Lease, how: Settle) -> Result<bool> {
        match &self.store {
            Store::Postgres(p) => pg::settle(p, lease, how).await,
            Store::Sqlite(p) => sqlite::settle(p, lease, how).await,
        }
    }

    /// Cancels a run: a queued or interrupted one at once, a running one by asking its
    /// worker (which sees it within a second or two and ends it `cancelled`).
    pub async fn cancel(&self, run: RunId, actor: Option<&Actor>) -> Result<CancelOutcome> {
        let outcome = match &self.store {
            Store::Postgres(p) => pg::cancel(p, run, actor).await?,
            Store::Sqlite(p) => sqlite::cancel(p, run, actor).await?,
        };
        // A running run's worker publishes its end when it stops.
        if outcome == CancelOutcome::Cancelled {
            match self.store.run(run).await {
                Ok(r) => {
                    let event = RunEvent::status(run, &r.tenant_id, RunStatus::Cancelled.as_str());
                    self.events.publish(&event).await;
                }
                Err(e) => tracing::debug!(run, error = %e, "run event not published"),
            }
        }
        Ok(outcome)
    }

    /// Of `runs`, those still running whose cancellation was asked.
    pub async fn cancel_requested(&self, runs: &[RunId]) -> Result<Vec<RunId>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        match &self.store {
            Store::Postgres(p) => pg::cancel_requested(p, runs).await,
            Store::Sqlite(p) => sqlite::cancel_requested(p, runs).await,
        }
    }

    /// Runs by status (`queued`, `running`) for the metrics: (status, count).
    pub async fn depth(&self) -> Result<Vec<(String, i64)>> {
        let sql = "SELECT status, COUNT(*) AS n FROM sync_runs
                   WHERE status IN ('queued', 'running') GROUP BY status";
        Ok(match &self.store {
            Store::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await?,
            Store::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await?,
        })
    }
}

/// How long a run may stay `interrupted` and unsettled before the reaper requeues it (see
/// [`Queue::reap_unsettled`]): far longer than a worker takes from ending a run to settling it.
pub const UNSETTLED_GRACE: Duration = Duration::from_secs(60);

/// The SET list that requeues an unsettled run, or cancels it when a cancel was asked for;
/// both databases (each adds its own `queued_at`).
const REQUEUE_UNSETTLED: &str = "
    status = CASE WHEN cancel_requested_at IS NULL THEN 'queued' ELSE 'cancelled' END,
    run_after = NULL, lease_expires_at = NULL,
    stop_reason = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE stop_reason END,
    finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE finished_at END,
    error = CASE WHEN cancel_requested_at IS NULL
        THEN 'interrupted and never settled (its worker stopped first); requeued'
        ELSE 'cancelled' END";

/// How long a run waits before it is claimed again after the platform was down, by how many
/// times workers claimed it: 30 s, 1, 2, 4 min, ... capped at 30 min.
pub fn platform_backoff(attempts: i64) -> Duration {
    let exp = attempts.clamp(1, 7) as u32 - 1;
    Duration::from_secs(30 * 2u64.pow(exp)).min(Duration::from_secs(1800))
}
