//! adsync's storage: one repository, [`Store`], over PostgreSQL (production) and SQLite (the
//! embedded default), with embedded migrations, parameterized SQL only, and the run checkpoint.
//!
//! A page of campaigns is stored by [`Store::store_page`] in one transaction: the campaigns
//! upsert (keyed by tenant and id, marking each row with the run that stored it), one
//! `campaign_metrics` row per campaign for the run, the run's next page and counters, and the
//! page's dead letters. A campaign's `synced_run_id` records the run whose sync call succeeded
//! for it, so the checkpoint of a run is `next_page` plus the campaigns it stored and has not
//! synced. So whatever is in the database is consistent with the checkpoint that describes it,
//! whenever the process dies.

mod error;
mod model;
mod pg;
mod sqlite;

use std::{str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    PgPool, SqlitePool,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use error::{StoreError, redact_url};
pub use model::{
    DeadLetter, NewDeadLetter, PageBatch, PageOutcome, RunCounters, RunRecord, RunStatus, Stage,
    StoredCampaign,
};

/// Migrations, embedded in the binary and applied at connect.
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
/// Migrations, embedded in the binary and applied at connect.
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The run id type (a `BIGSERIAL` / `INTEGER PRIMARY KEY`).
pub type RunId = i64;

/// A connection pool to one database, PostgreSQL or SQLite. Cheap to clone (pools are shared).
#[derive(Clone, Debug)]
pub enum Store {
    /// PostgreSQL, for production.
    Postgres(PgPool),
    /// SQLite, the embedded default.
    Sqlite(SqlitePool),
}

impl Store {
    /// Connects to `postgres://...` or `sqlite://...` and applies migrations. A SQLite file is
    /// created if missing. Fails within seconds, with the URL's password hidden, when the
    /// database cannot be reached.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                // A sync run needs one connection for pages and a few for concurrent sync
                // results; the service will share this pool between tenants.
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await
                .map_err(|e| StoreError::connect(url, &e))?;
            Store::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::connect(url, &e))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                // SQLite has one writer at a time; one connection turns lock contention
                // (SQLITE_BUSY on upgrade from a read) into plain queueing in the pool.
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
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

    /// Starts a run for `tenant`, owned by `owner` (`host:pid`). Fails with
    /// [`StoreError::RunInProgress`] while another run of the tenant is `running`.
    pub async fn start_run(
        &self,
        tenant: &str,
        page_size: u64,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        let id = match self {
            Store::Postgres(p) => pg::start_run(p, tenant, page_size, owner, now).await,
            Store::Sqlite(p) => sqlite::start_run(p, tenant, page_size, owner, now).await,
        }
        .map_err(|e| StoreError::unique_violation_as_running(e, tenant))?;
        self.run(id).await
    }

    /// One run by id.
    pub async fn run(&self, id: RunId) -> Result<RunRecord, StoreError> {
        match self {
            Store::Postgres(p) => pg::run(p, id).await,
            Store::Sqlite(p) => sqlite::run(p, id).await,
        }
    }

    /// The tenant's latest run, if any.
    pub async fn latest_run(&self, tenant: &str) -> Result<Option<RunRecord>, StoreError> {
        match self {
            Store::Postgres(p) => pg::latest_run(p, tenant).await,
            Store::Sqlite(p) => sqlite::latest_run(p, tenant).await,
        }
    }

    /// The run to continue: the tenant's latest run when it is `interrupted`, or `running`
    /// (a process that died without marking it).
    pub async fn resumable_run(&self, tenant: &str) -> Result<Option<RunRecord>, StoreError> {
        Ok(self
            .latest_run(tenant)
            .await?
            .filter(|r| matches!(r.status, RunStatus::Running | RunStatus::Interrupted)))
    }

    /// Marks a resumable run `running` again under `owner` and counts the resume.
    pub async fn resume_run(
        &self,
        id: RunId,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        match self {
            Store::Postgres(p) => pg::resume_run(p, id, owner, now).await,
            Store::Sqlite(p) => sqlite::resume_run(p, id, owner, now).await,
        }?;
        self.run(id).await
    }

    /// The owner of a run says it is alive.
    pub async fn heartbeat(&self, id: RunId, now: DateTime<Utc>) -> Result<(), StoreError> {
        match self {
            Store::Postgres(p) => pg::heartbeat(p, id, now).await,
            Store::Sqlite(p) => sqlite::heartbeat(p, id, now).await,
        }
    }

    /// Stores one page in one transaction: valid campaigns upserted and marked as stored by
    /// the run (duplicates within the page collapse to the last one), one metrics row each
    /// for this run, the page's dead letters, and the run's next page and counters.
    pub async fn store_page(&self, batch: &PageBatch<'_>) -> Result<PageOutcome, StoreError> {
        let batch = batch.deduplicated();
        match self {
            Store::Postgres(p) => pg::store_page(p, &batch).await,
            Store::Sqlite(p) => sqlite::store_page(p, &batch).await,
        }
    }

    /// Campaigns the run stored whose sync call has not succeeded yet, in page order.
    pub async fn pending_syncs(&self, run: RunId) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Postgres(p) => pg::pending_syncs(p, run).await,
            Store::Sqlite(p) => sqlite::pending_syncs(p, run).await,
        }
    }

    /// Records a successful sync call: `campaigns.synced_at` and `synced_run_id`, the run's
    /// counter (once per campaign), and resolves a sync dead letter of the campaign.
    /// Idempotent.
    pub async fn mark_synced(
        &self,
        tenant: &str,
        run: RunId,
        campaign_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Postgres(p) => pg::mark_synced(p, tenant, run, campaign_id, at).await,
            Store::Sqlite(p) => sqlite::mark_synced(p, tenant, run, campaign_id, at).await,
        }
    }

    /// Records (or re-records, counting attempts) a dead letter and bumps the run's counter.
    pub async fn dead_letter(
        &self,
        tenant: &str,
        run: RunId,
        letter: &NewDeadLetter,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Postgres(p) => pg::dead_letter(p, tenant, run, letter, at).await,
            Store::Sqlite(p) => sqlite::dead_letter(p, tenant, run, letter, at).await,
        }
    }

    /// Adds the client's counters of this process to the run (they accumulate over resumes).
    pub async fn add_client_counters(
        &self,
        run: RunId,
        counters: &RunCounters,
    ) -> Result<(), StoreError> {
        match self {
            Store::Postgres(p) => pg::add_client_counters(p, run, counters).await,
            Store::Sqlite(p) => sqlite::add_client_counters(p, run, counters).await,
        }
    }

    /// Ends a run with `status` (and an error text for `failed`/`interrupted`).
    pub async fn finish_run(
        &self,
        run: RunId,
        status: RunStatus,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Postgres(p) => pg::finish_run(p, run, status, error, at).await,
            Store::Sqlite(p) => sqlite::finish_run(p, run, status, error, at).await,
        }
    }

    /// Dead letters of a tenant, newest failure first.
    pub async fn dead_letters(
        &self,
        tenant: &str,
        include_resolved: bool,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        match self {
            Store::Postgres(p) => pg::dead_letters(p, tenant, include_resolved).await,
            Store::Sqlite(p) => sqlite::dead_letters(p, tenant, include_resolved).await,
        }
    }

    /// Marks a dead letter resolved.
    pub async fn resolve_dead_letter(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        match self {
            Store::Postgres(p) => pg::resolve_dead_letter(p, id, at).await,
            Store::Sqlite(p) => sqlite::resolve_dead_letter(p, id, at).await,
        }
    }

    /// Every stored campaign of a tenant, by id.
    pub async fn campaigns(&self, tenant: &str) -> Result<Vec<StoredCampaign>, StoreError> {
        match self {
            Store::Postgres(p) => pg::campaigns(p, tenant).await,
            Store::Sqlite(p) => sqlite::campaigns(p, tenant).await,
        }
    }

    /// Rows in `campaigns` for the tenant.
    pub async fn campaign_count(&self, tenant: &str) -> Result<i64, StoreError> {
        match self {
            Store::Postgres(p) => pg::count(p, "campaigns", tenant).await,
            Store::Sqlite(p) => sqlite::count(p, "campaigns", tenant).await,
        }
    }

    /// Rows in `campaign_metrics` for the tenant.
    pub async fn metrics_count(&self, tenant: &str) -> Result<i64, StoreError> {
        match self {
            Store::Postgres(p) => pg::count(p, "campaign_metrics", tenant).await,
            Store::Sqlite(p) => sqlite::count(p, "campaign_metrics", tenant).await,
        }
    }
}
