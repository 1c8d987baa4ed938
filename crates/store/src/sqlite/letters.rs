//! SQLite: dead letters, written by a leased run or handled afterwards (retry, dismiss).

use chrono::{DateTime, Utc};
use sqlx::{SqliteConnection, SqlitePool};

use super::{begin, fence, opt_ts, repeated, ts};
use crate::{
    DeadLetter, Lease, NewDeadLetter, RunId, StoreError,
    sql::{LETTER_COLUMNS, letter_from_row},
};

pub(crate) async fn upsert_dead_letter(
    tx: &mut SqliteConnection,
    tenant: &str,
    run: RunId,
    letter: &NewDeadLetter,
    at: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO dead_letters (tenant_id, run_id, campaign_id, stage, payload, reason,
            attempts, first_failed_at, last_failed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?7)
         ON CONFLICT (tenant_id, campaign_id, stage) DO UPDATE SET
            run_id = excluded.run_id, payload = excluded.payload, reason = excluded.reason,
            attempts = dead_letters.attempts + 1, last_failed_at = excluded.last_failed_at,
            resolved = 0, resolved_at = NULL, resolution = NULL",
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
    pool: &SqlitePool,
    lease: &Lease,
    letter: &NewDeadLetter,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut tx = begin(pool).await?;
    fence(&mut tx, lease).await?;
    upsert_dead_letter(&mut tx, &lease.tenant, lease.run, letter, &ts(at)).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn dead_letters(
    pool: &SqlitePool,
    tenant: &str,
    include_resolved: bool,
) -> Result<Vec<DeadLetter>, StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LETTER_COLUMNS} FROM dead_letters WHERE tenant_id = ?1 AND (?2 OR resolved = 0)
             ORDER BY last_failed_at DESC, id DESC"
    )))
    .bind(tenant)
    .bind(include_resolved)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| letter_from_row(r, &opt_ts))
    .collect()
}

pub async fn resolve_synced_by_retry(
    pool: &SqlitePool,
    letter_id: i64,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = ts(at);
    let mut tx = begin(pool).await?;
    let target: Option<(String, String)> = sqlx::query_as(
        "UPDATE dead_letters SET resolved = 1, resolved_at = ?2, resolution = 'synced'
         WHERE id = ?1 AND stage = 'sync'
         RETURNING tenant_id, campaign_id",
    )
    .bind(letter_id)
    .bind(&at)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((tenant, campaign)) = target {
        sqlx::query("UPDATE campaigns SET synced_at = ?3 WHERE tenant_id = ?1 AND id = ?2")
            .bind(tenant)
            .bind(campaign)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn record_retry_failure(
    pool: &SqlitePool,
    letter_id: i64,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE dead_letters SET attempts = attempts + 1, reason = ?2, last_failed_at = ?3
         WHERE id = ?1",
    )
    .bind(letter_id)
    .bind(reason)
    .bind(ts(at))
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn dismiss_dead_letters(
    pool: impl sqlx::SqliteExecutor<'_>,
    tenant: &str,
    ids: &[i64],
    at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let at = ts(at);
    let head = "UPDATE dead_letters SET resolved = 1, resolved_at = ?, resolution = 'dismissed'
                WHERE tenant_id = ? AND resolved = 0";
    let sql = if ids.is_empty() {
        sqlx::AssertSqlSafe(head.to_owned())
    } else {
        repeated(&format!("{head} AND id IN ("), "?", ids.len(), ")")
    };
    let mut query = sqlx::query(sql).bind(at).bind(tenant);
    for id in ids {
        query = query.bind(id);
    }
    Ok(query.execute(pool).await?.rows_affected())
}
