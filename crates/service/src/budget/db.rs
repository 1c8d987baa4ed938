//! The `rate_budgets` SQL, PostgreSQL and SQLite. A grant reads the row and the clock, plans,
//! and writes the new log, either as one transaction that holds the row (create it if missing,
//! lock it (`FOR UPDATE`; SQLite: the whole database, by `BEGIN IMMEDIATE`), read the clock,
//! plan, write) or, on PostgreSQL first, optimistically: the write succeeds only if the row
//! did not change since it was read.

use chrono::Utc;
use sqlx::{PgPool, Row, SqlitePool};
use tokio::time::Instant;

use adsync_domain::RateLimit;
use adsync_store::{Store, StoreError, sqlite_ts};

use super::{Ask, BudgetKey, BudgetRow, DbBudget, Granted, planner};

/// PostgreSQL's clock now, in ms since the epoch (`clock_timestamp()`, not the transaction's
/// start time: the locking grant reads it after the lock is taken, the optimistic one with
/// the row).
pub(super) const PG_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
const PG_CLOCK: &str = "SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint";

/// How many times a PostgreSQL grant is tried optimistically before it locks the row.
const OPTIMISTIC_TRIES: u32 = 4;

/// A grant on PostgreSQL. First optimistically, in two statements and no transaction: the
/// row and the clock read together, the new log written only if nobody granted or held in
/// between (`grants` and `rate_limited` unchanged: each grant raises the one, each hold the
/// other). A grant is the database work of every window of every run, and the locking
/// transaction it replaces made five round trips (begin, lock, clock, update, commit): a
/// fifth of the service's CPU at a thousand tenants went into sending them (perf). Under
/// contention (holders sharing a client id granting at once), after a few lost races, the
/// locking transaction, which always succeeds.
pub(super) async fn pg_grant(
    pool: &PgPool,
    key: &BudgetKey,
    ask: Ask,
    budget: &DbBudget,
) -> Result<Granted, StoreError> {
    let tries = if ask.locking_only {
        0
    } else {
        OPTIMISTIC_TRIES
    };
    for _ in 0..tries {
        if let Some(granted) = pg_grant_optimistic(pool, key, ask, budget).await? {
            return Ok(granted);
        }
        // Another holder granted or held in between: how often says how contended it is.
        budget.conflicted();
    }
    pg_grant_locked(pool, key, ask, budget).await
}

/// One optimistic try: `None` when another holder changed the row in between.
async fn pg_grant_optimistic(
    pool: &PgPool,
    key: &BudgetKey,
    ask: Ask,
    budget: &DbBudget,
) -> Result<Option<Granted>, StoreError> {
    let read = format!(
        "SELECT requests, window_ms, sends, hold_until_ms, grants, rate_limited,
                {PG_NOW_MS} AS now_ms
         FROM rate_budgets WHERE api_url = $1 AND client_id = $2"
    );
    // One connection for the read and the write: taken from the pool in between, the write
    // could wait behind the pool's other users while the slots planned from the clock reading
    // age (a slot its holder gets late is dropped, and costs the budget a window).
    let mut conn = pool.acquire().await?;
    let before = Instant::now();
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(read))
        .bind(key.api_url())
        .bind(key.client_id())
        .fetch_optional(&mut *conn)
        .await?
    else {
        drop(conn);
        // A budget's first grant: the locking path creates the row.
        return pg_grant_locked(pool, key, ask, budget).await.map(Some);
    };
    let local_now = before + before.elapsed() / 2;
    let stored = Stored::pg(&row)?;
    let grants: i64 = row.try_get("grants")?;
    let rate_limited: i64 = row.try_get("rate_limited")?;
    let db_now_ms: i64 = row.try_get("now_ms")?;
    let (plan, granted) = stored.plan(ask, db_now_ms, budget);
    let written = sqlx::query(
        "UPDATE rate_budgets SET sends = $3, grants = grants + $4, updated_at = now()
         WHERE api_url = $1 AND client_id = $2 AND grants = $5 AND rate_limited = $6",
    )
    .bind(key.api_url())
    .bind(key.client_id())
    .bind(join(&plan.log))
    .bind(granted)
    .bind(grants)
    .bind(rate_limited)
    .execute(&mut *conn)
    .await?;
    Ok((written.rows_affected() == 1).then_some(Granted {
        slots: plan.granted,
        db_now_ms,
        local_now,
    }))
}

