//! Live counters of a run, shared between the engine and whoever displays them.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use adsync_domain::RateLimit;
use adsync_store::ListingCursor;

/// What the running engine has done so far (this process), readable at any time.
#[derive(Debug, Default)]
pub struct Progress {
    pub(crate) pages: AtomicU64,
    pub(crate) seen: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) synced: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) pending: AtomicU64,
    pub(crate) total_hint: AtomicU64,
    pub(crate) page_size: AtomicU64,
    pub(crate) listing_done: AtomicBool,
    /// Fastest sync call so far, in µs (0: none yet). Means would include time spent queued
    /// on the limiter; the fastest call is the platform's own latency.
    pub(crate) fastest_sync_us: AtomicU64,
    /// The listing cursor after the latest page.
    cursor: Mutex<Option<ListingCursor>>,
}

/// A copy of [`Progress`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// Pages stored.
    pub pages: u64,
    /// Records received.
    pub seen: u64,
    /// Campaigns stored.
    pub stored: u64,
    /// Campaigns synced.
    pub synced: u64,
    /// Dead letters recorded.
    pub dead_lettered: u64,
    /// Campaigns stored and waiting for their sync call.
    pub pending: u64,
    /// Campaigns the platform says it has (0 until known).
    pub total_hint: u64,
    /// Whether the last page was stored.
    pub listing_done: bool,
}

impl Progress {
    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProgressSnapshot {
            pages: g(&self.pages),
            seen: g(&self.seen),
            stored: g(&self.stored),
            synced: g(&self.synced),
            dead_lettered: g(&self.dead_lettered),
            pending: g(&self.pending),
            total_hint: g(&self.total_hint),
            listing_done: self.listing_done.load(Ordering::Relaxed),
        }
    }

    /// Duration of the fastest successful sync call so far: the platform's own latency.
    pub fn sync_latency(&self) -> Option<Duration> {
        match self.fastest_sync_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// The listing cursor after the latest page (or as the run was resumed).
    pub fn cursor(&self) -> Option<ListingCursor> {
        *self.cursor.lock().expect("progress lock")
    }

    pub(crate) fn set_cursor(&self, cursor: &ListingCursor) {
        *self.cursor.lock().expect("progress lock") = Some(*cursor);
        if let Some(total) = cursor.reported_total {
            self.total_hint.store(total, Ordering::Relaxed);
        }
        self.listing_done.store(cursor.done, Ordering::Relaxed);
    }

    pub(crate) fn record_sync_latency(&self, took: Duration) {
        let us = (took.as_micros() as u64).max(1);
        let _ = self
            .fastest_sync_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                (cur == 0 || us < cur).then_some(us)
            });
    }

    /// Rate-limited calls still to make (pages not yet listed, campaigns not yet synced), and
    /// the time they need at `limit`.
    pub fn eta(&self, limit: RateLimit) -> (u64, Duration) {
        let s = self.snapshot();
        let page_size = self.page_size.load(Ordering::Relaxed).max(1);
        let unseen = s.total_hint.saturating_sub(s.seen);
        let pages_left = if s.listing_done {
            0
        } else {
            unseen.div_ceil(page_size).max(1)
        };
        let calls = pages_left + unseen + s.pending;
        let windows = calls.div_ceil(u64::from(limit.requests));
        (calls, limit.window.saturating_mul(windows as u32))
    }
}
