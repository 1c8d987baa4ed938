//! What every `/api` request passes before its handler: the in-flight count, the arrival
//! jitter, and the per-client sliding window (with the 429's overridable `retry_after`).

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Json,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use rand::Rng;
use serde_json::json;
use tokio::time::Instant;

use crate::{faults::secs_json, server::SimState};

/// Counts `/api` requests in flight, hangs and jitter waits included, and keeps the peak.
pub async fn track_in_flight(
    State(state): State<Arc<SimState>>,
    req: Request,
    next: Next,
) -> Response {
    struct Guard<'a>(&'a AtomicU64);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let now = state.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    {
        let mut stats = state.stats.lock().expect("stats lock");
        stats.peak_concurrency = stats.peak_concurrency.max(now);
    }
    let _guard = Guard(&state.in_flight);
    next.run(req).await
}

/// Holds each request a uniform random time in `[0, arrival_jitter]` (real time) before the
/// handler sees it: the token check and the rate-limit window's arrival stamp come after,
/// as on a platform that queues requests before it looks at them.
pub async fn arrival_jitter(
    State(state): State<Arc<SimState>>,
    req: Request,
    next: Next,
) -> Response {
    let max = state.config.arrival_jitter;
    if !max.is_zero() {
        let max_nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        let wait = Duration::from_nanos(
            state
                .jitter_rng
                .lock()
                .expect("jitter rng lock")
                .random_range(0..=max_nanos),
        );
        tokio::time::sleep(wait).await;
    }
    next.run(req).await
}

/// The reference's sliding window: a request is refused when `N` requests of the same client
/// arrived less than `W` ago. A refused request is not recorded.
pub fn rate_rejection(state: &SimState, headers: &HeaderMap, endpoint: &str) -> Option<Response> {
    let client = headers
        .get("x-client-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("default")
        .to_owned();
    let limit = state.config.effective_rate_limit();
    let now = Instant::now();
    let allowed = {
        let mut windows = state.windows.lock().expect("windows lock");
        let log = windows.entry(client.clone()).or_default();
        while log
            .front()
            .is_some_and(|t| now.duration_since(*t) >= limit.window)
        {
            log.pop_front();
        }
        let allowed = log.len() < limit.requests as usize;
        if allowed {
            log.push_back(now);
        }
        allowed
    };
    if let Some(log) = &state.arrivals {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let outcome = if allowed { "ok" } else { "429" };
        let mut log = log.lock().expect("arrivals lock");
        if let Err(e) = writeln!(log, "{at:.6} {client} {endpoint} {outcome}") {
            tracing::debug!(error = %e, "arrivals log line not written");
        }
    }
    {
        let mut stats = state.stats.lock().expect("stats lock");
        let c = stats.clients.entry(client).or_default();
        c.requests += 1;
        if !allowed {
            c.rate_limited += 1;
            stats.rate_limited += 1;
        }
    }
    if allowed {
        return None;
    }
    state.record(endpoint, "429");
    Some(too_many_requests(state, limit.requests))
}

/// The 429, with the configured overrides of its body's `retry_after` and of its header.
fn too_many_requests(state: &SimState, requests: u32) -> Response {
    let config = &state.config;
    let retry_after = config.scaled(config.rate_limit.window);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "error": "Rate limit exceeded",
            "message": format!("Too many requests. Limit: {requests} per minute"),
            "retry_after": config
                .retry_after_body
                .clone()
                .unwrap_or_else(|| secs_json(retry_after)),
        })),
    )
        .into_response();
    let header_value = match &config.retry_after_header_value {
        Some(text) => HeaderValue::from_str(text)
            .inspect_err(|_| tracing::warn!(?text, "not a valid Retry-After header: not sent"))
            .ok(),
        None if config.retry_after_header => Some(HeaderValue::from(
            retry_after.as_secs_f64().ceil().max(1.0) as u64,
        )),
        None => None,
    };
    if let Some(value) = header_value {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}
