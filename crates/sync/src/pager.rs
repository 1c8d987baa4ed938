//! The listing's logic without I/O: which page to ask for next, and when to stop, given what
//! the platform says about each page and what the run has already seen. The platform is not
//! believed blindly:
//!
//! - every page is cross-checked against what it says about itself (`page`, `limit`, `total`,
//!   the number of records) and against the ids already listed; what is inconsistent becomes
//!   a [`RunWarning`];
//! - a pass ends when it has seen as many distinct campaigns as the platform reports (even if
//!   `has_more` still says true: the reference server computes it as `page < 10` whatever the
//!   page size), when a page brings no new id, on an empty page, when `has_more` is false, or
//!   at a page cap; `has_more` is never followed forever;
//! - when the platform's data moved during a pass (its `total` changed) or the pass saw fewer
//!   campaigns than reported, the listing is done again from page 1 (offset pagination skips
//!   a campaign when one before it is removed mid-listing), up to a bounded number of passes;
//! - only a pass that saw everything with nothing moving is *complete*: only then may
//!   campaigns absent from it be marked removed.
//!
//! What counts cannot see: an insert and a removal of the same size between two page
//! fetches leave `total` unchanged, so the pass looks clean; the inserted campaigns are
//! listed by the next run (and the removed ones, seen before they went, are marked then). A
//! second, verifying pass would catch it at the price of doubling the listing calls.
//!
//! The state that must survive a crash is the [`ListingCursor`] (stored with each page) and
//! the ids each pass listed (`Store::listed`); [`Pager::resume`] rebuilds the rest.

use std::collections::HashSet;

use adsync_domain::wire::Pagination;
use adsync_store::{ListingCursor, RunWarning};

/// Bounds on a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagerLimits {
    /// Passes over the listing at most (drift makes a pass start over).
    pub max_passes: u32,
    /// Pages per pass at most when the platform reports no `total` (with a total, the cap is
    /// twice the pages it implies, plus a few).
    pub max_pages: u64,
}

impl Default for PagerLimits {
    fn default() -> Self {
        Self {
            max_passes: 3,
            max_pages: 1000,
        }
    }
}

/// Why a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PassEnd {
    /// Every campaign the platform reports was seen.
    AllSeen,
    /// `has_more` false, or an empty page.
    Exhausted,
    /// A page brought no id this pass had not seen.
    Stuck,
    /// The page cap, or too many unusable pages.
    Capped,
}

/// What one page did to the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageVerdict {
    /// How many of the page's records to use: records at an offset at or past the page's own
    /// `total` cannot exist in an offset-paginated listing (the reference server invents them)
    /// and are ignored.
    pub keep: usize,
    /// For each kept record (in order): whether its id is new to the run, so that a valid
    /// campaign is sent to the sync endpoint once per run however often it is listed.
    pub new_to_run: Vec<bool>,
    /// What was inconsistent about the page (every occurrence).
    pub warnings: Vec<RunWarning>,
    /// The listing state after the page: the checkpoint to store with it.
    pub cursor: ListingCursor,
}

/// The listing state of one run.
#[derive(Debug)]
pub struct Pager {
    cursor: ListingCursor,
    requested_limit: u64,
    limits: PagerLimits,
    run_ids: HashSet<String>,
    pass_ids: HashSet<String>,
    /// Records without a usable id seen this pass (counted, not deduplicated).
    pass_anonymous: u64,
    /// Pages of this pass that could not be used (dead-lettered).
    pass_bad_pages: u64,
    /// Consecutive unusable pages.
    bad_streak: u64,
    /// Pages fetched this pass.
    pass_pages: u64,
}

impl Pager {
    /// A new listing asking for `requested_limit` campaigns per page.
    pub fn new(requested_limit: u64, limits: PagerLimits) -> Self {
        Self::resume(
            ListingCursor::default(),
            requested_limit,
            limits,
            Vec::new(),
        )
    }

    /// A listing continued from its checkpoint: the cursor stored with the last page, and
    /// `(id, pass)` for every id the run has listed.
    pub fn resume(
        cursor: ListingCursor,
        requested_limit: u64,
        limits: PagerLimits,
        listed: Vec<(String, u32)>,
    ) -> Self {
        let mut run_ids = HashSet::with_capacity(listed.len());
        let mut pass_ids = HashSet::new();
        for (id, pass) in listed {
            if pass == cursor.pass {
                pass_ids.insert(id.clone());
            }
            run_ids.insert(id);
        }
        Self {
            pass_pages: cursor.next_page.saturating_sub(1),
            cursor,
            requested_limit: requested_limit.max(1),
            limits,
            run_ids,
            pass_ids,
            pass_anonymous: 0,
            pass_bad_pages: 0,
            bad_streak: 0,
        }
    }

