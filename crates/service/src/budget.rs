//! Rate budgets shared by everyone who spends them. The platform limits per client id, so a
//! budget is keyed by (platform URL, client id) and lives in the database (`rate_budgets`):
//! every worker on every machine, and every tenant that shares the client id, spends the same
//! budget, and a 429 seen by one holds all of them.
//!
//! The rule is the [`planner`]'s, pure and tested on its own: a row keeps the last `N` granted
//! send times (the database's clock, future reservations included) and a new slot goes where
//! fewer than `N` of them lie within `W + M` before it. [`DbBudget`] asks for slots in one
//! grant (on PostgreSQL first optimistically: the row and the clock read together, the new log
//! written only if the row did not change; else, and on SQLite, one transaction holding the
//! row: `FOR UPDATE`, `BEGIN IMMEDIATE`), keeps the granted instants in a local queue, and hands them out through
//! [`adsync_client::SharedBudget`]: the client's own limiter stays the fast path (order within
//! the process, its exact log), the database is the truth.
//!
//! **Time.** Slots are granted on the database's clock (PostgreSQL's `clock_timestamp()`, read
//! with the row or after it is locked, so that machines with skewed clocks agree; SQLite is one
//! machine, its system clock) and mapped to a local [`Instant`] through the clock reading. A slot is a
//! promise about when a request leaves, so one used late is not used at all: a slot more than
//! the tolerance past its time is dropped (it cost the budget a slot, never a 429), and the
//! tolerance is part of the margin every slot keeps. Each holder spaces the slots it is
//! granted by its own margin (its limiter's, at least the default): the table keeps no
//! margin, so a holder whose requests arrive far more unevenly than the others' should be
//! given a fixed, wider limiter margin.
//!
//! **Cost.** One grant is two statements on PostgreSQL when no other holder wrote the row in
//! between (`grant_conflicts_total` counts the lost races; after four, the five statements of
//! the locking transaction), about a millisecond on a local PostgreSQL and a tenth of one on
//! SQLite; at the platform's 10 requests a minute it is nothing, and concurrent takers in one
//! process share one grant at a time (`grants_total` and `grant_seconds` in `metrics`).

pub mod planner;

mod db;
mod gather;

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use adsync_client::{SharedBudget, SlidingWindowLimiter, TakeFuture};
use adsync_domain::RateLimit;
use adsync_store::{Store, StoreError};
use tokio::time::Instant;
use url::Url;

pub use gather::{Granter, GranterStats};
pub use planner::{Plan, PlanRequest, exceeds, plan};

/// Which budget: the platform (its normalized URL) and the client id it limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BudgetKey {
    api_url: String,
    client_id: String,
}

impl BudgetKey {
    /// The budget of `client_id` on the platform at `api_url`. The URL is normalized the way
    /// the client builds its base (scheme and host lower case, default port dropped, path
    /// ending in `/`) and loses its user info, query and fragment: two spellings of one
    /// platform share one budget, and no credential is ever stored in a key.
    pub fn new(api_url: &Url, client_id: &str) -> Self {
        let mut url = api_url.clone();
        // Only fails for URLs that cannot be a base, which have no user info to remove.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        url.set_fragment(None);
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        Self {
            api_url: url.to_string(),
            client_id: client_id.to_owned(),
        }
    }

    /// The budget of a tenant's platform URL as stored (text) and client id; `None` for a URL
    /// that does not parse (validated tenants always do).
    pub fn of(api_url: &str, client_id: &str) -> Option<Self> {
        Url::parse(api_url)
            .ok()
            .map(|url| Self::new(&url, client_id))
    }

    /// The normalized platform URL.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

/// How a [`DbBudget`] asks for slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetOptions {
    /// Slots asked for per grant at least (more when more callers wait, never more than `N`).
    /// `0` or `1`, the default: one, as each client's limiter sends one request at a time.
    pub batch: u32,
    /// Slots after the first of a grant are granted only within this time of it, so that one
    /// holder cannot reserve far ahead. `None`: `W / N`.
    pub horizon: Option<Duration>,
    /// How late a granted slot may still be used. `None`: [`default_late_tolerance`] (20 ms
    /// at a 1 s window, 300 ms at 60 s). It is added to the margin every slot keeps.
    pub late_tolerance: Option<Duration>,
    /// Always grant by the transaction that locks the row, never optimistically (PostgreSQL;
    /// SQLite always locks). For tests that mix both kinds of holders on one budget.
    pub locking_only: bool,
}

