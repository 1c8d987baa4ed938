//! adsync's storage: one repository, [`Store`], over PostgreSQL (production) and SQLite (the
//! embedded default), with embedded migrations, parameterized SQL only, and the run checkpoint.
//!
//! **Ownership.** A run is written only by the holder of its [`Lease`]: [`Store::create_run`]
//! or [`Store::take_over`] grants one (owner, fencing epoch, expiry), [`Store::renew`] keeps it,
//! and every write of the run checks the epoch in the same transaction (on PostgreSQL the check
//! locks the run's row; SQLite writes are `BEGIN IMMEDIATE`), so a process that lost its lease
//! writes nothing ([`StoreError::LeaseLost`]).
//!
//! **Checkpoint.** A page is stored by [`Store::store_page`] in one transaction: the campaigns
//! upsert (raw record included; `removed_at` cleared), one `campaign_metrics` row per campaign
//! for the run, the ids the page listed (`listing_seen`; PostgreSQL keeps the pass of a stored
//! campaign on its row, `listed_pass`, and there only the others), dead letters, warnings, and the
//! listing cursor. When the cursor says the listing is complete, the same transaction marks
//! every campaign of the tenant that the last pass did not list as removed. A campaign's
//! `synced_run_id` records the run whose sync call succeeded for it, so the checkpoint of a
//! run is its cursor plus the campaigns it stored and has not synced. Whatever is in the
//! database is consistent with the checkpoint that describes it, whenever the process dies.
//!
//! **Counters** that can be derived from rows (stored, synced, dead letters, warnings) are
//! derived, and frozen when the run ends ([`Store::finish_run`]).

mod error;
pub mod listen;
mod model;
mod pg;
mod sql;
mod sqlite;
pub mod tx;

use std::{str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use error::{StoreError, redact_url};
pub use model::{
    DeadLetter, Lease, ListingCursor, NewDeadLetter, PageBatch, PageOutcome, Resolution,
    RunCounters, RunEnd, RunEnding, RunRecord, RunStatus, RunWarning, Stage, StopReason,
    StoredCampaign, StoredWarning,
};
/// Writes the service makes inside its own transactions (so that its audit row commits with
/// the change); each takes any executor of its database, a transaction included.
pub mod in_transaction {
    pub use crate::pg::dismiss_dead_letters as dismiss_dead_letters_pg;
    pub use crate::sqlite::dismiss_dead_letters as dismiss_dead_letters_sqlite;
}
/// SQLite's timestamp text (RFC 3339, UTC, microseconds) and its reader, for crates that keep
/// their own tables in the same database (the service).
pub use sqlite::{opt_ts as sqlite_opt_ts, ts as sqlite_ts};

/// Migrations, embedded in the binary and applied at connect.
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
/// Migrations, embedded in the binary and applied at connect.
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The run id type (a `BIGSERIAL` / `INTEGER PRIMARY KEY`).
pub type RunId = i64;

/// How to connect.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// PostgreSQL `statement_timeout` for every session: a held lock or a runaway query
    /// fails the statement (a transient error, so the run stops as interrupted and resumes)
    /// instead of hanging the run.
    pub statement_timeout: Duration,
    /// PostgreSQL pool size.
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(30),
            // A sync run needs one connection for pages and a few for sync results; the
            // service shares this pool between tenants.
            max_connections: 8,
        }
    }
}

/// A new run to create.
#[derive(Debug, Clone, Copy)]
pub struct NewRun<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Page size asked for.
    pub page_size: u64,
    /// Where the data comes from (base URL, or `simulator`).
    pub platform: &'a str,
    /// Who works on it (`host:pid`).
    pub owner: &'a str,
}

/// A connection pool to one database, PostgreSQL or SQLite. Cheap to clone (pools are shared).
#[derive(Clone, Debug)]
pub enum Store {
    /// PostgreSQL, for production.
    Postgres(PgPool),
    /// SQLite, the embedded default.
    Sqlite(SqlitePool),
}

/// Calls the backend's function of the same name with the pool first.
macro_rules! dispatch {
    ($self:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $self {
            Store::Postgres(p) => pg::$f(p, $($arg),*).await,
            Store::Sqlite(p) => sqlite::$f(p, $($arg),*).await,
        }
    };
}

