//! A run's counters and dead letters across the processes that work on it: a failure one
//! process recorded and the next one mended is no failure of the run, a failure recorded twice
//! counts once, the client counters of every process add up, and retrying dead letters after
//! the run is over leaves the run as it ended.

mod common;

use std::time::Duration;

use adsync_sim::{HasMore, Profile};
use adsync_store::{Resolution, RunStatus, Stage, Store};
use adsync_sync::{RunReport, retry_dead_letters};
use common::*;

/// Campaigns whose sync calls answer `{"ok": true}` on the broken platforms below.
const BROKEN: [&str; 2] = ["campaign_7", "campaign_14"];

/// Starts a run of 20 campaigns on a slow platform whose sync call of every 7th campaign
/// answers the wrong shape, and cancels it as soon as campaign_7 is dead-lettered. Pages
/// hold one campaign, so the listing (every other turn of the limiter) is still under way.
async fn interrupted_after_a_sync_dead_letter(store: &Store) -> RunReport {
    let sim = slow(20, |c| c.wrong_shape_sync_every = Some(7)).await;
    let first = Background::start(engine(&sim, store, |c| c.page_size = 1));
    first.until("a dead letter", |p| p.dead_lettered >= 1).await;
    let report = first.cancel().await;
    assert_ended(&report, RunStatus::Interrupted, 130);
    assert!(
        !report.listing.done,
        "stopped mid-listing: {:?}",
        report.listing
    );
    let letters = store.dead_letters(TENANT, false).await.unwrap();
    assert!(
        letters
            .iter()
            .any(|l| l.campaign_id == "campaign_7" && l.stage == Stage::Sync),
        "{letters:?}"
    );
    report
}

async fn a_sync_failure_of_an_interrupted_process_mended_by_the_next_one_leaves_the_run_succeeded(
    store: Store,
) {
    let first = interrupted_after_a_sync_dead_letter(&store).await;
    let fixed = calm(20, |_| {}).await;

    let report = run(&engine(&fixed, &store, |_| {})).await;

    assert!(report.resumed);
    assert_eq!(report.run_id, first.run_id);
    assert_ended(&report, RunStatus::Succeeded, 0);
    let c = report.counters;
    assert_eq!(c.dead_lettered, 0);
    assert_eq!(
        (c.pages, c.campaigns_seen),
        (20, 20),
        "no page stored twice"
    );
    assert_eq!((c.campaigns_stored, c.campaigns_synced), (20, 20));
    assert_eq!(
        c.requests,
        (first.client.requests + report.client.requests) as i64,
        "both processes' requests"
    );
    let letters = store.dead_letters(TENANT, true).await.unwrap();
    let seven: Vec<_> = letters
        .iter()
        .filter(|l| l.campaign_id == "campaign_7")
        .collect();
    assert_eq!(seven.len(), 1);
    assert!(seven[0].resolved);
    assert_eq!(seven[0].resolution, Some(Resolution::Synced));
    assert!(stored(&store).await["campaign_7"].synced_at.is_some());
    assert_eq!(fixed.stats().syncs.get("campaign_7"), Some(&1));
}

on_both_databases!(
    a_sync_failure_of_an_interrupted_process_mended_by_the_next_one_leaves_the_run_succeeded
);

#[tokio::test]
async fn a_campaign_dead_lettered_by_two_processes_of_one_run_counts_once() {
    let (store, _dir) = sqlite().await;
    interrupted_after_a_sync_dead_letter(&store).await;
    let still_broken = calm(20, |c| c.wrong_shape_sync_every = Some(7)).await;

    let report = run(&engine(&still_broken, &store, |_| {})).await;

    assert!(report.resumed);
    assert_ended(&report, RunStatus::Partial, 2);
    assert_eq!(report.counters.dead_lettered, 2);
    let letters = store.dead_letters(TENANT, false).await.unwrap();
    let mut dead: Vec<&str> = letters.iter().map(|l| l.campaign_id.as_str()).collect();
    dead.sort_unstable();
    let mut expected = BROKEN.to_vec();
    expected.sort_unstable();
    assert_eq!(dead, expected);
    for l in &letters {
        let attempts = if l.campaign_id == "campaign_7" { 2 } else { 1 };
        assert_eq!(l.attempts, attempts, "{}", l.campaign_id);
        assert_eq!(l.run_id, report.run_id);
    }
    assert_eq!(report.counters.campaigns_synced, 18);
}

#[tokio::test]
async fn retrying_dead_letters_after_the_run_ended_leaves_its_counters_alone() {
    let (store, _dir) = sqlite().await;
    let broken = calm(20, |c| c.wrong_shape_sync_every = Some(7)).await;
    let report = run(&engine(&broken, &store, |_| {})).await;
    assert_ended(&report, RunStatus::Partial, 2);
    let before = store.run(report.run_id).await.unwrap();
    let fixed = calm(20, |_| {}).await;

    let outcome = within(
        "the retry",
        RUN_DEADLINE,
        retry_dead_letters(&client(&fixed), &store, TENANT),
    )
    .await
    .unwrap();

    assert_eq!((outcome.resolved, outcome.still_failing), (2, 0));
    let after = store.run(report.run_id).await.unwrap();
    assert_eq!(after.counters, before.counters);
    assert_eq!(after.counters.dead_lettered, 2);
    assert_eq!(after.status, RunStatus::Partial);
    assert!(store.dead_letters(TENANT, false).await.unwrap().is_empty());
    let rows = stored(&store).await;
    for id in BROKEN {
        assert!(rows[id].synced_at.is_some(), "{id}");
    }
}

#[tokio::test]
async fn a_campaign_the_platform_refuses_is_dead_lettered_and_retried_later() {
    let (store, _dir) = sqlite().await;
    // The reference server's sync endpoint accepts any id; an honest one answers 404.
    let sim = sim(Profile::Reference, |c| c.has_more = HasMore::Honest).await;
    run(&engine(&sim, &store, |_| {})).await;
    // Sync dead letters, recorded by a run: one for a campaign the platform does not know.
    let owner = adsync_sync::this_process();
    let new = adsync_store::NewRun {
        tenant: TENANT,
        page_size: 100,
        platform: "simulator",
        owner: &owner,
    };
    let (_, lease) = store
        .create_run(new, Duration::from_secs(60))
        .await
        .unwrap();
    let ghost = adsync_store::NewDeadLetter {
        campaign_id: "campaign_999".into(),
        stage: Stage::Sync,
        payload: r#"{"id":"campaign_999"}"#.into(),
        reason: "test".into(),
    };
    store
        .dead_letter(&lease, &ghost, chrono::Utc::now())
        .await
        .unwrap();
    let recoverable = adsync_store::NewDeadLetter {
        campaign_id: "campaign_5".into(),
        ..ghost
    };
    store
        .dead_letter(&lease, &recoverable, chrono::Utc::now())
        .await
        .unwrap();

    let outcome = within(
        "the retry",
        RUN_DEADLINE,
        retry_dead_letters(&client(&sim), &store, TENANT),
    )
    .await
    .unwrap();

    assert_eq!((outcome.resolved, outcome.still_failing), (1, 1));
    let left = store.dead_letters(TENANT, false).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].campaign_id, "campaign_999");
    assert!(left[0].reason.contains("404"), "{}", left[0].reason);
    assert_eq!(left[0].attempts, 2);
}