/// One granted slot: when its request may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The slot on the budget's clock (ms since the epoch), as stored in the log.
    pub at_ms: i64,
    /// The same moment on this process's clock.
    pub at: Instant,
    /// The local hold generation when it was granted (a later hold may void it).
    hold_gen: u64,
}

/// The budget's row, as the database holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRow {
    /// `N` stored for the key.
    pub requests: u32,
    /// `W` stored for the key, ms.
    pub window_ms: i64,
    /// The last `N` granted send times, ms, ascending.
    pub sends: Vec<i64>,
    /// No slot is granted before this (ms; 0: none).
    pub hold_until_ms: i64,
    /// 429s reported by holders.
    pub rate_limited: i64,
    /// Slots granted, ever.
    pub grants: i64,
    /// The budget's clock when read (ms).
    pub now_ms: i64,
}

impl BudgetRow {
    /// The share of the window's `N` requests granted within the last window (future
    /// reservations included), 0 to 1: how busy the client id is right now.
    pub fn use_now(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        let since = self.now_ms.saturating_sub(self.window_ms);
        let recent = self.sends.iter().filter(|&&t| t > since).count();
        (recent as f64 / f64::from(self.requests)).min(1.0)
    }
}

/// Every budget in the database, by key: for displays (the overview's budget use).
pub async fn all_budgets(store: &Store) -> Result<HashMap<BudgetKey, BudgetRow>, StoreError> {
    Ok(db::all_rows(store).await?.into_iter().collect())
}

/// Creates, in one statement, the rows of the budgets that have none yet (existing rows are
/// left as they are). A budget's first grant creates its row otherwise, alone and in a
/// transaction of its own (8 round trips): a worker that claims a thousand runs of new
/// tenants at once would make a thousand of those before any grant could be gathered. Only
/// PostgreSQL gathers grants; on SQLite this does nothing.
pub async fn create_missing(
    store: &Store,
    budgets: &[(BudgetKey, RateLimit)],
) -> Result<(), StoreError> {
    match store {
        Store::Postgres(pool) if !budgets.is_empty() => db::pg_create_missing(pool, budgets).await,
        _ => Ok(()),
    }
}

/// The late tolerance of a budget whose options name none: half the limiter's default
/// margin (300 ms at a 60 s window), at least [`MIN_LATE_TOLERANCE`].
pub fn default_late_tolerance(limit: RateLimit) -> Duration {
    (SlidingWindowLimiter::default_margin(limit) / 2).max(MIN_LATE_TOLERANCE)
}

/// The least late tolerance. A slot used later than its tolerance is dropped, and a dropped
/// slot's place in the window stays taken: the request waits for the next free one, often a
/// whole window later. A process running a thousand runs on two busy cores wakes from a
/// slot's timer late by more than 10 ms often: with 10 ms, 3,902 of the 101,000 slots of
/// such a bench were dropped (11.5 ms late at the median, 15 ms at p90) and its runs ended
/// 1.30-1.34 x the floor; with 20 ms, 272 were and they ended 1.23-1.27 x. The tolerance is
/// added to every slot's spacing, so it is not larger: 30 and 50 ms dropped fewer slots but
/// gave no better runs.
pub const MIN_LATE_TOLERANCE: Duration = Duration::from_millis(20);

/// What this [`DbBudget`] did, for benchmarks and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetStats {
    /// Grants made (each one transaction or, on PostgreSQL, one conditional write).
    pub grants: u64,
    /// Slots they granted.
    pub slots: u64,
    /// Time spent granting, in all.
    pub db_time: Duration,
    /// The longest grant.
    pub max_db_time: Duration,
    /// Slots dropped because they could only have been used late.
    pub dropped_late: u64,
    /// Slots dropped because a 429's hold came up before them.
    pub dropped_held: u64,
    /// 429 holds written.
    pub holds: u64,
    /// Grants or holds that failed.
    pub errors: u64,
    /// Optimistic grants that lost a race (another holder wrote the row in between).
    pub conflicts: u64,
}

/// A shared rate budget in the database, spent through [`SharedBudget`] (see the module
/// documentation). Cheap to clone; clones share the local queue of granted slots.
#[derive(Clone)]
pub struct DbBudget {
    shared: Arc<Shared>,
}

