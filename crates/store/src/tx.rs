//! Transactions that a caller dropped mid-`BEGIN` cannot leave open on a pooled session.
//!
//! sqlx 0.9.0 (transact-rs/sqlx#4393, fixed after that release by #4394): a `Pool::begin`
//! future dropped while its `BEGIN` is on the wire (a task aborted, a `select!`, a timeout, an
//! HTTP handler whose client went away) returns the session to the pool inside a transaction
//! that nothing rolls back. Every later statement of the next borrower runs in it, and none
//! is committed unless that borrower commits a transaction of its own: a run created and then
//! "not found", a finished run left `running`. The test
//! `a_call_dropped_while_its_transaction_begins_leaves_nothing_open_for_the_next` shows it.
//!
//! Here the `BEGIN` runs in a task of its own, which no caller can drop half-way: if the
//! caller is gone when it ends, the transaction is dropped in that task, which queues its
//! `ROLLBACK` as sqlx always does for a transaction dropped open. The cost is one task per
//! transaction, and a `BEGIN` and `ROLLBACK` for a caller dropped while it waited for a
//! session. SQLite is not affected (its connection's worker thread rolls back a `BEGIN`
//! nobody took), so its transactions begin directly. Use these instead of `Pool::begin` and
//! its kin (clippy refuses them: `clippy.toml`).

use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};
use tracing::Instrument;

/// A transaction on PostgreSQL (`BEGIN`).
#[allow(clippy::disallowed_methods)] // the one place that calls it, see the module's text
pub async fn begin_pg(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    let begun = tokio::spawn(async move { pool.begin().await }.in_current_span());
    match begun.await {
        Ok(tx) => tx,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels the task.
        Err(_) => Err(sqlx::Error::PoolClosed),
    }
}

/// A write transaction on SQLite: `BEGIN IMMEDIATE` holds the write lock from its first
/// statement, so two writers queue instead of one failing with `SQLITE_BUSY` on upgrade.
#[allow(clippy::disallowed_methods)] // not affected, see the module's text
pub async fn begin_sqlite(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}
