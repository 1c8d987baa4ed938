//! A sliding-window rate limiter that matches the platform's: at most `N` requests in any
//! window of length `W`, per client id.
//!
//! Why not governor: GCRA with burst `N` lets `N` through at once and then one every `W/N`, so
//! the 11th request would go at `W/10` while the server still counts ten requests in its
//! window: a 429. With burst 1 it never trips the server but runs at one request per `W/N`,
//! about 20% slower than the platform allows for a 100-campaign sync. A log of the last `N`
//! send times is the exact model of the server.
//!
//! The log holds the instants requests were really dispatched: a caller [`reserves`] its
//! turn, does what it must (a token refresh), and [`Permit::send`] stamps the slot at that
//! moment. Each slot stays busy for `W` plus a margin measured from the spread of response
//! latencies (see `margin.rs`), because the server stamps arrivals later than we send, by
//! an amount that varies.
//!
//! An answer bounds its request's arrival exactly: the server counted the request before it
//! answered, so a slot is never busy for longer than its answer plus `W` (and [`ANSWER_SLACK`]).
//! That bound is what slots sent *cold* (before any latency was measured: a limiter's first
//! requests, which open fresh connections, on a machine that may be at its busiest) are
//! reused after once answered: the spread of latencies measured later says nothing about
//! how late those reached the server. Unanswered, they keep a wider, cold margin.
//!
//! A slot answered 2xx keeps a margin of its own once its endpoint's latencies are trusted:
//! its latency over the endpoint's least (see `margin.rs`), at most the margin in force. Only
//! the slots that reached the server late keep the widest spread; at a 1 s window the median
//! reuse came 12 ms after `W` instead of 41 ms.
//!
//! A limit set higher than the platform's is learned (see `learned.rs`): when a window already
//! showed the server refusing after accepting fewer than `N` (and none accepted more), the next
//! unexpected 429 makes the limiter pace at that many.
//!
//! [`reserves`]: SlidingWindowLimiter::reserve

mod learned;
mod margin;
#[cfg(test)]
mod server_model;
#[cfg(test)]
mod tests;

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use adsync_domain::RateLimit;
use tokio::{
    sync::{MutexGuard, Notify},
    time::Instant,
};

use margin::Margin;

/// Paces requests of one client id so that the server sees at most `N` per window, and holds
/// all of them when the server answers 429 anyway.
#[derive(Debug)]
pub struct SlidingWindowLimiter {
    limit: RateLimit,
    state: Mutex<State>,
    // Waiters queue here, first come first served (tokio's Mutex is fair), so a steady stream
    // of new callers cannot starve an old one. A permit keeps it until its request is sent,
    // so nobody takes a slot between a reservation and its send.
    turn: tokio::sync::Mutex<()>,
    // Wakes the waiter when the margin shrinks (a measurement replaced the warm-up margin).
    changed: Notify,
}

#[derive(Debug)]
struct State {
    sent: VecDeque<Stamp>,
    hold_until: Option<Instant>,
    margin: Margin,
    /// Requests waiting for their turn or holding a permit.
    queued: usize,
    /// What the platform's 429s showed of its real limit.
    learned: learned::Learned,
}

/// One recorded send.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    at: Instant,
    /// Sent before the margin was measured: reused after [`Margin::cold`] or, once
    /// answered, after its answer (see the module documentation), not the margin.
    cold: bool,
    /// When its answer (any status) came back: the server had counted it by then.
    answered: Option<Instant>,
    /// Its answer was a 429.
    refused: bool,
    /// Its answer was a 2xx: the endpoint's index in the margin's latencies and the latency.
    ok: Option<(usize, Duration)>,
}

/// Added to an answer's bound on its request's arrival: the server's `<` versus `<=` and
/// the timer's millisecond.
pub const ANSWER_SLACK: Duration = Duration::from_millis(3);

/// The turn to send one request, from [`SlidingWindowLimiter::reserve`]. Nothing is recorded
/// until [`Permit::send`]; dropping the permit gives the turn back and costs no slot.
#[derive(Debug)]
pub struct Permit<'a> {
    limiter: &'a SlidingWindowLimiter,
    _turn: MutexGuard<'a, ()>,
    _queued: Queued<'a>,
    queued_at: Instant,
}