struct Shared {
    store: Store,
    key: BudgetKey,
    limit: RateLimit,
    limiter: Arc<SlidingWindowLimiter>,
    batch: u32,
    horizon_ms: i64,
    tolerance: Duration,
    locking_only: bool,
    // Grants made together with the process's other budgets (PostgreSQL), if attached.
    granter: Option<Granter>,
    local: Mutex<Local>,
    // One grant in flight per budget: concurrent takers wait for its slots instead of each
    // locking the row.
    granting: tokio::sync::Mutex<()>,
    waiting: AtomicUsize,
    // The time from reading the clock to having the slots, smoothed (µs): a grant's first
    // slot is placed twice that far ahead, so that it has not passed when its holder gets it
    // (a slot used late is dropped, which costs the budget a slot).
    lead_us: AtomicU64,
    warned_mismatch: AtomicBool,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Local {
    slots: VecDeque<Slot>,
    hold_until: Option<Instant>,
    hold_gen: u64,
    // The slots this holder was granted lately (budget clock, ms), to tell its sends in the
    // row's log from other holders'; as many as the log can hold, twice over.
    own: VecDeque<i64>,
    // The latest send of another holder seen in the log.
    others_until: Option<Instant>,
    // The same, on the budget's clock (ms): no send of another holder written before this
    // holder's last read of the log is later (sends are appended in order, so one pushed out
    // of the log unseen was pushed out by a later one of another holder, or by this holder's
    // own grant, which read it).
    others_max_ms: Option<i64>,
}

#[derive(Debug, Default)]
struct Counters {
    grants: AtomicU64,
    slots: AtomicU64,
    db_time_us: AtomicU64,
    max_db_time_us: AtomicU64,
    dropped_late: AtomicU64,
    dropped_held: AtomicU64,
    holds: AtomicU64,
    errors: AtomicU64,
    conflicts: AtomicU64,
}

impl fmt::Debug for DbBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbBudget")
            .field("backend", &self.shared.store.kind())
            .field("key", &self.shared.key)
            .field("limit", &self.shared.limit)
            .finish_non_exhaustive()
    }
}

/// What a grant transaction returns: the slots on the budget's clock and the reading that
/// maps that clock to this process's.
#[derive(Debug)]
struct Granted {
    slots: Vec<i64>,
    db_now_ms: i64,
    local_now: Instant,
}

/// The numbers a grant transaction plans with (the row may say a stricter limit).
#[derive(Debug, Clone, Copy)]
struct Ask {
    requests: u32,
    window_ms: i64,
    margin_ms: i64,
    want: u32,
    horizon_ms: i64,
    lead_ms: i64,
    locking_only: bool,
    /// The slots are for requests sent through the holder's limiter, which may then pace
    /// them when the holder spends the budget alone (see [`planner`]).
    paced: bool,
}

impl DbBudget {
    /// The budget of `key`, limited to `limit`, in `store`'s `rate_budgets` table. Slots are
    /// spaced by `W` plus the margin `limiter` measured (never less than its
    /// [`SlidingWindowLimiter::default_margin`]) plus the late tolerance. `limiter` is the one
    /// of the client that spends this budget.
    pub fn new(
        store: Store,
        key: BudgetKey,
        limit: RateLimit,
        limiter: Arc<SlidingWindowLimiter>,
    ) -> Self {
        Self::with_options(store, key, limit, limiter, BudgetOptions::default())
    }

    /// [`DbBudget::new`] with explicit [`BudgetOptions`].
    pub fn with_options(
        store: Store,
        key: BudgetKey,
        limit: RateLimit,
        limiter: Arc<SlidingWindowLimiter>,
        options: BudgetOptions,
    ) -> Self {
        let horizon = options
            .horizon
            .unwrap_or_else(|| limit.window / limit.requests.max(1));
        let tolerance = options
            .late_tolerance
            .unwrap_or_else(|| default_late_tolerance(limit));
        Self {
            shared: Arc::new(Shared {
                store,
                key,
                limit,
                limiter,
                batch: options.batch.max(1),
                horizon_ms: ms_ceil(horizon),
                tolerance,
                locking_only: options.locking_only,
                granter: None,
                local: Mutex::new(Local::default()),
                granting: tokio::sync::Mutex::new(()),
                waiting: AtomicUsize::new(0),
                lead_us: AtomicU64::new(1_000),
                warned_mismatch: AtomicBool::new(false),
                counters: Counters::default(),
            }),
        }
    }

