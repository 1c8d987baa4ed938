//! What a listing leaves behind: campaigns the platform stopped listing (removal and return),
//! the ids each pass listed, warnings, and listing dead letters. Every test body runs on
//! PostgreSQL and on SQLite.

#[macro_use]
mod common;

use adsync_domain::Campaign;
use adsync_store::{
    Lease, ListingCursor, NewDeadLetter, PageBatch, Resolution, RunEnding, RunId, RunStatus, Stage,
    StopReason, Store, StoredCampaign,
};
use chrono::Utc;
use common::*;

on_both_databases!(
    listed_returns_each_id_with_the_pass_that_last_listed_it,
    stopping_a_run_keeps_its_listing_sets_and_finishing_it_empties_them,
    a_failed_run_drops_its_listing_sets,
    stored_and_unstored_ids_keep_their_pass_through_a_stop_and_a_take_over,
    a_campaign_listed_valid_then_invalid_counts_as_listed_by_the_later_pass,
);
on_both_databases!(
    campaigns_missing_from_a_complete_listing_are_marked_removed_not_deleted,
    a_listing_that_is_done_but_not_complete_marks_nothing_removed,
    a_removed_campaign_that_comes_back_is_no_longer_removed,
    a_removed_campaign_listed_again_with_a_bad_record_is_no_longer_removed,
    a_campaign_only_an_earlier_pass_listed_is_removed_when_the_last_pass_completes,
    warnings_of_one_kind_aggregate_into_one_row_per_run,
    a_listing_dead_letter_resolves_when_a_later_listing_is_complete,
);
on_both_databases!(
    @test a_removed_campaign_listed_again_with_an_invalid_record_is_no_longer_removed,
    postgres: [],
    sqlite: [],
);

/// A run of `tenant` that lists and stores exactly `campaigns`, completely, and succeeds.
async fn finished_run_with(store: &Store, tenant: &str, campaigns: &[Campaign]) -> RunId {
    let (run, lease) = start(store, tenant).await;
    store
        .store_page(&lease, &page(complete(1), &ids(campaigns), campaigns))
        .await
        .unwrap();
    store
        .finish_run(&lease, &ending(RunEnding::Finished))
        .await
        .unwrap();
    run.id
}

/// The cursor after page 1 of pass 2 (the platform's data moved during pass 1).
fn second_pass_after_page_1() -> ListingCursor {
    ListingCursor {
        pass: 2,
        next_page: 2,
        ..ListingCursor::default()
    }
}

/// The stored campaign `id` of tenant `t`.
async fn stored(store: &Store, id: &str) -> StoredCampaign {
    store
        .campaigns("t")
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == id)
        .unwrap()
}

/// Ids of tenant `t`'s campaigns marked removed.
async fn removed_ids(store: &Store) -> Vec<String> {
    store
        .campaigns("t")
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.removed_at.is_some())
        .map(|c| c.id)
        .collect()
}

async fn campaigns_missing_from_a_complete_listing_are_marked_removed_not_deleted(store: Store) {
    // Arrange
    let run1 = finished_run_with(&store, "t", &campaigns(&["c1", "c2", "c3"], 1)).await;
    let (_, lease) = start(&store, "t").await;
    let still_listed = campaigns(&["c1", "c2"], 2);

    // Act
    let outcome = store
        .store_page(
            &lease,
            &page(complete(1), &ids(&still_listed), &still_listed),
        )
        .await
        .unwrap();
    let run2 = store
        .finish_run(&lease, &ending(RunEnding::Finished))
        .await
        .unwrap();

    // Assert
    assert_eq!((outcome.removed, outcome.returned), (1, 0));
    assert_eq!(run2.counters.campaigns_removed, 1);
    assert_eq!(
        run2.status,
        RunStatus::Succeeded,
        "a removal is not a failure"
    );
    assert_eq!(
        store.campaign_count("t").await.unwrap(),
        3,
        "no row deleted"
    );
    assert_eq!(removed_ids(&store).await, ["c3"]);
    let c3 = stored(&store, "c3").await;
    assert_eq!(
        c3.last_run_id, run1,
        "the removed campaign keeps its last data"
    );
}

