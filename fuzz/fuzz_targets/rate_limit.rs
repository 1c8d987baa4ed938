//! `RateLimit::from_str` (the CLI's `--rate-limit`, a tenant's `rate_limit`, stored as text
//! and parsed again by `Tenant::limit`). A limit that parses has a positive count and window,
//! prints, and parses back to the same value; its sync floor never panics.
#![no_main]

use std::time::Duration;

use adsync_domain::RateLimit;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (calls, text) = match data.split_first_chunk::<8>() {
        Some((c, rest)) => (u64::from_le_bytes(*c), rest),
        None => (101, data),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(limit) = text.parse::<RateLimit>() else {
        return;
    };
    assert!(limit.requests > 0 && !limit.window.is_zero(), "{text:?}");
    let printed = limit.to_string();
    assert_eq!(
        printed.parse::<RateLimit>(),
        Ok(limit),
        "{text:?} printed as {printed:?}"
    );
    // The service's check of a tenant's limit, on the same text.
    let _ = limit.floor(calls, Duration::from_secs(2));
});
