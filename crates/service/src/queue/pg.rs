//! The queue on PostgreSQL. Times come from the database's clock (`clock_timestamp()`), as
//! the store's leases do, so workers on machines whose clocks disagree still agree.

use std::time::Duration;

use adsync_store::{Lease, RunId, RunStatus};
use sqlx::{PgConnection, PgPool, Row};

use super::{CancelOutcome, Enqueued, OpenRun, REQUEUE_UNSETTLED, RunRequest, Settle};
use crate::{
    Result, ServiceError,
    audit::{self, Actor, Change},
};

pub(super) async fn enqueue(
    pool: &PgPool,
    req: &RunRequest<'_>,
    actor: Option<&Actor>,
) -> Result<Enqueued> {
    let mut tx = adsync_store::tx::begin_pg(pool).await?;
    let outcome = enqueue_in(&mut tx, req).await?;
    if let Some(actor) = actor
        && !matches!(outcome, Enqueued::AlreadyActive(_))
    {
        let id = outcome.run().to_string();
        audit::record_pg(
            &mut tx,
            actor,
            &Change {
                action: "run.create",
                target_type: "run",
                target_id: &id,
                tenant_id: Some(req.tenant),
                detail: Some(serde_json::json!({ "outcome": outcome })),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

/// [`enqueue`] inside the caller's transaction (the scheduler fires a tick in the same one).
pub(crate) async fn enqueue_in(tx: &mut PgConnection, req: &RunRequest<'_>) -> Result<Enqueued> {
    // The tenant's row lock serializes enqueues of one tenant (and a delete).
    let exists = sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(req.tenant)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(ServiceError::NotFound(format!("tenant {}", req.tenant)));
    }
    let open = sqlx::query(
        "SELECT id, status, platform, cancel_requested_at IS NOT NULL AS cancelled FROM sync_runs
         WHERE tenant_id = $1 AND status IN ('queued', 'running', 'interrupted')
         ORDER BY (status = 'interrupted'), id DESC LIMIT 1",
    )
    .bind(req.tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let mut outcome = None;
    if let Some(row) = open {
        let id: RunId = row.try_get("id")?;
        let status: String = row.try_get("status")?;
        let platform: Option<String> = row.try_get("platform")?;
        let cancelled: bool = row.try_get("cancelled")?;
        let action = OpenRun::of(&status, platform.as_deref(), cancelled, req.platform);
        if action == OpenRun::Active {
            return Ok(Enqueued::AlreadyActive(id));
        }
        if action == OpenRun::Cancelled {
            sqlx::query(
                "UPDATE sync_runs SET status = 'cancelled', lease_expires_at = NULL
                 WHERE id = $1 AND status = 'interrupted'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        } else if action == OpenRun::Resume {
            sqlx::query(
                "UPDATE sync_runs SET status = 'queued', queued_at = clock_timestamp(),
                    run_after = NULL, requested_by = $2, owner = NULL,
                    lease_expires_at = NULL, stop_reason = NULL, finished_at = NULL,
                    error = NULL, cancel_requested_at = NULL
                 WHERE id = $1",
            )
            .bind(id)
            .bind(req.requested_by)
            .execute(&mut *tx)
            .await?;
            outcome = Some(Enqueued::Requeued(id));
        } else {
            sqlx::query(
                "UPDATE sync_runs SET status = 'failed', finished_at = clock_timestamp(),
                    error = 'abandoned: the tenant now syncs from another platform'
                 WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
    }
    let outcome = match outcome {
        Some(o) => o,
        None => {
            let id: RunId = sqlx::query_scalar(
                "INSERT INTO sync_runs (tenant_id, started_at, status, page_size, platform,
                    requested_by, queued_at)
                 VALUES ($1, clock_timestamp(), 'queued', $2, $3, $4, clock_timestamp())
                 RETURNING id",
            )
            .bind(req.tenant)
            .bind(req.page_size as i64)
            .bind(req.platform)
            .bind(req.requested_by)
            .fetch_one(&mut *tx)
            .await?;
            Enqueued::Queued(id)
        }
    };
    wake_workers(&mut *tx).await?;
    Ok(outcome)
}

/// Many runs in the caller's transaction, in a few statements whatever their number: the
/// tenants are locked in id order (two batches cannot deadlock), those with an open run go
/// through [`enqueue_in`]'s rule one by one, and the rest get their new runs from one
/// `INSERT`. One enqueue per run cost a millisecond each (a thousand tenants due at once
/// waited a second for the last one's run). Outcomes in the order of `reqs`.
pub(crate) async fn enqueue_many_in(
    tx: &mut PgConnection,
    reqs: &[RunRequest<'_>],
) -> Result<Vec<Enqueued>> {
    let tenants: Vec<&str> = reqs.iter().map(|r| r.tenant).collect();
    let found: Vec<String> =
        sqlx::query_scalar("SELECT id FROM tenants WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&tenants)
            .fetch_all(&mut *tx)
            .await?;
    let found: std::collections::HashSet<&str> = found.iter().map(String::as_str).collect();
    if let Some(missing) = tenants.iter().find(|t| !found.contains(*t)) {
        return Err(ServiceError::NotFound(format!("tenant {missing}")));
    }
    // Each tenant's open run, chosen as `enqueue_in` chooses it; the common answer (a run
    // still queued or running: nothing to do) is decided here, without a round trip.
    let mut open = std::collections::HashMap::new();
    for row in sqlx::query(
        "SELECT DISTINCT ON (tenant_id) tenant_id, id, status, platform,
            cancel_requested_at IS NOT NULL AS cancelled
         FROM sync_runs
         WHERE tenant_id = ANY($1) AND status IN ('queued', 'running', 'interrupted')
         ORDER BY tenant_id, (status = 'interrupted'), id DESC",
    )
    .bind(&tenants)
    .fetch_all(&mut *tx)
    .await?
    {
        let tenant: String = row.try_get("tenant_id")?;
        let id: RunId = row.try_get("id")?;
        let status: String = row.try_get("status")?;
        let platform: Option<String> = row.try_get("platform")?;
        let cancelled: bool = row.try_get("cancelled")?;
        open.insert(tenant, (id, status, platform, cancelled));
    }
    // Each tenant's first request decides; a repeat finds the first one's run.
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut done: Vec<Option<Enqueued>> = vec![None; reqs.len()];
    let mut fresh = Vec::new();
    for (i, req) in reqs.iter().enumerate() {
        if first.contains_key(req.tenant) {
            continue;
        }
        first.insert(req.tenant, i);
        if let Some((id, status, platform, cancelled)) = open.get(req.tenant) {
            done[i] = Some(
                match OpenRun::of(status, platform.as_deref(), *cancelled, req.platform) {
                    OpenRun::Active => Enqueued::AlreadyActive(*id),
                    // Interrupted: resumed, closed or replaced by the one-by-one rule.
                    _ => enqueue_in(tx, req).await?,
                },
            );
        } else {
            fresh.push(i);
        }
    }
    let mut queued = std::collections::HashMap::<String, RunId>::new();
    if !fresh.is_empty() {
        let picked: Vec<&RunRequest<'_>> = fresh.iter().map(|&i| &reqs[i]).collect();
        let tenants: Vec<&str> = picked.iter().map(|r| r.tenant).collect();
        let platforms: Vec<&str> = picked.iter().map(|r| r.platform).collect();
        let requested_by: Vec<&str> = picked.iter().map(|r| r.requested_by).collect();
        let page_sizes: Vec<i64> = picked.iter().map(|r| r.page_size as i64).collect();
        let rows = sqlx::query(
            "INSERT INTO sync_runs (tenant_id, started_at, status, page_size, platform,
                requested_by, queued_at)
             SELECT tenant, clock_timestamp(), 'queued', page_size, platform, requested_by,
                clock_timestamp()
             FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[])
                 AS x(tenant, page_size, platform, requested_by)
             RETURNING id, tenant_id",
        )
        .bind(&tenants)
        .bind(&page_sizes)
        .bind(&platforms)
        .bind(&requested_by)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            queued.insert(row.try_get("tenant_id")?, row.try_get("id")?);
        }
        wake_workers(&mut *tx).await?;
    }
    let decided = |i: usize| -> Result<Enqueued> {
        match done[i] {
            Some(outcome) => Ok(outcome),
            None => queued
                .get(reqs[i].tenant)
                .map(|&id| Enqueued::Queued(id))
                .ok_or_else(|| ServiceError::NotFound(format!("tenant {}", reqs[i].tenant))),
        }
    };
    reqs.iter()
        .enumerate()
        .map(|(i, req)| {
            let f = first[req.tenant];
            if f == i {
                decided(i)
            } else {
                decided(f).map(|o| Enqueued::AlreadyActive(o.run()))
            }
        })
        .collect()
}

/// The channel workers listen on: a hint that a run was queued (they poll anyway).
pub(crate) const WAKE_CHANNEL: &str = "adsync_runs";

/// Tells listening workers, when the transaction commits, that there is a run to claim.
async fn wake_workers(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WAKE_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn claim(
    pool: &PgPool,
    owner: &str,
    ttl: Duration,
    max: usize,
) -> Result<Vec<(RunId, String, i64)>> {
    let rows = sqlx::query(
        "WITH picked AS (
            SELECT r.id FROM sync_runs r JOIN tenants t ON t.id = r.tenant_id
            WHERE r.status = 'queued' AND NOT t.paused
              AND (r.run_after IS NULL OR r.run_after <= clock_timestamp())
            ORDER BY t.last_served_at ASC NULLS FIRST, r.queued_at, r.id
            LIMIT $3
            FOR UPDATE OF r SKIP LOCKED
         ), claimed AS (
            UPDATE sync_runs r SET status = 'running', owner = $1,
                heartbeat_at = clock_timestamp(), lease_epoch = r.lease_epoch + 1,
                lease_expires_at = clock_timestamp() + make_interval(secs => $2),
                started_at = CASE WHEN r.attempts = 0 THEN clock_timestamp()
                                  ELSE r.started_at END,
                resumes = r.resumes + CASE WHEN r.attempts = 0 THEN 0 ELSE 1 END,
                attempts = r.attempts + 1, stop_reason = NULL, finished_at = NULL,
                error = NULL, run_after = NULL
            FROM picked WHERE r.id = picked.id
            RETURNING r.id, r.tenant_id, r.lease_epoch
         ), served AS (
            UPDATE tenants t SET last_served_at = clock_timestamp()
            FROM claimed WHERE t.id = claimed.tenant_id
         )
         SELECT id, tenant_id, lease_epoch FROM claimed",
    )
    .bind(owner)
    .bind(ttl.as_secs_f64())
    .bind(max as i64)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("id")?,
                r.try_get("tenant_id")?,
                r.try_get("lease_epoch")?,
            ))
        })
        .collect()
}

pub(super) async fn reap(pool: &PgPool) -> Result<Vec<RunId>> {
    let reaped: Vec<RunId> = sqlx::query_scalar(
        "UPDATE sync_runs SET status = 'queued', queued_at = clock_timestamp(),
            lease_expires_at = NULL,
            error = 'the lease of ' || coalesce(owner, 'its worker') || ' ran out; requeued'
         WHERE id IN (
            -- Locked in id order, as every statement locking several runs does (a batch of
            -- sync successes may hold one of them); a run locked now is being written by
            -- its holder and is looked at again next time.
            SELECT id FROM sync_runs
            WHERE status = 'running' AND lease_expires_at < clock_timestamp()
              AND tenant_id IN (SELECT id FROM tenants)
            ORDER BY id FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .fetch_all(pool)
    .await?;
    if !reaped.is_empty() {
        wake_workers(&mut *pool.acquire().await?).await?;
    }
    Ok(reaped)
}

pub(super) async fn reap_unsettled(pool: &PgPool, grace: Duration) -> Result<Vec<RunId>> {
    let reaped: Vec<RunId> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_runs r SET {REQUEUE_UNSETTLED}, queued_at = clock_timestamp()
         WHERE r.status = 'interrupted' AND r.queued_at IS NOT NULL
           AND r.finished_at < clock_timestamp() - make_interval(secs => $1)
           AND r.tenant_id IN (SELECT id FROM tenants)
           AND r.id = (SELECT max(o.id) FROM sync_runs o WHERE o.tenant_id = r.tenant_id)
           AND NOT EXISTS (SELECT 1 FROM sync_runs a WHERE a.tenant_id = r.tenant_id
                           AND a.status IN ('queued', 'running'))
         RETURNING r.id"
    )))
    .bind(grace.as_secs_f64())
    .fetch_all(pool)
    .await?;
    if !reaped.is_empty() {
        wake_workers(&mut *pool.acquire().await?).await?;
    }
    Ok(reaped)
}

