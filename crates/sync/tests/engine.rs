//! The sync engine through its public API, against the in-process simulator and a real
//! database (SQLite files; PostgreSQL through `#[sqlx::test]`).

use std::{collections::BTreeMap, time::Duration};

use adsync_client::{AdClient, ClientConfig, Credentials, RetryPolicy};
use adsync_sim::{Profile, SimConfig, Simulator};
use adsync_store::{RunStatus, Stage, Store};
use adsync_sync::{BreakerConfig, SyncConfig, SyncEngine, SyncError};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

const SCALE: f64 = 600.0; // a 60 s window lasts 100 ms

async fn sim(profile: Profile, tweak: impl FnOnce(&mut SimConfig)) -> Simulator {
    let mut c = SimConfig::for_profile(profile);
    c.time_scale = SCALE;
    tweak(&mut c);
    Simulator::start_local(c).await.unwrap()
}

fn client(sim: &Simulator, password: &str) -> AdClient {
    let mut c = ClientConfig::new(
        sim.url().parse().unwrap(),
        Credentials {
            email: adsync_sim::REFERENCE_EMAIL.into(),
            password: SecretString::from(password.to_owned()),
        },
    );
    c.rate_limit = sim.config().effective_rate_limit();
    c.request_timeout = Duration::from_millis(300);
    c.retry = RetryPolicy {
        max_attempts: 8,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(100),
        max_rate_limited: 3,
    };
    AdClient::new(c).unwrap()
}

fn engine(sim: &Simulator, store: &Store, tweak: impl FnOnce(&mut SyncConfig)) -> SyncEngine {
    let mut c = SyncConfig {
        breaker: BreakerConfig {
            cooldown: Duration::from_millis(200),
            ..BreakerConfig::default()
        },
        shutdown_grace: Duration::from_millis(500),
        ..SyncConfig::default()
    };
    tweak(&mut c);
    SyncEngine::new(
        client(sim, adsync_sim::REFERENCE_PASSWORD),
        store.clone(),
        c,
    )
}

async fn sqlite_store() -> (Store, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let store = Store::connect(&format!("sqlite://{}/adsync.db", dir.path()))
        .await
        .unwrap();
    (store, dir)
}

/// A throwaway directory, removed on drop (a dozen lines instead of a dev-dependency).
mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "adsync-test-{}-{}",
                std::process::id(),
                rand_suffix()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> String {
            self.0.display().to_string()
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }
}

async fn reference_sync_stores_and_syncs_all_100_with_no_429(store: Store) {
    let sim = sim(Profile::Reference, |_| {}).await;
    let engine = engine(&sim, &store, |_| {});

    let report = engine.run(CancellationToken::new()).await.unwrap();

    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(store.campaign_count("default").await.unwrap(), 100);
    let c = report.counters;
    assert_eq!(
        (c.campaigns_seen, c.campaigns_stored, c.campaigns_synced),
        (100, 100, 100)
    );
    assert_eq!(sim.stats().rate_limited, 0);
    assert_eq!(report.client.rate_limited, 0);
    assert!(
        store
            .campaigns("default")
            .await
            .unwrap()
            .iter()
            .all(|c| c.synced_at.is_some())
    );
    assert_eq!(sim.stats().syncs.len(), 100);
}

#[tokio::test]
async fn reference_sync_on_sqlite() {
    let (store, _dir) = sqlite_store().await;
    reference_sync_stores_and_syncs_all_100_with_no_429(store).await;
}

#[sqlx::test(migrations = false)]
async fn reference_sync_on_postgres(pool: sqlx::PgPool) {
    let store = Store::Postgres(pool);
    store.migrate().await.unwrap();
    reference_sync_stores_and_syncs_all_100_with_no_429(store).await;
}

#[tokio::test]
async fn chaos_stores_every_campaign_exactly_once_with_names_byte_for_byte() {
    let (store, _dir) = sqlite_store().await;
    let sim = sim(Profile::Chaos, |c| c.seed = 11).await;
    let engine = engine(&sim, &store, |c| c.page_size = 10);

    let report = engine.run(CancellationToken::new()).await.unwrap();

    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    let stored = store.campaigns("default").await.unwrap();
    assert_eq!(stored.len(), 100);
    assert!(stored.iter().all(|c| c.synced_at.is_some()));
    assert!(
        stored
            .iter()
            .any(|c| c.name.starts_with("Robert'); DROP TABLE campaigns;--"))
    );
    assert!(
        stored
            .iter()
            .any(|c| c.name.contains("広告キャンペーン 🚀"))
    );
    assert!(
        stored
            .iter()
            .any(|c| c.name.contains("multi\nline\r\nname"))
    );
    let faults: u64 = ["503", "hang", "reset", "truncated"]
        .iter()
        .map(|o| sim.stats().count("list", o) + sim.stats().count("sync", o))
        .sum();
    assert!(
        faults >= 10,
        "chaos was too calm to prove anything: {faults}"
    );
    assert_eq!(report.client.rate_limited, 0);
}

