//! What the engine's black-box tests share: a time-scaled simulator, a client and an engine
//! configured to match it, throwaway databases (a SQLite file, or the fresh PostgreSQL
//! database of `#[sqlx::test]`), and waits that always have a deadline.
#![allow(dead_code)]

use std::{collections::BTreeMap, future::Future, time::Duration};

use adsync_client::{AdClient, ClientConfig, Credentials, RetryPolicy};
use adsync_domain::RateLimit;
use adsync_sim::{Profile, SimConfig, Simulator};
use adsync_store::{RunStatus, Store, StoredCampaign};
use adsync_sync::{BreakerConfig, RunReport, SyncConfig, SyncEngine, SyncError};
use secrecy::SecretString;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A 60 s window lasts 100 ms, a 2 s sync call 3.3 ms.
pub const SCALE: f64 = 600.0;
/// The tenant every test syncs.
pub const TENANT: &str = "default";
/// Longest any run may take before the test fails (instead of hanging the suite).
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);
/// Longest a test waits for the engine to reach a state it polls for.
pub const POLL_DEADLINE: Duration = Duration::from_secs(20);

/// Runs `tests` (async functions taking a [`Store`]) once on a SQLite file and once on a fresh
/// PostgreSQL database: `name::on_sqlite` and `name::on_postgres`.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn on_sqlite() {
                let (store, _dir) = crate::common::sqlite().await;
                super::$name(store).await;
            }

            #[sqlx::test(migrations = false)]
            async fn on_postgres(pool: sqlx::PgPool) {
                super::$name(crate::common::postgres(pool).await).await;
            }
        }
    )*};
}
pub(crate) use on_both_databases;

// ---- Simulators ---------------------------------------------------------------------------

/// A simulator of `profile` at [`SCALE`], changed by `tweak`.
pub async fn sim(profile: Profile, tweak: impl FnOnce(&mut SimConfig)) -> Simulator {
    let mut c = SimConfig::for_profile(profile);
    c.time_scale = SCALE;
    tweak(&mut c);
    Simulator::start_local(c).await.expect("simulator starts")
}

/// A calm simulator (honest `has_more`, no faults) with `campaigns` campaigns.
pub async fn calm(campaigns: usize, tweak: impl FnOnce(&mut SimConfig)) -> Simulator {
    sim(Profile::Calm, |c| {
        c.campaigns = campaigns;
        tweak(c);
    })
    .await
}

/// A calm simulator that allows one rate-limited call per 100 ms: a run lasts long enough
/// (about a second per ten calls, whatever the machine's load) for a test to act while it
/// is under way.
pub async fn slow(campaigns: usize, tweak: impl FnOnce(&mut SimConfig)) -> Simulator {
    calm(campaigns, |c| {
        c.rate_limit = RateLimit::new(1, Duration::from_secs(60)).expect("a valid limit");
        tweak(c);
    })
    .await
}

/// Successful sync calls per campaign id, as the simulator counted them.
pub fn syncs(sim: &Simulator) -> BTreeMap<String, u64> {
    sim.stats().syncs
}

/// Listing calls the simulator answered, whatever the answer (429s included: on a loaded
/// machine the client's pacing and the simulator's window may disagree now and then).
pub fn list_calls(sim: &Simulator) -> u64 {
    sim.stats().total("list")
}

/// Listing calls the simulator answered with a well-formed page.
pub fn pages_answered(sim: &Simulator) -> u64 {
    sim.stats().list_calls_ok
}

/// The page numbers the simulator served, each once however often it was asked.
pub fn pages_served(sim: &Simulator) -> Vec<u64> {
    sim.stats().pages_served.into_keys().collect()
}

// ---- Clients and engines ------------------------------------------------------------------

/// A client configuration matching `sim` (its scaled rate limit), with fast retries. The
/// request timeout is generous: on a loaded machine a call that times out is retried, which
/// would make call counts depend on the load. (The chaos test, whose platform hangs, shortens
/// it.)
pub fn client_config(sim: &Simulator, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new(
        sim.url().parse().expect("the simulator's URL parses"),
        Credentials {
            email: adsync_sim::REFERENCE_EMAIL.into(),
            password: SecretString::from(password.to_owned()),
        },
    );
    c.rate_limit = sim.config().effective_rate_limit();
    c.request_timeout = Duration::from_secs(10);
    c.retry = RetryPolicy {
        max_attempts: 8,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(100),
        max_rate_limited: 3,
    };
    c
}

/// A client for `sim` with the right password.
pub fn client(sim: &Simulator) -> AdClient {
    AdClient::new(client_config(sim, adsync_sim::REFERENCE_PASSWORD)).expect("a valid client")
}

/// The engine configuration of the tests: a one-second lease (a process that dies holding
/// it blocks the tenant for a second, not thirty), short cool-downs and grace, and ten sync
/// calls in flight, what the engine sizes for the platform's 10 per window (left to itself it
/// would size it from the tests' long request timeout).
pub fn sync_config(tweak: impl FnOnce(&mut SyncConfig)) -> SyncConfig {
    let mut c = SyncConfig {
        sync_concurrency: Some(10),
        breaker: BreakerConfig {
            cooldown: Duration::from_millis(200),
            ..BreakerConfig::default()
        },
        shutdown_grace: Duration::from_millis(500),
        lease_ttl: Duration::from_secs(1),
        ..SyncConfig::default()
    };
    tweak(&mut c);
    c
}

/// An engine for `sim` and `store`.
pub fn engine(sim: &Simulator, store: &Store, tweak: impl FnOnce(&mut SyncConfig)) -> SyncEngine {
    engine_with(client(sim), store, tweak)
}

