//! `POST /auth/token` and the bearer check of every `/api` route.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{SecondsFormat, Utc};
use rand::Rng;
use serde_json::json;
use tokio::time::Instant;

use crate::{
    faults::{error, secs_json},
    server::SimState,
};

/// Issues a token for the configured credentials; its answer's `expires_in` and `issued_at`
/// may be overridden by the configuration (expiry checks keep using `token_ttl`).
pub async fn issue_token(State(state): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    let creds = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok());
    let Some(creds) = creds else {
        state.record("auth", "401");
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Missing or invalid Authorization header. Expected: Basic <base64>",
        );
    };
    let (email, password) = creds.split_once(':').unwrap_or((&creds, ""));
    if email != state.config.email || password != state.config.password {
        state.record("auth", "401");
        return error(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials",
            "Email or password is incorrect",
        );
    }
    let token: String = {
        let mut rng = rand::rng();
        (0..32)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect()
    };
    state
        .tokens
        .lock()
        .expect("tokens lock")
        .insert(token.clone(), Instant::now());
    state.record("auth", "200");
    state.stats.lock().expect("stats lock").tokens_issued += 1;
    let config = &state.config;
    Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": config
            .expires_in
            .clone()
            .unwrap_or_else(|| secs_json(config.scaled(config.token_ttl))),
        "issued_at": config
            .issued_at
            .clone()
            .unwrap_or_else(|| json!(Utc::now().timestamp())),
    }))
    .into_response()
}

/// The bearer check of every `/api` route. Unlike the reference server (one global issue
/// time, token value unchecked), each token has its own age, as on a real platform.
pub fn token_rejection(state: &SimState, headers: &HeaderMap, endpoint: &str) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        state.record(endpoint, "401");
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Missing or invalid Authorization header. Expected: Bearer <token>",
        ));
    };
    let issued = state
        .tokens
        .lock()
        .expect("tokens lock")
        .get(token)
        .copied();
    let Some(issued) = issued else {
        state.record(endpoint, "401");
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Invalid access token",
        ));
    };
    let ttl = state.config.scaled(state.config.token_ttl);
    if issued.elapsed() > ttl {
        state.record(endpoint, "401");
        let expired_at =
            Utc::now() - chrono::Duration::from_std(issued.elapsed() - ttl).unwrap_or_default();
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({
                    "error": "Token expired",
                    "message": "Access token has expired. Please obtain a new token.",
                    "expired_at": expired_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                })),
            )
                .into_response(),
        );
    }
    None
}
