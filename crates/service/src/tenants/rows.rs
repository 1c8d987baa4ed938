//! The tenant tables on both databases. The SQL text is shared (`$N` placeholders work on
//! both); what differs is how a timestamp is bound and read (PostgreSQL `TIMESTAMPTZ`,
//! SQLite RFC 3339 text) and how a write transaction starts (SQLite: `BEGIN IMMEDIATE`).

use adsync_store::{Store, sqlite_ts};
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Settings, Tenant};
use crate::{
    Result, ServiceError,
    audit::{self, Actor, Change},
    queue::{self, Enqueued, RunRequest},
    row::AnyRow,
    vault::Sealed,
};

const COLUMNS: &str = "t.id, t.name, t.api_url, t.client_id,
    CAST(t.rate_limit_requests AS BIGINT) AS rate_limit_requests,
    t.rate_limit_window_ms, t.page_size, t.schedule, t.time_zone, t.paused, t.next_run_at,
    t.last_tick_at, t.ticks_skipped, t.created_at, t.updated_at, t.jitter_ms,
    EXISTS (SELECT 1 FROM tenant_secrets s WHERE s.tenant_id = t.id) AS has_credentials";

/// A tenant row (selected with [`COLUMNS`]) and its schedule jitter.
fn tenant_from(row: &impl AnyRow) -> Result<(Tenant, i64)> {
    let limit = adsync_domain::RateLimit::new(
        row.int("rate_limit_requests")?.clamp(1, u32::MAX.into()) as u32,
        std::time::Duration::from_millis(row.int("rate_limit_window_ms")?.max(1) as u64),
    )
    .unwrap_or_default();
    Ok((
        Tenant {
            id: row.text("id")?,
            name: row.text("name")?,
            api_url: row.text("api_url")?,
            client_id: row.text("client_id")?,
            rate_limit: limit.to_string(),
            page_size: row.int("page_size")?.max(1) as u64,
            schedule: row.opt_text("schedule")?,
            time_zone: row.text("time_zone")?,
            paused: row.flag("paused")?,
            next_run_at: row.opt_time("next_run_at")?,
            last_tick_at: row.opt_time("last_tick_at")?,
            ticks_skipped: row.int("ticks_skipped")?,
            has_credentials: row.flag("has_credentials")?,
            created_at: row.time("created_at")?,
            updated_at: row.time("updated_at")?,
        },
        row.int("jitter_ms")?,
    ))
}

