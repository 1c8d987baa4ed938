//! The `adsync` binary as a user runs it: exit codes, one-line errors, resume after kill -9,
//! and no secret in any output.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};

const PASSWORD: &str = adsync_sim::REFERENCE_PASSWORD;

struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("adsync-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn db_url(&self) -> String {
        format!("sqlite://{}/adsync.db", self.0.display())
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `adsync` with a clean environment: no inherited platform or database settings.
fn adsync(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_adsync"));
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("AD_PLATFORM_API_URL")
        .env_remove("AD_PLATFORM_EMAIL")
        .env_remove("AD_PLATFORM_PASSWORD")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

async fn count(db: &str, sql: &'static str) -> i64 {
    let store = adsync_store::Store::connect(db).await.unwrap();
    let adsync_store::Store::Sqlite(pool) = &store else {
        unreachable!()
    };
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn the_readme_run_command_syncs_100_campaigns_and_a_second_run_keeps_100_rows() {
    let dir = TempDir::new("readme");

    let first = adsync(&dir.0)
        .arg("sync")
        .arg("--sim-time-scale")
        .arg("600")
        .output()
        .unwrap();
    let second = adsync(&dir.0)
        .arg("sync")
        .arg("--sim-time-scale")
        .arg("600")
        .output()
        .unwrap();

    let (out, err) = text(&first);
    assert!(first.status.success(), "{out}\n{err}");
    assert!(err.contains("using the built-in simulator"), "{err}");
    assert!(
        out.contains("seen 100 · stored 100 · synced 100 · dead-lettered 0"),
        "{out}"
    );
    assert!(second.status.success());
    let db = format!("sqlite://{}/adsync.db", dir.0.display());
    assert!(
        dir.0.join("adsync.db").exists(),
        "the default database is ./adsync.db"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM campaigns").await, 100);
    assert_eq!(
        count(&db, "SELECT count(*) FROM campaign_metrics").await,
        200
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM campaigns WHERE synced_at IS NULL"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn dead_letters_make_the_run_partial_with_exit_code_2_and_can_be_listed() {
    let dir = TempDir::new("partial");

    let sync = adsync(&dir.0)
        .args([
            "sync",
            "--sim-time-scale",
            "600",
            "--sim-invalid-every",
            "25",
            "--summary-json",
            "s.json",
        ])
        .arg("--database-url")
        .arg(dir.db_url())
        .output()
        .unwrap();
    let list = adsync(&dir.0)
        .args(["dead-letters", "list", "--database-url", &dir.db_url()])
        .output()
        .unwrap();

    assert_eq!(sync.status.code(), Some(2), "{:?}", text(&sync));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("s.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "partial");
    assert_eq!(summary["counters"]["dead_lettered"], 4);
    assert_eq!(summary["counters"]["campaigns_stored"], 96);
    let (out, _) = text(&list);
    assert!(
        out.contains("campaign_25") && out.contains("unknown status"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 5, "header and four letters: {out}");
}

fn assert_one_line_failure(o: &Output, needles: &[&str]) {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let lines: Vec<_> = err
        .lines()
        .filter(|l| l.starts_with("adsync: ") && !l.contains("built-in simulator"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {:?}", lines[0]);
    }
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn malformed_flags_get_one_line_and_exit_1() {
    let dir = TempDir::new("flags");
    let o = adsync(&dir.0)
        .args(["sync", "--rate-limit", "ten"])
        .output()
        .unwrap();
    assert_one_line_failure(&o, &["--rate-limit", "expected N/W such as 10/60s"]);
    let o = adsync(&dir.0)
        .args(["sync", "--api-url", "not a url"])
        .output()
        .unwrap();
    assert_one_line_failure(&o, &["--api-url"]);
    let o = adsync(&dir.0)
        .args(["sync", "--database-url", "mysql://x"])
        .output()
        .unwrap();
    assert_one_line_failure(&o, &["unsupported database URL", "sqlite://"]);
    assert!(!dir.0.join("adsync.db").exists());
}

#[test]
fn wrong_credentials_get_one_clear_line_without_the_password() {
    let dir = TempDir::new("creds");
    let o = adsync(&dir.0)
        .args(["sync", "--sim-time-scale", "600"])
        .env("AD_PLATFORM_EMAIL", adsync_sim::REFERENCE_EMAIL)
        .env("AD_PLATFORM_PASSWORD", "hunter2-wrong")
        .output()
        .unwrap();
    assert_one_line_failure(&o, &["rejected the credentials", "AD_PLATFORM_PASSWORD"]);
    let (out, err) = text(&o);
    assert!(!out.contains("hunter2") && !err.contains("hunter2"));
}

#[test]
fn an_unreachable_platform_or_database_gets_one_line() {
    let dir = TempDir::new("unreachable");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let o = adsync(&dir.0)
        .args(["sync", "--max-attempts", "2"])
        .arg("--api-url")
        .arg(format!("http://127.0.0.1:{port}"))
        .env("AD_PLATFORM_EMAIL", "a@b.c")
        .env("AD_PLATFORM_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_one_line_failure(&o, &["cannot reach the ad platform", "--api-url"]);
    let o = adsync(&dir.0)
        .args([
            "sync",
            "--database-url",
            "postgres://nobody:s3cret-pw@127.0.0.1:1/none",
        ])
        .output()
        .unwrap();
    assert_one_line_failure(&o, &["cannot open the database", "--database-url"]);
    assert!(
        !text(&o).1.contains("s3cret-pw"),
        "the database password leaked"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn an_api_url_without_credentials_says_how_to_give_them() {
    let dir = TempDir::new("nocreds");
    let o = adsync(&dir.0)
        .args(["sync", "--api-url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_one_line_failure(&o, &["AD_PLATFORM_EMAIL", "--credentials-file"]);
}

#[tokio::test]
async fn kill_9_mid_run_then_rerun_resumes_without_refetching_stored_pages() {
    let dir = TempDir::new("kill9");
    // 300 campaigns in pages of 10 at time scale 300: 330 calls in about 6.6 s.
    let args = [
        "sync",
        "--sim-time-scale",
        "300",
        "--sim-campaigns",
        "300",
        "--page-size",
        "10",
    ];
    let mut child = adsync(&dir.0)
        .args(args)
        .arg("--database-url")
        .arg(dir.db_url())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = dir.db_url();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if dir.0.join("adsync.db").exists()
            && count(
                &db,
                "SELECT count(*) FROM campaigns WHERE synced_run_id IS NOT NULL",
            )
            .await
                >= 60
        {
            break;
        }
        assert!(Instant::now() < deadline, "the first run made no progress");
    }
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();
    let synced_before = count(
        &db,
        "SELECT count(*) FROM campaigns WHERE synced_run_id IS NOT NULL",
    )
    .await;
    let pages_before = count(&db, "SELECT pages FROM sync_runs").await;

    let o = adsync(&dir.0)
        .args(args)
        .args(["--summary-json", "s.json", "--database-url", &db])
        .output()
        .unwrap();

    assert!(o.status.success(), "{:?}", text(&o));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("s.json")).unwrap()).unwrap();
    assert_eq!(s["resumed"], true);
    assert_eq!(s["counters"]["campaigns_synced"], 300);
    assert_eq!(s["counters"]["pages"], 30);
    assert_eq!(count(&db, "SELECT count(*) FROM campaigns").await, 300);
    assert_eq!(count(&db, "SELECT count(*) FROM sync_runs").await, 1);
    // The second process listed only the pages not stored, and synced only what was left
    // (plus, at most, the calls that were in flight when the first one died).
    let requests = s["client"]["requests"].as_i64().unwrap();
    let needed = (30 - pages_before) + (300 - synced_before) + 1; // + the token request
    assert!(
        requests <= needed + 20,
        "{requests} requests for {needed} calls left"
    );
    assert!(
        synced_before < 300,
        "the kill came too late to test anything"
    );
}

#[test]
fn sigterm_interrupts_with_code_130_and_the_next_run_resumes() {
    let dir = TempDir::new("sigterm");
    let args = [
        "sync",
        "--sim-time-scale",
        "300",
        "--sim-campaigns",
        "300",
        "--page-size",
        "10",
    ];
    let child = adsync(&dir.0)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let stopped = child.wait_with_output().unwrap();
    let resumed = adsync(&dir.0).args(args).output().unwrap();

    let (out, err) = text(&stopped);
    assert_eq!(stopped.status.code(), Some(130), "{out}\n{err}");
    assert!(out.contains("interrupted"), "{out}");
    assert!(err.contains("run adsync sync again to resume"), "{err}");
    let (out, _) = text(&resumed);
    assert!(resumed.status.success());
    assert!(
        out.contains("(resumed)") && out.contains("synced 300"),
        "{out}"
    );
}

#[test]
fn trace_logs_of_a_whole_run_hold_no_password_basic_header_or_token() {
    let dir = TempDir::new("secrets");
    let o = adsync(&dir.0)
        .args([
            "-vv",
            "sync",
            "--sim-time-scale",
            "600",
            "--sim-profile",
            "chaos",
            "--request-timeout",
            "300ms",
        ])
        .env("AD_PLATFORM_EMAIL", adsync_sim::REFERENCE_EMAIL)
        .env("AD_PLATFORM_PASSWORD", PASSWORD)
        .output()
        .unwrap();

    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "{out}\n{}",
        &err[err.len().saturating_sub(3000)..]
    );
    assert!(
        err.len() > 50_000,
        "trace logging was not on: {} bytes",
        err.len()
    );
    let all = format!("{out}{err}");
    assert!(!all.contains(PASSWORD), "password leaked");
    let basic = STANDARD.encode(format!("{}:{PASSWORD}", adsync_sim::REFERENCE_EMAIL));
    assert!(!all.contains(&basic), "Basic credentials leaked");
    assert!(
        !all.contains("Basic ") && !all.contains("Bearer "),
        "an auth header leaked"
    );
    let hex_runs: Vec<_> = all
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() >= 64)
        .collect();
    assert!(hex_runs.is_empty(), "a token leaked: {hex_runs:?}");
}

#[tokio::test]
async fn postgres_is_supported_by_the_same_command() {
    let Ok(base) = std::env::var("DATABASE_URL") else {
        panic!("DATABASE_URL must point at PostgreSQL for this test (scripts/test sets it)");
    };
    let name = format!("adsync_cli_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&name);
    let dir = TempDir::new("pg");

    let first = adsync(&dir.0)
        .args([
            "sync",
            "--sim-time-scale",
            "600",
            "--database-url",
            url.as_str(),
        ])
        .output()
        .unwrap();
    let second = adsync(&dir.0)
        .args([
            "sync",
            "--sim-time-scale",
            "600",
            "--database-url",
            url.as_str(),
        ])
        .output()
        .unwrap();

    assert!(
        first.status.success() && second.status.success(),
        "{:?}",
        text(&first)
    );
    let pool = sqlx::PgPool::connect(url.as_str()).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM campaigns")
        .fetch_one(&pool)
        .await
        .unwrap();
    let budget: String =
        sqlx::query_scalar("SELECT budget::text FROM campaigns WHERE id = 'campaign_1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, 100);
    assert_eq!(budget, "1100.00");
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
}
