//! PostgreSQL: storing a page with its checkpoint, and recording sync calls. Pages travel as
//! one typed array per column (UNNEST): no per-row parameters, no JSON to parse, and the
//! budget goes over as NUMERIC, exact.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row};

use super::letters::upsert_dead_letter;
use crate::{Lease, PageOutcome, RunId, RunWarning, StoreError, model::DedupedBatch};

pub async fn store_page(
    pool: &PgPool,
    lease: &Lease,
    b: &DedupedBatch<'_>,
) -> Result<PageOutcome, StoreError> {
    let batch = &b.batch;
    let cursor = &batch.cursor;
    let mut tx = crate::tx::begin_pg(pool).await?;
    // The fence and the checkpoint in one statement: it locks the run's row, so a take-over
    // waits for this transaction, and one that already happened leaves no row to update.
    let moved = sqlx::query(
        "UPDATE sync_runs SET next_page = $3, listing_pass = $4, reported_total = $5,
            page_limit = $6, pass_total = $7, pass_drift = $8, drift_events = $9,
            listing_done = $10, listing_complete = $11, pages = pages + $12,
            campaigns_seen = campaigns_seen + $13
         WHERE id = $1 AND lease_epoch = $2 AND status = 'running'",
    )
    .bind(lease.run)
    .bind(lease.epoch)
    .bind(cursor.next_page as i64)
    .bind(cursor.pass as i32)
    .bind(cursor.reported_total.map(|v| v as i64))
    .bind(cursor.page_limit.map(|v| v as i64))
    .bind(cursor.pass_total.map(|v| v as i64))
    .bind(cursor.pass_drift)
    .bind(cursor.drift_events as i32)
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
    let mut outcome = upsert_campaigns(&mut tx, lease, b).await?;
    // Ids listed without a storable record (dead-lettered): the upsert cleared the removal
    // mark of the stored ones and put their pass on their rows; these need it done here.
    let stored: std::collections::HashSet<&str> =
        b.campaigns.iter().map(|c| c.id.as_str()).collect();
    let unstored: Vec<&str> = b
        .listed
        .iter()
        .copied()
        .filter(|id| !stored.contains(id))
        .collect();
    if !unstored.is_empty() {
        // Listed again, valid record or not: the platform has it, so it is not removed.
        outcome.returned += sqlx::query(
            "UPDATE campaigns c SET removed_at = NULL
             FROM UNNEST($2::text[]) AS listed(id)
             WHERE c.tenant_id = $1 AND c.id = listed.id AND c.removed_at IS NOT NULL",
        )
        .bind(&lease.tenant)
        .bind(&unstored)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "INSERT INTO listing_seen (run_id, campaign_id, pass)
             SELECT $1, id, $3 FROM UNNEST($2::text[]) AS x(id)
             ON CONFLICT (run_id, campaign_id) DO UPDATE SET pass = EXCLUDED.pass",
        )
        .bind(lease.run)
        .bind(&unstored)
        .bind(cursor.pass as i32)
        .execute(&mut *tx)
        .await?;
    }
    for letter in batch.dead_letters {
        upsert_dead_letter(&mut tx, &lease.tenant, lease.run, letter, batch.observed_at).await?;
    }
    record_warnings(&mut tx, lease.run, b, batch.observed_at).await?;
    if cursor.done && cursor.complete {
        outcome.removed = mark_removed(&mut tx, lease, cursor.pass, batch.observed_at).await?;
    }
    if outcome.removed > 0 || outcome.returned > 0 {
        sqlx::query(
            "UPDATE sync_runs SET campaigns_removed = campaigns_removed + $2,
                campaigns_returned = campaigns_returned + $3
             WHERE id = $1",
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
    tx: &mut PgConnection,
    lease: &Lease,
    b: &DedupedBatch<'_>,
) -> Result<PageOutcome, StoreError> {
    let cs = &b.campaigns;
    if cs.is_empty() {
        return Ok(PageOutcome::default());
    }
    let ids: Vec<&str> = cs.iter().map(|c| c.id.as_str()).collect();
    let names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
    let statuses: Vec<&str> = cs.iter().map(|c| c.status.as_str()).collect();
    let budgets: Vec<Decimal> = cs.iter().map(|c| c.budget.to_decimal()).collect();
    let impressions: Vec<i64> = cs.iter().map(|c| c.impressions).collect();
    let clicks: Vec<i64> = cs.iter().map(|c| c.clicks).collect();
    let conversions: Vec<i64> = cs.iter().map(|c| c.conversions).collect();
    let created: Vec<DateTime<Utc>> = cs.iter().map(|c| c.created_at).collect();
    let raws: Vec<&str> = cs.iter().map(|c| c.raw.as_str()).collect();
    let plain: Vec<bool> = raws.iter().map(|r| jsonb_takes(r)).collect();
    let row = sqlx::query(
        "WITH input AS (
            SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::numeric[],
                $5::int8[], $6::int8[], $7::int8[], $8::timestamptz[], $9::text[],
                $13::bool[])
                AS x(id, name, status, budget, impressions, clicks, conversions, created_at, raw,
                    plain)
        ), prior AS (
            -- Campaigns this run had stored already, read before the upsert (one snapshot
            -- for the whole statement). One primary-key probe per input row, which no plan
            -- can turn into a scan of the tenant: `id = ANY($1)` did that under a generic plan
            -- on unanalyzed tables, and a join did it under a custom plan on analyzed ones
            -- (a hash over the tenant's 100k rows: 112 ms per page of 1,000, against 10-20).
            -- Bit 1: this run stored it already; bit 2: it was marked removed (the upsert
            -- clears that: listed again, the platform has it).
            SELECT count(*) FILTER (WHERE seen & 1 = 1) AS mine,
                   count(*) FILTER (WHERE seen & 2 = 2) AS returned
            FROM (SELECT (SELECT CASE WHEN c.last_run_id = $11 THEN 1 ELSE 0 END
                               | CASE WHEN c.removed_at IS NULL THEN 0 ELSE 2 END
                          FROM campaigns c
                          WHERE c.tenant_id = $10 AND c.id = input.id) AS seen
                  -- OFFSET 0 keeps the probe in this subquery: flattened, each count
                  -- would run it again.
                  FROM input OFFSET 0) probed
        ), upserted AS (
            INSERT INTO campaigns AS c (tenant_id, id, name, status, budget, impressions, clicks,
                conversions, created_at, first_seen_at, updated_at, last_run_id, listed_pass, raw,
                removed_at)
            SELECT $10, id, name, status, budget, impressions, clicks, conversions, created_at,
                $12, $12, $11, $14,
                CASE WHEN plain THEN raw::jsonb ELSE adsync_raw_jsonb(raw) END, NULL
            FROM input
            ON CONFLICT (tenant_id, id) DO UPDATE SET
                name = EXCLUDED.name, status = EXCLUDED.status, budget = EXCLUDED.budget,
                impressions = EXCLUDED.impressions, clicks = EXCLUDED.clicks,
                conversions = EXCLUDED.conversions, created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at, last_run_id = EXCLUDED.last_run_id,
                listed_pass = EXCLUDED.listed_pass, raw = EXCLUDED.raw, removed_at = NULL
        ), metrics AS (
            INSERT INTO campaign_metrics (tenant_id, campaign_id, run_id, observed_at,
                impressions, clicks, conversions)
            SELECT $10, id, $11, $12, impressions, clicks, conversions FROM input
            ON CONFLICT (tenant_id, campaign_id, run_id) DO UPDATE SET
                observed_at = EXCLUDED.observed_at, impressions = EXCLUDED.impressions,
                clicks = EXCLUDED.clicks, conversions = EXCLUDED.conversions
        ), resolved AS (
            UPDATE dead_letters SET resolved = TRUE, resolved_at = $12, resolution = 'stored'
            WHERE tenant_id = $10 AND stage = 'validation' AND NOT resolved
              AND campaign_id IN (SELECT id FROM input)
        )
        -- Data-modifying CTEs run to completion whether or not they are read.
        SELECT (SELECT count(*) FROM input) - mine AS newly, returned FROM prior",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&statuses)
    .bind(&budgets)
    .bind(&impressions)
    .bind(&clicks)
    .bind(&conversions)
    .bind(&created)
    .bind(&raws)
    .bind(&lease.tenant)
    .bind(lease.run)
    .bind(b.batch.observed_at)
    .bind(&plain)
    .bind(b.batch.cursor.pass as i32)
    .fetch_one(&mut *tx)
    .await?;
    Ok(PageOutcome {
        newly_stored: row.try_get::<i64, _>("newly")?.max(0) as u64,
        returned: row.try_get::<i64, _>("returned")?.max(0) as u64,
        ..PageOutcome::default()
    })
}

/// Whether PostgreSQL's `jsonb` input surely takes `raw` (JSON that serde_json read): no
/// `\u` escape (`\u0000` is refused, and escapes of non-ASCII characters outside a UTF-8
/// database) and no number that could fall outside NUMERIC (an exponent, or a thousand digits
/// in a row). Such records are cast directly; the others go through `adsync_raw_jsonb`, whose
/// exception handler costs a subtransaction per record (0.4 ms of a 100-record page's 4.5).
fn jsonb_takes(raw: &str) -> bool {
    let (mut in_string, mut escaped, mut digits) = (false, false, 0usize);
    for &c in raw.as_bytes() {
        if in_string {
            if escaped {
                if c == b'u' {
                    return false;
                }
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'0'..=b'9' => {
                digits += 1;
                if digits > 1000 {
                    return false;
                }
                continue;
            }
            // Outside strings a letter e follows a digit only as an exponent (true and false
            // have theirs after other letters).
            b'e' | b'E' if digits > 0 => return false,
            _ => {}
        }
        digits = 0;
    }
    true
}

async fn record_warnings(
    tx: &mut PgConnection,
    run: RunId,
    b: &DedupedBatch<'_>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    if b.warnings.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = b.warnings.iter().map(|w| w.0.as_str()).collect();
    let messages: Vec<&str> = b.warnings.iter().map(|w| w.1.as_str()).collect();
    let counts: Vec<i64> = b.warnings.iter().map(|w| w.2).collect();
    sqlx::query(
        "INSERT INTO run_warnings (run_id, kind, message, occurrences, first_seen_at)
         SELECT $1, kind, message, n, $5 FROM UNNEST($2::text[], $3::text[], $4::int8[])
             AS x(kind, message, n)
         ON CONFLICT (run_id, kind) DO UPDATE
         SET occurrences = run_warnings.occurrences + EXCLUDED.occurrences",
    )
    .bind(run)
    .bind(&kinds)
    .bind(&messages)
    .bind(&counts)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The listing is complete: every campaign of the tenant that its last pass did not list is
/// marked removed, and listing dead letters (pages that could not be used) are resolved.
async fn mark_removed(
    tx: &mut PgConnection,
    lease: &Lease,
    pass: u32,
    at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let removed: i64 = sqlx::query_scalar(
        "WITH gone AS (
            UPDATE campaigns c SET removed_at = $3
            WHERE c.tenant_id = $2 AND c.removed_at IS NULL
              AND (c.last_run_id <> $1 OR c.listed_pass IS DISTINCT FROM $4)
              AND NOT EXISTS (SELECT 1 FROM listing_seen s
                              WHERE s.run_id = $1 AND s.pass = $4 AND s.campaign_id = c.id)
            RETURNING 1
        ), listing AS (
            UPDATE dead_letters SET resolved = TRUE, resolved_at = $3, resolution = 'listed'
            WHERE tenant_id = $2 AND stage = 'listing' AND NOT resolved
        )
        SELECT count(*) FROM gone",
    )
    .bind(lease.run)
    .bind(&lease.tenant)
    .bind(at)
    .bind(pass as i32)
    .fetch_one(&mut *tx)
    .await?;
    Ok(removed.max(0) as u64)
}

pub async fn listed(pool: &PgPool, run: RunId) -> Result<Vec<(String, u32)>, StoreError> {
    // Stored campaigns carry the pass that last listed them while their run is open (a
    // finished run's listing is no checkpoint); listing_seen has the ids listed without a
    // stored record. An id in both was listed by each in turn: the later pass counts.
    let rows: Vec<(String, i32)> = sqlx::query_as(
        "SELECT id, max(pass) FROM (
            SELECT c.id, c.listed_pass AS pass FROM sync_runs r
            JOIN campaigns c ON c.tenant_id = r.tenant_id AND c.last_run_id = r.id
            WHERE r.id = $1 AND r.status IN ('running', 'interrupted', 'queued')
              AND c.listed_pass IS NOT NULL
            UNION ALL
            SELECT campaign_id, pass FROM listing_seen WHERE run_id = $1
         ) listed GROUP BY id",
    )
    .bind(run)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, pass)| (id, pass.max(1) as u32))
        .collect())
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
    lease: &Lease,
    ids: &[&str],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    // One statement: the fence (a locked run row, or none when the lease is gone) gates both
    // updates, which read it.
    let held: i64 = sqlx::query_scalar(
        "WITH fence AS (
            SELECT id FROM sync_runs
            WHERE id = $1 AND lease_epoch = $2 AND status = 'running' FOR UPDATE
        ), campaign AS (
            UPDATE campaigns SET synced_at = $5,
                synced_run_id = CASE WHEN last_run_id = $1 THEN $1 ELSE synced_run_id END
            WHERE tenant_id = $3 AND id = ANY($4::text[]) AND EXISTS (SELECT 1 FROM fence)
        ), letters AS (
            UPDATE dead_letters SET resolved = TRUE, resolved_at = $5, resolution = 'synced'
            WHERE tenant_id = $3 AND campaign_id = ANY($4::text[]) AND stage = 'sync'
              AND NOT resolved AND EXISTS (SELECT 1 FROM fence)
        )
        SELECT count(*) FROM fence",
    )
    .bind(lease.run)
    .bind(lease.epoch)
    .bind(&lease.tenant)
    .bind(ids)
    .bind(at)
    .fetch_one(pool)
    .await?;
    if held == 0 {
        return Err(StoreError::LeaseLost {
            run: lease.run,
            epoch: lease.epoch,
        });
    }
    Ok(())
}

