//! One writer per run, whatever processes do: two processes resuming one interrupted run at
//! the same moment (one resumes it, the other exits 75), and a process paused past its lease
//! (another takes the run over; the paused one, continued, writes nothing and exits 75). On
//! SQLite and PostgreSQL, against `adsync simulate` as a child process so the platform's
//! counters span every process.

mod common;

use std::{path::Path, process::Command, time::Instant};

use common::{
    DEADLINE, Db, Running, ScratchPg, SimProcess, TempDir, all_text, eventually, run, sync_calls,
    text, user_lines,
};

const CAMPAIGNS: u64 = 300;

/// 300 campaigns at time scale 300 (a sync of pages of 10 takes about 6.6 s). No scheduled
/// 503s: their unscaled retry backoff would only slow these tests, which are about leases.
fn start_simulator(dir: &Path) -> SimProcess {
    SimProcess::start(
        dir,
        &[
            "--time-scale",
            "300",
            "--campaigns",
            "300",
            "--fail-every",
            "0",
        ],
    )
}

/// `adsync sync` of `sim` into `db` in pages of 10, writing its summary to `json`.
fn sync(sim: &SimProcess, dir: &Path, db: &str, lease: &str, json: &str) -> Command {
    let mut cmd = sim.sync(dir);
    cmd.args([
        "--page-size",
        "10",
        "--lease-timeout",
        lease,
        "--database-url",
        db,
        "--summary-json",
        json,
    ]);
    cmd
}

/// Waits until the run has synced some campaigns.
async fn progress(db: &Db) {
    eventually(
        "the first process synced 30 campaigns",
        DEADLINE,
        move || async move { db.synced().await >= 30 },
    )
    .await;
}

