//! One page of a listing to store, and campaigns as read back.

use std::collections::HashMap;

use adsync_domain::Campaign;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{ListingCursor, NewDeadLetter, RunId, RunWarning};

/// One page to store, with the listing checkpoint it moves to.
#[derive(Debug, Clone)]
pub struct PageBatch<'a> {
    /// The listing state after this page (`cursor.next_page` is the next page to fetch). When
    /// it says `done && complete`, the same transaction marks every campaign of the tenant
    /// that this pass did not list as removed.
    pub cursor: ListingCursor,
    /// Every id the page listed, valid records or not (what the platform still has).
    pub listed_ids: &'a [&'a str],
    /// Records the page held.
    pub seen: u64,
    /// Its valid campaigns.
    pub campaigns: &'a [Campaign],
    /// Its invalid records (or the page itself, when it could not be used).
    pub dead_letters: &'a [NewDeadLetter],
    /// What was odd about it.
    pub warnings: &'a [RunWarning],
    /// Whether this is a page at all (`false`: only the cursor, letters and warnings move).
    pub counts_as_page: bool,
    /// When the page was received.
    pub observed_at: DateTime<Utc>,
}

impl<'a> PageBatch<'a> {
    /// A batch that only moves the cursor (and records letters and warnings): the end of a
    /// listing that produced no page to store.
    pub fn cursor_only(
        cursor: ListingCursor,
        dead_letters: &'a [NewDeadLetter],
        warnings: &'a [RunWarning],
        observed_at: DateTime<Utc>,
    ) -> Self {
        Self {
            cursor,
            listed_ids: &[],
            seen: 0,
            campaigns: &[],
            dead_letters,
            warnings,
            counts_as_page: false,
            observed_at,
        }
    }

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
        let mut listed: Vec<&'a str> = self.listed_ids.to_vec();
        listed.sort_unstable();
        listed.dedup();
        // One row per kind (an upsert may not touch a row twice): the first message, a count.
        let mut warnings: Vec<(String, String, i64)> = Vec::new();
        for w in self.warnings {
            match warnings.iter_mut().find(|(k, _, _)| *k == w.kind) {
                Some(entry) => entry.2 += 1,
                None => warnings.push((w.kind.clone(), w.message.clone(), 1)),
            }
        }
        DedupedBatch {
            batch: self.clone(),
            campaigns,
            listed,
            warnings,
        }
    }
}

pub(crate) struct DedupedBatch<'a> {
    pub batch: PageBatch<'a>,
    pub campaigns: Vec<&'a Campaign>,
    /// Listed ids, sorted and distinct.
    pub listed: Vec<&'a str>,
    /// Warnings by kind: (kind, first message, occurrences).
    pub warnings: Vec<(String, String, i64)>,
}

/// A stored campaign, as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredCampaign {
    /// Id.
    pub id: String,
    /// Name, byte for byte.
    pub name: String,
    /// Status, verbatim.
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
    /// The record as last received (JSON text; on PostgreSQL as JSONB renders it).
    pub raw: Option<String>,
    /// Since when the platform no longer lists it.
    pub removed_at: Option<DateTime<Utc>>,
}

/// What storing a page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageOutcome {
    /// Campaigns this run had not stored before.
    pub newly_stored: u64,
    /// Dead letters recorded.
    pub dead_lettered: u64,
    /// Campaigns marked removed (the page completed the listing).
    pub removed: u64,
    /// Campaigns whose `removed_at` was cleared (they came back).
    pub returned: u64,
}
