//! A sync stopped part way (SIGTERM, or `kill -9` where no handler runs) resumes its run on
//! the next `adsync sync`, without listing stored pages or syncing synced campaigns again.

mod common;

use common::{DEADLINE, Db, Running, TempDir, adsync, all_text, eventually, run, text};

/// 300 campaigns in pages of 10 at time scale 300: 330 calls in about 6.6 s, long enough to
/// stop part way.
const LONG_RUN: [&str; 8] = [
    "sync",
    "--sim-time-scale",
    "300",
    "--sim-campaigns",
    "300",
    "--page-size",
    "10",
    "--simulator",
];

#[tokio::test]
async fn sigterm_interrupts_with_code_130_and_the_next_run_resumes_it() {
    let dir = TempDir::new("sigterm");
    let first = Running::spawn(adsync(dir.path()).args(LONG_RUN));
    let db = Db::open_when_migrated(&dir.db_url()).await;
    let db = &db;
    eventually(
        "the first process synced 30 campaigns",
        DEADLINE,
        move || async move { db.synced().await >= 30 },
    )
    .await;

    first.signal("TERM");
    let stopped = first.finish(DEADLINE);
    let synced_when_stopped = db.synced().await;
    let resumed = run(adsync(dir.path()).args(LONG_RUN));

    let (out, err) = text(&stopped);
    assert_eq!(stopped.status.code(), Some(130), "{}", all_text(&stopped));
    assert!(out.contains("interrupted"), "{out}");
    assert!(err.contains("run adsync sync again to resume"), "{err}");
    assert!(
        synced_when_stopped < 300,
        "the signal came too late to test anything"
    );
    let (out, _) = text(&resumed);
    assert_eq!(resumed.status.code(), Some(0), "{}", all_text(&resumed));
    assert!(
        out.contains("(resumed)") && out.contains("synced 300"),
        "{out}"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM sync_runs").await, 1);
    assert_eq!(
        db.scalar("SELECT CAST(resumes AS BIGINT) FROM sync_runs")
            .await,
        1
    );
    assert_eq!(db.scalar("SELECT count(*) FROM campaigns").await, 300);
}

#[tokio::test]
async fn sigint_interrupts_like_ctrl_c_with_code_130_leaving_the_run_resumable() {
    let dir = TempDir::new("sigint");
    let first = Running::spawn(adsync(dir.path()).args(LONG_RUN));
    let db = Db::open_when_migrated(&dir.db_url()).await;
    let db = &db;
    eventually(
        "the process synced 10 campaigns",
        DEADLINE,
        move || async move { db.synced().await >= 10 },
    )
    .await;

    first.signal("INT");
    let stopped = first.finish(DEADLINE);

    assert_eq!(stopped.status.code(), Some(130), "{}", all_text(&stopped));
    assert!(
        text(&stopped).0.contains("interrupted"),
        "{}",
        all_text(&stopped)
    );
    assert_eq!(db.text("SELECT status FROM sync_runs").await, "interrupted");
    assert_eq!(
        db.text("SELECT stop_reason FROM sync_runs").await,
        "cancelled"
    );
}

#[tokio::test]
async fn kill_9_mid_run_then_a_rerun_takes_the_run_over_once_its_lease_runs_out_without_refetching_stored_pages()
 {
    let dir = TempDir::new("kill9");
    let lease = ["--lease-timeout", "1s"];
    let first = Running::spawn(adsync(dir.path()).args(LONG_RUN).args(lease));
    let db = Db::open_when_migrated(&dir.db_url()).await;
    let db = &db;
    eventually(
        "the first process synced 60 campaigns",
        DEADLINE,
        move || async move { db.synced().await >= 60 },
    )
    .await;

    first.signal("KILL"); // no handler runs: the run stays `running` under a lease
    let killed = first.finish(DEADLINE);
    let synced_before = db.synced().await;
    let pages_before = db.scalar("SELECT pages FROM sync_runs").await;
    let o = run(adsync(dir.path())
        .args(LONG_RUN)
        .args(lease)
        .args(["--summary-json", "s.json"]));

    assert_eq!(killed.status.code(), None, "killed by a signal");
    assert!(
        synced_before < 300,
        "the kill came too late to test anything"
    );
    assert_eq!(o.status.code(), Some(0), "{}", all_text(&o));
    let (out, err) = text(&o);
    assert!(out.contains("(resumed)"), "{out}");
    assert!(
        err.contains("until its lease runs out"),
        "it says why it waits: {err}"
    );
    let s = dir.json("s.json");
    assert_eq!(s["resumed"], true);
    assert_eq!(s["outcome"], "succeeded");
    assert_eq!(s["counters"]["campaigns_synced"], 300);
    assert_eq!(s["counters"]["pages"], 30);
    assert_eq!(db.scalar("SELECT count(*) FROM campaigns").await, 300);
    assert_eq!(db.scalar("SELECT count(*) FROM sync_runs").await, 1);
    // The second process listed only the pages not stored, and synced only what was left
    // (plus, at most, the calls that were in flight when the first one died).
    let requests = s["client"]["requests"].as_i64().unwrap();
    let needed = (30 - pages_before) + (300 - synced_before) + 1; // + the token request
    assert!(
        requests <= needed + 20,
        "{requests} requests for {needed} calls left"
    );
}
