//! How a run ends and what it counts: the status decided from the rows, counters derived from
//! rows across take-overs and frozen at the end, each process's share of time and requests,
//! and dead letters handled after the run (retry, dismiss). Every test body runs on PostgreSQL
//! and on SQLite.

#[macro_use]
mod common;

use adsync_store::{
    DeadLetter, Lease, Resolution, RunCounters, RunEnd, RunEnding, RunId, RunStatus, Stage,
    StopReason, Store,
};
use chrono::Utc;
use common::*;

on_both_databases!(dismissing_dead_letters_by_id_or_all_at_once,);
on_both_databases!(
    a_campaign_dead_lettered_again_after_a_take_over_counts_once,
    a_campaign_synced_after_its_sync_failed_leaves_the_run_succeeded,
    a_finished_run_whose_listing_is_not_complete_is_partial,
    a_stopped_run_is_interrupted_with_its_reason_until_taken_over,
    a_run_that_failed_is_failed,
    a_sync_failure_of_a_campaign_the_platform_removed_does_not_make_the_run_partial,
    retrying_a_finished_runs_dead_letter_leaves_its_counters_alone,
    finishing_adds_each_processs_requests_and_time,
    runs_read_together_are_each_as_read_alone,
);

/// Process A stores c1 and c2 (a complete listing), syncs c2, fails to sync c1, and dies;
/// process B takes the run over and fails to sync c1 again. Returns the run and B's lease.
async fn c1_failed_in_two_processes(store: &Store) -> (RunId, Lease) {
    let (run, a) = start_and_die(store, "t").await;
    let both = campaigns(&["c1", "c2"], 1);
    store
        .store_page(&a, &page(complete(1), &ids(&both), &both))
        .await
        .unwrap();
    store.mark_synced(&a, &["c2"], Utc::now()).await.unwrap();
    store
        .dead_letter(&a, &sync_failure("c1", "503"), Utc::now())
        .await
        .unwrap();
    let b = take_over(store, run.id, "test:2").await;
    store
        .dead_letter(&b, &sync_failure("c1", "503 again"), Utc::now())
        .await
        .unwrap();
    (run.id, b)
}

/// The tenant's only dead letter.
async fn the_dead_letter(store: &Store, tenant: &str) -> DeadLetter {
    let mut letters = store.dead_letters(tenant, true).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    letters.remove(0)
}

async fn a_campaign_dead_lettered_again_after_a_take_over_counts_once(store: Store) {
    // Arrange
    let (run, b) = c1_failed_in_two_processes(&store).await;
    let live = store.run(run).await.unwrap();

    // Act
    let finished = store
        .finish_run(&b, &ending(RunEnding::Finished))
        .await
        .unwrap();

    // Assert
    assert_eq!(live.counters.dead_lettered, 1);
    assert_eq!(finished.counters.dead_lettered, 1);
    assert_eq!(finished.status, RunStatus::Partial);
    let letter = the_dead_letter(&store, "t").await;
    assert_eq!(
        (letter.run_id, letter.attempts, letter.reason.as_str()),
        (run, 2, "503 again")
    );
}

async fn a_campaign_synced_after_its_sync_failed_leaves_the_run_succeeded(store: Store) {
    // Arrange
    let (run, b) = c1_failed_in_two_processes(&store).await;

    // Act
    store.mark_synced(&b, &["c1"], Utc::now()).await.unwrap();
    let finished = store
        .finish_run(&b, &ending(RunEnding::Finished))
        .await
        .unwrap();

    // Assert
    assert_eq!(finished.status, RunStatus::Succeeded);
    let c = finished.counters;
    assert_eq!(
        (c.campaigns_stored, c.campaigns_synced, c.dead_lettered),
        (2, 2, 0)
    );
    assert_eq!((finished.id, finished.resumes), (run, 1));
    assert!(store.pending_syncs(run).await.unwrap().is_empty());
    assert_eq!(
        the_dead_letter(&store, "t").await.resolution,
        Some(Resolution::Synced)
    );
}