pub(super) async fn settle(pool: &PgPool, lease: &Lease, how: Settle) -> Result<bool> {
    let done = match how {
        Settle::Requeue { after } => sqlx::query(
            "UPDATE sync_runs SET status = 'queued', queued_at = clock_timestamp(),
                run_after = clock_timestamp() + make_interval(secs => $3),
                stop_reason = NULL, finished_at = NULL, lease_expires_at = NULL
             WHERE id = $1 AND lease_epoch = $2 AND status = 'interrupted'",
        )
        .bind(lease.run)
        .bind(lease.epoch)
        .bind(after.as_secs_f64()),
        Settle::Cancel => sqlx::query(
            "UPDATE sync_runs SET status = 'cancelled', lease_expires_at = NULL,
                error = 'cancelled'
             WHERE id = $1 AND lease_epoch = $2 AND status = 'interrupted'",
        )
        .bind(lease.run)
        .bind(lease.epoch),
    }
    .execute(pool)
    .await?;
    if done.rows_affected() == 1 && matches!(how, Settle::Requeue { .. }) {
        wake_workers(&mut *pool.acquire().await?).await?;
    }
    Ok(done.rows_affected() == 1)
}

pub(super) async fn cancel(
    pool: &PgPool,
    run: RunId,
    actor: Option<&Actor>,
) -> Result<CancelOutcome> {
    let mut tx = adsync_store::tx::begin_pg(pool).await?;
    let row = sqlx::query("SELECT tenant_id, status FROM sync_runs WHERE id = $1 FOR UPDATE")
        .bind(run)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("run {run}")))?;
    let tenant: String = row.try_get("tenant_id")?;
    let status: RunStatus = row
        .try_get::<String, _>("status")?
        .parse()
        .map_err(|e: String| ServiceError::Store(adsync_store::StoreError::Corrupt(e)))?;
    let outcome = match status {
        RunStatus::Queued | RunStatus::Interrupted => {
            sqlx::query(
                "UPDATE sync_runs SET status = 'cancelled', stop_reason = 'cancelled',
                    finished_at = clock_timestamp(), lease_expires_at = NULL,
                    error = 'cancelled before it ran to its end'
                 WHERE id = $1",
            )
            .bind(run)
            .execute(&mut *tx)
            .await?;
            CancelOutcome::Cancelled
        }
        RunStatus::Running => {
            sqlx::query(
                "UPDATE sync_runs SET cancel_requested_at = coalesce(cancel_requested_at,
                    clock_timestamp()) WHERE id = $1",
            )
            .bind(run)
            .execute(&mut *tx)
            .await?;
            CancelOutcome::Requested
        }
        other => return Ok(CancelOutcome::AlreadyFinished(other)),
    };
    if let Some(actor) = actor {
        audit::record_pg(
            &mut tx,
            actor,
            &Change {
                action: "run.cancel",
                target_type: "run",
                target_id: &run.to_string(),
                tenant_id: Some(&tenant),
                detail: Some(serde_json::json!({ "outcome": outcome })),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

pub(super) async fn cancel_requested(pool: &PgPool, runs: &[RunId]) -> Result<Vec<RunId>> {
    // Every running run with a cancel request (a few at most, read from the nearly empty
    // sync_runs_cancel_requested), kept if it is one of `runs`: `id = ANY($1)` with a
    // worker's thousand runs sorted and searched the whole array in the index every poll.
    let requested: Vec<RunId> = sqlx::query_scalar(
        "SELECT id FROM sync_runs WHERE status = 'running' AND cancel_requested_at IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    Ok(runs
        .iter()
        .copied()
        .filter(|run| requested.contains(run))
        .collect())
}