impl Store {
    /// Connects with the default [`StoreOptions`].
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Self::connect_with(url, &StoreOptions::default()).await
    }

    /// Connects to `postgres://...` or `sqlite://...` and applies migrations. A SQLite file is
    /// created if missing. Fails within seconds, with the URL's password hidden, when the
    /// database cannot be reached.
    pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let timeout = format!("{}ms", options.statement_timeout.as_millis().max(1));
            let connect = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::connect(url, &e))?
                .options([
                    ("statement_timeout", timeout.as_str()),
                    ("idle_in_transaction_session_timeout", timeout.as_str()),
                ]);
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(connect)
                .await
                .map_err(|e| StoreError::connect(url, &e))?;
            Store::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::connect(url, &e))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                // SQLite has one writer at a time; one connection turns lock contention
                // into plain queueing in the pool (and writes are BEGIN IMMEDIATE, so two
                // processes on one file queue on the busy timeout instead of deadlocking).
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(connect)
                .await
                .map_err(|e| StoreError::connect(url, &e))?;
            Store::Sqlite(pool)
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(p) => PG_MIGRATOR.run(p).await?,
            Store::Sqlite(p) => SQLITE_MIGRATOR.run(p).await?,
        }
        Ok(())
    }

    /// `postgres` or `sqlite`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        match self {
            Store::Postgres(p) => p.close().await,
            Store::Sqlite(p) => p.close().await,
        }
    }

    // ---- Runs and their leases ---------------------------------------------------------

    /// Starts a run, leased to `run.owner` for `ttl`. Fails with
    /// [`StoreError::RunInProgress`] while another run of the tenant is `running`.
    pub async fn create_run(
        &self,
        run: NewRun<'_>,
        ttl: Duration,
    ) -> Result<(RunRecord, Lease), StoreError> {
        let ttl = bounded(ttl);
        let (id, epoch) = dispatch!(self, create_run(&run, ttl))
            .map_err(|e| StoreError::unique_violation_as_running(e, run.tenant))?;
        let lease = Lease {
            run: id,
            tenant: run.tenant.to_owned(),
            epoch,
            owner: run.owner.to_owned(),
        };
        Ok((self.run(id).await?, lease))
    }

    /// Takes a run over for `owner`: an `interrupted` run, or a `running` one whose lease has
    /// expired (its owner died or stopped renewing). One statement decides, so of two
    /// processes that try at once exactly one gets `Some`. The epoch grows by one.
    pub async fn take_over(
        &self,
        run: RunId,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<(RunRecord, Lease)>, StoreError> {
        let ttl = bounded(ttl);
        let taken = match dispatch!(self, take_over(run, owner, ttl)) {
            // Another run of the tenant is running (the partial unique index said so).
            Err(StoreError::Query(sqlx::Error::Database(db))) if db.is_unique_violation() => {
                let tenant = self.run(run).await?.tenant_id;
                return Err(StoreError::RunInProgress(tenant));
            }
            other => other?,
        };
        let Some((tenant, epoch)) = taken else {
            return Ok(None);
        };
        let lease = Lease {
            run,
            tenant,
            epoch,
            owner: owner.to_owned(),
        };
        Ok(Some((self.run(run).await?, lease)))
    }

    /// Extends the lease by `ttl` from now, and records the heartbeat. Fails with
    /// [`StoreError::LeaseLost`] when another process took the run over.
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
        let ttl = bounded(ttl);
        dispatch!(self, renew(lease, ttl))
    }

    /// Ends a resumable run that nobody holds (`interrupted`, or `running` with an expired
    /// lease) as `failed` with `reason` (`--fresh`). Returns whether it did.
    pub async fn abandon(&self, run: RunId, reason: &str) -> Result<bool, StoreError> {
        dispatch!(self, abandon(run, reason))
    }

    /// Ends the run: adds this process's counters and time, derives the row counters
    /// (stored, synced, dead letters, warnings) and freezes them, decides the status (see
    /// [`RunEnding`]), drops the run's listing sets and releases the lease. Fenced.
    pub async fn finish_run(&self, lease: &Lease, end: &RunEnd) -> Result<RunRecord, StoreError> {
        dispatch!(self, finish_run(lease, end))?;
        self.run(lease.run).await
    }

    /// One run by id (counters of an open run derived live from rows).
    pub async fn run(&self, id: RunId) -> Result<RunRecord, StoreError> {
        self.runs_by_id(&[id])
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound(format!("run {id}")))
    }

    /// The runs of `ids` that exist, in no particular order (counters of open runs derived
    /// live from rows): a worker reads the runs it claimed in one query.
    pub async fn runs_by_id(&self, ids: &[RunId]) -> Result<Vec<RunRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, runs_by_id(ids))
    }

    /// The tenant's latest run, if any.
    pub async fn latest_run(&self, tenant: &str) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.runs(tenant, 1).await?.into_iter().next())
    }

    /// The tenant's runs, newest first, at most `limit`.
    pub async fn runs(&self, tenant: &str, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        dispatch!(self, runs(tenant, limit))
    }

    /// The latest `per_tenant` runs of every tenant (or of `tenant`), grouped by tenant,
    /// newest first within each: the dashboard's overview in one query.
    pub async fn recent_runs(
        &self,
        tenant: Option<&str>,
        per_tenant: u32,
    ) -> Result<Vec<RunRecord>, StoreError> {
        dispatch!(self, recent_runs(tenant, per_tenant))
    }

    /// The warnings recorded on a run.
    pub async fn run_warnings(&self, run: RunId) -> Result<Vec<StoredWarning>, StoreError> {
        dispatch!(self, run_warnings(run))
    }

    // ---- Pages, syncs and dead letters of a leased run ---------------------------------

    /// Stores one page in one transaction (see the crate docs). Fenced by `lease`.
    pub async fn store_page(
        &self,
        lease: &Lease,
        batch: &PageBatch<'_>,
    ) -> Result<PageOutcome, StoreError> {
        let batch = batch.deduplicated();
        dispatch!(self, store_page(lease, &batch))
    }

    /// What each pass of the run has listed so far: `(campaign id, pass)`, for a resumed
    /// pager.
    pub async fn listed(&self, run: RunId) -> Result<Vec<(String, u32)>, StoreError> {
        dispatch!(self, listed(run))
    }

    /// Campaigns the run stored whose sync call has not succeeded yet, by id.
    pub async fn pending_syncs(&self, run: RunId) -> Result<Vec<String>, StoreError> {
        dispatch!(self, pending_syncs(run))
    }

    /// Records successful sync calls: `campaigns.synced_at` and `synced_run_id`, and resolves
    /// sync dead letters of those campaigns. Idempotent; fenced.
    pub async fn mark_synced(
        &self,
        lease: &Lease,
        campaign_ids: &[&str],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if campaign_ids.is_empty() {
            return Ok(());
        }
        dispatch!(self, mark_synced(lease, campaign_ids, at))
    }

    /// [`Store::mark_synced`] for several runs at once (a worker's runs, gathered): one
    /// statement on PostgreSQL. Returns, per batch, whether its lease was still held (its
    /// campaigns recorded); a batch whose lease is gone changes nothing.
    pub async fn mark_synced_many(
        &self,
        batches: &[(&Lease, &[&str])],
        at: DateTime<Utc>,
    ) -> Result<Vec<bool>, StoreError> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, mark_synced_many(batches, at))
    }

    /// The platform says a campaign the run listed is gone (a 404 to its sync call): it is
    /// marked removed (a later listing that has it clears the mark), its open dead letters are
    /// resolved as `removed`, and `warning` is recorded on the run. Returns whether the mark is
    /// new. Fenced.
    pub async fn campaign_gone(
        &self,
        lease: &Lease,
        campaign_id: &str,
        warning: &RunWarning,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, campaign_gone(lease, campaign_id, warning, at))
    }

    /// Records (or re-records, counting attempts) a dead letter of the run. Fenced.
    pub async fn dead_letter(
        &self,
        lease: &Lease,
        letter: &NewDeadLetter,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        dispatch!(self, dead_letter(lease, letter, at))
    }

    // ---- Dead letters, outside any run ------------------------------------------------

    /// Dead letters of a tenant, newest failure first.
    pub async fn dead_letters(
        &self,
        tenant: &str,
        include_resolved: bool,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        dispatch!(self, dead_letters(tenant, include_resolved))
    }

    /// A retried sync call succeeded: the campaign's `synced_at` is set and the letter
    /// resolved. Run counters are not touched (the run that failed it is over).
    pub async fn resolve_synced_by_retry(
        &self,
        letter_id: i64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        dispatch!(self, resolve_synced_by_retry(letter_id, at))
    }

    /// A retry failed again: one more attempt and the new reason. Run counters are not
    /// touched.
    pub async fn record_retry_failure(
        &self,
        letter_id: i64,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        dispatch!(self, record_retry_failure(letter_id, reason, at))
    }

    /// Dismisses unresolved dead letters of a tenant (`ids`, or all when empty). Returns how
    /// many were dismissed.
    pub async fn dismiss_dead_letters(
        &self,
        tenant: &str,
        ids: &[i64],
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        dispatch!(self, dismiss_dead_letters(tenant, ids, at))
    }

    // ---- Reads ------------------------------------------------------------------------

    /// Every stored campaign of a tenant, by id.
    pub async fn campaigns(&self, tenant: &str) -> Result<Vec<StoredCampaign>, StoreError> {
        dispatch!(self, campaigns(tenant))
    }

    /// Rows in `campaigns` for the tenant.
    pub async fn campaign_count(&self, tenant: &str) -> Result<i64, StoreError> {
        dispatch!(self, count("campaigns", tenant))
    }

    /// Rows in `campaign_metrics` for the tenant.
    pub async fn metrics_count(&self, tenant: &str) -> Result<i64, StoreError> {
        dispatch!(self, count("campaign_metrics", tenant))
    }
}

/// Lease times beyond a century are a century: both databases then still hold the expiry
/// as a timestamp they can compare (SQLite's text form stops at year 9999).
fn bounded(ttl: Duration) -> Duration {
    ttl.min(Duration::from_secs(100 * 365 * 24 * 3600))
}
