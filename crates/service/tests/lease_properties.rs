//! Properties of the run queue's lease state machine, on PostgreSQL and on SQLite (issue 9).
//!
//! Proptest generates sequences of operations by three workers on two tenants: enqueue,
//! claim (alone, or all workers at once), heartbeat, a checkpoint write carrying the lease
//! (`Store::store_page`), time passing beyond short leases, reap, cancel, finish (succeeded,
//! failed, requeued, or stopped and left unsettled: a worker that died between `finish_run`
//! and `settle`), and crash (the worker forgets its leases and comes back under a new name).
//! After every step, against the database:
//!
//! - at most one queued-or-running run per tenant;
//! - a write (page, heartbeat, finish, settle) is accepted exactly when the lease's epoch is
//!   the run's and the run is running; a refused one changes nothing (run row and the
//!   tenant's campaigns);
//! - a run's epoch never decreases, a claim raises it by one, no (run, epoch) is granted
//!   twice, and a running run's owner and epoch are those of its latest grant (never two
//!   owners);
//! - a claim takes only queued runs, as many as there are up to what it asked for; claims at
//!   once never share a run;
//! - the reaper requeues a run only once its latest lease may have run out, and every run
//!   whose lease has surely run out.
//!
//! At the end of each case the remaining work is driven to completion (workers finish what
//! they hold, the reaper and a claimer run, a tenant with an interrupted run is asked for a
//! run again as its next scheduler tick would) and every run must have ended.
//!
//! Time: leases are 20 ms (short) or 300 ms (long); "time passes" sleeps 35 ms. The checks
//! that involve time compare the reaper's answer with the instants around each grant, so
//! they hold on a loaded machine too.

#[macro_use]
mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use adsync_domain::Campaign;
use adsync_service::{
    Service,
    queue::{CancelOutcome, Enqueued, RunRequest, Settle},
};
use adsync_store::{
    Lease, ListingCursor, PageBatch, RunCounters, RunEnd, RunEnding, RunId, RunRecord, RunStatus,
    StopReason, Store, StoreError, StoredCampaign,
};
use chrono::{DateTime, Utc};
use common::{keyring, service, tenant};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};

const WORKERS: usize = 3;
const TENANTS: usize = 2;
const SHORT: Duration = Duration::from_millis(20);
const LONG: Duration = Duration::from_millis(300);
/// Longer than a short lease: every short lease granted before it has run out after it.
const PASS: Duration = Duration::from_millis(35);
/// Wall clock (the database's) against `Instant` (ours): tolerated disagreement.
const SLACK: Duration = Duration::from_millis(5);
/// Longest the drive to completion may take (a crashed long lease needs 300 ms).
const DRIVE_DEADLINE: Duration = Duration::from_secs(20);
const PLATFORM: &str = "http://platform.invalid";
const CASES: u32 = 48;

#[derive(Debug, Clone, Copy)]
enum How {
    Succeed,
    Fail,
    /// Stopped (platform down), requeued at once.
    Requeue,
    /// Stopped, and the worker died before settling.
    StopUnsettled,
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        tenant: usize,
    },
    Claim {
        worker: usize,
        max: usize,
        short: bool,
    },
    ClaimRace {
        short: bool,
    },
    Heartbeat {
        worker: usize,
        pick: usize,
        short: bool,
    },
    Write {
        worker: usize,
        pick: usize,
    },
    /// A write with any lease ever granted in the case: a process that hung (or whose
    /// crash left a request on the wire) wakes up and writes.
    ZombieWrite {
        pick: usize,
    },
    Pass,
    Reap,
    Cancel {
        tenant: usize,
    },
    Finish {
        worker: usize,
        pick: usize,
        how: How,
    },
    Crash {
        worker: usize,
    },
}

