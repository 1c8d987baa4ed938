//! Operations: liveness, readiness (the database answers within the timeout), Prometheus
//! metrics, and the API's own reference (OpenAPI JSON and a page that renders it offline).

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    observe::{self, QUEUE_DEPTH},
};

/// A health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers `SELECT 1` within the readiness timeout (2 s by default).
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    ))]
pub async fn readyz(State(s): State<AppState>) -> Result<Json<Health>, ApiError> {
    let timeout = s.options.ready_timeout;
    let ping = async {
        match &s.service.store {
            adsync_store::Store::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
            adsync_store::Store::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
        }
    };
    match tokio::time::timeout(timeout, ping).await {
        Ok(Ok(())) => Ok(Json(Health { status: "ready" })),
        Ok(Err(e)) => Err(ApiError::unavailable(&e)),
        Err(_) => Err(ApiError::unavailable(&format_args!(
            "the database did not answer SELECT 1 within {timeout:?}"
        ))),
    }
}

/// Prometheus metrics (text exposition format); the queue depth is read at each scrape.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", body = String,
        content_type = "text/plain")))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    let metrics = observe::init_metrics();
    match tokio::time::timeout(s.options.ready_timeout, s.service.queue.depth()).await {
        Ok(Ok(rows)) => metrics.record(|| {
            for status in ["queued", "running"] {
                let n = rows
                    .iter()
                    .find(|(s, _)| s == status)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!(QUEUE_DEPTH, "status" => status).set(n as f64);
            }
        }),
        Ok(Err(e)) => tracing::warn!(error = %e, "queue depth unavailable for /metrics"),
        Err(_) => tracing::warn!("queue depth timed out for /metrics"),
    }
    metrics.handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics.handle.render(),
    )
        .into_response()
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object,
        content_type = "application/json")))]
pub async fn openapi_json(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        s.openapi_json.as_str().to_owned(),
    )
        .into_response()
}

/// The API reference, rendered in the browser from `openapi.json` by a few lines of inline
/// script: no CDN, works offline.
#[utoipa::path(get, path = "/api/v1/docs", tag = "operations", security(()),
    responses((status = 200, description = "HTML page", body = String,
        content_type = "text/html")))]
pub async fn docs() -> Response {
    let mut response = (StatusCode::OK, Html(include_str!("../docs.html"))).into_response();
    // The page loads nothing but its own inline script and style and openapi.json.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    response
}
