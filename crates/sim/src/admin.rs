//! `/__sim/...`: the simulator's own routes for tests and demos. Unauthenticated and not
//! rate-limited: they are no part of the platform.
//!
//! - `GET /__sim/stats`: [`SimStats`](crate::SimStats) as JSON.
//! - `POST /__sim/campaigns/{id}/remove`: `200 {"removed": id}`, or 404 if `id` is not listed.
//! - `POST /__sim/campaigns/{id}/restore`: `200 {"restored": id}`, or 404 if it was not removed.
//! - `POST /__sim/campaigns?count=N&at=front|back`: `200 {"ids": [...]}`, the new campaigns
//!   (count defaults to 1, at to back); 400 on anything else.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;

use crate::{faults::error, server::SimState};

/// Most campaigns one insert call creates: a typo must not exhaust memory.
const MAX_INSERT: usize = 1_000_000;

/// The admin routes, to merge into the app.
pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/__sim/stats", get(stats))
        .route("/__sim/campaigns", post(insert))
        .route("/__sim/campaigns/{id}/remove", post(remove))
        .route("/__sim/campaigns/{id}/restore", post(restore))
}

async fn stats(State(state): State<Arc<SimState>>) -> Response {
    Json(state.snapshot()).into_response()
}

async fn remove(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    if state.data.remove(&id) {
        Json(json!({ "removed": id })).into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("{id} is not listed"),
        )
    }
}

async fn restore(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    if state.data.restore(&id) {
        Json(json!({ "restored": id })).into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("{id} was not removed"),
        )
    }
}

#[derive(Deserialize)]
struct InsertParams {
    count: Option<String>,
    at: Option<String>,
}

async fn insert(
    State(state): State<Arc<SimState>>,
    Query(params): Query<InsertParams>,
) -> Response {
    let count = match params.count.as_deref().map(str::parse::<usize>) {
        None => 1,
        Some(Ok(n)) if (1..=MAX_INSERT).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Bad request",
                &format!("count must be a whole number from 1 to {MAX_INSERT}"),
            );
        }
    };
    let front = match params.at.as_deref() {
        None | Some("back") => false,
        Some("front") => true,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "at must be front or back",
            );
        }
    };
    Json(json!({ "ids": state.data.insert(count, front) })).into_response()
}