/// See [`super::create_missing`]: each row as the budget's first grant would create it.
pub(super) async fn pg_create_missing(
    pool: &PgPool,
    budgets: &[(BudgetKey, RateLimit)],
) -> Result<(), StoreError> {
    // One row per key: the same budget twice in one INSERT would be refused.
    let mut seen = std::collections::HashSet::new();
    let (mut urls, mut clients, mut requests, mut windows) = (vec![], vec![], vec![], vec![]);
    for (key, limit) in budgets.iter().filter(|(key, _)| seen.insert(key)) {
        let (n, w) = super::stored_limit(*limit);
        urls.push(key.api_url());
        clients.push(key.client_id());
        requests.push(i64::from(n));
        windows.push(w);
    }
    sqlx::query(
        "INSERT INTO rate_budgets (api_url, client_id, requests, window_ms, updated_at)
         SELECT u, c, r, w, now() FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[])
             AS x(u, c, r, w)
         ORDER BY u, c
         ON CONFLICT (api_url, client_id) DO NOTHING",
    )
    .bind(&urls)
    .bind(&clients)
    .bind(&requests)
    .bind(&windows)
    .execute(pool)
    .await?;
    Ok(())
}

/// The locking grant: one transaction holding the row.
async fn pg_grant_locked(
    pool: &PgPool,
    key: &BudgetKey,
    ask: Ask,
    budget: &DbBudget,
) -> Result<Granted, StoreError> {
    let mut tx = adsync_store::tx::begin_pg(pool).await?;
    let lock = "SELECT requests, window_ms, sends, hold_until_ms FROM rate_budgets
                WHERE api_url = $1 AND client_id = $2 FOR UPDATE";
    let existing = sqlx::query(lock)
        .bind(key.api_url())
        .bind(key.client_id())
        .fetch_optional(&mut *tx)
        .await?;
    // The row exists but for a budget's first grant: lock it first, create it only if missing.
    let row = match existing {
        Some(row) => row,
        None => {
            sqlx::query(
                "INSERT INTO rate_budgets (api_url, client_id, requests, window_ms, updated_at)
                 VALUES ($1, $2, $3, $4, now())
                 ON CONFLICT (api_url, client_id) DO NOTHING",
            )
            .bind(key.api_url())
            .bind(key.client_id())
            .bind(i64::from(ask.requests))
            .bind(ask.window_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query(lock)
                .bind(key.api_url())
                .bind(key.client_id())
                .fetch_one(&mut *tx)
                .await?
        }
    };
    let stored = Stored::pg(&row)?;
    // The clock is read once the row is locked: a wait for the lock must not age it.
    let before = Instant::now();
    let db_now_ms: i64 = sqlx::query_scalar(PG_CLOCK).fetch_one(&mut *tx).await?;
    let local_now = before + before.elapsed() / 2;
    let (plan, granted) = stored.plan(ask, db_now_ms, budget);
    sqlx::query(
        "UPDATE rate_budgets SET sends = $3, grants = grants + $4, updated_at = now()
         WHERE api_url = $1 AND client_id = $2",
    )
    .bind(key.api_url())
    .bind(key.client_id())
    .bind(join(&plan.log))
    .bind(granted)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Granted {
        slots: plan.granted,
        db_now_ms,
        local_now,
    })
}

pub(super) async fn sqlite_grant(
    pool: &SqlitePool,
    key: &BudgetKey,
    ask: Ask,
    budget: &DbBudget,
) -> Result<Granted, StoreError> {
    let mut tx = adsync_store::tx::begin_sqlite(pool).await?;
    sqlx::query(
        "INSERT INTO rate_budgets (api_url, client_id, requests, window_ms, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (api_url, client_id) DO NOTHING",
    )
    .bind(key.api_url())
    .bind(key.client_id())
    .bind(i64::from(ask.requests))
    .bind(ask.window_ms)
    .bind(sqlite_ts(Utc::now()))
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(
        "SELECT requests, window_ms, sends, hold_until_ms FROM rate_budgets
         WHERE api_url = ?1 AND client_id = ?2",
    )
    .bind(key.api_url())
    .bind(key.client_id())
    .fetch_one(&mut *tx)
    .await?;
    let stored = Stored {
        requests: row.try_get("requests")?,
        window_ms: row.try_get("window_ms")?,
        sends: row.try_get("sends")?,
        hold_until_ms: row.try_get("hold_until_ms")?,
    };
    // One machine: its clock is the budget's. Read under the write lock.
    let local_now = Instant::now();
    let db_now_ms = Utc::now().timestamp_millis();
    let (plan, granted) = stored.plan(ask, db_now_ms, budget);
    sqlx::query(
        "UPDATE rate_budgets SET sends = ?3, grants = grants + ?4, updated_at = ?5
         WHERE api_url = ?1 AND client_id = ?2",
    )
    .bind(key.api_url())
    .bind(key.client_id())
    .bind(join(&plan.log))
    .bind(granted)
    .bind(sqlite_ts(Utc::now()))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Granted {
        slots: plan.granted,
        db_now_ms,
        local_now,
    })
}