async fn a_listing_that_is_done_but_not_complete_marks_nothing_removed(store: Store) {
    // Arrange
    finished_run_with(&store, "t", &campaigns(&["c1", "c2", "c3"], 1)).await;
    let (_, lease) = start(&store, "t").await;
    let some = campaigns(&["c1"], 2);

    // Act
    let outcome = store
        .store_page(&lease, &page(incomplete(), &ids(&some), &some))
        .await
        .unwrap();
    let run = store
        .finish_run(&lease, &ending(RunEnding::Finished))
        .await
        .unwrap();

    // Assert
    assert_eq!(outcome.removed, 0);
    assert!(removed_ids(&store).await.is_empty());
    assert_eq!(run.counters.campaigns_removed, 0);
    assert!(run.cursor.done && !run.cursor.complete);
}

async fn a_removed_campaign_that_comes_back_is_no_longer_removed(store: Store) {
    // Arrange: run 2's complete listing no longer has c3.
    finished_run_with(&store, "t", &campaigns(&["c1", "c2", "c3"], 1)).await;
    finished_run_with(&store, "t", &campaigns(&["c1", "c2"], 1)).await;
    let (_, lease) = start(&store, "t").await;
    let back = campaigns(&["c3"], 5);
    let rest = campaigns(&["c1", "c2"], 5);

    // Act
    let first = store
        .store_page(&lease, &page(more(2), &ids(&back), &back))
        .await
        .unwrap();
    let last = store
        .store_page(&lease, &page(complete(1), &ids(&rest), &rest))
        .await
        .unwrap();
    let run3 = store
        .finish_run(&lease, &ending(RunEnding::Finished))
        .await
        .unwrap();

    // Assert
    assert_eq!((first.returned, first.newly_stored), (1, 1));
    assert_eq!((last.returned, last.removed), (0, 0));
    assert_eq!(
        (
            run3.counters.campaigns_returned,
            run3.counters.campaigns_removed
        ),
        (1, 0)
    );
    assert!(removed_ids(&store).await.is_empty());
    assert_eq!(stored(&store, "c3").await.impressions, 5);
    assert_eq!(store.campaign_count("t").await.unwrap(), 3);
}

async fn a_removed_campaign_listed_again_with_a_bad_record_is_no_longer_removed(store: Store) {
    // Arrange: run 2's complete listing no longer has c3; run 3 lists it again, but its
    // record is not one adsync can store (only its id reaches the store).
    finished_run_with(&store, "t", &campaigns(&["c1", "c2", "c3"], 1)).await;
    finished_run_with(&store, "t", &campaigns(&["c1", "c2"], 1)).await;
    let (_, lease) = start(&store, "t").await;
    let rest = campaigns(&["c1", "c2"], 5);

    // Act: one page with both valid records and c3's id.
    let outcome = store
        .store_page(&lease, &page(complete(1), &["c1", "c2", "c3"], &rest))
        .await
        .unwrap();

    // Assert: the platform has it, so it is not removed; its stored record stays as it was.
    assert_eq!((outcome.returned, outcome.removed), (1, 0));
    assert!(removed_ids(&store).await.is_empty());
    assert_eq!(stored(&store, "c3").await.impressions, 1);
}

async fn a_campaign_only_an_earlier_pass_listed_is_removed_when_the_last_pass_completes(
    store: Store,
) {
    // Arrange: pass 1 listed c1 and c2, then the platform's data moved and pass 2 began.
    let (_, lease) = start(&store, "t").await;
    let pass1 = campaigns(&["c1", "c2"], 1);
    store
        .store_page(&lease, &page(more(2), &ids(&pass1), &pass1))
        .await
        .unwrap();
    let pass2 = campaigns(&["c1"], 2);

    // Act
    let outcome = store
        .store_page(&lease, &page(complete(2), &ids(&pass2), &pass2))
        .await
        .unwrap();

    // Assert
    assert_eq!(outcome.removed, 1);
    assert_eq!(removed_ids(&store).await, ["c2"]);
}

async fn listed_returns_each_id_with_the_pass_that_last_listed_it(store: Store) {
    // Arrange
    let (run, lease) = start(&store, "t").await;
    let pass2_page1 = second_pass_after_page_1();

    // Act
    store
        .store_page(&lease, &page(more(2), &["a", "b"], &[]))
        .await
        .unwrap();
    store
        .store_page(&lease, &page(pass2_page1, &["b", "c"], &[]))
        .await
        .unwrap();

    // Assert
    assert_eq!(
        listed(&store, run.id).await,
        [
            ("a".to_owned(), 1),
            ("b".to_owned(), 2),
            ("c".to_owned(), 2)
        ]
    );
    assert_eq!(store.run(run.id).await.unwrap().cursor, pass2_page1);
}

