//! `adsync worker` as real processes sharing one PostgreSQL database: a worker killed with
//! `kill -9` mid-run loses its runs to the other within the lease timeout (nothing lost, few
//! repeats); a worker paused past its lease (SIGSTOP) writes nothing once it continues; a
//! worker told to stop (SIGTERM) requeues its run and releases the lease.
//!
//! The simulators run in the test process (one per tenant, so each tenant's sync calls are
//! counted apart); each worker connects with its own `application_name`, and triggers log who
//! wrote which row, so "no write after the take-over" is read from the database itself.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use adsync_client::{AdClient, ClientConfig};
use adsync_service::{
    Service,
    queue::RunRequest,
    tenants::{NewTenant, Tenant},
    vault::{Credentials, Keyring, MasterKey},
};
use adsync_sim::{Profile, SimConfig, Simulator};
use adsync_store::{RunId, RunRecord, RunStatus, Store};
use adsync_sync::{SyncConfig, SyncEngine};
use common::{DEADLINE, EMAIL, PASSWORD, Running, ScratchPg, TempDir, adsync};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

/// Campaigns per tenant: at time scale 60 (10 calls a second) a run takes about 10 s.
const CAMPAIGNS: usize = 100;

/// The `--lease-timeout` of every worker.
const LEASE: Duration = Duration::from_secs(3);

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(25);

/// Campaigns a worker syncs before it is killed, paused or stopped: well into the run, far
/// from its end.
const HEAD_START: usize = 15;

// ---- The fixture ----------------------------------------------------------------------------

/// A scratch PostgreSQL database, a simulator per tenant, the tenants, and a service over
/// the database as the test's own process.
struct Cluster {
    dir: TempDir,
    pg: ScratchPg,
    store: Store,
    service: Service,
    master_key: SecretString,
    sims: Vec<Simulator>,
    tenants: Vec<Tenant>,
}

impl Cluster {
    /// `tenants` tenants, each with its own calm simulator of [`CAMPAIGNS`] campaigns.
    async fn start(tag: &str, tenants: usize) -> Cluster {
        let dir = TempDir::new(tag);
        let pg = ScratchPg::create(tag).await;
        let store = Store::connect(&app_url(&pg, "test")).await.unwrap();
        let key = MasterKey::generate().to_base64();
        let keyring = Keyring::parse(key.expose_secret()).unwrap();
        let service = Service::new(store.clone(), Arc::new(keyring), None);
        let mut sims = Vec::new();
        let mut created = Vec::new();
        for i in 0..tenants {
            let sim = Simulator::start_local(SimConfig {
                campaigns: CAMPAIGNS,
                time_scale: 60.0,
                ..SimConfig::for_profile(Profile::Calm)
            })
            .await
            .unwrap();
            let tenant = service
                .tenants
                .create(
                    NewTenant {
                        name: format!("tenant-{i}"),
                        api_url: sim.url(),
                        client_id: None,
                        rate_limit: Some(sim.config().effective_rate_limit().to_string()),
                        page_size: Some(100),
                        schedule: None,
                        time_zone: None,
                        paused: false,
                        credentials: Credentials::new(EMAIL, SecretString::from(PASSWORD)),
                    },
                    None,
                )
                .await
                .unwrap();
            sims.push(sim);
            created.push(tenant);
        }
        Cluster {
            dir,
            pg,
            store,
            service,
            master_key: key,
            sims,
            tenants: created,
        }
    }

    fn pool(&self) -> &PgPool {
        match &self.store {
            Store::Postgres(p) => p,
            Store::Sqlite(_) => unreachable!("the workers share PostgreSQL"),
        }
    }

    /// `adsync worker --workers 3 --lease-timeout 3s`, connecting as `name`; returns once it
    /// logged that it started.
    async fn worker(&self, name: &str) -> Worker {
        let mut cmd = adsync(self.dir.path());
        cmd.args(["worker", "--workers", "3", "--lease-timeout"])
            .arg(format!("{}s", LEASE.as_secs()))
            .env("DATABASE_URL", app_url(&self.pg, name))
            .env("ADSYNC_MASTER_KEY", self.master_key.expose_secret());
        let mut worker = Worker::spawn(name, &mut cmd);
        worker.wait_for_log(&["worker started"], DEADLINE).await;
        worker
    }

