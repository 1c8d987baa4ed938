//! Helpers shared by the store's black-box tests: the macro that runs one test body on
//! PostgreSQL and on SQLite, and small builders for runs, pages and endings.
// Each test binary uses some of these helpers, none uses all of them.
#![allow(dead_code, unused_macros)]

use std::{fmt::Debug, future::Future, time::Duration};

use adsync_domain::Campaign;
use adsync_store::{
    Lease, ListingCursor, NewDeadLetter, NewRun, PageBatch, RunCounters, RunEnd, RunEnding, RunId,
    RunRecord, RunWarning, Stage, Store, StoreError,
};
use chrono::Utc;

/// Runs each named `async fn(Store)` twice: on a fresh PostgreSQL database (from
/// `DATABASE_URL`) and on a fresh SQLite file, both migrated by the store itself.
///
/// `on_both_databases!(a, b)` for tests that pass on both. A known store bug that makes tests
/// fail on one database is marked there, so the suite stays green and the bug stays visible:
/// `on_both_databases!(postgres: #[ignore = "store bug: ..."]; a, b)` for many tests,
/// `on_both_databases!(@test a, postgres: [], sqlite: [#[ignore = "store bug: ..."]])` for one.
macro_rules! on_both_databases {
    (@test $name:ident, postgres: [$($pg:tt)*], sqlite: [$($lite:tt)*] $(,)?) => {
        mod $name {
            $($pg)*
            #[sqlx::test(migrations = false)]
            async fn postgres(pool: sqlx::PgPool) {
                let store = adsync_store::Store::Postgres(pool);
                store.migrate().await.unwrap();
                super::$name(store).await;
            }
            $($lite)*
            #[sqlx::test(migrations = false)]
            async fn sqlite(pool: sqlx::SqlitePool) {
                let store = adsync_store::Store::Sqlite(pool);
                store.migrate().await.unwrap();
                super::$name(store).await;
            }
        }
    };
    (postgres: #[$pg:meta]; $($name:ident),* $(,)?) => {$(
        on_both_databases!(@test $name, postgres: [#[$pg]], sqlite: []);
    )*};
    ($($name:ident),* $(,)?) => {$(
        on_both_databases!(@test $name, postgres: [], sqlite: []);
    )*};
}

/// A lease that outlives any test: nobody can take its run over.
pub const LIVE: Duration = Duration::from_secs(3600);
/// A lease that has run out by the time anyone looks: its run can be taken over at once, as
/// when its process died.
pub const EXPIRED: Duration = Duration::ZERO;
/// The longest any wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Awaits `work`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within_deadline<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, work)
        .await
        .expect("the store did not answer within the test deadline")
}

/// A new run of `tenant`, owned by `owner`.
pub fn new_run<'a>(tenant: &'a str, owner: &'a str) -> NewRun<'a> {
    NewRun {
        tenant,
        page_size: 10,
        platform: "simulator",
        owner,
    }
}

/// Starts a run of `tenant` for process `test:1`, on a lease nobody can take in a test.
pub async fn start(store: &Store, tenant: &str) -> (RunRecord, Lease) {
    store
        .create_run(new_run(tenant, "test:1"), LIVE)
        .await
        .unwrap()
}

/// Starts a run of `tenant` whose process (`test:1`) is as good as dead: its lease has
/// already run out, so another process may take the run over.
pub async fn start_and_die(store: &Store, tenant: &str) -> (RunRecord, Lease) {
    store
        .create_run(new_run(tenant, "test:1"), EXPIRED)
        .await
        .unwrap()
}

/// Takes `run` over for `owner`, which must succeed.
pub async fn take_over(store: &Store, run: RunId, owner: &str) -> Lease {
    let (_, lease) = store
        .take_over(run, owner, LIVE)
        .await
        .unwrap()
        .expect("the run can be taken over");
    lease
}