    /// The page and page size to ask for next, or `None` when the listing is over.
    pub fn next_request(&self) -> Option<(u64, u64)> {
        (!self.cursor.done).then_some((self.cursor.next_page, self.requested_limit))
    }

    /// The listing state now.
    pub fn cursor(&self) -> ListingCursor {
        self.cursor
    }

    /// Whether `id` was listed by this run (any pass).
    pub fn seen_by_run(&self, id: &str) -> bool {
        self.run_ids.contains(id)
    }

    /// The page size the platform really uses (what it said, else what was asked for).
    fn effective_limit(&self) -> u64 {
        self.cursor
            .page_limit
            .unwrap_or(self.requested_limit)
            .max(1)
    }

    /// Pages a pass may take: twice what the reported total implies plus a few (room for
    /// campaigns added meanwhile), or the configured cap when there is no total.
    fn page_cap(&self) -> u64 {
        let total = self.cursor.reported_total.max(self.cursor.pass_total);
        match total {
            Some(t) => t
                .div_ceil(self.effective_limit())
                .saturating_mul(2)
                .saturating_add(3),
            None => self.limits.max_pages.max(1),
        }
    }

    /// Digests the page the platform answered for [`Pager::next_request`]: `ids` holds each
    /// record's id when it has a usable one.
    pub fn on_page(&mut self, pagination: &Pagination, ids: &[Option<&str>]) -> PageVerdict {
        let asked = self.cursor.next_page;
        let mut warnings = Vec::new();
        let mut warn = |kind: &str, message: String| {
            warnings.push(RunWarning {
                kind: kind.to_owned(),
                message,
            })
        };
        self.pass_pages += 1;
        self.bad_streak = 0;

        if pagination.page != asked {
            warn(
                "page_mismatch",
                format!(
                    "asked for page {asked}, the platform answered page {}",
                    pagination.page
                ),
            );
        }
        let limit = if pagination.limit == 0 {
            warn(
                "limit_zero",
                format!(
                    "page {asked} says its limit is 0; assuming {}",
                    self.requested_limit
                ),
            );
            self.requested_limit
        } else {
            if pagination.limit > self.requested_limit {
                warn(
                    "limit_exceeds_request",
                    format!(
                        "asked for {} per page, the platform says it used {}",
                        self.requested_limit, pagination.limit
                    ),
                );
            }
            pagination.limit
        };
        self.cursor.page_limit = Some(limit);
        if ids.len() as u64 > limit {
            warn(
                "page_over_limit",
                format!(
                    "page {asked} holds {} records, more than its limit of {limit}",
                    ids.len()
                ),
            );
        }
        let offset = (asked - 1).saturating_mul(limit);
        let keep = match pagination.total {
            Some(total) => (total.saturating_sub(offset).min(ids.len() as u64)) as usize,
            None => ids.len(),
        };
        if keep < ids.len() {
            warn(
                "records_past_total",
                format!(
                    "page {asked} holds {} records past the {} campaigns the platform reports; ignored",
                    ids.len() - keep,
                    pagination.total.unwrap_or_default()
                ),
            );
        }
        let ids = &ids[..keep];
        match (pagination.total, self.cursor.reported_total) {
            (Some(t), _) if self.cursor.pass_total.is_none() => {
                self.cursor.pass_total = Some(t);
                self.cursor.reported_total = Some(t);
            }
            (Some(t), Some(before)) if t != before => {
                warn(
                    "total_changed",
                    format!("the platform's total moved from {before} to {t} during the listing"),
                );
                self.cursor.pass_drift = true;
                self.cursor.reported_total = Some(t);
            }
            (Some(t), _) => self.cursor.reported_total = Some(t),
            (None, Some(before)) => warn(
                "total_missing",
                format!("page {asked} reports no total (an earlier page said {before})"),
            ),
            (None, None) => {}
        }

        let mut page_ids: HashSet<&str> = HashSet::with_capacity(ids.len());
        let mut duplicates = 0u64;
        let mut new_in_pass = 0u64;
        let mut new_to_run = Vec::with_capacity(ids.len());
        for id in ids {
            match id {
                Some(id) => {
                    if !page_ids.insert(id) {
                        duplicates += 1;
                    }
                    if self.pass_ids.insert((*id).to_owned()) {
                        new_in_pass += 1;
                    }
                    new_to_run.push(self.run_ids.insert((*id).to_owned()));
                }
                None => {
                    self.pass_anonymous += 1;
                    new_in_pass += 1;
                    new_to_run.push(true);
                }
            }
        }
        if duplicates > 0 {
            warn(
                "duplicate_ids",
                format!("page {asked} lists {duplicates} campaign id(s) more than once"),
            );
        }

        let distinct = self.pass_ids.len() as u64 + self.pass_anonymous;
        let end = if ids.is_empty() {
            if pagination.has_more {
                warn(
                    "empty_page_has_more",
                    format!("page {asked} is empty but says has_more; ending the listing there"),
                );
            }
            Some(PassEnd::Exhausted)
        } else if let Some(total) = self.cursor.reported_total.filter(|t| distinct >= *t) {
            if pagination.has_more {
                warn(
                    "has_more_ignores_total",
                    format!(
                        "page {asked} says has_more although all {total} campaigns the platform reports were listed; not following it"
                    ),
                );
            }
            Some(PassEnd::AllSeen)
        } else if !pagination.has_more {
            Some(PassEnd::Exhausted)
        } else if new_in_pass == 0 {
            warn(
                "no_new_ids",
                format!(
                    "page {asked} lists only campaigns already listed; not following its has_more"
                ),
            );
            Some(PassEnd::Stuck)
        } else if self.pass_pages >= self.page_cap() {
            warn(
                "page_cap",
                format!(
                    "stopped following has_more after {} pages (the most this listing can need)",
                    self.pass_pages
                ),
            );
            Some(PassEnd::Capped)
        } else {
            None
        };
        self.cursor.next_page = asked + 1;
        if let Some(end) = end {
            self.end_pass(end, &mut warnings);
        }
        PageVerdict {
            keep,
            new_to_run,
            warnings,
            cursor: self.cursor,
        }
    }

