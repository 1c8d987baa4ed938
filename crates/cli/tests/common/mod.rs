//! What the black-box tests of the `adsync` binary share: a scratch directory, the command
//! with a clean environment, child processes that die with the test and are only ever waited
//! for with a deadline, `adsync simulate` as a child process with its `/__sim/stats`, scratch
//! PostgreSQL databases, and a view of the database the binary wrote that never migrates or
//! writes anything itself.

// Each test file is its own crate and uses a different part of this module.
#![allow(dead_code)]

use std::{
    future::Future,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use adsync_sim::SimStats;
use sqlx::{
    PgPool, SqlitePool,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqlitePoolOptions},
};

/// How long any one command or condition may take before the test fails. Generous: the
/// slowest run here takes a few seconds alone, and the tests share two cores.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(25);

/// The simulator's test account.
pub const EMAIL: &str = adsync_sim::REFERENCE_EMAIL;
/// Its password.
pub const PASSWORD: &str = adsync_sim::REFERENCE_PASSWORD;

// ---- Scratch directory ------------------------------------------------------------------

/// A fresh directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "adsync-cli-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// `sqlite://DIR/adsync.db`: the default `./adsync.db` of a command run in this
    /// directory.
    pub fn db_url(&self) -> String {
        format!("sqlite://{}", self.join("adsync.db").display())
    }

    /// The names of the files in the directory, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A `--summary-json` file the binary wrote.
    pub fn json(&self, name: &str) -> serde_json::Value {
        let path = self.join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON ({e}): {text}"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- The command ------------------------------------------------------------------------

/// `adsync` in `dir`, with no platform, database or adsync setting inherited from the
/// environment of the test run.
pub fn adsync(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_adsync"));
    cmd.current_dir(dir).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("AD_PLATFORM_")
            || name.starts_with("ADSYNC_")
            || name == "DATABASE_URL"
            || name == "RUST_LOG"
        {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

/// Runs `cmd` to the end (at most [`DEADLINE`]) and returns what it printed.
pub fn run(cmd: &mut Command) -> Output {
    Running::spawn(cmd).finish(DEADLINE)
}

/// Stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Stdout and stderr in one string, for failure messages and leak checks.
pub fn all_text(o: &Output) -> String {
    let (out, err) = text(o);
    format!("--- stdout\n{out}\n--- stderr\n{err}")
}

/// The lines adsync addressed to the user on stderr (`adsync: ...`), log lines left out.
pub fn user_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("adsync: "))
        .collect()
}

/// The command exited with `code` and said why in exactly one line holding every needle
/// (notices that the built-in simulator is in use aside), with no panic or backtrace.
/// Returns that line.
pub fn assert_one_line_failure(o: &Output, code: i32, needles: &[&str]) -> String {
    let (_, err) = text(o);
    assert_eq!(o.status.code(), Some(code), "{}", all_text(o));
    let lines: Vec<_> = user_lines(&err)
        .into_iter()
        .filter(|l| !l.contains("using the built-in simulator"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one line: {}", all_text(o));
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {:?}", lines[0]);
    }
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    lines[0].to_owned()
}

// ---- Children that die with the test --------------------------------------------------------

/// A child process whose output is collected as it comes (no pipe can fill up and block it)
/// and which is killed if the test ends while it still runs.
pub struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn drain(mut from: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let to = buf.clone();
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n @ 1..) = from.read(&mut chunk) {
            to.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buf, reader)
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the command starts");
        let (stdout, out_reader) = drain(child.stdout.take().unwrap());
        let (stderr, err_reader) = drain(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`...).
    pub fn signal(&self, name: &str) {
        let o = run(Command::new("kill").args(["-s", name, &self.pid().to_string()]));
        assert!(o.status.success(), "kill -s {name}: {}", all_text(&o));
    }

    /// Whether it has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status.is_some()
    }

    /// Waits until every thread of the process is stopped (after `signal("STOP")`).
    pub fn wait_until_stopped(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let tasks = format!("/proc/{}/task", self.pid());
        let stopped = || {
            std::fs::read_dir(&tasks).unwrap().all(|task| {
                let stat =
                    std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap_or_default();
                // "pid (comm) STATE ...": comm may hold spaces and parentheses.
                let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
                matches!(state.and_then(|s| s.chars().next()), Some('T' | 't'))
            })
        };
        while !stopped() {
            assert!(Instant::now() < deadline, "not stopped within {limit:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until stdout (`on_stdout`) or stderr holds a line containing `needle`, and
    /// returns that line. Fails if the process exits first or after `limit`.
    pub fn wait_for_line(&mut self, on_stdout: bool, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = if on_stdout {
                self.stdout()
            } else {
                self.stderr()
            };
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                !self.exited(),
                "exited before printing {needle:?}:\n{}\n{}",
                self.stdout(),
                self.stderr()
            );
            assert!(
                Instant::now() < deadline,
                "{needle:?} not printed within {limit:?}:\n{}\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the process to exit (at most `limit`, else the test fails and the process
    /// is killed) and returns what it printed.
    pub fn finish(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        while !self.exited() {
            assert!(
                Instant::now() < deadline,
                "still running after {limit:?}:\n{}\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(POLL);
        }
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        Output {
            status: self.status.unwrap(),
            stdout: std::mem::take(&mut *self.stdout.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- Conditions with a deadline -------------------------------------------------------------

/// Checks `condition` until it holds; fails the test, naming `what`, after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(POLL).await;
    }
}

// ---- `adsync simulate` as a child process ----------------------------------------------------

/// `adsync simulate --port 0` running as a child process, killed when dropped.
pub struct SimProcess {
    process: Running,
    /// Its base URL, as it printed it.
    pub url: String,
    /// The rate limit per client it enforces, time scale applied, as N/W.
    pub rate_limit: String,
}

impl SimProcess {
    /// Starts `adsync simulate --port 0 ARGS` and reads its address from its first line.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_with_env(dir, args, &[])
    }

    /// [`SimProcess::start`] with these environment variables set.
    pub fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut process = Running::spawn(
            adsync(dir)
                .args(["simulate", "--port", "0"])
                .args(args)
                .envs(env.iter().copied()),
        );
        let banner = process.wait_for_line(true, "listening on", DEADLINE);
        let url = banner
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {banner:?}"))
            .trim_end_matches('/')
            .to_owned();
        let rate_limit = banner
            .split_once("rate limit ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no rate limit in {banner:?}"))
            .to_owned();
        SimProcess {
            process,
            url,
            rate_limit,
        }
    }

    /// `adsync sync` pointed at this simulator with the reference credentials, pacing itself
    /// to the simulator's (time-scaled) rate limit.
    pub fn sync(&self, dir: &Path) -> Command {
        let mut cmd = adsync(dir);
        cmd.args([
            "sync",
            "--api-url",
            &self.url,
            "--rate-limit",
            &self.rate_limit,
        ])
        .env("AD_PLATFORM_EMAIL", EMAIL)
        .env("AD_PLATFORM_PASSWORD", PASSWORD);
        cmd
    }

    /// What the simulator saw (`GET /__sim/stats`).
    pub fn stats(&self) -> SimStats {
        let body = http_get(&self.url, "/__sim/stats");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats are not JSON ({e}): {body}"))
    }
}

/// The successful sync calls of every campaign, summed.
pub fn sync_calls(stats: &SimStats) -> u64 {
    stats.syncs.values().sum()
}

/// A GET over plain HTTP/1.1: the tests need nothing more, and no HTTP client is a
/// dependency of this crate.
fn http_get(base: &str, path: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

// ---- PostgreSQL -----------------------------------------------------------------------------

/// The PostgreSQL server of the test run (a user that may create databases).
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL must point at PostgreSQL for this test (scripts/test sets it), e.g. postgres://postgres@127.0.0.1:5432/postgres",
    )
}

/// An empty PostgreSQL database of its own, dropped with the value (also when the test
/// fails).
pub struct ScratchPg {
    admin: String,
    name: String,
    /// Its URL.
    pub url: String,
}

impl ScratchPg {
    pub async fn create(tag: &str) -> Self {
        let admin = postgres_url();
        let name = format!("adsync_cli_{tag}_{}", std::process::id());
        let pool = PgPool::connect(&admin).await.unwrap();
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        ScratchPg {
            admin,
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for ScratchPg {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: use another.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(pool) = PgPool::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

// ---- The database the binary wrote ----------------------------------------------------------

/// The tables a sync writes, compared whole by [`Db::snapshot`].
const TABLES: [&str; 6] = [
    "sync_runs",
    "campaigns",
    "campaign_metrics",
    "dead_letters",
    "run_warnings",
    "listing_seen",
];

/// A connection to the database `adsync` writes. It neither creates nor migrates anything,
/// so it can watch a run from the side.
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    /// Opens the database, which must exist (a SQLite file is not created).
    pub async fn open(url: &str) -> Result<Db, sqlx::Error> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(false)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            Ok(Db::Sqlite(pool))
        } else {
            let pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
            Ok(Db::Postgres(pool))
        }
    }

    /// Opens the database once it exists and `adsync` has created its tables.
    pub async fn open_when_migrated(url: &str) -> Db {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(db) = Db::open(url).await {
                if db
                    .try_scalar("SELECT count(*) FROM sync_runs")
                    .await
                    .is_some()
                {
                    return db;
                }
                db.close().await;
            }
            assert!(
                Instant::now() < deadline,
                "{url} was not created and migrated within {DEADLINE:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// One integer (cast it to BIGINT in the query where the column is narrower), or `None`
    /// when the query fails.
    pub async fn try_scalar(&self, sql: &str) -> Option<i64> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.ok(),
            Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.ok(),
        }
    }

    /// One integer.
    pub async fn scalar(&self, sql: &str) -> i64 {
        self.try_scalar(sql)
            .await
            .unwrap_or_else(|| panic!("query failed: {sql}"))
    }

    /// One text value.
    pub async fn text(&self, sql: &str) -> String {
        let q = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Db::Sqlite(p) => sqlx::query_scalar(q).fetch_one(p).await,
            Db::Postgres(p) => sqlx::query_scalar(q).fetch_one(p).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Campaigns whose sync call succeeded in some run (0 before the tables exist).
    pub async fn synced(&self) -> i64 {
        self.try_scalar("SELECT count(*) FROM campaigns WHERE synced_run_id IS NOT NULL")
            .await
            .unwrap_or(0)
    }

    /// Every row of every table a sync writes, as text, in a stable order.
    pub async fn snapshot(&self) -> Vec<String> {
        let mut rows = Vec::new();
        for table in TABLES {
            let sql = match self {
                Db::Postgres(_) => {
                    format!("SELECT row_to_json(t)::text AS r FROM {table} t ORDER BY r")
                }
                Db::Sqlite(_) => {
                    let columns = self
                        .text(&format!(
                            "SELECT group_concat('quote(' || name || ')', ' || '','' || ') FROM pragma_table_info('{table}')"
                        ))
                        .await;
                    format!("SELECT {columns} AS r FROM {table} ORDER BY r")
                }
            };
            let q = sqlx::AssertSqlSafe(sql.clone());
            let table_rows: Vec<String> = match self {
                Db::Sqlite(p) => sqlx::query_scalar(q).fetch_all(p).await,
                Db::Postgres(p) => sqlx::query_scalar(q).fetch_all(p).await,
            }
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
            rows.extend(table_rows.into_iter().map(|r| format!("{table}: {r}")));
        }
        rows
    }

    /// Whether no other connection is inside a transaction right now (so none holds a lock
    /// a paused process would keep forever).
    pub async fn nobody_in_a_transaction(&self) -> bool {
        match self {
            Db::Sqlite(p) => {
                let mut conn = p.acquire().await.unwrap();
                sqlx::query("PRAGMA busy_timeout = 0")
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                let free = sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut *conn)
                    .await
                    .is_ok();
                if free {
                    sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
                }
                sqlx::query("PRAGMA busy_timeout = 10000")
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                free
            }
            Db::Postgres(_) => {
                self.scalar(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')",
                )
                .await
                    == 0
            }
        }
    }

    pub async fn close(self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// 32 random bytes, from the OS.
pub fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes
}

/// An admin key: any long random string.
pub fn random_admin_key() -> String {
    let hex: String = random_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("adm_{hex}")
}

/// A master key made in the test rather than by `adsync keys generate`: base64 of 32
/// random bytes.
pub fn random_master_key() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(random_bytes())
}
