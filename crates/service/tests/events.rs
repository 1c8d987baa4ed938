//! Live run events: a run queued, run by a worker and cancelled reaches a subscriber, on both
//! databases; on PostgreSQL through the database, so a subscriber of one service sees what
//! another (another machine, another pool) publishes.

#[macro_use]
mod common;

use std::time::Duration;

use adsync_service::{
    Service,
    events::{Received, RunEvent, Subscription},
    queue::{CancelOutcome, RunRequest},
    worker::{Worker, WorkerConfig},
};
use adsync_sim::{Profile, SimConfig, Simulator};
use adsync_store::{RunId, Store};
use common::*;
use tokio_util::sync::CancellationToken;

on_both_databases!(
    queued_running_and_final_events_of_a_run_reach_a_subscriber,
    cancelling_a_queued_run_publishes_cancelled,
);

/// The next event of `sub` for which `wanted` holds (others are skipped), within the deadline.
async fn next_matching(sub: &mut Subscription, wanted: impl Fn(&RunEvent) -> bool) -> RunEvent {
    within_deadline(async {
        loop {
            match sub.recv().await {
                Some(Received::Event(e)) if wanted(&e) => return e,
                Some(_) => {}
                None => panic!("the hub closed"),
            }
        }
    })
    .await
}

async fn enqueue(service: &Service, tenant: &adsync_service::tenants::Tenant) -> RunId {
    service
        .queue
        .enqueue(
            RunRequest {
                tenant: &tenant.id,
                page_size: tenant.page_size,
                platform: &tenant.api_url,
                requested_by: "test",
            },
            None,
        )
        .await
        .unwrap()
        .run()
}

async fn queued_running_and_final_events_of_a_run_reach_a_subscriber(store: Store) {
    // Arrange
    let sim = Simulator::start_local(SimConfig {
        campaigns: 30,
        time_scale: 60.0,
        sync_delay: Duration::from_millis(200),
        ..SimConfig::for_profile(Profile::Reference)
    })
    .await
    .unwrap();
    let s = service(&store, keyring()).await;
    let rate = sim.config().effective_rate_limit().to_string();
    let t = tenant(&s, "acme", &sim.url(), None, &rate, None).await;
    let mut sub = s.events.subscribe().await;

    // Act
    let run = enqueue(&s, &t).await;
    let shutdown = CancellationToken::new();
    let worker = Worker::new(
        s.clone(),
        WorkerConfig {
            poll: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    );
    let working = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(shutdown).await }
    });

    // Assert
    let queued = next_matching(&mut sub, |e| e.run_id == run).await;
    assert_eq!(
        (queued.status.as_str(), queued.tenant_id.as_str()),
        ("queued", t.id.as_str())
    );
    assert_eq!(queued.synced, None, "a queued run carries no counters");
    let running = next_matching(&mut sub, |e| e.run_id == run).await;
    assert_eq!(running.status, "running");
    assert!(running.synced.is_some(), "{running:?}");
    let ended = next_matching(&mut sub, |e| e.run_id == run && e.status != "running").await;
    assert_eq!(ended.status, "succeeded", "{ended:?}");
    assert_eq!((ended.stored, ended.synced), (Some(30), Some(30)));
    assert_eq!(ended.total_hint, Some(30));
    assert!(ended.requests.unwrap() >= 31, "{ended:?}");

    shutdown.cancel();
    within_deadline(working).await.unwrap().unwrap();
}

async fn cancelling_a_queued_run_publishes_cancelled(store: Store) {
    // Arrange
    let s = service(&store, keyring()).await;
    let t = tenant(&s, "acme", "http://127.0.0.1:9", None, "10/1s", None).await;
    let run = enqueue(&s, &t).await;
    let mut sub = s.events.subscribe().await;

    // Act
    let outcome = s.queue.cancel(run, None).await.unwrap();

    // Assert
    assert_eq!(outcome, CancelOutcome::Cancelled);
    let event = next_matching(&mut sub, |e| e.run_id == run).await;
    assert_eq!(
        (event.status.as_str(), event.tenant_id.as_str()),
        ("cancelled", t.id.as_str())
    );
}

/// The "other machine" case: a second service over its own pool on the same PostgreSQL
/// database publishes; the first one's subscriber receives it, through `NOTIFY`.
#[sqlx::test(migrations = false)]
async fn an_event_published_by_another_process_reaches_a_subscriber_on_postgres(
    pool: sqlx::PgPool,
) {
    // Arrange
    let store = Store::Postgres(pool.clone());
    store.migrate().await.unwrap();
    let here = service(&store, keyring()).await;
    let other_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let there = service(&Store::Postgres(other_pool.clone()), keyring()).await;
    let mut sub = here.events.subscribe().await;

    // Act
    let mut sent = RunEvent::status(42, "elsewhere", "running");
    sent.synced = Some(7);
    sent.limiter_wait_ms = Some(1234);
    there.events.publish(&sent).await;

    // Assert
    let got = next_matching(&mut sub, |e| e.run_id == 42).await;
    assert_eq!(got, sent);
    assert_eq!(
        there.events.subscribers(),
        0,
        "publishing opens no listener"
    );
    other_pool.close().await;
}

/// The listener is one connection for the process while someone listens, and none after.
#[sqlx::test(migrations = false)]
async fn the_listener_stops_when_the_last_subscriber_leaves_and_restarts_for_the_next(
    pool: sqlx::PgPool,
) {
    // Arrange
    let store = Store::Postgres(pool.clone());
    store.migrate().await.unwrap();
    let s = service(&store, keyring()).await;
    let listeners = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%adsync_events%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let first = s.events.subscribe().await;
    let second = s.events.subscribe().await;
    assert_eq!(
        listeners().await,
        1,
        "one LISTEN connection for two subscribers"
    );

    // Act
    drop((first, second));

    // Assert
    within_deadline(async {
        while listeners().await != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut again = s.events.subscribe().await;
    s.events
        .publish(&RunEvent::status(7, "acme", "queued"))
        .await;
    let got = next_matching(&mut again, |e| e.run_id == 7).await;
    assert_eq!(got.status, "queued");
}