    /// The page the platform answered for [`Pager::next_request`] could not be used (it is
    /// dead-lettered): the listing skips it while the reported total says more pages exist,
    /// and can no longer be proven complete this pass.
    pub fn on_unusable_page(&mut self) -> PageVerdict {
        let asked = self.cursor.next_page;
        self.pass_pages += 1;
        self.pass_bad_pages += 1;
        self.bad_streak += 1;
        self.cursor.next_page = asked + 1;
        let mut warnings = vec![RunWarning {
            kind: "unusable_page".into(),
            message: format!("page {asked} could not be used and was dead-lettered"),
        }];
        let more_expected = self
            .cursor
            .reported_total
            .is_some_and(|t| asked.saturating_mul(self.effective_limit()) < t);
        if !more_expected || self.bad_streak >= 3 || self.pass_pages >= self.page_cap() {
            self.end_pass(PassEnd::Capped, &mut warnings);
        }
        PageVerdict {
            keep: 0,
            new_to_run: Vec::new(),
            warnings,
            cursor: self.cursor,
        }
    }

    /// Decides, at the end of a pass, between done (complete or not) and another pass.
    fn end_pass(&mut self, end: PassEnd, warnings: &mut Vec<RunWarning>) {
        let distinct = self.pass_ids.len() as u64 + self.pass_anonymous;
        let reported = self.cursor.reported_total;
        let shortfall = reported.map_or(0, |t| t.saturating_sub(distinct));
        let saw_all = reported.is_none_or(|t| distinct >= t);
        let complete = !self.cursor.pass_drift
            && self.pass_bad_pages == 0
            && match end {
                PassEnd::AllSeen => true,
                PassEnd::Exhausted => saw_all,
                PassEnd::Stuck | PassEnd::Capped => false,
            };
        if complete {
            self.cursor.done = true;
            self.cursor.complete = true;
            return;
        }
        // Listing again helps when the data moved under the pass, not when the platform
        // ignores `page` or serves pages that cannot be used.
        let drifted = self.cursor.pass_drift || (shortfall > 0 && end == PassEnd::Exhausted);
        if drifted && self.pass_bad_pages == 0 && self.cursor.pass < self.limits.max_passes {
            self.cursor.drift_events += 1;
            warnings.push(RunWarning {
                kind: "listing_again".into(),
                message: format!(
                    "the platform's campaigns moved during pass {} ({distinct} listed, {} reported); listing again from page 1",
                    self.cursor.pass,
                    reported.map_or_else(|| "no total".to_owned(), |t| t.to_string())
                ),
            });
            self.cursor.pass += 1;
            self.cursor.next_page = 1;
            self.cursor.pass_total = None;
            self.cursor.pass_drift = false;
            self.pass_ids.clear();
            self.pass_anonymous = 0;
            self.pass_bad_pages = 0;
            self.pass_pages = 0;
            return;
        }
        if drifted {
            self.cursor.drift_events += 1;
        }
        self.cursor.done = true;
        self.cursor.complete = false;
        warnings.push(RunWarning {
            kind: "incomplete_listing".into(),
            message: format!(
                "the listing could not be proven complete: pass {} listed {distinct} of {} campaigns; nothing was marked removed",
                self.cursor.pass,
                reported.map_or_else(|| "an unknown number of".to_owned(), |t| t.to_string())
            ),
        });
    }
}

#[cfg(test)]
mod tests;