async fn a_finished_run_whose_listing_is_not_complete_is_partial(store: Store) {
    // Arrange
    let (_, lease) = start(&store, "t").await;
    let some = campaigns(&["c1"], 1);
    store
        .store_page(&lease, &page(incomplete(), &ids(&some), &some))
        .await
        .unwrap();
    store
        .mark_synced(&lease, &["c1"], Utc::now())
        .await
        .unwrap();

    // Act
    let finished = store
        .finish_run(
            &lease,
            &RunEnd {
                error: Some("the listing could not be proven complete".into()),
                ..ending(RunEnding::Finished)
            },
        )
        .await
        .unwrap();

    // Assert
    assert_eq!(finished.status, RunStatus::Partial);
    assert_eq!(finished.counters.dead_lettered, 0);
    assert_eq!(
        finished.error.as_deref(),
        Some("the listing could not be proven complete")
    );
    assert_eq!(finished.stop_reason, None);
}

async fn a_stopped_run_is_interrupted_with_its_reason_until_taken_over(store: Store) {
    // Arrange
    let (run, a) = start(&store, "t").await;
    let c1 = campaigns(&["c1"], 1);
    store
        .store_page(&a, &page(more(2), &ids(&c1), &c1))
        .await
        .unwrap();

    // Act
    let stopped = store
        .finish_run(
            &a,
            &RunEnd {
                error: Some("the platform is unreachable".into()),
                ..ending(RunEnding::Stopped(StopReason::PlatformDown))
            },
        )
        .await
        .unwrap();
    let (resumed, _) = store
        .take_over(run.id, "test:2", LIVE)
        .await
        .unwrap()
        .unwrap();

    // Assert
    assert_eq!(stopped.status, RunStatus::Interrupted);
    assert!(!stopped.status.is_final());
    assert_eq!(stopped.stop_reason, Some(StopReason::PlatformDown));
    assert_eq!(
        stopped.error.as_deref(),
        Some("the platform is unreachable")
    );
    assert!(stopped.finished_at.is_some());
    assert_eq!(stopped.lease_expires_at, None, "nobody holds a stopped run");
    assert_eq!(stopped.counters.campaigns_stored, 1);
    assert_eq!(
        (
            resumed.status,
            resumed.stop_reason,
            resumed.error,
            resumed.finished_at
        ),
        (RunStatus::Running, None, None, None)
    );
    assert_eq!(resumed.cursor, stopped.cursor);
    assert_eq!(resumed.counters.campaigns_stored, 1);
}

async fn a_run_that_failed_is_failed(store: Store) {
    // Arrange
    let (_, lease) = start(&store, "t").await;
    let c1 = campaigns(&["c1"], 1);
    store
        .store_page(&lease, &page(complete(1), &ids(&c1), &c1))
        .await
        .unwrap();
    store
        .mark_synced(&lease, &["c1"], Utc::now())
        .await
        .unwrap();

    // Act
    let failed = store
        .finish_run(
            &lease,
            &RunEnd {
                error: Some("the credentials were refused".into()),
                ..ending(RunEnding::Failed)
            },
        )
        .await
        .unwrap();

    // Assert
    assert_eq!(
        (failed.status, failed.stop_reason),
        (RunStatus::Failed, None)
    );
    assert!(failed.status.is_final());
    assert_eq!(
        failed.error.as_deref(),
        Some("the credentials were refused")
    );
}

async fn a_sync_failure_of_a_campaign_the_platform_removed_does_not_make_the_run_partial(
    store: Store,
) {
    // Arrange: pass 1 stores c1 and c2, c2's sync fails; pass 2 (complete) no longer has c2.
    let (_, lease) = start(&store, "t").await;
    let pass1 = campaigns(&["c1", "c2"], 1);
    store
        .store_page(&lease, &page(more(2), &ids(&pass1), &pass1))
        .await
        .unwrap();
    store
        .mark_synced(&lease, &["c1"], Utc::now())
        .await
        .unwrap();
    store
        .dead_letter(&lease, &sync_failure("c2", "404"), Utc::now())
        .await
        .unwrap();
    let pass2 = campaigns(&["c1"], 1);
    store
        .store_page(&lease, &page(complete(2), &ids(&pass2), &pass2))
        .await
        .unwrap();

    // Act
    let finished = store
        .finish_run(&lease, &ending(RunEnding::Finished))
        .await
        .unwrap();

    // Assert
    assert_eq!(finished.status, RunStatus::Succeeded);
    assert_eq!(
        (
            finished.counters.dead_lettered,
            finished.counters.campaigns_removed
        ),
        (0, 1)
    );
    assert_eq!(
        the_dead_letter(&store, "t").await.resolution,
        Some(Resolution::Removed)
    );
}

