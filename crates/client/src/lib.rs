//! The ad platform client: everything it takes to talk to a platform that rate-limits hard,
//! expires tokens, answers 503, hangs and pages its results.
//!
//! [`AdClient`] combines a [`TokenManager`] (single-flight refresh ahead of expiry and on
//! `401 Token expired`), a [`SlidingWindowLimiter`] per client id (no avoidable 429; a 429
//! holds every request of the client), a retry policy (exponential backoff with jitter via
//! backon, asked of [`Error::is_transient`]) and per-request timeouts. Every request gets a
//! tracing span and `metrics` counters; credentials and tokens are secrets that no log line,
//! error or `Debug` output shows.
//!
//! When several processes (or tenants) spend one client id, a [`SharedBudget`] set in
//! [`ClientConfig::shared_budget`] is consulted before each rate-limited send, while the
//! limiter's turn is held, and told of every 429.
//!
//! Nothing the server controls is trusted: bodies are capped ([`Error::TooLarge`]), a body of
//! the wrong shape is a non-transient [`Error::Contract`] rather than an outage, waits it asks
//! for and token lifetimes it announces are clamped, and no server-provided duration meets an
//! `Instant` without checked arithmetic.

mod body;
mod call;
mod config;
mod error;
mod failing;
mod http;
mod limiter;
mod retry;
mod retry_after;
mod send_gate;
mod shared_budget;
mod stats;
mod token;

use std::sync::Arc;

use adsync_domain::{
    CampaignId,
    wire::{CampaignPage, HealthResponse, SyncResponse},
};

use tokio::time::Instant;
use tracing::Instrument;
use url::Url;

pub use config::{ClientConfig, Credentials, RetryPolicy};
pub use error::{Error, Result};
pub use failing::Failing;
pub use limiter::{Permit, Sent, SlidingWindowLimiter};
pub use send_gate::{SendGate, with_send_gate};
pub use shared_budget::{SharedBudget, TakeFuture};
pub use stats::{ClientStats, StatsSnapshot};
pub use token::{Token, TokenManager};

use error::bounded;
use http::{Endpoint, Exchange, request_span};
use retry::{Retrying, with_retries};

/// A client of the ad platform. Cheap to clone; clones share the token, the limiter and the
/// counters.
#[derive(Clone)]
pub struct AdClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    config: ClientConfig,
    tokens: TokenManager,
    limiter: Arc<SlidingWindowLimiter>,
    stats: Arc<ClientStats>,
}

impl std::fmt::Debug for AdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdClient")
            .field("base", &self.inner.base.as_str())
            .field("client_id", &self.inner.config.client_id)
            .finish_non_exhaustive()
    }
}

impl AdClient {
    /// Builds a client with its own limiter: measured margin, or the fixed
    /// [`ClientConfig::limiter_margin`].
    pub fn new(config: ClientConfig) -> Result<Self> {
        let limiter = Arc::new(match config.limiter_margin {
            Some(margin) => SlidingWindowLimiter::with_margin(config.rate_limit, margin),
            None => SlidingWindowLimiter::new(config.rate_limit),
        });
        Self::with_limiter(config, limiter)
    }

