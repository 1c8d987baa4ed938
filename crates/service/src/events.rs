//! Live run events: what a dashboard shows while runs are queued, run and end. Workers
//! publish a [`RunEvent`] when a run is queued, starts, moves (about twice a second) and
//! settles; whoever displays them subscribes to the process's [`Events`] hub.
//!
//! The events go through the database so that a run on another machine's worker shows live
//! too: on PostgreSQL, publishing is `SELECT pg_notify('adsync_events', json)` and every
//! process with subscribers keeps one `LISTEN` connection (started by the first subscriber,
//! reconnected with a backoff when lost, closed when the last subscriber leaves) that
//! re-broadcasts to its local subscribers. On SQLite (one process) publishing goes straight to
//! the local broadcast. A running run's live counters are coalesced ([`Events::publish_live`]):
//! one statement a tick carries every run's latest, as JSON arrays. Events are hints, never the truth: a subscriber that fell behind, or
//! whose hub lost its connection for a while, is told so ([`Received::Missed`]) and should read
//! the runs again.

mod live;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use adsync_store::{RunCounters, RunId, Store};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// The PostgreSQL channel of run events.
pub const CHANNEL: &str = "adsync_events";

/// PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; an event is a few hundred, so
/// one this large is a bug (an absurd tenant id), not worth a failed query.
const MAX_PAYLOAD: usize = 7_000;

/// Events a slow subscriber may fall behind by before it is told it missed some.
const BUFFER: usize = 1024;

/// A NOTIFY that takes longer than this is abandoned: an event is not worth stalling for.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`Events::subscribe`] waits for the hub's `LISTEN` connection before returning
/// anyway (the subscriber then gets events once it is up).
const READY_WAIT: Duration = Duration::from_secs(5);

/// Reconnection backoff of the listener: from the first to the last, doubling.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));

/// The `type` of a [`RunEvent`]: always `run` (other messages of a stream have their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunEventType {
    /// A run changed.
    Run,
}

/// A run changed: queued, started, moved, or ended. Counters are the run's so far, over
/// every process that worked on it; a counter is `null` when the publisher does not know it
/// (a run just queued or cancelled carries none). While a resumed run is running, its counters
/// are the stored ones at its claim plus this worker's share, so they may be a little off
/// until its final event, which carries the stored counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunEvent {
    /// Always `run`.
    #[serde(rename = "type")]
    pub kind: RunEventType,
    /// The run.
    pub run_id: RunId,
    /// Its tenant.
    pub tenant_id: String,
    /// `queued`, `running`, `succeeded`, `partial`, `failed`, `interrupted` or `cancelled`.
    #[schema(example = "running")]
    pub status: String,
    /// Listing pages stored.
    pub pages: Option<u64>,
    /// Distinct campaigns stored.
    pub stored: Option<u64>,
    /// Campaigns synced.
    pub synced: Option<u64>,
    /// Unresolved dead letters.
    pub dead_lettered: Option<u64>,
    /// Campaigns stored and waiting for their sync call (on this worker).
    pub pending: Option<u64>,
    /// Campaigns the platform says it has, once known.
    pub total_hint: Option<u64>,
    /// HTTP requests sent to the platform.
    pub requests: Option<u64>,
    /// Retries after transient failures.
    pub retries: Option<u64>,
    /// 429s received.
    pub rate_limited: Option<u64>,
    /// Tokens obtained.
    pub token_refreshes: Option<u64>,
    /// Milliseconds requests waited on the rate limiter, summed over requests.
    pub limiter_wait_ms: Option<u64>,
    /// When the publisher saw this.
    pub at: DateTime<Utc>,
}

impl RunEvent {
    /// A run now in `status`, with no counters (queued, cancelled).
    pub fn status(run_id: RunId, tenant_id: &str, status: &str) -> Self {
        Self {
            kind: RunEventType::Run,
            run_id,
            tenant_id: tenant_id.to_owned(),
            status: status.to_owned(),
            pages: None,
            stored: None,
            synced: None,
            dead_lettered: None,
            pending: None,
            total_hint: None,
            requests: None,
            retries: None,
            rate_limited: None,
            token_refreshes: None,
            limiter_wait_ms: None,
            at: Utc::now(),
        }
    }

    /// A run in `status` with the counters as stored.
    pub fn with_counters(run_id: RunId, tenant_id: &str, status: &str, c: &RunCounters) -> Self {
        let n = |v: i64| Some(u64::try_from(v).unwrap_or(0));
        Self {
            pages: n(c.pages),
            stored: n(c.campaigns_stored),
            synced: n(c.campaigns_synced),
            dead_lettered: n(c.dead_lettered),
            requests: n(c.requests),
            retries: n(c.retries),
            rate_limited: n(c.rate_limited),
            token_refreshes: n(c.token_refreshes),
            limiter_wait_ms: Some((c.limiter_wait_seconds.max(0.0) * 1000.0) as u64),
            ..Self::status(run_id, tenant_id, status)
        }
    }

