//! Live counters of running runs, coalesced: the latest event of each run waits here and
//! every [`FLUSH_EVERY`] all of them go out in one statement (`pg_notify` over an array of
//! payloads, each a JSON array of events under PostgreSQL's payload limit). A worker with a
//! thousand running runs thus sends a few notifications a tick, not two thousand a second
//! (every NOTIFY is a transaction, and they serialize on PostgreSQL's notification queue).

use std::{collections::HashMap, sync::Arc, time::Duration};

use adsync_store::RunId;

use super::{CHANNEL, Inner, MAX_PAYLOAD, PUBLISH_TIMEOUT, RunEvent};

/// How often the pending live events are sent.
pub(super) const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// The latest live event of each run not sent yet, and whether a flusher task runs.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub events: HashMap<RunId, RunEvent>,
    pub flushing: bool,
}

/// Sends the pending events every [`FLUSH_EVERY`] until none is left (the next
/// [`super::Events::publish_live`] starts it again).
pub(super) async fn flush(inner: Arc<Inner>, pool: sqlx::PgPool) {
    loop {
        tokio::select! {
            () = inner.closed.cancelled() => {}
            () = tokio::time::sleep(FLUSH_EVERY) => {}
        }
        let batch: Vec<RunEvent> = {
            let mut pending = inner.pending.lock().expect("events lock");
            if pending.events.is_empty() {
                pending.flushing = false;
                return;
            }
            pending.events.drain().map(|(_, e)| e).collect()
        };
        if let Err(e) = send(&pool, &payloads(&batch)).await {
            metrics::counter!("adsync_events_publish_failures_total").increment(1);
            tracing::debug!(events = batch.len(), error = %e, "live run events not published");
        }
    }
}

/// Sends payloads (from [`payloads`]) in one statement.
pub(super) async fn send(pool: &sqlx::PgPool, payloads: &[String]) -> Result<(), String> {
    let notify = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(CHANNEL)
        .bind(payloads)
        .execute(pool);
    match tokio::time::timeout(PUBLISH_TIMEOUT, notify).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// The events as JSON arrays, each under [`MAX_PAYLOAD`] bytes (an event too large on its
/// own is dropped: it cannot be sent).
pub(super) fn payloads(events: &[RunEvent]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::from("[");
    for event in events {
        let Ok(json) = serde_json::to_string(event) else {
            continue;
        };
        if json.len() + 2 > MAX_PAYLOAD {
            continue;
        }
        if current.len() + json.len() + 2 > MAX_PAYLOAD {
            current.push(']');
            out.push(std::mem::replace(&mut current, String::from("[")));
        }
        if current.len() > 1 {
            current.push(',');
        }
        current.push_str(&json);
    }
    if current.len() > 1 {
        current.push(']');
        out.push(current);
    }
    out
}

/// The events of one notification: a JSON array of events, or one event.
pub(super) fn parse(payload: &str) -> serde_json::Result<Vec<RunEvent>> {
    if payload.trim_start().starts_with('[') {
        serde_json::from_str(payload)
    } else {
        serde_json::from_str(payload).map(|e| vec![e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_packed_into_arrays_under_the_payload_limit_and_read_back() {
        let events: Vec<RunEvent> = (0..200)
            .map(|i| RunEvent::status(i, &format!("t_{i:016x}"), "running"))
            .collect();
        let packed = payloads(&events);
        assert!(packed.len() > 1, "two hundred events need several payloads");
        assert!(packed.iter().all(|p| p.len() < MAX_PAYLOAD));
        let back: Vec<RunEvent> = packed.iter().flat_map(|p| parse(p).unwrap()).collect();
        assert_eq!(back, events);
        let one = serde_json::to_string(&events[0]).unwrap();
        assert_eq!(parse(&one).unwrap(), vec![events[0].clone()]);
        assert!(payloads(&[]).is_empty());
    }
}
