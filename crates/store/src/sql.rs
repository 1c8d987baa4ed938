//! SQL text and row mapping that PostgreSQL and SQLite share: the columns of a run (with the
//! counters derived from rows while it is open) and how a run row becomes a [`RunRecord`].
//! The two backends differ only in how timestamps are decoded, which the caller supplies.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{DeadLetter, ListingCursor, RunCounters, RunEnding, RunRecord, StoreError};

/// Campaigns stored by run `r` (its checkpoint stamp).
const STORED: &str =
    "(SELECT count(*) FROM campaigns c WHERE c.tenant_id = r.tenant_id AND c.last_run_id = r.id)";
/// Campaigns whose sync call succeeded in run `r`.
const SYNCED: &str =
    "(SELECT count(*) FROM campaigns c WHERE c.tenant_id = r.tenant_id AND c.synced_run_id = r.id)";
/// Unresolved dead letters last failed by run `r`.
const DEAD: &str = "(SELECT count(*) FROM dead_letters d WHERE d.run_id = r.id AND NOT d.resolved)";
/// Warnings of run `r`.
const WARNINGS: &str = "(SELECT CAST(coalesce(sum(w.occurrences), 0) AS BIGINT) FROM run_warnings w WHERE w.run_id = r.id)";

/// `SET` assignments that freeze the derived counters of run `r` (the table must be aliased
/// `r`, which both databases allow in `UPDATE sync_runs AS r`).
pub fn freeze_counters() -> String {
    format!(
        "campaigns_stored = {STORED}, campaigns_synced = {SYNCED}, dead_lettered = {DEAD},
         warnings = {WARNINGS}"
    )
}

/// The select list of a run row `r`; counters of a running run are derived live.
pub fn run_columns() -> String {
    let live = |expr: &str, col: &str| {
        format!("CASE WHEN r.status = 'running' THEN {expr} ELSE r.{col} END AS {col}")
    };
    format!(
        "r.id, r.tenant_id, r.status, r.stop_reason, r.started_at, r.finished_at, r.platform,
         r.page_size, r.next_page, CAST(r.listing_pass AS BIGINT) AS listing_pass,
         r.reported_total, r.page_limit, r.pass_total, r.pass_drift, r.listing_done,
         r.listing_complete, CAST(r.drift_events AS BIGINT) AS drift_events,
         CAST(r.resumes AS BIGINT) AS resumes, r.owner, r.heartbeat_at, r.lease_epoch,
         r.lease_expires_at, r.pages, r.campaigns_seen, r.campaigns_removed,
         r.campaigns_returned, r.requests, r.retries, r.rate_limited, r.token_refreshes,
         r.limiter_wait_seconds, r.active_seconds, r.throttled_seconds, r.floor_seconds,
         r.error, r.requested_by, r.queued_at, CAST(r.attempts AS BIGINT) AS attempts,
         r.cancel_requested_at, {}, {}, {}, {}",
        live(STORED, "campaigns_stored"),
        live(SYNCED, "campaigns_synced"),
        live(DEAD, "dead_lettered"),
        live(WARNINGS, "warnings"),
    )
}

/// The latest `limit` runs of each tenant (or of one tenant), newest first per tenant: the
/// overview's run history. `tenant` and `limit` are the backend's placeholders; a NULL tenant
/// means every tenant.
pub fn recent_runs_sql(tenant: &str, limit: &str) -> String {
    format!(
        "SELECT {} FROM (
             SELECT s.*, row_number() OVER (PARTITION BY s.tenant_id ORDER BY s.id DESC) AS rn
             FROM sync_runs s WHERE s.tenant_id IS NOT NULL
               AND ({tenant} IS NULL OR s.tenant_id = {tenant})
         ) r WHERE r.rn <= {limit} ORDER BY r.tenant_id, r.id DESC",
        run_columns()
    )
}