    /// Queues a run for the `i`th tenant.
    async fn enqueue(&self, i: usize) -> RunId {
        let t = &self.tenants[i];
        self.service
            .queue
            .enqueue(
                RunRequest {
                    tenant: &t.id,
                    page_size: t.page_size,
                    platform: &t.api_url,
                    requested_by: "test",
                },
                None,
            )
            .await
            .unwrap()
            .run()
    }

    async fn run(&self, id: RunId) -> RunRecord {
        self.store.run(id).await.unwrap()
    }

    /// Waits until every run ended (at most `limit`) and returns them.
    async fn until_final(&self, runs: &[RunId], limit: Duration) -> Vec<RunRecord> {
        let deadline = Instant::now() + limit;
        loop {
            let mut records = Vec::new();
            for id in runs {
                records.push(self.run(*id).await);
            }
            if records.iter().all(|r| r.status.is_final()) {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "runs not over within {limit:?}: {records:#?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `worker` holds `run` (of the `i`th tenant) and the simulator synced
    /// [`HEAD_START`] of its campaigns.
    async fn until_under_way(&self, i: usize, run: RunId, worker: &Worker) -> RunRecord {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let r = self.run(run).await;
            if r.status == RunStatus::Running
                && worker.owns(&r)
                && syncs(&self.sims[i]).0 >= HEAD_START
            {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "worker {} not under way within {DEADLINE:?}: {r:#?}",
                worker.name
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the `i`th simulator has no request in flight.
    async fn until_no_call_in_flight(&self, i: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.sims[i].stats().in_flight > 0 {
            assert!(
                Instant::now() < deadline,
                "requests in flight for {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Rows counted by `sql`, which takes one bound integer.
    async fn count(&self, sql: &'static str, bind: i64) -> i64 {
        sqlx::query_scalar(sql)
            .bind(bind)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// The sync calls of the tenant's engine in flight at once, as the worker sizes them.
    fn sync_concurrency(&self, i: usize) -> usize {
        let sim = &self.sims[i];
        let mut config = ClientConfig::new(
            url::Url::parse(&format!("{}/", sim.url())).unwrap(),
            adsync_client::Credentials {
                email: EMAIL.into(),
                password: SecretString::from(PASSWORD),
            },
        );
        config.rate_limit = sim.config().effective_rate_limit();
        let client = AdClient::new(config).unwrap();
        SyncEngine::new(client, self.store.clone(), SyncConfig::default()).sync_concurrency()
    }

    /// Logs every row written to the tables a run writes, with the `application_name` of the
    /// connection that wrote it, in commit-compatible order (a fenced write holds the run's
    /// row lock, so a take-over is ordered after it or refuses it).
    async fn log_writes(&self) {
        let pool = self.pool();
        for sql in [
            "CREATE TABLE test_write_log (
                seq BIGSERIAL PRIMARY KEY,
                app TEXT NOT NULL,
                tbl TEXT NOT NULL,
                op TEXT NOT NULL,
                lease_epoch BIGINT,
                at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
            "CREATE FUNCTION test_log_write() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                INSERT INTO test_write_log (app, tbl, op, lease_epoch)
                VALUES (current_setting('application_name'), TG_TABLE_NAME, TG_OP,
                        (to_jsonb(NEW) ->> 'lease_epoch')::bigint);
                RETURN NULL;
             END $$",
        ] {
            sqlx::query(sql).execute(pool).await.unwrap();
        }
        for table in [
            "sync_runs",
            "campaigns",
            "campaign_metrics",
            "dead_letters",
            "listing_seen",
            "run_warnings",
        ] {
            let sql = format!(
                "CREATE TRIGGER test_log_write AFTER INSERT OR UPDATE OR DELETE ON {table}
                 FOR EACH ROW EXECUTE FUNCTION test_log_write()"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(pool)
                .await
                .unwrap();
        }
    }

    /// (first, last) sequence number of the rows `app` wrote, and how many.
    async fn writes_of(&self, app: &str) -> (Option<i64>, Option<i64>, i64) {
        sqlx::query_as("SELECT min(seq), max(seq), count(*) FROM test_write_log WHERE app = $1")
            .bind(app)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// Sessions of `app` with a statement running or a transaction open.
    async fn busy_sessions(&self, app: &str) -> Vec<(String, Option<String>)> {
        sqlx::query_as(
            "SELECT coalesce(state, ''), query FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1
               AND (state IS DISTINCT FROM 'idle' OR xact_start IS NOT NULL)",
        )
        .bind(app)
        .fetch_all(self.pool())
        .await
        .unwrap()
    }
}

/// The scratch database's URL for a connection named `app` (PostgreSQL's
/// `application_name`, which the write log records).
fn app_url(pg: &ScratchPg, app: &str) -> String {
    let mut url = url::Url::parse(&pg.url).unwrap();
    url.query_pairs_mut().append_pair("application_name", app);
    url.to_string()
}

/// Successful sync calls the simulator answered, all campaigns.
fn sync_calls(sim: &Simulator) -> u64 {
    sim.stats().syncs.values().sum()
}

/// Successful sync calls the simulator saw: (campaigns synced, campaigns synced more than
/// once).
fn syncs(sim: &Simulator) -> (usize, usize) {
    let stats = sim.stats();
    let repeated = stats.syncs.values().filter(|n| **n > 1).count();
    (stats.syncs.len(), repeated)
}

// ---- A worker process -----------------------------------------------------------------------

/// An `adsync worker` child, killed when dropped; if the test fails, its log is saved to a
/// file and its tail printed.
struct Worker {
    name: String,
    pid: u32,
    /// `None` once it exited and was collected by [`Worker::exit_code`].
    process: Option<Running>,
    /// Its log when it was collected.
    final_log: String,
}

impl Worker {
    fn spawn(name: &str, cmd: &mut std::process::Command) -> Worker {
        let process = Running::spawn(cmd);
        Worker {
            name: name.to_owned(),
            pid: process.pid(),
            process: Some(process),
            final_log: String::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether it is the owner recorded on a run (`host:pid`).
    fn owns(&self, run: &RunRecord) -> bool {
        run.owner
            .as_deref()
            .is_some_and(|o| o.ends_with(&format!(":{}", self.pid())))
    }

    /// Its stderr so far.
    fn log(&self) -> String {
        match &self.process {
            Some(p) => p.stderr(),
            None => self.final_log.clone(),
        }
    }

    /// Waits until its log holds a line with any of `needles`; returns that line.
    async fn wait_for_log(&mut self, needles: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| needles.iter().any(|n| l.contains(n))) {
                return line.to_owned();
            }
            let exited = self.process.as_mut().is_none_or(Running::exited);
            assert!(
                !exited,
                "worker {} exited before logging {needles:?}:\n{log}",
                self.name
            );
            assert!(
                Instant::now() < deadline,
                "worker {} did not log {needles:?} within {limit:?}:\n{log}",
                self.name
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops it with SIGSTOP at a moment it has no statement running and no transaction
    /// open (one stopped inside a transaction holds row locks until PostgreSQL's
    /// `idle_in_transaction_session_timeout` ends its session: another story). Returns how
    /// many tries it took.
    async fn pause_between_transactions(&self, cluster: &Cluster) -> u32 {
        for attempt in 1..=50 {
            self.signal("STOP");
            let process = self.process.as_ref().expect("the worker still runs");
            tokio::task::block_in_place(|| process.wait_until_stopped(DEADLINE));
            // A statement sent just before it stopped still completes on the server.
            let settled = Instant::now() + Duration::from_millis(300);
            while Instant::now() < settled {
                if cluster.busy_sessions(&self.name).await.is_empty() {
                    return attempt;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.signal("CONT");
            tokio::time::sleep(Duration::from_millis(7 * u64::from(attempt))).await;
        }
        panic!(
            "worker {} was inside a transaction at every try: {:?}",
            self.name,
            cluster.busy_sessions(&self.name).await
        );
    }

    /// Sends a signal (`KILL`, `STOP`, `CONT`, `TERM`) with the `kill` command.
    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name} {}", self.pid());
    }

    /// Waits for it to exit (at most `limit`, else the test fails) and returns its exit
    /// code (`None`: killed by a signal).
    async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let process = self.process.as_mut().expect("the worker still runs");
        while !process.exited() {
            assert!(
                Instant::now() < deadline,
                "worker {} still running after {limit:?}:\n{}",
                self.name,
                process.stderr()
            );
            tokio::time::sleep(POLL).await;
        }
        // It has exited: collecting its output and status takes no time.
        let output = self.process.take().unwrap().finish(DEADLINE);
        self.final_log = String::from_utf8_lossy(&output.stderr).into_owned();
        output.status.code()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let pid = self.pid;
            let path = std::env::temp_dir().join(format!("adsync-workers-{}-{pid}.log", self.name));
            let _ = std::fs::write(&path, &log);
            let tail: Vec<_> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- worker {} (pid {pid}), full log in {}; last lines:\n{}",
                self.name,
                path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

// ---- The tests ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_loses_its_runs_to_the_other_within_the_lease_timeout() {
    // Arrange: two workers, three tenants, three runs.
    let cluster = Cluster::start("killed", 3).await;
    let mut workers = vec![cluster.worker("w1").await, cluster.worker("w2").await];
    let mut runs = Vec::new();
    for i in 0..3 {
        runs.push(cluster.enqueue(i).await);
    }

    // Act: once a worker holds a run well under way, kill -9 it.
    let deadline = Instant::now() + DEADLINE;
    let victim = 'found: loop {
        for (i, id) in runs.iter().enumerate() {
            let r = cluster.run(*id).await;
            if r.status == RunStatus::Running
                && syncs(&cluster.sims[i]).0 >= HEAD_START
                && let Some(w) = workers.iter().position(|w| w.owns(&r))
            {
                break 'found w;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no run under way within {DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    };
    let mut a = workers.remove(victim);
    let b = workers.pop().unwrap();
    a.signal("KILL");
    let killed_at = Instant::now();
    assert_eq!(a.exit_code(DEADLINE).await, None, "killed by a signal");
    // A is dead: the runs it held keep its name until their lease runs out, and what it
    // recorded stays as it is.
    let mut held = Vec::new();
    let mut unrecorded = Vec::new();
    for (i, id) in runs.iter().enumerate() {
        let r = cluster.run(*id).await;
        if r.status == RunStatus::Running && a.owns(&r) {
            held.push(i);
        }
        cluster.until_no_call_in_flight(i).await;
        let recorded = cluster
            .count(
                "SELECT count(*) FROM campaigns WHERE synced_run_id = $1",
                *id,
            )
            .await;
        unrecorded.push(sync_calls(&cluster.sims[i]) as i64 - recorded);
    }
    assert!(!held.is_empty(), "the killed worker held a run");
    let mut resumed_after = vec![None; runs.len()];
    while let Some(&i) = held.iter().find(|i| resumed_after[**i].is_none()) {
        let r = cluster.run(runs[i]).await;
        if b.owns(&r) {
            resumed_after[i] = Some(killed_at.elapsed());
            continue;
        }
        assert!(
            killed_at.elapsed() < DEADLINE,
            "run {} not taken over within {DEADLINE:?}: {r:#?}",
            r.id
        );
        tokio::time::sleep(POLL).await;
    }
    let done = cluster.until_final(&runs, DEADLINE).await;
    let finished_after = killed_at.elapsed();

    // Assert: every run done by B, every campaign stored and synced, few repeats.
    for (i, r) in done.iter().enumerate() {
        let tenant = &cluster.tenants[i].id;
        let (synced, repeated) = syncs(&cluster.sims[i]);
        let was_held = held.contains(&i);
        println!(
            "run {} (tenant {i}): held by the killed worker: {was_held}, resumed {:?} after \
             the kill, attempts {}, sync calls answered but not recorded at the kill {}, \
             campaigns synced twice {repeated}; all runs over {finished_after:?} after the kill",
            r.id, resumed_after[i], r.attempts, unrecorded[i]
        );
        assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
        assert!(b.owns(r), "finished by the surviving worker: {r:#?}");
        assert_eq!(
            cluster.store.campaign_count(tenant).await.unwrap(),
            CAMPAIGNS as i64
        );
        assert_eq!(synced, CAMPAIGNS, "every campaign of tenant {i} synced");
        // Only the calls the dead worker had answered but not yet recorded are made again.
        assert!(
            repeated as i64 <= unrecorded[i],
            "tenant {i}: {repeated} campaigns synced twice, {} unrecorded at the kill",
            unrecorded[i]
        );
        if was_held {
            assert!(r.attempts >= 2, "taken over: {r:#?}");
            let bound = cluster.sync_concurrency(i);
            assert!(
                repeated <= bound,
                "{repeated} campaigns synced twice, more than the {bound} calls in flight"
            );
            // The reaper requeues a run once its lease ran out and looks every half lease;
            // the survivor claims it within a poll: two leases are plenty.
            let after = resumed_after[i].unwrap();
            assert!(after <= 2 * LEASE, "resumed {after:?} after the kill");
        } else {
            assert_eq!(r.attempts, 1, "{r:#?}");
            assert_eq!(
                repeated, 0,
                "tenant {i}: a run nobody took over repeats nothing"
            );
        }
    }
}

/// What [`paused_past_the_lease`] saw.
struct Paused {
    // Fields drop in this order: the workers die before their database is dropped.
    a: Worker,
    b: Worker,
    cluster: Cluster,
    run: RunId,
    epoch_a: i64,
    /// The run as B took it over.
    taken: RunRecord,
    /// The run at its end.
    done: RunRecord,
    /// A's log line saying it lost the run.
    noticed: String,
    /// Sync calls the simulator answered once A was stopped (none in flight).
    calls_at_pause: u64,
    /// Campaigns A had recorded as synced when it was stopped.
    recorded_at_pause: i64,
}

impl Paused {
    /// Sync calls A made after it continued: every call but those answered before the
    /// pause and those of B (once for each campaign A had not recorded: a calm simulator
    /// fails nothing).
    fn calls_by_a_after_it_continued(&self) -> u64 {
        let calls_by_b = CAMPAIGNS as u64 - self.recorded_at_pause as u64;
        sync_calls(&self.cluster.sims[0]) - self.calls_at_pause - calls_by_b
    }
}

/// Worker A alone takes a run, syncs part of it and is paused (SIGSTOP); worker B starts
/// and takes the run over once A's lease ran out; A continues (SIGCONT); the run ends.
async fn paused_past_the_lease(tag: &str) -> Paused {
    let cluster = Cluster::start(tag, 1).await;
    cluster.log_writes().await;
    let mut a = cluster.worker("wa").await;
    let run = cluster.enqueue(0).await;
    let before = cluster.until_under_way(0, run, &a).await;
    let tries = a.pause_between_transactions(&cluster).await;
    let paused_at = Instant::now();
    let epoch_a = cluster.run(run).await.lease_epoch;
    assert_eq!(epoch_a, before.lease_epoch);
    // Calls A sent before it stopped still complete on the simulator.
    cluster.until_no_call_in_flight(0).await;
    let calls_at_pause = sync_calls(&cluster.sims[0]);
    let recorded_at_pause = cluster
        .count(
            "SELECT count(*) FROM campaigns WHERE synced_run_id = $1",
            run,
        )
        .await;

    let b = cluster.worker("wb").await;
    let deadline = Instant::now() + DEADLINE;
    let taken = loop {
        let r = cluster.run(run).await;
        if b.owns(&r) && r.lease_epoch > epoch_a {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "not taken over within {DEADLINE:?}: {r:#?}"
        );
        tokio::time::sleep(POLL).await;
    };
    let takeover = paused_at.elapsed();
    a.signal("CONT");
    let done = cluster.until_final(&[run], DEADLINE).await.remove(0);
    let noticed = a
        .wait_for_log(&["lost the run's lease", "LeaseLost"], DEADLINE)
        .await;
    let paused = Paused {
        cluster,
        a,
        b,
        run,
        epoch_a,
        taken,
        done,
        noticed,
        calls_at_pause,
        recorded_at_pause,
    };
    println!(
        "paused after {tries} tries at epoch {epoch_a}; taken over {takeover:?} after the \
         pause, at epoch {}; at the pause: {calls_at_pause} sync calls answered, \
         {recorded_at_pause} recorded; sync calls by A after it continued: {}; campaigns \
         synced twice: {}; A noticed: {}",
        paused.taken.lease_epoch,
        paused.calls_by_a_after_it_continued(),
        syncs(&paused.cluster.sims[0]).1,
        paused.noticed
    );
    paused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_past_its_lease_writes_nothing_after_it_continues() {
    // Arrange, act: see `paused_past_the_lease`.
    let Paused {
        cluster,
        mut a,
        b,
        run,
        epoch_a,
        taken,
        done,
        noticed,
        ..
    } = paused_past_the_lease("paused").await;

    // Assert: B finished the run; A wrote nothing once B started; the database counts
    // every campaign once.
    assert_eq!(done.status, RunStatus::Succeeded, "{done:#?}");
    assert!(b.owns(&done), "{done:#?}");
    assert!(taken.lease_epoch > epoch_a);
    assert_eq!(
        done.lease_epoch, taken.lease_epoch,
        "nobody took it back: {done:#?}"
    );
    assert_eq!(done.attempts, 2, "{done:#?}");
    assert!(
        noticed.contains("stopping without writing") || noticed.contains("LeaseLost"),
        "{noticed}"
    );
    let (_, a_last, a_writes) = cluster.writes_of("wa").await;
    let (b_first, _, b_writes) = cluster.writes_of("wb").await;
    println!("rows written: by A {a_writes}, by B {b_writes}");
    assert!(a_writes > 0 && b_writes > 0);
    assert!(
        a_last < b_first,
        "A's last write (#{a_last:?}) follows B's first (#{b_first:?})"
    );
    assert_eq!(
        done.counters.campaigns_synced, CAMPAIGNS as i64,
        "{done:#?}"
    );
    assert_eq!(
        done.counters.campaigns_stored, CAMPAIGNS as i64,
        "{done:#?}"
    );
    let tenant = &cluster.tenants[0].id;
    assert_eq!(
        cluster.store.campaign_count(tenant).await.unwrap(),
        CAMPAIGNS as i64
    );
    assert_eq!(
        cluster
            .count(
                "SELECT count(*) FROM campaigns WHERE synced_run_id = $1",
                run
            )
            .await,
        CAMPAIGNS as i64
    );
    assert_eq!(
        cluster
            .count(
                "SELECT count(*) FROM campaign_metrics WHERE run_id = $1",
                run
            )
            .await,
        CAMPAIGNS as i64
    );
    assert_eq!(syncs(&cluster.sims[0]).0, CAMPAIGNS);
    // A, continued, lives on: it stops cleanly when asked.
    a.signal("TERM");
    assert_eq!(a.exit_code(DEADLINE).await, Some(0), "{}", a.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_past_its_lease_sends_no_sync_call_after_it_continues() {
    // Arrange, act: see `paused_past_the_lease`.
    let paused = paused_past_the_lease("paused_calls").await;

    // Assert: once its lease ran out, A's calls could never be recorded; it makes none
    // (they would repeat B's and spend the budget B shares with it).
    assert_eq!(
        paused.done.status,
        RunStatus::Succeeded,
        "{:#?}",
        paused.done
    );
    assert_eq!(
        paused.calls_by_a_after_it_continued(),
        0,
        "sync calls by A after it continued past its lease; its log:\n{}",
        paused.a.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_requeues_runs_and_releases_leases() {
    // Arrange: worker A alone, part way into the run.
    let cluster = Cluster::start("sigterm", 1).await;
    let mut a = cluster.worker("wa").await;
    let run = cluster.enqueue(0).await;
    cluster.until_under_way(0, run, &a).await;
    let registered = |c: &Cluster| {
        let pool = c.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM workers")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        registered(&cluster).await,
        1,
        "the worker registered itself"
    );

    // Act: SIGTERM A; then worker B takes the queue.
    a.signal("TERM");
    let asked = Instant::now();
    let code = a.exit_code(DEADLINE).await;
    let stopped_in = asked.elapsed();
    let handed = cluster.run(run).await;
    assert_eq!(
        registered(&cluster).await,
        0,
        "a clean stop leaves the registry"
    );
    let (synced_by_a, _) = syncs(&cluster.sims[0]);
    let b = cluster.worker("wb").await;
    let done = cluster.until_final(&[run], DEADLINE).await.remove(0);

    // Assert
    println!("A stopped in {stopped_in:?}, having synced {synced_by_a} campaigns");
    assert_eq!(code, Some(0), "{}", a.log());
    let grace = adsync_service::worker::WorkerConfig::default().shutdown_grace;
    assert!(
        stopped_in <= grace,
        "stopped in {stopped_in:?}, grace {grace:?}"
    );
    assert_eq!(handed.status, RunStatus::Queued, "{handed:#?}");
    assert_eq!(handed.lease_expires_at, None, "lease released: {handed:#?}");
    assert!(synced_by_a < CAMPAIGNS, "stopped mid-run");
    assert_eq!(done.status, RunStatus::Succeeded, "{done:#?}");
    assert!(b.owns(&done), "{done:#?}");
    assert_eq!(done.attempts, 2, "{done:#?}");
    let (synced, repeated) = syncs(&cluster.sims[0]);
    assert_eq!(synced, CAMPAIGNS);
    assert_eq!(repeated, 0, "a graceful hand-over repeats no sync call");
    let tenant = &cluster.tenants[0].id;
    assert_eq!(
        cluster.store.campaign_count(tenant).await.unwrap(),
        CAMPAIGNS as i64
    );
}
