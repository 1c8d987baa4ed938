//! The platform's failures: error bodies, the chaos draw (503, hang, reset, truncation) and
//! how each fault is served.

use std::{io, time::Duration};

use axum::{
    Json,
    body::Body,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use rand::Rng;
use serde_json::{Value, json};

use crate::server::SimState;

/// `{"error": ..., "message": ...}` with `status`.
pub fn error(status: StatusCode, error: &str, message: &str) -> Response {
    (status, Json(json!({ "error": error, "message": message }))).into_response()
}

/// Seconds as JSON: an integer when whole (what the reference sends), else a float.
pub fn secs_json(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        json!(d.as_secs())
    } else {
        json!((d.as_secs_f64() * 1000.0).round() / 1000.0)
    }
}

/// The 503 of the reference server.
pub fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service temporarily unavailable",
        "The service is experiencing issues. Please retry after a short delay.",
    )
}

/// A chaos fault drawn for one request.
pub enum Fault {
    Unavailable,
    Hang,
    Reset,
    Truncate,
}

/// Draws the chaos fault of one request, if any.
pub fn draw_fault(state: &SimState) -> Option<Fault> {
    let rates = state.config.chaos;
    let roll: f64 = state.rng.lock().expect("rng lock").random();
    let mut edge = 0.0;
    for (rate, fault) in [
        (rates.error, Fault::Unavailable),
        (rates.hang, Fault::Hang),
        (rates.reset, Fault::Reset),
        (rates.truncate, Fault::Truncate),
    ] {
        edge += rate;
        if roll < edge {
            return Some(fault);
        }
    }
    None
}

/// Serves `fault` instead of the answer `body` builds (called only when the fault needs it).
pub async fn serve_fault(
    state: &SimState,
    endpoint: &str,
    fault: Fault,
    body: impl FnOnce() -> Value,
) -> Response {
    match fault {
        Fault::Unavailable => {
            state.record(endpoint, "503");
            unavailable()
        }
        Fault::Hang => {
            state.record(endpoint, "hang");
            // No answer, ever: only the client's timeout gets out. Released at shutdown.
            state.shutdown.cancelled().await;
            unavailable()
        }
        Fault::Reset => {
            state.record(endpoint, "reset");
            // The body stream fails before its first byte: hyper aborts the connection, so the
            // client sees the connection die without a complete response.
            let stream = futures::stream::once(async {
                Err::<Bytes, io::Error>(io::Error::new(io::ErrorKind::ConnectionReset, "chaos"))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(stream))
                .expect("static response parts")
        }
        Fault::Truncate => {
            state.record(endpoint, "truncated");
            let full = serde_json::to_vec(&body()).expect("JSON serializes");
            let cut = full.len() / 2;
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(full[..cut].to_vec()))
                .expect("static response parts")
        }
    }
}
