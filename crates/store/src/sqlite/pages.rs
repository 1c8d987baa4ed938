//! SQLite: storing a page with its checkpoint, and recording sync calls. Rows go in as bound
//! multi-row `VALUES` statements of [`CHUNK`] rows.

use chrono::{DateTime, Utc};
use sqlx::{SqliteConnection, SqlitePool};

use super::{CHUNK, begin, fence, letters::upsert_dead_letter, repeated, ts};
use crate::{Lease, PageOutcome, RunId, RunWarning, StoreError, model::DedupedBatch};

pub async fn store_page(
    pool: &SqlitePool,
    lease: &Lease,
    b: &DedupedBatch<'_>,
) -> Result<PageOutcome, StoreError> {
    let batch = &b.batch;
    let cursor = &batch.cursor;
    let observed = ts(batch.observed_at);
    let mut tx = begin(pool).await?;
    let moved = sqlx::query(
        "UPDATE sync_runs SET next_page = ?3, listing_pass = ?4, reported_total = ?5,
            page_limit = ?6, pass_total = ?7, pass_drift = ?8, drift_events = ?9,
            listing_done = ?10, listing_complete = ?11, pages = pages + ?12,
            campaigns_seen = campaigns_seen + ?13
         WHERE id = ?1 AND lease_epoch = ?2 AND status = 'running'",
    )
    .bind(lease.run)
    .bind(lease.epoch)
    .bind(cursor.next_page as i64)
    .bind(i64::from(cursor.pass))
    .bind(cursor.reported_total.map(|v| v as i64))
    .bind(cursor.page_limit.map(|v| v as i64))
    .bind(cursor.pass_total.map(|v| v as i64))
    .bind(cursor.pass_drift)
    .bind(i64::from(cursor.drift_events))
    .bind(cursor.done)
    .bind(cursor.done && cursor.complete)
    .bind(i64::from(batch.counts_as_page))
    .bind(batch.seen as i64)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        return Err(StoreError::LeaseLost {
            run: lease.run,
            epoch: lease.epoch,
        });
    }
    let mut outcome = upsert_campaigns(&mut tx, lease, b, &observed).await?;
    for chunk in b.listed.chunks(CHUNK) {
        // Listed again, valid record or not: the platform has it, so it is not removed.
        let sql = repeated(
            "UPDATE campaigns SET removed_at = NULL
             WHERE tenant_id = ? AND removed_at IS NOT NULL AND id IN (",
            "?",
            chunk.len(),
            ")",
        );
        let mut clear = sqlx::query(sql).bind(&lease.tenant);
        for id in chunk {
            clear = clear.bind(*id);
        }
        outcome.returned += clear.execute(&mut *tx).await?.rows_affected();
    }
    for chunk in b.listed.chunks(CHUNK) {
        let sql = repeated(
            "INSERT INTO listing_seen (run_id, campaign_id, pass) VALUES ",
            "(?,?,?)",
            chunk.len(),
            " ON CONFLICT (run_id, campaign_id) DO UPDATE SET pass = excluded.pass",
        );
        let mut insert = sqlx::query(sql);
        for id in chunk {
            insert = insert
                .bind(lease.run)
                .bind(*id)
                .bind(i64::from(cursor.pass));
        }
        insert.execute(&mut *tx).await?;
    }
    for letter in batch.dead_letters {
        upsert_dead_letter(&mut tx, &lease.tenant, lease.run, letter, &observed).await?;
    }
    for (kind, message, n) in &b.warnings {
        sqlx::query(
            "INSERT INTO run_warnings (run_id, kind, message, occurrences, first_seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (run_id, kind) DO UPDATE
             SET occurrences = run_warnings.occurrences + excluded.occurrences",
        )
        .bind(lease.run)
        .bind(kind)
        .bind(message)
        .bind(n)
        .bind(&observed)
        .execute(&mut *tx)
        .await?;
    }
    if cursor.done && cursor.complete {
        outcome.removed = mark_removed(&mut tx, lease, cursor.pass, &observed).await?;
    }
    if outcome.removed > 0 || outcome.returned > 0 {
        sqlx::query(
            "UPDATE sync_runs SET campaigns_removed = campaigns_removed + ?2,
                campaigns_returned = campaigns_returned + ?3
             WHERE id = ?1",
        )
        .bind(lease.run)
        .bind(outcome.removed as i64)
        .bind(outcome.returned as i64)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    outcome.dead_lettered = batch.dead_letters.len() as u64;
    Ok(outcome)
}

async fn upsert_campaigns(
    tx: &mut SqliteConnection,
    lease: &Lease,
    b: &DedupedBatch<'_>,
    observed: &str,
) -> Result<PageOutcome, StoreError> {
    let mut outcome = PageOutcome::default();
    if b.campaigns.is_empty() {
        return Ok(outcome);
    }
    let resolve_letters: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM dead_letters
         WHERE tenant_id = ?1 AND stage = 'validation' AND resolved = 0)",
    )
    .bind(&lease.tenant)
    .fetch_one(&mut *tx)
    .await?;
    for chunk in b.campaigns.chunks(CHUNK) {
        // Campaigns this run had stored already, read before the upsert.
        let sql = repeated(
            "SELECT count(*) FROM campaigns WHERE tenant_id = ? AND last_run_id = ? AND id IN (",
            "?",
            chunk.len(),
            ")",
        );
        let mut prior = sqlx::query_scalar::<_, i64>(sql)
            .bind(&lease.tenant)
            .bind(lease.run);
        for c in chunk {
            prior = prior.bind(c.id.as_str());
        }
        let mine = prior.fetch_one(&mut *tx).await?;
        outcome.newly_stored += (chunk.len() as i64 - mine).max(0) as u64;

        let sql = repeated(
            "INSERT INTO campaigns (tenant_id, id, name, status, budget, impressions, clicks,
                conversions, created_at, first_seen_at, updated_at, last_run_id, raw,
                removed_at) VALUES ",
            "(?,?,?,?,?,?,?,?,?,?,?,?,?,NULL)",
            chunk.len(),
            " ON CONFLICT (tenant_id, id) DO UPDATE SET
                name = excluded.name, status = excluded.status, budget = excluded.budget,
                impressions = excluded.impressions, clicks = excluded.clicks,
                conversions = excluded.conversions, created_at = excluded.created_at,
                updated_at = excluded.updated_at, last_run_id = excluded.last_run_id,
                raw = excluded.raw",
        );
        let mut upsert = sqlx::query(sql);
        for c in chunk {
            upsert = upsert
                .bind(&lease.tenant)
                .bind(c.id.as_str())
                .bind(c.name.as_str())
                .bind(c.status.as_str())
                .bind(c.budget.to_string())
                .bind(c.impressions)
                .bind(c.clicks)
                .bind(c.conversions)
                .bind(ts(c.created_at))
                .bind(observed)
                .bind(observed)
                .bind(lease.run)
                .bind(c.raw.as_str());
        }
        upsert.execute(&mut *tx).await?;

        let sql = repeated(
            "INSERT INTO campaign_metrics (tenant_id, campaign_id, run_id, observed_at,
                impressions, clicks, conversions) VALUES ",
            "(?,?,?,?,?,?,?)",
            chunk.len(),
            " ON CONFLICT (tenant_id, campaign_id, run_id) DO UPDATE SET
                observed_at = excluded.observed_at, impressions = excluded.impressions,
                clicks = excluded.clicks, conversions = excluded.conversions",
        );
        let mut metrics = sqlx::query(sql);
        for c in chunk {
            metrics = metrics
                .bind(&lease.tenant)
                .bind(c.id.as_str())
                .bind(lease.run)
                .bind(observed)
                .bind(c.impressions)
                .bind(c.clicks)
                .bind(c.conversions);
        }
        metrics.execute(&mut *tx).await?;

        if resolve_letters {
            let sql = repeated(
                "UPDATE dead_letters SET resolved = 1, resolved_at = ?, resolution = 'stored'
                 WHERE tenant_id = ? AND stage = 'validation' AND resolved = 0
                   AND campaign_id IN (",
                "?",
                chunk.len(),
                ")",
            );
            let mut resolve = sqlx::query(sql).bind(observed).bind(&lease.tenant);
            for c in chunk {
                resolve = resolve.bind(c.id.as_str());
            }
            resolve.execute(&mut *tx).await?;
        }
    }
    Ok(outcome)
}