    /// Makes this budget's grants with the other budgets of `granter` (see [`Granter`]):
    /// on PostgreSQL, unless it only ever locks; SQLite grants alone. Call it before the
    /// budget is cloned (a clone made earlier keeps granting alone).
    #[must_use]
    pub fn gathered(mut self, granter: Granter) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.granter = Some(granter),
            None => tracing::warn!("a shared budget already in use was not attached to a granter"),
        }
        self
    }

    /// The budget's key.
    pub fn key(&self) -> &BudgetKey {
        &self.shared.key
    }

    /// The margin each slot keeps now: the limiter's planning margin (at least its default)
    /// plus the late tolerance.
    pub fn margin(&self) -> Duration {
        let s = &self.shared;
        s.limiter
            .planning_margin()
            .max(SlidingWindowLimiter::default_margin(s.limit))
            + s.tolerance
    }

    /// Waits for the next slot of the budget (from the local queue, or granted by the
    /// database when the queue is empty) and returns it when its request may go now.
    ///
    /// Slots taken here are planned by the budget's rule alone: the caller's sends need not
    /// go through the limiter. The client's path ([`SharedBudget::take`]) does, and when this
    /// holder spends the budget alone its grants follow its limiter (see [`planner`]).
    pub async fn take_slot(&self) -> Result<Slot, StoreError> {
        self.take(false).await
    }

    async fn take(&self, paced: bool) -> Result<Slot, StoreError> {
        let s = &self.shared;
        let mut waiting = Waiting::new(&s.waiting);
        loop {
            waiting.set(true);
            let hold = s.local().hold_until;
            if let Some(until) = hold
                && until > Instant::now()
            {
                tokio::time::sleep_until(until).await;
            }
            let next = s.local().slots.pop_front();
            let Some(slot) = next else {
                let _granting = s.granting.lock().await;
                if s.local().slots.is_empty() {
                    // Boxed: the grant's database future is large and rarely needed, and
                    // inline it would make every take's future (boxed for the client) as big.
                    Box::pin(self.refill(paced)).await?;
                }
                continue;
            };
            // Holding a slot, this caller is no longer demand for the next grant.
            waiting.set(false);
            tokio::time::sleep_until(slot.at).await;
            let late = Instant::now().saturating_duration_since(slot.at);
            {
                let local = s.local();
                if local.hold_gen != slot.hold_gen
                    && local.hold_until.is_some_and(|until| until > slot.at)
                {
                    s.counters.dropped_held.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("adsync_budget_slots_dropped_total", "reason" => "held")
                        .increment(1);
                    continue;
                }
            }
            if late > s.tolerance {
                s.counters.dropped_late.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("adsync_budget_slots_dropped_total", "reason" => "late")
                    .increment(1);
                tracing::debug!(
                    late_ms = late.as_secs_f64() * 1e3,
                    "a shared budget slot came too late to use; taking another"
                );
                continue;
            }
            return Ok(slot);
        }
    }

    /// Asks the database for slots and queues them (the caller holds `granting`).
    async fn refill(&self, paced: bool) -> Result<(), StoreError> {
        let s = &self.shared;
        // Demand: callers waiting here, and the requests queued behind the one that holds
        // the limiter's turn (each will want a slot next). One grant per burst instead of one
        // per request: at a thousand tenants that is the difference between a few hundred
        // and ten thousand transactions a second.
        let demand = s.waiting.load(Ordering::Relaxed).max(s.limiter.queued());
        let want = u32::try_from(demand).unwrap_or(u32::MAX).max(s.batch);
        let slots = self.grant_paced(want, paced).await?;
        s.local().slots.extend(slots);
        Ok(())
    }

    /// One grant transaction: up to `want` slots (at least one, at most `N`), recorded in the
    /// database; the caller must use them or lose them. [`DbBudget::take_slot`] is the way to
    /// spend the budget; this is the database round trip it makes, for benchmarks.
    #[tracing::instrument(skip_all, fields(client_id = %self.shared.key.client_id, want))]
    pub async fn grant(&self, want: u32) -> Result<Vec<Slot>, StoreError> {
        self.grant_paced(want, false).await
    }

    async fn grant_paced(&self, want: u32, paced: bool) -> Result<Vec<Slot>, StoreError> {
        let hold_gen = self.shared.local().hold_gen;
        let granted = self.grant_raw(want, paced).await?;
        Ok(granted
            .slots
            .iter()
            .map(|&at_ms| Slot {
                at_ms,
                at: at_instant(granted.local_now, granted.db_now_ms, at_ms),
                hold_gen,
            })
            .collect())
    }

    async fn grant_raw(&self, want: u32, paced: bool) -> Result<Granted, StoreError> {
        let s = &self.shared;
        let (configured, window_ms) = stored_limit(s.limit);
        // A limit the platform's 429s taught this holder's limiter (below the configured one)
        // plans its grants, against the log every holder writes, and caps how many it asks
        // for at once (slots the limiter would hold back are dropped late, and each costs
        // every holder of the client id a place). Only asking for fewer at once, two holders
        // of a client id set above the platform's limit kept filling each window to the
        // configured limit together, and drew 429s in every one.
        let learned = u32::try_from(s.limiter.requests()).unwrap_or(u32::MAX);
        let requests = configured.min(learned).max(1);
        let ask = Ask {
            requests,
            window_ms,
            margin_ms: ms_ceil(self.margin()),
            want: want.clamp(1, requests),
            horizon_ms: s.horizon_ms,
            lead_ms: i64::try_from((2 * s.lead_us.load(Ordering::Relaxed)).div_ceil(1000))
                .unwrap_or(i64::MAX),
            locking_only: s.locking_only,
            paced,
        };
        let started = Instant::now();
        let result = match &s.store {
            Store::Postgres(pool) => self.pg_grant(pool, ask).await,
            Store::Sqlite(pool) => db::sqlite_grant(pool, &s.key, ask, self).await,
        };
        let elapsed = started.elapsed();
        let backend = s.store.kind();
        match &result {
            Ok(granted) => {
                self.granted_own(&granted.slots);
                let c = &s.counters;
                let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                c.grants.fetch_add(1, Ordering::Relaxed);
                c.slots
                    .fetch_add(granted.slots.len() as u64, Ordering::Relaxed);
                c.db_time_us.fetch_add(us, Ordering::Relaxed);
                c.max_db_time_us.fetch_max(us, Ordering::Relaxed);
                // From the clock reading to now: how far ahead the next grant starts (at most
                // half the horizon: a stalled commit must not push every later grant out).
                let cap = u64::try_from(s.horizon_ms).unwrap_or(0).saturating_mul(500);
                let lead = u64::try_from(granted.local_now.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .min(cap);
                let old = s.lead_us.load(Ordering::Relaxed);
                s.lead_us
                    .store((old * 3 + lead).div_ceil(4), Ordering::Relaxed);
                metrics::counter!("adsync_budget_grants_total", "backend" => backend).increment(1);
                metrics::histogram!("adsync_budget_grant_seconds", "backend" => backend)
                    .record(elapsed.as_secs_f64());
            }
            Err(e) => {
                s.counters.errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("adsync_budget_errors_total", "backend" => backend).increment(1);
                tracing::warn!(error = %e, "could not take a slot of the shared rate budget");
            }
        }
        result
    }

    /// A grant on PostgreSQL: with the granter's batch if there is one, else (or when the
    /// batch could not make it) alone.
    async fn pg_grant(&self, pool: &sqlx::PgPool, ask: Ask) -> Result<Granted, StoreError> {
        if let Some(granter) = &self.shared.granter
            && !ask.locking_only
        {
            match granter.grant(self, ask).await {
                gather::Gathered::Granted(granted) => return Ok(granted),
                gather::Gathered::Lost => self.conflicted(),
                gather::Gathered::Alone => {}
            }
        }
        db::pg_grant(pool, &self.shared.key, ask, self).await
    }

    /// When this holder is the budget's only recent spender (no send of another holder it
    /// ever read in the log is after `since_ms`; see [`planner`]), the times its limiter gives its next `want`
    /// requests, on the budget's clock as read at `db_now_ms` (a moment ago: the times come
    /// out that much early, and the request waits for its limiter anyway).
    ///
    /// Call it after [`DbBudget::saw_log`] with the same log.
    fn paced(&self, since_ms: i64, want: u32, db_now_ms: i64) -> Option<Vec<i64>> {
        let s = &self.shared;
        if s.local().others_max_ms.is_some_and(|t| t > since_ms) {
            return None;
        }
        let now = Instant::now();
        let times = s.limiter.schedule(usize::try_from(want).unwrap_or(1));
        Some(
            times
                .into_iter()
                .map(|t| db_now_ms.saturating_add(ms_ceil(t.saturating_duration_since(now))))
                .collect(),
        )
    }

    /// A grant read the row's `log` at `db_now_ms`: the sends in it this holder was not
    /// granted are another holder's, and the latest of them is when the client's limiter last
    /// shared a window (see [`SharedBudget::last_other_send`]).
    fn saw_log(&self, log: &[i64], db_now_ms: i64) {
        let now = Instant::now();
        let mut local = self.shared.local();
        let latest_other = latest_other(log, &local.own);
        if let Some(at_ms) = latest_other {
            local.others_max_ms = Some(local.others_max_ms.map_or(at_ms, |m| m.max(at_ms)));
            let at = at_instant(now, db_now_ms, at_ms);
            if local.others_until.is_none_or(|until| at > until) {
                local.others_until = Some(at);
            }
        }
    }

    /// A grant's write landed: its slots are this holder's sends in the log. Only slots
    /// written count: a plan whose write lost may hold the very times the winner wrote.
    fn granted_own(&self, slots: &[i64]) {
        // The log holds at most `N` sends; twice that many of ours covers it.
        let keep = 2 * usize::try_from(self.shared.limit.requests).unwrap_or(usize::MAX);
        let mut local = self.shared.local();
        // Duplicates too: one grant may hold several slots at one millisecond.
        local.own.extend(slots);
        while local.own.len() > keep.max(1) {
            local.own.pop_front();
        }
    }

    /// An optimistic grant lost a race.
    fn conflicted(&self) {
        self.shared
            .counters
            .conflicts
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("adsync_budget_grant_conflicts_total").increment(1);
    }

    /// Called with the row's own limit: warns once when another holder configured the key
    /// differently (the stricter of the two applies).
    fn row_limit(&self, requests: i64, window_ms: i64) {
        let s = &self.shared;
        let ours = (i64::from(s.limit.requests), ms_ceil(s.limit.window).max(1));
        if (requests, window_ms) != ours && !s.warned_mismatch.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                client_id = %s.key.client_id,
                stored_requests = requests,
                stored_window_ms = window_ms,
                our_requests = ours.0,
                our_window_ms = ours.1,
                "the shared rate budget was created with another limit; the stricter applies"
            );
        }
    }

    /// The platform answered 429: no slot of this budget goes before `retry_after` from now,
    /// here (queued slots before it are dropped) and, once the write lands, for every holder.
    /// Returns the hold's end on the budget's clock (ms).
    pub async fn hold_everywhere(&self, retry_after: Duration) -> Result<i64, StoreError> {
        self.hold_here(retry_after);
        self.write_hold(retry_after).await
    }

    fn hold_here(&self, retry_after: Duration) {
        let now = Instant::now();
        let until = now
            .checked_add(retry_after)
            .unwrap_or_else(|| now + Duration::from_secs(86_400));
        let mut local = self.shared.local();
        if local.hold_until.is_none_or(|u| u < until) {
            local.hold_until = Some(until);
        }
        local.hold_gen += 1;
        let before = local.slots.len();
        local.slots.retain(|slot| slot.at >= until);
        let dropped = (before - local.slots.len()) as u64;
        self.shared
            .counters
            .dropped_held
            .fetch_add(dropped, Ordering::Relaxed);
        metrics::counter!("adsync_budget_slots_dropped_total", "reason" => "held")
            .increment(dropped);
    }

    async fn write_hold(&self, retry_after: Duration) -> Result<i64, StoreError> {
        let s = &self.shared;
        let retry_ms = ms_ceil(retry_after);
        let result = match &s.store {
            Store::Postgres(pool) => db::pg_hold(pool, &s.key, s.limit, retry_ms).await,
            Store::Sqlite(pool) => db::sqlite_hold(pool, &s.key, s.limit, retry_ms).await,
        };
        match &result {
            Ok(_) => {
                s.counters.holds.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("adsync_budget_holds_total").increment(1);
            }
            Err(_) => {
                s.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// The budget's row now (`None` before anyone took a slot or held it).
    pub async fn row(&self) -> Result<Option<BudgetRow>, StoreError> {
        let s = &self.shared;
        match &s.store {
            Store::Postgres(pool) => db::pg_row(pool, &s.key).await,
            Store::Sqlite(pool) => db::sqlite_row(pool, &s.key).await,
        }
    }

    /// What this budget did so far.
    pub fn stats(&self) -> BudgetStats {
        let c = &self.shared.counters;
        BudgetStats {
            grants: c.grants.load(Ordering::Relaxed),
            slots: c.slots.load(Ordering::Relaxed),
            db_time: Duration::from_micros(c.db_time_us.load(Ordering::Relaxed)),
            max_db_time: Duration::from_micros(c.max_db_time_us.load(Ordering::Relaxed)),
            dropped_late: c.dropped_late.load(Ordering::Relaxed),
            dropped_held: c.dropped_held.load(Ordering::Relaxed),
            holds: c.holds.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().expect("budget lock")
    }
}

impl SharedBudget for DbBudget {
    fn take(&self) -> TakeFuture<'_> {
        Box::pin(async move {
            self.take(true)
                .await
                .map(|_| ())
                .map_err(|e| client_error(&e))
        })
    }

    fn last_other_send(&self) -> Option<Instant> {
        self.shared.local().others_until
    }

    fn hold(&self, retry_after: Duration) {
        self.hold_here(retry_after);
        let this = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = this.write_hold(retry_after).await {
                        tracing::warn!(
                            error = %e,
                            client_id = %this.shared.key.client_id,
                            "could not share a 429 hold with the other holders of the rate budget"
                        );
                    }
                });
            }
            Err(_) => tracing::warn!(
                "a 429 hold outside a tokio runtime was not shared with the other holders"
            ),
        }
    }
}

