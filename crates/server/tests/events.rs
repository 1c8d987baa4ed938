//! Live run events over the WebSocket, on PostgreSQL (through NOTIFY) and SQLite: a tenant
//! key receives only its tenant's runs, an admin's `?tenant=` filter narrows the stream, no
//! key is a 401 before any upgrade, and a plain GET is told it is a WebSocket.

mod common;

use std::time::Duration;

use common::{TestApp, on_postgres, on_sqlite};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{self, Message, client::IntoClientRequest},
};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The longest a message may take to arrive.
const WAIT: Duration = Duration::from_secs(15);

/// Opens `/api/v1/events{query}` with `key` (none: no Authorization header).
async fn open(app: &TestApp, query: &str, key: Option<&str>) -> Result<Socket, tungstenite::Error> {
    let mut request = format!("ws://{}/api/v1/events{query}", app.addr)
        .into_client_request()
        .unwrap();
    if let Some(key) = key {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    tokio::time::timeout(WAIT, connect_async(request))
        .await
        .expect("the handshake within the deadline")
        .map(|(socket, _)| socket)
}

/// Opens a stream and reads its `hello`.
async fn subscribe(app: &TestApp, query: &str, key: &str) -> Socket {
    let mut socket = open(app, query, Some(key)).await.expect("the upgrade");
    let hello = next_json(&mut socket).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    assert!(hello["at"].is_string(), "{hello}");
    socket
}

/// The next JSON text message (pings skipped), within the deadline.
async fn next_json(socket: &mut Socket) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str::<Value>(text.as_str()).expect("JSON text");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("unexpected on the event stream: {other:?}"),
            }
        }
    })
    .await
    .expect("a message within the deadline")
}

/// Queues a run of `tenant` with `key`; returns its id.
async fn queue_run(app: &TestApp, tenant: &str, key: &str) -> i64 {
    let reply = app
        .post_empty(&format!("/api/v1/tenants/{tenant}/runs"), key)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    reply.json()["id"].as_i64().unwrap()
}

async fn a_tenant_key_receives_only_its_tenants_runs(app: TestApp) {
    // Arrange
    let mine = app.create_tenant("Mine").await;
    let theirs = app.create_tenant("Theirs").await;
    let (_, key) = app.tenant_key(&mine).await;
    let mut own_stream = subscribe(&app, "", &key).await;
    let mut admin_on_theirs = subscribe(&app, &format!("?tenant={theirs}"), &app.admin).await;

    // Act: their run first, so that a leak would arrive before ours.
    let their_run = queue_run(&app, &theirs, &app.admin).await;
    let my_run = queue_run(&app, &mine, &key).await;

    // Assert
    let event = next_json(&mut own_stream).await;
    assert_eq!(event["type"], "run", "{event}");
    assert_eq!(
        event["run_id"], my_run,
        "only its own tenant's run: {event}"
    );
    assert_eq!(event["tenant_id"], mine.as_str());
    assert_eq!(event["status"], "queued");
    assert!(
        event["at"].is_string() && event["synced"].is_null(),
        "{event}"
    );
    let event = next_json(&mut admin_on_theirs).await;
    assert_eq!(event["run_id"], their_run, "{event}");
    assert_eq!(event["tenant_id"], theirs.as_str());

    // A cancel is an event too; the tenant's stream sees its own.
    let cancel = app
        .post_empty(&format!("/api/v1/runs/{my_run}/cancel"), &key)
        .await;
    assert!(cancel.status.is_success(), "{}", cancel.text);
    let event = next_json(&mut own_stream).await;
    assert_eq!(
        (&event["run_id"], &event["status"]),
        (&Value::from(my_run), &Value::from("cancelled")),
        "{event}"
    );
}

#[tokio::test]
async fn a_tenant_key_receives_only_its_tenants_runs_on_postgres() {
    on_postgres(a_tenant_key_receives_only_its_tenants_runs).await;
}

#[tokio::test]
async fn a_tenant_key_receives_only_its_tenants_runs_on_sqlite() {
    on_sqlite(a_tenant_key_receives_only_its_tenants_runs).await;
}

#[tokio::test]
async fn the_event_stream_refuses_no_key_another_tenant_and_a_plain_get() {
    on_postgres(|app| async move {
        let mine = app.create_tenant("Mine").await;
        let theirs = app.create_tenant("Theirs").await;
        let (_, key) = app.tenant_key(&mine).await;

        match open(&app, "", None).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401);
            }
            other => panic!("expected a 401, got {other:?}"),
        }
        match open(&app, &format!("?tenant={theirs}"), Some(&key)).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 404);
            }
            other => panic!("expected a 404, got {other:?}"),
        }
        let plain = app.get("/api/v1/events", &key).await;
        assert_eq!(plain.error(StatusCode::BAD_REQUEST), "bad_request");
        let unknown = app.get("/api/v1/events?colour=red", &key).await;
        assert_eq!(
            unknown.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            unknown.text
        );
    })
    .await;
}

#[tokio::test]
async fn a_stream_closes_once_its_key_is_revoked() {
    let options = adsync_server::ServerOptions {
        events_ping: Duration::from_millis(200),
        ..Default::default()
    };
    common::on_postgres_with(options, |app| async move {
        let tenant = app.create_tenant("Revoked").await;
        let (key_id, key) = app.tenant_key(&tenant).await;
        let mut socket = subscribe(&app, "", &key).await;

        let revoke = app
            .delete(
                &format!("/api/v1/tenants/{tenant}/api-keys/{key_id}"),
                &app.admin,
            )
            .await;
        assert_eq!(revoke.status, StatusCode::NO_CONTENT, "{}", revoke.text);

        // Within a few pings the server closes the stream as a policy violation.
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(_)) => {}
                    other => panic!("the stream ended without a close frame: {other:?}"),
                }
            }
        })
        .await
        .expect("closed within the deadline")
        .expect("a close frame");
        assert_eq!(u16::from(closed.code), 1008, "{closed:?}");
    })
    .await;
}

#[tokio::test]
async fn a_stale_running_event_after_a_runs_end_is_not_forwarded() {
    on_sqlite(|app| async move {
        use adsync_service::events::RunEvent;
        let mut socket = subscribe(&app, "", &app.admin).await;
        let events = &app.service.events;

        // A worker's last live event can be delivered after its final one.
        events
            .publish(&RunEvent::status(7, "t_any", "succeeded"))
            .await;
        events
            .publish(&RunEvent::status(7, "t_any", "running"))
            .await;
        events
            .publish(&RunEvent::status(8, "t_any", "queued"))
            .await;
        // Queued again, the run may run again.
        events
            .publish(&RunEvent::status(7, "t_any", "queued"))
            .await;
        events
            .publish(&RunEvent::status(7, "t_any", "running"))
            .await;

        let seen: Vec<(i64, String)> = {
            let mut seen = Vec::new();
            for _ in 0..4 {
                let e = next_json(&mut socket).await;
                seen.push((
                    e["run_id"].as_i64().unwrap(),
                    e["status"].as_str().unwrap().to_owned(),
                ));
            }
            seen
        };
        assert_eq!(
            seen,
            vec![
                (7, "succeeded".to_owned()),
                (8, "queued".to_owned()),
                (7, "queued".to_owned()),
                (7, "running".to_owned()),
            ]
        );
    })
    .await;
}
