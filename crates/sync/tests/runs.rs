//! Whole runs and how they end: a second run over the same data, invalid records, and the outcome and exit code a scheduler reads for each way a run can stop
//! (done, partial, cancelled, platform down, wrong credentials, platform unreachable).

mod common;

use std::time::Duration;

use adsync_client::AdClient;
use adsync_sim::Profile;
use adsync_store::{RunStatus, Stage, Store};
use adsync_sync::{BreakerConfig, Outcome, SyncError};
use common::*;
use tokio_util::sync::CancellationToken;

async fn running_twice_updates_rows_and_adds_metrics_rows(store: Store) {
    let sim = sim(Profile::Reference, |c| c.campaigns = 30).await;
    run(&engine(&sim, &store, |_| {})).await;
    let first = stored(&store).await;

    let report = run(&engine(&sim, &store, |_| {})).await;

    let second = stored(&store).await;
    assert_ended(&report, RunStatus::Succeeded, 0);
    assert!(!report.resumed, "a finished run is not resumed");
    assert_eq!(second.len(), 30);
    assert_eq!(store.metrics_count(TENANT).await.unwrap(), 60);
    for (id, before) in &first {
        let after = &second[id];
        assert!(
            after.impressions > before.impressions,
            "{id}: live counters"
        );
        assert_eq!(after.last_run_id, report.run_id);
    }
    assert!(syncs(&sim).values().all(|n| *n == 2), "once per run");
}

on_both_databases!(running_twice_updates_rows_and_adds_metrics_rows);

#[tokio::test]
async fn invalid_records_are_dead_lettered_with_reasons_while_the_rest_land() {
    let (store, _dir) = sqlite().await;
    // Every 10th campaign is invalid in turn: negative clicks, an unknown status (stored
    // verbatim since it is only unknown), a NUL byte, a missing budget, a string budget.
    let sim = sim(Profile::Reference, |c| c.invalid_every = Some(10)).await;

    let report = run(&engine(&sim, &store, |_| {})).await;

    assert_ended(&report, RunStatus::Partial, 2);
    assert_eq!(report.outcome, Outcome::Partial);
    let letters = store.dead_letters(TENANT, false).await.unwrap();
    let rows = stored(&store).await;
    assert!(
        letters
            .iter()
            .all(|l| l.stage == Stage::Validation && !l.reason.is_empty())
    );
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    for needle in [
        "clicks is negative",
        "NUL byte",
        "budget is missing",
        "budget is a string",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "{needle} not in {reasons:?}"
        );
    }
    let archived: Vec<&String> = rows
        .values()
        .filter(|c| c.status == "archived")
        .map(|c| &c.id)
        .collect();
    assert_eq!(archived, ["campaign_10", "campaign_60"]);
    assert_eq!(letters.len(), 8);
    assert_eq!(rows.len(), 92);
    assert_eq!(report.counters.dead_lettered, 8);
    assert_eq!(warning_counts(&report).get("unknown_status"), Some(&2));
    // Nothing dropped silently: every record is stored or dead-lettered.
    assert_eq!(rows.len() + letters.len(), 100);
}

#[tokio::test]
async fn a_run_cancelled_before_its_first_call_is_interrupted_with_exit_code_130() {
    let (store, _dir) = sqlite().await;
    let sim = calm(10, |_| {}).await;
    let cancel = CancellationToken::new();
    cancel.cancel();

    let report = within(
        "the cancelled run",
        RUN_DEADLINE,
        engine(&sim, &store, |_| {}).run(cancel),
    )
    .await
    .unwrap();

    assert_ended(&report, RunStatus::Interrupted, 130);
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert_eq!(list_calls(&sim), 0);
    assert_eq!(store.campaign_count(TENANT).await.unwrap(), 0);
}

#[tokio::test]
async fn a_run_cancelled_after_its_listing_ended_is_interrupted_and_resumable() {
    let (store, _dir) = sqlite().await;
    let sim = slow(20, |_| {}).await;
    // One page holds everything, so the listing is over at the first call; a long grace lets
    // every call in flight at the cancellation finish, so the outcome does not depend on
    // timing.
    let first = Background::start(engine(&sim, &store, |c| {
        c.page_size = 100;
        c.shutdown_grace = Duration::from_secs(10);
    }));
    first
        .until("the listing done and 2 campaigns synced", |p| {
            p.listing_done && p.synced >= 2
        })
        .await;

    let cancelled = first.cancel().await;
    let resumed = run(&engine(&sim, &store, |_| {})).await;

    assert!(cancelled.counters.campaigns_synced < 20, "{cancelled:#?}");
    assert_ended(&cancelled, RunStatus::Interrupted, 130);
    assert_eq!(cancelled.outcome, Outcome::Cancelled);
    assert!(resumed.resumed, "{resumed:#?}");
    assert_eq!(resumed.run_id, cancelled.run_id);
    assert_ended(&resumed, RunStatus::Succeeded, 0);
    assert_each_listed_campaign_stored_and_synced_once(&sim, &store).await;
}

