//! Who works on a run: a run stopped by a signal or by the death of its process is resumed
//! from its checkpoint by exactly one process, a live holder keeps every other process out,
//! and a process whose run was taken over stops without writing another row.

mod common;

use std::{collections::BTreeMap, time::Duration};

use adsync_sim::Simulator;
use adsync_store::{RunStatus, Store};
use adsync_sync::{Outcome, SyncError};
use common::*;
use tokio_util::sync::CancellationToken;

/// What the database and the platform say after the first process of a run stopped.
struct Stopped {
    run: adsync_store::RunRecord,
    /// Campaigns the database records as synced.
    synced: Vec<String>,
    /// Sync calls the platform had answered.
    calls: BTreeMap<String, u64>,
    /// Pages the platform had served.
    pages_served: BTreeMap<u64, u64>,
}

async fn stopped(sim: &Simulator, store: &Store) -> Stopped {
    settled(store).await;
    Stopped {
        run: store.latest_run(TENANT).await.unwrap().expect("a run"),
        synced: stored(store)
            .await
            .into_values()
            .filter(|c| c.synced_at.is_some())
            .map(|c| c.id)
            .collect(),
        calls: syncs(sim),
        pages_served: sim.stats().pages_served,
    }
}

/// Asserts that no campaign the first process had recorded as synced was called again, and
/// that at most `in_flight` campaigns were called twice overall (calls the platform answered
/// but the stopped process never recorded).
fn assert_no_campaign_synced_again(before: &Stopped, sim: &Simulator, in_flight: usize) {
    let after = syncs(sim);
    for id in &before.synced {
        assert_eq!(
            after.get(id),
            before.calls.get(id),
            "{id} was synced again after the resume"
        );
    }
    let twice: Vec<_> = after.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= in_flight,
        "more campaigns synced twice than were in flight: {twice:?}"
    );
}

async fn an_aborted_run_is_resumed_without_calling_synced_campaigns_or_stored_pages_again(
    store: Store,
) {
    let sim = calm(50, |_| {}).await;
    let first = engine(&sim, &store, |c| c.page_size = 5);
    let in_flight = first.sync_concurrency();
    let first = Background::start(first);
    first.until("15 campaigns synced", |p| p.synced >= 15).await;
    first.abort().await;
    let before = stopped(&sim, &store).await;

    let report = run(&engine(&sim, &store, |_| {})).await;

    assert_eq!(
        before.run.status,
        RunStatus::Running,
        "the aborted process could not mark its run"
    );
    assert!(report.resumed);
    assert_eq!(report.run_id, before.run.id);
    assert_ended(&report, RunStatus::Succeeded, 0);
    assert_eq!(store.campaign_count(TENANT).await.unwrap(), 50);
    assert_eq!(report.counters.campaigns_synced, 50);
    assert_eq!(report.counters.campaigns_stored, 50);
    assert_no_campaign_synced_again(&before, &sim, in_flight);
    assert_eq!(syncs(&sim).len(), 50);
    // The resumed run fetched exactly the pages the first one had not stored (a page served
    // but not stored when the process died is, rightly, fetched again).
    let fetched_after: Vec<u64> = sim
        .stats()
        .pages_served
        .into_iter()
        .filter(|(page, n)| before.pages_served.get(page) != Some(n))
        .map(|(page, _)| page)
        .collect();
    let not_stored: Vec<u64> = (before.run.cursor.next_page..=10).collect();
    assert_eq!(fetched_after, not_stored);
}

on_both_databases!(
    an_aborted_run_is_resumed_without_calling_synced_campaigns_or_stored_pages_again
);