/// The listing is complete: every campaign of the tenant that its last pass did not list is
/// marked removed, and listing dead letters (pages that could not be used) are resolved.
async fn mark_removed(
    tx: &mut SqliteConnection,
    lease: &Lease,
    pass: u32,
    at: &str,
) -> Result<u64, StoreError> {
    let gone = sqlx::query(
        "UPDATE campaigns SET removed_at = ?3
         WHERE tenant_id = ?2 AND removed_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM listing_seen s
                           WHERE s.run_id = ?1 AND s.pass = ?4 AND s.campaign_id = campaigns.id)",
    )
    .bind(lease.run)
    .bind(&lease.tenant)
    .bind(at)
    .bind(i64::from(pass))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE dead_letters SET resolved = 1, resolved_at = ?2, resolution = 'listed'
         WHERE tenant_id = ?1 AND stage = 'listing' AND resolved = 0",
    )
    .bind(&lease.tenant)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(gone.rows_affected())
}

pub async fn listed(pool: &SqlitePool, run: RunId) -> Result<Vec<(String, u32)>, StoreError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT campaign_id, pass FROM listing_seen WHERE run_id = ?1")
            .bind(run)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, pass)| (id, pass.clamp(1, u32::MAX.into()) as u32))
        .collect())
}

pub async fn pending_syncs(pool: &SqlitePool, run: RunId) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM campaigns
         WHERE tenant_id = (SELECT tenant_id FROM sync_runs WHERE id = ?1)
           AND last_run_id = ?1 AND synced_run_id IS NOT ?1
         ORDER BY id",
    )
    .bind(run)
    .fetch_all(pool)
    .await?)
}