/// A request recorded as sent by [`Permit::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The slot's stamp: the instant the request was dispatched. Measure its latency from here.
    pub at: Instant,
    /// How long it waited on the limiter, from [`SlidingWindowLimiter::reserve`] to the send.
    pub waited: Duration,
}

#[derive(Debug)]
struct Queued<'a>(&'a SlidingWindowLimiter);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.state().queued -= 1;
    }
}

impl SlidingWindowLimiter {
    /// A limiter for `limit` whose margin is measured from response latencies (report them
    /// with [`SlidingWindowLimiter::record_latency`]). Until enough are measured it uses a
    /// fifth of the window, between [`SlidingWindowLimiter::default_margin`] and 1 s.
    pub fn new(limit: RateLimit) -> Self {
        Self::build(limit, None)
    }

    /// A limiter that treats each slot as busy for `W + margin`, a fixed margin (latencies
    /// are not used; an unexpected 429 still widens it). The margin covers the time between
    /// our send and the server stamping its arrival, which differs from request to request.
    pub fn with_margin(limit: RateLimit, margin: Duration) -> Self {
        Self::build(limit, Some(margin))
    }

    fn build(limit: RateLimit, fixed: Option<Duration>) -> Self {
        Self {
            limit,
            state: Mutex::new(State {
                sent: VecDeque::new(),
                hold_until: None,
                margin: Margin::new(limit.window, fixed, Self::default_margin(limit)),
                queued: 0,
                learned: learned::Learned::default(),
            }),
            turn: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
        }
    }

    /// 1% of the window, between 10 ms and 1 s: 600 ms at 60 s, 10 ms at a scaled 1 s. The
    /// least margin before any latency is measured. The 10 ms floor is for short (simulated)
    /// windows: with 2 ms, a loaded 2-core machine delayed sends by more than that.
    pub fn default_margin(limit: RateLimit) -> Duration {
        (limit.window / 100).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// The limit enforced.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("limiter lock")
    }

    /// Waits until a request may be sent, records it as sent now, and returns how long it
    /// waited. For a caller that sends at once; one that must do something first (take a
    /// token) uses [`SlidingWindowLimiter::reserve`].
    pub async fn acquire(&self) -> Duration {
        self.reserve().await.send().await.waited
    }