/// Runs `$body` with `$tx` a write transaction on either database and `$t` the function
/// that turns a timestamp into its bindable form; `$rec` records an audit change.
macro_rules! write_tx {
    ($store:expr, |$tx:ident, $t:ident, $rec:ident| $body:block) => {
        match $store {
            Store::Postgres(p) => {
                let mut $tx = adsync_store::tx::begin_pg(p).await?;
                #[allow(unused)]
                let $t = |d: DateTime<Utc>| d;
                #[allow(unused)]
                let $rec = audit::record_pg;
                let out = $body;
                $tx.commit().await?;
                out
            }
            Store::Sqlite(p) => {
                let mut $tx = adsync_store::tx::begin_sqlite(p).await?;
                #[allow(unused)]
                let $t = sqlite_ts;
                #[allow(unused)]
                let $rec = audit::record_sqlite;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn insert(
    store: &Store,
    id: &str,
    s: &Settings,
    sealed: &Sealed,
    jitter_ms: i64,
    next: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    audit: Option<(&Actor, &Change<'_>)>,
) -> Result<()> {
    const TENANT: &str = "INSERT INTO tenants (id, name, api_url, client_id,
            rate_limit_requests, rate_limit_window_ms, page_size, schedule, time_zone, paused,
            next_run_at, jitter_ms, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)";
    const SECRET: &str = "INSERT INTO tenant_secrets
            (tenant_id, key_id, wrapped_key, email, password, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6)";
    let zone = s
        .schedule
        .as_ref()
        .map_or_else(|| "UTC".to_owned(), |sc| sc.zone_name());
    write_tx!(store, |tx, t, rec| {
        sqlx::query(TENANT)
            .bind(id)
            .bind(&s.name)
            .bind(&s.api_url)
            .bind(&s.client_id)
            .bind(i64::from(s.limit.requests))
            .bind(s.limit.window.as_millis() as i64)
            .bind(s.page_size as i64)
            .bind(s.schedule.as_ref().map(|sc| sc.cron().to_owned()))
            .bind(&zone)
            .bind(s.paused)
            .bind(next.map(t))
            .bind(jitter_ms)
            .bind(t(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query(SECRET)
            .bind(id)
            .bind(&sealed.key_id)
            .bind(&sealed.wrapped_key)
            .bind(&sealed.email)
            .bind(&sealed.password)
            .bind(t(now))
            .execute(&mut *tx)
            .await?;
        if let Some((actor, change)) = audit {
            rec(&mut tx, actor, change).await?;
        }
        Ok::<_, ServiceError>(())
    })
}

pub(super) async fn get(store: &Store, id: &str) -> Result<Option<Tenant>> {
    let sql = format!("SELECT {COLUMNS} FROM tenants t WHERE t.id = $1");
    Ok(match store {
        Store::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(p)
            .await?
            .map(|r| tenant_from(&r))
            .transpose()?,
        Store::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(p)
            .await?
            .map(|r| tenant_from(&r))
            .transpose()?,
    }
    .map(|(t, _)| t))
}

pub(super) async fn list(store: &Store) -> Result<Vec<Tenant>> {
    let sql = format!("SELECT {COLUMNS} FROM tenants t ORDER BY t.name, t.id");
    let rows: Vec<(Tenant, i64)> = match store {
        Store::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(p)
            .await?
            .iter()
            .map(tenant_from)
            .collect::<Result<_>>()?,
        Store::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(p)
            .await?
            .iter()
            .map(tenant_from)
            .collect::<Result<_>>()?,
    };
    Ok(rows.into_iter().map(|(t, _)| t).collect())
}

pub(super) async fn due(
    store: &Store,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<(Tenant, i64)>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM tenants t
         WHERE NOT t.paused AND t.next_run_at IS NOT NULL AND t.next_run_at <= $1
         ORDER BY t.next_run_at LIMIT $2"
    );
    Ok(match store {
        Store::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
            .iter()
            .map(tenant_from)
            .collect::<Result<_>>()?,
        Store::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sqlite_ts(now))
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
            .iter()
            .map(tenant_from)
            .collect::<Result<_>>()?,
    })
}

/// `next`: `Some((jitter, next_run_at))` to reschedule.
pub(super) async fn update(
    store: &Store,
    id: &str,
    s: &Settings,
    sealed: Option<&Sealed>,
    next: Option<(i64, Option<DateTime<Utc>>)>,
    now: DateTime<Utc>,
    audit: Option<(&Actor, &Change<'_>)>,
) -> Result<bool> {
    const TENANT: &str = "UPDATE tenants SET name = $2, api_url = $3, client_id = $4,
            rate_limit_requests = $5, rate_limit_window_ms = $6, page_size = $7,
            schedule = $8, time_zone = $9, paused = $10, updated_at = $11
        WHERE id = $1";
    const NEXT: &str = "UPDATE tenants SET jitter_ms = $2, next_run_at = $3 WHERE id = $1";
    const SECRET: &str = "UPDATE tenant_secrets SET key_id = $2, wrapped_key = $3, email = $4,
            password = $5, updated_at = $6 WHERE tenant_id = $1";
    let zone = s
        .schedule
        .as_ref()
        .map_or_else(|| "UTC".to_owned(), |sc| sc.zone_name());
    write_tx!(store, |tx, t, rec| {
        let done = sqlx::query(TENANT)
            .bind(id)
            .bind(&s.name)
            .bind(&s.api_url)
            .bind(&s.client_id)
            .bind(i64::from(s.limit.requests))
            .bind(s.limit.window.as_millis() as i64)
            .bind(s.page_size as i64)
            .bind(s.schedule.as_ref().map(|sc| sc.cron().to_owned()))
            .bind(&zone)
            .bind(s.paused)
            .bind(t(now))
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            if let Some((jitter, next)) = next {
                sqlx::query(NEXT)
                    .bind(id)
                    .bind(jitter)
                    .bind(next.map(t))
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(sealed) = sealed {
                sqlx::query(SECRET)
                    .bind(id)
                    .bind(&sealed.key_id)
                    .bind(&sealed.wrapped_key)
                    .bind(&sealed.email)
                    .bind(&sealed.password)
                    .bind(t(now))
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some((actor, change)) = audit {
                rec(&mut tx, actor, change).await?;
            }
        }
        Ok::<_, ServiceError>(done.rows_affected() == 1)
    })
}

pub(super) async fn delete(
    store: &Store,
    id: &str,
    audit: Option<(&Actor, &Change<'_>)>,
) -> Result<bool> {
    // Children first (dead_letters and run_warnings reference sync_runs).
    const DATA: [&str; 7] = [
        "DELETE FROM run_warnings WHERE run_id IN (SELECT id FROM sync_runs WHERE tenant_id = $1)",
        "DELETE FROM dead_letters WHERE tenant_id = $1",
        "DELETE FROM listing_seen WHERE run_id IN (SELECT id FROM sync_runs WHERE tenant_id = $1)",
        "DELETE FROM campaign_metrics WHERE tenant_id = $1",
        "DELETE FROM campaigns WHERE tenant_id = $1",
        "DELETE FROM sync_runs WHERE tenant_id = $1",
        "DELETE FROM api_keys WHERE tenant_id = $1",
    ];
    write_tx!(store, |tx, t, rec| {
        let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            for sql in DATA {
                sqlx::query(sql).bind(id).execute(&mut *tx).await?;
            }
            sqlx::query("DELETE FROM tenant_secrets WHERE tenant_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if let Some((actor, change)) = audit {
                rec(&mut tx, actor, change).await?;
            }
        }
        Ok::<_, ServiceError>(done.rows_affected() == 1)
    })
}

const SEALED: &str =
    "SELECT key_id, wrapped_key, email, password FROM tenant_secrets WHERE tenant_id = $1";

/// A `tenant_secrets` row (selected with [`SEALED`]'s columns) as sealed secrets.
fn sealed_from<'r, R>(r: &'r R) -> Result<Sealed>
where
    R: Row,
    &'r str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Sealed {
        key_id: r.try_get("key_id")?,
        wrapped_key: r.try_get("wrapped_key")?,
        email: r.try_get("email")?,
        password: r.try_get("password")?,
    })
}

pub(super) async fn sealed(store: &Store, id: &str) -> Result<Option<Sealed>> {
    Ok(match store {
        Store::Postgres(p) => sqlx::query(SEALED)
            .bind(id)
            .fetch_optional(p)
            .await?
            .map(|r| sealed_from(&r))
            .transpose()?,
        Store::Sqlite(p) => sqlx::query(SEALED)
            .bind(id)
            .fetch_optional(p)
            .await?
            .map(|r| sealed_from(&r))
            .transpose()?,
    })
}

/// Several tenants with their sealed secrets, in two queries on PostgreSQL (a worker that
/// claims a thousand runs at once would otherwise make two thousand round trips before the
/// first run starts); one tenant at a time on SQLite, which is local.
pub(super) async fn with_sealed(
    store: &Store,
    ids: &[&str],
) -> Result<Vec<(Tenant, Option<Sealed>)>> {
    match store {
        Store::Postgres(p) => {
            let sql = format!("SELECT {COLUMNS} FROM tenants t WHERE t.id = ANY($1)");
            let tenants = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(ids)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| tenant_from(r).map(|(t, _)| t))
                .collect::<Result<Vec<_>>>()?;
            let mut sealed = std::collections::HashMap::new();
            for r in sqlx::query(
                "SELECT tenant_id, key_id, wrapped_key, email, password FROM tenant_secrets
                 WHERE tenant_id = ANY($1)",
            )
            .bind(ids)
            .fetch_all(p)
            .await?
            {
                sealed.insert(r.try_get::<String, _>("tenant_id")?, sealed_from(&r)?);
            }
            Ok(tenants
                .into_iter()
                .map(|t| {
                    let s = sealed.remove(&t.id);
                    (t, s)
                })
                .collect())
        }
        Store::Sqlite(_) => {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(t) = get(store, id).await? {
                    out.push((t, sealed(store, id).await?));
                }
            }
            Ok(out)
        }
    }
}

