//! The `rate_budgets` SQL, PostgreSQL and SQLite. A grant holds the row: create it if
//! missing, lock it, read the clock, plan, write the new log. On PostgreSQL that is one
//! statement, the function `adsync_budget_grant` (its migration `0004_budget_grant.sql`
//! spells [`Stored::plan`] and the [`planner`] in PL/pgSQL; property tests keep them equal);
//! on SQLite, one transaction (`BEGIN IMMEDIATE`: the whole database) around the Rust rule.

use std::time::Duration;

use chrono::Utc;
use sqlx::{PgPool, Row, SqlitePool};
use tokio::time::Instant;

use adsync_domain::RateLimit;
use adsync_store::{Store, StoreError, sqlite_ts};

use super::{Ask, BudgetKey, BudgetRow, DbBudget, Granted, planner};

/// PostgreSQL's clock now, in ms since the epoch (`clock_timestamp()`, not the transaction's
/// start time: it is read after the lock is taken).
const PG_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

pub(super) async fn pg_grant(
    pool: &PgPool,
    key: &BudgetKey,
    ask: Ask,
    budget: &DbBudget,
) -> Result<Granted, StoreError> {
    // The connection first: a wait for the pool must not count as time on the database.
    let mut conn = pool.acquire().await?;
    let sent = Instant::now();
    let row: PgGrantRow = sqlx::query_as(PG_GRANT)
        .bind(key.api_url())
        .bind(key.client_id())
        .bind(i64::from(ask.requests))
        .bind(ask.window_ms)
        .bind(ask.margin_ms)
        .bind(i64::from(ask.want))
        .bind(ask.horizon_ms)
        .bind(ask.lead_ms)
        .fetch_one(&mut *conn)
        .await?;
    let received = Instant::now();
    let (slots, db_now_ms, requests, window_ms, unreadable, waited_us, worked_us) = row;
    budget.row_limit(requests, window_ms);
    if let Some(sends) = unreadable {
        warn_unreadable(&sends);
    }
    Ok(Granted {
        slots,
        db_now_ms,
        local_now: clock_read_at(sent, received, waited_us, worked_us),
    })
}

/// The grant in one statement (autocommit): `adsync_budget_grant` of the PostgreSQL
/// migration `0004_budget_grant.sql` locks the row, reads the clock, applies
/// [`Stored::plan`]'s rule (property tests keep the two equal) and writes the new log.
const PG_GRANT: &str = "SELECT slots, clock_ms, row_requests, row_window_ms, unreadable_sends,
                               waited_us, worked_us
                        FROM adsync_budget_grant($1, $2, $3, $4, $5, $6, $7, $8)";

/// `slots, clock_ms, row_requests, row_window_ms, unreadable_sends, waited_us, worked_us`.
type PgGrantRow = (Vec<i64>, i64, i64, i64, Option<String>, i64, i64);

/// When, on this process's clock, the database read its clock during a statement sent at
/// `sent` and answered at `received`: `waited_us` after the statement started there (the
/// lock's wait, mostly), `worked_us` before its work ended. The rest of the round trip
/// (network both ways, the commit) is split evenly, so a wait for the lock, however long,
/// does not move the estimate; it is off by at most half of that rest.
fn clock_read_at(sent: Instant, received: Instant, waited_us: i64, worked_us: i64) -> Instant {
    let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    let round_trip = received.saturating_duration_since(sent);
    let (waited, worked) = (us(waited_us), us(worked_us));
    let rest = round_trip.saturating_sub(waited.saturating_add(worked));
    sent + (waited + rest / 2).min(round_trip)
}

pub(super) async fn sqlite_grant(
    pool: &SqlitePool,
    key: &BudgetKey,
    ask: Ask,
    budget: &DbBudget,
) -> Result<Granted, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
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
    budget.row_limit(stored.requests, stored.window_ms);
    let (plan, readable) = stored.plan(ask, db_now_ms);
    if !readable {
        warn_unreadable(&stored.sends);
    }
    let granted = plan.granted.len() as i64;
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

pub(super) async fn all_rows(
    store: &Store,
) -> Result<Vec<(BudgetKeyParts, BudgetRow)>, StoreError> {
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
        .map(|(url, client, r, w, sends, hold, limited, grants, now)| {
            (
                (url, client),
                budget_row((r, w, sends, hold, limited, grants, now)),
            )
        })
        .collect())
}

/// A budget's key as stored: normalized platform URL and client id.
pub(super) type BudgetKeyParts = (String, String);

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

/// The locked row, as read.
struct Stored {
    requests: i64,
    window_ms: i64,
    sends: String,
    hold_until_ms: i64,
}

