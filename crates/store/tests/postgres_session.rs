//! The PostgreSQL sessions the store opens: every one carries the configured
//! `statement_timeout`, so a held lock or a runaway query fails the statement (transient,
//! so the run stops as interrupted and resumes) instead of hanging the run. PostgreSQL only:
//! SQLite has no such setting.

mod common;

use std::time::Duration;

use adsync_store::{Store, StoreError, StoreOptions};
use common::*;
use sqlx::PgPool;

/// The URL of the database `sqlx::test` created for this test: `DATABASE_URL` names the
/// server, the pool knows the database.
fn url_of(pool: &PgPool) -> String {
    let server = std::env::var("DATABASE_URL").expect("DATABASE_URL names the PostgreSQL server");
    let mut url = url::Url::parse(&server).unwrap();
    url.set_path(pool.connect_options().get_database().unwrap());
    url.to_string()
}

/// Connects the store to the test's database with `statement_timeout`. The schema is created
/// first, without a timeout, so that a short timeout only ever meets the test's statements.
async fn connect(pool: &PgPool, statement_timeout: Duration) -> Store {
    Store::Postgres(pool.clone()).migrate().await.unwrap();
    let options = StoreOptions {
        statement_timeout,
        ..StoreOptions::default()
    };
    Store::connect_with(&url_of(pool), &options).await.unwrap()
}

/// `SHOW setting` on `connections` distinct sessions of the store's pool at once.
async fn shown_on_every_session(store: &Store, setting: &str, connections: usize) -> Vec<String> {
    let Store::Postgres(pg) = store else {
        panic!("a PostgreSQL store")
    };
    let mut sessions = Vec::new();
    for _ in 0..connections {
        sessions.push(pg.acquire().await.unwrap());
    }
    let mut shown = Vec::new();
    for session in &mut sessions {
        let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
            .fetch_one(&mut **session)
            .await
            .unwrap();
        shown.push(value);
    }
    shown
}

#[sqlx::test(migrations = false)]
async fn every_session_has_the_configured_statement_timeout(pool: PgPool) {
    // Arrange
    let store = within_deadline(connect(&pool, Duration::from_millis(1500))).await;

    // Act
    let shown = within_deadline(shown_on_every_session(&store, "statement_timeout", 3)).await;
    let idle = within_deadline(shown_on_every_session(
        &store,
        "idle_in_transaction_session_timeout",
        3,
    ))
    .await;

    // Assert
    assert_eq!(shown, ["1500ms"; 3]);
    assert_eq!(idle, ["1500ms"; 3]);
    store.close().await;
}

#[sqlx::test(migrations = false)]
async fn the_default_statement_timeout_is_thirty_seconds(pool: PgPool) {
    // Arrange
    let store = within_deadline(Store::connect(&url_of(&pool)))
        .await
        .unwrap();

    // Act
    let shown = within_deadline(shown_on_every_session(&store, "statement_timeout", 1)).await;

    // Assert
    assert_eq!(shown, ["30s"]);
    store.close().await;
}

#[sqlx::test(migrations = false)]
async fn a_write_held_up_by_a_lock_fails_as_transient_instead_of_hanging(pool: PgPool) {
    // Arrange: another session holds the run's row locked and does not let go.
    let store = within_deadline(connect(&pool, Duration::from_secs(1))).await;
    let (run, lease) = start(&store, "t").await;
    let mut holder = adsync_store::tx::begin_pg(&pool).await.unwrap();
    sqlx::query("SELECT 1 FROM sync_runs WHERE id = $1 FOR UPDATE")
        .bind(run.id)
        .execute(&mut *holder)
        .await
        .unwrap();
    let page_2_next = page(more(2), &["c1"], &[]);

    // Act
    let held_up = within_deadline(store.store_page(&lease, &page_2_next)).await;

    // Assert
    let err = held_up.unwrap_err();
    assert!(matches!(err, StoreError::Query(_)), "{err:?}");
    assert!(
        err.is_transient(),
        "a statement timeout is transient: {err:?}"
    );
    holder.rollback().await.unwrap();
    within_deadline(store.store_page(&lease, &page_2_next))
        .await
        .expect("once the lock is gone the same write goes through");
    assert_eq!(store.run(run.id).await.unwrap().cursor.next_page, 2);
    store.close().await;
}

/// A caller dropped while its transaction begins (a task aborted, a `select!`, a timeout: a
/// worker killed mid-run in the tests) must not hand the next caller a pooled session still
/// inside that transaction: sqlx 0.9.0's `Pool::begin` does (transact-rs/sqlx#4393), and
/// every later statement on that session then runs in a transaction nobody commits (a run
/// created and "not found", a finished run left `running`). One session, so the next call
/// gets it; `Pool::begin` itself, dropped the same ways, shows that the drops hit the window.
#[sqlx::test(migrations = false)]
async fn a_call_dropped_while_its_transaction_begins_leaves_nothing_open_for_the_next(
    pool: PgPool,
) {
    // Arrange
    let options = StoreOptions {
        max_connections: 1,
        ..StoreOptions::default()
    };
    let store = within_deadline(Store::connect_with(&url_of(&pool), &options))
        .await
        .unwrap();
    let Store::Postgres(session) = &store else {
        panic!("a PostgreSQL store")
    };

    // Act
    let unguarded = within_deadline(leaks_of_dropped_begins(session, plain_begin)).await;
    let guarded = within_deadline(leaks_of_dropped_begins(session, |p| async move {
        drop(adsync_store::tx::begin_pg(&p).await);
    }))
    .await;

    // Assert
    assert!(
        unguarded.1 > 0,
        "no drop of Pool::begin left a transaction open ({} dropped): the test cannot see the bug",
        unguarded.0
    );
    assert_eq!(guarded.1, 0, "of {} dropped begins", guarded.0);
    store.close().await;
}

#[allow(clippy::disallowed_methods)] // the control: what the store must not use
async fn plain_begin(pool: PgPool) {
    drop(pool.begin().await);
}

/// Begins (`begin`) on the one-session `pool` 400 times, each dropped after 1 to 4 polls 0 to
/// 50 µs apart, and after each asks the session whether it is inside a transaction block
/// (then ends it). How many were dropped before they ended, and how many left a block open.
async fn leaks_of_dropped_begins<F, Fut>(pool: &PgPool, begin: F) -> (u32, u32)
where
    F: Fn(PgPool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (mut dropped, mut leaked) = (0, 0);
    for i in 0..400u32 {
        let gap = Duration::from_micros(u64::from(i / 4 % 50));
        dropped += u32::from(drop_after(begin(pool.clone()), 1 + i % 4, gap).await);
        // A savepoint is refused outside a transaction block (25P01), and inside an
        // aborted one (25P02).
        let in_block = match sqlx::raw_sql("SAVEPOINT probe").execute(pool).await {
            Ok(_) => true,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("25P02") => true,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("25P01") => false,
            Err(e) => panic!("{e}"),
        };
        if in_block {
            leaked += 1;
            sqlx::raw_sql("ROLLBACK").execute(pool).await.unwrap();
        }
    }
    (dropped, leaked)
}
/// Polls `call` `polls` times, giving the server `gap` between polls, and drops it unless it
/// ended first (tokio's timers are too coarse for this: a millisecond).
async fn drop_after<F: std::future::Future>(call: F, polls: u32, gap: Duration) -> bool {
    let mut call = std::pin::pin!(call);
    for _ in 0..polls {
        let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx)));
        if polled.await.is_ready() {
            return false;
        }
        std::thread::sleep(gap);
        tokio::task::yield_now().await;
    }
    true
}
