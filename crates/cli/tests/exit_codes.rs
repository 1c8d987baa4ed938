//! The exit codes a scheduler reads: 2 for a partial run, 1 for what a retry will not mend
//! (wrong credentials), 75 for what it may (platform or database unreachable); each failure
//! in one line that holds no password.

mod common;

use common::{Db, TempDir, adsync, all_text, assert_one_line_failure, run, text};

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn dead_letters_make_the_run_partial_with_exit_code_2_and_can_be_listed() {
    let dir = TempDir::new("partial");

    let sync = run(adsync(dir.path()).args([
        "sync",
        "--sim-time-scale",
        "600",
        "--sim-invalid-every",
        "25",
        "--summary-json",
        "s.json",
    ]));
    let list = run(adsync(dir.path()).args(["dead-letters", "list"]));

    assert_eq!(sync.status.code(), Some(2), "{}", all_text(&sync));
    assert!(
        text(&sync).0.contains("dead-lettered 3"),
        "{}",
        all_text(&sync)
    );
    let summary = dir.json("s.json");
    assert_eq!(summary["status"], "partial");
    assert_eq!(summary["outcome"], "partial");
    // campaign_25 has an unknown status: stored verbatim with a warning, not dead-lettered.
    assert_eq!(summary["counters"]["dead_lettered"], 3);
    assert_eq!(summary["counters"]["campaigns_stored"], 97);
    let (out, _) = text(&list);
    assert!(list.status.success(), "{}", all_text(&list));
    for id in ["campaign_50", "campaign_75", "campaign_100"] {
        assert!(out.contains(id), "{id} not listed: {out}");
    }
    assert_eq!(out.lines().count(), 4, "header and three letters: {out}");
    let db = Db::open(&dir.db_url()).await.unwrap();
    assert_eq!(
        db.text("SELECT status FROM campaigns WHERE id = 'campaign_25'")
            .await,
        "archived"
    );
}

#[test]
fn wrong_credentials_exit_1_with_one_line_that_holds_no_password() {
    let dir = TempDir::new("creds");

    let o = run(adsync(dir.path())
        .args(["sync", "--sim-time-scale", "600"])
        .env("AD_PLATFORM_EMAIL", adsync_sim::REFERENCE_EMAIL)
        .env("AD_PLATFORM_PASSWORD", "hunter2-wrong"));

    assert_one_line_failure(&o, 1, &["rejected the credentials", "AD_PLATFORM_PASSWORD"]);
    assert!(!all_text(&o).contains("hunter2"), "{}", all_text(&o));
}

#[test]
fn an_unreachable_platform_exits_75_with_one_line_and_a_summary_that_says_so() {
    let dir = TempDir::new("platform-down");

    let o = run(adsync(dir.path())
        .args(["sync", "--max-attempts", "2", "--summary-json", "s.json"])
        .arg("--api-url")
        .arg(format!("http://127.0.0.1:{}", closed_port()))
        .env("AD_PLATFORM_EMAIL", "a@b.c")
        .env("AD_PLATFORM_PASSWORD", "pw-of-the-unreachable"));

    assert_one_line_failure(&o, 75, &["cannot reach the ad platform", "--api-url"]);
    assert!(!all_text(&o).contains("pw-of-the-unreachable"));
    let summary = dir.json("s.json");
    assert_eq!(summary["status"], "not_started", "{summary}");
    assert_eq!(summary["exit_code"], 75, "{summary}");
}

#[test]
fn the_summary_of_a_run_that_cannot_start_because_the_platform_is_down_says_platform_down() {
    let dir = TempDir::new("platform-down-outcome");

    let o = run(adsync(dir.path())
        .args(["sync", "--max-attempts", "1", "--summary-json", "s.json"])
        .arg("--api-url")
        .arg(format!("http://127.0.0.1:{}", closed_port()))
        .env("AD_PLATFORM_EMAIL", "a@b.c")
        .env("AD_PLATFORM_PASSWORD", "pw"));

    assert_eq!(o.status.code(), Some(75), "{}", all_text(&o));
    let summary = dir.json("s.json");
    assert_eq!(summary["outcome"], "platform_down", "{summary}");
}

#[test]
fn an_unreachable_postgres_exits_75_with_one_line_and_no_password_of_its_url_even_at_trace_level() {
    let dir = TempDir::new("db-down");
    let url = "postgres://nobody:s3cret-pw@127.0.0.1:1/none?password=other-secret";

    // Started together: each waits out the pool's connect timeout.
    let sync = common::Running::spawn(adsync(dir.path()).args([
        "-vv",
        "sync",
        "--simulator",
        "--database-url",
        url,
    ]));
    let runs = common::Running::spawn(adsync(dir.path()).args(["runs", "--database-url", url]));
    let refused = run(adsync(dir.path()).args(["sync", "--database-url", url]));
    let (sync, runs) = (sync.finish(common::DEADLINE), runs.finish(common::DEADLINE));

    assert_one_line_failure(&sync, 75, &["cannot open the database", "--database-url"]);
    assert_one_line_failure(&runs, 75, &["cannot open the database", "--database-url"]);
    assert_one_line_failure(&refused, 1, &["AD_PLATFORM_API_URL", "127.0.0.1:1"]);
    for o in [&sync, &runs, &refused] {
        let all = all_text(o);
        assert!(
            !all.contains("s3cret-pw"),
            "the URL's password leaked: {all}"
        );
        assert!(!all.contains("other-secret"), "?password= leaked: {all}");
    }
}