    /// An HTTP client as adsync's platform clients use (rustls with ring, adsync's user
    /// agent), to share between many through [`ClientConfig::http`].
    pub fn http_client(connect_timeout: std::time::Duration) -> Result<reqwest::Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .user_agent(concat!("adsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(e.to_string()))
    }

    /// Builds a client that shares `limiter` with others of the same client id (the
    /// platform's budget is per client id, not per connection).
    pub fn with_limiter(config: ClientConfig, limiter: Arc<SlidingWindowLimiter>) -> Result<Self> {
        // reqwest is built with rustls but no default crypto provider (aws-lc-rs is a slow C
        // build); install ring, which sqlx uses too. A second install is a harmless no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut base = config.base_url.clone();
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "{base} is not an http(s) URL; use e.g. http://127.0.0.1:3001"
            )));
        }
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = match &config.http {
            Some(shared) => shared.clone(),
            None => Self::http_client(config.connect_timeout)?,
        };
        let stats = Arc::new(ClientStats::default());
        let tokens = TokenManager::new(
            http.clone(),
            base.join("auth/token")
                .map_err(|e| Error::Config(e.to_string()))?,
            &config.credentials,
            config.bounds(),
            config.retry,
            config.token_refresh_margin,
            stats.clone(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                config,
                tokens,
                limiter,
                stats,
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The limiter this client paces itself with.
    pub fn limiter(&self) -> &Arc<SlidingWindowLimiter> {
        &self.inner.limiter
    }

    /// The rate budget shared with other processes, if one is configured
    /// ([`ClientConfig::shared_budget`]).
    pub fn shared_budget(&self) -> Option<&Arc<dyn SharedBudget>> {
        self.inner.config.shared_budget.as_ref()
    }

    /// The token manager (to authenticate up front, or to inspect the token's generation).
    pub fn tokens(&self) -> &TokenManager {
        &self.inner.tokens
    }

    /// Counters of everything this client did.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The current streak of transient failures (timeouts, 503s, broken connections...), or
    /// `None` once any request succeeds: for a display that says "platform failing for 12 s
    /// (3 attempts): ...; next try in 4 s" instead of an ETA.
    pub fn failing(&self) -> Option<Failing> {
        self.inner.stats.failing()
    }

    /// Obtains a token now, so wrong credentials fail before any other work.
    pub async fn authenticate(&self) -> Result<()> {
        self.inner.tokens.current().await.map(|_| ())
    }

    /// `GET /health`: no auth, not rate-limited, retried like any call.
    pub async fn health(&self) -> Result<HealthResponse> {
        let url = self.url(&["health"])?;
        let inner = &self.inner;
        let exchange = Exchange {
            stats: &inner.stats,
            endpoint: Endpoint::Health,
            bounds: inner.config.bounds(),
            limiter: None,
        };
        let retrying = Retrying {
            policy: &inner.config.retry,
            stats: &inner.stats,
            endpoint: Endpoint::Health,
            limiter: None,
        };
        with_retries(retrying, |attempt| {
            let request = inner.http.get(url.clone());
            let span = request_span("GET", "/health", attempt);
            exchange.run(request, Instant::now()).instrument(span)
        })
        .await
    }

    /// `GET /api/campaigns?page=P&limit=L`: one page, raw records, as the server sent it
    /// (judging `has_more` is the caller's). Retries 5xx (but 501/505), timeouts, broken
    /// connections and truncated bodies with backoff; refreshes the token on
    /// `401 Token expired`; waits out 429s on the limiter. A body of the wrong shape is
    /// [`Error::Contract`] at once, one over the size cap [`Error::TooLarge`].
    pub async fn list_campaigns(&self, page: u64, limit: u64) -> Result<CampaignPage> {
        let mut url = self.url(&["api", "campaigns"])?;
        url.query_pairs_mut()
            .append_pair("page", &page.to_string())
            .append_pair("limit", &limit.to_string());
        self.api_call(Endpoint::ListCampaigns, reqwest::Method::GET, url)
            .await
    }

    /// `POST /api/campaigns/{id}/sync`, retried like [`AdClient::list_campaigns`]. The
    /// platform takes about 2 s to answer. An answer for another campaign is
    /// [`Error::Contract`]; `success: false` is a transient [`Error::Server`].
    pub async fn sync_campaign(&self, id: &CampaignId) -> Result<SyncResponse> {
        let url = self.url(&["api", "campaigns", id.as_str(), "sync"])?;
        let response: SyncResponse = self
            .api_call(Endpoint::SyncCampaign, reqwest::Method::POST, url)
            .await?;
        if response.campaign_id != id.as_str() {
            return Err(Error::Contract {
                what: Endpoint::SyncCampaign.label(),
                detail: format!(
                    "asked to sync {id}, the answer is for {:?}",
                    bounded(&response.campaign_id, 100)
                ),
            });
        }
        if !response.success {
            return Err(Error::Server {
                status: 200,
                message: response.message.as_deref().map_or_else(
                    || "sync reported success: false".into(),
                    |m| bounded(m, 500),
                ),
                retry_after: None,
            });
        }
        Ok(response)
    }

    fn url(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::Config("base URL cannot take a path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }
}
