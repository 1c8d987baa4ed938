//! The platform's data moving: campaigns inserted or removed while a run pages through the
//! listing (offset pagination then shifts under it), and campaigns the platform stops
//! listing between runs. No campaign present at the end is skipped or synced twice; what the
//! platform no longer lists is marked `removed_at` (row kept) by a complete listing only, and
//! cleared when it comes back.

mod common;

use adsync_sim::{Mutation, Simulator};
use adsync_store::{RunStatus, Store};
use adsync_sync::RunReport;
use common::*;

async fn campaigns_inserted_mid_run_are_all_stored_and_synced_exactly_once(store: Store) {
    // After the second page, five campaigns appear at the front: every later page shifts by
    // five, so the first pass sees campaign_16..20 twice and never sees the new ones.
    let sim = calm(50, |c| {
        c.mutations = vec![Mutation {
            after_list_calls: 2,
            insert_front: 5,
            remove_front: 0,
        }]
    })
    .await;

    let report = run(&engine(&sim, &store, |c| c.page_size = 10)).await;

    assert_ended(&report, RunStatus::Succeeded, 0);
    assert_eq!(platform_ids(&sim).len(), 55);
    assert_each_listed_campaign_stored_and_synced_once(&sim, &store).await;
    assert_eq!(
        syncs(&sim).len(),
        55,
        "no campaign outside the final data set"
    );
    assert_eq!(store.campaign_count(TENANT).await.unwrap(), 55);
    assert_eq!(report.counters.campaigns_stored, 55);
    assert_eq!(report.counters.campaigns_synced, 55);
    assert!(report.listing.drift_events >= 1, "{:?}", report.listing);
    assert!(report.listing.pass >= 2, "{:?}", report.listing);
    assert!(report.listing.complete);
    let warnings = warning_counts(&report);
    assert!(warnings.contains_key("total_changed"), "{warnings:?}");
    assert!(warnings.contains_key("listing_again"), "{warnings:?}");
}

on_both_databases!(campaigns_inserted_mid_run_are_all_stored_and_synced_exactly_once);

#[tokio::test]
async fn campaigns_removed_mid_run_are_marked_removed_and_no_other_campaign_is_skipped() {
    let (store, _dir) = sqlite().await;
    // Run 1 lists the 50 campaigns in 5 calls; after run 2's second page the first five
    // disappear, so run 2's later pages shift back by five (campaign_21..25 would be
    // skipped by a single pass).
    let sim = calm(50, |c| {
        c.mutations = vec![Mutation {
            after_list_calls: 7,
            insert_front: 0,
            remove_front: 5,
        }]
    })
    .await;
    let first = run(&engine(&sim, &store, |c| c.page_size = 10)).await;
    assert_ended(&first, RunStatus::Succeeded, 0);
    assert_eq!(
        sim.stats().list_calls_ok,
        5,
        "the change comes during run 2"
    );

    let report = run(&engine(&sim, &store, |c| c.page_size = 10)).await;

    assert_ended(&report, RunStatus::Succeeded, 0);
    assert_eq!(
        report.counters.dead_lettered, 0,
        "404s of removed campaigns"
    );
    assert_eq!(report.counters.campaigns_removed, 5);
    assert!(report.listing.pass >= 2 && report.listing.complete);
    let rows = stored(&store).await;
    assert_eq!(rows.len(), 50, "removed campaigns keep their rows");
    let removed: Vec<&String> = rows
        .values()
        .filter(|c| c.removed_at.is_some())
        .map(|c| &c.id)
        .collect();
    assert_eq!(removed, ids(1..=5).iter().collect::<Vec<_>>());
    let calls = syncs(&sim);
    for id in platform_ids(&sim) {
        let row = &rows[&id];
        assert_eq!(
            row.last_run_id, report.run_id,
            "{id} was not stored by run 2"
        );
        assert!(row.synced_at.is_some());
        assert_eq!(calls[&id], 2, "{id}: once per run");
    }
    for id in ids(1..=5) {
        assert!(calls[&id] <= 2, "{id}");
    }
    assert!(store.dead_letters(TENANT, false).await.unwrap().is_empty());
}

#[tokio::test]
async fn campaigns_listed_then_removed_within_one_run_are_marked_removed_by_it() {
    let (store, _dir) = sqlite().await;
    let sim = calm(50, |c| {
        c.mutations = vec![Mutation {
            after_list_calls: 2,
            insert_front: 0,
            remove_front: 5,
        }]
    })
    .await;

    let report = run(&engine(&sim, &store, |c| c.page_size = 10)).await;

    assert_ended(&report, RunStatus::Succeeded, 0);
    assert_eq!(report.counters.campaigns_removed, 5);
    assert_eq!(report.counters.dead_lettered, 0);
    let rows = stored(&store).await;
    assert_eq!(rows.len(), 50);
    for id in ids(1..=5) {
        assert!(rows[&id].removed_at.is_some(), "{id}");
    }
    assert_each_listed_campaign_stored_and_synced_once(&sim, &store).await;
}