/// An engine calling the platform with `client`.
pub fn engine_with(
    client: AdClient,
    store: &Store,
    tweak: impl FnOnce(&mut SyncConfig),
) -> SyncEngine {
    SyncEngine::new(client, store.clone(), sync_config(tweak))
}

/// Runs `engine` to its end, within [`RUN_DEADLINE`].
pub async fn try_run(engine: &SyncEngine) -> Result<RunReport, SyncError> {
    within(
        "the run",
        RUN_DEADLINE,
        engine.run(CancellationToken::new()),
    )
    .await
}

/// Runs `engine` to its end, within [`RUN_DEADLINE`]; the run must start.
pub async fn run(engine: &SyncEngine) -> RunReport {
    try_run(engine).await.expect("the run starts")
}

/// A run started in the background, to be cancelled or aborted while it works.
pub struct Background {
    pub task: JoinHandle<Result<RunReport, SyncError>>,
    pub cancel: CancellationToken,
    pub progress: std::sync::Arc<adsync_sync::Progress>,
}

impl Background {
    pub fn start(engine: SyncEngine) -> Self {
        let cancel = CancellationToken::new();
        let progress = engine.progress();
        let task = tokio::spawn({
            let cancel = cancel.clone();
            async move { engine.run(cancel).await }
        });
        Self {
            task,
            cancel,
            progress,
        }
    }

    /// Waits until the run's live counters satisfy `cond`.
    pub async fn until(&self, what: &str, cond: impl Fn(&adsync_sync::ProgressSnapshot) -> bool) {
        until(what, POLL_DEADLINE, || cond(&self.progress.snapshot())).await;
    }

    /// Cancels the run (as SIGINT does) and waits for its report.
    pub async fn cancel(self) -> RunReport {
        self.cancel.cancel();
        within("the cancelled run", RUN_DEADLINE, self.task)
            .await
            .expect("the run task did not panic")
            .expect("the run had started")
    }

    /// Kills the run as abruptly as `kill -9` does, as far as the database can tell: no
    /// cleanup runs, the lease stays until it runs out.
    pub async fn abort(self) {
        self.task.abort();
        let ended = within("the aborted run", RUN_DEADLINE, self.task).await;
        assert!(
            ended.as_ref().is_err_and(|e| e.is_cancelled()),
            "the run ended before it was aborted: {ended:?}"
        );
    }
}

// ---- Waits --------------------------------------------------------------------------------

/// `f`, or a failed test after `limit`.
pub async fn within<F: Future>(what: &str, limit: Duration, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// Polls `cond` every few milliseconds until it holds, or fails the test after `limit`.
pub async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until every session of `store`'s pool is back in the pool. A task aborted mid-write
/// returns its session in the background, and the statement or `COMMIT` it had queued reaches
/// the server only then (as a killed process's last bytes on the wire do, or do not): what the
/// database says about a killed process is only final once its sessions are back.
pub async fn settled(store: &Store) {
    let back = || match store {
        Store::Postgres(p) => p.num_idle() == p.size() as usize,
        Store::Sqlite(p) => p.num_idle() == p.size() as usize,
    };
    until("the pool's sessions are back", POLL_DEADLINE, back).await;
}

// ---- Databases ----------------------------------------------------------------------------

/// A migrated SQLite database in a throwaway directory (removed when the guard drops).
pub async fn sqlite() -> (Store, TempDir) {
    let dir = TempDir::new();
    let store = Store::connect(&format!("sqlite://{}/adsync.db", dir.path()))
        .await
        .expect("SQLite opens");
    (store, dir)
}

/// The fresh PostgreSQL database of `#[sqlx::test]`, migrated.
pub async fn postgres(pool: sqlx::PgPool) -> Store {
    let store = Store::Postgres(pool);
    store.migrate().await.expect("migrations apply");
    store
}

/// A throwaway directory, removed on drop (a dozen lines instead of a dev-dependency).
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos();
        let p = std::env::temp_dir().join(format!(
            "adsync-sync-test-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("a temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- Reads --------------------------------------------------------------------------------

/// The tenant's stored campaigns, by id.
pub async fn stored(store: &Store) -> BTreeMap<String, StoredCampaign> {
    store
        .campaigns(TENANT)
        .await
        .expect("campaigns read")
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect()
}

/// The ids the simulator lists now.
pub fn platform_ids(sim: &Simulator) -> Vec<String> {
    sim.campaign_ids()
}

/// `campaign_N` for each `N`.
pub fn ids(numbers: impl IntoIterator<Item = u64>) -> Vec<String> {
    numbers
        .into_iter()
        .map(|n| format!("campaign_{n}"))
        .collect()
}

/// Asserts that every campaign the platform lists now is stored, synced, and was sent to the
/// sync endpoint exactly once (by a simulator that served no other run).
pub async fn assert_each_listed_campaign_stored_and_synced_once(sim: &Simulator, store: &Store) {
    let rows = stored(store).await;
    let calls = syncs(sim);
    for id in platform_ids(sim) {
        let row = rows
            .get(&id)
            .unwrap_or_else(|| panic!("{id} is not stored"));
        assert!(row.synced_at.is_some(), "{id} is not marked synced");
        assert_eq!(calls.get(&id), Some(&1), "{id} sync calls");
    }
}

/// The kinds of the run's warnings, with their counts.
pub fn warning_counts(report: &RunReport) -> BTreeMap<String, i64> {
    report
        .warnings
        .iter()
        .map(|w| (w.kind.clone(), w.occurrences))
        .collect()
}

/// Asserts the run ended as `status` with the exit code a scheduler expects of it.
pub fn assert_ended(report: &RunReport, status: RunStatus, exit_code: u8) {
    assert_eq!(report.status, status, "{report:#?}");
    assert_eq!(report.exit_code(), exit_code, "{report:#?}");
}