#[tokio::test]
async fn a_cancelled_run_is_interrupted_and_the_next_run_finishes_it() {
    let (store, _dir) = sqlite().await;
    let sim = calm(100, |_| {}).await;
    // Two calls in flight: with the listing at most a channel (64 ids) and a page ahead of
    // the sync calls, it is still under way when 10 campaigns are synced.
    let first = engine(&sim, &store, |c| {
        c.page_size = 10;
        c.sync_concurrency = Some(2);
    });
    let in_flight = first.sync_concurrency();
    let first = Background::start(first);
    first.until("10 campaigns synced", |p| p.synced >= 10).await;

    let cancelled = first.cancel().await;
    let before = stopped(&sim, &store).await;
    let finished = run(&engine(&sim, &store, |_| {})).await;

    assert_ended(&cancelled, RunStatus::Interrupted, 130);
    assert_eq!(cancelled.outcome, Outcome::Cancelled);
    assert!(cancelled.error.as_deref().unwrap().contains("resume"));
    assert_eq!(finished.run_id, cancelled.run_id);
    assert!(finished.resumed);
    assert_ended(&finished, RunStatus::Succeeded, 0);
    assert_eq!(finished.counters.campaigns_synced, 100);
    assert_no_campaign_synced_again(&before, &sim, in_flight);
    assert_eq!(store.campaign_count(TENANT).await.unwrap(), 100);
}

/// How the first process of the run stops.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// Cancelled: it marks its run interrupted.
    Cancelled,
    /// Killed: its lease stays until it runs out.
    Aborted,
}

/// Two processes resume the same run at once: one takes it over, the other is told the
/// tenant is busy. The platform is slow (ten calls a second) and pages hold one campaign:
/// the rest of the run (over 20 calls) outlasts the time the second process needs to see
/// the first one's lease renewed (about a second), and the listing, which gets every other
/// turn of the client's first-come-first-served limiter, is still under way when the first
/// process stops.
async fn two_resumers_at_once(store: Store, death: Death) {
    let sim = slow(15, |_| {}).await;
    let first = engine(&sim, &store, |c| c.page_size = 1);
    let in_flight = first.sync_concurrency();
    let first = Background::start(first);
    first.until("3 campaigns synced", |p| p.synced >= 3).await;
    match death {
        Death::Cancelled => {
            let report = first.cancel().await;
            assert_ended(&report, RunStatus::Interrupted, 130);
        }
        Death::Aborted => first.abort().await,
    }
    let before = stopped(&sim, &store).await;
    assert!(
        !before.run.cursor.done,
        "stopped mid-listing: {:?}",
        before.run.cursor
    );
    let (a, b) = (engine(&sim, &store, |_| {}), engine(&sim, &store, |_| {}));

    let (a, b) = within("two resumers", RUN_DEADLINE, async {
        tokio::join!(
            a.run(CancellationToken::new()),
            b.run(CancellationToken::new())
        )
    })
    .await;

    let (report, busy) = match (a, b) {
        (Ok(report), Err(busy)) | (Err(busy), Ok(report)) => (report, busy),
        other => panic!("expected one report and one busy error: {other:#?}"),
    };
    assert!(
        matches!(busy, SyncError::Busy { run, .. } if run == before.run.id),
        "{busy:?}"
    );
    assert_eq!(busy.exit_code(), 75);
    assert!(report.resumed);
    assert_eq!(report.run_id, before.run.id);
    assert_ended(&report, RunStatus::Succeeded, 0);
    let run = store.run(before.run.id).await.unwrap();
    assert_eq!(run.resumes, 1, "one take-over only");
    assert_eq!(
        store.runs(TENANT, 10).await.unwrap().len(),
        1,
        "no second run"
    );
    assert_eq!(report.counters.campaigns_synced, 15);
    assert_no_campaign_synced_again(&before, &sim, in_flight);
    assert_eq!(syncs(&sim).len(), 15);
}

async fn two_resumers_of_a_cancelled_run_one_takes_it_over_and_the_other_is_busy(store: Store) {
    two_resumers_at_once(store, Death::Cancelled).await;
}

async fn two_resumers_of_a_run_whose_process_died_one_takes_it_over_and_the_other_is_busy(
    store: Store,
) {
    two_resumers_at_once(store, Death::Aborted).await;
}

on_both_databases!(
    two_resumers_of_a_cancelled_run_one_takes_it_over_and_the_other_is_busy,
    two_resumers_of_a_run_whose_process_died_one_takes_it_over_and_the_other_is_busy,
);

