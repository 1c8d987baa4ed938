//! Exit codes, documented in the README: 0 done; 2 partial (dead letters, or a listing that
//! could not be proven complete); 1 failed or bad input; 130 stopped by the user (SIGINT or
//! SIGTERM); 75 (EX_TEMPFAIL) stopped because the platform or the database is down, or
//! another process holds the run: retry later.
//!
//! An error that means something other than 1 travels as a [`Failure`], which `main` finds by
//! downcasting; every other error exits 1.

use std::fmt;

/// Failed, or bad input.
pub const FAILED: u8 = 1;
/// Retry later: the platform or the database is down, or the tenant is busy.
pub const TEMPFAIL: u8 = 75;

/// An error and the exit code it means.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// What kind of failure, for `--summary-json`: `failed`, `platform_down`,
    /// `database_down` or `busy`.
    pub outcome: &'static str,
    /// One line: what failed and what to do.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    /// A database error: 75 when it looks passing (unreachable, timed out), 1 otherwise.
    pub fn store(e: &adsync_store::StoreError, hint: &str) -> Self {
        let down = e.is_transient();
        Self {
            code: if down { TEMPFAIL } else { FAILED },
            outcome: if down { "database_down" } else { "failed" },
            message: format!("{e}{hint}"),
        }
    }

    /// A run that could not start.
    pub fn sync(e: &adsync_sync::SyncError, message: String) -> Self {
        use adsync_sync::SyncError;
        let code = e.exit_code();
        let outcome = match e {
            _ if code != TEMPFAIL => "failed",
            SyncError::Platform(_) => "platform_down",
            SyncError::Store(_) => "database_down",
            SyncError::Busy { .. } | SyncError::OtherPlatform { .. } => "busy",
        };
        Self {
            code,
            outcome,
            message,
        }
    }
}

/// Bad configuration: exit 1 with this message.
pub fn config_error(message: impl Into<String>) -> Failure {
    Failure {
        code: FAILED,
        outcome: "failed",
        message: message.into(),
    }
}

/// The exit code an error means.
pub fn code_of(err: &anyhow::Error) -> u8 {
    err.downcast_ref::<Failure>().map_or(FAILED, |f| f.code)
}

/// The outcome an error means, for `--summary-json`.
pub fn outcome_of(err: &anyhow::Error) -> &'static str {
    err.downcast_ref::<Failure>()
        .map_or("failed", |f| f.outcome)
}
