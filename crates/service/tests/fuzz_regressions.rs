//! Inputs the fuzz targets (`fuzz/`, `scripts/fuzz`) once failed on, kept as plain tests.

use std::time::{Duration, Instant};

use adsync_service::schedule::Schedule;

/// fuzz/fuzz_targets/schedule.rs: a seconds field of `,` parses as matching no second, and
/// croner's search for the first tick then stepped through a year one second at a time
/// (minutes of CPU inside `POST /api/v1/tenants`).
#[test]
fn a_time_field_that_matches_nothing_is_refused_at_once() {
    let start = Instant::now();
    for cron in [", * * ? * ?", "0 , * * * *", "0 0 , * * *"] {
        let e = Schedule::parse(cron, "UTC").unwrap_err().to_string();
        assert!(
            e.contains("never fires") || e.contains("not a valid"),
            "{cron}: {e}"
        );
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}
