//! How long the platform asks the client to wait: the `Retry-After` header (delay-seconds or
//! an HTTP date) and the error body's `retry_after`, through the client's own readers. A wait
//! is never negative or non-finite and never longer than `max_retry_after`.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use adsync_domain::wire::ErrorBody;
use libfuzzer_sys::fuzz_target;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

fuzz_target!(|data: &[u8]| {
    // [now: 5 bytes of seconds since 1970][max: 2 bytes of seconds][header]\n[error body]
    let Some((now, rest)) = data.split_first_chunk::<5>() else {
        return;
    };
    let Some((max, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let mut now_bytes = [0u8; 8];
    now_bytes[..5].copy_from_slice(now);
    let now = UNIX_EPOCH + Duration::from_secs(u64::from_le_bytes(now_bytes));
    let max = Duration::from_secs(u64::from(u16::from_le_bytes(*max)));
    let (header, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(header) {
        headers.insert(RETRY_AFTER, value);
    }
    if let Some(secs) = adsync_fuzz::header_secs(&headers, now) {
        assert!(secs.is_finite() && secs >= 0.0, "{header:?} -> {secs}");
        let (wait, clamped) = adsync_fuzz::clamp_secs(secs, max);
        assert!(wait <= max);
        if clamped {
            assert_eq!(wait, max, "a clamped wait is the maximum");
        } else {
            assert!((wait.as_secs_f64() - secs).abs() <= 1e-6 * secs.max(1.0));
        }
    }
    let error: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let body_secs = error.retry_after_secs();
    if let Some(s) = body_secs {
        assert!(s.is_finite() && s >= 0.0);
    }
    let wait = adsync_fuzz::rate_limit_wait(&headers, body_secs, Duration::from_secs(60), max);
    assert!(wait <= max, "{wait:?} > {max:?}");
    if let Some(wait) = adsync_fuzz::server_error_wait(&headers, max) {
        assert!(wait <= max);
    }
});
