//! The queue on SQLite (one machine: times from this process's clock). Every write is a
//! `BEGIN IMMEDIATE` transaction, which holds the database's write lock from its start, so a
//! claim cannot interleave with another one.

use std::time::Duration;

use adsync_store::{Lease, RunId, RunStatus, sqlite_ts};
use chrono::Utc;
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::{CancelOutcome, Enqueued, OpenRun, REQUEUE_UNSETTLED, RunRequest, Settle};
use crate::{
    Result, ServiceError,
    audit::{self, Actor, Change},
};

async fn begin(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>> {
    Ok(adsync_store::tx::begin_sqlite(pool).await?)
}

fn now() -> String {
    sqlite_ts(Utc::now())
}

fn later(after: Duration) -> String {
    let at = chrono::Duration::from_std(after)
        .ok()
        .and_then(|d| Utc::now().checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
    sqlite_ts(at)
}

pub(super) async fn enqueue(
    pool: &SqlitePool,
    req: &RunRequest<'_>,
    actor: Option<&Actor>,
) -> Result<Enqueued> {
    let mut tx = begin(pool).await?;
    let outcome = enqueue_in(&mut tx, req).await?;
    if let Some(actor) = actor
        && !matches!(outcome, Enqueued::AlreadyActive(_))
    {
        let id = outcome.run().to_string();
        audit::record_sqlite(
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

/// [`enqueue`] inside the caller's `BEGIN IMMEDIATE` transaction.
pub(crate) async fn enqueue_in(
    tx: &mut SqliteConnection,
    req: &RunRequest<'_>,
) -> Result<Enqueued> {
    let now = now();
    let exists = sqlx::query("SELECT 1 FROM tenants WHERE id = $1")
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
                "UPDATE sync_runs SET status = 'queued', queued_at = $3, run_after = NULL,
                    requested_by = $2, owner = NULL, lease_expires_at = NULL,
                    stop_reason = NULL, finished_at = NULL, error = NULL,
                    cancel_requested_at = NULL
                 WHERE id = $1",
            )
            .bind(id)
            .bind(req.requested_by)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            outcome = Some(Enqueued::Requeued(id));
        } else {
            sqlx::query(
                "UPDATE sync_runs SET status = 'failed', finished_at = $2,
                    error = 'abandoned: the tenant now syncs from another platform'
                 WHERE id = $1",
            )
            .bind(id)
            .bind(&now)
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
                 VALUES ($1, $5, 'queued', $2, $3, $4, $5)
                 RETURNING id",
            )
            .bind(req.tenant)
            .bind(req.page_size as i64)
            .bind(req.platform)
            .bind(req.requested_by)
            .bind(&now)
            .fetch_one(&mut *tx)
            .await?;
            Enqueued::Queued(id)
        }
    };
    Ok(outcome)
}

pub(super) async fn claim(
    pool: &SqlitePool,
    owner: &str,
    ttl: Duration,
    max: usize,
) -> Result<Vec<(RunId, String, i64)>> {
    let now = now();
    let until = later(ttl);
    let mut tx = begin(pool).await?;
    let picked: Vec<RunId> = sqlx::query_scalar(
        "SELECT r.id FROM sync_runs r JOIN tenants t ON t.id = r.tenant_id
         WHERE r.status = 'queued' AND t.paused = 0
           AND (r.run_after IS NULL OR r.run_after <= $1)
         ORDER BY t.last_served_at IS NOT NULL, t.last_served_at, r.queued_at, r.id
         LIMIT $2",
    )
    .bind(&now)
    .bind(max as i64)
    .fetch_all(&mut *tx)
    .await?;
    let mut claimed = Vec::with_capacity(picked.len());
    for id in picked {
        let row = sqlx::query(
            "UPDATE sync_runs SET status = 'running', owner = $2, heartbeat_at = $3,
                lease_epoch = lease_epoch + 1, lease_expires_at = $4,
                started_at = CASE WHEN attempts = 0 THEN $3 ELSE started_at END,
                resumes = resumes + CASE WHEN attempts = 0 THEN 0 ELSE 1 END,
                attempts = attempts + 1, stop_reason = NULL, finished_at = NULL,
                error = NULL, run_after = NULL
             WHERE id = $1
             RETURNING tenant_id, lease_epoch",
        )
        .bind(id)
        .bind(owner)
        .bind(&now)
        .bind(&until)
        .fetch_one(&mut *tx)
        .await?;
        let tenant: String = row.try_get("tenant_id")?;
        sqlx::query("UPDATE tenants SET last_served_at = $2 WHERE id = $1")
            .bind(&tenant)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        claimed.push((id, tenant, row.try_get("lease_epoch")?));
    }
    tx.commit().await?;
    Ok(claimed)
}

pub(super) async fn reap(pool: &SqlitePool) -> Result<Vec<RunId>> {
    let now = now();
    let mut tx = begin(pool).await?;
    let ids = sqlx::query_scalar(
        "UPDATE sync_runs SET status = 'queued', queued_at = $1, lease_expires_at = NULL,
            error = 'the lease of ' || coalesce(owner, 'its worker') || ' ran out; requeued'
         WHERE status = 'running' AND lease_expires_at < $1
           AND tenant_id IN (SELECT id FROM tenants)
         RETURNING id",
    )
    .bind(&now)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ids)
}