/// [`mark_synced`] for several runs in one statement; returns, per batch, whether its lease
/// was still held (its campaigns were recorded). The runs' rows are locked in id order, so
/// two such statements (or one and a single run's write) cannot deadlock.
pub async fn mark_synced_many(
    pool: &PgPool,
    batches: &[(&Lease, &[&str])],
    at: DateTime<Utc>,
) -> Result<Vec<bool>, StoreError> {
    let (mut runs, mut epochs, mut tenants, mut ids) = (vec![], vec![], vec![], vec![]);
    for (lease, batch) in batches {
        for id in *batch {
            runs.push(lease.run);
            epochs.push(lease.epoch);
            tenants.push(lease.tenant.as_str());
            ids.push(*id);
        }
    }
    let held: Vec<(RunId, i64)> = sqlx::query_as(
        "WITH input AS (
            SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[])
                AS x(run_id, epoch, tenant_id, id)
        ), fence AS (
            -- One primary-key probe per run, locking in id order (the runs sorted first; a
            -- nested loop keeps its outer order). Filtering the running runs by
            -- `id = ANY(...)` instead let the planner walk a partial index of every running
            -- row version with the whole id array per entry (3.7 of 9 ms at 1,000 runs).
            SELECT r.id, r.lease_epoch
            FROM (SELECT DISTINCT run_id, epoch FROM input ORDER BY run_id) i
            CROSS JOIN LATERAL (
                SELECT r.id, r.lease_epoch FROM sync_runs r
                WHERE r.id = i.run_id AND r.lease_epoch = i.epoch AND r.status = 'running'
                FOR UPDATE
            ) r
        ), held AS (
            SELECT i.run_id, i.tenant_id, i.id FROM input i
            JOIN fence f ON f.id = i.run_id AND f.lease_epoch = i.epoch
        ), campaign AS (
            UPDATE campaigns c SET synced_at = $5,
                synced_run_id = CASE WHEN c.last_run_id = h.run_id THEN h.run_id
                                     ELSE c.synced_run_id END
            FROM held h WHERE c.tenant_id = h.tenant_id AND c.id = h.id
        ), letters AS (
            UPDATE dead_letters d SET resolved = TRUE, resolved_at = $5, resolution = 'synced'
            FROM held h
            WHERE d.tenant_id = h.tenant_id AND d.campaign_id = h.id AND d.stage = 'sync'
              AND NOT d.resolved
        )
        SELECT id, lease_epoch FROM fence",
    )
    .bind(&runs)
    .bind(&epochs)
    .bind(&tenants)
    .bind(&ids)
    .bind(at)
    .fetch_all(pool)
    .await?;
    Ok(batches
        .iter()
        .map(|(lease, _)| held.contains(&(lease.run, lease.epoch)))
        .collect())
}