    /// Waits for this caller's turn and for a free slot, and returns the turn as a permit.
    /// Callers are served first come, first served.
    pub async fn reserve(&self) -> Permit<'_> {
        let queued_at = Instant::now();
        self.state().queued += 1;
        let queued = Queued(self);
        let turn = self.turn.lock().await;
        self.wait_for_room().await;
        Permit {
            limiter: self,
            _turn: turn,
            _queued: queued,
            queued_at,
        }
    }

    /// Sleeps until the log has room now (the caller holds the turn).
    async fn wait_for_room(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait = self.state().wait(Instant::now(), self.limit);
            match wait {
                None => return,
                Some(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = changed => {}
                    }
                }
            }
        }
    }

    /// The answer to the request sent at `sent_at` ([`Sent::at`]) came back now, a 429 if
    /// `refused`: the server counted that request by now, which bounds how long its slot stays
    /// busy, and what it said tells how many the server accepts in a window (`learned.rs`).
    pub fn answered(&self, sent_at: Instant, refused: bool) {
        let now = Instant::now();
        let mut s = self.state();
        if let Some(stamp) = s.unanswered(sent_at) {
            stamp.answered = Some(now);
            stamp.refused = refused;
        }
    }

    /// The request sent at `sent_at` ([`Sent::at`]) to `endpoint` was answered 2xx now,
    /// `latency` after it was sent (to its headers): [`SlidingWindowLimiter::answered`] and
    /// [`SlidingWindowLimiter::record_latency`] in one, and the slot keeps a margin of its own
    /// (see the module documentation).
    pub fn answered_ok(&self, sent_at: Instant, endpoint: &'static str, latency: Duration) {
        let now = Instant::now();
        let earlier = {
            let mut s = self.state();
            let before = s.margin.current();
            let index = s.margin.record(endpoint, latency);
            let spans = s.spans(self.limit);
            let freed = s.unanswered(sent_at).map(|stamp| {
                let was = spans.frees(stamp);
                stamp.answered = Some(now);
                stamp.refused = false;
                stamp.ok = Some((index, latency));
                spans.frees(stamp) < was
            });
            s.margin.current() < before || freed == Some(true)
        };
        if earlier {
            self.changed.notify_waiters();
        }
    }

    /// Records the latency of a 2xx answer of `endpoint`, from [`Sent::at`] to its headers:
    /// the margin follows the spread of recent latencies (see [`SlidingWindowLimiter::new`]).
    /// [`SlidingWindowLimiter::answered_ok`] also gives the request's slot its own margin.
    pub fn record_latency(&self, endpoint: &'static str, latency: Duration) {
        let shrank = {
            let mut s = self.state();
            let before = s.margin.current();
            s.margin.record(endpoint, latency);
            s.margin.current() < before
        };
        if shrank {
            self.changed.notify_waiters();
        }
    }

    /// The server answered 429 to a request sent at `sent_at`: hold every request for
    /// `retry_after` from now (a hold never shortens one already in force; the caller bounds
    /// `retry_after`, and an overflowing one holds a day), and, when the limiter did not see
    /// it coming, double the margin up to a fifth of the window. A 429 for a request sent
    /// before the last widening belongs to the burst that caused it: one event widens once.
    pub fn hold(&self, retry_after: Duration, sent_at: Instant) {
        let now = Instant::now();
        let until = now.checked_add(retry_after).unwrap_or_else(|| {
            tracing::warn!(
                retry_after_s = retry_after.as_secs_f64(),
                "a 429 hold does not fit the clock; holding for a day"
            );
            now.checked_add(Duration::from_secs(86_400)).unwrap_or(now)
        });
        let mut s = self.state();
        if s.hold_until.is_none_or(|u| u < until) {
            s.hold_until = Some(until);
        }
        if s.margin.last_widening.is_some_and(|w| sent_at <= w) {
            return;
        }
        let State { sent, learned, .. } = &mut *s;
        learned.count(sent, self.limit.window, now);
        if let Some(n) = learned.refused(self.limit, now) {
            metrics::counter!("adsync_rate_limit_lowered_total").increment(1);
            tracing::warn!(
                configured = self.limit.requests,
                pacing_at = n,
                window_s = self.limit.window.as_secs_f64(),
                "the platform refuses more than it accepted in a window: pacing at the lower limit \
                 from now on; set the tenant's rate limit to what the platform allows"
            );
        }
        if let Some(widened) = s.margin.widen(now) {
            tracing::warn!(
                margin_ms = widened.as_secs_f64() * 1e3,
                "unexpected 429: widening the rate limiter's safety margin"
            );
        }
    }

    /// How long a request that starts waiting `after` from now would wait, given the sends
    /// recorded, the hold in force and the requests already queued (each takes a slot first).
    /// For log lines and progress displays; the margin may change meanwhile.
    pub fn predicted_wait(&self, after: Duration) -> Duration {
        let now = Instant::now();
        let Some(start) = now.checked_add(after) else {
            return Duration::ZERO;
        };
        let s = self.state();
        let spans = s.spans(self.limit);
        let n = s.learned.requests(self.limit);
        let free_from = s.hold_until.map_or(now, |h| h.max(now));
        let mut log: Vec<Stamp> = s.sent.iter().copied().collect();
        let t = queue_up(&mut log, free_from, spans, n, s.queued)
            .last()
            .copied()
            .unwrap_or(free_from);
        let ours = earliest(&log, start.max(t).max(free_from), spans, n);
        ours.saturating_duration_since(start)
    }

    /// When the next `k` requests could go, from now on, given the sends recorded and the
    /// hold in force (each taking a slot in turn; the first is now when there is room). What
    /// a shared budget whose only spender is this limiter grants (see `adsync-service`).
    pub fn schedule(&self, k: usize) -> Vec<Instant> {
        let now = Instant::now();
        let s = self.state();
        let spans = s.spans(self.limit);
        let n = s.learned.requests(self.limit);
        let mut log: Vec<Stamp> = s.sent.iter().copied().collect();
        let from = s.hold_until.map_or(now, |h| h.max(now));
        queue_up(&mut log, from, spans, n, k)
    }

    /// Another holder of this client id's shared budget sent at `at`: the windows before it
    /// tell nothing of the platform's limit (see `learned.rs`).
    pub fn others_sent(&self, at: Instant) {
        self.state().learned.others_sent(at);
    }

    /// The most requests a window may hold now: the configured limit, or the lower one the
    /// platform's 429s taught (see `learned.rs`). A shared budget asks for no more at once.
    pub fn requests(&self) -> usize {
        self.state().learned.requests(self.limit)
    }

    /// Requests waiting for their turn or holding a permit: the demand a shared budget sizes
    /// its grants by.
    pub fn queued(&self) -> usize {
        self.state().queued
    }

    /// The safety margin in force.
    pub fn margin(&self) -> Duration {
        self.state().margin.current()
    }

    /// The margin whoever plans this client id's future slots (a shared budget) should keep
    /// now: the widest any slot still busy here keeps (the margin in force; for a slot sent
    /// cold, the cold margin until it is answered, then its answer's bound), so that a planner
    /// never grants a slot this limiter lets go only later than the grant's tolerance.
    pub fn planning_margin(&self) -> Duration {
        let s = self.state();
        let now = Instant::now();
        let spans = s.spans(self.limit);
        s.sent
            .iter()
            .filter_map(|t| {
                let frees = spans.frees(t);
                (frees > now).then(|| {
                    frees
                        .saturating_duration_since(t.at)
                        .saturating_sub(self.limit.window)
                })
            })
            .fold(s.margin.current(), Duration::max)
    }

    /// Slots left in the current window (for progress displays).
    pub fn available(&self) -> usize {
        let s = self.state();
        let now = Instant::now();
        let spans = s.spans(self.limit);
        let busy = s.sent.iter().filter(|t| spans.frees(t) > now).count();
        s.learned.requests(self.limit).saturating_sub(busy)
    }
}