pub(super) async fn pg_hold(
    pool: &PgPool,
    key: &BudgetKey,
    limit: RateLimit,
    retry_ms: i64,
) -> Result<i64, StoreError> {
    let sql = format!(
        "INSERT INTO rate_budgets
             (api_url, client_id, requests, window_ms, hold_until_ms, rate_limited, updated_at)
         VALUES ($1, $2, $3, $4, {PG_NOW_MS} + $5, 1, now())
         ON CONFLICT (api_url, client_id) DO UPDATE SET
             hold_until_ms = GREATEST(rate_budgets.hold_until_ms, EXCLUDED.hold_until_ms),
             rate_limited = rate_budgets.rate_limited + 1,
             updated_at = now()
         RETURNING hold_until_ms"
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(key.api_url())
        .bind(key.client_id())
        .bind(i64::from(limit.requests.max(1)))
        .bind(window_ms(limit))
        .bind(retry_ms)
        .fetch_one(pool)
        .await?)
}

pub(super) async fn sqlite_hold(
    pool: &SqlitePool,
    key: &BudgetKey,
    limit: RateLimit,
    retry_ms: i64,
) -> Result<i64, StoreError> {
    let until = Utc::now().timestamp_millis().saturating_add(retry_ms);
    Ok(sqlx::query_scalar(
        "INSERT INTO rate_budgets
             (api_url, client_id, requests, window_ms, hold_until_ms, rate_limited, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)
         ON CONFLICT (api_url, client_id) DO UPDATE SET
             hold_until_ms = MAX(rate_budgets.hold_until_ms, excluded.hold_until_ms),
             rate_limited = rate_budgets.rate_limited + 1,
             updated_at = excluded.updated_at
         RETURNING hold_until_ms",
    )
    .bind(key.api_url())
    .bind(key.client_id())
    .bind(i64::from(limit.requests.max(1)))
    .bind(window_ms(limit))
    .bind(until)
    .bind(sqlite_ts(Utc::now()))
    .fetch_one(pool)
    .await?)
}

/// `requests, window_ms, sends, hold_until_ms, rate_limited, grants, now_ms`.
type RowTuple = (i64, i64, String, i64, i64, i64, i64);

pub(super) async fn pg_row(
    pool: &PgPool,
    key: &BudgetKey,
) -> Result<Option<BudgetRow>, StoreError> {
    let sql = format!(
        "SELECT requests::bigint, window_ms, sends, hold_until_ms, rate_limited, grants,
                {PG_NOW_MS}
         FROM rate_budgets WHERE api_url = $1 AND client_id = $2"
    );
    let row: Option<RowTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(key.api_url())
        .bind(key.client_id())
        .fetch_optional(pool)
        .await?;
    Ok(row.map(budget_row))
}

pub(super) async fn sqlite_row(
    pool: &SqlitePool,
    key: &BudgetKey,
) -> Result<Option<BudgetRow>, StoreError> {
    let row: Option<RowTuple> = sqlx::query_as(
        "SELECT requests, window_ms, sends, hold_until_ms, rate_limited, grants, ?3
         FROM rate_budgets WHERE api_url = ?1 AND client_id = ?2",
    )
    .bind(key.api_url())
    .bind(key.client_id())
    .bind(Utc::now().timestamp_millis())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(budget_row))
}

/// Every budget row with its key: `api_url, client_id` and the [`RowTuple`] columns.
type KeyedTuple = (String, String, i64, i64, String, i64, i64, i64, i64);

