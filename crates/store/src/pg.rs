//! The PostgreSQL side of [`crate::Store`]. Static, parameterized SQL only.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgPool, Row, postgres::PgRow};

use crate::{
    DeadLetter, NewDeadLetter, PageOutcome, RunCounters, RunId, RunRecord, RunStatus, StoreError,
    StoredCampaign, model::DedupedBatch,
};

pub async fn start_run(
    pool: &PgPool,
    tenant: &str,
    page_size: u64,
    owner: &str,
    now: DateTime<Utc>,
) -> Result<RunId, StoreError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO sync_runs (tenant_id, started_at, status, page_size, owner, heartbeat_at)
         VALUES ($1, $2, 'running', $3, $4, $2) RETURNING id",
    )
    .bind(tenant)
    .bind(now)
    .bind(page_size as i64)
    .bind(owner)
    .fetch_one(pool)
    .await?)
}

const RUN_COLUMNS: &str = "id, tenant_id, status, started_at, finished_at, page_size, next_page,
    listing_done, resumes, owner, heartbeat_at, pages, campaigns_seen, campaigns_stored, campaigns_synced,
    dead_lettered, requests, retries, rate_limited, token_refreshes, limiter_wait_seconds, error";

fn run_from_row(row: &PgRow) -> Result<RunRecord, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        page_size: row.try_get::<i64, _>("page_size")? as u64,
        next_page: row.try_get::<i64, _>("next_page")? as u64,
        listing_done: row.try_get("listing_done")?,
        resumes: row.try_get::<i32, _>("resumes")?.into(),
        owner: row.try_get("owner")?,
        heartbeat_at: row.try_get("heartbeat_at")?,
        counters: RunCounters::from_row(row)?,
        error: row.try_get("error")?,
    })
}

pub async fn run(pool: &PgPool, id: RunId) -> Result<RunRecord, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM sync_runs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
    run_from_row(&row)
}

pub async fn latest_run(pool: &PgPool, tenant: &str) -> Result<Option<RunRecord>, StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM sync_runs WHERE tenant_id = $1 ORDER BY id DESC LIMIT 1"
    )))
    .bind(tenant)
    .fetch_optional(pool)
    .await?
    .map(|r| run_from_row(&r))
    .transpose()
}

pub async fn resume_run(
    pool: &PgPool,
    id: RunId,
    owner: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sync_runs SET status = 'running', resumes = resumes + 1, finished_at = NULL,
         error = NULL, owner = $2, heartbeat_at = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(owner)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn store_page(pool: &PgPool, b: &DedupedBatch<'_>) -> Result<PageOutcome, StoreError> {
    let batch = &b.batch;
    // The page travels as one typed array per column (UNNEST): no per-row parameters, no
    // JSON to parse, and the budget goes over as NUMERIC, exact.
    let cs = &b.campaigns;
    let ids: Vec<&str> = cs.iter().map(|c| c.id.as_str()).collect();
    let names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
    let statuses: Vec<&str> = cs.iter().map(|c| c.status.as_str()).collect();
    let budgets: Vec<Decimal> = cs.iter().map(|c| c.budget.to_decimal()).collect();
    let impressions: Vec<i64> = cs.iter().map(|c| c.impressions).collect();
    let clicks: Vec<i64> = cs.iter().map(|c| c.clicks).collect();
    let conversions: Vec<i64> = cs.iter().map(|c| c.conversions).collect();
    let created: Vec<DateTime<Utc>> = cs.iter().map(|c| c.created_at).collect();
    let mut tx = pool.begin().await?;
    let newly_stored: i64 = sqlx::query_scalar(
        "WITH input AS (
            SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::numeric[],
                $5::int8[], $6::int8[], $7::int8[], $8::timestamptz[])
                AS x(id, name, status, budget, impressions, clicks, conversions, created_at)
        ), upserted AS (
            INSERT INTO campaigns AS c (tenant_id, id, name, status, budget, impressions, clicks,
                conversions, created_at, first_seen_at, updated_at, last_run_id)
            SELECT $9, id, name, status, budget, impressions, clicks, conversions, created_at,
                $10, $10, $11
            FROM input
            ON CONFLICT (tenant_id, id) DO UPDATE SET
                name = EXCLUDED.name, status = EXCLUDED.status, budget = EXCLUDED.budget,
                impressions = EXCLUDED.impressions, clicks = EXCLUDED.clicks,
                conversions = EXCLUDED.conversions, created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at, last_run_id = EXCLUDED.last_run_id
        ), metrics AS (
            INSERT INTO campaign_metrics (tenant_id, campaign_id, run_id, observed_at,
                impressions, clicks, conversions)
            SELECT $9, id, $11, $10, impressions, clicks, conversions FROM input
            ON CONFLICT (tenant_id, campaign_id, run_id) DO UPDATE SET
                observed_at = EXCLUDED.observed_at, impressions = EXCLUDED.impressions,
                clicks = EXCLUDED.clicks, conversions = EXCLUDED.conversions
        ), prior AS (
            -- Campaigns this run had already stored (the snapshot predates the upsert).
            SELECT count(*) AS n FROM campaigns
            WHERE tenant_id = $9 AND last_run_id = $11 AND id = ANY($1::text[])
        ), resolved AS (
            UPDATE dead_letters SET resolved = TRUE, resolved_at = $10
            WHERE tenant_id = $9 AND stage = 'validation' AND NOT resolved
              AND campaign_id IN (SELECT id FROM input)
        )
        -- Data-modifying CTEs run to completion whether or not they are read.
        SELECT (SELECT count(*) FROM input) - (SELECT n FROM prior)",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&statuses)
    .bind(&budgets)
    .bind(&impressions)
    .bind(&clicks)
    .bind(&conversions)
    .bind(&created)
    .bind(batch.tenant)
    .bind(batch.observed_at)
    .bind(batch.run)
    .fetch_one(&mut *tx)
    .await?;
    for letter in batch.dead_letters {
        upsert_dead_letter(&mut tx, batch.tenant, batch.run, letter, batch.observed_at).await?;
    }
    sqlx::query(
        "UPDATE sync_runs SET next_page = $2, listing_done = $3, pages = pages + 1,
            campaigns_seen = campaigns_seen + $4, campaigns_stored = campaigns_stored + $5,
            dead_lettered = dead_lettered + $6
         WHERE id = $1",
    )
    .bind(batch.run)
    .bind(batch.next_page.unwrap_or(batch.page + 1) as i64)
    .bind(batch.next_page.is_none())
    .bind(batch.seen as i64)
    .bind(newly_stored)
    .bind(batch.dead_letters.len() as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(PageOutcome {
        newly_stored: newly_stored as u64,
        dead_lettered: batch.dead_letters.len() as u64,
    })
}

async fn upsert_dead_letter(
    tx: &mut sqlx::PgConnection,
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
            resolved = FALSE, resolved_at = NULL",
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

pub async fn pending_syncs(pool: &PgPool, run: RunId) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM campaigns
         WHERE tenant_id = (SELECT tenant_id FROM sync_runs WHERE id = $1)
           AND last_run_id = $1 AND synced_run_id IS DISTINCT FROM $1
         ORDER BY id",
    )
    .bind(run)
    .fetch_all(pool)
    .await?)
}

