//! The retry loop around a call: exponential backoff with jitter (backon), asked of
//! [`Error::is_transient`]. It logs the delay a retry will really wait (its backoff plus the
//! predicted wait on the rate limiter) and keeps the client's streak of failures.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;

use crate::{
    Error, RetryPolicy, SlidingWindowLimiter,
    http::{Endpoint, ms},
    stats::ClientStats,
};

/// Who is retrying what.
#[derive(Clone, Copy)]
pub(crate) struct Retrying<'a> {
    pub(crate) policy: &'a RetryPolicy,
    pub(crate) stats: &'a ClientStats,
    pub(crate) endpoint: Endpoint,
    /// The limiter a retry will queue on (rate-limited endpoints).
    pub(crate) limiter: Option<&'a SlidingWindowLimiter>,
}

/// Runs `op` until it succeeds, fails for good, or the policy's attempts are spent. Delays grow
/// exponentially with jitter, never below a `Retry-After` the server sent and never above
/// the policy's cap.
pub(crate) async fn with_retries<T, F, Fut>(ctx: Retrying<'_>, mut op: F) -> Result<T, Error>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let policy = ctx.policy;
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_attempts.saturating_sub(1))
        .with_jitter();
    let max_delay = policy.max_delay;
    let mut attempt = 0u32;
    let result = (move || {
        attempt += 1;
        op(attempt)
    })
    .retry(backoff)
    .when(Error::is_transient)
    .adjust(move |err, delay| {
        // backon's jitter can add up to one more delay on top; the cap is the cap.
        delay.map(|d| d.max(err.retry_after().unwrap_or_default()).min(max_delay))
    })
    .notify(|err, backoff| {
        let label = ctx.endpoint.label();
        ctx.stats.retry(label);
        let rate_limit_wait = ctx
            .limiter
            .map_or(Duration::ZERO, |l| l.predicted_wait(backoff));
        let retry_in = backoff.saturating_add(rate_limit_wait);
        ctx.stats
            .streak()
            .failed(err, Instant::now().checked_add(retry_in));
        // Expected weather on this platform: info, not warn. What is unexpected (a 429, a call
        // that failed after all its retries, the circuit opening) is logged as a warning.
        tracing::info!(
            endpoint = label,
            error = %err,
            retry_in_ms = ms(retry_in),
            backoff_ms = ms(backoff),
            rate_limit_wait_ms = ms(rate_limit_wait),
            "transient failure, retrying"
        );
    })
    .await;
    if let Err(e) = &result
        && e.is_transient()
    {
        ctx.stats.streak().failed(e, None);
    }
    result
}
