//! Inputs the fuzz targets (`fuzz/`, `scripts/fuzz`) once failed on, kept as plain tests.

use std::time::Duration;

use adsync_domain::RateLimit;

/// fuzz/fuzz_targets/rate_limit.rs: `8/.4449` printed as `8/444ms`, and `10/0.5ms` as
/// `10/0ms`, which does not parse (a tenant's stored limit silently became the default).
#[test]
fn a_window_below_the_millisecond_prints_and_parses_back() {
    for text in [
        "8/.4449",
        "10/0.5ms",
        "3/1.0000004s",
        "1/1.9999999s",
        "2/0.0015s",
    ] {
        let limit: RateLimit = text.parse().unwrap();
        assert_eq!(
            limit.to_string().parse::<RateLimit>(),
            Ok(limit),
            "{text} printed as {limit}"
        );
    }
    assert_eq!(
        "8/.4449".parse::<RateLimit>().unwrap().window,
        Duration::from_millis(445)
    );
    assert!("10/0.0004s".parse::<RateLimit>().is_err(), "rounds to zero");
}

/// fuzz/fuzz_targets/rate_limit.rs: `627/7777755555.5509h` printed as a window the f64 no
/// longer held to the millisecond; windows beyond a year are refused.
#[test]
fn a_window_beyond_a_year_is_refused() {
    assert!("627/7777755555.5509h".parse::<RateLimit>().is_err());
    assert!("1/1000000000000000s".parse::<RateLimit>().is_err());
    let year: RateLimit = "1/8760h".parse().unwrap();
    assert_eq!(year.to_string().parse::<RateLimit>(), Ok(year));
}

/// The floor of the longest window saturates rather than overflow when the last call's time
/// is added.
#[test]
fn the_floor_of_the_longest_window_saturates() {
    let limit = RateLimit::new(1, Duration::MAX).unwrap();
    assert_eq!(limit.floor(u64::MAX, Duration::from_secs(2)), Duration::MAX);
}