/// Makes the run's lease run out now, as it does for a process stopped (SIGSTOP, a long GC
/// pause, a frozen VM) for longer than its lease: the one thing a test cannot wait for
/// in-process, since the engine renews its lease as long as it runs.
async fn expire_lease(store: &Store, run: adsync_store::RunId) {
    let expired = match store {
        Store::Sqlite(pool) => sqlx::query(
            "UPDATE sync_runs SET lease_expires_at = '2000-01-01T00:00:00.000000Z' WHERE id = ?1",
        )
        .bind(run)
        .execute(pool)
        .await
        .unwrap()
        .rows_affected(),
        Store::Postgres(pool) => sqlx::query(
            "UPDATE sync_runs SET lease_expires_at = now() - interval '1 hour' WHERE id = $1",
        )
        .bind(run)
        .execute(pool)
        .await
        .unwrap()
        .rows_affected(),
    };
    assert_eq!(expired, 1);
}

/// Everything a run's process may write, read back.
async fn everything(store: &Store, run: adsync_store::RunId) -> String {
    format!(
        "{:#?}\n{:#?}\n{:#?}\n{:#?}\n{}",
        store.run(run).await.unwrap(),
        stored(store).await,
        store.dead_letters(TENANT, true).await.unwrap(),
        store.run_warnings(run).await.unwrap(),
        store.metrics_count(TENANT).await.unwrap(),
    )
}

async fn a_process_whose_run_was_taken_over_stops_and_writes_nothing_more(store: Store) {
    let sim = slow(40, |_| {}).await;
    // A long lease: its first renewal would come after 20 s, so the lease ends when the
    // test says so.
    let first = engine(&sim, &store, |c| {
        c.page_size = 10;
        c.lease_ttl = Duration::from_secs(60);
    });
    let first = Background::start(first);
    first.until("3 campaigns synced", |p| p.synced >= 3).await;
    let run = store.latest_run(TENANT).await.unwrap().unwrap();
    expire_lease(&store, run.id).await;
    let (_, thief) = store
        .take_over(run.id, "thief:1", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("an expired lease can be taken over");
    let at_take_over = everything(&store, run.id).await;

    let report = within("the run that lost its lease", RUN_DEADLINE, first.task)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(report.outcome, Outcome::LeaseLost, "{report:#?}");
    assert_eq!(report.exit_code(), 75);
    assert!(
        report
            .error
            .as_deref()
            .unwrap()
            .contains("took this run over"),
        "{:?}",
        report.error
    );
    assert_eq!(
        everything(&store, run.id).await,
        at_take_over,
        "the process that lost its lease wrote after the take-over"
    );
    let now = store.run(run.id).await.unwrap();
    assert_eq!(now.status, RunStatus::Running, "the new holder's run");
    assert_eq!(now.lease_epoch, thief.epoch);
    assert_eq!(now.owner.as_deref(), Some("thief:1"));
}

on_both_databases!(a_process_whose_run_was_taken_over_stops_and_writes_nothing_more);

#[tokio::test]
async fn a_second_live_process_cannot_take_the_same_tenant() {
    let (store, _dir) = sqlite().await;
    let sim = calm(10, |_| {}).await;
    // A run held by another live process: it renews its lease while we watch.
    let new = adsync_store::NewRun {
        tenant: TENANT,
        page_size: 100,
        platform: "simulator",
        owner: "elsewhere:1",
    };
    let (_, lease) = store
        .create_run(new, Duration::from_secs(10))
        .await
        .unwrap();
    let holder = tokio::spawn({
        let store = store.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                store.renew(&lease, Duration::from_secs(10)).await.unwrap();
            }
        }
    });

    let err = try_run(&engine(&sim, &store, |_| {})).await.unwrap_err();
    holder.abort();

    assert!(matches!(err, SyncError::Busy { .. }), "{err:?}");
    assert!(err.to_string().contains("is being synced by elsewhere:1"));
    assert_eq!(err.exit_code(), 75);
    assert_eq!(sim.stats().total("list"), 0, "nothing was called");
}