impl Stored {
    /// Plans the grant: the stricter of the stored limit and ours, the log as stored (a log
    /// that cannot be read counts as a full window from now, which is safe, and is replaced).
    /// Returns the plan and whether the log could be read. PostgreSQL applies the same rule
    /// in `adsync_budget_grant` (migration `0004_budget_grant.sql`).
    fn plan(&self, ask: Ask, db_now_ms: i64) -> (planner::Plan, bool) {
        let requests = u32::try_from(self.requests.clamp(1, i64::from(u32::MAX)))
            .unwrap_or(1)
            .min(ask.requests);
        let parsed = parse(&self.sends);
        let readable = parsed.is_some();
        let log = parsed.unwrap_or_else(|| vec![db_now_ms; requests as usize]);
        let plan = planner::plan(&planner::PlanRequest {
            log: &log,
            now_ms: db_now_ms.saturating_add(ask.lead_ms),
            requests,
            window_ms: self.window_ms.max(ask.window_ms),
            margin_ms: ask.margin_ms,
            hold_until_ms: self.hold_until_ms,
            want: ask.want.min(requests),
            horizon_ms: ask.horizon_ms,
        });
        (plan, readable)
    }
}

fn warn_unreadable(sends: &str) {
    tracing::warn!(
        sends = %sends.chars().take(200).collect::<String>(),
        "unreadable send log in rate_budgets; treating the window as full"
    );
}

