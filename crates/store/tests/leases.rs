//! Who may write a run: the lease granted at creation or take-over, its renewal, the fencing
//! epoch that shuts out a process that lost it, and abandoning a run nobody holds. Every test
//! body runs on PostgreSQL and on SQLite.

#[macro_use]
mod common;

use std::time::Duration;

use adsync_store::{
    Lease, ListingCursor, NewRun, PageBatch, RunEnding, RunId, RunRecord, RunStatus, StopReason,
    Store, StoreError,
};
use chrono::Utc;
use common::*;

on_both_databases!(
    a_new_run_is_leased_to_its_creator,
    two_processes_taking_over_an_interrupted_run_at_once_get_it_once,
    two_processes_taking_over_a_run_whose_lease_expired_get_it_once,
    a_run_stopped_by_its_owner_takes_no_more_writes_from_it,
    renewing_a_lease_keeps_the_run_from_being_taken_over,
    a_run_that_ended_cannot_be_taken_over,
    abandoning_a_run_whose_owner_died_fails_it,
);
on_both_databases!(
    a_process_that_lost_its_lease_writes_nothing_and_the_new_owner_writes,
    a_live_lease_cannot_be_taken_over,
    abandoning_an_interrupted_run_fails_it_and_fences_its_last_owner,
    sync_records_of_several_runs_together_are_each_fenced_by_their_own_lease,
);

on_both_databases!(
    @test abandoning_a_run_someone_holds_changes_nothing,
    postgres: [],
    sqlite: [],
);
on_both_databases!(
    @test taking_over_a_run_while_another_run_of_its_tenant_is_running_is_refused_as_in_progress,
    postgres: [],
    sqlite: [],
);
on_both_databases!(
    @test a_lease_of_ten_thousand_years_is_live,
    postgres: [],
    sqlite: [],
);
on_both_databases!(
    @test a_lease_without_end_is_live,
    postgres: [],
    sqlite: [],
);

/// Everything a write of a run could change, as comparable JSON.
async fn everything_about(store: &Store, tenant: &str, run: RunId) -> serde_json::Value {
    serde_json::json!({
        "run": store.run(run).await.unwrap(),
        "campaigns": store.campaigns(tenant).await.unwrap(),
        "metrics": store.metrics_count(tenant).await.unwrap(),
        "dead_letters": store.dead_letters(tenant, true).await.unwrap(),
        "listed": listed(store, run).await,
        "pending": store.pending_syncs(run).await.unwrap(),
        "warnings": store.run_warnings(run).await.unwrap(),
    })
}

/// Asserts that of two take-over attempts of `run`, held before by `previous`, exactly one
/// got the run, one epoch later, counted as a resume.
async fn assert_taken_over_once(
    store: &Store,
    run: RunId,
    previous: &Lease,
    resumes: i64,
    attempts: [Option<(RunRecord, Lease)>; 2],
) -> Lease {
    let winners: Vec<_> = attempts.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "exactly one process gets the run");
    let (record, lease) = winners.into_iter().next().unwrap();
    assert_eq!(lease.epoch, previous.epoch + 1, "the epoch grew by one");
    assert_eq!(
        (record.status, record.lease_epoch, record.resumes),
        (RunStatus::Running, lease.epoch, resumes)
    );
    let now = store.run(run).await.unwrap();
    assert_eq!(
        (now.lease_epoch, now.resumes, now.owner.as_deref()),
        (lease.epoch, resumes, Some(lease.owner.as_str()))
    );
    lease
}

async fn a_new_run_is_leased_to_its_creator(store: Store) {
    // Arrange
    let new = NewRun {
        tenant: "t",
        page_size: 250,
        platform: "https://ads.example",
        owner: "host:42",
    };

    // Act
    let (run, lease) = store.create_run(new, LIVE).await.unwrap();

    // Assert
    assert_eq!(
        lease,
        Lease {
            run: run.id,
            tenant: "t".into(),
            epoch: 1,
            owner: "host:42".into(),
        }
    );
    assert_eq!(run.tenant_id, "t");
    assert_eq!((run.status, run.stop_reason), (RunStatus::Running, None));
    assert_eq!(run.owner.as_deref(), Some("host:42"));
    assert_eq!(run.platform.as_deref(), Some("https://ads.example"));
    assert_eq!((run.page_size, run.lease_epoch, run.resumes), (250, 1, 0));
    assert_eq!(run.cursor, ListingCursor::default());
    assert_eq!(run.counters, adsync_store::RunCounters::default());
    assert!(run.heartbeat_at.is_some());
    assert!(run.lease_expires_at.unwrap() > run.started_at);
    assert_eq!(run.finished_at, None);
}