async fn stopping_a_run_keeps_its_listing_sets_and_finishing_it_empties_them(store: Store) {
    // Arrange
    let (run, a) = start(&store, "t").await;
    store
        .store_page(&a, &page(more(2), &["a", "b"], &[]))
        .await
        .unwrap();
    let want = [("a".to_owned(), 1), ("b".to_owned(), 1)];

    // Act
    let (after_stop, after_take_over) = stopped_and_taken_over(&store, run.id, &a).await;

    // Assert
    assert_eq!(after_stop, want, "the checkpoint of a stopped run");
    assert_eq!(after_take_over, want);
    assert!(store.listed(run.id).await.unwrap().is_empty());
}

/// Stops the run `a` holds, lets another process take it over and finish it: the run's
/// listing checkpoint after the stop and after the take-over.
async fn stopped_and_taken_over(
    store: &Store,
    run: RunId,
    a: &Lease,
) -> (Vec<(String, u32)>, Vec<(String, u32)>) {
    store
        .finish_run(a, &ending(RunEnding::Stopped(StopReason::Cancelled)))
        .await
        .unwrap();
    let after_stop = listed(store, run).await;
    let b = take_over(store, run, "test:2").await;
    let after_take_over = listed(store, run).await;
    store
        .finish_run(&b, &ending(RunEnding::Finished))
        .await
        .unwrap();
    (after_stop, after_take_over)
}

async fn stored_and_unstored_ids_keep_their_pass_through_a_stop_and_a_take_over(store: Store) {
    // Arrange: pass 1 stores a and b; pass 2 stores b again and lists c, whose record could
    // not be stored (only its id reaches the store).
    let (run, a) = start(&store, "t").await;
    let pass1 = campaigns(&["a", "b"], 1);
    let pass2 = campaigns(&["b"], 2);
    let pass2_page1 = second_pass_after_page_1();
    store
        .store_page(&a, &page(more(2), &ids(&pass1), &pass1))
        .await
        .unwrap();
    store
        .store_page(&a, &page(pass2_page1, &["b", "c"], &pass2))
        .await
        .unwrap();
    let want = [
        ("a".to_owned(), 1),
        ("b".to_owned(), 2),
        ("c".to_owned(), 2),
    ];

    // Act
    let while_running = listed(&store, run.id).await;
    let (after_stop, after_take_over) = stopped_and_taken_over(&store, run.id, &a).await;

    // Assert
    assert_eq!(while_running, want);
    assert_eq!(after_stop, want, "the checkpoint of a stopped run");
    assert_eq!(after_take_over, want);
    assert!(
        store.listed(run.id).await.unwrap().is_empty(),
        "a finished run's stored campaigns are no listing"
    );
}

async fn a_campaign_listed_valid_then_invalid_counts_as_listed_by_the_later_pass(store: Store) {
    // Arrange: pass 1 stores a and lists b without a storable record; pass 2 lists a without
    // one and stores b.
    let (run, lease) = start(&store, "t").await;
    let pass1 = campaigns(&["a"], 1);
    let pass2 = campaigns(&["b"], 2);
    store
        .store_page(&lease, &page(more(2), &["a", "b"], &pass1))
        .await
        .unwrap();
    let pass2_page1 = second_pass_after_page_1();

    // Act
    store
        .store_page(&lease, &page(pass2_page1, &["a", "b"], &pass2))
        .await
        .unwrap();
    let before_the_end = listed(&store, run.id).await;
    let outcome = store
        .store_page(&lease, &page(complete(2), &[], &[]))
        .await
        .unwrap();

    // Assert: both listed by pass 2, so neither is removed when it completes.
    assert_eq!(before_the_end, [("a".to_owned(), 2), ("b".to_owned(), 2)]);
    assert_eq!(outcome.removed, 0);
    assert!(removed_ids(&store).await.is_empty());
}

async fn a_failed_run_drops_its_listing_sets(store: Store) {
    // Arrange
    let (run, lease) = start(&store, "t").await;
    store
        .store_page(&lease, &page(more(2), &["a"], &[]))
        .await
        .unwrap();

    // Act
    store
        .finish_run(&lease, &ending(RunEnding::Failed))
        .await
        .unwrap();

    // Assert
    assert!(store.listed(run.id).await.unwrap().is_empty());
}

