//! The dashboard's overview in a few grouped queries, whatever the number of tenants: per
//! tenant its campaigns and open dead letters; in all, today's runs by outcome and the 429s
//! they met. (The run history of every tenant is [`adsync_store::Store::recent_runs`].)

use std::collections::{BTreeMap, HashMap};

use adsync_store::Store;
use chrono::{DateTime, Utc};

use crate::{Result, row::AnyRow};

/// What a tenant holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantCounts {
    /// Campaigns not marked removed.
    pub campaigns: i64,
    /// Dead letters not yet resolved.
    pub open_dead_letters: i64,
}

/// Runs started since a moment, for every tenant (or one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTotals {
    /// Runs by status (`succeeded`, `partial`, `failed`, `running`, ...).
    pub by_status: BTreeMap<String, i64>,
    /// 429s those runs met.
    pub rate_limited: i64,
}

// One grouped scan of each table (a subquery per tenant was 3x slower at 1,000 tenants).
// `{t}` is the backend's placeholder for the tenant filter (NULL: every tenant).
const COUNTS: &str = "
    SELECT t.id AS tenant_id, coalesce(c.n, 0) AS campaigns, coalesce(d.n, 0) AS open_dead_letters
    FROM tenants t
    LEFT JOIN (SELECT tenant_id, count(*) AS n FROM campaigns
               WHERE removed_at IS NULL AND ({t} IS NULL OR tenant_id = {t}) GROUP BY tenant_id) c
        ON c.tenant_id = t.id
    LEFT JOIN (SELECT tenant_id, count(*) AS n FROM dead_letters
               WHERE NOT resolved AND ({t} IS NULL OR tenant_id = {t}) GROUP BY tenant_id) d
        ON d.tenant_id = t.id
    WHERE {t} IS NULL OR t.id = {t}";

/// Campaigns and open dead letters of every tenant (or of `tenant`), by tenant id.
pub async fn tenant_counts(
    store: &Store,
    tenant: Option<&str>,
) -> Result<HashMap<String, TenantCounts>> {
    fn read(r: &impl AnyRow) -> Result<(String, TenantCounts)> {
        Ok((
            r.text("tenant_id")?,
            TenantCounts {
                campaigns: r.int("campaigns")?,
                open_dead_letters: r.int("open_dead_letters")?,
            },
        ))
    }
    match store {
        Store::Postgres(p) => {
            let sql = COUNTS.replace("{t}", "CAST($1 AS TEXT)");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .fetch_all(p)
                .await?
                .iter()
                .map(read)
                .collect()
        }
        Store::Sqlite(p) => {
            let sql = COUNTS.replace("{t}", "?1");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .fetch_all(p)
                .await?
                .iter()
                .map(read)
                .collect()
        }
    }
}

// `{t}`: the tenant filter's placeholder (NULL: every tenant); `{since}`: the start's.
const TOTALS: &str = "
    SELECT status, count(*) AS runs, CAST(coalesce(sum(rate_limited), 0) AS BIGINT) AS limited
    FROM sync_runs
    WHERE started_at >= {since} AND status <> 'queued' AND ({t} IS NULL OR tenant_id = {t})
    GROUP BY status";

/// Runs started at or after `since` (of `tenant`, or of every tenant), by status.
pub async fn run_totals(
    store: &Store,
    tenant: Option<&str>,
    since: DateTime<Utc>,
) -> Result<RunTotals> {
    fn fold(rows: &[impl AnyRow]) -> Result<RunTotals> {
        let mut totals = RunTotals::default();
        for r in rows {
            totals.by_status.insert(r.text("status")?, r.int("runs")?);
            totals.rate_limited += r.int("limited")?;
        }
        Ok(totals)
    }
    match store {
        Store::Postgres(p) => {
            let sql = TOTALS
                .replace("{t}", "CAST($1 AS TEXT)")
                .replace("{since}", "$2");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(since)
                .fetch_all(p)
                .await?;
            fold(&rows)
        }
        Store::Sqlite(p) => {
            // Timestamps are RFC 3339 text in UTC, written by one encoder: they sort as text.
            let sql = TOTALS.replace("{t}", "?1").replace("{since}", "?2");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(since)
                .fetch_all(p)
                .await?;
            fold(&rows)
        }
    }
}

/// A worker as the runs it holds show it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerHolding {
    /// The lease owner (`host:pid:slot` style name the worker gave itself).
    pub worker: String,
    /// The runs it holds, oldest first.
    pub runs: Vec<i64>,
    /// Its latest heartbeat over those runs.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// The earliest expiry of its leases (past: it stopped renewing).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When its oldest run started.
    pub oldest_started_at: Option<DateTime<Utc>>,
}

const HOLDINGS: &str = "SELECT owner, id, heartbeat_at, lease_expires_at, started_at
    FROM sync_runs WHERE status = 'running' AND owner IS NOT NULL ORDER BY owner, id";

/// Every worker that holds a running run, from the leases alone (a worker holding nothing
/// leaves no trace in the database).
pub async fn workers(store: &Store) -> Result<Vec<WorkerHolding>> {
    fn fold(rows: &[impl AnyRow]) -> Result<Vec<WorkerHolding>> {
        let mut out: Vec<WorkerHolding> = Vec::new();
        for r in rows {
            let owner = r.text("owner")?;
            let (beat, expires, started) = (
                r.opt_time("heartbeat_at")?,
                r.opt_time("lease_expires_at")?,
                r.opt_time("started_at")?,
            );
            match out.last_mut() {
                Some(w) if w.worker == owner => {
                    w.runs.push(r.int("id")?);
                    w.last_heartbeat = w.last_heartbeat.max(beat);
                    w.lease_expires_at = match (w.lease_expires_at, expires) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    w.oldest_started_at = match (w.oldest_started_at, started) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                _ => out.push(WorkerHolding {
                    worker: owner,
                    runs: vec![r.int("id")?],
                    last_heartbeat: beat,
                    lease_expires_at: expires,
                    oldest_started_at: started,
                }),
            }
        }
        Ok(out)
    }
    match store {
        Store::Postgres(p) => fold(&sqlx::query(HOLDINGS).fetch_all(p).await?),
        Store::Sqlite(p) => fold(&sqlx::query(HOLDINGS).fetch_all(p).await?),
    }
}
