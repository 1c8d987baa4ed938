//! Counters of what the client did, kept twice: as `metrics` counters for Prometheus (all
//! clients of the process) and as plain atomics per client, which a sync run reads for its
//! summary.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

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
    /// 2xx with a truncated or unexpected body.
    pub malformed: u64,
    /// Other 4xx.
    pub rejected: u64,
    /// 401s (expired or refused tokens, bad credentials).
    pub unauthorized: u64,
    /// Retries after a transient failure (backoff sleeps).
    pub retries: u64,
    /// Tokens obtained (the first one included).
    pub token_refreshes: u64,
    /// Microseconds spent waiting on the rate limiter, all requests summed.
    pub limiter_wait_us: u64,
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
        }
    }
}

impl ClientStats {
    /// Records one response (or failure) of `endpoint` with the given outcome label.
    pub(crate) fn response(&self, endpoint: &'static str, outcome: &'static str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let counter = match outcome {
            "ok" => &self.ok,
            "rate_limited" => &self.rate_limited,
            "server_error" => &self.server_errors,
            "timeout" => &self.timeouts,
            "connect" | "transport" => &self.transport_errors,
            "malformed" => &self.malformed,
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
        }
    }
}
