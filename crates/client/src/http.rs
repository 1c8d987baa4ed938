//! One HTTP exchange with the platform: the only place that turns statuses into [`Error`]s.
//! Everything the server controls is bounded here: body sizes, waits it asks for, the length
//! of the messages it sends.

use std::time::Duration;

use adsync_domain::wire::ErrorBody;
use reqwest::RequestBuilder;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::{
    Error, SlidingWindowLimiter,
    body::{decode, read_capped, read_error_body},
    config::Bounds,
    error::bounded,
    retry_after::{rate_limit_wait, server_error_wait},
    stats::ClientStats,
};

/// Longest server message kept in an error.
const MESSAGE_CAP: usize = 500;

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

/// What one exchange needs besides the request.
#[derive(Clone, Copy)]
pub(crate) struct Exchange<'a> {
    pub(crate) stats: &'a ClientStats,
    pub(crate) endpoint: Endpoint,
    pub(crate) bounds: Bounds,
    /// Told the latency of each 2xx (rate-limited endpoints), measured from `sent_at`.
    pub(crate) limiter: Option<&'a SlidingWindowLimiter>,
}

impl Exchange<'_> {
    /// Sends one request, dispatched at `sent_at`, and classifies the answer: a 2xx body is
    /// decoded as `T`; anything else becomes an [`Error`].
    pub(crate) async fn run<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        sent_at: Instant,
    ) -> Result<T, Error> {
        let result = self.send(request, sent_at).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        let label = self.endpoint.label();
        self.stats.response(label, outcome);
        let elapsed = sent_at.elapsed();
        metrics::histogram!("adsync_client_request_duration_seconds", "endpoint" => label)
            .record(elapsed.as_secs_f64());
        let span = tracing::Span::current();
        span.record("outcome", outcome);
        span.record("latency_ms", elapsed.as_millis() as u64);
        tracing::debug!(
            endpoint = label,
            outcome,
            latency_ms = elapsed.as_millis() as u64,
            "response"
        );
        result
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        sent_at: Instant,
    ) -> Result<T, Error> {
        let timeout = self.bounds.timeout;
        // The timeout covers the body too: a server that sends headers and then stalls is a
        // hang as well.
        let response = request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Error::from_reqwest(&e, timeout))?;
        let status = response.status();
        tracing::Span::current().record("status", status.as_u16());
        if let Some(limiter) = self.limiter {
            // Whatever the status, the server counted the request by now.
            if status.is_success() {
                limiter.answered_ok(sent_at, self.endpoint.label(), sent_at.elapsed());
            } else {
                limiter.answered(sent_at, status == reqwest::StatusCode::TOO_MANY_REQUESTS);
            }
        }
        if status.is_success() {
            let body = read_capped(response, self.endpoint, self.bounds.max_body, timeout).await?;
            return decode(&body, self.endpoint);
        }
        let headers = response.headers().clone();
        let body = read_error_body(response).await;
        let error: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        let message = || bounded(&error.summary(), MESSAGE_CAP);
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
                    Error::InvalidCredentials { message: message() }
                } else {
                    Error::Unauthorized { message: message() }
                }
            }
            429 => Error::RateLimited {
                retry_after: rate_limit_wait(
                    &headers,
                    error.retry_after_secs(),
                    self.bounds.default_retry_after,
                    self.bounds.max_retry_after,
                ),
            },
            code @ 500..=599 => Error::Server {
                status: code,
                message: message(),
                retry_after: server_error_wait(&headers, self.bounds.max_retry_after),
            },
            code => Error::Rejected {
                status: code,
                message: message(),
            },
        })
    }
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

/// A duration as whole milliseconds, for log fields.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
