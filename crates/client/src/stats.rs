//! Counters of what the client did, kept twice: as `metrics` counters for Prometheus (all
//! clients of the process) and as plain atomics per client, which a sync run reads for its
//! summary. Also the time the client spent throttled (the union of its waits on the
//! limiter) and its current streak of transient failures.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use serde::Serialize;
use tokio::time::Instant;

use crate::failing::{Failing, Streak};

/// Live counters of one client.
#[derive(Debug, Default)]
pub struct ClientStats {
    requests: AtomicU64,
    ok: AtomicU64,
    rate_limited: AtomicU64,
    server_errors: AtomicU64,
    timeouts: AtomicU64,
    transport_errors: AtomicU64,
    malformed: AtomicU64,
    rejected: AtomicU64,
    unauthorized: AtomicU64,
    retries: AtomicU64,
    token_refreshes: AtomicU64,
    limiter_wait_us: AtomicU64,
    throttle: Mutex<Throttle>,
    streak: Streak,
}

/// Requests waiting on the limiter right now, since when, and the throttled time so far.
#[derive(Debug, Default)]
struct Throttle {
    waiting: usize,
    since: Option<Instant>,
    total_us: u64,
}

/// One request's wait on the limiter; the throttled interval of the client lasts while at
/// least one of these is alive. Dropping it (also by cancellation) ends the wait.
pub(crate) struct ThrottleGuard<'a>(&'a ClientStats);

impl Drop for ThrottleGuard<'_> {
    fn drop(&mut self) {
        let mut t = self.0.throttle.lock().expect("throttle lock");
        t.waiting -= 1;
        if t.waiting == 0
            && let Some(since) = t.since.take()
        {
            t.total_us = t
                .total_us
                .saturating_add(since.elapsed().as_micros() as u64);
        }
    }
}

/// A copy of [`ClientStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// HTTP requests sent (every attempt, token requests included).
    pub requests: u64,
    /// 2xx with a well-formed body.
    pub ok: u64,
    /// 429s received.
    pub rate_limited: u64,
    /// 5xx received.
    pub server_errors: u64,
    /// Requests abandoned at the timeout.
    pub timeouts: u64,
    /// Connections that failed or broke.
    pub transport_errors: u64,
    /// 2xx with a truncated, non-JSON, wrong-shaped or oversized body.
    pub malformed: u64,
    /// Other 4xx.
    pub rejected: u64,
    /// 401s (expired or refused tokens, bad credentials).
    pub unauthorized: u64,
    /// Retries after a transient failure (backoff sleeps).
    pub retries: u64,
    /// Tokens obtained (the first one included).
    pub token_refreshes: u64,
    /// Microseconds spent waiting on the rate limiter, all requests summed (ten requests
    /// waiting one second together count ten seconds).
    pub limiter_wait_us: u64,
    /// Microseconds of wall time during which at least one request waited on the rate
    /// limiter (the union of the waits), for "throttled 9.1 s of 10.2 s".
    pub throttled_us: u64,
}

impl StatsSnapshot {
    /// Counter-wise `self - earlier`, for the share of one run.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests - earlier.requests,
            ok: self.ok - earlier.ok,
            rate_limited: self.rate_limited - earlier.rate_limited,
            server_errors: self.server_errors - earlier.server_errors,
            timeouts: self.timeouts - earlier.timeouts,
            transport_errors: self.transport_errors - earlier.transport_errors,
            malformed: self.malformed - earlier.malformed,
            rejected: self.rejected - earlier.rejected,
            unauthorized: self.unauthorized - earlier.unauthorized,
            retries: self.retries - earlier.retries,
            token_refreshes: self.token_refreshes - earlier.token_refreshes,
            limiter_wait_us: self.limiter_wait_us - earlier.limiter_wait_us,
            throttled_us: self.throttled_us - earlier.throttled_us,
        }
    }
}

impl ClientStats {
    /// Records one response (or failure) of `endpoint` with the given outcome label.
    pub(crate) fn response(&self, endpoint: &'static str, outcome: &'static str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if outcome == "ok" {
            self.streak.succeeded();
        }
        let counter = match outcome {
            "ok" => &self.ok,
            "rate_limited" => &self.rate_limited,
            "server_error" => &self.server_errors,
            "timeout" => &self.timeouts,
            "connect" | "transport" => &self.transport_errors,
            "malformed" | "contract" | "too_large" => &self.malformed,
            "unauthorized" | "token_expired" | "invalid_credentials" => &self.unauthorized,
            _ => &self.rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("adsync_client_requests_total", "endpoint" => endpoint, "outcome" => outcome)
            .increment(1);
        if outcome == "rate_limited" {
            metrics::counter!("adsync_client_rate_limited_total", "endpoint" => endpoint)
                .increment(1);
        }
    }

    pub(crate) fn retry(&self, endpoint: &'static str) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("adsync_client_retries_total", "endpoint" => endpoint).increment(1);
    }

    pub(crate) fn token_refresh(&self) {
        self.token_refreshes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("adsync_client_token_refreshes_total").increment(1);
    }

    pub(crate) fn limiter_wait(&self, waited: std::time::Duration) {
        self.limiter_wait_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        metrics::counter!("adsync_client_limiter_wait_microseconds_total")
            .increment(waited.as_micros() as u64);
        metrics::histogram!("adsync_client_limiter_wait_seconds").record(waited.as_secs_f64());
    }

    /// Starts one request's wait on the limiter; the wait ends when the guard drops.
    pub(crate) fn throttled(&self) -> ThrottleGuard<'_> {
        let mut t = self.throttle.lock().expect("throttle lock");
        if t.waiting == 0 {
            t.since = Some(Instant::now());
        }
        t.waiting += 1;
        ThrottleGuard(self)
    }

    /// The streak of transient failures.
    pub(crate) fn streak(&self) -> &Streak {
        &self.streak
    }

    /// The current streak of transient failures, if any.
    pub(crate) fn failing(&self) -> Option<Failing> {
        self.streak.current()
    }

    fn throttled_us(&self) -> u64 {
        let t = self.throttle.lock().expect("throttle lock");
        let ongoing = t.since.map_or(0, |s| s.elapsed().as_micros() as u64);
        t.total_us.saturating_add(ongoing)
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: g(&self.requests),
            ok: g(&self.ok),
            rate_limited: g(&self.rate_limited),
            server_errors: g(&self.server_errors),
            timeouts: g(&self.timeouts),
            transport_errors: g(&self.transport_errors),
            malformed: g(&self.malformed),
            rejected: g(&self.rejected),
            unauthorized: g(&self.unauthorized),
            retries: g(&self.retries),
            token_refreshes: g(&self.token_refreshes),
            limiter_wait_us: g(&self.limiter_wait_us),
            throttled_us: self.throttled_us(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn throttled_time_is_the_union_of_the_waits_not_their_sum() {
        let stats = ClientStats::default();
        let step = Duration::from_secs(1);
        // 0..3 s: a waits; 1..2 s: b waits too; 3..4 s: nobody; 4..5 s: c waits.
        let a = stats.throttled();
        tokio::time::advance(step).await;
        let b = stats.throttled();
        tokio::time::advance(step).await;
        drop(b);
        tokio::time::advance(step).await;
        drop(a);
        tokio::time::advance(step).await;
        let c = stats.throttled();
        tokio::time::advance(step).await;
        assert_eq!(
            stats.snapshot().throttled_us,
            4_000_000,
            "the ongoing wait counts"
        );
        drop(c);
        tokio::time::advance(step).await;

        assert_eq!(stats.snapshot().throttled_us, 4_000_000);
    }
}