/// Reads a timestamp column of a row; each backend stores them its own way.
pub type TsReader<'r, R> = &'r dyn Fn(&'r R, &str) -> Result<Option<DateTime<Utc>>, StoreError>;

/// A run row (selected with [`run_columns`]) as a [`RunRecord`].
pub fn run_from_row<'r, R>(row: &'r R, ts: TsReader<'r, R>) -> Result<RunRecord, StoreError>
where
    R: Row,
    &'r str: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let opt_u64 = |col: &'r str| -> Result<Option<u64>, StoreError> {
        Ok(row.try_get::<Option<i64>, _>(col)?.map(|v| v.max(0) as u64))
    };
    let status: String = row.try_get("status")?;
    let stop_reason: Option<String> = row.try_get("stop_reason")?;
    let done: bool = row.try_get("listing_done")?;
    let cursor = ListingCursor {
        pass: row
            .try_get::<i64, _>("listing_pass")?
            .clamp(1, u32::MAX.into()) as u32,
        next_page: row.try_get::<i64, _>("next_page")?.max(1) as u64,
        reported_total: opt_u64("reported_total")?,
        page_limit: opt_u64("page_limit")?,
        pass_total: opt_u64("pass_total")?,
        pass_drift: row.try_get("pass_drift")?,
        drift_events: row
            .try_get::<i64, _>("drift_events")?
            .clamp(0, u32::MAX.into()) as u32,
        done,
        complete: row.try_get("listing_complete")?,
    };
    Ok(RunRecord {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        stop_reason: stop_reason
            .map(|s| s.parse())
            .transpose()
            .map_err(StoreError::Corrupt)?,
        started_at: ts(row, "started_at")?
            .ok_or_else(|| StoreError::Corrupt("run without started_at".into()))?,
        finished_at: ts(row, "finished_at")?,
        platform: row.try_get("platform")?,
        page_size: row.try_get::<i64, _>("page_size")?.max(1) as u64,
        cursor,
        resumes: row.try_get("resumes")?,
        owner: row.try_get("owner")?,
        heartbeat_at: ts(row, "heartbeat_at")?,
        lease_epoch: row.try_get("lease_epoch")?,
        lease_expires_at: ts(row, "lease_expires_at")?,
        counters: RunCounters::from_row(row)?,
        active_seconds: row.try_get("active_seconds")?,
        throttled_seconds: row.try_get("throttled_seconds")?,
        floor_seconds: row.try_get("floor_seconds")?,
        error: row.try_get("error")?,
        requested_by: row.try_get("requested_by")?,
        queued_at: ts(row, "queued_at")?,
        attempts: row.try_get("attempts")?,
        cancel_requested_at: ts(row, "cancel_requested_at")?,
    })
}

/// The status column for an ending (`None`: decided from the rows) and the stop reason.
pub fn ending_columns(ending: RunEnding) -> (Option<&'static str>, Option<&'static str>) {
    match ending {
        RunEnding::Finished => (None, None),
        RunEnding::Stopped(reason) => (Some("interrupted"), Some(reason.as_str())),
        RunEnding::Failed => (Some("failed"), None),
    }
}

/// The select list of a dead letter.
pub const LETTER_COLUMNS: &str = "id, tenant_id, run_id, campaign_id, stage, payload, reason,
    CAST(attempts AS BIGINT) AS attempts, first_failed_at, last_failed_at, resolved, resolution";

/// A dead-letter row (selected with [`LETTER_COLUMNS`]) as a [`DeadLetter`].
pub fn letter_from_row<'r, R>(row: &'r R, ts: TsReader<'r, R>) -> Result<DeadLetter, StoreError>
where
    R: Row,
    &'r str: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let stage: String = row.try_get("stage")?;
    let resolution: Option<String> = row.try_get("resolution")?;
    let required = |col: &'r str| {
        ts(row, col)?.ok_or_else(|| StoreError::Corrupt(format!("dead letter without {col}")))
    };
    Ok(DeadLetter {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        run_id: row.try_get("run_id")?,
        campaign_id: row.try_get("campaign_id")?,
        stage: stage.parse().map_err(StoreError::Corrupt)?,
        payload: row.try_get("payload")?,
        reason: row.try_get("reason")?,
        attempts: row.try_get("attempts")?,
        first_failed_at: required("first_failed_at")?,
        last_failed_at: required("last_failed_at")?,
        resolved: row.try_get("resolved")?,
        resolution: resolution
            .map(|s| s.parse())
            .transpose()
            .map_err(StoreError::Corrupt)?,
    })
}
