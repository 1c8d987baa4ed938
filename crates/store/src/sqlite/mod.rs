//! The SQLite side of [`crate::Store`]: runs and their leases here; pages and syncs in
//! [`pages`]; dead letters in [`letters`]; campaign reads in [`reads`]. Parameterized SQL only
//! (static, but for the repeated placeholder groups of multi-row statements). Timestamps are
//! RFC 3339 text in UTC with microseconds ([`ts`]), so they sort as text; budgets are exact
//! decimal text. Every write transaction is `BEGIN IMMEDIATE`: it takes the write lock up
//! front, so two processes on one file queue on the busy timeout instead of failing on a
//! read-to-write upgrade, and the lease check and the writes cannot interleave with a
//! take-over. Lease times come from this process's clock (one machine).

mod letters;
mod pages;
mod reads;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool, Transaction, sqlite::SqliteRow};

pub use letters::{
    dead_letter, dead_letters, dismiss_dead_letters, record_retry_failure, resolve_synced_by_retry,
};
pub use pages::{campaign_gone, listed, mark_synced, mark_synced_many, pending_syncs, store_page};
pub use reads::{campaigns, count, run_warnings};

use crate::{
    Lease, NewRun, RunEnd, RunEnding, RunId, RunRecord, StoreError,
    sql::{ending_columns, freeze_counters, run_columns, run_from_row},
};

/// The one text form of a timestamp in SQLite: sortable, exact to the microsecond.
pub fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("timestamp {s:?}: {e}")))
}

pub fn opt_ts(row: &SqliteRow, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    row.try_get::<Option<String>, _>(col)?
        .as_deref()
        .map(parse_ts)
        .transpose()
}

/// `now` and `now + ttl` as stored, on this process's clock.
fn lease_times(ttl: Duration) -> (String, String) {
    let now = Utc::now();
    let until = chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    (ts(now), ts(until))
}

/// Rows per multi-row statement: 500 x 13 parameters stays far below SQLite's limit of 32,766
/// bound parameters. Bound VALUES insert about twice as fast as `json_each`; 500 beat 100, 200
/// and 1000 in the store bench.
pub(crate) const CHUNK: usize = 500;

/// `head` + `n` copies of `row` separated by commas + `tail`. The only SQL built at run time:
/// it repeats a fixed placeholder group, never a value.
pub(crate) fn repeated(head: &str, row: &str, n: usize, tail: &str) -> sqlx::AssertSqlSafe<String> {
    let mut sql = String::with_capacity(head.len() + (row.len() + 1) * n + tail.len());
    sql.push_str(head);
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(row);
    }
    sql.push_str(tail);
    sqlx::AssertSqlSafe(sql)
}

/// A write transaction that holds SQLite's write lock from its first statement.
pub(crate) async fn begin(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, StoreError> {
    Ok(crate::tx::begin_sqlite(pool).await?)
}

fn record(row: &SqliteRow) -> Result<RunRecord, StoreError> {
    run_from_row(row, &opt_ts)
}

pub async fn create_run(
    pool: &SqlitePool,
    run: &NewRun<'_>,
    ttl: Duration,
) -> Result<(RunId, i64), StoreError> {
    let (now, until) = lease_times(ttl);
    let mut tx = begin(pool).await?;
    let id: RunId = sqlx::query_scalar(
        "INSERT INTO sync_runs (tenant_id, started_at, status, page_size, platform, owner,
            heartbeat_at, lease_epoch, lease_expires_at)
         VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?2, 1, ?6)
         RETURNING id",
    )
    .bind(run.tenant)
    .bind(&now)
    .bind(run.page_size as i64)
    .bind(run.platform)
    .bind(run.owner)
    .bind(&until)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((id, 1))
}

/// The condition under which nobody holds a run, `now` being the placeholder of the current
/// time: interrupted, queued, or running on an expired lease.
fn unheld(now: &str) -> String {
    format!(
        "(status IN ('interrupted', 'queued') OR (status = 'running'
          AND (lease_expires_at IS NULL OR lease_expires_at < {now})))"
    )
}

pub async fn take_over(
    pool: &SqlitePool,
    run: RunId,
    owner: &str,
    ttl: Duration,
) -> Result<Option<(String, i64)>, StoreError> {
    let (now, until) = lease_times(ttl);
    let mut tx = begin(pool).await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_runs SET status = 'running', stop_reason = NULL, finished_at = NULL,
            error = NULL, owner = ?2, heartbeat_at = ?4, lease_epoch = lease_epoch + 1,
            lease_expires_at = ?3, resumes = resumes + 1
         WHERE id = ?1 AND {}
         RETURNING tenant_id, lease_epoch",
        unheld("?4")
    )))
    .bind(run)
    .bind(owner)
    .bind(&until)
    .bind(&now)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.map(|r| Ok((r.try_get("tenant_id")?, r.try_get("lease_epoch")?)))
        .transpose()
}

pub async fn renew(pool: &SqlitePool, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
    let (now, until) = lease_times(ttl);
    let mut tx = begin(pool).await?;
    let done = sqlx::query(
        "UPDATE sync_runs SET heartbeat_at = ?3, lease_expires_at = ?4
         WHERE id = ?1 AND lease_epoch = ?2 AND status = 'running'",
    )
    .bind(lease.run)
    .bind(lease.epoch)
    .bind(&now)
    .bind(&until)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    held(done.rows_affected(), lease)
}