/// A valid campaign, parsed from JSON text as the engine does (so `raw` is that text).
pub fn campaign(id: &str, impressions: i64) -> Campaign {
    Campaign::from_json_text(&format!(
        r#"{{"id":"{id}","name":"Campaign {id}","status":"active","budget":1100.50,"impressions":{impressions},"clicks":{},"conversions":1,"created_at":"2024-12-11T10:30:00Z","extra":{{"k":[1,2]}}}}"#,
        impressions / 10
    ))
    .unwrap()
}

/// Campaigns `ids`, each with `impressions`.
pub fn campaigns(ids: &[&str], impressions: i64) -> Vec<Campaign> {
    ids.iter().map(|id| campaign(id, impressions)).collect()
}

/// The ids of `campaigns`, as a page lists them.
pub fn ids(campaigns: &[Campaign]) -> Vec<&str> {
    campaigns.iter().map(|c| c.id.as_str()).collect()
}

/// Pass 1 of a listing with more to come: the next page to fetch is `next_page`.
pub fn more(next_page: u64) -> ListingCursor {
    ListingCursor {
        next_page,
        ..ListingCursor::default()
    }
}

/// The last page of pass `pass` of a listing that saw everything the platform reported.
pub fn complete(pass: u32) -> ListingCursor {
    ListingCursor {
        pass,
        done: true,
        complete: true,
        ..ListingCursor::default()
    }
}

/// The last page of a listing that could not be proven complete.
pub fn incomplete() -> ListingCursor {
    ListingCursor {
        done: true,
        complete: false,
        ..ListingCursor::default()
    }
}

/// A page that listed `listed_ids` and held `campaigns` (all valid), moving to `cursor`.
pub fn page<'a>(
    cursor: ListingCursor,
    listed_ids: &'a [&'a str],
    campaigns: &'a [Campaign],
) -> PageBatch<'a> {
    PageBatch {
        cursor,
        listed_ids,
        seen: campaigns.len() as u64,
        campaigns,
        dead_letters: &[],
        warnings: &[],
        counts_as_page: true,
        observed_at: Utc::now(),
    }
}

/// A sync call that failed for good for campaign `id`.
pub fn sync_failure(id: &str, reason: &str) -> NewDeadLetter {
    NewDeadLetter {
        campaign_id: id.into(),
        stage: Stage::Sync,
        payload: format!(r#"{{"id":"{id}"}}"#),
        reason: reason.into(),
    }
}

/// A record of campaign `id` that is not a valid campaign.
pub fn invalid_record(id: &str, reason: &str) -> NewDeadLetter {
    NewDeadLetter {
        campaign_id: id.into(),
        stage: Stage::Validation,
        payload: format!(r#"{{"id":"{id}","budget":-1}}"#),
        reason: reason.into(),
    }
}

/// A warning of `kind`.
pub fn warning(kind: &str, message: &str) -> RunWarning {
    RunWarning {
        kind: kind.into(),
        message: message.into(),
    }
}

/// How this process ends its run, with no client counters or time of its own.
pub fn ending(ending: RunEnding) -> RunEnd {
    RunEnd {
        ending,
        error: None,
        client: RunCounters::default(),
        active_seconds: 0.0,
        throttled_seconds: 0.0,
        floor_seconds: None,
        at: Utc::now(),
    }
}

/// Asserts that a write was refused because `lease` is no longer current.
#[track_caller]
pub fn assert_lease_lost<T: Debug>(result: Result<T, StoreError>, lease: &Lease) {
    match result {
        Err(StoreError::LeaseLost { run, epoch }) if run == lease.run && epoch == lease.epoch => {}
        other => panic!(
            "expected LeaseLost for run {} epoch {}, got {other:?}",
            lease.run, lease.epoch
        ),
    }
}

/// What `listed` returns, in a stable order.
pub async fn listed(store: &Store, run: RunId) -> Vec<(String, u32)> {
    let mut listed = store.listed(run).await.unwrap();
    listed.sort();
    listed
}