#[tokio::test]
async fn an_outage_opens_the_circuit_and_interrupts_the_run_with_exit_code_75() {
    let (store, _dir) = sqlite().await;
    // Every rate-limited call fails: the platform is down.
    let sim = calm(10, |c| c.chaos.error = 1.0).await;
    let engine = engine(&sim, &store, |c| {
        c.breaker = BreakerConfig {
            failure_threshold: 2,
            cooldown: Duration::from_millis(50),
            max_trips: 2,
        }
    });

    let report = run(&engine).await;

    assert_ended(&report, RunStatus::Interrupted, 75);
    assert_eq!(report.outcome, Outcome::PlatformDown);
    assert!(report.error.unwrap().contains("cool-downs"));
    assert!(store.dead_letters(TENANT, true).await.unwrap().is_empty());
    // Two trips of two failed calls (each the client's 8 attempts) plus probes: bounded.
    assert!(list_calls(&sim) <= 8 * 5, "{:?}", sim.stats());
}

#[tokio::test]
async fn wrong_credentials_fail_with_exit_code_1_before_anything_is_written() {
    let (store, _dir) = sqlite().await;
    let sim = calm(10, |_| {}).await;
    let client = AdClient::new(client_config(&sim, "wrong")).unwrap();

    let err = try_run(&engine_with(client, &store, |_| {}))
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            SyncError::Platform(adsync_client::Error::InvalidCredentials { .. })
        ),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), 1);
    assert!(store.latest_run(TENANT).await.unwrap().is_none());
    assert_eq!(sim.stats().count("auth", "401"), 1, "no retry storm");
}

#[tokio::test]
async fn an_unreachable_platform_fails_with_exit_code_75_before_anything_is_written() {
    let (store, _dir) = sqlite().await;
    let sim = calm(10, |_| {}).await;
    let mut config = client_config(&sim, adsync_sim::REFERENCE_PASSWORD);
    within("the simulator's shutdown", RUN_DEADLINE, sim.shutdown())
        .await
        .unwrap();
    config.retry.max_attempts = 2;

    let err = try_run(&engine_with(AdClient::new(config).unwrap(), &store, |_| {}))
        .await
        .unwrap_err();

    assert!(matches!(err, SyncError::Platform(_)), "{err:?}");
    assert_eq!(err.exit_code(), 75, "{err}");
    assert!(store.latest_run(TENANT).await.unwrap().is_none());
}

#[tokio::test]
async fn a_database_that_goes_away_mid_run_stops_it_with_exit_code_75_and_a_later_run_resumes_it() {
    let (store, dir) = sqlite().await;
    let sim = slow(12, |_| {}).await;
    let first = Background::start(engine(&sim, &store, |c| c.page_size = 4));
    first.until("2 campaigns synced", |p| p.synced >= 2).await;

    within("closing the database", RUN_DEADLINE, store.close()).await;
    let report = within("the run", RUN_DEADLINE, first.task)
        .await
        .unwrap()
        .unwrap();
    let reopened = Store::connect(&format!("sqlite://{}/adsync.db", dir.path()))
        .await
        .unwrap();
    let resumed = run(&engine(&sim, &reopened, |_| {})).await;

    assert_eq!(report.outcome, Outcome::DatabaseDown, "{report:#?}");
    assert_eq!(report.exit_code(), 75);
    assert!(resumed.resumed, "{resumed:#?}");
    assert_eq!(resumed.run_id, report.run_id);
    assert_ended(&resumed, RunStatus::Succeeded, 0);
    assert_eq!(resumed.counters.campaigns_synced, 12);
}

#[tokio::test]
async fn a_fresh_run_abandons_the_unfinished_one() {
    let (store, _dir) = sqlite().await;
    let sim = calm(10, |_| {}).await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let interrupted = within(
        "the cancelled run",
        RUN_DEADLINE,
        engine(&sim, &store, |_| {}).run(cancel),
    )
    .await
    .unwrap();

    let fresh = run(&engine(&sim, &store, |c| c.fresh = true)).await;

    assert!(!fresh.resumed);
    assert_ne!(fresh.run_id, interrupted.run_id);
    assert_ended(&fresh, RunStatus::Succeeded, 0);
    let abandoned = store.run(interrupted.run_id).await.unwrap();
    assert_eq!(abandoned.status, RunStatus::Failed);
    assert!(
        abandoned.error.as_deref().unwrap().contains("abandoned"),
        "{:?}",
        abandoned.error
    );
}

#[tokio::test]
async fn an_unfinished_run_of_another_platform_is_not_resumed_and_fails_with_exit_code_1() {
    let (store, _dir) = sqlite().await;
    let sim = calm(10, |_| {}).await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let elsewhere = engine(&sim, &store, |c| {
        c.platform = "https://ads.example.com/".into()
    });
    within("the cancelled run", RUN_DEADLINE, elsewhere.run(cancel))
        .await
        .unwrap();

    let err = try_run(&engine(&sim, &store, |_| {})).await.unwrap_err();

    assert!(matches!(err, SyncError::OtherPlatform { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 1);
    assert_eq!(list_calls(&sim), 0);
}