pub(super) async fn all_rows(store: &Store) -> Result<Vec<(BudgetKey, BudgetRow)>, StoreError> {
    let rows: Vec<KeyedTuple> = match store {
        Store::Postgres(pool) => {
            let sql = format!(
                "SELECT api_url, client_id, requests::bigint, window_ms, sends, hold_until_ms,
                        rate_limited, grants, {PG_NOW_MS}
                 FROM rate_budgets"
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await?
        }
        Store::Sqlite(pool) => {
            sqlx::query_as(
                "SELECT api_url, client_id, requests, window_ms, sends, hold_until_ms,
                        rate_limited, grants, ?1
                 FROM rate_budgets",
            )
            .bind(Utc::now().timestamp_millis())
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(
            |(api_url, client_id, r, w, sends, hold, limited, grants, now)| {
                (
                    BudgetKey { api_url, client_id },
                    budget_row((r, w, sends, hold, limited, grants, now)),
                )
            },
        )
        .collect())
}

fn budget_row(
    (requests, window_ms, sends, hold_until_ms, rate_limited, grants, now_ms): RowTuple,
) -> BudgetRow {
    BudgetRow {
        requests: u32::try_from(requests).unwrap_or(0),
        window_ms,
        sends: parse(&sends).unwrap_or_default(),
        hold_until_ms,
        rate_limited,
        grants,
        now_ms,
    }
}

/// The row, as read.
pub(super) struct Stored {
    pub(super) requests: i64,
    pub(super) window_ms: i64,
    pub(super) sends: String,
    pub(super) hold_until_ms: i64,
}

impl Stored {
    /// A `rate_budgets` row read on PostgreSQL (`requests` is an INT there).
    pub(super) fn pg(row: &sqlx::postgres::PgRow) -> Result<Self, StoreError> {
        Ok(Self {
            requests: i64::from(row.try_get::<i32, _>("requests")?),
            window_ms: row.try_get("window_ms")?,
            sends: row.try_get("sends")?,
            hold_until_ms: row.try_get("hold_until_ms")?,
        })
    }

    /// Plans the grant: the stricter of the stored limit and ours, the log as stored (a log
    /// that cannot be read counts as a full window from now, which is safe, and is replaced).
    /// Returns the plan and the number of slots granted, for the `grants` column.
    pub(super) fn plan(&self, ask: Ask, db_now_ms: i64, budget: &DbBudget) -> (planner::Plan, i64) {
        budget.row_limit(self.requests, self.window_ms);
        let requests = u32::try_from(self.requests.clamp(1, i64::from(u32::MAX)))
            .unwrap_or(1)
            .min(ask.requests);
        let log = parse(&self.sends).unwrap_or_else(|| {
            tracing::warn!(
                sends = %self.sends.chars().take(200).collect::<String>(),
                "unreadable send log in rate_budgets; treating the window as full"
            );
            vec![db_now_ms; requests as usize]
        });
        let now_ms = db_now_ms.saturating_add(ask.lead_ms);
        let window_ms = self.window_ms.max(ask.window_ms);
        let want = ask.want.min(requests);
        budget.saw_log(&log, db_now_ms);
        // Paced by its own limiter only if that paces at the row's limit, not a looser one.
        let paced = (ask.paced && requests == ask.requests && window_ms == ask.window_ms)
            .then(|| {
                let since_ms = now_ms.saturating_sub(window_ms.saturating_add(ask.margin_ms));
                budget.paced(since_ms, want, db_now_ms)
            })
            .flatten();
        let plan = planner::plan(&planner::PlanRequest {
            log: &log,
            now_ms,
            requests,
            window_ms,
            margin_ms: ask.margin_ms,
            hold_until_ms: self.hold_until_ms,
            want,
            horizon_ms: ask.horizon_ms,
            paced: paced.as_deref(),
        });
        let granted = plan.granted.len() as i64;
        (plan, granted)
    }
}

/// The stored form of a log: ms, comma-separated.
pub(super) fn join(log: &[i64]) -> String {
    log.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// A stored log; `None` if any entry is not a number.
fn parse(sends: &str) -> Option<Vec<i64>> {
    if sends.trim().is_empty() {
        return Some(Vec::new());
    }
    sends.split(',').map(|t| t.trim().parse().ok()).collect()
}

fn window_ms(limit: RateLimit) -> i64 {
    super::ms_ceil(limit.window).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_round_trips_through_its_text() {
        assert_eq!(parse(&join(&[1, 20, 300])), Some(vec![1, 20, 300]));
        assert_eq!(parse(""), Some(vec![]));
        assert_eq!(parse("1,x"), None);
    }
}