impl Permit<'_> {
    /// Records the request as sent now and gives the turn back. If a hold or a wider margin
    /// came up since the reservation (a token refresh can take a while), it first waits for
    /// room again: the stamp is always the real dispatch time.
    pub async fn send(self) -> Sent {
        self.limiter.wait_for_room().await;
        let at = Instant::now();
        {
            let mut s = self.limiter.state();
            let cold = !s.margin.settled();
            s.sent.push_back(Stamp {
                at,
                cold,
                answered: None,
                refused: false,
                ok: None,
            });
        }
        Sent {
            at,
            waited: at.saturating_duration_since(self.queued_at),
        }
    }
}

impl State {
    /// The slot of the request sent at `sent_at`, if not answered yet.
    fn unanswered(&mut self, sent_at: Instant) -> Option<&mut Stamp> {
        self.sent
            .iter_mut()
            .rev()
            .find(|t| t.at == sent_at && t.answered.is_none())
    }

    /// How long until a request may go at `now`; `None`: it may go now. Forgets sends that
    /// can no longer count.
    fn wait(&mut self, now: Instant, limit: RateLimit) -> Option<Duration> {
        let spans = self.spans(limit);
        // Keep what a wider margin could still count, and a slot still busy (a cold one
        // answered late keeps its answer's bound).
        let keep = limit.window
            + self
                .margin
                .current()
                .max(self.margin.cap())
                .max(self.margin.cold());
        let expired =
            |t: &Stamp| now.saturating_duration_since(t.at) >= keep && spans.frees(t) <= now;
        if self.sent.front().is_some_and(expired) {
            // Count what the windows about to be forgotten showed first: the last answer in
            // them may have come before they were over, and none comes after they go.
            let State { sent, learned, .. } = self;
            learned.count(sent, limit.window, now);
        }
        while self.sent.front().is_some_and(expired) {
            self.sent.pop_front();
        }
        if let Some(until) = self.hold_until {
            if until > now {
                return Some(until - now);
            }
            self.hold_until = None;
        }
        let n = self.learned.requests(limit);
        let log = self.sent.make_contiguous();
        let at = earliest(log, now, spans, n);
        (at > now).then(|| at - now)
    }

