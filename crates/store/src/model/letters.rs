//! Dead letters: what could not be listed, stored or synced, with why.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::RunId;

/// Which step a dead letter failed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// A page could not be used (well-formed JSON that does not match the contract, or too
    /// large); `campaign_id` is `page P`.
    Listing,
    /// The record is not a valid campaign.
    Validation,
    /// The sync call failed for good.
    Sync,
}

impl Stage {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Listing => "listing",
            Stage::Validation => "validation",
            Stage::Sync => "sync",
        }
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "listing" => Ok(Stage::Listing),
            "validation" => Ok(Stage::Validation),
            "sync" => Ok(Stage::Sync),
            other => Err(format!("unknown dead-letter stage {other:?}")),
        }
    }
}

/// How a dead letter was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// A later sync call succeeded.
    Synced,
    /// A later version of the record was valid and stored.
    Stored,
    /// A later listing was complete (a listing dead letter).
    Listed,
    /// The platform no longer lists the campaign.
    Removed,
    /// Someone dismissed it (`adsync dead-letters dismiss`).
    Dismissed,
}

impl Resolution {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Synced => "synced",
            Resolution::Stored => "stored",
            Resolution::Listed => "listed",
            Resolution::Removed => "removed",
            Resolution::Dismissed => "dismissed",
        }
    }
}

impl FromStr for Resolution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "synced" => Resolution::Synced,
            "stored" => Resolution::Stored,
            "listed" => Resolution::Listed,
            "removed" => Resolution::Removed,
            "dismissed" => Resolution::Dismissed,
            other => return Err(format!("unknown resolution {other:?}")),
        })
    }
}

/// A dead letter to record.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    /// The campaign id, `page P #I` for a record without a usable id, `page P` for a page.
    pub campaign_id: String,
    /// Which step failed.
    pub stage: Stage,
    /// The raw record (or page) as JSON text.
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
    /// How, when resolved.
    pub resolution: Option<Resolution>,
}
