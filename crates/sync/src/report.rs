//! What a run did, for the summary table and `--summary-json`.

use std::time::Duration;

use adsync_client::StatsSnapshot;
use adsync_store::{RunCounters, RunId, RunStatus};
use serde::Serialize;

/// The outcome of one `SyncEngine::run`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run.
    pub run_id: RunId,
    /// Tenant.
    pub tenant: String,
    /// How it ended.
    pub status: RunStatus,
    /// Whether this process continued an interrupted run.
    pub resumed: bool,
    /// The run's counters as stored (all processes that worked on it).
    pub counters: RunCounters,
    /// What this process's client did.
    pub client: StatsSnapshot,
    /// Wall time of this process's part.
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// The least time the rate-limited calls of this process could take.
    #[serde(serialize_with = "secs")]
    pub floor: Duration,
    /// `duration / floor`: 1.0 is as fast as the platform allows.
    pub floor_ratio: f64,
    /// Why the run failed or stopped.
    pub error: Option<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl RunReport {
    /// The process exit code: 0 done, 2 partial (dead letters), 1 failed, 130 interrupted.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            RunStatus::Succeeded => 0,
            RunStatus::Partial => 2,
            RunStatus::Interrupted => 130,
            RunStatus::Failed | RunStatus::Running => 1,
        }
    }
}
