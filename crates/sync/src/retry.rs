//! `adsync dead-letters retry`: another try for what failed, outside any run.

use adsync_client::AdClient;
use adsync_domain::{Campaign, CampaignId};
use adsync_store::{Stage, Store};
use chrono::Utc;

use crate::SyncError;

/// What `adsync dead-letters retry` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetryOutcome {
    /// Dead letters resolved now.
    pub resolved: u64,
    /// Dead letters that failed again.
    pub still_failing: u64,
    /// Validation dead letters whose payload is valid now: the next sync stores them.
    pub now_valid: u64,
    /// Listing dead letters: only a new sync can list the page again.
    pub need_a_sync: u64,
}

/// Retries a tenant's unresolved dead letters: sync failures are called again (and resolved
/// on success); invalid records are validated again (a record valid now is stored, and its
/// dead letter resolved, by the next sync, which fetches its current version). The runs that
/// failed them are over: their counters do not change.
pub async fn retry_dead_letters(
    client: &AdClient,
    store: &Store,
    tenant: &str,
) -> Result<RetryOutcome, SyncError> {
    let mut outcome = RetryOutcome::default();
    for letter in store.dead_letters(tenant, false).await? {
        let failure = match letter.stage {
            Stage::Sync => match CampaignId::parse(&letter.campaign_id) {
                Ok(id) => match client.sync_campaign(&id).await {
                    Ok(_) => {
                        store.resolve_synced_by_retry(letter.id, Utc::now()).await?;
                        outcome.resolved += 1;
                        None
                    }
                    // Wrong credentials fail every letter alike: say so once.
                    Err(e @ adsync_client::Error::InvalidCredentials { .. }) => {
                        return Err(e.into());
                    }
                    Err(e) => Some(e.to_string()),
                },
                Err(e) => Some(e),
            },
            Stage::Validation => match Campaign::from_json_text(&letter.payload) {
                Ok(_) => {
                    outcome.now_valid += 1;
                    None
                }
                Err(e) => Some(e.reason),
            },
            Stage::Listing => {
                outcome.need_a_sync += 1;
                None
            }
        };
        if let Some(reason) = failure {
            store
                .record_retry_failure(letter.id, &reason, Utc::now())
                .await?;
            outcome.still_failing += 1;
        }
    }
    Ok(outcome)
}
