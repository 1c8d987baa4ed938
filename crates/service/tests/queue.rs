//! The run queue, black-box on both databases: one active run per tenant, claims that never
//! hand a run to two workers, the reaper, fencing, cancellation, and the scheduler's ticks.

#[macro_use]
mod common;

use std::time::Duration;

use adsync_service::{
    Service,
    queue::{CancelOutcome, Claimed, Enqueued, RunRequest, Settle},
    scheduler,
};
use adsync_store::{RunId, RunStatus, Store, StoreError};
use common::*;

on_both_databases!(
    one_active_run_per_tenant_and_a_claim_goes_to_one_worker,
    a_run_whose_lease_ran_out_is_reaped_and_its_old_holder_is_fenced_out,
    cancel_queued_and_running_runs,
    a_requeued_run_resumes_and_keeps_its_checkpoint,
    a_run_its_worker_never_settled_is_requeued_or_cancelled_by_the_reaper,
    missed_ticks_fold_into_one_run_and_a_tick_during_a_run_is_skipped,
    paused_tenants_are_not_claimed_and_claims_are_fair,
    many_runs_queued_at_once_follow_the_one_by_one_rule,
    ticks_and_claims_at_once_over_many_tenants_never_fail,
);

/// How a worker ends a run it stops (the run becomes `interrupted`, to be settled).
fn interrupted(error: &str) -> adsync_store::RunEnd {
    adsync_store::RunEnd {
        ending: adsync_store::RunEnding::Stopped(adsync_store::StopReason::Cancelled),
        error: Some(error.into()),
        client: Default::default(),
        active_seconds: 1.0,
        throttled_seconds: 0.0,
        floor_seconds: None,
        at: chrono::Utc::now(),
    }
}

fn request(tenant: &str) -> RunRequest<'_> {
    RunRequest {
        tenant,
        page_size: 100,
        platform: "http://platform.invalid",
        requested_by: "test",
    }
}

/// Queues a run of `tenant` (which must have none active) and returns it.
async fn queue_run(s: &Service, tenant: &str) -> RunId {
    s.queue.enqueue(request(tenant), None).await.unwrap().run()
}

/// Claims one run with a minute's lease (there must be one to claim).
async fn claim_one(s: &Service, owner: &str) -> Claimed {
    s.queue
        .claim(owner, Duration::from_secs(60), 1)
        .await
        .unwrap()
        .pop()
        .unwrap()
}

async fn one_active_run_per_tenant_and_a_claim_goes_to_one_worker(store: Store) {
    let ring = keyring();
    let a = service(&store, ring.clone()).await;
    let b = service(&store, ring).await;
    let t = tenant(&a, "acme", "http://platform.invalid", None, "10/60s", None).await;
    let first = a.queue.enqueue(request(&t.id), None).await.unwrap();
    let Enqueued::Queued(run) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        b.queue.enqueue(request(&t.id), None).await.unwrap(),
        Enqueued::AlreadyActive(run)
    );
    // Two workers claim at the same moment: exactly one gets the run.
    let (ca, cb) = tokio::join!(
        a.queue.claim("worker-a", Duration::from_secs(60), 4),
        b.queue.claim("worker-b", Duration::from_secs(60), 4)
    );
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    assert_eq!(ca.len() + cb.len(), 1, "{ca:?} {cb:?}");
    let claimed = ca.into_iter().chain(cb).next().unwrap();
    assert_eq!(claimed.run.id, run);
    assert_eq!(claimed.run.status, RunStatus::Running);
    assert_eq!(claimed.run.attempts, 1);
    assert_eq!(claimed.lease.epoch, 1);
    // Still one active run: a running one counts.
    assert_eq!(
        a.queue.enqueue(request(&t.id), None).await.unwrap(),
        Enqueued::AlreadyActive(run)
    );
    assert!(
        a.queue
            .claim("worker-c", Duration::from_secs(60), 4)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_run_whose_lease_ran_out_is_reaped_and_its_old_holder_is_fenced_out(store: Store) {
    let s = service(&store, keyring()).await;
    let t = tenant(&s, "acme", "http://platform.invalid", None, "10/60s", None).await;
    let run = queue_run(&s, &t.id).await;
    let old = s
        .queue
        .claim("dead-worker", Duration::from_millis(200), 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    // Nothing to reap while the lease holds.
    assert!(s.queue.reap().await.unwrap().is_empty());
    within_deadline(async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.queue.reap().await.unwrap() == vec![run] {
                break;
            }
        }
    })
    .await;
    let requeued = s.store.run(run).await.unwrap();
    assert_eq!(requeued.status, RunStatus::Queued);
    let new = claim_one(&s, "live-worker").await;
    assert_eq!(new.run.id, run);
    assert_eq!(new.lease.epoch, old.lease.epoch + 1);
    assert_eq!(new.run.attempts, 2);
    // The worker that lost its lease can write nothing.
    let renewed = s.store.renew(&old.lease, Duration::from_secs(60)).await;
    assert!(
        matches!(renewed, Err(StoreError::LeaseLost { .. })),
        "{renewed:?}"
    );
    s.store
        .renew(&new.lease, Duration::from_secs(60))
        .await
        .unwrap();
}

