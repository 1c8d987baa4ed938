//! Bearer tokens: exchanged for Basic credentials, refreshed ahead of expiry and on
//! `401 Token expired`, with one refresh shared by every concurrent caller (single-flight).

use std::{
    sync::{Arc, OnceLock, RwLock},
    time::Duration,
};

use adsync_domain::wire::TokenResponse;
use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use tracing::Instrument;
use url::Url;

use crate::{
    Credentials, Error, RetryPolicy,
    http::{Endpoint, exchange, request_span, with_retries},
    stats::ClientStats,
};

/// A bearer token and what we know of its life.
pub struct Token {
    value: SecretString,
    /// Bumped at each refresh, so a caller can say which token failed it.
    pub generation: u64,
    /// When we received it (our clock).
    pub received_at: Instant,
    /// When we stop using it: expiry minus the refresh margin.
    pub refresh_at: Instant,
    /// Lifetime the server announced.
    pub expires_in: Duration,
    /// The server's `issued_at` (unix seconds), kept for logs.
    pub issued_at: Option<serde_json::Value>,
}

impl Token {
    pub(crate) fn expose(&self) -> &str {
        self.value.expose_secret()
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
    timeout: Duration,
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
        timeout: Duration,
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
            timeout,
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
        guard
            .as_ref()
            .filter(|t| Instant::now() < t.refresh_at)
            .cloned()
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
                None => Instant::now() < t.refresh_at,
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
        let body = with_retries(&self.retry, &self.stats, Endpoint::Auth, |attempt| {
            let request = self
                .http
                .post(self.url.clone())
                .header(reqwest::header::AUTHORIZATION, self.basic.expose_secret());
            let span = request_span("POST", "/auth/token", attempt);
            exchange::<TokenResponse>(
                &self.stats,
                Endpoint::Auth,
                request,
                self.timeout,
                self.timeout,
            )
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
        let expires_in = body
            .expires_in_secs()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| Error::Malformed {
                what: "auth",
                detail: format!("expires_in {} is not a positive duration", body.expires_in),
            })?;
        let margin = self
            .margin
            .unwrap_or_else(|| (expires_in / 10).min(Duration::from_secs(60)))
            .min(expires_in / 2);
        let received_at = Instant::now();
        // Expiry is counted from when we received the token on our own clock, not from the
        // server's `issued_at`: clocks disagree, and a skewed one would either refresh on
        // every call or keep a dead token.
        let token = Arc::new(Token {
            value: SecretString::from(body.access_token),
            generation,
            received_at,
            refresh_at: received_at + expires_in - margin,
            expires_in,
            issued_at: body.issued_at.clone(),
        });
        self.stats.token_refresh();
        tracing::info!(
            generation,
            expires_in_s = expires_in.as_secs_f64(),
            issued_at = ?body.issued_at,
            "obtained access token"
        );
        *self.current.write().expect("token lock") = Some(token.clone());
        Ok(token)
    }
}
