//! The PostgreSQL side of [`crate::Store`]: runs and their leases here; pages and syncs in
//! [`pages`]; dead letters in [`letters`]; campaign reads in [`reads`]. Static, parameterized
//! SQL only. Lease times come from the database's clock (`clock_timestamp()`), so workers on
//! machines whose clocks disagree still agree on when a lease runs out.

mod letters;
mod pages;
mod reads;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};

pub use letters::{
    dead_letter, dead_letters, dismiss_dead_letters, record_retry_failure, resolve_synced_by_retry,
};
pub use pages::{campaign_gone, listed, mark_synced, mark_synced_many, pending_syncs, store_page};
pub use reads::{campaigns, count, run_warnings};

use crate::{
    Lease, NewRun, RunEnd, RunEnding, RunId, RunRecord, StoreError,
    sql::{freeze_counters, run_columns, run_from_row},
};

pub(crate) fn ts(row: &PgRow, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(row.try_get(col)?)
}

fn record(row: &PgRow) -> Result<RunRecord, StoreError> {
    run_from_row(row, &ts)
}

pub async fn create_run(
    pool: &PgPool,
    run: &NewRun<'_>,
    ttl: Duration,
) -> Result<(RunId, i64), StoreError> {
    let row = sqlx::query(
        "INSERT INTO sync_runs (tenant_id, started_at, status, page_size, platform, owner,
            heartbeat_at, lease_epoch, lease_expires_at)
         VALUES ($1, clock_timestamp(), 'running', $2, $3, $4, clock_timestamp(), 1,
            clock_timestamp() + make_interval(secs => $5))
         RETURNING id, lease_epoch",
    )
    .bind(run.tenant)
    .bind(run.page_size as i64)
    .bind(run.platform)
    .bind(run.owner)
    .bind(ttl.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok((row.try_get("id")?, row.try_get("lease_epoch")?))
}

/// The condition under which nobody holds a run: interrupted, queued, or running on an
/// expired lease.
const UNHELD: &str = "(status IN ('interrupted', 'queued') OR (status = 'running'
    AND (lease_expires_at IS NULL OR lease_expires_at < clock_timestamp())))";

pub async fn take_over(
    pool: &PgPool,
    run: RunId,
    owner: &str,
    ttl: Duration,
) -> Result<Option<(String, i64)>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_runs SET status = 'running', stop_reason = NULL, finished_at = NULL,
            error = NULL, owner = $2, heartbeat_at = clock_timestamp(),
            lease_epoch = lease_epoch + 1,
            lease_expires_at = clock_timestamp() + make_interval(secs => $3),
            resumes = resumes + 1
         WHERE id = $1 AND {UNHELD}
         RETURNING tenant_id, lease_epoch"
    )))
    .bind(run)
    .bind(owner)
    .bind(ttl.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    row.map(|r| Ok((r.try_get("tenant_id")?, r.try_get("lease_epoch")?)))
        .transpose()
}

pub async fn renew(pool: &PgPool, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE sync_runs SET heartbeat_at = clock_timestamp(),
            lease_expires_at = clock_timestamp() + make_interval(secs => $3)
         WHERE id = $1 AND lease_epoch = $2 AND status = 'running'",
    )
    .bind(lease.run)
    .bind(lease.epoch)
    .bind(ttl.as_secs_f64())
    .execute(pool)
    .await?;
    held(done.rows_affected(), lease)
}

pub async fn abandon(pool: &PgPool, run: RunId, reason: &str) -> Result<bool, StoreError> {
    let mut tx = crate::tx::begin_pg(pool).await?;
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_runs SET status = 'failed', error = $2, finished_at = clock_timestamp(),
            lease_expires_at = NULL, lease_epoch = lease_epoch + 1
         WHERE id = $1 AND {UNHELD}"
    )))
    .bind(run)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    let abandoned = done.rows_affected() == 1;
    if abandoned {
        // Only a run nobody holds: a live holder's checkpoint must stay whole.
        sqlx::query("DELETE FROM listing_seen WHERE run_id = $1")
            .bind(run)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(abandoned)
}

/// Locks the run's row for the rest of the transaction if `lease` still holds it; a
/// take-over then waits for this transaction, and one that already happened fails it.
pub(crate) async fn fence(tx: &mut PgConnection, lease: &Lease) -> Result<(), StoreError> {
    let held_rows = sqlx::query(
        "SELECT 1 FROM sync_runs WHERE id = $1 AND lease_epoch = $2 AND status = 'running'
         FOR UPDATE",
    )
    .bind(lease.run)
    .bind(lease.epoch)
    .fetch_optional(&mut *tx)
    .await?;
    held(u64::from(held_rows.is_some()), lease)
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

pub async fn finish_run(pool: &PgPool, lease: &Lease, end: &RunEnd) -> Result<(), StoreError> {
    let mut tx = crate::tx::begin_pg(pool).await?;
    fence(&mut tx, lease).await?;
    // Sync failures of campaigns the platform no longer lists are not failures of the run
    // (whichever run failed them).
    sqlx::query(
        "UPDATE dead_letters SET resolved = TRUE, resolved_at = $2, resolution = 'removed'
         WHERE tenant_id = $1 AND NOT resolved AND stage IN ('sync', 'validation')
           AND campaign_id IN (SELECT id FROM campaigns
                               WHERE tenant_id = $1 AND removed_at IS NOT NULL)",
    )
    .bind(&lease.tenant)
    .bind(end.at)
    .execute(&mut *tx)
    .await?;
    let c = &end.client;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_runs AS r SET requests = requests + $2, retries = retries + $3,
            rate_limited = rate_limited + $4, token_refreshes = token_refreshes + $5,
            limiter_wait_seconds = limiter_wait_seconds + $6,
            active_seconds = active_seconds + $7, throttled_seconds = throttled_seconds + $8,
            floor_seconds = coalesce($9, floor_seconds), {}
         WHERE id = $1",
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
    let (status, reason) = crate::sql::ending_columns(end.ending);
    sqlx::query(
        "UPDATE sync_runs SET
            status = coalesce($2, CASE WHEN dead_lettered > 0 OR NOT listing_complete
                                       THEN 'partial' ELSE 'succeeded' END),
            stop_reason = $3, error = $4, finished_at = $5, lease_expires_at = NULL
         WHERE id = $1",
    )
    .bind(lease.run)
    .bind(status)
    .bind(reason)
    .bind(end.error.as_deref())
    .bind(end.at)
    .execute(&mut *tx)
    .await?;
    if !matches!(end.ending, RunEnding::Stopped(_)) {
        // The listing sets are the checkpoint of an open run only.
        sqlx::query("DELETE FROM listing_seen WHERE run_id = $1")
            .bind(lease.run)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn runs_by_id(pool: &PgPool, ids: &[RunId]) -> Result<Vec<RunRecord>, StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM sync_runs r WHERE r.id = ANY($1)",
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
    pool: &PgPool,
    tenant: Option<&str>,
    per_tenant: u32,
) -> Result<Vec<RunRecord>, StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(crate::sql::recent_runs_sql(
        "CAST($1 AS TEXT)",
        "$2",
    )))
    .bind(tenant)
    .bind(i64::from(per_tenant))
    .fetch_all(pool)
    .await?
    .iter()
    .map(record)
    .collect()
}

pub async fn runs(pool: &PgPool, tenant: &str, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM sync_runs r WHERE r.tenant_id = $1 ORDER BY r.id DESC LIMIT $2",
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
