//! What a user reads after runs: `adsync runs` (a tenant's history, one run in full) and
//! `adsync dead-letters` (list, dismiss).

mod common;

use common::{TempDir, adsync, all_text, assert_one_line_failure, run, text};

/// A partial run (three dead letters, two warnings) for tenant `default` in `dir`'s
/// ./adsync.db, then a small one for tenant `other`: runs 1 and 2.
fn two_tenants_ran(dir: &TempDir) {
    let default = run(adsync(dir.path()).args([
        "sync",
        "--sim-time-scale",
        "600",
        "--sim-invalid-every",
        "25",
    ]));
    assert_eq!(default.status.code(), Some(2), "{}", all_text(&default));
    let other = run(adsync(dir.path()).args([
        "sync",
        "--tenant",
        "other",
        "--sim-time-scale",
        "600",
        "--sim-campaigns",
        "10",
    ]));
    assert_eq!(other.status.code(), Some(0), "{}", all_text(&other));
}

fn stdout_of(args: &[&str], dir: &TempDir) -> String {
    let o = run(adsync(dir.path()).args(args));
    assert!(o.status.success(), "{args:?}: {}", all_text(&o));
    text(&o).0
}

#[test]
fn runs_lists_the_tenants_runs_with_counters_warnings_duration_floor_drift_and_removed() {
    let dir = TempDir::new("runs");
    two_tenants_ran(&dir);

    let default = stdout_of(&["runs"], &dir);
    let other = stdout_of(&["runs", "--tenant", "other"], &dir);
    let json = stdout_of(&["runs", "--json"], &dir);

    let lines: Vec<_> = default.lines().collect();
    assert_eq!(lines.len(), 2, "header and run 1 only: {default}");
    let header: Vec<_> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "run", "started", "status", "stored", "synced", "dead", "warn", "duration", "/floor",
            "drift", "removed"
        ]
    );
    // started is three words (date, time, UTC) and duration two (number, unit).
    let row: Vec<_> = lines[1].split_whitespace().collect();
    assert_eq!(row.len(), 14, "{default}");
    assert_eq!(row[0], "1");
    assert_eq!(row[3], "UTC");
    assert_eq!(&row[4..9], ["partial", "97", "97", "3", "2"], "{default}");
    assert_eq!(row[10], "s");
    assert!(
        row[11].parse::<f64>().unwrap() > 0.0,
        "duration/floor: {default}"
    );
    assert_eq!(&row[12..], ["0", "0"], "drift and removed: {default}");
    let other_rows: Vec<_> = other.lines().skip(1).collect();
    assert_eq!(other_rows.len(), 1, "{other}");
    assert!(other_rows[0].trim_start().starts_with("2 "), "{other}");
    let runs: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(runs.len(), 1, "{json}");
    assert_eq!(runs[0]["id"], 1);
    assert_eq!(runs[0]["status"], "partial");
    assert_eq!(runs[0]["counters"]["dead_lettered"], 3);
    assert_eq!(runs[0]["counters"]["warnings"], 2);
}

#[test]
fn runs_show_gives_one_run_in_full_and_refuses_another_tenants_run_or_a_missing_one() {
    let dir = TempDir::new("runs-show");
    two_tenants_ran(&dir);

    let shown = stdout_of(&["runs", "show", "1"], &dir);
    let json = stdout_of(&["runs", "show", "1", "--json"], &dir);
    let foreign = run(adsync(dir.path()).args(["runs", "show", "2"]));
    let missing = run(adsync(dir.path()).args(["runs", "show", "999"]));
    let wrong_tenant = run(adsync(dir.path()).args(["runs", "--tenant", "other", "show", "1"]));

    for needle in [
        "1 for tenant \"default\"",
        "partial (exit code 2)",
        "platform   simulator",
        "seen 100 · stored 97 · synced 97 · dead-lettered 3",
        "listing    1 page in 1 pass, complete (platform total 100, 100 per page)",
        "has_more_ignores_total ×1",
        "unknown_status ×1",
        "floor",
    ] {
        assert!(shown.contains(needle), "{needle:?} not in:\n{shown}");
    }
    let run: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(run["id"], 1);
    assert_eq!(run["tenant_id"], "default");
    assert_eq!(run["status"], "partial");
    let mut kinds: Vec<_> = run["warnings_detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["has_more_ignores_total", "unknown_status"]);
    assert_one_line_failure(&foreign, 1, &["tenant \"default\" has no run 2"]);
    assert_one_line_failure(&missing, 1, &["has no run 999"]);
    assert_one_line_failure(&wrong_tenant, 1, &["tenant \"other\" has no run 1"]);
    assert!(text(&foreign).0.is_empty(), "{}", all_text(&foreign));
}

/// The tenant's dead letters as (id, campaign, resolved, resolution).
fn letters(dir: &TempDir, all: bool) -> Vec<(i64, String, bool, Option<String>)> {
    let mut args = vec!["dead-letters", "list", "--json"];
    if all {
        args.push("--all");
    }
    stdout_of(&args, dir)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_i64().unwrap(),
                v["campaign_id"].as_str().unwrap().to_owned(),
                v["resolved"].as_bool().unwrap(),
                v["resolution"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn dismissed_dead_letters_are_resolved_as_dismissed_and_no_longer_listed() {
    let dir = TempDir::new("dismiss");
    two_tenants_ran(&dir);
    let before = letters(&dir, false);
    let (first_id, first_campaign) = (before[0].0, before[0].1.clone());

    let one = stdout_of(&["dead-letters", "dismiss", &first_id.to_string()], &dir);
    let after_one = letters(&dir, false);
    let rest = stdout_of(&["dead-letters", "dismiss", "--all"], &dir);
    let unresolved = stdout_of(&["dead-letters", "list"], &dir);
    let table = stdout_of(&["dead-letters", "list", "--all"], &dir);
    let all = letters(&dir, true);

    assert_eq!(before.len(), 3, "{before:?}");
    assert!(one.contains("dismissed 1 dead letter"), "{one}");
    assert_eq!(after_one.len(), 2, "{after_one:?}");
    assert!(after_one.iter().all(|l| l.1 != first_campaign));
    assert!(rest.contains("dismissed 2 dead letter"), "{rest}");
    assert_eq!(
        unresolved.trim(),
        "no unresolved dead letters for tenant \"default\""
    );
    assert_eq!(
        table.lines().count(),
        4,
        "header and three letters: {table}"
    );
    assert_eq!(table.matches("dismissed").count(), 3, "{table}");
    assert_eq!(all.len(), 3);
    assert!(
        all.iter()
            .all(|l| l.2 && l.3.as_deref() == Some("dismissed")),
        "{all:?}"
    );
}

#[test]
fn runs_show_aligns_every_warning_under_the_first() {
    let dir = TempDir::new("runs-show-align");
    two_tenants_ran(&dir);

    let shown = stdout_of(&["runs", "show", "1"], &dir);

    let lines: Vec<_> = shown.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("warnings "))
        .unwrap();
    let value_column = lines[at].len() - lines[at]["warnings".len()..].trim_start().len();
    let next = lines[at + 1];
    assert!(next.trim_start().starts_with("unknown_status"), "{shown}");
    assert_eq!(
        next.len() - next.trim_start().len(),
        value_column,
        "\n{shown}"
    );
}
