//! The producer of a run: pages from the checkpoint on, checked by the [`Pager`], validated,
//! and stored one transaction each with the listing cursor; the ids new to the run go down a
//! bounded channel to the sync calls as soon as their page is validated, while it is stored
//! (see [`crate::handoff`]).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, atomic::Ordering},
};

use adsync_domain::{Campaign, CampaignId, wire::CampaignPage};
use adsync_store::{ListingCursor, NewDeadLetter, PageBatch, RunWarning, Stage};
use chrono::Utc;
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    Pager,
    engine::{RunCtx, Stop, SyncEngine},
};

/// Logs each kind of warning once per process at warn level; every occurrence is recorded
/// on the run.
#[derive(Debug, Default)]
pub(crate) struct WarningLog {
    logged: Mutex<HashSet<String>>,
}

impl WarningLog {
    pub(crate) fn note(&self, warnings: &[RunWarning]) {
        let mut logged = self.logged.lock().expect("warning log lock");
        for w in warnings {
            if logged.insert(w.kind.clone()) {
                tracing::warn!(kind = %w.kind, "{}", w.message);
            } else {
                tracing::debug!(kind = %w.kind, "{}", w.message);
            }
        }
    }
}

impl SyncEngine {
    /// Lists pages until the pager says the listing is over, sending new valid ids to `tx`.
    pub(crate) async fn list_pages(
        &self,
        ctx: &RunCtx,
        mut pager: Pager,
        tx: mpsc::Sender<(String, u64)>,
    ) -> Result<(), Stop> {
        while let Some((page, limit)) = pager.next_request() {
            self.admitted(&ctx.stop).await?;
            if !ctx.watch.wait_held(&ctx.stop).await {
                return Err(Stop::Cancelled);
            }
            // A page being fetched and read is some hundred kilobytes: with many runs in one
            // process, only so many are fetched at once (a checked page waiting for its store
            // keeps its records: at most one per run).
            let _permit = permit(self.config.page_permits.as_ref(), &ctx.stop).await?;
            let fetched = tokio::select! {
                biased;
                // Abandoning a page fetch loses nothing: the page is not stored yet.
                _ = ctx.stop.cancelled() => return Err(Stop::Cancelled),
                r = adsync_client::with_send_gate(
                    ctx.watch.clone(),
                    self.client.list_campaigns(page, limit),
                ) => r,
            };
            let (page_data, ids) = match fetched {
                Ok(data) => {
                    self.breaker.record_success();
                    self.prepare_page(&mut pager, page, &data)
                }
                Err(e) if e.is_transient() => {
                    self.breaker.record_failure();
                    tracing::warn!(page, error = %e, "page failed after retries; trying again");
                    continue;
                }
                Err(
                    e @ (adsync_client::Error::Contract { .. }
                    | adsync_client::Error::TooLarge { .. }),
                ) => {
                    // The platform answered, with a page that cannot be used: a dead letter,
                    // not an outage.
                    self.breaker.record_success();
                    self.unusable_page(ctx, &mut pager, page, e.to_string())
                        .await?;
                    continue;
                }
                Err(e) => return Err(Stop::Fatal(e)),
            };
            // The raw page is gone (the campaigns keep their records): the next fetch may go.
            drop(_permit);
            // The sync calls start now; the page is stored meanwhile (see `handoff`).
            let handed = ctx.handoff.handed();
            self.progress
                .pending
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
            let hand_out = async {
                for id in ids {
                    if tx.send((id, handed)).await.is_err() {
                        // The consumers are gone: the run is stopping.
                        return Err(Stop::Cancelled);
                    }
                }
                Ok(())
            };
            // The store says so as soon as it commits, not once every id is handed out: a
            // sync call of this page waiting for its store (a 404's mark) must not depend on
            // the hand-out, which waits for room in the channel (today the channel holds two
            // pages, so it always gets it; this does not rely on that). Both to the end: a
            // store abandoned because the sync calls stopped would lose the checkpoint of
            // what they did.
            let store = async {
                match self.store_prepared(ctx, page, &page_data).await {
                    Ok(()) => {
                        ctx.handoff.stored();
                        Ok(())
                    }
                    Err(e) => {
                        // Nothing more will be stored: the writes waiting for this page give
                        // up, and the run stops (the hand-out may be waiting for consumers
                        // that wait for this page).
                        ctx.handoff.close();
                        ctx.stop.cancel();
                        Err(e)
                    }
                }
            };
            let (stored, handed_out) = tokio::join!(store, hand_out);
            stored?;
            handed_out?;
        }
        self.progress.listing_done.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Checks and validates one page (no I/O): what to store, and the ids to sync.
    fn prepare_page(
        &self,
        pager: &mut Pager,
        page: u64,
        data: &CampaignPage,
    ) -> (PreparedPage, Vec<String>) {
        let listed: Vec<Option<String>> = data.data.iter().map(|r| record_id(r)).collect();
        let listed_refs: Vec<Option<&str>> = listed.iter().map(Option::as_deref).collect();
        let verdict = pager.on_page(&data.pagination, &listed_refs);
        let records = &data.data[..verdict.keep];
        let (campaigns, dead_letters) = validate_page(page, records);
        let mut warnings = verdict.warnings;
        for c in campaigns.iter().filter(|c| !c.status.is_known()) {
            warnings.push(RunWarning {
                kind: "unknown_status".into(),
                message: format!(
                    "campaign {} has status {:?}, which adsync does not know; stored verbatim",
                    c.id,
                    c.status.as_str()
                ),
            });
        }
        self.warnings.note(&warnings);
        for d in &dead_letters {
            tracing::warn!(campaign = %d.campaign_id, reason = %d.reason, "invalid record dead-lettered");
        }
        let new_ids: HashSet<&str> = listed_refs[..verdict.keep]
            .iter()
            .zip(&verdict.new_to_run)
            .filter_map(|(id, new)| id.filter(|_| *new))
            .collect();
        // Each campaign is synced once per run, however many passes list it.
        let to_sync = campaigns
            .iter()
            .filter(|c| new_ids.contains(c.id.as_str()))
            .map(|c| c.id.as_str().to_owned())
            .collect();
        let listed_ids = listed.into_iter().take(verdict.keep).flatten().collect();
        let prepared = PreparedPage {
            cursor: verdict.cursor,
            listed_ids,
            seen: data.data.len() as u64,
            has_more: data.pagination.has_more,
            campaigns,
            dead_letters,
            warnings,
            observed_at: Utc::now(),
        };
        (prepared, to_sync)
    }

    /// Stores a prepared page with the listing cursor, in one transaction (at most
    /// `store_permits` at once in a worker).
    async fn store_prepared(
        &self,
        ctx: &RunCtx,
        page: u64,
        prepared: &PreparedPage,
    ) -> Result<(), Stop> {
        let listed_ids: Vec<&str> = prepared.listed_ids.iter().map(String::as_str).collect();
        let batch = PageBatch {
            cursor: prepared.cursor,
            listed_ids: &listed_ids,
            seen: prepared.seen,
            campaigns: &prepared.campaigns,
            dead_letters: &prepared.dead_letters,
            warnings: &prepared.warnings,
            counts_as_page: true,
            observed_at: prepared.observed_at,
        };
        // A stopping run still stores a page it fetched (its sync calls may have run): only
        // the end of the grace period gives up the wait for a turn.
        let _permit = permit(self.config.store_permits.as_ref(), &ctx.hard).await?;
        let outcome = self.store.store_page(&ctx.lease, &batch).await?;
        let p = &self.progress;
        p.pages.fetch_add(1, Ordering::Relaxed);
        p.seen.fetch_add(prepared.seen, Ordering::Relaxed);
        p.stored.fetch_add(outcome.newly_stored, Ordering::Relaxed);
        p.dead_lettered
            .fetch_add(outcome.dead_lettered, Ordering::Relaxed);
        p.set_cursor(&prepared.cursor);
        metrics::counter!("adsync_sync_pages_total").increment(1);
        metrics::counter!("adsync_sync_campaigns_stored_total").increment(outcome.newly_stored);
        tracing::info!(
            page,
            pass = prepared.cursor.pass,
            stored = prepared.campaigns.len(),
            dead_lettered = prepared.dead_letters.len(),
            removed = outcome.removed,
            returned = outcome.returned,
            has_more = prepared.has_more,
            listing_done = prepared.cursor.done,
            "page stored"
        );
        Ok(())
    }

    /// A page that parsed but does not match the contract (or is too large): dead-lettered
    /// with the reason, and the listing moves on without it.
    async fn unusable_page(
        &self,
        ctx: &RunCtx,
        pager: &mut Pager,
        page: u64,
        reason: String,
    ) -> Result<(), Stop> {
        tracing::warn!(page, %reason, "page dead-lettered");
        let verdict = pager.on_unusable_page();
        self.warnings.note(&verdict.warnings);
        let letter = NewDeadLetter {
            campaign_id: format!("page {page}"),
            stage: Stage::Listing,
            payload: serde_json::json!({ "page": page }).to_string(),
            reason,
        };
        let letters = [letter];
        let batch = PageBatch::cursor_only(verdict.cursor, &letters, &verdict.warnings, Utc::now());
        self.store.store_page(&ctx.lease, &batch).await?;
        self.progress.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.progress.set_cursor(&verdict.cursor);
        Ok(())
    }
}

/// A turn of `permits` (none to wait for without them), unless `until` is cancelled first.
async fn permit(
    permits: Option<&Arc<Semaphore>>,
    until: &CancellationToken,
) -> Result<Option<OwnedSemaphorePermit>, Stop> {
    let Some(permits) = permits else {
        return Ok(None);
    };
    tokio::select! {
        biased;
        _ = until.cancelled() => Err(Stop::Cancelled),
        p = permits.clone().acquire_owned() => Ok(p.ok()),
    }
}

/// A page checked and validated, not yet stored.
struct PreparedPage {
    cursor: ListingCursor,
    /// Every id the page listed, valid records or not.
    listed_ids: Vec<String>,
    seen: u64,
    has_more: bool,
    campaigns: Vec<Campaign>,
    dead_letters: Vec<NewDeadLetter>,
    warnings: Vec<RunWarning>,
    observed_at: chrono::DateTime<Utc>,
}

/// A record's id, when it has one that is usable as an id.
fn record_id(raw: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<serde_json::Value>,
    }
    let id = match serde_json::from_str::<IdOnly>(raw.get()) {
        Ok(record) => record.id?,
        // Not an object, or an object with two "id" keys: read as the record is validated
        // (`Campaign::from_json_text` goes through a `Value`, which keeps the last key), so a
        // stored campaign is always listed under the id it is stored with.
        Err(_) => serde_json::from_str::<serde_json::Value>(raw.get())
            .ok()?
            .get("id")?
            .clone(),
    };
    let id = id.as_str()?;
    CampaignId::parse(id).ok().map(|_| id.to_owned())
}