async fn two_processes_resuming_one_interrupted_run_at_once(dir: &TempDir, url: &str) {
    // Arrange: a run interrupted part way by SIGTERM.
    let sim = start_simulator(dir.path());
    let first = Running::spawn(&mut sync(&sim, dir.path(), url, "2s", "first.json"));
    let db = Db::open_when_migrated(url).await;
    progress(&db).await;
    first.signal("TERM");
    let first = first.finish(DEADLINE);
    assert_eq!(first.status.code(), Some(130), "{}", all_text(&first));
    let synced_before = db.synced().await;
    assert!(synced_before < CAMPAIGNS as i64, "SIGTERM came too late");

    // Act: two processes at the same moment.
    let a = Running::spawn(&mut sync(&sim, dir.path(), url, "2s", "a.json"));
    let b = Running::spawn(&mut sync(&sim, dir.path(), url, "2s", "b.json"));
    let (a, b) = (a.finish(DEADLINE), b.finish(DEADLINE));

    // Assert: one resumed and finished the run, the other stood aside.
    let codes = [a.status.code(), b.status.code()];
    let (winner, loser, winner_json) = match codes {
        [Some(0), Some(75)] => (&a, &b, "a.json"),
        [Some(75), Some(0)] => (&b, &a, "b.json"),
        _ => panic!(
            "expected one 0 and one 75, got {codes:?}\n{}\n{}",
            all_text(&a),
            all_text(&b)
        ),
    };
    assert!(text(winner).0.contains("(resumed)"), "{}", all_text(winner));
    let summary = dir.json(winner_json);
    assert_eq!(summary["resumed"], true, "{summary}");
    assert_eq!(summary["counters"]["campaigns_synced"], CAMPAIGNS);
    let loser_err = text(loser).1;
    let lines: Vec<_> = user_lines(&loser_err)
        .into_iter()
        .filter(|l| l.contains("being synced by"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", all_text(loser));
    let stats = sim.stats();
    let most = stats.syncs.values().max().copied().unwrap_or(0);
    assert!(most <= 2, "a campaign was synced {most} times: {stats:?}");
    assert_eq!(stats.syncs.len() as u64, CAMPAIGNS);
    // Each campaign once, plus those in flight at the SIGTERM whose success was not recorded.
    let calls = sync_calls(&stats);
    assert!(
        calls <= CAMPAIGNS + 20,
        "{calls} sync calls for {CAMPAIGNS} campaigns"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM sync_runs").await, 1);
    assert_eq!(
        db.scalar("SELECT CAST(resumes AS BIGINT) FROM sync_runs")
            .await,
        1
    );
    assert_eq!(db.text("SELECT status FROM sync_runs").await, "succeeded");
    assert_eq!(db.synced().await, CAMPAIGNS as i64);
    db.close().await;
}

#[tokio::test]
async fn two_processes_resuming_one_interrupted_run_at_once_on_sqlite_resume_it_once() {
    let dir = TempDir::new("race-sqlite");
    let url = dir.db_url();
    two_processes_resuming_one_interrupted_run_at_once(&dir, &url).await;
}

#[tokio::test]
async fn two_processes_resuming_one_interrupted_run_at_once_on_postgres_resume_it_once() {
    let pg = ScratchPg::create("race").await;
    let dir = TempDir::new("race-pg");
    two_processes_resuming_one_interrupted_run_at_once(&dir, &pg.url).await;
}

/// Stops `p` (SIGSTOP) at a moment it holds no database transaction: stopped inside one, it
/// would keep its locks and block every other process until the statement timeout, which is
/// not what this test is about.
async fn pause_outside_a_transaction(p: &Running, db: &Db) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        p.signal("STOP");
        p.wait_until_stopped(DEADLINE);
        if db.nobody_in_a_transaction().await {
            return;
        }
        p.signal("CONT");
        assert!(
            Instant::now() < deadline,
            "never caught the process outside a transaction"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn a_process_paused_past_its_lease_writes_nothing_once_continued(dir: &TempDir, url: &str) {
    // Arrange: a run under way, its process paused long enough for its lease to run out.
    let sim = start_simulator(dir.path());
    let first = Running::spawn(&mut sync(&sim, dir.path(), url, "1s", "first.json"));
    let db = Db::open_when_migrated(url).await;
    progress(&db).await;
    pause_outside_a_transaction(&first, &db).await;

    // Act: a second process takes the run over and finishes it; then the first continues.
    let second = run(&mut sync(&sim, dir.path(), url, "1s", "second.json"));
    let after_second = db.snapshot().await;
    first.signal("CONT");
    let first = first.finish(DEADLINE);
    let after_first = db.snapshot().await;

    // Assert
    assert_eq!(second.status.code(), Some(0), "{}", all_text(&second));
    assert!(
        text(&second).1.contains("until its lease runs out"),
        "{}",
        all_text(&second)
    );
    let summary = dir.json("second.json");
    assert_eq!(summary["resumed"], true, "{summary}");
    assert_eq!(summary["counters"]["campaigns_synced"], CAMPAIGNS);
    assert_eq!(first.status.code(), Some(75), "{}", all_text(&first));
    let summary = dir.json("first.json");
    assert_eq!(summary["outcome"], "lease_lost", "{summary}");
    let campaign_rows = after_second
        .iter()
        .filter(|r| r.starts_with("campaigns: "))
        .count();
    assert_eq!(
        campaign_rows, CAMPAIGNS as usize,
        "the snapshot sees every row"
    );
    if after_first != after_second {
        let changed: Vec<_> = after_first
            .iter()
            .filter(|r| !after_second.contains(r))
            .take(5)
            .collect();
        let gone: Vec<_> = after_second
            .iter()
            .filter(|r| !after_first.contains(r))
            .take(5)
            .collect();
        panic!("the paused process wrote after losing its lease:\nnow {changed:#?}\nwas {gone:#?}");
    }
    assert_eq!(db.scalar("SELECT count(*) FROM sync_runs").await, 1);
    assert_eq!(db.text("SELECT status FROM sync_runs").await, "succeeded");
    db.close().await;
}

#[tokio::test]
async fn a_process_paused_past_its_lease_on_sqlite_writes_nothing_once_continued() {
    let dir = TempDir::new("paused-sqlite");
    let url = dir.db_url();
    a_process_paused_past_its_lease_writes_nothing_once_continued(&dir, &url).await;
}

#[tokio::test]
async fn a_process_paused_past_its_lease_on_postgres_writes_nothing_once_continued() {
    let pg = ScratchPg::create("paused").await;
    let dir = TempDir::new("paused-pg");
    a_process_paused_past_its_lease_writes_nothing_once_continued(&dir, &pg.url).await;
}
