//! Grants of many budgets, made together (PostgreSQL). A worker at a thousand tenants holds a
//! thousand budgets, and each of them grants about once per window: alone, that is thousands
//! of read-and-write pairs a second, each two round trips, and at that load a tenth of the
//! service's CPU went into making them (perf) besides the database's share. A [`Granter`]
//! shared by a process's budgets takes every grant asked for while its previous statement
//! ran (group commit: no timer, so a lone grant waits for nothing) and makes them in two
//! statements: every row and the clock read at once, each grant planned by the same rule as
//! alone, and every new log written by one conditional `UPDATE` that skips rows another
//! holder changed or holds locked. A grant that lost (the row changed, or another holder
//! had it locked), whose row does not exist yet, or whose batch failed, is made alone
//! ([`super::db::pg_grant`]), so nothing here can grant what the budget's rule would not.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use sqlx::{PgPool, Row};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use adsync_store::StoreError;

use super::{
    Ask, DbBudget, Granted,
    db::{PG_NOW_MS, Stored, join},
};

/// At most this many grants go into one statement.
const MAX_BATCH: usize = 2_000;

/// What became of a grant asked of the [`Granter`].
#[derive(Debug)]
pub(super) enum Gathered {
    /// Granted with the others.
    Granted(Granted),
    /// Another holder changed the row, or held it locked: an optimistic race lost.
    Lost,
    /// Not made here (no row yet, the same key twice in one batch, the statement failed,
    /// the granter is gone): the budget grants alone.
    Alone,
}

struct Request {
    budget: DbBudget,
    ask: Ask,
    done: oneshot::Sender<Gathered>,
}

/// A handle on a process's grant gatherer (cheap to clone); its task ends with the last
/// handle. Attach it to budgets with [`DbBudget::gathered`].
#[derive(Debug, Clone)]
pub struct Granter {
    tx: mpsc::UnboundedSender<Request>,
    counters: Arc<Counters>,
}

/// What a [`Granter`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GranterStats {
    /// Batches it made (each a read and a write).
    pub batches: u64,
    /// Grants they made.
    pub granted: u64,
    /// Grants that lost their race and were made alone.
    pub lost: u64,
    /// Grants handed back to be made alone for another reason (a new row, a failure).
    pub alone: u64,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    granted: AtomicU64,
    lost: AtomicU64,
    alone: AtomicU64,
}

impl Granter {
    /// Starts a gatherer granting on `pool` (needs a tokio runtime).
    pub fn spawn(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(pool, rx, counters.clone()));
        Self { tx, counters }
    }

    /// What it did so far.
    pub fn stats(&self) -> GranterStats {
        let c = &self.counters;
        GranterStats {
            batches: c.batches.load(Ordering::Relaxed),
            granted: c.granted.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            alone: c.alone.load(Ordering::Relaxed),
        }
    }

    pub(super) async fn grant(&self, budget: &DbBudget, ask: Ask) -> Gathered {
        let (done, answer) = oneshot::channel();
        let request = Request {
            budget: budget.clone(),
            ask,
            done,
        };
        if self.tx.send(request).is_err() {
            return Gathered::Alone;
        }
        answer.await.unwrap_or(Gathered::Alone)
    }
}

async fn run(pool: PgPool, mut rx: mpsc::UnboundedReceiver<Request>, counters: Arc<Counters>) {
    while let Some(first) = rx.recv().await {
        // Everything asked for while the last batch ran goes into this one.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        grant_batch(&pool, batch, &counters).await;
    }
}

async fn grant_batch(pool: &PgPool, batch: Vec<Request>, counters: &Counters) {
    // One key once per statement: a second asker of a key already in it grants alone (the
    // write below could not tell two winners of one row apart).
    let mut keys = HashSet::new();
    let (batch, twice): (Vec<Request>, Vec<Request>) = batch
        .into_iter()
        .partition(|r| keys.insert(r.budget.key().clone()));
    for r in twice {
        counters.alone.fetch_add(1, Ordering::Relaxed);
        let _ = r.done.send(Gathered::Alone);
    }
    let outcomes = match grant_many(pool, &batch).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::debug!(error = %e, grants = batch.len(), "gathered grants failed; granting alone");
            batch.iter().map(|_| Gathered::Alone).collect()
        }
    };
    counters.batches.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("adsync_budget_grant_batches_total").increment(1);
    for (r, outcome) in batch.into_iter().zip(outcomes) {
        let counter = match outcome {
            Gathered::Granted(_) => &counters.granted,
            Gathered::Lost => &counters.lost,
            Gathered::Alone => &counters.alone,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let _ = r.done.send(outcome);
    }
}