pub async fn mark_synced(
    pool: &SqlitePool,
    lease: &Lease,
    ids: &[&str],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = ts(at);
    let mut tx = begin(pool).await?;
    fence(&mut tx, lease).await?;
    for chunk in ids.chunks(CHUNK) {
        let sql = repeated(
            "UPDATE campaigns SET synced_at = ?,
                synced_run_id = CASE WHEN last_run_id = ? THEN ? ELSE synced_run_id END
             WHERE tenant_id = ? AND id IN (",
            "?",
            chunk.len(),
            ")",
        );
        let mut update = sqlx::query(sql)
            .bind(&at)
            .bind(lease.run)
            .bind(lease.run)
            .bind(&lease.tenant);
        for id in chunk {
            update = update.bind(*id);
        }
        update.execute(&mut *tx).await?;
        let sql = repeated(
            "UPDATE dead_letters SET resolved = 1, resolved_at = ?, resolution = 'synced'
             WHERE tenant_id = ? AND stage = 'sync' AND resolved = 0 AND campaign_id IN (",
            "?",
            chunk.len(),
            ")",
        );
        let mut resolve = sqlx::query(sql).bind(&at).bind(&lease.tenant);
        for id in chunk {
            resolve = resolve.bind(*id);
        }
        resolve.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// [`mark_synced`] for several runs, one transaction each (one process writes a SQLite
/// file); returns, per batch, whether its lease was still held.
pub async fn mark_synced_many(
    pool: &SqlitePool,
    batches: &[(&Lease, &[&str])],
    at: DateTime<Utc>,
) -> Result<Vec<bool>, StoreError> {
    let mut held = Vec::with_capacity(batches.len());
    for (lease, ids) in batches {
        held.push(match mark_synced(pool, lease, ids, at).await {
            Ok(()) => true,
            Err(StoreError::LeaseLost { .. }) => false,
            Err(e) => return Err(e),
        });
    }
    Ok(held)
}

pub async fn campaign_gone(
    pool: &SqlitePool,
    lease: &Lease,
    campaign_id: &str,
    warning: &RunWarning,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let at = ts(at);
    let mut tx = begin(pool).await?;
    fence(&mut tx, lease).await?;
    let marked = sqlx::query(
        "UPDATE campaigns SET removed_at = ?3
         WHERE tenant_id = ?1 AND id = ?2 AND removed_at IS NULL",
    )
    .bind(&lease.tenant)
    .bind(campaign_id)
    .bind(&at)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("UPDATE sync_runs SET campaigns_removed = campaigns_removed + ?2 WHERE id = ?1")
        .bind(lease.run)
        .bind(marked as i64)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE dead_letters SET resolved = 1, resolved_at = ?3, resolution = 'removed'
         WHERE tenant_id = ?1 AND campaign_id = ?2 AND resolved = 0",
    )
    .bind(&lease.tenant)
    .bind(campaign_id)
    .bind(&at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO run_warnings (run_id, kind, message, occurrences, first_seen_at)
         VALUES (?1, ?2, ?3, 1, ?4)
         ON CONFLICT (run_id, kind) DO UPDATE SET occurrences = run_warnings.occurrences + 1",
    )
    .bind(lease.run)
    .bind(&warning.kind)
    .bind(&warning.message)
    .bind(&at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(marked > 0)
}