async fn two_processes_taking_over_an_interrupted_run_at_once_get_it_once(store: Store) {
    // Arrange: each round, the run stops and two processes try to resume it at once.
    let (run, mut holder) = start(&store, "t").await;
    for round in 1..=5 {
        store
            .finish_run(&holder, &ending(RunEnding::Stopped(StopReason::Cancelled)))
            .await
            .unwrap();

        // Act
        let (b, c) = within_deadline(async {
            tokio::join!(
                store.take_over(run.id, "test:b", LIVE),
                store.take_over(run.id, "test:c", LIVE),
            )
        })
        .await;

        // Assert
        holder =
            assert_taken_over_once(&store, run.id, &holder, round, [b.unwrap(), c.unwrap()]).await;
    }
}

async fn two_processes_taking_over_a_run_whose_lease_expired_get_it_once(store: Store) {
    // Arrange: the owner died without stopping its run.
    let (run, dead) = start_and_die(&store, "t").await;

    // Act
    let (b, c) = within_deadline(async {
        tokio::join!(
            store.take_over(run.id, "test:b", LIVE),
            store.take_over(run.id, "test:c", LIVE),
        )
    })
    .await;

    // Assert
    assert_taken_over_once(&store, run.id, &dead, 1, [b.unwrap(), c.unwrap()]).await;
}

async fn a_process_that_lost_its_lease_writes_nothing_and_the_new_owner_writes(store: Store) {
    // Arrange: A stores page 1, misses its renewals, and B takes the run over.
    let (run, a) = start_and_die(&store, "t").await;
    let p1 = campaigns(&["c1", "c2"], 1);
    store
        .store_page(&a, &page(more(2), &ids(&p1), &p1))
        .await
        .unwrap();
    store
        .dead_letter(&a, &sync_failure("c2", "503"), Utc::now())
        .await
        .unwrap();
    let b = take_over(&store, run.id, "test:2").await;
    let before = everything_about(&store, "t", run.id).await;
    let p2 = campaigns(&["c3"], 1);
    let letters = [invalid_record("c4", "budget is negative")];
    let warnings = [warning("total_changed", "total went from 4 to 3")];
    let last_page = PageBatch {
        dead_letters: &letters,
        warnings: &warnings,
        seen: 2,
        ..page(complete(1), &["c3", "c4"], &p2)
    };

    // Act
    let late_page = store.store_page(&a, &last_page).await;
    let late_sync = store.mark_synced(&a, &["c1", "c2"], Utc::now()).await;
    let late_letter = store
        .dead_letter(&a, &sync_failure("c1", "timeout"), Utc::now())
        .await;
    let late_renewal = store.renew(&a, LIVE).await;
    let late_finish = store.finish_run(&a, &ending(RunEnding::Finished)).await;

    // Assert
    assert_lease_lost(late_page, &a);
    assert_lease_lost(late_sync, &a);
    assert_lease_lost(late_letter, &a);
    assert_lease_lost(late_renewal, &a);
    assert_lease_lost(late_finish, &a);
    assert_eq!(
        everything_about(&store, "t", run.id).await,
        before,
        "the process that lost its lease changed nothing"
    );

    let outcome = store.store_page(&b, &last_page).await.unwrap();
    store
        .mark_synced(&b, &["c1", "c2"], Utc::now())
        .await
        .unwrap();
    store
        .dead_letter(&b, &sync_failure("c3", "timeout"), Utc::now())
        .await
        .unwrap();
    store.renew(&b, LIVE).await.unwrap();
    let finished = store
        .finish_run(&b, &ending(RunEnding::Finished))
        .await
        .unwrap();
    assert_eq!((outcome.newly_stored, outcome.dead_lettered), (1, 1));
    assert_eq!(finished.status, RunStatus::Partial, "c3 and c4 failed");
    assert_eq!(
        (
            finished.counters.pages,
            finished.counters.campaigns_stored,
            finished.counters.campaigns_synced,
            finished.counters.dead_lettered,
            finished.counters.warnings,
        ),
        (2, 3, 2, 2, 1)
    );
    assert_eq!(finished.owner.as_deref(), Some("test:2"));
}

async fn a_run_stopped_by_its_owner_takes_no_more_writes_from_it(store: Store) {
    // Arrange
    let (_, lease) = start(&store, "t").await;
    let p1 = campaigns(&["c1"], 1);
    store
        .finish_run(&lease, &ending(RunEnding::Stopped(StopReason::Cancelled)))
        .await
        .unwrap();

    // Act
    let late_page = store
        .store_page(&lease, &page(more(2), &ids(&p1), &p1))
        .await;
    let late_renewal = store.renew(&lease, LIVE).await;
    let second_finish = store.finish_run(&lease, &ending(RunEnding::Finished)).await;

    // Assert
    assert_lease_lost(late_page, &lease);
    assert_lease_lost(late_renewal, &lease);
    assert_lease_lost(second_finish, &lease);
    assert_eq!(store.campaign_count("t").await.unwrap(), 0);
}

