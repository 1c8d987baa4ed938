//! Live run events over a WebSocket (`GET /api/v1/events`), for the dashboard: the service's
//! [`Events`](adsync_service::events::Events) hub (fed through the database by every worker)
//! filtered to what the caller sees. Events are hints: on `lagged` (or after a reconnect) the
//! client reads the runs again.

use std::{collections::HashSet, time::Duration};

use adsync_service::events::{Received, RunEvent, Subscription};
use adsync_store::RunId;
use axum::{
    body::Bytes,
    extract::{
        State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code, rejection},
    },
    response::Response,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::{
    AppState,
    auth::{self, Caller},
    error::{ApiError, ApiResult, ErrorBody},
    extract::ApiQuery,
};

/// A client that takes longer than this to accept a message is dropped (it reconnects and
/// reads the runs again).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Which events a stream carries, beyond the caller's tenants.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this tenant's runs.
    pub tenant: Option<String>,
    /// Only this run.
    pub run: Option<RunId>,
}

/// The first message of a stream.
#[derive(Debug, Serialize)]
struct Hello {
    #[serde(rename = "type")]
    kind: &'static str,
    at: DateTime<Utc>,
}

/// Live run events. Upgrades to a WebSocket (send the usual handshake headers with the API
/// key or session). The server then sends JSON text messages: first
/// `{"type":"hello","at":"<RFC 3339>"}` once it is listening, then one `RunEvent`
/// (`{"type":"run",...}`, see the schema) each time a run the caller may see is queued, starts,
/// moves (about every 500 ms while its counters change), ends or is cancelled, and
/// `{"type":"lagged"}` when events were lost (the client fell behind, or the server's
/// connection to the database dropped): read the runs again. A ping every 20 s. Filters:
/// `tenant`, `run`. A tenant key receives only its tenant's runs. The credential is checked
/// again with every ping: a revoked key or an ended session closes the socket (1008). The
/// server closes it (1001) when it shuts down; a client reconnects and reads the runs again.
#[utoipa::path(get, operation_id = "run_events", path = "/api/v1/events", tag = "runs",
    params(EventsQuery),
    responses(
        (status = 101, description = "Switching to a WebSocket carrying `hello`, `RunEvent` \
            and `lagged` messages", body = RunEvent),
        (status = 400, description = "Not a WebSocket handshake", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant (or not the key's)", body = ErrorBody),
        (status = 422, description = "Unknown or malformed query parameter", body = ErrorBody),
    ))]
pub async fn events(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<EventsQuery>,
    upgrade: Result<WebSocketUpgrade, rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    if let Some(tenant) = &query.tenant {
        caller.require_tenant(tenant)?;
    }
    let upgrade = upgrade.map_err(|r| {
        ApiError::bad_request(format!("/api/v1/events is a WebSocket: {}", r.body_text()))
    })?;
    // Subscribed before the handshake completes: `hello` means the events flow.
    let subscription = s.service.events.subscribe().await;
    Ok(upgrade.on_upgrade(move |socket| stream(s, socket, subscription, caller, query)))
}

/// Whether the caller of this stream is to see `event`.
fn wanted(caller: &Caller, query: &EventsQuery, event: &RunEvent) -> bool {
    caller.principal.sees(&event.tenant_id)
        && query.tenant.as_ref().is_none_or(|t| *t == event.tenant_id)
        && query.run.is_none_or(|r| r == event.run_id)
}

async fn stream(
    state: AppState,
    mut socket: WebSocket,
    mut subscription: Subscription,
    caller: Caller,
    query: EventsQuery,
) {
    let hello = Hello {
        kind: "hello",
        at: Utc::now(),
    };
    if send(&mut socket, json(&hello)).await.is_err() {
        return;
    }
    // Runs this stream last told ended: a live `running` event of one of them can only be a
    // stale one (sent by a worker before its final event, delivered after it) and is dropped,
    // so that a client never sees a run run again after it ended. A run queued again is
    // forgotten here.
    let mut ended: HashSet<RunId> = HashSet::new();
    let every = state.options.events_ping;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        let message = tokio::select! {
            received = subscription.recv() => match received {
                Some(Received::Event(event)) if wanted(&caller, &query, &event) => {
                    match event.status.as_str() {
                        "running" if ended.contains(&event.run_id) => continue,
                        "running" => {}
                        "queued" => {
                            ended.remove(&event.run_id);
                        }
                        _ => {
                            if ended.len() >= 10_000 {
                                ended.clear();
                            }
                            ended.insert(event.run_id);
                        }
                    }
                    json(&event)
                }
                Some(Received::Event(_)) => continue,
                Some(Received::Missed) => Message::text(r#"{"type":"lagged"}"#),
                // The server is shutting down.
                None => Message::Close(Some(CloseFrame {
                    code: close_code::AWAY,
                    reason: "the server is shutting down".into(),
                })),
            },
            // Each ping checks the credential again: a revoked key or an ended session
            // closes the stream (policy violation), whatever it was allowed at the start.
            _ = ping.tick() => match auth::still_valid(&state, &caller).await {
                Ok(false) => Message::Close(Some(CloseFrame {
                    code: close_code::POLICY,
                    reason: "the key or session is no longer valid; sign in again".into(),
                })),
                Ok(true) | Err(_) => Message::Ping(Bytes::new()),
            },
            incoming = socket.recv() => match incoming {
                // Pongs, and whatever the client says: nothing to answer.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
        };
        let closing = matches!(message, Message::Close(_));
        if send(&mut socket, message).await.is_err() || closing {
            return;
        }
    }
}

fn json<T: Serialize>(value: &T) -> Message {
    Message::text(serde_json::to_string(value).expect("an event serializes"))
}

/// Sends one message; a client gone or too slow is an error (the stream ends).
async fn send(socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "event stream: client gone");
            Err(())
        }
        Err(_) => {
            tracing::debug!("event stream: client too slow; dropped");
            Err(())
        }
    }
}
