//! A limit lower than the configured one, learned from the platform's 429s.
//!
//! A tenant whose `rate_limit` says more than its platform allows would otherwise draw 429s
//! in every window for the whole run: the limiter holds after each one and widens its margin,
//! but keeps sending `N` a window. What the platform accepts tells its real limit. Windows are
//! counted by send stamps, and only once they are over (no later send can fall in) and every
//! request in them was answered: the most accepted in one, and the most accepted in one that
//! also held a refused request. When the two are equal and below `N` (the server refused
//! after accepting that many, and never accepted more), the next unexpected 429 (the first of
//! its event) is the second sign, and the limiter paces at that many from then on. One sign
//! alone can be a request that reached the server late, or another user of the client id for
//! a moment; a 429 after `N` were accepted in a window is a margin matter, which the margin
//! handles. It is not lowered again on the same evidence (a later 429 from late arrivals or
//! another user of the client id costs nothing more), and the lesson expires after
//! [`FORGET_AFTER`] windows without an unexpected 429, evidence and all: another user of the
//! client id may have gone, or the platform may have changed its limit. A limit still set
//! too high is then learned again, for two windows of 429s. The warning says to fix it.
//!
//! A window another holder of a shared budget also sent in is no evidence: what this process
//! saw accepted there is its share of the platform's limit, not the limit. Learned, it paced
//! every holder at that share (two workers on one client id learned one request a window and
//! took a minute for sixty campaigns). The budget says when it last saw another holder's
//! send ([`Learned::others_sent`]); windows that began before it do not count, and the
//! evidence gathered until then is dropped.

use std::{collections::VecDeque, time::Duration};

use adsync_domain::RateLimit;
use tokio::time::Instant;

use super::Stamp;

/// Windows without an unexpected 429 after which what was learned is forgotten.
pub(super) const FORGET_AFTER: u32 = 100;

#[derive(Debug, Default)]
pub(super) struct Learned {
    /// The most of our requests the server accepted within one window.
    most_accepted: usize,
    /// The most it accepted within one window that also held a refused one.
    most_before_refusing: Option<usize>,
    /// The limit learned, when lower than the configured one.
    requests: Option<usize>,
    /// The last unexpected 429 (the lesson and the evidence expire [`FORGET_AFTER`] windows
    /// after it).
    last_sign: Option<Instant>,
    /// The latest send of another holder of the client id's shared budget seen so far.
    others_until: Option<Instant>,
}

impl Learned {
    /// The limit in force: the configured one, or the one learned.
    pub(super) fn requests(&self, limit: RateLimit) -> usize {
        let configured = limit.requests as usize;
        self.requests.map_or(configured, |n| n.min(configured))
    }

    /// Another holder of the client id's shared budget sent at `at`: windows that began
    /// before then are no evidence of the platform's limit, and what they showed is dropped.
    pub(super) fn others_sent(&mut self, at: Instant) {
        if self.others_until.is_none_or(|until| at > until) {
            self.others_until = Some(at);
            self.most_before_refusing = None;
        }
    }

    /// Counts, at `now`, the accepted and refused requests of every window of the log (by
    /// send stamps, ascending) that is over and whose requests were all answered. Linear in
    /// the log, which holds about `N` sends; the limiter calls it only before it forgets
    /// sends and before it weighs a 429, not on every answer.
    pub(super) fn count(&mut self, sent: &VecDeque<Stamp>, window: Duration, now: Instant) {
        if self
            .last_sign
            .is_some_and(|at| now.saturating_duration_since(at) >= window * FORGET_AFTER)
        {
            *self = Self {
                others_until: self.others_until,
                ..Self::default()
            };
        }
        let mut end = 0;
        let mut tally = Tally::default();
        for first in sent {
            while let Some(t) = sent.get(end)
                && t.at.saturating_duration_since(first.at) < window
            {
                tally.add(t);
                end += 1;
            }
            if tally.unanswered == 0 && first.at + window <= now {
                self.most_accepted = self.most_accepted.max(tally.accepted);
                if tally.refused > 0 && self.others_until.is_none_or(|o| first.at > o) {
                    self.most_before_refusing =
                        Some(self.most_before_refusing.unwrap_or(0).max(tally.accepted));
                }
            }
            tally.remove(first);
        }
    }

    /// An unexpected 429 (the first of its event) at `now`. Returns the limit learned if it
    /// changed. It lowers the limit when an earlier window already showed the server refusing
    /// after accepting fewer than the limit in force, and no window ever had more accepted:
    /// the second sign.
    pub(super) fn refused(&mut self, limit: RateLimit, now: Instant) -> Option<usize> {
        self.last_sign = Some(now);
        let n = self.requests(limit);
        let most = self.most_accepted.max(1);
        (self.most_before_refusing == Some(self.most_accepted) && most < n).then(|| {
            self.requests = Some(most);
            most
        })
    }
}

/// The requests of one window, by what their answers said.
#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    refused: usize,
    unanswered: usize,
}

impl Tally {
    fn counter(&mut self, t: &Stamp) -> &mut usize {
        match t.answered {
            None => &mut self.unanswered,
            Some(_) if t.refused => &mut self.refused,
            Some(_) => &mut self.accepted,
        }
    }

    fn add(&mut self, t: &Stamp) {
        *self.counter(t) += 1;
    }

