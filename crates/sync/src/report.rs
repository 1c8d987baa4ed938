//! What a run did, for the summary table and `--summary-json`, and the exit code a scheduler
//! reads.

use std::time::Duration;

use adsync_client::StatsSnapshot;
use adsync_domain::RateLimit;
use adsync_store::{ListingCursor, RunCounters, RunId, RunStatus, StopReason, StoredWarning};
use serde::Serialize;

/// How a run ended, as a scheduler needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every campaign the platform reported is stored and synced.
    Succeeded,
    /// Done, with dead letters or a listing that could not be proven complete.
    Partial,
    /// Stopped by an error a resume will not mend.
    Failed,
    /// Stopped by the user (SIGINT/SIGTERM); resumable.
    Cancelled,
    /// Stopped because the platform kept failing; resumable later.
    PlatformDown,
    /// Stopped because the database failed; resumable later.
    DatabaseDown,
    /// Another process took the run over; this one stopped writing.
    LeaseLost,
}

impl Outcome {
    /// The process exit code: 0 done, 2 partial, 1 failed, 130 stopped by the user, 75
    /// (EX_TEMPFAIL) stopped because the platform or the database is down or another process
    /// holds the run: retry later.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Succeeded => 0,
            Outcome::Partial => 2,
            Outcome::Failed => 1,
            Outcome::Cancelled => 130,
            Outcome::PlatformDown | Outcome::DatabaseDown | Outcome::LeaseLost => 75,
        }
    }

    /// The outcome of a stored run.
    pub fn of(status: RunStatus, stop: Option<StopReason>) -> Self {
        match (status, stop) {
            (RunStatus::Succeeded, _) => Outcome::Succeeded,
            (RunStatus::Partial, _) => Outcome::Partial,
            (RunStatus::Failed, _) => Outcome::Failed,
            (_, Some(StopReason::PlatformDown)) => Outcome::PlatformDown,
            (_, Some(StopReason::DatabaseDown)) => Outcome::DatabaseDown,
            (_, Some(StopReason::LeaseLost)) => Outcome::LeaseLost,
            (
                RunStatus::Interrupted
                | RunStatus::Running
                | RunStatus::Queued
                | RunStatus::Cancelled,
                _,
            ) => Outcome::Cancelled,
        }
    }
}

/// The outcome of one `SyncEngine::run`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run.
    pub run_id: RunId,
    /// Tenant.
    pub tenant: String,
    /// How it ended, as stored.
    pub status: RunStatus,
    /// How it ended, for a scheduler (and the exit code).
    pub outcome: Outcome,
    /// Whether this process continued an interrupted run.
    pub resumed: bool,
    /// The run's counters as stored (all processes that worked on it).
    pub counters: RunCounters,
    /// Where the listing ended: passes, what the platform reported, completeness, drift.
    pub listing: ListingCursor,
    /// What the platform did that adsync noticed.
    pub warnings: Vec<StoredWarning>,
    /// What this process's client did.
    pub client: StatsSnapshot,
    /// Wall time of this process's part.
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// Time processes worked on the run, summed over resumes.
    #[serde(serialize_with = "secs")]
    pub active: Duration,
    /// Of which, time during which the rate limiter held requests back.
    #[serde(serialize_with = "secs")]
    pub throttled: Duration,
    /// The least time the platform's rate limit allows for the campaigns it reported.
    #[serde(serialize_with = "opt_secs")]
    pub floor: Option<Duration>,
    /// `active / floor`: 1.0 is as fast as the platform allows.
    pub floor_ratio: Option<f64>,
    /// The platform's limit as its 429s taught it, when lower than the configured one (the
    /// floor is then at this limit).
    pub learned_limit: Option<String>,
    /// Why the run failed, stopped or is partial.
    pub error: Option<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl RunReport {
    /// The process exit code (see [`Outcome::exit_code`]).
    pub fn exit_code(&self) -> u8 {
        self.outcome.exit_code()
    }
}

/// The floor of a run from what the platform reported: `R = ceil(N / P) + N` rate-limited
/// calls (one listing call per page, one sync call per campaign) for the `N` campaigns of
/// its `total` (else the campaigns stored) in pages of the size it used, the last of which
/// takes `last_call`. Not the calls adsync happened to make: a platform that lies about
/// `has_more` must not make a slow run look fast.
pub fn floor_for(
    limit: RateLimit,
    cursor: &ListingCursor,
    page_size: u64,
    stored: i64,
    last_call: Duration,
) -> Option<Duration> {
    let campaigns = cursor
        .reported_total
        .or_else(|| u64::try_from(stored).ok().filter(|n| *n > 0))?;
    let per_page = cursor.page_limit.unwrap_or(page_size).max(1);
    let calls = campaigns.div_ceil(per_page) + campaigns;
    Some(limit.floor(calls, last_call))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_comes_from_the_reported_total_not_from_the_calls_made() {
        let cursor = ListingCursor {
            reported_total: Some(100),
            page_limit: Some(100),
            ..ListingCursor::default()
        };
        let floor = floor_for(
            RateLimit::PLATFORM_DEFAULT,
            &cursor,
            100,
            1000,
            Duration::from_secs(2),
        );
        // 101 calls: ten windows after the first ten, then the last call's 2 s.
        assert_eq!(floor, Some(Duration::from_secs(602)));
    }

    #[test]
    fn exit_codes_tell_retry_later_from_stopped_by_the_user() {
        assert_eq!(Outcome::Succeeded.exit_code(), 0);
        assert_eq!(Outcome::Partial.exit_code(), 2);
        assert_eq!(Outcome::Failed.exit_code(), 1);
        assert_eq!(Outcome::Cancelled.exit_code(), 130);
        assert_eq!(Outcome::PlatformDown.exit_code(), 75);
        assert_eq!(Outcome::DatabaseDown.exit_code(), 75);
        assert_eq!(
            Outcome::of(RunStatus::Interrupted, Some(StopReason::PlatformDown)),
            Outcome::PlatformDown
        );
    }
}