    /// Whether anything but the time differs from `earlier`.
    pub fn changed_since(&self, earlier: &RunEvent) -> bool {
        RunEvent {
            at: self.at,
            ..earlier.clone()
        } != *self
    }
}

/// What [`Subscription::recv`] got.
// Handed out one at a time, never stored in bulk: boxing the event would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// The next event.
    Event(RunEvent),
    /// Events were lost (the subscriber fell behind, or the hub's connection to the database
    /// dropped for a while): read the runs again.
    Missed,
}

/// The process's hub of run events. Cheap to clone; clones share the subscribers and the
/// `LISTEN` connection.
#[derive(Clone, Debug)]
pub struct Events {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    tx: broadcast::Sender<RunEvent>,
    /// Grows every time notifications may have been lost (the listener reconnected).
    gaps: watch::Sender<u64>,
    /// Whether the listener is connected and listening.
    listening: watch::Sender<bool>,
    /// Whether the listener task is alive. Its start and its stop (when the last subscriber
    /// left) are decided under this lock, so a new subscriber never finds it half gone.
    running: Mutex<bool>,
    /// Live events waiting for the next coalesced notification.
    pending: Mutex<live::Pending>,
    closed: CancellationToken,
}

impl Events {
    /// The hub of `store`'s database. Opens nothing until someone subscribes.
    pub fn new(store: &Store) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: store.clone(),
                tx: broadcast::channel(BUFFER).0,
                gaps: watch::channel(0).0,
                listening: watch::channel(false).0,
                running: Mutex::new(false),
                pending: Mutex::default(),
                closed: CancellationToken::new(),
            }),
        }
    }

    /// Publishes `event` to every subscriber of every process on the database. Never fails:
    /// an event that cannot be sent is logged (debug) and counted
    /// (`adsync_events_publish_failures_total`), as no run should stop for its display.
    pub async fn publish(&self, event: &RunEvent) {
        self.supersede(std::slice::from_ref(event));
        if let Err(e) = self.try_publish(event).await {
            metrics::counter!("adsync_events_publish_failures_total").increment(1);
            tracing::debug!(run = event.run_id, error = %e, "run event not published");
        }
    }

    /// Publishes many events in one statement on PostgreSQL (as arrays of events, the way
    /// live counters go), each superseding its run's pending live counters. Never fails.
    pub async fn publish_many(&self, events: &[RunEvent]) {
        if events.is_empty() {
            return;
        }
        self.supersede(events);
        match &self.inner.store {
            Store::Postgres(pool) => {
                if let Err(e) = live::send(pool, &live::payloads(events)).await {
                    metrics::counter!("adsync_events_publish_failures_total").increment(1);
                    tracing::debug!(events = events.len(), error = %e, "run events not published");
                }
            }
            Store::Sqlite(_) => {
                for event in events {
                    drop(self.inner.tx.send(event.clone()));
                }
            }
        }
    }

    /// A change of status supersedes the runs' live counters still waiting to be sent.
    fn supersede(&self, events: &[RunEvent]) {
        let mut pending = self.inner.pending.lock().expect("events lock");
        for event in events {
            pending.events.remove(&event.run_id);
        }
    }

    async fn try_publish(&self, event: &RunEvent) -> Result<(), String> {
        match &self.inner.store {
            Store::Postgres(pool) => {
                let json = serde_json::to_string(event).map_err(|e| e.to_string())?;
                if json.len() > MAX_PAYLOAD {
                    return Err(format!("event of {} bytes is too large", json.len()));
                }
                let notify = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(json)
                    .execute(pool);
                tokio::time::timeout(PUBLISH_TIMEOUT, notify)
                    .await
                    .map_err(|_| "timed out".to_owned())?
                    .map_err(|e| adsync_store::StoreError::from(e).to_string())?;
            }
            // No subscriber is not an error.
            Store::Sqlite(_) => drop(self.inner.tx.send(event.clone())),
        }
        Ok(())
    }

    /// Publishes a running run's live counters, coalesced: on PostgreSQL the latest event of
    /// each run is sent with every other run's in one statement about twice a second; on
    /// SQLite it goes to the local subscribers at once. Never blocks, never fails.
    pub fn publish_live(&self, event: RunEvent) {
        match &self.inner.store {
            Store::Sqlite(_) => drop(self.inner.tx.send(event)),
            Store::Postgres(pool) => {
                let start = {
                    let mut pending = self.inner.pending.lock().expect("events lock");
                    pending.events.insert(event.run_id, event);
                    !std::mem::replace(&mut pending.flushing, true)
                };
                if start {
                    match tokio::runtime::Handle::try_current() {
                        Ok(rt) => drop(rt.spawn(live::flush(self.inner.clone(), pool.clone()))),
                        Err(_) => {
                            self.inner.pending.lock().expect("events lock").flushing = false;
                        }
                    }
                }
            }
        }
    }

    /// Subscribes to the events published from now on. On PostgreSQL, starts the process's
    /// listener if it is not running and waits (a few seconds at most) until it listens, so
    /// that what is published after this returns is received.
    pub async fn subscribe(&self) -> Subscription {
        let sub = Subscription {
            rx: self.inner.tx.subscribe(),
            gaps: self.inner.gaps.subscribe(),
            closed: self.inner.closed.clone(),
        };
        if let Store::Postgres(pool) = &self.inner.store {
            let start = {
                let mut running = self.inner.running.lock().expect("events lock");
                let start = !*running && !self.inner.closed.is_cancelled();
                *running |= start;
                start
            };
            if start {
                tokio::spawn(listen(self.inner.clone(), pool.clone()));
            }
            let mut ready = self.inner.listening.subscribe();
            let wait = ready.wait_for(|listening| *listening);
            if tokio::time::timeout(READY_WAIT, wait).await.is_err() {
                tracing::debug!("run events: not listening yet; subscribing anyway");
            }
        }
        sub
    }

    /// Ends every subscription (their `recv` returns `None`) and the listener: for a process
    /// shutting down, so that streams close cleanly. Publishing still works.
    pub fn close(&self) {
        self.inner.closed.cancel();
    }

    /// Subscribers in this process.
    pub fn subscribers(&self) -> usize {
        self.inner.tx.receiver_count()
    }
}

