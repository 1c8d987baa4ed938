//! Sync calls start as soon as a page is validated, while its transaction is still being
//! written. At a thousand tenants every run lists its first page at the same moment and the
//! database stores them a few at a time (milliseconds each, with their metrics and raw
//! records): a run that waited for its own store began its sync calls seconds late, and a
//! run's last call comes its floor after its first. What a sync call writes does need the
//! campaign's row (the success, a 404's removal mark, a dead letter), so those writes wait
//! until their page is stored. [`Handoff`] counts pages handed out and pages stored.
//!
//! A page whose store fails stops the run; the successes of its campaigns are not recorded,
//! so a resumed run repeats those (idempotent) calls, as it repeats the calls a killed
//! process made in its last moments.

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default)]
struct State {
    handed: u64,
    stored: u64,
    closed: bool,
}

/// Pages of a run handed to the sync calls and pages stored.
#[derive(Debug)]
pub(crate) struct Handoff {
    state: watch::Sender<State>,
}

impl Default for Handoff {
    fn default() -> Self {
        Self {
            state: watch::Sender::new(State::default()),
        }
    }
}

impl Handoff {
    /// A page's campaigns are about to be handed to the sync calls; returns the page's
    /// number, which their writes wait for ([`Handoff::wait_stored`]).
    pub(crate) fn handed(&self) -> u64 {
        let mut page = 0;
        self.state.send_modify(|s| {
            s.handed += 1;
            page = s.handed;
        });
        page
    }

    /// A page handed out is stored (pages are stored in the order they are handed out).
    pub(crate) fn stored(&self) {
        self.state.send_modify(|s| s.stored += 1);
    }

    /// Pages stored so far.
    pub(crate) fn stored_so_far(&self) -> u64 {
        self.state.borrow().stored
    }

    /// The listing is over, however it ended: nothing more will be stored.
    pub(crate) fn close(&self) {
        self.state.send_modify(|s| s.closed = true);
    }

    /// Waits until page `page` (a number from [`Handoff::handed`]; 0: none, for campaigns
    /// stored by an earlier process) and every page before it are stored. Returns how many
    /// pages are stored then: fewer than `page` when the listing ended first.
    pub(crate) async fn wait_stored(&self, page: u64) -> u64 {
        let stored = self.state.borrow().stored;
        if stored >= page {
            return stored;
        }
        let mut rx = self.state.subscribe();
        match rx.wait_for(|s| s.stored >= page || s.closed).await {
            Ok(s) => s.stored,
            Err(_) => stored,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn writes_wait_for_their_page() {
        let handoff = std::sync::Arc::new(Handoff::default());
        assert_eq!(
            handoff.wait_stored(0).await,
            0,
            "stored by an earlier process"
        );

        let first = handoff.handed();
        let waiter = tokio::spawn({
            let h = handoff.clone();
            async move { h.wait_stored(first).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "the page is not stored yet");
        let second = handoff.handed();
        handoff.stored();

        assert_eq!(waiter.await.unwrap(), 1, "the first page is stored");
        assert!(
            tokio::time::timeout(Duration::from_secs(1), handoff.wait_stored(second))
                .await
                .is_err(),
            "the second page is not"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_that_ends_with_a_page_unstored_releases_its_waiters() {
        let handoff = std::sync::Arc::new(Handoff::default());
        let page = handoff.handed();
        let waiter = tokio::spawn({
            let h = handoff.clone();
            async move { h.wait_stored(page).await }
        });

        handoff.close();

        assert_eq!(waiter.await.unwrap(), 0);
    }
}