async fn a_live_lease_cannot_be_taken_over(store: Store) {
    // Arrange
    let (run, a) = start(&store, "t").await;

    // Act
    let attempt = store.take_over(run.id, "test:2", LIVE).await.unwrap();

    // Assert
    assert!(attempt.is_none(), "{attempt:?}");
    let after = store.run(run.id).await.unwrap();
    assert_eq!(
        (after.owner.as_deref(), after.lease_epoch, after.resumes),
        (Some("test:1"), 1, 0)
    );
    let p1 = campaigns(&["c1"], 1);
    store
        .store_page(&a, &page(more(2), &ids(&p1), &p1))
        .await
        .expect("the owner still writes");
}

async fn renewing_a_lease_keeps_the_run_from_being_taken_over(store: Store) {
    // Arrange: a lease that ran out, which nobody has taken yet.
    let (run, a) = start_and_die(&store, "t").await;

    // Act
    store.renew(&a, LIVE).await.unwrap();

    // Assert
    let renewed = store.run(run.id).await.unwrap();
    assert!(renewed.lease_expires_at.unwrap() > run.lease_expires_at.unwrap());
    assert!(renewed.heartbeat_at.unwrap() >= run.heartbeat_at.unwrap());
    let attempt = store.take_over(run.id, "test:2", LIVE).await.unwrap();
    assert!(attempt.is_none(), "{attempt:?}");
    assert_eq!(store.run(run.id).await.unwrap().lease_epoch, a.epoch);
}

async fn a_run_that_ended_cannot_be_taken_over(store: Store) {
    for ending_of_run in [RunEnding::Finished, RunEnding::Failed] {
        // Arrange
        let (run, lease) = start(&store, "t").await;
        let ended = store
            .finish_run(&lease, &ending(ending_of_run))
            .await
            .unwrap();

        // Act
        let attempt = store.take_over(run.id, "test:2", LIVE).await.unwrap();

        // Assert
        assert!(attempt.is_none(), "{ending_of_run:?}: {attempt:?}");
        let after = store.run(run.id).await.unwrap();
        assert_eq!(
            (after.status, after.lease_epoch, after.resumes),
            (ended.status, 1, 0)
        );
        assert!(after.status.is_final());
    }
}

async fn abandoning_an_interrupted_run_fails_it_and_fences_its_last_owner(store: Store) {
    // Arrange
    let (run, a) = start(&store, "t").await;
    let p1 = campaigns(&["c1"], 1);
    store
        .store_page(&a, &page(more(2), &ids(&p1), &p1))
        .await
        .unwrap();
    store
        .finish_run(&a, &ending(RunEnding::Stopped(StopReason::PlatformDown)))
        .await
        .unwrap();

    // Act
    let abandoned = store
        .abandon(run.id, "abandoned: a --fresh run replaced it")
        .await
        .unwrap();

    // Assert
    assert!(abandoned);
    let after = store.run(run.id).await.unwrap();
    assert_eq!(after.status, RunStatus::Failed);
    assert_eq!(
        after.error.as_deref(),
        Some("abandoned: a --fresh run replaced it")
    );
    assert!(after.finished_at.is_some());
    assert_eq!(after.lease_epoch, a.epoch + 1);
    assert!(store.listed(run.id).await.unwrap().is_empty());
    assert!(
        store
            .take_over(run.id, "test:2", LIVE)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store.abandon(run.id, "again").await.unwrap(),
        "a failed run is not abandoned twice"
    );
    assert_lease_lost(store.renew(&a, LIVE).await, &a);
    start(&store, "t").await;
}

async fn abandoning_a_run_whose_owner_died_fails_it(store: Store) {
    // Arrange
    let (run, dead) = start_and_die(&store, "t").await;

    // Act
    let abandoned = store.abandon(run.id, "--fresh").await.unwrap();

    // Assert
    assert!(abandoned);
    assert_eq!(store.run(run.id).await.unwrap().status, RunStatus::Failed);
    let p1 = campaigns(&["c1"], 1);
    assert_lease_lost(
        store
            .store_page(&dead, &page(more(2), &ids(&p1), &p1))
            .await,
        &dead,
    );
    assert_eq!(store.campaign_count("t").await.unwrap(), 0);
}