pub async fn abandon(pool: &SqlitePool, run: RunId, reason: &str) -> Result<bool, StoreError> {
    let (now, _) = lease_times(Duration::ZERO);
    let mut tx = begin(pool).await?;
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_runs SET status = 'failed', error = ?2, finished_at = ?3,
            lease_expires_at = NULL, lease_epoch = lease_epoch + 1
         WHERE id = ?1 AND {}",
        unheld("?3")
    )))
    .bind(run)
    .bind(reason)
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    let abandoned = done.rows_affected() == 1;
    if abandoned {
        // Only a run nobody holds: a live holder's checkpoint must stay whole.
        sqlx::query("DELETE FROM listing_seen WHERE run_id = ?1")
            .bind(run)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(abandoned)
}

/// Fails unless `lease` still holds the run. Inside a `BEGIN IMMEDIATE` transaction, which
/// holds the database's write lock until it ends, nothing can take the run over meanwhile.
pub(crate) async fn fence(tx: &mut SqliteConnection, lease: &Lease) -> Result<(), StoreError> {
    let found = sqlx::query(
        "SELECT 1 FROM sync_runs WHERE id = ?1 AND lease_epoch = ?2 AND status = 'running'",
    )
    .bind(lease.run)
    .bind(lease.epoch)
    .fetch_optional(&mut *tx)
    .await?;
    held(u64::from(found.is_some()), lease)
}

fn held(rows: u64, lease: &Lease) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::LeaseLost {
            run: lease.run,
            epoch: lease.epoch,
        })
    } else {
        Ok(())
    }
}

pub async fn finish_run(pool: &SqlitePool, lease: &Lease, end: &RunEnd) -> Result<(), StoreError> {
    let at = ts(end.at);
    let mut tx = begin(pool).await?;
    fence(&mut tx, lease).await?;
    // Sync failures of campaigns the platform no longer lists are not failures of the run
    // (whichever run failed them).
    sqlx::query(
        "UPDATE dead_letters SET resolved = 1, resolved_at = ?2, resolution = 'removed'
         WHERE tenant_id = ?1 AND resolved = 0 AND stage IN ('sync', 'validation')
           AND campaign_id IN (SELECT id FROM campaigns
                               WHERE tenant_id = ?1 AND removed_at IS NOT NULL)",
    )
    .bind(&lease.tenant)
    .bind(&at)
    .execute(&mut *tx)
    .await?;
    let c = &end.client;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_runs AS r SET requests = requests + ?2, retries = retries + ?3,
            rate_limited = rate_limited + ?4, token_refreshes = token_refreshes + ?5,
            limiter_wait_seconds = limiter_wait_seconds + ?6,
            active_seconds = active_seconds + ?7, throttled_seconds = throttled_seconds + ?8,
            floor_seconds = coalesce(?9, floor_seconds), {}
         WHERE id = ?1",
        freeze_counters()
    )))
    .bind(lease.run)
    .bind(c.requests)
    .bind(c.retries)
    .bind(c.rate_limited)
    .bind(c.token_refreshes)
    .bind(c.limiter_wait_seconds)
    .bind(end.active_seconds)
    .bind(end.throttled_seconds)
    .bind(end.floor_seconds)
    .execute(&mut *tx)
    .await?;
    let (status, reason) = ending_columns(end.ending);
    sqlx::query(
        "UPDATE sync_runs SET
            status = coalesce(?2, CASE WHEN dead_lettered > 0 OR NOT listing_complete
                                       THEN 'partial' ELSE 'succeeded' END),
            stop_reason = ?3, error = ?4, finished_at = ?5, lease_expires_at = NULL
         WHERE id = ?1",
    )
    .bind(lease.run)
    .bind(status)
    .bind(reason)
    .bind(end.error.as_deref())
    .bind(&at)
    .execute(&mut *tx)
    .await?;
    if !matches!(end.ending, RunEnding::Stopped(_)) {
        sqlx::query("DELETE FROM listing_seen WHERE run_id = ?1")
            .bind(lease.run)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn runs_by_id(pool: &SqlitePool, ids: &[RunId]) -> Result<Vec<RunRecord>, StoreError> {
    // The ids as one JSON array: a claim takes as many runs as a worker has free slots,
    // more than SQLite's bound parameters allow.
    let ids = format!(
        "[{}]",
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM sync_runs r WHERE r.id IN (SELECT value FROM json_each(?1))",
        run_columns()
    )))
    .bind(ids)
    .fetch_all(pool)
    .await?
    .iter()
    .map(record)
    .collect()
}

pub async fn recent_runs(
    pool: &SqlitePool,
    tenant: Option<&str>,
    per_tenant: u32,
) -> Result<Vec<RunRecord>, StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(crate::sql::recent_runs_sql("?1", "?2")))
        .bind(tenant)
        .bind(i64::from(per_tenant))
        .fetch_all(pool)
        .await?
        .iter()
        .map(record)
        .collect()
}

pub async fn runs(
    pool: &SqlitePool,
    tenant: &str,
    limit: u32,
) -> Result<Vec<RunRecord>, StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM sync_runs r WHERE r.tenant_id = ?1 ORDER BY r.id DESC LIMIT ?2",
        run_columns()
    )))
    .bind(tenant)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?
    .iter()
    .map(record)
    .collect()
}
