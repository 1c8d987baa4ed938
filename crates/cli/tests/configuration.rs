//! Configuration the binary refuses before it touches anything: a database without a platform,
//! contradictory or out-of-range flags, missing credentials; each in one line with exit code
//! 1, and `--summary-json` written even then.

mod common;

use common::{Db, ScratchPg, TempDir, adsync, all_text, assert_one_line_failure, run, user_lines};

#[test]
fn a_database_url_from_the_environment_without_a_platform_is_refused_before_the_sqlite_file_is_created()
 {
    let dir = TempDir::new("db-no-platform");
    let named = dir.join("named.db");

    let o = run(adsync(dir.path())
        .arg("sync")
        .env("DATABASE_URL", format!("sqlite://{}", named.display())));

    assert_one_line_failure(&o, 1, &["AD_PLATFORM_API_URL", "--simulator"]);
    assert!(!named.exists(), "the database it names was created");
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[tokio::test]
async fn a_database_url_without_a_platform_writes_nothing_to_postgres_and_works_with_simulator() {
    let pg = ScratchPg::create("noplatform").await;
    let dir = TempDir::new("pg-no-platform");
    let sync = |extra: &[&str]| {
        let mut cmd = adsync(dir.path());
        cmd.arg("sync")
            .args(extra)
            .env("DATABASE_URL", &pg.url)
            .env("ADSYNC_SIM_TIME_SCALE", "600");
        cmd
    };

    let unmigrated = run(&mut sync(&[]));
    let db = Db::open(&pg.url).await.unwrap();
    let tables_after_refusal = db
        .scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        .await;
    let migrate = run(adsync(dir.path())
        .args(["migrate"])
        .env("DATABASE_URL", &pg.url));
    let migrated = run(&mut sync(&[]));
    let runs_after_refusal = db.scalar("SELECT count(*) FROM sync_runs").await;
    let simulator = run(&mut sync(&["--simulator"]));

    assert_one_line_failure(&unmigrated, 1, &["AD_PLATFORM_API_URL", "--simulator"]);
    assert_eq!(tables_after_refusal, 0, "not even the migrations ran");
    assert!(migrate.status.success(), "{}", all_text(&migrate));
    assert_one_line_failure(&migrated, 1, &["AD_PLATFORM_API_URL"]);
    assert_eq!(runs_after_refusal, 0);
    assert_eq!(simulator.status.code(), Some(0), "{}", all_text(&simulator));
    assert_eq!(db.scalar("SELECT count(*) FROM campaigns").await, 100);
    assert_eq!(
        db.scalar("SELECT count(*) FROM sync_runs WHERE platform = 'simulator'")
            .await,
        1
    );
    db.close().await;
}

#[test]
fn an_api_url_together_with_simulator_is_refused_from_a_flag_or_the_environment() {
    let dir = TempDir::new("url-and-sim");

    let flag =
        run(adsync(dir.path()).args(["sync", "--simulator", "--api-url", "http://127.0.0.1:9"]));
    let env = run(adsync(dir.path())
        .args(["sync", "--simulator"])
        .env("AD_PLATFORM_API_URL", "http://127.0.0.1:9"));

    assert_one_line_failure(&flag, 1, &["--simulator", "--api-url"]);
    assert_one_line_failure(&env, 1, &["--simulator", "--api-url"]);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn every_out_of_range_flag_is_refused_in_one_line_naming_it_before_anything_is_created() {
    let dir = TempDir::new("ranges");
    let cases: [(&[&str], &str); 9] = [
        (&["--sync-concurrency", "0"], "--sync-concurrency"),
        (&["--max-attempts", "0"], "--max-attempts"),
        (&["--request-timeout", "0s"], "--request-timeout"),
        (&["--page-size", "0"], "--page-size"),
        (&["--lease-timeout", "0s"], "--lease-timeout"),
        (&["--rate-limit", "0/60s"], "--rate-limit"),
        (&["--sim-time-scale=-1"], "--sim-time-scale"),
        // Read as an unknown flag -1: clap cannot tell which option it was meant for.
        (&["--sim-time-scale", "-1"], "'-1'"),
        (&["--max-pages", "0"], "--max-pages"),
    ];

    let outputs: Vec<_> = cases
        .iter()
        .map(|(args, _)| run(adsync(dir.path()).arg("sync").args(*args)))
        .collect();

    for ((args, needle), o) in cases.iter().zip(&outputs) {
        let line = assert_one_line_failure(o, 1, &[needle]);
        assert!(line.contains("adsync --help"), "{args:?}: {line}");
    }
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn malformed_values_get_one_line_and_exit_1() {
    let dir = TempDir::new("malformed");

    let rate = run(adsync(dir.path()).args(["sync", "--rate-limit", "ten"]));
    let url = run(adsync(dir.path()).args(["sync", "--api-url", "not a url"]));
    let scheme = run(adsync(dir.path()).args(["sync", "--api-url", "ftp://ads.example.com"]));
    let database =
        run(adsync(dir.path()).args(["sync", "--simulator", "--database-url", "mysql://x"]));

    assert_one_line_failure(&rate, 1, &["--rate-limit", "expected N/W such as 10/60s"]);
    assert_one_line_failure(&url, 1, &["--api-url"]);
    assert_one_line_failure(&scheme, 1, &["--api-url", "http"]);
    assert_one_line_failure(&database, 1, &["unsupported database URL", "sqlite://"]);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn an_api_url_without_credentials_says_how_to_give_them() {
    let dir = TempDir::new("nocreds");

    let none = run(adsync(dir.path()).args(["sync", "--api-url", "http://127.0.0.1:9"]));
    let half = run(adsync(dir.path())
        .args(["sync", "--api-url", "http://127.0.0.1:9"])
        .env("AD_PLATFORM_EMAIL", "a@b.c"));
    let file = run(adsync(dir.path()).args([
        "sync",
        "--api-url",
        "http://127.0.0.1:9",
        "--credentials-file",
        "missing.env",
    ]));

    assert_one_line_failure(&none, 1, &["AD_PLATFORM_EMAIL", "--credentials-file"]);
    assert_one_line_failure(&half, 1, &["AD_PLATFORM_PASSWORD"]);
    assert_one_line_failure(&file, 1, &["--credentials-file", "missing.env"]);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn summary_json_is_written_when_the_run_cannot_start_and_no_database_is_created() {
    let dir = TempDir::new("summary-not-started");

    let o = run(adsync(dir.path())
        .args([
            "sync",
            "--api-url",
            "http://127.0.0.1:9",
            "--summary-json",
            "s.json",
        ])
        .env("AD_PLATFORM_EMAIL", "a@b.c"));

    assert_one_line_failure(&o, 1, &["AD_PLATFORM_PASSWORD"]);
    let summary = dir.json("s.json");
    assert_eq!(summary["status"], "not_started", "{summary}");
    assert_eq!(summary["outcome"], "failed", "{summary}");
    assert_eq!(summary["exit_code"], 1, "{summary}");
    assert_eq!(summary["tenant"], "default", "{summary}");
    let error = summary["error"].as_str().unwrap();
    assert!(error.contains("AD_PLATFORM_PASSWORD"), "{summary}");
    assert_eq!(
        user_lines(&common::text(&o).1),
        [format!("adsync: {error}")],
        "the file holds the line the user saw"
    );
    assert_eq!(dir.files(), ["s.json"], "no database file");
}

#[test]
fn a_missing_argument_is_named_in_the_one_line() {
    let dir = TempDir::new("missing-arg");

    let dismiss = run(adsync(dir.path()).args(["dead-letters", "dismiss"]));
    let show = run(adsync(dir.path()).args(["runs", "show"]));

    assert_one_line_failure(&dismiss, 1, &["<IDS>"]);
    assert_one_line_failure(&show, 1, &["<ID>"]);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn adsync_with_no_command_says_which_commands_there_are() {
    let dir = TempDir::new("no-command");

    let o = run(&mut adsync(dir.path()));

    assert_eq!(o.status.code(), Some(1), "{}", all_text(&o));
    let all = all_text(&o);
    for command in ["sync", "migrate", "runs", "dead-letters", "simulate"] {
        assert!(
            all.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .any(|w| w == command),
            "{command} not named: {all}"
        );
    }
}
