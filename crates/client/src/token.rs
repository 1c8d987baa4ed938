//! Bearer tokens: exchanged for Basic credentials, refreshed ahead of expiry and on
//! `401 Token expired`, with one refresh shared by every concurrent caller (single-flight).
//!
//! The lifetime the server announces is a hint, not a fact to compute with blindly: more than
//! a day is clamped to a day; none, zero, negative or not a number means "unknown", and the
//! token is then used until the server says it expired (401), for a day at most.

use std::{
    sync::{Arc, OnceLock, RwLock},
    time::Duration,
};

use adsync_domain::wire::TokenResponse;
use base64::{Engine, engine::general_purpose::STANDARD};
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use tracing::Instrument;
use url::Url;

use crate::{
    Credentials, Error, RetryPolicy,
    config::Bounds,
    error::bounded,
    http::{Endpoint, Exchange, request_span},
    retry::{Retrying, with_retries},
    stats::ClientStats,
};

/// The longest a token is trusted without a 401, whatever the server announced.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A bearer token and what we know of its life.
pub struct Token {
    value: SecretString,
    /// Bumped at each refresh, so a caller can say which token failed it.
    pub generation: u64,
    /// When we received it (our clock).
    pub received_at: Instant,
    /// When we stop using it: expiry minus the refresh margin; a day after `received_at` when
    /// the lifetime is unknown.
    pub refresh_at: Instant,
    /// Lifetime the server announced, clamped to a day; `None` when it announced none usable
    /// (missing, not a number, zero or negative).
    pub expires_in: Option<Duration>,
    /// The server's `issued_at` (unix seconds), as sent; informational, never computed with.
    pub issued_at: Option<serde_json::Value>,
}

impl Token {
    pub(crate) fn expose(&self) -> &str {
        self.value.expose_secret()
    }

    /// Whether the token may still be sent (it is not due for refresh).
    pub(crate) fn fresh(&self) -> bool {
        Instant::now() < self.refresh_at
    }
}

/// What an announced `expires_in` (seconds, when a finite number) means to us.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lifetime {
    /// A usable lifetime.
    Known(Duration),
    /// More than [`MAX_LIFETIME`]: clamped to it.
    Clamped,
    /// None usable: missing, not a number, zero or negative.
    Unknown,
}