async fn cancel_queued_and_running_runs(store: Store) {
    let s = service(&store, keyring()).await;
    let t = tenant(&s, "acme", "http://platform.invalid", None, "10/60s", None).await;
    let run = queue_run(&s, &t.id).await;
    assert_eq!(
        s.queue.cancel(run, None).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(s.store.run(run).await.unwrap().status, RunStatus::Cancelled);
    assert_eq!(
        s.queue.cancel(run, None).await.unwrap(),
        CancelOutcome::AlreadyFinished(RunStatus::Cancelled)
    );
    // A cancelled run is over: the next request queues a new one.
    let second = s.queue.enqueue(request(&t.id), None).await.unwrap();
    assert!(
        matches!(second, Enqueued::Queued(r) if r != run),
        "{second:?}"
    );
    let claimed = claim_one(&s, "w").await;
    assert!(
        s.queue
            .cancel_requested(&[claimed.run.id])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.queue.cancel(claimed.run.id, None).await.unwrap(),
        CancelOutcome::Requested
    );
    assert_eq!(
        s.queue.cancel_requested(&[claimed.run.id]).await.unwrap(),
        vec![claimed.run.id]
    );
    let missing = s.queue.cancel(999_999, None).await;
    assert!(missing.is_err());
}

async fn a_requeued_run_resumes_and_keeps_its_checkpoint(store: Store) {
    let s = service(&store, keyring()).await;
    let t = tenant(&s, "acme", "http://platform.invalid", None, "10/60s", None).await;
    let run = queue_run(&s, &t.id).await;
    let c = claim_one(&s, "w1").await;
    let end = interrupted("worker shutting down");
    s.store.finish_run(&c.lease, &end).await.unwrap();
    assert!(
        s.queue
            .settle(
                &c.lease,
                Settle::Requeue {
                    after: Duration::ZERO
                }
            )
            .await
            .unwrap()
    );
    // Settling twice, or with a stale lease, does nothing.
    assert!(
        !s.queue
            .settle(
                &c.lease,
                Settle::Requeue {
                    after: Duration::ZERO
                }
            )
            .await
            .unwrap()
    );
    let again = claim_one(&s, "w2").await;
    assert_eq!(again.run.id, run);
    assert_eq!(again.lease.epoch, c.lease.epoch + 1);
    assert_eq!(again.run.resumes, 1);
    // An interrupted run of the CLI kind is requeued, not replaced, by the next request.
    s.store.finish_run(&again.lease, &end).await.unwrap();
    assert_eq!(
        s.queue.enqueue(request(&t.id), None).await.unwrap(),
        Enqueued::Requeued(run)
    );
    // A run whose restart waits (the platform was down) is not claimed before its time.
    let third = claim_one(&s, "w3").await;
    s.store.finish_run(&third.lease, &end).await.unwrap();
    s.queue
        .settle(
            &third.lease,
            Settle::Requeue {
                after: Duration::from_secs(3600),
            },
        )
        .await
        .unwrap();
    assert!(
        s.queue
            .claim("w4", Duration::from_secs(60), 1)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn missed_ticks_fold_into_one_run_and_a_tick_during_a_run_is_skipped(store: Store) {
    let ring = keyring();
    let a = service(&store, ring.clone()).await;
    let b = service(&store, ring).await;
    let t = tenant(
        &a,
        "acme",
        "http://platform.invalid",
        None,
        "10/60s",
        Some("* * * * * *"),
    )
    .await;
    assert!(t.next_run_at.is_some());
    // The scheduler was down for an hour: its tenant's next run is an hour late.
    let late = chrono::Utc::now() - chrono::Duration::hours(1);
    set_next_run(&store, &t.id, late).await;
    // Two schedulers tick at once: one run, not one per missed tick nor one per scheduler.
    let (ra, rb) = tokio::join!(scheduler::tick(&a), scheduler::tick(&b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.0 + rb.0, 1, "{ra:?} {rb:?}");
    let runs = a.store.runs(&t.id, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Queued);
    assert_eq!(runs[0].requested_by.as_deref(), Some("schedule"));
    let after = a.tenants.get(&t.id).await.unwrap();
    assert!(after.next_run_at.unwrap() > chrono::Utc::now() - chrono::Duration::seconds(2));
    // The next tick comes while that run is still queued: skipped, counted, nothing queued.
    set_next_run(
        &store,
        &t.id,
        chrono::Utc::now() - chrono::Duration::seconds(1),
    )
    .await;
    let (fired, skipped) = scheduler::tick(&a).await.unwrap();
    assert_eq!((fired, skipped), (0, 1));
    assert_eq!(a.store.runs(&t.id, 10).await.unwrap().len(), 1);
    assert_eq!(a.tenants.get(&t.id).await.unwrap().ticks_skipped, 1);
}

async fn set_next_run(store: &Store, tenant: &str, at: chrono::DateTime<chrono::Utc>) {
    let sql = "UPDATE tenants SET next_run_at = $2 WHERE id = $1";
    match store {
        Store::Postgres(p) => {
            sqlx::query(sql)
                .bind(tenant)
                .bind(at)
                .execute(p)
                .await
                .unwrap();
        }
        Store::Sqlite(p) => {
            sqlx::query(sql)
                .bind(tenant)
                .bind(adsync_store::sqlite_ts(at))
                .execute(p)
                .await
                .unwrap();
        }
    }
}

async fn paused_tenants_are_not_claimed_and_claims_are_fair(store: Store) {
    use adsync_service::tenants::TenantPatch;
    let s = service(&store, keyring()).await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let t = tenant(&s, name, "http://platform.invalid", None, "10/60s", None).await;
        ids.push(t.id);
    }
    s.tenants
        .update(
            &ids[1],
            TenantPatch {
                paused: Some(true),
                ..TenantPatch::default()
            },
            None,
        )
        .await
        .unwrap();
    for id in &ids {
        s.queue.enqueue(request(id), None).await.unwrap();
    }
    let claimed = s
        .queue
        .claim("w", Duration::from_secs(60), 10)
        .await
        .unwrap();
    let mut got: Vec<_> = claimed.iter().map(|c| c.lease.tenant.clone()).collect();
    got.sort();
    let mut want = vec![ids[0].clone(), ids[2].clone()];
    want.sort();
    assert_eq!(got, want);
    // Fairness: the tenant served least recently is claimed first.
    for c in &claimed {
        let end = adsync_store::RunEnd {
            ending: adsync_store::RunEnding::Finished,
            error: None,
            client: Default::default(),
            active_seconds: 0.0,
            throttled_seconds: 0.0,
            floor_seconds: None,
            at: chrono::Utc::now(),
        };
        s.store.finish_run(&c.lease, &end).await.unwrap();
    }
    s.tenants
        .update(
            &ids[1],
            TenantPatch {
                paused: Some(false),
                ..TenantPatch::default()
            },
            None,
        )
        .await
        .unwrap();
    for id in &ids {
        s.queue.enqueue(request(id), None).await.unwrap();
    }
    let first = s
        .queue
        .claim("w", Duration::from_secs(60), 1)
        .await
        .unwrap();
    assert_eq!(
        first[0].lease.tenant, ids[1],
        "the never-served tenant goes first"
    );
}

async fn a_run_its_worker_never_settled_is_requeued_or_cancelled_by_the_reaper(store: Store) {
    let s = service(&store, keyring()).await;
    let t = tenant(&s, "acme", "http://platform.invalid", None, "10/60s", None).await;
    let u = tenant(
        &s,
        "umbrella",
        "http://platform.invalid",
        None,
        "10/60s",
        None,
    )
    .await;
    let run = queue_run(&s, &t.id).await;
    let other = queue_run(&s, &u.id).await;
    let claimed = s
        .queue
        .claim("w1", Duration::from_secs(60), 2)
        .await
        .unwrap();
    let end = interrupted("the platform is down");
    // A cancel is asked for one while it runs; the worker ends both runs and dies before
    // settling either.
    s.queue.cancel(other, None).await.unwrap();
    for c in &claimed {
        s.store.finish_run(&c.lease, &end).await.unwrap();
    }
    assert_eq!(
        s.store.run(other).await.unwrap().status,
        RunStatus::Interrupted
    );
    assert_eq!(
        s.store.run(run).await.unwrap().status,
        RunStatus::Interrupted
    );

    // Within the grace the worker may still settle them: the reaper leaves them alone.
    assert!(s.queue.reap().await.unwrap().is_empty());
    let mut reaped = s.queue.reap_unsettled(Duration::ZERO).await.unwrap();
    reaped.sort();
    assert_eq!(reaped, vec![run, other]);
    assert_eq!(s.store.run(run).await.unwrap().status, RunStatus::Queued);
    assert_eq!(
        s.store.run(other).await.unwrap().status,
        RunStatus::Cancelled
    );
    // The requeued run is claimed again, its lease a new epoch; the old lease cannot settle it.
    let again = claim_one(&s, "w2").await;
    assert_eq!(again.run.id, run);
    let old = claimed.iter().find(|c| c.run.id == run).unwrap();
    assert!(again.lease.epoch > old.lease.epoch);
    assert!(
        !s.queue
            .settle(
                &old.lease,
                Settle::Requeue {
                    after: Duration::ZERO
                }
            )
            .await
            .unwrap()
    );
    // Nothing more to reap: the run is running under its new lease.
    assert!(
        s.queue
            .reap_unsettled(Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn many_runs_queued_at_once_follow_the_one_by_one_rule(store: Store) {
    let s = service(&store, keyring()).await;
    let url = "http://platform.invalid";
    let active = tenant(&s, "active", url, None, "10/60s", None).await;
    let stopped = tenant(&s, "stopped", url, None, "10/60s", None).await;
    let fresh = tenant(&s, "fresh", url, None, "10/60s", None).await;
    let other = tenant(&s, "other", url, None, "10/60s", None).await;
    // One tenant has an interrupted run (its worker stopped it), one a queued run.
    let interrupted_run = queue_run(&s, &stopped.id).await;
    let c = claim_one(&s, "w1").await;
    s.store
        .finish_run(&c.lease, &interrupted("worker shutting down"))
        .await
        .unwrap();
    let queued_run = queue_run(&s, &active.id).await;

    // A batch naming a tenant that does not exist queues nothing at all.
    let missing = s
        .queue
        .enqueue_many(&[request(&fresh.id), request("t_missing")])
        .await;
    assert!(
        matches!(missing, Err(adsync_service::ServiceError::NotFound(_))),
        "{missing:?}"
    );
    assert!(s.store.runs(&fresh.id, 10).await.unwrap().is_empty());

    let outcomes = s
        .queue
        .enqueue_many(&[
            request(&active.id),
            request(&stopped.id),
            request(&fresh.id),
            request(&other.id),
            request(&fresh.id),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes[0], Enqueued::AlreadyActive(queued_run));
    assert_eq!(outcomes[1], Enqueued::Requeued(interrupted_run));
    let Enqueued::Queued(fresh_run) = outcomes[2] else {
        panic!("{outcomes:?}")
    };
    assert!(
        matches!(outcomes[3], Enqueued::Queued(r) if r != fresh_run),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[4], Enqueued::AlreadyActive(fresh_run));
    for t in [&active, &stopped, &fresh, &other] {
        let runs = s.store.runs(&t.id, 10).await.unwrap();
        assert_eq!(runs.len(), 1, "{}: {runs:?}", t.name);
        assert_eq!(runs[0].status, RunStatus::Queued);
    }
    // Every queued run is claimable, once.
    let claimed = s
        .queue
        .claim("w2", Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 4);

    // The scheduler fires every due tenant in one tick: two due tenants, one of them with a
    // run still active.
    let due_a = tenant(&s, "due-a", url, None, "10/60s", Some("* * * * * *")).await;
    let due_b = tenant(&s, "due-b", url, None, "10/60s", Some("* * * * * *")).await;
    let busy = queue_run(&s, &due_b.id).await;
    let past = chrono::Utc::now() - chrono::Duration::seconds(5);
    set_next_run(&store, &due_a.id, past).await;
    set_next_run(&store, &due_b.id, past).await;
    let (fired, skipped) = scheduler::tick(&s).await.unwrap();
    assert_eq!((fired, skipped), (1, 1));
    let a_runs = s.store.runs(&due_a.id, 10).await.unwrap();
    assert_eq!(a_runs.len(), 1);
    assert_eq!(a_runs[0].requested_by.as_deref(), Some("schedule"));
    let b_runs = s.store.runs(&due_b.id, 10).await.unwrap();
    assert_eq!(b_runs.len(), 1);
    assert_eq!(b_runs[0].id, busy);
    assert_eq!(s.tenants.get(&due_b.id).await.unwrap().ticks_skipped, 1);
    assert_eq!(s.tenants.get(&due_a.id).await.unwrap().ticks_skipped, 0);
}

async fn ticks_and_claims_at_once_over_many_tenants_never_fail(store: Store) {
    // Schedulers lock a batch of due tenants while workers' claims update the tenants they
    // serve, in another order: neither may deadlock the other (a tenant a scheduler finds
    // locked waits for its next tick).
    let ring = keyring();
    let a = service(&store, ring.clone()).await;
    let b = service(&store, ring).await;
    let mut tenants = Vec::new();
    for n in 0..12 {
        let name = format!("t{n:02}");
        let t = tenant(
            &a,
            &name,
            "http://platform.invalid",
            None,
            "10/60s",
            Some("* * * * * *"),
        )
        .await;
        tenants.push(t);
    }
    for round in 0..4 {
        let past = chrono::Utc::now() - chrono::Duration::seconds(5);
        for t in &tenants {
            set_next_run(&store, &t.id, past).await;
            if round % 2 == 0 {
                // Half the rounds with runs queued: the claims then update every tenant.
                a.queue.enqueue(request(&t.id), None).await.unwrap();
            }
        }
        let (ta, tb, ca, cb) = tokio::join!(
            scheduler::tick(&a),
            scheduler::tick(&b),
            a.queue.claim("worker-a", Duration::from_secs(60), 6),
            b.queue.claim("worker-b", Duration::from_secs(60), 6),
        );
        let (ta, tb) = (ta.unwrap(), tb.unwrap());
        let (ca, cb) = (ca.unwrap(), cb.unwrap());
        // Every tenant still has at most one active run, and nothing was claimed twice.
        let mut claimed: Vec<i64> = ca.iter().chain(&cb).map(|c| c.run.id).collect();
        claimed.sort_unstable();
        claimed.dedup();
        assert_eq!(
            claimed.len(),
            ca.len() + cb.len(),
            "round {round}: {ta:?} {tb:?}"
        );
        for t in &tenants {
            let active = a
                .store
                .runs(&t.id, 50)
                .await
                .unwrap()
                .into_iter()
                .filter(|r| matches!(r.status, RunStatus::Queued | RunStatus::Running))
                .count();
            assert!(
                active <= 1,
                "round {round}: {} has {active} active runs",
                t.name
            );
        }
    }
}