pub(super) async fn reap_unsettled(pool: &SqlitePool, grace: Duration) -> Result<Vec<RunId>> {
    let before = chrono::Duration::from_std(grace)
        .ok()
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
    let mut tx = begin(pool).await?;
    let ids = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_runs AS r SET {REQUEUE_UNSETTLED}, queued_at = $2
         WHERE r.status = 'interrupted' AND r.queued_at IS NOT NULL AND r.finished_at < $1
           AND r.tenant_id IN (SELECT id FROM tenants)
           AND r.id = (SELECT max(o.id) FROM sync_runs o WHERE o.tenant_id = r.tenant_id)
           AND NOT EXISTS (SELECT 1 FROM sync_runs a WHERE a.tenant_id = r.tenant_id
                           AND a.status IN ('queued', 'running'))
         RETURNING id"
    )))
    .bind(sqlite_ts(before))
    .bind(now())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ids)
}

pub(super) async fn settle(pool: &SqlitePool, lease: &Lease, how: Settle) -> Result<bool> {
    let now = now();
    let mut tx = begin(pool).await?;
    let done = match how {
        Settle::Requeue { after } => {
            sqlx::query(
                "UPDATE sync_runs SET status = 'queued', queued_at = $3, run_after = $4,
                    stop_reason = NULL, finished_at = NULL, lease_expires_at = NULL
                 WHERE id = $1 AND lease_epoch = $2 AND status = 'interrupted'",
            )
            .bind(lease.run)
            .bind(lease.epoch)
            .bind(&now)
            .bind(later(after))
            .execute(&mut *tx)
            .await?
        }
        Settle::Cancel => {
            sqlx::query(
                "UPDATE sync_runs SET status = 'cancelled', lease_expires_at = NULL,
                    error = 'cancelled'
                 WHERE id = $1 AND lease_epoch = $2 AND status = 'interrupted'",
            )
            .bind(lease.run)
            .bind(lease.epoch)
            .execute(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn cancel(
    pool: &SqlitePool,
    run: RunId,
    actor: Option<&Actor>,
) -> Result<CancelOutcome> {
    let now = now();
    let mut tx = begin(pool).await?;
    let row = sqlx::query("SELECT tenant_id, status FROM sync_runs WHERE id = $1")
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
                    finished_at = $2, lease_expires_at = NULL,
                    error = 'cancelled before it ran to its end'
                 WHERE id = $1",
            )
            .bind(run)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            CancelOutcome::Cancelled
        }
        RunStatus::Running => {
            sqlx::query(
                "UPDATE sync_runs SET cancel_requested_at = coalesce(cancel_requested_at, $2)
                 WHERE id = $1",
            )
            .bind(run)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            CancelOutcome::Requested
        }
        other => return Ok(CancelOutcome::AlreadyFinished(other)),
    };
    if let Some(actor) = actor {
        audit::record_sqlite(
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

pub(super) async fn cancel_requested(pool: &SqlitePool, runs: &[RunId]) -> Result<Vec<RunId>> {
    // Few runs per worker; one small query each keeps the SQL static.
    let mut out = Vec::new();
    for run in runs {
        let hit = sqlx::query(
            "SELECT 1 FROM sync_runs WHERE id = $1 AND status = 'running'
               AND cancel_requested_at IS NOT NULL",
        )
        .bind(run)
        .fetch_optional(pool)
        .await?;
        if hit.is_some() {
            out.push(*run);
        }
    }
    Ok(out)
}