async fn retrying_a_finished_runs_dead_letter_leaves_its_counters_alone(store: Store) {
    // Arrange: a run that ended partial because c1's sync failed.
    let (run, lease) = start(&store, "t").await;
    let both = campaigns(&["c1", "c2"], 1);
    store
        .store_page(&lease, &page(complete(1), &ids(&both), &both))
        .await
        .unwrap();
    store
        .mark_synced(&lease, &["c2"], Utc::now())
        .await
        .unwrap();
    store
        .dead_letter(&lease, &sync_failure("c1", "503"), Utc::now())
        .await
        .unwrap();
    let finished = store
        .finish_run(&lease, &ending(RunEnding::Finished))
        .await
        .unwrap();
    let letter = the_dead_letter(&store, "t").await;

    // Act
    store
        .record_retry_failure(letter.id, "still 503", Utc::now())
        .await
        .unwrap();
    let after_failure = the_dead_letter(&store, "t").await;
    let counters_after_failure = store.run(run.id).await.unwrap().counters;
    store
        .resolve_synced_by_retry(letter.id, Utc::now())
        .await
        .unwrap();

    // Assert
    assert_eq!(finished.status, RunStatus::Partial);
    assert_eq!(
        (
            after_failure.attempts,
            after_failure.reason.as_str(),
            after_failure.resolved
        ),
        (2, "still 503", false)
    );
    assert_eq!(counters_after_failure, finished.counters);
    let after_success = store.run(run.id).await.unwrap();
    assert_eq!(after_success.counters, finished.counters);
    assert_eq!(
        after_success.status,
        RunStatus::Partial,
        "history is not rewritten"
    );
    let resolved = the_dead_letter(&store, "t").await;
    assert_eq!(
        (resolved.resolved, resolved.resolution),
        (true, Some(Resolution::Synced))
    );
    let c1 = store.campaigns("t").await.unwrap().remove(0);
    assert!(c1.synced_at.is_some(), "the retried sync is recorded");
}

async fn dismissing_dead_letters_by_id_or_all_at_once(store: Store) {
    // Arrange
    let (_, lease) = start(&store, "t").await;
    let (_, other) = start(&store, "other").await;
    for id in ["c1", "c2", "c3"] {
        store
            .dead_letter(&lease, &invalid_record(id, "bad"), Utc::now())
            .await
            .unwrap();
    }
    store
        .dead_letter(&other, &invalid_record("c1", "bad"), Utc::now())
        .await
        .unwrap();
    let id_of = |letters: &[DeadLetter], campaign: &str| {
        letters
            .iter()
            .find(|l| l.campaign_id == campaign)
            .unwrap()
            .id
    };
    let letters = store.dead_letters("t", false).await.unwrap();
    let others = store.dead_letters("other", false).await.unwrap();

    // Act
    let by_id = store
        .dismiss_dead_letters("t", &[id_of(&letters, "c1")], Utc::now())
        .await
        .unwrap();
    let again = store
        .dismiss_dead_letters("t", &[id_of(&letters, "c1")], Utc::now())
        .await
        .unwrap();
    let another_tenants = store
        .dismiss_dead_letters("t", &[id_of(&others, "c1")], Utc::now())
        .await
        .unwrap();
    let all = store
        .dismiss_dead_letters("t", &[], Utc::now())
        .await
        .unwrap();

    // Assert
    assert_eq!((by_id, again, another_tenants, all), (1, 0, 0, 2));
    assert!(store.dead_letters("t", false).await.unwrap().is_empty());
    let dismissed = store.dead_letters("t", true).await.unwrap();
    assert_eq!(dismissed.len(), 3);
    assert!(
        dismissed
            .iter()
            .all(|l| l.resolved && l.resolution == Some(Resolution::Dismissed))
    );
    let untouched = store.dead_letters("other", false).await.unwrap();
    assert_eq!(untouched.len(), 1, "dismissing all is all of one tenant");
    assert_eq!(untouched[0].stage, Stage::Validation);
}