pub async fn campaign_gone(
    pool: &PgPool,
    lease: &Lease,
    campaign_id: &str,
    warning: &RunWarning,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let mut tx = crate::tx::begin_pg(pool).await?;
    super::fence(&mut tx, lease).await?;
    let marked = sqlx::query(
        "UPDATE campaigns SET removed_at = $3
         WHERE tenant_id = $1 AND id = $2 AND removed_at IS NULL",
    )
    .bind(&lease.tenant)
    .bind(campaign_id)
    .bind(at)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("UPDATE sync_runs SET campaigns_removed = campaigns_removed + $2 WHERE id = $1")
        .bind(lease.run)
        .bind(marked as i64)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE dead_letters SET resolved = TRUE, resolved_at = $3, resolution = 'removed'
         WHERE tenant_id = $1 AND campaign_id = $2 AND NOT resolved",
    )
    .bind(&lease.tenant)
    .bind(campaign_id)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO run_warnings (run_id, kind, message, occurrences, first_seen_at)
         VALUES ($1, $2, $3, 1, $4)
         ON CONFLICT (run_id, kind) DO UPDATE SET occurrences = run_warnings.occurrences + 1",
    )
    .bind(lease.run)
    .bind(&warning.kind)
    .bind(&warning.message)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(marked > 0)
}

#[cfg(test)]
mod tests {
    use super::jsonb_takes;

    #[test]
    fn plain_records_are_cast_and_the_rest_go_through_the_careful_function() {
        assert!(jsonb_takes(
            r#"{"id":"c1","name":"Spring é","budget":"12.50","clicks":-3,"ok":true,"f":false,"n":null,"x":1.25}"#
        ));
        assert!(jsonb_takes(r#"{"quote":"a \"b\" \\ \n e1"}"#));
        assert!(!jsonb_takes(r#"{"name":"nul \u0000"}"#));
        assert!(!jsonb_takes(r#"{"name":"\\\u00e9"}"#));
        assert!(!jsonb_takes(r#"{"clicks":1e999999}"#));
        assert!(!jsonb_takes(r#"{"clicks":2.5E3}"#));
        assert!(!jsonb_takes(&format!(
            r#"{{"clicks":{}}}"#,
            "9".repeat(1001)
        )));
        assert!(jsonb_takes(&format!(
            r#"{{"clicks":{}}}"#,
            "9".repeat(1000)
        )));
    }
}
