//! The workers' registry (`workers`): each worker process upserts its row about every half
//! lease and deletes it when it stops cleanly, so the dashboard can list idle workers too and
//! tell a live one from one that died (its row stops moving).

use std::time::Duration;

use adsync_store::{Store, sqlite_ts};
use chrono::{DateTime, Utc};

use crate::{Result, row::AnyRow};

/// A worker as its row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRow {
    /// Its name (`host:pid`, the owner of its leases).
    pub id: String,
    /// Runs it may hold at once.
    pub slots: i64,
    /// Runs it held at its last beat.
    pub running: i64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last beat.
    pub seen_at: DateTime<Utc>,
    /// Whether that beat is recent (within its lease ttl).
    pub alive: bool,
}

/// Records that worker `id` is alive now, with `running` of its `slots` busy.
pub async fn beat(
    store: &Store,
    id: &str,
    slots: usize,
    running: usize,
    ttl: Duration,
    started_at: DateTime<Utc>,
) -> Result<()> {
    const SQL: &str = "INSERT INTO workers (id, slots, running, ttl_ms, started_at, seen_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (id) DO UPDATE SET slots = excluded.slots, running = excluded.running,
            ttl_ms = excluded.ttl_ms, started_at = excluded.started_at, seen_at = excluded.seen_at";
    let (slots, running) = (
        i64::try_from(slots).unwrap_or(i64::MAX),
        i64::try_from(running).unwrap_or(i64::MAX),
    );
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let now = Utc::now();
    match store {
        Store::Postgres(p) => {
            sqlx::query(SQL)
                .bind(id)
                .bind(slots)
                .bind(running)
                .bind(ttl_ms)
                .bind(started_at)
                .bind(now)
                .execute(p)
                .await?;
        }
        Store::Sqlite(p) => {
            sqlx::query(SQL)
                .bind(id)
                .bind(slots)
                .bind(running)
                .bind(ttl_ms)
                .bind(sqlite_ts(started_at))
                .bind(sqlite_ts(now))
                .execute(p)
                .await?;
        }
    }
    Ok(())
}

/// Removes worker `id` (it stopped cleanly).
pub async fn gone(store: &Store, id: &str) -> Result<()> {
    const SQL: &str = "DELETE FROM workers WHERE id = $1";
    match store {
        Store::Postgres(p) => {
            sqlx::query(SQL).bind(id).execute(p).await?;
        }
        Store::Sqlite(p) => {
            sqlx::query(SQL).bind(id).execute(p).await?;
        }
    }
    Ok(())
}

/// Every registered worker, by id; rows silent for over an hour beyond their ttl are dropped
/// first (a worker dead that long is history, not news).
pub async fn list(store: &Store) -> Result<Vec<WorkerRow>> {
    const SQL: &str =
        "SELECT id, slots, running, ttl_ms, started_at, seen_at FROM workers ORDER BY id";
    fn read(r: &impl AnyRow, now: DateTime<Utc>) -> Result<(WorkerRow, bool)> {
        let seen_at = r.time("seen_at")?;
        let ttl = chrono::Duration::milliseconds(r.int("ttl_ms")?);
        Ok((
            WorkerRow {
                id: r.text("id")?,
                slots: r.int("slots")?,
                running: r.int("running")?,
                started_at: r.time("started_at")?,
                alive: seen_at + ttl > now,
                seen_at,
            },
            seen_at + ttl + chrono::Duration::hours(1) < now,
        ))
    }
    let now = Utc::now();
    let rows: Vec<(WorkerRow, bool)> = match store {
        Store::Postgres(p) => sqlx::query(SQL)
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| read(r, now))
            .collect::<Result<_>>()?,
        Store::Sqlite(p) => sqlx::query(SQL)
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| read(r, now))
            .collect::<Result<_>>()?,
    };
    let mut out = Vec::with_capacity(rows.len());
    for (row, stale) in rows {
        if stale {
            gone(store, &row.id).await?;
        } else {
            out.push(row);
        }
    }
    Ok(out)
}
