//! A sliding-window rate limiter that matches the platform's: at most `N` requests in any
//! window of length `W`, per client id.
//!
//! Why not governor: GCRA with burst `N` lets `N` through at once and then one every `W/N`, so
//! the 11th request would go at `W/10` while the server still counts ten requests in its
//! window: a 429. With burst 1 it never trips the server but runs at one request per `W/N`,
//! about 20% slower than the platform allows for a 100-campaign sync. A log of the last `N`
//! send times is the exact model of the server, in a few dozen lines.

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use adsync_domain::RateLimit;
use tokio::time::Instant;

/// Paces requests of one client id so that the server sees at most `N` per window, and holds
/// all of them when the server answers 429 anyway.
#[derive(Debug)]
pub struct SlidingWindowLimiter {
    limit: RateLimit,
    state: Mutex<State>,
    // Waiters queue here, first come first served (tokio's Mutex is fair), so a steady stream
    // of new callers cannot starve an old one.
    turn: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    sent: VecDeque<Instant>,
    hold_until: Option<Instant>,
    margin: Duration,
}

impl SlidingWindowLimiter {
    /// A limiter for `limit` with the default safety margin.
    pub fn new(limit: RateLimit) -> Self {
        Self::with_margin(limit, Self::default_margin(limit))
    }

    /// A limiter that treats each slot as busy for `W + margin`. The margin covers the time
    /// between our recording a send and the server stamping its arrival, which differs from
    /// request to request; without it a request can reach the server a hair before the one
    /// `N` places earlier has left the server's window.
    pub fn with_margin(limit: RateLimit, margin: Duration) -> Self {
        Self {
            limit,
            state: Mutex::new(State {
                margin,
                ..State::default()
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// 1% of the window, between 10 ms and 1 s: 600 ms at 60 s, 10 ms at a scaled 1 s. Enough
    /// for arrival jitter on a real network, and it costs about 1% of throughput. The 10 ms
    /// floor is for short (simulated) windows: with 2 ms, a loaded 2-core machine delayed
    /// sends by more than that and drew 429s.
    pub fn default_margin(limit: RateLimit) -> Duration {
        (limit.window / 100).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// The limit enforced.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Waits until a request may be sent, records it, and returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let start = Instant::now();
        let _turn = self.turn.lock().await;
        loop {
            let wait = {
                let mut s = self.state.lock().expect("limiter lock");
                let now = Instant::now();
                let span = self.limit.window + s.margin;
                while s
                    .sent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= span)
                {
                    s.sent.pop_front();
                }
                match s.hold_until {
                    Some(until) if until > now => until - now,
                    _ if s.sent.len() < self.limit.requests as usize => {
                        s.hold_until = None;
                        s.sent.push_back(now);
                        return start.elapsed();
                    }
                    _ => span - now.duration_since(*s.sent.front().expect("window is full")),
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The server answered 429: hold every request for `retry_after` from now (a hold never
    /// shortens one already in force), and double the safety margin, up to a fifth of the
    /// window: a 429 the limiter did not predict means arrivals jitter more than it assumed,
    /// and it should not make the same mistake twice.
    pub fn hold(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut s = self.state.lock().expect("limiter lock");
        if s.hold_until.is_none_or(|u| u < until) {
            s.hold_until = Some(until);
        }
        let widened = (s.margin * 2).min(self.limit.window / 5).max(s.margin);
        if widened > s.margin {
            tracing::warn!(
                margin_ms = widened.as_secs_f64() * 1e3,
                "unexpected 429: widening the rate limiter's safety margin"
            );
            s.margin = widened;
        }
    }

    /// The safety margin in force.
    pub fn margin(&self) -> Duration {
        self.state.lock().expect("limiter lock").margin
    }

    /// Slots left in the current window (for progress displays).
    pub fn available(&self) -> usize {
        let s = self.state.lock().expect("limiter lock");
        let now = Instant::now();
        let span = self.limit.window + s.margin;
        let busy = s
            .sent
            .iter()
            .filter(|t| now.duration_since(**t) < span)
            .count();
        (self.limit.requests as usize).saturating_sub(busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limit(n: u32, secs: u64) -> RateLimit {
        RateLimit::new(n, Duration::from_secs(secs)).unwrap()
    }

    /// Checks a list of send times against the server's rule: fewer than `n` earlier sends
    /// less than `w` before each one.
    fn server_would_accept(sends: &[Instant], n: usize, w: Duration) -> bool {
        sends.iter().enumerate().all(|(i, t)| {
            sends[..i]
                .iter()
                .filter(|e| t.duration_since(**e) < w)
                .count()
                < n
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_n_go_at_once_then_n_per_window() {
        let l = SlidingWindowLimiter::with_margin(limit(10, 60), Duration::ZERO);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(l.acquire().await, Duration::ZERO);
        }
        l.acquire().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(60));
        for _ in 0..9 {
            l.acquire().await;
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(60));
        l.acquire().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_never_exceed_the_window() {
        let l = Arc::new(SlidingWindowLimiter::new(limit(10, 60)));
        let sends = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..55)
            .map(|_| {
                let (l, sends) = (l.clone(), sends.clone());
                tokio::spawn(async move {
                    l.acquire().await;
                    sends.lock().unwrap().push(Instant::now());
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut sends = sends.lock().unwrap().clone();
        sends.sort();
        assert_eq!(sends.len(), 55);
        assert!(server_would_accept(&sends, 10, Duration::from_secs(60)));
        // 55 requests need five full windows plus the margin, not more.
        let span = *sends.last().unwrap() - sends[0];
        assert!(span >= Duration::from_secs(300), "{span:?}");
        assert!(
            span <= Duration::from_secs(300) + 5 * Duration::from_millis(600),
            "{span:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_holds_every_request_of_the_client() {
        let l = SlidingWindowLimiter::new(limit(10, 60));
        l.acquire().await;
        l.hold(Duration::from_secs(30));
        let t0 = Instant::now();
        let waited = l.acquire().await;
        assert_eq!(waited, Duration::from_secs(30));
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        // A shorter hold does not cut a longer one short.
        l.hold(Duration::from_secs(20));
        l.hold(Duration::from_secs(5));
        assert_eq!(l.acquire().await, Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn each_unexpected_429_widens_the_margin_up_to_a_fifth_of_the_window() {
        let l = SlidingWindowLimiter::with_margin(limit(10, 1), Duration::from_millis(10));
        l.hold(Duration::ZERO);
        assert_eq!(l.margin(), Duration::from_millis(20));
        for _ in 0..10 {
            l.hold(Duration::ZERO);
        }
        assert_eq!(l.margin(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn available_counts_free_slots() {
        let l = SlidingWindowLimiter::new(limit(3, 1));
        assert_eq!(l.available(), 3);
        l.acquire().await;
        assert_eq!(l.available(), 2);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(l.available(), 3);
    }
}
