//! What the API tells about itself: one log line per request (method, route template, status,
//! latency, key id; never a header) and Prometheus metrics — `adsync_api_requests_total{route,
//! method,status}` and the `adsync_api_request_duration_seconds` histogram, labelled with the
//! matched route template (`/api/v1/runs/{id}`), never the raw path, so the label set stays
//! bounded.
//!
//! The recorder is installed once per process. When another one is already installed (a test
//! binary, an embedding program), the API keeps its own recorder and records its metrics
//! there, so `/metrics` still shows them.

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// The key id of an authenticated request, left on the response for the log line.
#[derive(Debug, Clone)]
pub(crate) struct KeyId(pub String);

const REQUESTS: &str = "adsync_api_requests_total";
const LATENCY: &str = "adsync_api_request_duration_seconds";
/// Gauge set at each scrape from the queue.
pub(crate) const QUEUE_DEPTH: &str = "adsync_queue_depth";
/// Request latencies of an API on a database: a millisecond to tens of seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub(crate) struct Metrics {
    pub handle: PrometheusHandle,
    /// Our recorder when another one holds the global slot.
    local: Option<PrometheusRecorder>,
}

/// The process's metrics, installed on first call.
pub(crate) fn init_metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(LATENCY.into()), &BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let metrics = match metrics::set_global_recorder(recorder) {
            Ok(()) => Metrics {
                handle,
                local: None,
            },
            Err(taken) => {
                tracing::info!(
                    "a metrics recorder is already installed; /metrics shows the API's own metrics"
                );
                Metrics {
                    handle,
                    local: Some(taken.into_inner()),
                }
            }
        };
        metrics.record(|| {
            metrics::describe_counter!(REQUESTS, "API requests by route template and status");
            metrics::describe_histogram!(
                LATENCY,
                metrics::Unit::Seconds,
                "API request latency by route template"
            );
            metrics::describe_gauge!(QUEUE_DEPTH, "Runs queued or running, at the last scrape");
        });
        metrics
    })
}

impl Metrics {
    /// Runs `f`, whose metrics macros then reach this recorder.
    pub(crate) fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.local {
            Some(recorder) => metrics::with_local_recorder(recorder, f),
            None => f(),
        }
    }
}

/// Middleware around every route: counts, times and logs the request.
pub(crate) async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    // Unknown paths share one label: a scanner must not grow the label set.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let response = next.run(req).await;
    let elapsed = start.elapsed();
    let status = response.status();
    init_metrics().record(|| {
        metrics::counter!(REQUESTS, "route" => route.clone(), "method" => method.to_string(),
            "status" => status.as_str().to_owned())
        .increment(1);
        metrics::histogram!(LATENCY, "route" => route.clone(), "method" => method.to_string())
            .record(elapsed.as_secs_f64());
    });
    let key_id = response.extensions().get::<KeyId>().map(|k| k.0.as_str());
    tracing::info!(
        method = %method,
        route = %route,
        status = status.as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        key_id,
        "request"
    );
    response
}