async fn finishing_adds_each_processs_requests_and_time(store: Store) {
    // Arrange: A works 2 s and stops; B takes over, works 1 s and finishes.
    let (run, a) = start(&store, "t").await;
    let c1 = campaigns(&["c1"], 1);
    store
        .store_page(&a, &page(complete(1), &ids(&c1), &c1))
        .await
        .unwrap();
    store.mark_synced(&a, &["c1"], Utc::now()).await.unwrap();
    let a_share = RunEnd {
        client: RunCounters {
            requests: 5,
            retries: 1,
            rate_limited: 2,
            token_refreshes: 1,
            limiter_wait_seconds: 0.5,
            // Not request counters: the store derives or counts these itself.
            pages: 99,
            campaigns_stored: 99,
            ..RunCounters::default()
        },
        active_seconds: 2.0,
        throttled_seconds: 0.5,
        floor_seconds: Some(1.0),
        ..ending(RunEnding::Stopped(StopReason::Cancelled))
    };
    store.finish_run(&a, &a_share).await.unwrap();
    let b = take_over(&store, run.id, "test:2").await;
    let b_share = RunEnd {
        client: RunCounters {
            requests: 3,
            token_refreshes: 1,
            limiter_wait_seconds: 0.25,
            ..RunCounters::default()
        },
        active_seconds: 1.0,
        throttled_seconds: 0.25,
        floor_seconds: None,
        ..ending(RunEnding::Finished)
    };

    // Act
    let finished = store.finish_run(&b, &b_share).await.unwrap();

    // Assert
    let c = finished.counters;
    assert_eq!(
        (c.requests, c.retries, c.rate_limited, c.token_refreshes),
        (8, 1, 2, 2)
    );
    assert_eq!(c.limiter_wait_seconds, 0.75);
    assert_eq!((c.pages, c.campaigns_stored), (1, 1));
    assert_eq!(
        (finished.active_seconds, finished.throttled_seconds),
        (3.0, 0.75)
    );
    assert_eq!(finished.floor_seconds, Some(1.0), "kept when B had none");
    assert_eq!(finished.floor_ratio(), Some(3.0));
    assert_eq!(finished.status, RunStatus::Succeeded);
}

async fn runs_read_together_are_each_as_read_alone(store: Store) {
    // Arrange: a run that stored a page (live counters), two that stored nothing, one that
    // ended, and an id that is no run.
    let (stored, lease) = start(&store, "t1").await;
    let listed = campaigns(&["c1", "c2"], 1);
    store
        .store_page(&lease, &page(more(2), &ids(&listed), &listed))
        .await
        .unwrap();
    let (fresh, _) = start(&store, "t2").await;
    let (ended, ended_lease) = start(&store, "t3").await;
    store
        .finish_run(&ended_lease, &ending(RunEnding::Finished))
        .await
        .unwrap();
    let (untouched, _) = start(&store, "t4").await;
    let wanted = [stored.id, fresh.id, ended.id, untouched.id, 999_999];

    // Act
    let together = store.runs_by_id(&wanted).await.unwrap();
    let none = store.runs_by_id(&[]).await.unwrap();

    // Assert: every run that exists, each as `run` reads it; nothing for the missing id.
    let mut got: Vec<RunId> = together.iter().map(|r| r.id).collect();
    got.sort();
    assert_eq!(got, vec![stored.id, fresh.id, ended.id, untouched.id]);
    for r in &together {
        let alone = store.run(r.id).await.unwrap();
        assert_eq!(format!("{r:?}"), format!("{alone:?}"));
    }
    assert!(none.is_empty());
    let by_id = |id: RunId| together.iter().find(|r| r.id == id).unwrap();
    assert_eq!(by_id(stored.id).counters.campaigns_stored, 2);
    // Only a run that stored nothing may skip reading its checkpoint back.
    assert!(!by_id(stored.id).nothing_stored());
    assert!(by_id(fresh.id).nothing_stored());
    assert!(by_id(untouched.id).nothing_stored());
}