pub async fn mark_synced(
    pool: &PgPool,
    tenant: &str,
    run: RunId,
    campaign_id: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "WITH first_time AS (
            SELECT 1 FROM campaigns
            WHERE tenant_id = $1 AND id = $2 AND last_run_id = $3
              AND synced_run_id IS DISTINCT FROM $3
        ), campaign AS (
            UPDATE campaigns SET synced_at = $4,
                synced_run_id = CASE WHEN last_run_id = $3 THEN $3 ELSE synced_run_id END
            WHERE tenant_id = $1 AND id = $2
        ), counter AS (
            UPDATE sync_runs
            SET campaigns_synced = campaigns_synced + (SELECT count(*) FROM first_time)
            WHERE id = $3
        )
        UPDATE dead_letters SET resolved = TRUE, resolved_at = $4
        WHERE tenant_id = $1 AND campaign_id = $2 AND stage = 'sync' AND NOT resolved",
    )
    .bind(tenant)
    .bind(campaign_id)
    .bind(run)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn dead_letter(
    pool: &PgPool,
    tenant: &str,
    run: RunId,
    letter: &NewDeadLetter,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    upsert_dead_letter(&mut tx, tenant, run, letter, at).await?;
    sqlx::query("UPDATE sync_runs SET dead_lettered = dead_lettered + 1 WHERE id = $1")
        .bind(run)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn add_client_counters(
    pool: &PgPool,
    run: RunId,
    c: &RunCounters,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sync_runs SET requests = requests + $2, retries = retries + $3,
            rate_limited = rate_limited + $4, token_refreshes = token_refreshes + $5,
            limiter_wait_seconds = limiter_wait_seconds + $6
         WHERE id = $1",
    )
    .bind(run)
    .bind(c.requests)
    .bind(c.retries)
    .bind(c.rate_limited)
    .bind(c.token_refreshes)
    .bind(c.limiter_wait_seconds)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn finish_run(
    pool: &PgPool,
    run: RunId,
    status: RunStatus,
    error: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE sync_runs SET status = $2, error = $3, finished_at = $4 WHERE id = $1")
        .bind(run)
        .bind(status.as_str())
        .bind(error)
        .bind(at)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn dead_letters(
    pool: &PgPool,
    tenant: &str,
    include_resolved: bool,
) -> Result<Vec<DeadLetter>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, tenant_id, run_id, campaign_id, stage, payload, reason, attempts,
            first_failed_at, last_failed_at, resolved
         FROM dead_letters WHERE tenant_id = $1 AND ($2 OR NOT resolved)
         ORDER BY last_failed_at DESC, id DESC",
    )
    .bind(tenant)
    .bind(include_resolved)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let stage: String = r.try_get("stage")?;
            Ok(DeadLetter {
                id: r.try_get("id")?,
                tenant_id: r.try_get("tenant_id")?,
                run_id: r.try_get("run_id")?,
                campaign_id: r.try_get("campaign_id")?,
                stage: stage.parse().map_err(StoreError::Corrupt)?,
                payload: r.try_get("payload")?,
                reason: r.try_get("reason")?,
                attempts: r.try_get::<i32, _>("attempts")?.into(),
                first_failed_at: r.try_get("first_failed_at")?,
                last_failed_at: r.try_get("last_failed_at")?,
                resolved: r.try_get("resolved")?,
            })
        })
        .collect()
}

pub async fn resolve_dead_letter(
    pool: &PgPool,
    id: i64,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE dead_letters SET resolved = TRUE, resolved_at = $2 WHERE id = $1")
        .bind(id)
        .bind(at)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn campaigns(pool: &PgPool, tenant: &str) -> Result<Vec<StoredCampaign>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, name, status, budget, impressions, clicks, conversions, synced_at, last_run_id
         FROM campaigns WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    rows.iter()
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

pub async fn heartbeat(pool: &PgPool, id: RunId, now: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query("UPDATE sync_runs SET heartbeat_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}