/// The stored form of a log: ms, comma-separated.
fn join(log: &[i64]) -> String {
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
    use rand::{Rng, SeedableRng, rngs::SmallRng};

    use super::*;

    /// White space to Rust's `trim` (ASCII and not), and characters that only look like it.
    const BLANKS: [&str; 10] = [
        " ", "\t", "\n", "\r", "\u{b}", "\u{c}", "\u{85}", "\u{a0}", "\u{2028}", "\u{3000}",
    ];
    const NOT_BLANKS: [&str; 3] = ["\u{200b}", "\u{feff}", "\u{180e}"];
    /// Entries that are not plain numbers, or are at the ends of what `i64` holds.
    const ODD: [&str; 17] = [
        "",
        "x",
        "+",
        "-",
        "1.5",
        "--1",
        "+-1",
        "0x10",
        "1e3",
        "\u{663}",
        "+42",
        "0000000000000000000000042",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999",
    ];

    fn pick<'a>(rng: &mut SmallRng, from: &[&'a str]) -> &'a str {
        from[rng.random_range(0..from.len())]
    }

    /// A stored log as a person or a bug might have left it: mostly numbers around `base`,
    /// now and then signed, zero-padded, padded with white space (or what looks like it),
    /// odd entries, a trailing comma, nothing but blanks; `odd` says how often (1000: often,
    /// 100: now and then).
    fn sends_text(rng: &mut SmallRng, base: i64, entries: usize, odd: u32) -> String {
        if rng.random_ratio(odd, 4000) {
            return (0..rng.random_range(0..3))
                .map(|_| pick(rng, &BLANKS))
                .collect();
        }
        let mut parts = Vec::new();
        for _ in 0..entries {
            let mut part = if rng.random_ratio(odd, 3000) {
                pick(rng, &ODD).to_owned()
            } else {
                let t = base + rng.random_range(-20_000..=20_000);
                match rng.random_range(0..20) {
                    0 if t >= 0 => format!("+{t}"),
                    1 if t >= 0 => format!("00{t}"),
                    _ => t.to_string(),
                }
            };
            for _ in 0..2 {
                if rng.random_ratio(odd, 2000) {
                    let blank = if rng.random_ratio(1, 5) {
                        pick(rng, &NOT_BLANKS)
                    } else {
                        pick(rng, &BLANKS)
                    };
                    part = if rng.random() {
                        format!("{blank}{part}")
                    } else {
                        format!("{part}{blank}")
                    };
                }
            }
            parts.push(part);
        }
        let mut text = parts.join(",");
        if rng.random_ratio(odd, 10_000) {
            text.push(',');
        }
        text
    }

    async fn migrated(pool: &PgPool) {
        Store::Postgres(pool.clone()).migrate().await.unwrap();
    }

    /// `adsync_budget_parse_sends` (PostgreSQL) reads a stored log exactly as [`parse`] does:
    /// the same numbers, or unreadable (NULL) exactly when `parse` says `None`.
    #[sqlx::test(migrations = false)]
    async fn the_sql_log_reader_reads_what_parse_reads(pool: PgPool) {
        migrated(&pool).await;
        for seed in 0..3_000u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let entries = rng.random_range(0..=6);
            let text = sends_text(&mut rng, 1_700_000_000_000, entries, 1000);

            let read: Option<Vec<i64>> = sqlx::query_scalar("SELECT adsync_budget_parse_sends($1)")
                .bind(&text)
                .fetch_one(&pool)
                .await
                .unwrap();

            assert_eq!(read, parse(&text), "seed {seed}: {text:?}");
        }
    }

    /// PostgreSQL's grant in one statement does exactly what [`Stored::plan`] does with the
    /// clock it read, on any row: missing, of another limit, held, full, with a log out of
    /// order or unreadable; and writes back what [`join`] would, and the count of slots.
    #[sqlx::test(migrations = false)]
    async fn a_grant_in_sql_is_the_grant_in_rust_on_any_row(pool: PgPool) {
        migrated(&pool).await;
        let clock = format!("SELECT {PG_NOW_MS}");
        let base: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(clock))
            .fetch_one(&pool)
            .await
            .unwrap();
        let key = BudgetKey::new(&"http://platform.example/".parse().unwrap(), "c");
        for seed in 0..1_000u64 {
            // Arrange: the row (or none), and what the holder asks.
            let mut rng = SmallRng::seed_from_u64(seed);
            let window = rng.random_range(1..=5_000i64);
            let ask = Ask {
                requests: rng.random_range(1..=12),
                window_ms: window,
                margin_ms: rng.random_range(0..=300),
                want: 1,
                horizon_ms: rng.random_range(0..=2 * window),
                lead_ms: rng.random_range(0..=50),
            };
            let ask = Ask {
                want: rng.random_range(1..=ask.requests),
                ..ask
            };
            let stored = if rng.random_ratio(1, 10) {
                None
            } else {
                let requests = rng.random_range(1..=12);
                let entries = rng.random_range(0..=14);
                Some(Stored {
                    requests,
                    window_ms: if rng.random() {
                        window
                    } else {
                        rng.random_range(1..=5_000)
                    },
                    sends: sends_text(&mut rng, base, entries, 100),
                    hold_until_ms: if rng.random_ratio(1, 4) {
                        base + rng.random_range(-5_000..=5_000)
                    } else {
                        0
                    },
                })
            };
            sqlx::query("DELETE FROM rate_budgets")
                .execute(&pool)
                .await
                .unwrap();
            let grants_before = rng.random_range(0..1_000i64);
            if let Some(row) = &stored {
                sqlx::query(
                    "INSERT INTO rate_budgets (api_url, client_id, requests, window_ms, sends,
                                               hold_until_ms, grants, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, now())",
                )
                .bind(key.api_url())
                .bind(key.client_id())
                .bind(row.requests)
                .bind(row.window_ms)
                .bind(&row.sends)
                .bind(row.hold_until_ms)
                .bind(grants_before)
                .execute(&pool)
                .await
                .unwrap();
            }

            // Act
            let (slots, clock_ms, row_requests, row_window_ms, unreadable, _, _): PgGrantRow =
                sqlx::query_as(PG_GRANT)
                    .bind(key.api_url())
                    .bind(key.client_id())
                    .bind(i64::from(ask.requests))
                    .bind(ask.window_ms)
                    .bind(ask.margin_ms)
                    .bind(i64::from(ask.want))
                    .bind(ask.horizon_ms)
                    .bind(ask.lead_ms)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            let (sends, grants): (String, i64) = sqlx::query_as(
                "SELECT sends, grants FROM rate_budgets WHERE api_url = $1 AND client_id = $2",
            )
            .bind(key.api_url())
            .bind(key.client_id())
            .fetch_one(&pool)
            .await
            .unwrap();

            // Assert
            let (row, grants_before) = match stored {
                Some(row) => (row, grants_before),
                None => (
                    Stored {
                        requests: i64::from(ask.requests),
                        window_ms: ask.window_ms,
                        sends: String::new(),
                        hold_until_ms: 0,
                    },
                    0,
                ),
            };
            let (plan, readable) = row.plan(ask, clock_ms);
            let context = format!("seed {seed}: {ask:?}, stored {:?}", row.sends);
            assert_eq!(slots, plan.granted, "{context}");
            assert_eq!(sends, join(&plan.log), "{context}");
            assert_eq!(
                grants,
                grants_before + plan.granted.len() as i64,
                "{context}"
            );
            assert_eq!((row_requests, row_window_ms), (row.requests, row.window_ms));
            let first_200 = row.sends.chars().take(200).collect::<String>();
            assert_eq!(unreadable, (!readable).then_some(first_200), "{context}");
        }
    }

    #[test]
    fn a_log_round_trips_through_its_text() {
        assert_eq!(parse(&join(&[1, 20, 300])), Some(vec![1, 20, 300]));
        assert_eq!(parse(""), Some(vec![]));
        assert_eq!(parse("1,x"), None);
    }
}