    fn remove(&mut self, t: &Stamp) {
        *self.counter(t) -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(at: Instant, answered: bool, refused: bool) -> Stamp {
        Stamp {
            at,
            cold: false,
            answered: answered.then_some(at),
            refused,
            ok: None,
        }
    }

    fn limit(n: u32) -> RateLimit {
        RateLimit::new(n, Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn counts_only_windows_whose_requests_were_all_answered() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut learned = Learned::default();
        // A burst of 15: ten accepted, four refused, one not answered yet.
        let mut sent: VecDeque<Stamp> = (0..15)
            .map(|i| stamp(t + ms(i), i != 14, (10..14).contains(&i)))
            .collect();
        let w = Duration::from_secs(1);
        learned.count(&sent, w, t + ms(2_000));
        // The windows holding the unanswered one do not count; the others hold at most ten.
        assert_eq!(learned.most_accepted, 0);
        sent[14].answered = Some(t + ms(50));
        sent[14].refused = true;
        // Nor does a window not over yet: a send may still fall in it.
        learned.count(&sent, w, t + ms(500));
        assert_eq!(learned.most_accepted, 0);
        learned.count(&sent, w, t + ms(1_000));
        assert_eq!(learned.most_accepted, 10);
        assert_eq!(learned.most_before_refusing, Some(10));
        // A later window of three does not lower the most.
        sent.extend((0..3).map(|i| stamp(t + ms(2_000 + i), true, false)));
        learned.count(&sent, w, t + ms(4_000));
        assert_eq!(learned.most_accepted, 10);
    }

    #[test]
    fn the_second_sign_lowers_the_limit_to_what_was_accepted_and_later_429s_no_further() {
        let mut learned = Learned {
            most_accepted: 10,
            ..Learned::default()
        };
        assert_eq!(
            learned.refused(limit(15), Instant::now()),
            None,
            "one sign is not enough"
        );
        assert_eq!(learned.requests(limit(15)), 15);
        // A window is over: it held ten accepted and a refused one.
        learned.most_before_refusing = Some(10);
        assert_eq!(learned.refused(limit(15), Instant::now()), Some(10));
        assert_eq!(learned.requests(limit(15)), 10);
        // Late arrivals or another user of the client id: not a reason to go lower.
        for _ in 0..5 {
            assert_eq!(learned.refused(limit(15), Instant::now()), None);
        }
        assert_eq!(learned.requests(limit(15)), 10);
    }

    #[test]
    fn a_429_after_the_full_limit_was_accepted_is_not_a_sign() {
        // A late request refused in a window of nine, when others held all ten.
        let mut learned = Learned {
            most_accepted: 10,
            most_before_refusing: Some(9),
            ..Learned::default()
        };
        for _ in 0..5 {
            assert_eq!(learned.refused(limit(10), Instant::now()), None);
        }
        assert_eq!(learned.requests(limit(10)), 10);
    }

    #[test]
    fn a_window_another_holder_of_the_budget_sent_in_is_no_evidence() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let w = Duration::from_secs(1);
        // Our share of a window: five accepted, then two refused (the other holder sent the
        // rest of the platform's ten).
        let sent: VecDeque<Stamp> = (0..7)
            .map(|i| stamp(t + ms(i * 10), true, i >= 5))
            .collect();
        let mut learned = Learned::default();
        learned.others_sent(t + ms(60));
        learned.count(&sent, w, t + ms(2_000));
        assert_eq!(learned.most_accepted, 5);
        assert_eq!(learned.most_before_refusing, None);
        for _ in 0..3 {
            assert_eq!(learned.refused(limit(15), t + ms(2_000)), None);
        }
        assert_eq!(learned.requests(limit(15)), 15);

        // Counted before the other holder's send was known, the evidence is dropped when it
        // is.
        let mut learned = Learned::default();
        learned.count(&sent, w, t + ms(2_000));
        assert_eq!(learned.most_before_refusing, Some(5));
        learned.others_sent(t + ms(60));
        assert_eq!(learned.most_before_refusing, None);
        assert_eq!(learned.refused(limit(15), t + ms(2_000)), None);

        // A window that began after the other holder's last send counts again.
        let later: VecDeque<Stamp> = (0..12)
            .map(|i| stamp(t + ms(5_000 + i * 10), true, i >= 10))
            .collect();
        learned.count(&later, w, t + ms(7_000));
        assert_eq!(learned.most_before_refusing, Some(10));
        assert_eq!(learned.refused(limit(15), t + ms(7_000)), Some(10));
    }

    #[test]
    fn nothing_is_learned_before_any_window_was_answered_in_full() {
        let mut learned = Learned::default();
        for _ in 0..3 {
            assert_eq!(learned.refused(limit(10), Instant::now()), None);
        }
        assert_eq!(learned.requests(limit(10)), 10);
    }

    #[test]
    fn the_limit_never_goes_below_one() {
        let mut learned = Learned {
            most_accepted: 1,
            most_before_refusing: Some(1),
            ..Learned::default()
        };
        assert_eq!(learned.refused(limit(10), Instant::now()), Some(1));
        assert_eq!(learned.refused(limit(10), Instant::now()), None);
        assert_eq!(learned.requests(limit(10)), 1);
    }

    #[test]
    fn what_was_learned_is_forgotten_after_many_clean_windows() {
        let t = Instant::now();
        let w = Duration::from_secs(1);
        let mut learned = Learned {
            most_accepted: 10,
            most_before_refusing: Some(10),
            ..Learned::default()
        };
        assert_eq!(learned.refused(limit(15), t), Some(10));
        let sent: VecDeque<Stamp> = VecDeque::new();
        learned.count(&sent, w, t + w * (FORGET_AFTER - 1));
        assert_eq!(learned.requests(limit(15)), 10);
        learned.count(&sent, w, t + w * FORGET_AFTER);
        assert_eq!(learned.requests(limit(15)), 15);
        assert_eq!(learned.most_before_refusing, None);
    }
}