fn how() -> impl Strategy<Value = How> {
    prop_oneof![
        3 => Just(How::Succeed),
        1 => Just(How::Fail),
        2 => Just(How::Requeue),
        1 => Just(How::StopUnsettled),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let w = 0..WORKERS;
    let t = 0..TENANTS;
    prop_oneof![
        3 => t.clone().prop_map(|tenant| Op::Enqueue { tenant }),
        3 => (w.clone(), 1..=2usize, any::<bool>())
            .prop_map(|(worker, max, short)| Op::Claim { worker, max, short }),
        1 => any::<bool>().prop_map(|short| Op::ClaimRace { short }),
        2 => (w.clone(), 0..4usize, any::<bool>())
            .prop_map(|(worker, pick, short)| Op::Heartbeat { worker, pick, short }),
        4 => (w.clone(), 0..4usize).prop_map(|(worker, pick)| Op::Write { worker, pick }),
        2 => (0..16usize).prop_map(|pick| Op::ZombieWrite { pick }),
        2 => Just(Op::Pass),
        2 => Just(Op::Reap),
        1 => t.prop_map(|tenant| Op::Cancel { tenant }),
        2 => (w.clone(), 0..4usize, how())
            .prop_map(|(worker, pick, how)| Op::Finish { worker, pick, how }),
        1 => w.prop_map(|worker| Op::Crash { worker }),
    ]
}

/// What happened over all cases: each must have happened, or the properties were checked
/// on sequences that never reached the interesting states.
#[derive(Default, Debug)]
struct Coverage {
    stale_writes_refused: AtomicU64,
    writes_accepted: AtomicU64,
    taken_over: AtomicU64,
    reaped: AtomicU64,
    raced_claims_contended: AtomicU64,
    cancel_requested: AtomicU64,
    finished_by_holder: AtomicU64,
    stale_finish_refused: AtomicU64,
    interrupted_resumed_by_enqueue: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A lease a worker believes it holds.
#[derive(Debug, Clone)]
struct Held {
    lease: Lease,
}

#[derive(Debug)]
struct WorkerModel {
    index: usize,
    generation: u32,
    held: Vec<Held>,
}

impl WorkerModel {
    fn name(&self, case: u64) -> String {
        format!("case{case}-w{}.{}", self.index, self.generation)
    }
}

/// The latest grant of a run: who, which epoch, and when its lease may run out.
#[derive(Debug, Clone)]
struct Grant {
    owner: String,
    epoch: i64,
    /// Just before the latest claim or renewal was sent: the lease runs out after this + ttl.
    sent: Instant,
    /// Just after it returned: the lease has surely run out after this + ttl.
    returned: Instant,
    ttl: Duration,
}

struct Harness<'a> {
    svc: &'a Service,
    case: u64,
    tenants: Vec<String>,
    workers: Vec<WorkerModel>,
    max_epoch: HashMap<RunId, i64>,
    grants: BTreeSet<(RunId, i64)>,
    latest: HashMap<RunId, Grant>,
    /// Every lease granted in the case, in order.
    granted: Vec<Lease>,
    pages: u64,
    cov: &'a Coverage,
}

type Check = Result<(), TestCaseError>;

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// The part of a run row a refused write must not change.
type FencedPart = (
    RunStatus,
    i64,
    Option<String>,
    ListingCursor,
    RunCounters,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

fn fenced_part(r: &RunRecord) -> FencedPart {
    (
        r.status,
        r.lease_epoch,
        r.owner.clone(),
        r.cursor,
        r.counters,
        r.lease_expires_at,
        r.heartbeat_at,
        r.finished_at,
    )
}

fn ttl_of(short: bool) -> Duration {
    if short { SHORT } else { LONG }
}

impl<'a> Harness<'a> {
    fn store(&self) -> &Store {
        &self.svc.store
    }

    fn request(&self, tenant: usize) -> RunRequest<'_> {
        RunRequest {
            tenant: &self.tenants[tenant],
            page_size: 10,
            platform: PLATFORM,
            requested_by: "test",
        }
    }

    async fn runs(&self) -> Result<BTreeMap<RunId, RunRecord>, TestCaseError> {
        let mut out = BTreeMap::new();
        for t in &self.tenants {
            for r in self.store().runs(t, 1000).await.map_err(fail)? {
                out.insert(r.id, r);
            }
        }
        Ok(out)
    }

    async fn run(&self, id: RunId) -> Result<RunRecord, TestCaseError> {
        self.store().run(id).await.map_err(fail)
    }

    async fn campaigns(&self, tenant: &str) -> Result<Vec<StoredCampaign>, TestCaseError> {
        self.store().campaigns(tenant).await.map_err(fail)
    }

    /// The held lease `pick` of `worker` (modulo), if it holds any.
    fn lease(&self, worker: usize, pick: usize) -> Option<(usize, Lease)> {
        let held = &self.workers[worker].held;
        (!held.is_empty()).then(|| {
            let i = pick % held.len();
            (i, held[i].lease.clone())
        })
    }

    fn drop_lease(&mut self, worker: usize, run: RunId, epoch: i64) {
        self.workers[worker]
            .held
            .retain(|h| !(h.lease.run == run && h.lease.epoch == epoch));
    }

    async fn step(&mut self, op: &Op) -> Check {
        match *op {
            Op::Enqueue { tenant } => self.enqueue(tenant).await.map(|_| ()),
            Op::Claim { worker, max, short } => self.claim(worker, max, short).await,
            Op::ClaimRace { short } => self.claim_race(short).await,
            Op::Heartbeat {
                worker,
                pick,
                short,
            } => self.heartbeat(worker, pick, short).await,
            Op::Write { worker, pick } => match self.lease(worker, pick) {
                Some((_, lease)) => self.write(Some(worker), lease).await,
                None => Ok(()),
            },
            Op::ZombieWrite { pick } => {
                // A lease superseded by a later claim if there is one, else any.
                let superseded: Vec<Lease> = self
                    .granted
                    .iter()
                    .filter(|l| self.latest[&l.run].epoch > l.epoch)
                    .cloned()
                    .collect();
                let pool = if superseded.is_empty() {
                    &self.granted
                } else {
                    &superseded
                };
                match pool.len() {
                    0 => Ok(()),
                    n => self.write(None, pool[pick % n].clone()).await,
                }
            }
            Op::Pass => {
                tokio::time::sleep(PASS).await;
                Ok(())
            }
            Op::Reap => self.reap().await,
            Op::Cancel { tenant } => self.cancel(tenant).await,
            Op::Finish { worker, pick, how } => self.finish(worker, pick, how).await,
            Op::Crash { worker } => {
                let w = &mut self.workers[worker];
                w.held.clear();
                w.generation += 1;
                Ok(())
            }
        }
    }

    async fn enqueue(&mut self, tenant: usize) -> Result<Enqueued, TestCaseError> {
        let before = self.runs().await?;
        let tid = self.tenants[tenant].clone();
        // The rule of `enqueue`: the newest queued or running run, else the newest
        // interrupted one.
        let open = before
            .values()
            .filter(|r| r.tenant_id == tid)
            .filter(|r| {
                matches!(
                    r.status,
                    RunStatus::Queued | RunStatus::Running | RunStatus::Interrupted
                )
            })
            .max_by_key(|r| (r.status != RunStatus::Interrupted, r.id))
            .cloned();
        let out = self
            .svc
            .queue
            .enqueue(self.request(tenant), None)
            .await
            .map_err(fail)?;
        let after = self.runs().await?;
        match (&open, out) {
            (Some(o), Enqueued::AlreadyActive(id)) => {
                prop_assert_eq!(id, o.id);
                prop_assert!(matches!(o.status, RunStatus::Queued | RunStatus::Running));
            }
            (Some(o), Enqueued::Requeued(id)) => {
                prop_assert_eq!(id, o.id);
                prop_assert_eq!(o.status, RunStatus::Interrupted);
                prop_assert!(o.cancel_requested_at.is_none());
                prop_assert_eq!(after[&id].status, RunStatus::Queued);
            }
            (open, Enqueued::Queued(id)) => {
                prop_assert!(!before.contains_key(&id), "a new run reuses {id}");
                prop_assert_eq!(after[&id].status, RunStatus::Queued);
                if let Some(o) = open {
                    // Only an interrupted run whose cancellation was asked is replaced.
                    prop_assert_eq!(o.status, RunStatus::Interrupted);
                    prop_assert!(o.cancel_requested_at.is_some());
                    prop_assert_eq!(after[&o.id].status, RunStatus::Cancelled);
                }
            }
            (None, other) => prop_assert!(false, "no open run, yet {other:?}"),
        }
        Ok(out)
    }

    async fn claim(&mut self, worker: usize, max: usize, short: bool) -> Check {
        let before = self.runs().await?;
        let queued = before
            .values()
            .filter(|r| r.status == RunStatus::Queued)
            .count();
        let name = self.workers[worker].name(self.case);
        let ttl = ttl_of(short);
        let sent = Instant::now();
        let claimed = self.svc.queue.claim(&name, ttl, max).await.map_err(fail)?;
        let returned = Instant::now();
        prop_assert_eq!(
            claimed.len(),
            max.min(queued),
            "claimed {:?} of {} queued runs",
            claimed.iter().map(|c| c.run.id).collect::<Vec<_>>(),
            queued
        );
        for c in claimed {
            self.granted(worker, &before, &c.lease, &name, sent, returned, ttl)?;
        }
        Ok(())
    }

    /// Every worker claims one run at the same moment.
    async fn claim_race(&mut self, short: bool) -> Check {
        let before = self.runs().await?;
        let queued = before
            .values()
            .filter(|r| r.status == RunStatus::Queued)
            .count();
        let ttl = ttl_of(short);
        let names: Vec<String> = self.workers.iter().map(|w| w.name(self.case)).collect();
        let sent = Instant::now();
        let results =
            futures::future::join_all(names.iter().map(|name| self.svc.queue.claim(name, ttl, 1)))
                .await;
        let returned = Instant::now();
        let mut seen = BTreeSet::new();
        let mut total = 0;
        for (worker, result) in results.into_iter().enumerate() {
            for c in result.map_err(fail)? {
                prop_assert!(seen.insert(c.run.id), "run {} claimed twice", c.run.id);
                total += 1;
                self.granted(
                    worker,
                    &before,
                    &c.lease,
                    &names[worker],
                    sent,
                    returned,
                    ttl,
                )?;
            }
        }
        prop_assert_eq!(total, WORKERS.min(queued));
        if queued > 0 && queued < WORKERS {
            bump(&self.cov.raced_claims_contended);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn granted(
        &mut self,
        worker: usize,
        before: &BTreeMap<RunId, RunRecord>,
        lease: &Lease,
        name: &str,
        sent: Instant,
        returned: Instant,
        ttl: Duration,
    ) -> Check {
        let prev = before
            .get(&lease.run)
            .ok_or_else(|| fail(format!("claimed run {} of another case", lease.run)))?;
        prop_assert_eq!(
            prev.status,
            RunStatus::Queued,
            "claimed run {} was not queued",
            lease.run
        );
        prop_assert_eq!(
            lease.epoch,
            prev.lease_epoch + 1,
            "a claim raises the epoch by one"
        );
        prop_assert_eq!(&lease.owner, name);
        prop_assert!(
            self.grants.insert((lease.run, lease.epoch)),
            "run {} epoch {} granted twice",
            lease.run,
            lease.epoch
        );
        if lease.epoch > 1 {
            bump(&self.cov.taken_over);
        }
        self.latest.insert(
            lease.run,
            Grant {
                owner: name.to_owned(),
                epoch: lease.epoch,
                sent,
                returned,
                ttl,
            },
        );
        self.workers[worker].held.push(Held {
            lease: lease.clone(),
        });
        self.granted.push(lease.clone());
        Ok(())
    }

    fn holds_now(r: &RunRecord, lease: &Lease) -> bool {
        r.status == RunStatus::Running && r.lease_epoch == lease.epoch
    }

    async fn heartbeat(&mut self, worker: usize, pick: usize, short: bool) -> Check {
        let Some((_, lease)) = self.lease(worker, pick) else {
            return Ok(());
        };
        let before = self.run(lease.run).await?;
        let ttl = ttl_of(short);
        let sent = Instant::now();
        let result = self.store().renew(&lease, ttl).await;
        let returned = Instant::now();
        let after = self.run(lease.run).await?;
        match result {
            Ok(()) => {
                prop_assert!(Self::holds_now(&before, &lease), "renewed a lost lease");
                let g = self.latest.get_mut(&lease.run).expect("a granted run");
                prop_assert_eq!(g.epoch, lease.epoch);
                (g.sent, g.returned, g.ttl) = (sent, returned, ttl);
            }
            Err(StoreError::LeaseLost { .. }) => {
                prop_assert!(!Self::holds_now(&before, &lease), "refused a held lease");
                prop_assert_eq!(fenced_part(&before), fenced_part(&after));
                self.drop_lease(worker, lease.run, lease.epoch);
            }
            Err(e) => return Err(fail(e)),
        }
        Ok(())
    }

    /// A checkpoint write: one page (a campaign and the cursor), carrying the lease, by
    /// `worker` (which forgets a lease refused) or by a zombie.
    async fn write(&mut self, worker: Option<usize>, lease: Lease) -> Check {
        self.pages += 1;
        let id = format!("c{}", self.pages);
        let campaign = Campaign::from_json_text(&format!(
            r#"{{"id": "{id}", "name": "{id}", "status": "active", "budget": 10,
                "impressions": {n}, "clicks": 1, "conversions": 0,
                "created_at": "2024-12-11T10:30:00.000Z"}}"#,
            n = self.pages
        ))
        .map_err(fail)?;
        let before = self.run(lease.run).await?;
        let before_campaigns = self.campaigns(&lease.tenant).await?;
        let cursor = ListingCursor {
            next_page: self.pages + 1,
            ..before.cursor
        };
        let listed = [id.as_str()];
        let campaigns = [campaign];
        let batch = PageBatch {
            cursor,
            listed_ids: &listed,
            seen: 1,
            campaigns: &campaigns,
            dead_letters: &[],
            warnings: &[],
            counts_as_page: true,
            observed_at: Utc::now(),
        };
        let result = self.store().store_page(&lease, &batch).await;
        let after = self.run(lease.run).await?;
        let after_campaigns = self.campaigns(&lease.tenant).await?;
        match result {
            Ok(_) => {
                prop_assert!(
                    Self::holds_now(&before, &lease),
                    "a write with epoch {} was accepted on {:?} at epoch {}",
                    lease.epoch,
                    before.status,
                    before.lease_epoch
                );
                prop_assert_eq!(after.cursor.next_page, self.pages + 1);
                prop_assert!(
                    after_campaigns
                        .iter()
                        .any(|c| c.id == id && c.last_run_id == lease.run)
                );
                bump(&self.cov.writes_accepted);
            }
            Err(StoreError::LeaseLost { .. }) => {
                prop_assert!(
                    !Self::holds_now(&before, &lease),
                    "the holder's write was refused"
                );
                prop_assert_eq!(fenced_part(&before), fenced_part(&after));
                prop_assert_eq!(before_campaigns, after_campaigns, "a refused write wrote");
                if before.lease_epoch > lease.epoch {
                    bump(&self.cov.stale_writes_refused);
                }
                if let Some(worker) = worker {
                    self.drop_lease(worker, lease.run, lease.epoch);
                }
            }
            Err(e) => return Err(fail(e)),
        }
        Ok(())
    }

    async fn reap(&mut self) -> Check {
        let before = self.runs().await?;
        let started = Instant::now();
        let reaped: BTreeSet<RunId> = self
            .svc
            .queue
            .reap()
            .await
            .map_err(fail)?
            .into_iter()
            .filter(|id| before.contains_key(id))
            .collect();
        let ended = Instant::now();
        for (id, r) in &before {
            if r.status != RunStatus::Running {
                prop_assert!(
                    !reaped.contains(id),
                    "reaped run {id} that was {:?}",
                    r.status
                );
                continue;
            }
            let g = &self.latest[id];
            if reaped.contains(id) {
                // Its lease was at least `ttl` old when the reaper looked.
                prop_assert!(
                    ended + SLACK >= g.sent + g.ttl,
                    "run {id} reaped {:?} into a lease of {:?}",
                    ended.saturating_duration_since(g.sent),
                    g.ttl
                );
                bump(&self.cov.reaped);
            } else {
                prop_assert!(
                    started < g.returned + g.ttl + SLACK,
                    "run {id} not reaped {:?} after its lease of {:?} was granted",
                    started.saturating_duration_since(g.returned),
                    g.ttl
                );
            }
        }
        let after = self.runs().await?;
        for id in &reaped {
            prop_assert_eq!(after[id].status, RunStatus::Queued);
            prop_assert_eq!(after[id].lease_epoch, before[id].lease_epoch);
        }
        Ok(())
    }

    async fn cancel(&mut self, tenant: usize) -> Check {
        let before = self.runs().await?;
        let Some(r) = before
            .values()
            .filter(|r| r.tenant_id == self.tenants[tenant])
            .max_by_key(|r| r.id)
            .cloned()
        else {
            return Ok(());
        };
        let out = self.svc.queue.cancel(r.id, None).await.map_err(fail)?;
        let after = self.run(r.id).await?;
        match r.status {
            RunStatus::Queued | RunStatus::Interrupted => {
                prop_assert_eq!(out, CancelOutcome::Cancelled);
                prop_assert_eq!(after.status, RunStatus::Cancelled);
            }
            RunStatus::Running => {
                prop_assert_eq!(out, CancelOutcome::Requested);
                prop_assert!(after.cancel_requested_at.is_some());
                prop_assert_eq!(after.status, RunStatus::Running);
                prop_assert_eq!(after.lease_epoch, r.lease_epoch);
                bump(&self.cov.cancel_requested);
            }
            other => {
                prop_assert_eq!(out, CancelOutcome::AlreadyFinished(other));
                prop_assert_eq!(fenced_part(&r), fenced_part(&after));
            }
        }
        Ok(())
    }

    /// The worker ends the run as the service's worker does: cancelled when that was
    /// asked, else as `how` says, then settles it.
    async fn finish(&mut self, worker: usize, pick: usize, how: How) -> Check {
        let Some((_, lease)) = self.lease(worker, pick) else {
            return Ok(());
        };
        let before = self.run(lease.run).await?;
        let asked = self
            .svc
            .queue
            .cancel_requested(&[lease.run])
            .await
            .map_err(fail)?
            .contains(&lease.run);
        prop_assert_eq!(
            asked,
            before.status == RunStatus::Running && before.cancel_requested_at.is_some()
        );
        let (ending, settle) = if asked {
            let settle = (!matches!(how, How::StopUnsettled)).then_some(Settle::Cancel);
            (RunEnding::Stopped(StopReason::Cancelled), settle)
        } else {
            match how {
                How::Succeed => (RunEnding::Finished, None),
                How::Fail => (RunEnding::Failed, None),
                How::Requeue => (
                    RunEnding::Stopped(StopReason::PlatformDown),
                    Some(Settle::Requeue {
                        after: Duration::ZERO,
                    }),
                ),
                How::StopUnsettled => (RunEnding::Stopped(StopReason::DatabaseDown), None),
            }
        };
        let end = RunEnd {
            ending,
            error: None,
            client: RunCounters::default(),
            active_seconds: 0.01,
            throttled_seconds: 0.0,
            floor_seconds: None,
            at: Utc::now(),
        };
        let result = self.store().finish_run(&lease, &end).await;
        self.drop_lease(worker, lease.run, lease.epoch);
        match result {
            Ok(r) => {
                prop_assert!(
                    Self::holds_now(&before, &lease),
                    "a lost lease finished its run"
                );
                let want: &[RunStatus] = match ending {
                    RunEnding::Finished => &[RunStatus::Succeeded, RunStatus::Partial],
                    RunEnding::Failed => &[RunStatus::Failed],
                    RunEnding::Stopped(_) => &[RunStatus::Interrupted],
                };
                prop_assert!(want.contains(&r.status), "{ending:?} ended {:?}", r.status);
                if let Some(settle) = settle {
                    let done = self.svc.queue.settle(&lease, settle).await.map_err(fail)?;
                    prop_assert!(done, "the holder could not settle its run");
                    let status = self.run(lease.run).await?.status;
                    prop_assert_eq!(
                        status,
                        match settle {
                            Settle::Requeue { .. } => RunStatus::Queued,
                            Settle::Cancel => RunStatus::Cancelled,
                        }
                    );
                }
                bump(&self.cov.finished_by_holder);
            }
            Err(StoreError::LeaseLost { .. }) => {
                prop_assert!(
                    !Self::holds_now(&before, &lease),
                    "the holder could not finish"
                );
                let after = self.run(lease.run).await?;
                prop_assert_eq!(fenced_part(&before), fenced_part(&after));
                // Nor can it settle the run.
                let settled = self
                    .svc
                    .queue
                    .settle(
                        &lease,
                        settle.unwrap_or(Settle::Requeue {
                            after: Duration::ZERO,
                        }),
                    )
                    .await
                    .map_err(fail)?;
                prop_assert!(!settled, "a worker that lost its lease settled the run");
                let after = self.run(lease.run).await?;
                prop_assert_eq!(fenced_part(&before), fenced_part(&after));
                bump(&self.cov.stale_finish_refused);
            }
            Err(e) => return Err(fail(e)),
        }
        Ok(())
    }

    /// A worker that lost `lease` finishes and settles its run: refused, nothing changes.
    async fn stale_finish(&mut self, lease: &Lease) -> Check {
        let before = self.run(lease.run).await?;
        prop_assert!(!Self::holds_now(&before, lease));
        let end = RunEnd {
            ending: RunEnding::Stopped(StopReason::Cancelled),
            error: None,
            client: RunCounters::default(),
            active_seconds: 0.01,
            throttled_seconds: 0.0,
            floor_seconds: None,
            at: Utc::now(),
        };
        let finished = self.store().finish_run(lease, &end).await;
        prop_assert!(
            matches!(finished, Err(StoreError::LeaseLost { .. })),
            "{finished:?}"
        );
        for how in [
            Settle::Cancel,
            Settle::Requeue {
                after: Duration::ZERO,
            },
        ] {
            let settled = self.svc.queue.settle(lease, how).await.map_err(fail)?;
            prop_assert!(!settled, "a worker that lost its lease settled the run");
        }
        let after = self.run(lease.run).await?;
        prop_assert_eq!(fenced_part(&before), fenced_part(&after));
        if before.lease_epoch > lease.epoch {
            bump(&self.cov.stale_finish_refused);
        }
        Ok(())
    }

    /// The invariants every state must satisfy.
    async fn check(&mut self) -> Check {
        let runs = self.runs().await?;
        let mut active: BTreeMap<&str, Vec<RunId>> = BTreeMap::new();
        for r in runs.values() {
            if matches!(r.status, RunStatus::Queued | RunStatus::Running) {
                active.entry(&r.tenant_id).or_default().push(r.id);
            }
            let max = self.max_epoch.entry(r.id).or_insert(r.lease_epoch);
            prop_assert!(
                r.lease_epoch >= *max,
                "run {} epoch went from {} to {}",
                r.id,
                *max,
                r.lease_epoch
            );
            *max = r.lease_epoch;
            if r.status == RunStatus::Running {
                let g = self
                    .latest
                    .get(&r.id)
                    .ok_or_else(|| fail(format!("run {} runs, granted to nobody", r.id)))?;
                prop_assert_eq!(
                    (r.owner.as_deref(), r.lease_epoch),
                    (Some(g.owner.as_str()), g.epoch),
                    "run {} is not owned by its latest grant",
                    r.id
                );
                let holders = self
                    .workers
                    .iter()
                    .filter(|w| {
                        w.held
                            .iter()
                            .any(|h| h.lease.run == r.id && h.lease.epoch == r.lease_epoch)
                    })
                    .count();
                prop_assert!(holders <= 1, "run {} held by {holders} workers", r.id);
            }
        }
        for (tenant, ids) in active {
            prop_assert!(ids.len() <= 1, "tenant {tenant} has active runs {ids:?}");
        }
        Ok(())
    }

    /// Drives every run of the case to its end.
    async fn drive_to_completion(&mut self) -> Check {
        let deadline = Instant::now() + DRIVE_DEADLINE;
        loop {
            for w in 0..WORKERS {
                while !self.workers[w].held.is_empty() {
                    self.finish(w, 0, How::Succeed).await?;
                    self.check().await?;
                }
            }
            let runs = self.runs().await?;
            if runs.values().all(|r| r.status.is_final()) {
                // Every lease the case granted wakes up once more and writes: all ended,
                // every write is refused and changes nothing.
                for lease in self.granted.clone() {
                    self.write(None, lease.clone()).await?;
                    self.stale_finish(&lease).await?;
                }
                return self.check().await;
            }
            prop_assert!(
                Instant::now() < deadline,
                "runs still open after {DRIVE_DEADLINE:?}: {:#?}",
                runs.values()
                    .filter(|r| !r.status.is_final())
                    .map(|r| (r.id, r.status, r.lease_epoch, r.owner.clone()))
                    .collect::<Vec<_>>()
            );
            // An interrupted run waits for its tenant's next request (a scheduler tick).
            for t in 0..TENANTS {
                let interrupted = runs
                    .values()
                    .any(|r| r.tenant_id == self.tenants[t] && r.status == RunStatus::Interrupted);
                if interrupted {
                    self.enqueue(t).await?;
                    bump(&self.cov.interrupted_resumed_by_enqueue);
                    self.check().await?;
                }
            }
            self.reap().await?;
            self.check().await?;
            self.claim(0, TENANTS, true).await?;
            self.check().await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

static CASE: AtomicU64 = AtomicU64::new(0);

async fn one_case(svc: &Service, ops: &[Op], cov: &Coverage) -> Check {
    let case = CASE.fetch_add(1, Ordering::Relaxed);
    // Runs of earlier cases (a failed one may leave some) are never claimed again.
    let pause = "UPDATE tenants SET paused = TRUE";
    match &svc.store {
        Store::Postgres(p) => sqlx::query(pause).execute(p).await.map(|_| ()),
        Store::Sqlite(p) => sqlx::query(pause).execute(p).await.map(|_| ()),
    }
    .map_err(fail)?;
    let mut tenants = Vec::new();
    for t in 0..TENANTS {
        let name = format!("case{case}-tenant{t}");
        tenants.push(tenant(svc, &name, PLATFORM, None, "10/60s", None).await.id);
    }
    let mut h = Harness {
        svc,
        case,
        tenants,
        workers: (0..WORKERS)
            .map(|index| WorkerModel {
                index,
                generation: 0,
                held: Vec::new(),
            })
            .collect(),
        max_epoch: HashMap::new(),
        grants: BTreeSet::new(),
        latest: HashMap::new(),
        granted: Vec::new(),
        pages: 0,
        cov,
    };
    for (i, op) in ops.iter().enumerate() {
        h.step(op)
            .await
            .map_err(|e| fail(format!("step {i} {op:?}: {e}")))?;
        h.check()
            .await
            .map_err(|e| fail(format!("after step {i} {op:?}: {e}")))?;
    }
    h.drive_to_completion()
        .await
        .map_err(|e| fail(format!("driving to completion: {e}")))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn lease_state_machine(rt: &tokio::runtime::Runtime, store: Store) {
    let svc = rt.block_on(service(&store, keyring()));
    let cov = Coverage::default();
    let started = Instant::now();
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), one_case(&svc, &ops, &cov)).await
        })
        .map_err(|_| fail("a case took over 60 s"))?
    });
    println!(
        "{} cases on {} in {:?}: {cov:#?}",
        CASES,
        store.kind(),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // Every property was checked in the states it is about.
    for (what, n) in [
        ("stale writes refused", &cov.stale_writes_refused),
        ("writes accepted", &cov.writes_accepted),
        ("runs taken over", &cov.taken_over),
        ("runs reaped", &cov.reaped),
        ("raced claims contended", &cov.raced_claims_contended),
        ("cancellations of running runs", &cov.cancel_requested),
        ("stale finishes refused", &cov.stale_finish_refused),
    ] {
        assert!(n.load(Ordering::Relaxed) > 0, "no case had {what}");
    }
    rt.block_on(store.close());
}