/// Splits a page into valid campaigns and dead letters. A record without a usable id is keyed
/// by its position (`page 3 #7`).
pub(crate) fn validate_page(
    page: u64,
    records: &[Box<RawValue>],
) -> (Vec<Campaign>, Vec<NewDeadLetter>) {
    let mut valid = Vec::with_capacity(records.len());
    let mut dead = Vec::new();
    for (i, raw) in records.iter().enumerate() {
        match Campaign::from_json_text(raw.get()) {
            Ok(c) => valid.push(c),
            Err(invalid) => dead.push(NewDeadLetter {
                campaign_id: invalid
                    .id
                    .filter(|id| CampaignId::parse(id).is_ok())
                    .unwrap_or_else(|| format!("page {page} #{i}")),
                stage: Stage::Validation,
                payload: raw.get().to_owned(),
                reason: invalid.reason,
            }),
        }
    }
    (valid, dead)
}

#[cfg(test)]
mod tests {
    use adsync_domain::Campaign;
    use serde_json::value::RawValue;

    use super::record_id;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn a_record_is_listed_under_the_id_it_is_stored_with() {
        let twice = r#"{"id":"c1","name":"Twice","status":"active","budget":10.5,"impressions":1,"clicks":0,"conversions":0,"created_at":"2024-12-11T10:30:00Z","id":"c2"}"#;
        let stored = Campaign::from_json_text(twice).unwrap();

        assert_eq!(record_id(&raw(twice)).as_deref(), Some(stored.id.as_str()));
        assert_eq!(
            record_id(&raw(r#"{"id":"c1","x":1}"#)).as_deref(),
            Some("c1")
        );
        assert_eq!(record_id(&raw(r#"{"id":7}"#)), None);
        assert_eq!(record_id(&raw("[1,2]")), None);
    }
}
