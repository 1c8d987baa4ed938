//! One HTTP exchange with the platform and the retry loop around it: the only place that
//! turns statuses into [`Error`]s and decides on backoff.

use std::{sync::Arc, time::Duration};

use adsync_domain::wire::ErrorBody;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use reqwest::{RequestBuilder, StatusCode, header::HeaderMap};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::{Error, RetryPolicy, stats::ClientStats};

/// The platform's endpoints, as labels for spans and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Auth,
    ListCampaigns,
    SyncCampaign,
    Health,
}

impl Endpoint {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Endpoint::Auth => "auth",
            Endpoint::ListCampaigns => "list_campaigns",
            Endpoint::SyncCampaign => "sync_campaign",
            Endpoint::Health => "health",
        }
    }

    /// Everything under `/api` shares the client id's rate limit.
    pub(crate) fn rate_limited(self) -> bool {
        matches!(self, Endpoint::ListCampaigns | Endpoint::SyncCampaign)
    }
}

/// Sends one request and classifies the answer. A 2xx body is decoded as `T`; anything else
/// becomes an [`Error`]. `window` is the 429 wait of last resort (no header, no body value).
pub(crate) async fn exchange<T: DeserializeOwned>(
    stats: &ClientStats,
    endpoint: Endpoint,
    request: RequestBuilder,
    timeout: Duration,
    window: Duration,
) -> Result<T, Error> {
    let started = Instant::now();
    let result = send(request, timeout, window)
        .await
        .and_then(|(status, body)| {
            debug_assert!(status.is_success());
            serde_json::from_slice::<T>(&body).map_err(|e| Error::Malformed {
                what: endpoint.label(),
                detail: e.to_string(),
            })
        });
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    stats.response(endpoint.label(), outcome);
    let elapsed = started.elapsed();
    metrics::histogram!("adsync_client_request_duration_seconds", "endpoint" => endpoint.label())
        .record(elapsed.as_secs_f64());
    let span = tracing::Span::current();
    span.record("outcome", outcome);
    span.record("latency_ms", elapsed.as_millis() as u64);
    tracing::debug!(
        endpoint = endpoint.label(),
        outcome,
        latency_ms = elapsed.as_millis() as u64,
        "response"
    );
    result
}

async fn send(
    request: RequestBuilder,
    timeout: Duration,
    window: Duration,
) -> Result<(StatusCode, Bytes), Error> {
    let response = request
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| Error::from_reqwest(&e, timeout))?;
    let status = response.status();
    tracing::Span::current().record("status", status.as_u16());
    let headers = response.headers().clone();
    // The body is read under the same timeout: a server that sends headers and then stalls
    // is a hang too.
    let body = response
        .bytes()
        .await
        .map_err(|e| Error::from_reqwest(&e, timeout))?;
    if status.is_success() {
        return Ok((status, body));
    }
    let error: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
    Err(match status.as_u16() {
        401 => {
            let kind = error
                .error
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if kind.contains("expired") {
                Error::TokenExpired
            } else if kind.contains("credentials") {
                Error::InvalidCredentials {
                    message: error.summary(),
                }
            } else {
                Error::Unauthorized {
                    message: error.summary(),
                }
            }
        }
        429 => Error::RateLimited {
            retry_after: retry_after_header(&headers)
                .or_else(|| {
                    error
                        .retry_after_secs()
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                })
                .unwrap_or(window),
        },
        code @ 500..=599 => Error::Server {
            status: code,
            message: error.summary(),
            retry_after: retry_after_header(&headers),
        },
        code => Error::Rejected {
            status: code,
            message: error.summary(),
        },
    })
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub(crate) fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Runs `op` until it succeeds, fails for good, or the policy's attempts are spent. Delays grow
/// exponentially with jitter, never below a `Retry-After` the server sent and never above
/// the policy's cap.
pub(crate) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    stats: &Arc<ClientStats>,
    endpoint: Endpoint,
    mut op: F,
) -> Result<T, Error>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_attempts.saturating_sub(1))
        .with_jitter();
    let max_delay = policy.max_delay;
    let mut attempt = 0u32;
    (move || {
        attempt += 1;
        op(attempt)
    })
    .retry(backoff)
    .when(Error::is_transient)
    .adjust(move |err, delay| {
        // backon's jitter can add up to one more delay on top; the cap is the cap.
        delay.map(|d| d.max(err.retry_after().unwrap_or_default()).min(max_delay))
    })
    .notify(|err, delay| {
        stats.retry(endpoint.label());
        // Expected weather on this platform: info, not warn. What is unexpected (a 429, a call
        // that failed after all its retries, the circuit opening) is logged as a warning.
        tracing::info!(
            endpoint = endpoint.label(),
            error = %err,
            retry_in_ms = delay.as_millis() as u64,
            "transient failure, retrying"
        );
    })
    .await
}

/// The span of one HTTP request: method, path, attempt, then status, outcome, latency and the
/// wait on the limiter as they become known.
pub(crate) fn request_span(method: &str, path: &str, attempt: u32) -> tracing::Span {
    tracing::info_span!(
        "request",
        method,
        path,
        attempt,
        status = tracing::field::Empty,
        outcome = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
        waited_ms = tracing::field::Empty,
    )
}
