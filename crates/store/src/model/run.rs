//! A sync run as stored in `sync_runs`: its status, counters, listing checkpoint and lease.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::RunId;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Waiting for a worker (the service's job queue).
    Queued,
    /// In progress (or its process died; then it is resumable once its lease expires).
    Running,
    /// Every campaign the platform reported stored and synced.
    Succeeded,
    /// Finished, but with dead letters or a listing that could not be proven complete.
    Partial,
    /// Stopped by an error that a resume will not mend.
    Failed,
    /// Stopped by a signal, an outage or a lost lease; `adsync sync` resumes it.
    Interrupted,
    /// Cancelled at someone's request (the service's API): over for good.
    Cancelled,
}

impl RunStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the run is over for good (not running, not resumable).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Partial | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "partial" => RunStatus::Partial,
            "failed" => RunStatus::Failed,
            "interrupted" => RunStatus::Interrupted,
            "cancelled" => RunStatus::Cancelled,
            other => return Err(format!("unknown run status {other:?}")),
        })
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an interrupted run stopped: what a scheduler needs to tell "retry later" from "someone
/// stopped it".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// SIGINT / SIGTERM, or a cancellation by the caller.
    Cancelled,
    /// The platform kept failing (circuit breaker) or could not be reached.
    PlatformDown,
    /// The database failed mid-run.
    DatabaseDown,
    /// Another process took the run over (this one had lost its lease).
    LeaseLost,
}

impl StopReason {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Cancelled => "cancelled",
            StopReason::PlatformDown => "platform_down",
            StopReason::DatabaseDown => "database_down",
            StopReason::LeaseLost => "lease_lost",
        }
    }
}

impl FromStr for StopReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "cancelled" => StopReason::Cancelled,
            "platform_down" => StopReason::PlatformDown,
            "database_down" => StopReason::DatabaseDown,
            "lease_lost" => StopReason::LeaseLost,
            other => return Err(format!("unknown stop reason {other:?}")),
        })
    }
}

/// The counters of a run, as stored in `sync_runs`. `campaigns_stored`, `campaigns_synced`,
/// `dead_lettered` and `warnings` are derived from rows (campaigns stamped with the run,
/// unresolved dead letters of the run, its warnings) while the run is open, and frozen when
/// it ends, so they are right across resumes and retries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RunCounters {
    /// Pages stored (every pass).
    pub pages: i64,
    /// Records the platform sent (every pass, duplicates included).
    pub campaigns_seen: i64,
    /// Distinct valid campaigns stored by this run.
    pub campaigns_stored: i64,
    /// Campaigns whose sync call succeeded in this run.
    pub campaigns_synced: i64,
    /// Unresolved dead letters of this run.
    pub dead_lettered: i64,
    /// Campaigns marked `removed_at` by this run (absent from its complete listing).
    pub campaigns_removed: i64,
    /// Campaigns that came back (their `removed_at` cleared) in this run.
    pub campaigns_returned: i64,
    /// Warnings: inconsistent pages, unknown statuses, drift (see `run_warnings`).
    pub warnings: i64,
    /// HTTP requests.
    pub requests: i64,
    /// Retries after transient failures.
    pub retries: i64,
    /// 429s received.
    pub rate_limited: i64,
    /// Tokens obtained.
    pub token_refreshes: i64,
    /// Seconds requests spent waiting on the rate limiter, summed over requests (a metric,
    /// not a duration: see `throttled_seconds`).
    pub limiter_wait_seconds: f64,
}

impl RunCounters {
    /// The counter columns of a `sync_runs` row, on either database (same names, `BIGINT` /
    /// `INTEGER` and `DOUBLE PRECISION` / `REAL` both decode as `i64` and `f64`).
    pub(crate) fn from_row<'r, R>(row: &'r R) -> Result<Self, sqlx::Error>
    where
        R: sqlx::Row,
        &'r str: sqlx::ColumnIndex<R>,
        i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(Self {
            pages: row.try_get("pages")?,
            campaigns_seen: row.try_get("campaigns_seen")?,
            campaigns_stored: row.try_get("campaigns_stored")?,
            campaigns_synced: row.try_get("campaigns_synced")?,
            dead_lettered: row.try_get("dead_lettered")?,
            campaigns_removed: row.try_get("campaigns_removed")?,
            campaigns_returned: row.try_get("campaigns_returned")?,
            warnings: row.try_get("warnings")?,
            requests: row.try_get("requests")?,
            retries: row.try_get("retries")?,
            rate_limited: row.try_get("rate_limited")?,
            token_refreshes: row.try_get("token_refreshes")?,
            limiter_wait_seconds: row.try_get("limiter_wait_seconds")?,
        })
    }
}

/// Where the listing of a run stands: the checkpoint the pager resumes from, written in the
/// same transaction as each page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ListingCursor {
    /// The pass (1-based). A listing the platform changed under it is listed again.
    pub pass: u32,
    /// The next page of the pass to fetch (1-based).
    pub next_page: u64,
    /// The platform's latest `total`.
    pub reported_total: Option<u64>,
    /// The page size the platform really used (it may cap what was asked for).
    pub page_limit: Option<u64>,
    /// `total` on the first page of this pass.
    pub pass_total: Option<u64>,
    /// Whether `total` moved during this pass.
    pub pass_drift: bool,
    /// Times the listing saw the platform's data move (a `total` that changed, or fewer
    /// distinct campaigns than reported), over the whole run.
    pub drift_events: u32,
    /// The listing is over (complete or not).
    pub done: bool,
    /// The last pass saw every campaign the platform reported, with nothing moving: only
    /// then are absent campaigns marked removed.
    pub complete: bool,
}