pub(super) async fn ids_with_secrets(store: &Store) -> Result<Vec<String>> {
    const SQL: &str = "SELECT tenant_id FROM tenant_secrets ORDER BY tenant_id";
    Ok(match store {
        Store::Postgres(p) => sqlx::query_scalar(SQL).fetch_all(p).await?,
        Store::Sqlite(p) => sqlx::query_scalar(SQL).fetch_all(p).await?,
    })
}

/// Replaces a tenant's sealed secrets if they are still wrapped by `old_key` (a concurrent
/// credential change wins).
pub(super) async fn replace_sealed(
    store: &Store,
    id: &str,
    old_key: &str,
    new: &Sealed,
) -> Result<bool> {
    const SQL: &str = "UPDATE tenant_secrets SET key_id = $3, wrapped_key = $4
        WHERE tenant_id = $1 AND key_id = $2";
    let done = match store {
        Store::Postgres(p) => sqlx::query(SQL)
            .bind(id)
            .bind(old_key)
            .bind(&new.key_id)
            .bind(&new.wrapped_key)
            .execute(p)
            .await?
            .rows_affected(),
        Store::Sqlite(p) => sqlx::query(SQL)
            .bind(id)
            .bind(old_key)
            .bind(&new.key_id)
            .bind(&new.wrapped_key)
            .execute(p)
            .await?
            .rows_affected(),
    };
    Ok(done == 1)
}