#[test]
fn lease_state_machine_on_sqlite() {
    let dir = std::env::temp_dir().join(format!(
        "adsync-lease-props-{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = runtime();
    let store = rt
        .block_on(Store::connect(&format!(
            "sqlite://{}/queue.db",
            dir.display()
        )))
        .expect("SQLite opens");
    lease_state_machine(&rt, store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lease_state_machine_on_postgres() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL names a PostgreSQL server");
    let name = format!(
        "adsync_lease_props_{}_{}",
        std::process::id(),
        Utc::now().timestamp_micros()
    );
    let rt = runtime();
    let admin = rt
        .block_on(sqlx::PgPool::connect(&url))
        .expect("PostgreSQL answers");
    let create = format!("CREATE DATABASE {name}");
    rt.block_on(sqlx::query(sqlx::AssertSqlSafe(create)).execute(&admin))
        .unwrap();
    let mut db = url::Url::parse(&url).expect("DATABASE_URL is a URL");
    db.set_path(&name);
    let store = rt
        .block_on(Store::connect(db.as_str()))
        .expect("the new database opens");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lease_state_machine(&rt, store)
    }));
    let drop_db = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    let _ = rt.block_on(sqlx::query(sqlx::AssertSqlSafe(drop_db)).execute(&admin));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