/// A budget failure as the client sees it: transient when the database may come back
/// (the call is retried with backoff), permanent otherwise (the run fails).
fn client_error(e: &StoreError) -> adsync_client::Error {
    adsync_client::Error::SharedBudget {
        detail: e.to_string(),
        transient: e.is_transient(),
    }
}

/// The latest entry of `log` (ascending) that is not one of `own`, counted with multiplicity:
/// two holders may be granted the same millisecond.
fn latest_other(log: &[i64], own: &VecDeque<i64>) -> Option<i64> {
    let mut i = log.len();
    while i > 0 {
        let t = log[i - 1];
        let start = log[..i].partition_point(|&x| x < t);
        let in_log = i - start;
        let ours = own.iter().filter(|&&o| o == t).count();
        if in_log > ours {
            return Some(t);
        }
        i = start;
    }
    None
}

/// Counts a caller of [`DbBudget::take_slot`] while it waits for a slot (not while it
/// sleeps until the one it has): the demand a grant asks for.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    counted: bool,
}

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        Self {
            count,
            counted: false,
        }
    }

    fn set(&mut self, counted: bool) {
        if counted != self.counted {
            if counted {
                self.count.fetch_add(1, Ordering::Relaxed);
            } else {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            self.counted = counted;
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// `at_ms` on the budget's clock, on this process's clock, given that `db_now_ms` was read at
/// `local_now`. A slot already past maps to the past (and is then late).
fn at_instant(local_now: Instant, db_now_ms: i64, at_ms: i64) -> Instant {
    let delta = at_ms.saturating_sub(db_now_ms);
    let magnitude = Duration::from_millis(delta.unsigned_abs());
    if delta >= 0 {
        local_now
            .checked_add(magnitude)
            .unwrap_or_else(|| local_now + Duration::from_secs(86_400))
    } else {
        local_now.checked_sub(magnitude).unwrap_or(local_now)
    }
}

/// `N` and `W` (ms) as a budget row stores them: at least one request, at least a millisecond.
fn stored_limit(limit: RateLimit) -> (u32, i64) {
    (limit.requests.max(1), ms_ceil(limit.window).max(1))
}

/// Whole milliseconds, rounded up (a margin or window never shrinks by rounding).
fn ms_ceil(d: Duration) -> i64 {
    i64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_holders_send_is_found_even_at_one_of_our_milliseconds() {
        let own: VecDeque<i64> = [100, 100, 200].into_iter().collect();
        assert_eq!(latest_other(&[100, 100, 200], &own), None);
        assert_eq!(latest_other(&[100, 100, 200, 200], &own), Some(200));
        assert_eq!(latest_other(&[50, 100, 100, 200], &own), Some(50));
        assert_eq!(latest_other(&[100, 100, 100], &own), Some(100));
        assert_eq!(latest_other(&[], &own), None);
    }
}