/// The batch's two statements, on one connection (the write must not wait behind the pool
/// while the slots planned from the clock reading age).
async fn grant_many(pool: &PgPool, batch: &[Request]) -> Result<Vec<Gathered>, StoreError> {
    let urls: Vec<&str> = batch.iter().map(|r| r.budget.key().api_url()).collect();
    let ids: Vec<&str> = batch.iter().map(|r| r.budget.key().client_id()).collect();
    // One primary-key probe per budget (LATERAL ... LIMIT 1), whatever the table's size when
    // the plan was made: a join let the planner hash the whole table, and a connection keeps
    // the generic plan it made in the first seconds of a thousand runs, when the table was a
    // few rows, for good (3,242 scans of 1,000 rows in one bench; 33 buffers a read, now 9).
    let read = format!(
        "SELECT x.i, b.requests, b.window_ms, b.sends, b.hold_until_ms, b.grants,
                b.rate_limited, (SELECT {PG_NOW_MS}) AS now_ms
         FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS x(api_url, client_id, i)
         CROSS JOIN LATERAL (
             SELECT * FROM rate_budgets b
             WHERE b.api_url = x.api_url AND b.client_id = x.client_id LIMIT 1
         ) b"
    );
    let mut conn = pool.acquire().await?;
    let before = Instant::now();
    let rows = sqlx::query(sqlx::AssertSqlSafe(read))
        .bind(&urls)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
    let local_now = before + before.elapsed() / 2;

    // What each grant gets if its write wins (`None`: no row yet, it grants alone).
    let mut planned: Vec<Option<Granted>> = batch.iter().map(|_| None).collect();
    let (mut w_urls, mut w_ids, mut w_logs, mut w_counts, mut w_grants, mut w_limited) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for row in rows {
        let i = usize::try_from(row.try_get::<i64, _>("i")? - 1).unwrap_or(usize::MAX);
        let Some(r) = batch.get(i) else { continue };
        let db_now_ms: i64 = row.try_get("now_ms")?;
        let (plan, granted) = Stored::pg(&row)?.plan(r.ask, db_now_ms, &r.budget);
        w_urls.push(urls[i]);
        w_ids.push(ids[i]);
        w_logs.push(join(&plan.log));
        w_counts.push(granted);
        w_grants.push(row.try_get::<i64, _>("grants")?);
        w_limited.push(row.try_get::<i64, _>("rate_limited")?);
        planned[i] = Some(Granted {
            slots: plan.granted,
            db_now_ms,
            local_now,
        });
    }
    if w_urls.is_empty() {
        return Ok(batch.iter().map(|_| Gathered::Alone).collect());
    }
    // Only rows unchanged since the read (`grants` and `rate_limited`: each grant raises the
    // one, each hold the other) and not locked by another holder's grant are written; the
    // others lose, as an optimistic grant alone would. SKIP LOCKED: this statement never
    // waits for a row lock, so batches of several processes cannot deadlock.
    let written: Vec<(String, String)> = sqlx::query_as(
        "WITH x AS (
            SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                $6::int8[]) AS x(api_url, client_id, sends, n, grants, rate_limited)
        ), mine AS (
            -- A primary-key probe per budget, as in the read.
            SELECT l.api_url, l.client_id FROM x CROSS JOIN LATERAL (
                SELECT b.api_url, b.client_id FROM rate_budgets b
                WHERE b.api_url = x.api_url AND b.client_id = x.client_id
                  AND b.grants = x.grants AND b.rate_limited = x.rate_limited
                LIMIT 1 FOR UPDATE SKIP LOCKED
            ) l
        )
        UPDATE rate_budgets b SET sends = x.sends, grants = b.grants + x.n, updated_at = now()
        FROM x JOIN mine m ON m.api_url = x.api_url AND m.client_id = x.client_id
        WHERE b.api_url = x.api_url AND b.client_id = x.client_id
          AND b.grants = x.grants AND b.rate_limited = x.rate_limited
        RETURNING b.api_url, b.client_id",
    )
    .bind(&w_urls)
    .bind(&w_ids)
    .bind(&w_logs)
    .bind(&w_counts)
    .bind(&w_grants)
    .bind(&w_limited)
    .fetch_all(&mut *conn)
    .await?;
    let won: HashSet<(&str, &str)> = written
        .iter()
        .map(|(u, c)| (u.as_str(), c.as_str()))
        .collect();
    Ok(planned
        .into_iter()
        .enumerate()
        .map(|(i, plan)| match plan {
            None => Gathered::Alone,
            Some(_) if !won.contains(&(urls[i], ids[i])) => Gathered::Lost,
            Some(granted) => Gathered::Granted(granted),
        })
        .collect())
}