async fn running_twice_updates_rows_and_adds_metrics_rows(store: Store) {
    let sim = sim(Profile::Reference, |_| {}).await;
    engine(&sim, &store, |_| {})
        .run(CancellationToken::new())
        .await
        .unwrap();
    let first = store.campaigns("default").await.unwrap();

    let report = engine(&sim, &store, |_| {})
        .run(CancellationToken::new())
        .await
        .unwrap();

    let second = store.campaigns("default").await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(second.len(), 100);
    assert_eq!(store.metrics_count("default").await.unwrap(), 200);
    assert!(
        first
            .iter()
            .zip(&second)
            .all(|(a, b)| b.impressions > a.impressions)
    );
    assert!(second.iter().all(|c| c.last_run_id == report.run_id));
}

#[tokio::test]
async fn running_twice_on_sqlite() {
    let (store, _dir) = sqlite_store().await;
    running_twice_updates_rows_and_adds_metrics_rows(store).await;
}

#[sqlx::test(migrations = false)]
async fn running_twice_on_postgres(pool: sqlx::PgPool) {
    let store = Store::Postgres(pool);
    store.migrate().await.unwrap();
    running_twice_updates_rows_and_adds_metrics_rows(store).await;
}

async fn an_aborted_run_resumes_without_calling_done_campaigns_again(store: Store) {
    let sim = sim(Profile::Reference, |c| c.campaigns = 200).await;
    let first = engine(&sim, &store, |c| c.page_size = 20);
    let progress = first.progress();
    let task = tokio::spawn(async move { first.run(CancellationToken::new()).await });
    while progress.snapshot().synced < 60 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort(); // as abrupt as kill -9 for the database: no cleanup runs
    let _ = task.await;
    let interrupted = store.latest_run("default").await.unwrap().unwrap();
    let synced_before: Vec<String> = store
        .campaigns("default")
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.synced_at.is_some())
        .map(|c| c.id)
        .collect();
    let calls_before: BTreeMap<String, u64> = sim.stats().syncs;
    let pages_served_before = sim.stats().count("list", "200");

    let report = engine(&sim, &store, |c| c.page_size = 20)
        .run(CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(
        interrupted.status,
        RunStatus::Running,
        "the aborted process could not mark it"
    );
    assert!(report.resumed);
    assert_eq!(report.run_id, interrupted.id);
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(store.campaign_count("default").await.unwrap(), 200);
    assert_eq!(report.counters.campaigns_synced, 200);
    let calls_after = sim.stats().syncs;
    for id in &synced_before {
        assert_eq!(
            calls_after[id], calls_before[id],
            "{id} was synced again after resume"
        );
    }
    // The resumed run fetched exactly the pages the first one had not stored (a page served
    // but not yet stored when the task died is, rightly, fetched again).
    let pages_stored_before = interrupted.counters.pages as u64;
    assert_eq!(
        sim.stats().count("list", "200") - pages_served_before,
        10 - pages_stored_before
    );
}

#[tokio::test]
async fn resume_after_abort_on_sqlite() {
    let (store, _dir) = sqlite_store().await;
    an_aborted_run_resumes_without_calling_done_campaigns_again(store).await;
}

#[sqlx::test(migrations = false)]
async fn resume_after_abort_on_postgres(pool: sqlx::PgPool) {
    let store = Store::Postgres(pool);
    store.migrate().await.unwrap();
    an_aborted_run_resumes_without_calling_done_campaigns_again(store).await;
}

#[tokio::test]
async fn cancellation_marks_the_run_interrupted_and_the_next_run_finishes_it() {
    let (store, _dir) = sqlite_store().await;
    let sim = sim(Profile::Reference, |c| c.campaigns = 200).await;
    let first = engine(&sim, &store, |c| c.page_size = 20);
    let progress = first.progress();
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move { first.run(cancel).await }
    });
    while progress.snapshot().synced < 30 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    cancel.cancel();
    let stopped = task.await.unwrap().unwrap();
    let finished = engine(&sim, &store, |_| {})
        .run(CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(stopped.status, RunStatus::Interrupted);
    assert!(stopped.error.as_deref().unwrap().contains("resume"));
    assert_eq!(stopped.exit_code(), 130);
    assert_eq!(finished.run_id, stopped.run_id);
    assert_eq!(finished.status, RunStatus::Succeeded);
    assert_eq!(store.campaign_count("default").await.unwrap(), 200);
    let total_calls: u64 = sim.stats().syncs.values().sum();
    assert!(
        total_calls <= 200 + 10,
        "at most the in-flight calls repeat: {total_calls}"
    );
}