    /// How long slots stay busy now.
    fn spans(&self, limit: RateLimit) -> Spans {
        let warm = self.margin.current();
        let cold = warm.max(self.margin.cold());
        Spans {
            window: limit.window,
            warm,
            cold,
            answered_cold: (cold * 2).min(self.margin.warm_up()).max(cold),
            per_slot: self.margin.per_slot(),
            slot_floor: self.margin.slot_floor(),
            least: self.margin.trusted_least(),
        }
    }
}

/// The window and the margins slots keep now.
#[derive(Debug, Clone, Copy)]
struct Spans {
    window: Duration,
    warm: Duration,
    cold: Duration,
    /// The most an answered cold slot keeps: twice the cold margin (100 ms at a 1 s window),
    /// at most the warm-up margin (1 s at 60 s). An answer that comes later than that says
    /// more about the server's processing time (a 2 s sync call) than about when it counted
    /// the request: nothing measured tells the two apart yet, and a slot kept for the whole
    /// answer would cost every window of a short-window run whose calls take as long.
    /// Only on an endpoint whose latencies are trusted: on another, nothing tells the two
    /// apart, and the answer's bound applies whole.
    answered_cold: Duration,
    /// Whether 2xx slots keep margins of their own (not with a fixed margin).
    per_slot: bool,
    /// The least margin of one slot.
    slot_floor: Duration,
    /// Each endpoint's least latency, once trusted.
    least: [Option<Duration>; margin::ENDPOINTS],
}

impl Spans {
    /// When `stamp` stops counting: `W` and the margin after its send, or `W` and
    /// [`ANSWER_SLACK`] after its answer if that is earlier. The margin: for a 2xx on an
    /// endpoint whose latencies are trusted, its own (at most the margin in force); else the
    /// margin in force. A slot sent cold keeps the cold margin until answered, then at least
    /// [`Spans::answered_cold`] (its own margin if wider), and the answer's bound whole when
    /// its endpoint is not trusted: no margin was measured when it went.
    fn frees(&self, stamp: &Stamp) -> Instant {
        let own = stamp.ok.and_then(|(endpoint, latency)| {
            let least = (*self.least.get(endpoint)?)?;
            Some(margin::Margin::slot_margin(latency, least, self.slot_floor))
        });
        let margin = match (stamp.cold, stamp.answered, own) {
            (false, _, Some(own)) if self.per_slot => Some(own.min(self.warm)),
            (false, _, _) => Some(self.warm),
            (true, None, _) => Some(self.cold),
            (true, Some(_), Some(own)) => Some(own.max(self.answered_cold)),
            // A 2xx on an endpoint not trusted yet: its answer alone bounds it.
            (true, Some(_), None) if stamp.ok.is_some() => None,
            (true, Some(_), None) => Some(self.answered_cold),
        };
        let by_answer = stamp
            .answered
            .map(|answer| later(answer, self.window + ANSWER_SLACK));
        let by_margin = margin.map(|m| later(stamp.at, self.window + m));
        // At least one of the two: a slot without a margin of its own was answered.
        by_margin
            .into_iter()
            .chain(by_answer)
            .min()
            .unwrap_or_else(|| later(stamp.at, self.window + self.cold))
    }
}

/// `at + d`, or as far as the clock goes (a day, else `at`) if that does not fit.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(at)
}

/// Adds `k` sends to `log`, each at the earliest it could go from `from` on after the ones
/// before it, and returns their times.
fn queue_up(log: &mut Vec<Stamp>, from: Instant, spans: Spans, n: usize, k: usize) -> Vec<Instant> {
    let mut t = from;
    let mut times = Vec::with_capacity(k);
    for _ in 0..k {
        t = earliest(log, t, spans, n);
        times.push(t);
        log.push(Stamp {
            at: t,
            cold: false,
            answered: None,
            refused: false,
            ok: None,
        });
    }
    times
}

/// The earliest instant from `from` on at which fewer than `n` of `log` (none sent after
/// `from`) are still busy: the `n`-th latest release decides (releases are not in send
/// order: answers and cold margins move them).
fn earliest(log: &[Stamp], from: Instant, spans: Spans, n: usize) -> Instant {
    if log.len() < n {
        return from;
    }
    let mut frees: Vec<Instant> = log.iter().map(|t| spans.frees(t)).collect();
    let k = frees.len() - n;
    let (_, nth, _) = frees.select_nth_unstable(k);
    from.max(*nth)
}