async fn warnings_of_one_kind_aggregate_into_one_row_per_run(store: Store) {
    // Arrange
    let (run, lease) = start(&store, "t").await;
    let (_, other_tenant) = start(&store, "other").await;
    let first = [
        warning("unknown_status", "campaign c1 has status \"archived\""),
        warning("total_changed", "total went from 10 to 11"),
        warning("unknown_status", "campaign c2 has status \"draft\""),
    ];
    let later = [warning("unknown_status", "campaign c9 has status \"x\"")];
    let c1 = campaigns(&["c1"], 1);

    // Act
    store
        .store_page(
            &lease,
            &PageBatch {
                warnings: &first,
                ..page(more(2), &ids(&c1), &c1)
            },
        )
        .await
        .unwrap();
    store
        .store_page(
            &lease,
            &PageBatch::cursor_only(complete(1), &[], &later, Utc::now()),
        )
        .await
        .unwrap();
    store
        .store_page(
            &other_tenant,
            &PageBatch::cursor_only(more(1), &[], &later, Utc::now()),
        )
        .await
        .unwrap();
    let live = store.run(run.id).await.unwrap();
    let finished = store
        .finish_run(&lease, &ending(RunEnding::Finished))
        .await
        .unwrap();

    // Assert
    let mut warnings = store.run_warnings(run.id).await.unwrap();
    warnings.sort_by(|a, b| a.kind.cmp(&b.kind));
    let summary: Vec<_> = warnings
        .iter()
        .map(|w| (w.kind.as_str(), w.message.as_str(), w.occurrences))
        .collect();
    assert_eq!(
        summary,
        [
            ("total_changed", "total went from 10 to 11", 1),
            ("unknown_status", "campaign c1 has status \"archived\"", 3),
        ]
    );
    assert_eq!(live.counters.warnings, 4);
    assert_eq!(finished.counters.warnings, 4, "frozen when the run ends");
    assert_eq!(
        finished.counters.pages, 1,
        "a batch that moves only the cursor is no page"
    );
    assert_eq!(
        finished.status,
        RunStatus::Succeeded,
        "warnings are not failures"
    );
}

async fn a_listing_dead_letter_resolves_when_a_later_listing_is_complete(store: Store) {
    // Arrange: run 1 could not use page 2 and ended without a complete listing.
    let (_, lease) = start(&store, "t").await;
    let unusable = [NewDeadLetter {
        campaign_id: "page 2".into(),
        stage: Stage::Listing,
        payload: r#"{"data":{"campaigns":"not a list"}}"#.into(),
        reason: "data.campaigns is a string rather than an array".into(),
    }];
    store
        .store_page(
            &lease,
            &PageBatch::cursor_only(incomplete(), &unusable, &[], Utc::now()),
        )
        .await
        .unwrap();
    let run1 = store
        .finish_run(&lease, &ending(RunEnding::Finished))
        .await
        .unwrap();

    // Act
    finished_run_with(&store, "t", &campaigns(&["c1"], 1)).await;

    // Assert
    assert_eq!(run1.status, RunStatus::Partial);
    assert_eq!(run1.counters.dead_lettered, 1);
    let letters = store.dead_letters("t", true).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].stage, letters[0].resolution),
        (Stage::Listing, Some(Resolution::Listed))
    );
}

async fn a_removed_campaign_listed_again_with_an_invalid_record_is_no_longer_removed(store: Store) {
    // Arrange: run 2's complete listing no longer had c3; run 3's lists it again, but its
    // record is invalid.
    finished_run_with(&store, "t", &campaigns(&["c1", "c2", "c3"], 1)).await;
    finished_run_with(&store, "t", &campaigns(&["c1", "c2"], 1)).await;
    let (_, lease) = start(&store, "t").await;
    let valid = campaigns(&["c1", "c2"], 1);
    let invalid = [invalid_record("c3", "budget is negative")];
    store
        .store_page(
            &lease,
            &PageBatch {
                dead_letters: &invalid,
                seen: 3,
                ..page(complete(1), &["c1", "c2", "c3"], &valid)
            },
        )
        .await
        .unwrap();

    // Act
    let run3 = store
        .finish_run(&lease, &ending(RunEnding::Finished))
        .await
        .unwrap();

    // Assert
    let letter = store.dead_letters("t", true).await.unwrap().remove(0);
    assert_eq!(
        (letter.resolved, letter.resolution),
        (false, None),
        "the platform still lists c3: its invalid record is a failure of run 3"
    );
    assert_eq!(
        (run3.status, run3.counters.dead_lettered),
        (RunStatus::Partial, 1)
    );
    assert!(
        removed_ids(&store).await.is_empty(),
        "c3 is listed, so it is not removed"
    );
}
