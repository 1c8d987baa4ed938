//! The rows the store reads and writes.

use std::{collections::HashMap, fmt, str::FromStr};

use adsync_domain::Campaign;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::RunId;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// In progress (or its process died; then it is resumable).
    Running,
    /// Every campaign stored and synced.
    Succeeded,
    /// Finished with dead letters.
    Partial,
    /// Stopped by an error that a resume will not mend.
    Failed,
    /// Stopped by a signal or an outage; `adsync sync` resumes it.
    Interrupted,
}

impl RunStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "partial" => RunStatus::Partial,
            "failed" => RunStatus::Failed,
            "interrupted" => RunStatus::Interrupted,
            other => return Err(format!("unknown run status {other:?}")),
        })
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The counters of a run, as stored in `sync_runs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RunCounters {
    /// Pages stored.
    pub pages: i64,
    /// Records the platform sent.
    pub campaigns_seen: i64,
    /// Distinct valid campaigns stored by this run.
    pub campaigns_stored: i64,
    /// Campaigns whose sync call succeeded in this run.
    pub campaigns_synced: i64,
    /// Dead letters recorded by this run.
    pub dead_lettered: i64,
    /// HTTP requests.
    pub requests: i64,
    /// Retries after transient failures.
    pub retries: i64,
    /// 429s received.
    pub rate_limited: i64,
    /// Tokens obtained.
    pub token_refreshes: i64,
    /// Seconds spent waiting on the rate limiter, all requests summed.
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
            requests: row.try_get("requests")?,
            retries: row.try_get("retries")?,
            rate_limited: row.try_get("rate_limited")?,
            token_refreshes: row.try_get("token_refreshes")?,
            limiter_wait_seconds: row.try_get("limiter_wait_seconds")?,
        })
    }
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
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Page size the run lists with (kept across resumes: page numbers depend on it).
    pub page_size: u64,
    /// First page not yet stored.
    pub next_page: u64,
    /// The listing reached `has_more: false`.
    pub listing_done: bool,
    /// Times the run was resumed.
    pub resumes: i64,
    /// The process working on it (`host:pid`).
    pub owner: Option<String>,
    /// When the owner last said it was alive.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// Counters.
    pub counters: RunCounters,
    /// Why it failed or stopped.
    pub error: Option<String>,
}

/// Which step a dead letter failed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The record is not a valid campaign.
    Validation,
    /// The sync call failed for good.
    Sync,
}

impl Stage {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Validation => "validation",
            Stage::Sync => "sync",
        }
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "validation" => Ok(Stage::Validation),
            "sync" => Ok(Stage::Sync),
            other => Err(format!("unknown dead-letter stage {other:?}")),
        }
    }
}

/// A dead letter to record.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    /// The campaign id, or `page P #I` for a record without a usable id.
    pub campaign_id: String,
    /// Which step failed.
    pub stage: Stage,
    /// The raw record as JSON text.
    pub payload: String,
    /// Why.
    pub reason: String,
}

/// A row of `dead_letters`.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Row id.
    pub id: i64,
    /// Tenant.
    pub tenant_id: String,
    /// Last run that failed it.
    pub run_id: RunId,
    /// Campaign id (or position).
    pub campaign_id: String,
    /// Which step failed.
    pub stage: Stage,
    /// Raw record.
    pub payload: String,
    /// Why.
    pub reason: String,
    /// Failures so far.
    pub attempts: i64,
    /// First failure.
    pub first_failed_at: DateTime<Utc>,
    /// Latest failure.
    pub last_failed_at: DateTime<Utc>,
    /// Resolved since.
    pub resolved: bool,
}

/// One page to store.
#[derive(Debug, Clone)]
pub struct PageBatch<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Run.
    pub run: RunId,
    /// Page number stored.
    pub page: u64,
    /// The next page to fetch; `None` when this page said `has_more: false`.
    pub next_page: Option<u64>,
    /// Records the page held.
    pub seen: u64,
    /// Its valid campaigns.
    pub campaigns: &'a [Campaign],
    /// Its invalid records.
    pub dead_letters: &'a [NewDeadLetter],
    /// When the page was received.
    pub observed_at: DateTime<Utc>,
}

impl<'a> PageBatch<'a> {
    /// The batch with duplicate ids collapsed to their last occurrence (one statement may
    /// not upsert a row twice).
    pub(crate) fn deduplicated(&self) -> DedupedBatch<'a> {
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(self.campaigns.len());
        for (i, c) in self.campaigns.iter().enumerate() {
            last.insert(c.id.as_str(), i);
        }
        let campaigns = self
            .campaigns
            .iter()
            .enumerate()
            .filter(|(i, c)| last[c.id.as_str()] == *i)
            .map(|(_, c)| c)
            .collect();
        DedupedBatch {
            batch: self.clone(),
            campaigns,
        }
    }
}

pub(crate) struct DedupedBatch<'a> {
    pub batch: PageBatch<'a>,
    pub campaigns: Vec<&'a Campaign>,
}

/// A stored campaign, as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredCampaign {
    /// Id.
    pub id: String,
    /// Name, byte for byte.
    pub name: String,
    /// Status.
    pub status: String,
    /// Budget, exact decimal text with two places.
    pub budget: String,
    /// Counter.
    pub impressions: i64,
    /// Counter.
    pub clicks: i64,
    /// Counter.
    pub conversions: i64,
    /// Last successful sync.
    pub synced_at: Option<DateTime<Utc>>,
    /// Last run that stored it.
    pub last_run_id: RunId,
}

/// What storing a page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageOutcome {
    /// Campaigns this run had not stored before.
    pub newly_stored: u64,
    /// Dead letters recorded.
    pub dead_lettered: u64,
}