async fn abandoning_a_run_someone_holds_changes_nothing(store: Store) {
    // Arrange: the owner is alive and has listed page 1.
    let (run, a) = start(&store, "t").await;
    let p1 = campaigns(&["c1", "c2"], 1);
    store
        .store_page(&a, &page(more(2), &ids(&p1), &p1))
        .await
        .unwrap();
    let before = everything_about(&store, "t", run.id).await;

    // Act
    let abandoned = store.abandon(run.id, "--fresh").await.unwrap();

    // Assert
    assert!(!abandoned);
    assert_eq!(everything_about(&store, "t", run.id).await, before);
    // What it matters for: the owner's complete listing must not take c1 and c2 for gone.
    let p2 = campaigns(&["c3"], 1);
    let outcome = store
        .store_page(&a, &page(complete(1), &ids(&p2), &p2))
        .await
        .unwrap();
    assert_eq!(outcome.removed, 0, "page 1's campaigns are still listed");
}

async fn a_lease_of_ten_thousand_years_is_live(store: Store) {
    // Arrange
    let ten_thousand_years = Duration::from_secs(10_000 * 365 * 24 * 3600);
    let (run, _) = store
        .create_run(new_run("t", "test:1"), ten_thousand_years)
        .await
        .unwrap();

    // Act
    let attempt = store.take_over(run.id, "test:2", LIVE).await.unwrap();

    // Assert
    assert!(attempt.is_none(), "{attempt:?}");
}

async fn a_lease_without_end_is_live(store: Store) {
    // Arrange
    let created = store
        .create_run(new_run("t", "test:1"), Duration::MAX)
        .await;
    let (run, _) = created.expect("a run leased for as long as can be");

    // Act
    let attempt = store.take_over(run.id, "test:2", LIVE).await.unwrap();

    // Assert
    assert!(attempt.is_none(), "{attempt:?}");
}

async fn taking_over_a_run_while_another_run_of_its_tenant_is_running_is_refused_as_in_progress(
    store: Store,
) {
    // Arrange: run 1 stopped; run 2 of the same tenant started meanwhile and is running.
    let (run1, a) = start(&store, "t").await;
    store
        .finish_run(&a, &ending(RunEnding::Stopped(StopReason::Cancelled)))
        .await
        .unwrap();
    start(&store, "t").await;

    // Act
    let attempt = store.take_over(run1.id, "test:2", LIVE).await;

    // Assert
    assert!(
        matches!(&attempt, Err(StoreError::RunInProgress(t)) if t == "t"),
        "{attempt:?}"
    );
    let after = store.run(run1.id).await.unwrap();
    assert_eq!((after.status, after.resumes), (RunStatus::Interrupted, 0));
}

async fn sync_records_of_several_runs_together_are_each_fenced_by_their_own_lease(store: Store) {
    // Arrange: three tenants' runs, each with a stored page. The first run's process lost
    // its lease (another took the run over); the other two hold theirs.
    let (lost_run, lost) = start_and_die(&store, "t1").await;
    let (_, held_a) = start(&store, "t2").await;
    let (_, held_b) = start(&store, "t3").await;
    let p = campaigns(&["c1", "c2"], 1);
    for lease in [&lost, &held_a, &held_b] {
        store
            .store_page(lease, &page(more(2), &ids(&p), &p))
            .await
            .unwrap();
    }
    // An open sync dead letter of t2's c1, resolved by its success.
    store
        .dead_letter(&held_a, &sync_failure("c1", "503"), Utc::now())
        .await
        .unwrap();
    let taker = take_over(&store, lost_run.id, "test:2").await;
    let before = everything_about(&store, "t1", lost_run.id).await;

    // Act: one shared write, the same campaign ids under three tenants.
    let held = store
        .mark_synced_many(
            &[
                (&held_a, &["c1", "c2"][..]),
                (&lost, &["c1", "c2"][..]),
                (&held_b, &["c2"][..]),
            ],
            Utc::now(),
        )
        .await
        .unwrap();

    // Assert: the lost lease's batch wrote nothing; the others wrote only their tenant's.
    assert_eq!(held, [true, false, true]);
    assert_eq!(everything_about(&store, "t1", lost_run.id).await, before);
    let synced = |tenant: &'static str| {
        let store = store.clone();
        async move {
            let mut ids: Vec<String> = store
                .campaigns(tenant)
                .await
                .unwrap()
                .into_iter()
                .filter(|c| c.synced_at.is_some())
                .map(|c| c.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(synced("t2").await, ["c1", "c2"]);
    assert_eq!(synced("t3").await, ["c2"]);
    assert!(synced("t1").await.is_empty());
    assert!(
        store
            .dead_letters("t2", false)
            .await
            .unwrap()
            .iter()
            .all(|l| l.resolved),
        "a success resolves the campaign's sync dead letter"
    );
    // The run that took over writes its own.
    assert_eq!(
        store
            .mark_synced_many(&[(&taker, &["c1"][..])], Utc::now())
            .await
            .unwrap(),
        [true]
    );
    assert_eq!(synced("t1").await, ["c1"]);
}
