//! PostgreSQL: dead letters, written by a leased run or handled afterwards (retry, dismiss).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::{fence, ts};
use crate::{
    DeadLetter, Lease, NewDeadLetter, RunId, StoreError,
    sql::{LETTER_COLUMNS, letter_from_row},
};

pub(crate) async fn upsert_dead_letter(
    tx: &mut PgConnection,
    tenant: &str,
    run: RunId,
    letter: &NewDeadLetter,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO dead_letters (tenant_id, run_id, campaign_id, stage, payload, reason,
            attempts, first_failed_at, last_failed_at)
         VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)
         ON CONFLICT (tenant_id, campaign_id, stage) DO UPDATE SET
            run_id = EXCLUDED.run_id, payload = EXCLUDED.payload, reason = EXCLUDED.reason,
            attempts = dead_letters.attempts + 1, last_failed_at = EXCLUDED.last_failed_at,
            resolved = FALSE, resolved_at = NULL, resolution = NULL",
    )
    .bind(tenant)
    .bind(run)
    .bind(&letter.campaign_id)
    .bind(letter.stage.as_str())
    .bind(&letter.payload)
    .bind(&letter.reason)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn dead_letter(
    pool: &PgPool,
    lease: &Lease,
    letter: &NewDeadLetter,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut tx = crate::tx::begin_pg(pool).await?;
    fence(&mut tx, lease).await?;
    upsert_dead_letter(&mut tx, &lease.tenant, lease.run, letter, at).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn dead_letters(
    pool: &PgPool,
    tenant: &str,
    include_resolved: bool,
) -> Result<Vec<DeadLetter>, StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LETTER_COLUMNS} FROM dead_letters WHERE tenant_id = $1 AND ($2 OR NOT resolved)
             ORDER BY last_failed_at DESC, id DESC"
    )))
    .bind(tenant)
    .bind(include_resolved)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| letter_from_row(r, &ts))
    .collect()
}

pub async fn resolve_synced_by_retry(
    pool: &PgPool,
    letter_id: i64,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "WITH letter AS (
            UPDATE dead_letters SET resolved = TRUE, resolved_at = $2, resolution = 'synced'
            WHERE id = $1 AND stage = 'sync'
            RETURNING tenant_id, campaign_id
        )
        UPDATE campaigns c SET synced_at = $2 FROM letter
        WHERE c.tenant_id = letter.tenant_id AND c.id = letter.campaign_id",
    )
    .bind(letter_id)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn record_retry_failure(
    pool: &PgPool,
    letter_id: i64,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE dead_letters SET attempts = attempts + 1, reason = $2, last_failed_at = $3
         WHERE id = $1",
    )
    .bind(letter_id)
    .bind(reason)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn dismiss_dead_letters(
    pool: impl sqlx::PgExecutor<'_>,
    tenant: &str,
    ids: &[i64],
    at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE dead_letters SET resolved = TRUE, resolved_at = $3, resolution = 'dismissed'
         WHERE tenant_id = $1 AND NOT resolved
           AND (cardinality($2::int8[]) = 0 OR id = ANY($2::int8[]))",
    )
    .bind(tenant)
    .bind(ids)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