impl Default for ListingCursor {
    fn default() -> Self {
        Self {
            pass: 1,
            next_page: 1,
            reported_total: None,
            page_limit: None,
            pass_total: None,
            pass_drift: false,
            drift_events: 0,
            done: false,
            complete: false,
        }
    }
}

/// Something the platform did that adsync noticed and worked around; recorded on the run
/// once per kind (with a count), logged once at warn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunWarning {
    /// A stable label: `has_more_ignores_total`, `unknown_status`, `total_changed`, ...
    pub kind: String,
    /// What happened, in words (the first occurrence's).
    pub message: String,
}

/// A warning as stored, with how often it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredWarning {
    /// The label.
    pub kind: String,
    /// The first occurrence's text.
    pub message: String,
    /// How many times.
    pub occurrences: i64,
    /// When first seen.
    pub first_seen_at: DateTime<Utc>,
}

/// A row of `sync_runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Run id.
    pub id: RunId,
    /// Tenant.
    pub tenant_id: String,
    /// State.
    pub status: RunStatus,
    /// Why an interrupted run stopped.
    pub stop_reason: Option<StopReason>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Where the data came from: the platform's base URL, or `simulator`.
    pub platform: Option<String>,
    /// Page size the run asks for (kept across resumes: page numbers depend on it).
    pub page_size: u64,
    /// The listing checkpoint.
    pub cursor: ListingCursor,
    /// Times the run was taken over by a new process (resumes).
    pub resumes: i64,
    /// The process that holds (or last held) the run's lease (`host:pid`).
    pub owner: Option<String>,
    /// When the owner last renewed its lease.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// The fencing epoch: grows at every take-over.
    pub lease_epoch: i64,
    /// When the lease runs out unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Counters.
    pub counters: RunCounters,
    /// Seconds processes spent working on the run, summed over resumes.
    pub active_seconds: f64,
    /// Of which, seconds during which the rate limiter held requests back.
    pub throttled_seconds: f64,
    /// The least time the platform's rate limit allows for what it reported.
    pub floor_seconds: Option<f64>,
    /// Why it failed or stopped.
    pub error: Option<String>,
    /// Who asked for it: `cli`, `schedule`, `api:<key id>`, `retry` (`None` before the
    /// service existed).
    pub requested_by: Option<String>,
    /// When it was last queued (service runs).
    pub queued_at: Option<DateTime<Utc>>,
    /// Claims by workers: the first and every take-over after a lease ran out.
    pub attempts: i64,
    /// When someone asked to cancel it while it ran.
    pub cancel_requested_at: Option<DateTime<Utc>>,
}

impl RunRecord {
    /// Nothing of the run is stored yet: no page (only a page's store moves the cursor and
    /// counts what it saw), so no campaign stamped with it and no listing set. A run claimed
    /// in this state has no checkpoint to read back.
    pub fn nothing_stored(&self) -> bool {
        self.cursor == ListingCursor::default()
            && self.counters.pages == 0
            && self.counters.campaigns_seen == 0
    }

    /// `active_seconds / floor_seconds`: 1.0 is as fast as the platform allows.
    pub fn floor_ratio(&self) -> Option<f64> {
        self.floor_seconds
            .filter(|f| *f > 0.0)
            .map(|f| self.active_seconds / f)
    }
}

/// The right to write a run: granted by [`crate::Store::create_run`] or
/// [`crate::Store::take_over`], renewed by [`crate::Store::renew`]. Every write of the run
/// carries it and is refused ([`crate::StoreError::LeaseLost`]) once another process has taken
/// the run over, because the epoch then no longer matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The run.
    pub run: RunId,
    /// Its tenant.
    pub tenant: String,
    /// The fencing epoch this holder was granted.
    pub epoch: i64,
    /// Who holds it (`host:pid`).
    pub owner: String,
}

/// How a run ends, as the engine saw it; the store decides the final status from this and
/// from the rows (dead letters, listing completeness).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnding {
    /// The work ran to its end: `succeeded`, or `partial` when dead letters remain or the
    /// listing could not be proven complete.
    Finished,
    /// Stopped early and resumable: `interrupted` with this reason.
    Stopped(StopReason),
    /// Stopped by an error a resume will not mend: `failed`.
    Failed,
}

/// What the engine hands the store when a run ends (this process's share).
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// How it ended.
    pub ending: RunEnding,
    /// Why, for `failed` / `interrupted` / `partial` runs.
    pub error: Option<String>,
    /// This process's client counters (only the request counters are read).
    pub client: RunCounters,
    /// Seconds this process worked on the run.
    pub active_seconds: f64,
    /// Of which, seconds the rate limiter held requests back.
    pub throttled_seconds: f64,
    /// The floor for the whole run, from what the platform reported.
    pub floor_seconds: Option<f64>,
    /// When.
    pub at: DateTime<Utc>,
}