/// One due tick: the tenant, the `next_run_at` it was read with, and its next one.
pub(super) struct Tick<'a> {
    pub tenant: &'a Tenant,
    pub expected: DateTime<Utc>,
    pub next: Option<DateTime<Utc>>,
}

/// Fires due ticks in one transaction: each tenant's `next_run_at` is moved from `expected`
/// to `next` if nobody else moved it (compare-and-set), and the winners' runs are queued in
/// the same transaction; a tick finding a run still active is counted skipped. Outcomes in
/// the order of `ticks`; `None`: another scheduler fired that one.
pub(super) async fn fire_ticks(
    store: &Store,
    ticks: &[Tick<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<Option<Enqueued>>> {
    const CAS: &str = "UPDATE tenants SET next_run_at = $3, last_tick_at = $4
        WHERE id = $1 AND next_run_at = $2 AND NOT paused";
    const SKIPPED: &str = "UPDATE tenants SET ticks_skipped = ticks_skipped + 1 WHERE id = $1";
    fn req<'a>(t: &Tick<'a>) -> RunRequest<'a> {
        RunRequest {
            tenant: &t.tenant.id,
            page_size: t.tenant.page_size,
            platform: &t.tenant.api_url,
            requested_by: "schedule",
        }
    }
    if ticks.is_empty() {
        return Ok(Vec::new());
    }
    match store {
        Store::Postgres(p) => {
            let ids: Vec<&str> = ticks.iter().map(|t| t.tenant.id.as_str()).collect();
            let expected: Vec<DateTime<Utc>> = ticks.iter().map(|t| t.expected).collect();
            let next: Vec<Option<DateTime<Utc>>> = ticks.iter().map(|t| t.next).collect();
            let mut tx = adsync_store::tx::begin_pg(p).await?;
            // Locked first, skipping the rows someone else holds: a worker's claim updates
            // the tenants it serves in its own order, and another scheduler its batch, so
            // waiting for them could deadlock. A skipped tenant stays due and is fired at a
            // later tick (or was fired by the other scheduler).
            let locked: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM tenants WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED",
            )
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
            let won: Vec<String> = sqlx::query_scalar(
                "UPDATE tenants t SET next_run_at = x.next, last_tick_at = $4
                 FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[])
                     AS x(id, expected, next)
                 WHERE t.id = x.id AND t.next_run_at = x.expected AND NOT t.paused
                   AND t.id = ANY($5)
                 RETURNING t.id",
            )
            .bind(&ids)
            .bind(&expected)
            .bind(&next)
            .bind(now)
            .bind(&locked)
            .fetch_all(&mut *tx)
            .await?;
            let won: std::collections::HashSet<&str> = won.iter().map(String::as_str).collect();
            let winners: Vec<&Tick<'_>> = ticks
                .iter()
                .filter(|t| won.contains(t.tenant.id.as_str()))
                .collect();
            let reqs: Vec<RunRequest<'_>> = winners.iter().map(|t| req(t)).collect();
            let outcomes = queue::pg::enqueue_many_in(&mut tx, &reqs).await?;
            let skipped: Vec<&str> = reqs
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| matches!(o, Enqueued::AlreadyActive(_)))
                .map(|(r, _)| r.tenant)
                .collect();
            if !skipped.is_empty() {
                sqlx::query(
                    "UPDATE tenants SET ticks_skipped = ticks_skipped + 1 WHERE id = ANY($1)",
                )
                .bind(&skipped)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            let by_tenant: std::collections::HashMap<&str, Enqueued> =
                reqs.iter().map(|r| r.tenant).zip(outcomes).collect();
            Ok(ticks
                .iter()
                .map(|t| by_tenant.get(t.tenant.id.as_str()).copied())
                .collect())
        }
        Store::Sqlite(p) => {
            let mut tx = adsync_store::tx::begin_sqlite(p).await?;
            let mut outcomes = Vec::with_capacity(ticks.len());
            for t in ticks {
                let won = sqlx::query(CAS)
                    .bind(&t.tenant.id)
                    .bind(sqlite_ts(t.expected))
                    .bind(t.next.map(sqlite_ts))
                    .bind(sqlite_ts(now))
                    .execute(&mut *tx)
                    .await?;
                if won.rows_affected() != 1 {
                    outcomes.push(None);
                    continue;
                }
                let outcome = queue::sqlite::enqueue_in(&mut tx, &req(t)).await?;
                if matches!(outcome, Enqueued::AlreadyActive(_)) {
                    sqlx::query(SKIPPED)
                        .bind(&t.tenant.id)
                        .execute(&mut *tx)
                        .await?;
                }
                outcomes.push(Some(outcome));
            }
            tx.commit().await?;
            Ok(outcomes)
        }
    }
}