async fn a_campaign_the_platform_stops_listing_is_marked_removed_and_cleared_when_it_returns(
    store: Store,
) {
    let sim = calm(20, |_| {}).await;
    let sync = || async { run(&engine(&sim, &store, |c| c.page_size = 10)).await };
    let first = sync().await;
    assert_ended(&first, RunStatus::Succeeded, 0);
    assert_eq!(first.counters.campaigns_removed, 0);

    assert!(sim.remove_campaign("campaign_7"));
    let second = sync().await;
    let after_second = stored(&store).await;
    assert!(sim.restore_campaign("campaign_7"));
    let third = sync().await;
    let after_third = stored(&store).await;

    assert_ended(&second, RunStatus::Succeeded, 0);
    assert_eq!(
        (
            second.counters.campaigns_removed,
            second.counters.campaigns_returned
        ),
        (1, 0)
    );
    assert_eq!(after_second.len(), 20, "the row is kept");
    for (id, c) in &after_second {
        assert_eq!(c.removed_at.is_some(), id == "campaign_7", "{id}");
    }
    assert_ne!(after_second["campaign_7"].last_run_id, second.run_id);
    assert_ended(&third, RunStatus::Succeeded, 0);
    assert_eq!(
        (
            third.counters.campaigns_removed,
            third.counters.campaigns_returned
        ),
        (0, 1)
    );
    assert_eq!(after_third.len(), 20);
    assert!(after_third.values().all(|c| c.removed_at.is_none()));
    assert_eq!(after_third["campaign_7"].last_run_id, third.run_id);
}

on_both_databases!(
    a_campaign_the_platform_stops_listing_is_marked_removed_and_cleared_when_it_returns
);

#[tokio::test]
async fn a_run_interrupted_mid_listing_marks_nothing_removed() {
    let (store, _dir) = sqlite().await;
    let fast = calm(30, |_| {}).await;
    run(&engine(&fast, &store, |c| c.page_size = 10)).await;
    // The same data set on a slow platform, without campaign_7: a listing cut short there
    // has not seen most campaigns, and must not take them for removed.
    let slow = slow(30, |_| {}).await;
    assert!(slow.remove_campaign("campaign_7"));
    let second = Background::start(engine(&slow, &store, |c| c.page_size = 5));
    second
        .until("the first page stored", |p| p.pages >= 1)
        .await;

    let report = second.cancel().await;

    assert_ended(&report, RunStatus::Interrupted, 130);
    assert!(
        !report.listing.done,
        "cancelled mid-listing: {:?}",
        report.listing
    );
    assert_eq!(report.counters.campaigns_removed, 0);
    let rows = stored(&store).await;
    assert_eq!(rows.len(), 30);
    assert!(rows.values().all(|c| c.removed_at.is_none()));
}

/// Run 1 lists 12 campaigns in one page (its listing is complete before any sync call) on a
/// slow platform; campaign_12, synced last, is removed before its turn, so its sync call
/// answers 404. Run 2 then lists the platform without it. Returns both reports.
async fn removed_between_listing_and_sync(
    store: &Store,
    sim: &Simulator,
) -> (RunReport, RunReport) {
    let first = Background::start(engine(sim, store, |c| c.page_size = 100));
    first
        .until("the listing done and a campaign synced", |p| {
            p.listing_done && p.synced >= 1
        })
        .await;
    assert!(sim.remove_campaign("campaign_12"));
    let report = within("run 1", RUN_DEADLINE, first.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sim.stats().count("sync", "404"),
        1,
        "campaign_12's sync call"
    );
    let next = run(&engine(sim, store, |c| c.page_size = 100)).await;
    (report, next)
}

#[tokio::test]
async fn a_campaign_removed_between_its_listing_and_its_sync_does_not_make_the_run_partial() {
    let (store, _dir) = sqlite().await;
    let sim = slow(12, |_| {}).await;

    let (report, _) = removed_between_listing_and_sync(&store, &sim).await;

    assert_ended(&report, RunStatus::Succeeded, 0);
    assert_eq!(report.counters.dead_lettered, 0);
}

#[tokio::test]
async fn a_sync_dead_letter_of_a_campaign_the_next_listing_no_longer_has_is_resolved_as_removed() {
    let (store, _dir) = sqlite().await;
    let sim = slow(12, |_| {}).await;

    let (_, next) = removed_between_listing_and_sync(&store, &sim).await;

    assert_ended(&next, RunStatus::Succeeded, 0);
    assert!(stored(&store).await["campaign_12"].removed_at.is_some());
    let letters = store.dead_letters(TENANT, true).await.unwrap();
    assert!(
        letters
            .iter()
            .all(|l| l.resolution == Some(adsync_store::Resolution::Removed)),
        "{letters:#?}"
    );
}
