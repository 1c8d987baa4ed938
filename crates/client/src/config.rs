//! What a client needs to know: where the platform is, who we are, and how patient to be.

use std::{fmt, time::Duration};

use adsync_domain::RateLimit;
use secrecy::SecretString;
use url::Url;

use crate::shared_budget::BudgetRef;

/// The e-mail and password exchanged for tokens. The password is secret from the moment it
/// is read; `Debug` shows `[REDACTED]`.
#[derive(Clone)]
pub struct Credentials {
    /// Account e-mail.
    pub email: String,
    /// Account password.
    pub password: SecretString,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("email", &self.email)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// How transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (503s, timeouts, resets, malformed bodies).
    pub max_attempts: usize,
    /// First backoff delay; it doubles each retry, with jitter.
    pub min_delay: Duration,
    /// Cap on any one delay.
    pub max_delay: Duration,
    /// 429s tolerated within one attempt (each holds the client id for `retry_after`).
    pub max_rate_limited: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_rate_limited: 3,
        }
    }
}

impl RetryPolicy {
    /// Every delay divided by `factor`, to match a time-scaled simulator.
    pub fn scaled(self, factor: f64) -> Self {
        let f = factor.max(1e-9);
        Self {
            min_delay: self.min_delay.div_f64(f),
            max_delay: self.max_delay.div_f64(f),
            ..self
        }
    }
}

/// Everything [`crate::AdClient::new`] needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Platform root, e.g. `https://ads.example.com/` (`/api/...` and `/auth/token` hang off it).
    pub base_url: Url,
    /// Sent as `X-Client-ID` on every call; the platform's rate limit is per client id.
    pub client_id: String,
    /// Exchanged for bearer tokens.
    pub credentials: Credentials,
    /// The platform's limit for this client id.
    pub rate_limit: RateLimit,
    /// Extra time each limiter slot stays busy. `None` (the default): measured from the
    /// spread of response latencies ([`crate::SlidingWindowLimiter::new`]), starting at
    /// [`crate::SlidingWindowLimiter::default_margin`]. `Some`: this fixed margin, widened only
    /// after an unexpected 429 ([`crate::SlidingWindowLimiter::with_margin`]).
    pub limiter_margin: Option<Duration>,
    /// Whole-request limit (connect, send, wait, read). A hang is abandoned after it.
    pub request_timeout: Duration,
    /// Limit on opening a connection.
    pub connect_timeout: Duration,
    /// Retry budget.
    pub retry: RetryPolicy,
    /// Refresh this long before a token expires; `None`: a tenth of its lifetime, at most 60 s.
    pub token_refresh_margin: Option<Duration>,
    /// Largest 2xx body read, in bytes; a larger one is [`crate::Error::TooLarge`] (checked on
    /// `Content-Length` first, then while reading). Error bodies are read up to 64 KiB only.
    pub max_body_bytes: usize,
    /// Longest wait a 429 or 503 may impose (`Retry-After` header or `retry_after` in the
    /// body); a longer one is clamped to it, with a warning. `None`: three windows of
    /// [`ClientConfig::rate_limit`].
    pub max_retry_after: Option<Duration>,
    /// The rate budget this client id shares with other processes and tenants, consulted
    /// before every rate-limited send and told of every 429 ([`crate::SharedBudget`]).
    /// `None` (the default): the limiter alone paces this client.
    pub shared_budget: Option<BudgetRef>,
    /// An HTTP client to share (its connection pool and TLS configuration) with the other
    /// clients of the process: a service with a thousand tenants needs one, not a thousand.
    /// `None` (the default): a client of its own, with [`ClientConfig::connect_timeout`].
    pub http: Option<reqwest::Client>,
}

impl ClientConfig {
    /// A configuration with the platform's defaults: 10/60s, 10 s requests, 5 s connects,
    /// bodies up to 32 MiB, server-imposed waits up to three windows.
    pub fn new(base_url: Url, credentials: Credentials) -> Self {
        Self {
            base_url,
            client_id: "adsync".into(),
            credentials,
            rate_limit: RateLimit::PLATFORM_DEFAULT,
            limiter_margin: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            token_refresh_margin: None,
            max_body_bytes: 32 * 1024 * 1024,
            max_retry_after: None,
            shared_budget: None,
            http: None,
        }
    }

    /// The same configuration, spending `budget` (shared with every other holder of this
    /// client id) on top of the limiter.
    pub fn with_shared_budget(mut self, budget: BudgetRef) -> Self {
        self.shared_budget = Some(budget);
        self
    }

    /// The bounds on what the server controls, resolved.
    pub(crate) fn bounds(&self) -> Bounds {
        Bounds {
            timeout: self.request_timeout,
            max_body: self.max_body_bytes,
            max_retry_after: self
                .max_retry_after
                .unwrap_or_else(|| self.rate_limit.window.saturating_mul(3)),
            default_retry_after: self.rate_limit.window,
        }
    }
}

/// How much of the server's word one exchange accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Whole-request limit.
    pub(crate) timeout: Duration,
    /// Largest 2xx body, in bytes.
    pub(crate) max_body: usize,
    /// Longest wait a `Retry-After` may impose.
    pub(crate) max_retry_after: Duration,
    /// The 429 wait when the server gives none (one window), itself clamped.
    pub(crate) default_retry_after: Duration,
}
