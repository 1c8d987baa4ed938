//! The first things a user runs: the README's command with no configuration, a sync of a
//! platform given by URL (`adsync simulate` standing in for it, reference quirks included),
//! and the same command on PostgreSQL.

mod common;

use common::{Db, ScratchPg, SimProcess, TempDir, adsync, all_text, run, text};

#[tokio::test]
async fn the_readme_command_with_no_configuration_syncs_100_campaigns_into_adsync_db_and_a_rerun_keeps_100_rows()
 {
    let dir = TempDir::new("readme");

    let first = run(adsync(dir.path()).args(["sync", "--sim-time-scale", "600"]));
    let second = run(adsync(dir.path()).args(["sync", "--sim-time-scale", "600"]));

    let (out, err) = text(&first);
    assert!(first.status.success(), "{}", all_text(&first));
    assert!(err.contains("using the built-in simulator"), "{err}");
    assert!(
        out.contains("stored 100 · synced 100 · dead-lettered 0 · removed 0 · returned 0"),
        "{out}"
    );
    assert!(
        out.contains("1 page in 1 pass, complete (platform total 100, 100 per page)"),
        "{out}"
    );
    assert!(second.status.success(), "{}", all_text(&second));
    assert!(
        text(&second)
            .0
            .contains("2 for tenant \"default\": succeeded"),
        "{}",
        all_text(&second)
    );
    assert!(
        dir.files().contains(&"adsync.db".to_owned()),
        "the default database is ./adsync.db: {:?}",
        dir.files()
    );
    let db = Db::open(&dir.db_url()).await.unwrap();
    assert_eq!(db.scalar("SELECT count(*) FROM campaigns").await, 100);
    assert_eq!(
        db.scalar("SELECT count(*) FROM campaign_metrics").await,
        200,
        "one metrics row per campaign per run"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM campaigns WHERE synced_at IS NULL")
            .await,
        0
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM sync_runs WHERE status = 'succeeded'")
            .await,
        2
    );
}

#[test]
fn the_summary_table_has_one_row_per_fact_and_no_limiter_wait() {
    let dir = TempDir::new("summary");

    let o = run(adsync(dir.path()).args(["sync", "--sim-time-scale", "600"]));

    let (out, _) = text(&o);
    assert!(o.status.success(), "{}", all_text(&o));
    let keys: Vec<_> = out
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .map(|l| l.trim_start().split("  ").next().unwrap())
        .collect();
    assert_eq!(out.lines().next(), Some("Summary"), "{out}");
    assert_eq!(
        keys,
        [
            "run",
            "campaigns",
            "listing",
            "requests",
            "retries",
            "token refreshes",
            "duration",
            "throttled",
            "rate-limit floor",
            "warnings"
        ],
        "{out}"
    );
    assert!(!out.contains("limiter wait"), "{out}");
}

#[tokio::test]
async fn a_sync_of_a_platform_with_the_reference_has_more_quirk_stores_the_100_campaigns_it_reports_from_one_listing_call()
 {
    let dir = TempDir::new("reference");
    let sim = SimProcess::start(dir.path(), &["--time-scale", "600"]);

    let o = run(sim.sync(dir.path()).args(["--summary-json", "s.json"]));

    let stats = sim.stats();
    assert_eq!(o.status.code(), Some(0), "{}", all_text(&o));
    assert_eq!(
        stats.list_calls_ok, 1,
        "page 1 of 100 lists all 100 the platform reports; has_more must not be followed: {stats:?}"
    );
    assert_eq!(stats.count("list", "200"), 1, "{stats:?}");
    assert_eq!(stats.syncs.len(), 100, "{stats:?}");
    assert!(
        stats.syncs.values().all(|n| *n == 1),
        "each campaign synced once: {stats:?}"
    );
    let db = Db::open(&dir.db_url()).await.unwrap();
    assert_eq!(db.scalar("SELECT count(*) FROM campaigns").await, 100);
    assert_eq!(
        db.scalar("SELECT count(*) FROM campaigns WHERE id = 'campaign_101'")
            .await,
        0,
        "no invented campaign"
    );
    assert_eq!(
        db.text("SELECT platform FROM sync_runs").await,
        format!("{}/", sim.url)
    );
    let summary = dir.json("s.json");
    assert_eq!(summary["outcome"], "succeeded");
    assert_eq!(summary["counters"]["campaigns_stored"], 100);
    assert_eq!(summary["listing"]["complete"], true);
    let kinds: Vec<_> = summary["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"has_more_ignores_total"), "{summary}");
}

#[tokio::test]
async fn postgres_takes_the_same_command_with_simulator_and_keeps_budgets_exact() {
    let pg = ScratchPg::create("first").await;
    let dir = TempDir::new("pg");
    let sync = || {
        let mut cmd = adsync(dir.path());
        cmd.args([
            "sync",
            "--simulator",
            "--sim-time-scale",
            "600",
            "--database-url",
            &pg.url,
        ]);
        cmd
    };

    let first = run(&mut sync());
    let second = run(&mut sync());

    assert!(first.status.success(), "{}", all_text(&first));
    assert!(second.status.success(), "{}", all_text(&second));
    let db = Db::open(&pg.url).await.unwrap();
    assert_eq!(db.scalar("SELECT count(*) FROM campaigns").await, 100);
    assert_eq!(
        db.text("SELECT budget::text FROM campaigns WHERE id = 'campaign_1'")
            .await,
        "1100.00"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM sync_runs WHERE platform = 'simulator'")
            .await,
        2
    );
    db.close().await;
}

#[tokio::test]
async fn a_simulator_given_a_password_in_its_environment_accepts_that_one_only() {
    // Harnesses start their simulators with a made-up password (ADSYNC_SIM_PASSWORD) instead
    // of writing the reference one.
    let dir = TempDir::new("sim-password");
    let sim = SimProcess::start_with_env(
        dir.path(),
        &["--time-scale", "600", "--campaigns", "3"],
        &[("ADSYNC_SIM_PASSWORD", "made-up-for-this-test")],
    );

    let reference = run(&mut sim.sync(dir.path()));
    let own = run(sim
        .sync(dir.path())
        .env("AD_PLATFORM_PASSWORD", "made-up-for-this-test"));

    assert_eq!(reference.status.code(), Some(1), "{}", all_text(&reference));
    assert_eq!(own.status.code(), Some(0), "{}", all_text(&own));
}