#[tokio::test]
async fn invalid_records_are_dead_lettered_with_reasons_while_the_rest_land() {
    let (store, _dir) = sqlite_store().await;
    let sim = sim(Profile::Reference, |c| c.invalid_every = Some(10)).await;

    let report = engine(&sim, &store, |_| {})
        .run(CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.exit_code(), 2);
    assert_eq!(store.campaign_count("default").await.unwrap(), 90);
    let letters = store.dead_letters("default", false).await.unwrap();
    assert_eq!(letters.len(), 10);
    assert!(
        letters
            .iter()
            .all(|l| l.stage == Stage::Validation && !l.reason.is_empty())
    );
    let reasons: Vec<_> = letters.iter().map(|l| l.reason.as_str()).collect();
    for needle in [
        "clicks is negative",
        "unknown status",
        "NUL byte",
        "budget is missing",
        "budget is a string",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "{needle} not in {reasons:?}"
        );
    }
    assert_eq!(report.counters.dead_lettered, 10);
}

#[tokio::test]
async fn a_campaign_the_platform_refuses_is_dead_lettered_and_retried_later() {
    let (store, _dir) = sqlite_store().await;
    let sim = sim(Profile::Reference, |_| {}).await;
    engine(&sim, &store, |_| {})
        .run(CancellationToken::new())
        .await
        .unwrap();
    // Sync dead letters, recorded by a run: one for a campaign the platform does not know.
    let owner = adsync_sync::this_process();
    let new = adsync_store::NewRun {
        tenant: "default",
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

    let outcome = adsync_sync::retry_dead_letters(
        &client(&sim, adsync_sim::REFERENCE_PASSWORD),
        &store,
        "default",
    )
    .await
    .unwrap();

    assert_eq!((outcome.resolved, outcome.still_failing), (1, 1));
    let left = store.dead_letters("default", false).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].campaign_id, "campaign_999");
    assert!(left[0].reason.contains("404"), "{}", left[0].reason);
    assert_eq!(left[0].attempts, 2);
}

#[tokio::test]
async fn wrong_credentials_fail_before_anything_is_written() {
    let (store, _dir) = sqlite_store().await;
    let sim = sim(Profile::Reference, |_| {}).await;
    let engine = SyncEngine::new(client(&sim, "wrong"), store.clone(), SyncConfig::default());

    let err = engine.run(CancellationToken::new()).await.unwrap_err();

    assert!(matches!(
        err,
        SyncError::Platform(adsync_client::Error::InvalidCredentials { .. })
    ));
    assert!(store.latest_run("default").await.unwrap().is_none());
    assert_eq!(sim.stats().count("auth", "401"), 1);
}

#[tokio::test]
async fn a_second_live_process_cannot_take_the_same_tenant() {
    let (store, _dir) = sqlite_store().await;
    let sim = sim(Profile::Reference, |_| {}).await;
    // A run held by another live process: it renews its lease while we watch.
    let new = adsync_store::NewRun {
        tenant: "default",
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

    let err = engine(&sim, &store, |c| c.lease_ttl = Duration::from_secs(1))
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    holder.abort();

    assert!(matches!(err, SyncError::Busy { .. }), "{err:?}");
    assert!(err.to_string().contains("is being synced by elsewhere:1"));
}

#[tokio::test]
async fn an_outage_opens_the_circuit_and_interrupts_the_run_without_dead_letters() {
    let (store, _dir) = sqlite_store().await;
    // Every rate-limited call fails: the platform is down.
    let sim = sim(Profile::Calm, |c| c.chaos.error = 1.0).await;
    let engine = engine(&sim, &store, |c| {
        c.breaker = BreakerConfig {
            failure_threshold: 2,
            cooldown: Duration::from_millis(50),
            max_trips: 2,
        }
    });

    let report = engine.run(CancellationToken::new()).await.unwrap();

    assert_eq!(report.status, RunStatus::Interrupted, "{report:?}");
    assert!(report.error.unwrap().contains("cool-downs"));
    assert!(
        store
            .dead_letters("default", true)
            .await
            .unwrap()
            .is_empty()
    );
    // Two trips of two failed calls (each the client's 8 attempts) plus probes: bounded.
    assert!(sim.stats().total("list") <= 8 * 5, "{:?}", sim.stats());
}