impl Inner {
    /// Marks the listener stopped if nobody subscribes any more; whether it did.
    fn stop_if_idle(&self) -> bool {
        let mut running = self.running.lock().expect("events lock");
        if self.tx.receiver_count() == 0 || self.closed.is_cancelled() {
            *running = false;
            self.listening.send_replace(false);
            true
        } else {
            false
        }
    }
}

/// The listener task: `LISTEN adsync_events` and re-broadcast, until nobody subscribes.
async fn listen(inner: Arc<Inner>, pool: sqlx::PgPool) {
    let mut backoff = BACKOFF.0;
    let mut listener: Option<sqlx::postgres::PgListener> = None;
    // Whether notifications may have been lost since the last connection.
    let mut lost = false;
    loop {
        if inner.stop_if_idle() {
            tracing::debug!("run events: nobody listens; listener stopped");
            return;
        }
        let Some(l) = listener.as_mut() else {
            match connect(&pool).await {
                Ok(l) => {
                    listener = Some(l);
                    inner.listening.send_replace(true);
                    if std::mem::take(&mut lost) {
                        inner.gaps.send_modify(|g| *g += 1);
                    }
                }
                Err(e) => {
                    lost = true;
                    tracing::warn!(error = %e, retry_in = ?backoff, "run events: cannot listen");
                    tokio::select! {
                        () = inner.closed.cancelled() => {}
                        () = inner.tx.closed() => {}
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
            continue;
        };
        let next = tokio::select! {
            biased;
            () = inner.closed.cancelled() => continue,
            // The last subscriber left: stop, unless one came meanwhile (then the
            // interrupted receive may have left the connection mid-message: start over).
            () = inner.tx.closed() => {
                listener = None;
                inner.listening.send_replace(false);
                continue;
            }
            next = l.try_recv() => next,
        };
        match next {
            Ok(Some(n)) => {
                backoff = BACKOFF.0;
                match live::parse(n.payload()) {
                    // No subscriber left is not an error: the loop's check stops the task.
                    Ok(events) => {
                        for event in events {
                            drop(inner.tx.send(event));
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "run events: unreadable payload"),
                }
            }
            // Lost and already reconnected: what was sent meanwhile is gone.
            Ok(None) => {
                tracing::info!("run events: connection lost and restored; subscribers told");
                inner.gaps.send_modify(|g| *g += 1);
            }
            Err(sqlx::Error::PoolClosed) => {
                *inner.running.lock().expect("events lock") = false;
                inner.listening.send_replace(false);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "run events: connection lost");
                listener = None;
                lost = true;
                inner.listening.send_replace(false);
                tokio::select! {
                    () = inner.closed.cancelled() => {}
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

async fn connect(pool: &sqlx::PgPool) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    adsync_store::listen::listener(pool, CHANNEL).await
}

/// One subscriber's events.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<RunEvent>,
    gaps: watch::Receiver<u64>,
    closed: CancellationToken,
}

impl Subscription {
    /// The next event, or [`Received::Missed`] when some were lost; `None` once the hub is
    /// closed. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Received> {
        tokio::select! {
            biased;
            () = self.closed.cancelled() => None,
            changed = self.gaps.changed() => changed.ok().map(|()| Received::Missed),
            next = self.rx.recv() => match next {
                Ok(event) => Some(Received::Event(event)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some(Received::Missed),
                Err(broadcast::error::RecvError::Closed) => None,
            },
        }
    }
}
