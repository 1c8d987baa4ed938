//! One authenticated, rate-limited call: token first, then the limiter's slot (and the shared
//! budget's, when one is configured), stamped when the request really goes; a 401 costs one
//! shared refresh, a 429 holds the client id (and every holder of its shared budget).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use tracing::Instrument;
use url::Url;

use crate::{
    AdClient, Error, Result, Sent, Token,
    http::{Endpoint, Exchange, ms, request_span},
    retry::{Retrying, with_retries},
};

impl AdClient {
    /// An authenticated, rate-limited call with retries. Within one attempt, a 401 for an
    /// expired or refused token costs one shared refresh and a resend; a 429 holds the whole
    /// client id for `retry_after` and resends, up to `max_rate_limited` times.
    pub(crate) async fn api_call<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        method: reqwest::Method,
        url: Url,
    ) -> Result<T> {
        debug_assert!(endpoint.rate_limited());
        let inner = &self.inner;
        let exchange = Exchange {
            stats: &inner.stats,
            endpoint,
            bounds: inner.config.bounds(),
            limiter: Some(&inner.limiter),
        };
        let retrying = Retrying {
            policy: &inner.config.retry,
            stats: &inner.stats,
            endpoint,
            limiter: Some(&inner.limiter),
        };
        with_retries(retrying, |attempt| {
            let (method, url) = (method.clone(), url.clone());
            async move {
                let mut refreshed = false;
                let mut limited = 0u32;
                loop {
                    let (token, sent) = self.token_and_slot().await?;
                    inner.stats.limiter_wait(sent.waited);
                    let span = request_span(method.as_str(), url.path(), attempt);
                    span.record("waited_ms", ms(sent.waited));
                    let request = inner
                        .http
                        .request(method.clone(), url.clone())
                        .bearer_auth(token.expose())
                        .header("X-Client-ID", &inner.config.client_id);
                    // Boxed: the exchange (reqwest's send and read) is the largest state of
                    // this future, and most of a call's life is spent waiting for its slot; a
                    // service with a thousand tenants keeps thousands of calls waiting.
                    let exchanged = Box::pin(exchange.run(request, sent.at).instrument(span));
                    match exchanged.await {
                        Err(Error::TokenExpired | Error::Unauthorized { .. }) if !refreshed => {
                            refreshed = true;
                            inner.tokens.refresh(Some(token.generation)).await?;
                        }
                        Err(Error::RateLimited { retry_after }) => {
                            let budget = inner.config.shared_budget.as_ref();
                            if let Some(at) = budget.and_then(|b| b.last_other_send()) {
                                inner.limiter.others_sent(at);
                            }
                            inner.limiter.hold(retry_after, sent.at);
                            if let Some(budget) = budget {
                                budget.hold(retry_after);
                            }
                            tracing::warn!(
                                retry_after_ms = ms(retry_after),
                                "rate limited by the platform; holding every request of this client id"
                            );
                            limited += 1;
                            if limited > inner.config.retry.max_rate_limited {
                                return Err(Error::RateLimited { retry_after });
                            }
                        }
                        other => return other,
                    }
                }
            }
        })
        .await
    }

    /// A token, then a slot on the limiter, stamped at the moment the request goes. The
    /// token comes first so that a refresh cannot delay the send past the slot's stamp; if
    /// the wait for the slot outlived the token, a fresh one is taken while the turn is kept
    /// (no stale token sent, no slot lost or counted twice).
    ///
    /// A shared budget is waited for while the turn is held, after the token (its slot is
    /// meant to be used at once): local order and the local log still apply, the shared
    /// budget has the last word. If it fails, the permit is dropped and no local slot is spent.
    async fn token_and_slot(&self) -> Result<(Arc<Token>, Sent)> {
        let inner = &self.inner;
        let token = inner.tokens.current().await?;
        let throttled = inner.stats.throttled();
        let permit = inner.limiter.reserve().await;
        let token = if token.fresh() {
            token
        } else {
            inner.tokens.current().await?
        };
        if let Some(budget) = &inner.config.shared_budget {
            budget.take().await?;
        }
        // The caller's last word (a run's lease), after the wait for the slot.
        crate::send_gate::opened().await;
        let sent = permit.send().await;
        drop(throttled);
        Ok((token, sent))
    }
}