impl Lifetime {
    fn of(secs: Option<f64>) -> Self {
        match secs {
            Some(s) if s > 0.0 => match Duration::try_from_secs_f64(s) {
                Ok(d) if d <= MAX_LIFETIME => Lifetime::Known(d),
                _ => Lifetime::Clamped,
            },
            _ => Lifetime::Unknown,
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"[REDACTED]")
            .field("generation", &self.generation)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Hands out a valid token, refreshing it at most once for any number of concurrent callers.
pub struct TokenManager {
    http: reqwest::Client,
    url: Url,
    basic: SecretString,
    bounds: Bounds,
    retry: RetryPolicy,
    margin: Option<Duration>,
    stats: Arc<ClientStats>,
    current: RwLock<Option<Arc<Token>>>,
    refresh: tokio::sync::Mutex<()>,
    // Credentials do not change within a process: once refused, every caller gets the same
    // answer without another request (no retry storm against the auth endpoint).
    refused: OnceLock<Error>,
}

impl TokenManager {
    pub(crate) fn new(
        http: reqwest::Client,
        url: Url,
        credentials: &Credentials,
        bounds: Bounds,
        retry: RetryPolicy,
        margin: Option<Duration>,
        stats: Arc<ClientStats>,
    ) -> Self {
        let pair = format!(
            "{}:{}",
            credentials.email,
            credentials.password.expose_secret()
        );
        Self {
            http,
            url,
            basic: SecretString::from(format!("Basic {}", STANDARD.encode(pair))),
            bounds,
            retry,
            margin,
            stats,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            refused: OnceLock::new(),
        }
    }

    fn usable(&self) -> Option<Arc<Token>> {
        let guard = self.current.read().expect("token lock");
        guard.as_ref().filter(|t| t.fresh()).cloned()
    }

    /// A token that is not near expiry, fetching one if needed.
    pub async fn current(&self) -> Result<Arc<Token>, Error> {
        if let Some(err) = self.refused.get() {
            return Err(err.clone());
        }
        match self.usable() {
            Some(t) => Ok(t),
            None => self.refresh(None).await,
        }
    }

    /// Replaces the token. With `Some(generation)`, a token newer than that one is reused, so
    /// fifty callers that saw the same token fail cause one refresh, not fifty.
    pub async fn refresh(&self, failed: Option<u64>) -> Result<Arc<Token>, Error> {
        let _single_flight = self.refresh.lock().await;
        if let Some(err) = self.refused.get() {
            return Err(err.clone());
        }
        let newer = {
            let guard = self.current.read().expect("token lock");
            guard.as_ref().cloned().filter(|t| match failed {
                Some(g) => t.generation > g,
                None => t.fresh(),
            })
        };
        if let Some(t) = newer {
            return Ok(t);
        }
        let generation = self
            .current
            .read()
            .expect("token lock")
            .as_ref()
            .map_or(1, |t| t.generation + 1);
        let exchange = Exchange {
            stats: &self.stats,
            endpoint: Endpoint::Auth,
            bounds: self.bounds,
            limiter: None,
        };
        let retrying = Retrying {
            policy: &self.retry,
            stats: &self.stats,
            endpoint: Endpoint::Auth,
            limiter: None,
        };
        let body = with_retries(retrying, |attempt| {
            let request = self
                .http
                .post(self.url.clone())
                .header(reqwest::header::AUTHORIZATION, self.basic.expose_secret());
            let span = request_span("POST", "/auth/token", attempt);
            exchange
                .run::<TokenResponse>(request, Instant::now())
                .instrument(span)
        })
        .await;
        let body = match body {
            Ok(b) => b,
            Err(Error::InvalidCredentials { message } | Error::Unauthorized { message }) => {
                let err = Error::InvalidCredentials { message };
                let _ = self.refused.set(err.clone());
                return Err(err);
            }
            Err(e) => return Err(e),
        };
        let token = Arc::new(self.token_from(body, generation)?);
        *self.current.write().expect("token lock") = Some(token.clone());
        Ok(token)
    }

    /// Checks a token answer and works out when to refresh it, on our own clock: expiry is
    /// counted from when we received the token, not from the server's `issued_at` (clocks
    /// disagree, and a skewed one would either refresh on every call or keep a dead token).
    fn token_from(&self, body: TokenResponse, generation: u64) -> Result<Token, Error> {
        let contract = |detail: &str| Error::Contract {
            what: Endpoint::Auth.label(),
            detail: detail.into(),
        };
        if body.access_token.trim().is_empty() {
            return Err(contract("access_token is empty"));
        }
        if HeaderValue::from_str(&format!("Bearer {}", body.access_token)).is_err() {
            return Err(contract(
                "access_token holds characters an HTTP header cannot carry",
            ));
        }
        let announced = || bounded(&body.expires_in.to_string(), 64);
        let expires_in = match Lifetime::of(body.expires_in_secs()) {
            Lifetime::Known(d) => Some(d),
            Lifetime::Clamped => {
                tracing::warn!(
                    generation,
                    expires_in = %announced(),
                    "the ad platform announced a token lifetime over a day; assuming a day"
                );
                Some(MAX_LIFETIME)
            }
            Lifetime::Unknown => {
                tracing::warn!(
                    generation,
                    expires_in = %announced(),
                    "the ad platform announced no usable token lifetime; using the token until it answers 401, for a day at most"
                );
                None
            }
        };
        let refresh_after = match expires_in {
            Some(life) => {
                let margin = self
                    .margin
                    .unwrap_or_else(|| (life / 10).min(Duration::from_secs(60)))
                    .min(life / 2);
                life - margin
            }
            None => MAX_LIFETIME,
        };
        let received_at = Instant::now();
        let issued_at = body.issued_at;
        self.stats.token_refresh();
        tracing::info!(
            generation,
            expires_in_s = expires_in.map(|d| d.as_secs_f64()),
            issued_at = %issued_at.as_ref().map_or_else(|| "-".into(), |v| bounded(&v.to_string(), 64)),
            "obtained access token"
        );
        Ok(Token {
            value: SecretString::from(body.access_token),
            generation,
            received_at,
            // Cannot overflow with at most a day added; if the clock says otherwise, refresh
            // at the next call rather than panic.
            refresh_at: received_at
                .checked_add(refresh_after)
                .unwrap_or(received_at),
            expires_in,
            issued_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_lifetimes_are_clamped_or_unknown_never_trusted_blindly() {
        assert_eq!(
            Lifetime::of(Some(3600.0)),
            Lifetime::Known(Duration::from_secs(3600))
        );
        assert_eq!(Lifetime::of(Some(86_400.0)), Lifetime::Known(MAX_LIFETIME));
        for huge in [86_401.0, 1e12, 1e300, f64::MAX] {
            assert_eq!(Lifetime::of(Some(huge)), Lifetime::Clamped, "{huge}");
        }
        for none in [None, Some(0.0), Some(-1.0), Some(-0.0), Some(f64::NAN)] {
            assert_eq!(Lifetime::of(none), Lifetime::Unknown, "{none:?}");
        }
    }
}
