//! PostgreSQL: campaigns, counts and run warnings as read back.

use rust_decimal::Decimal;
use sqlx::{PgPool, Row};

use crate::{RunId, StoreError, StoredCampaign, StoredWarning};

pub async fn campaigns(pool: &PgPool, tenant: &str) -> Result<Vec<StoredCampaign>, StoreError> {
    sqlx::query(
        "SELECT id, name, status, budget, impressions, clicks, conversions, synced_at,
            last_run_id, raw::text AS raw, removed_at
         FROM campaigns WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        let budget: Decimal = r.try_get("budget")?;
        Ok(StoredCampaign {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            status: r.try_get("status")?,
            budget: format!("{budget:.2}"),
            impressions: r.try_get("impressions")?,
            clicks: r.try_get("clicks")?,
            conversions: r.try_get("conversions")?,
            synced_at: r.try_get("synced_at")?,
            last_run_id: r.try_get("last_run_id")?,
            raw: r.try_get("raw")?,
            removed_at: r.try_get("removed_at")?,
        })
    })
    .collect()
}

pub async fn count(pool: &PgPool, table: &'static str, tenant: &str) -> Result<i64, StoreError> {
    // `table` is one of two literals chosen by the caller, never input.
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE tenant_id = $1"
    )))
    .bind(tenant)
    .fetch_one(pool)
    .await?)
}

pub async fn run_warnings(pool: &PgPool, run: RunId) -> Result<Vec<StoredWarning>, StoreError> {
    sqlx::query(
        "SELECT kind, message, occurrences, first_seen_at FROM run_warnings
         WHERE run_id = $1 ORDER BY first_seen_at, kind",
    )
    .bind(run)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(StoredWarning {
            kind: r.try_get("kind")?,
            message: r.try_get("message")?,
            occurrences: r.try_get("occurrences")?,
            first_seen_at: r.try_get("first_seen_at")?,
        })
    })
    .collect()
}
