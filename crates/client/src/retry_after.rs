//! How long the server asks us to wait, read defensively: the `Retry-After` header
//! (delay-seconds or an HTTP date), else the body's `retry_after`, else a default. Whatever
//! the source, the wait is clamped: a server that says `1e12` or a date in the year 9999 must
//! not stall a sync for years, and one that says `-5`, `NaN` or `soon` is simply not heard.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::error::bounded;

/// Where a wait came from, for the clamp warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Header,
    Body,
    Default,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Header => "Retry-After header",
            Source::Body => "retry_after in the body",
            Source::Default => "default",
        }
    }
}

/// The header as seconds from `now`: a finite, non-negative number, or an HTTP date (a past
/// date is 0). Anything else (negative, `NaN`, `inf`, text, a date httpdate cannot read) is
/// `None`, so the caller falls through to the next source.
pub(crate) fn header_secs(headers: &HeaderMap, now: SystemTime) -> Option<f64> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).map_or(0.0, |d| d.as_secs_f64()))
}

/// `secs` as a duration no longer than `max`, and whether it had to be cut. `secs` is finite
/// and non-negative (see [`header_secs`]); a value beyond what a `Duration` holds is clamped
/// like any other large one.
pub(crate) fn clamp_secs(secs: f64, max: Duration) -> (Duration, bool) {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= max => (d, false),
        _ => (max, true),
    }
}

/// The wait a 429 imposes: header, else body, else `default`; clamped to `max`, with a
/// warning when the server asked for more.
pub(crate) fn rate_limit_wait(
    headers: &HeaderMap,
    body_secs: Option<f64>,
    default: Duration,
    max: Duration,
) -> Duration {
    let (secs, source) = match header_secs(headers, SystemTime::now()) {
        Some(s) => (s, Source::Header),
        None => match body_secs {
            Some(s) => (s, Source::Body),
            None => (default.as_secs_f64(), Source::Default),
        },
    };
    clamp_logged(secs, source, headers, max)
}

/// The wait a 5xx's `Retry-After` header imposes, if it sent a usable one; clamped to `max`.
pub(crate) fn server_error_wait(headers: &HeaderMap, max: Duration) -> Option<Duration> {
    let secs = header_secs(headers, SystemTime::now())?;
    Some(clamp_logged(secs, Source::Header, headers, max))
}

fn clamp_logged(secs: f64, source: Source, headers: &HeaderMap, max: Duration) -> Duration {
    let (wait, clamped) = clamp_secs(secs, max);
    if clamped {
        let header = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(|v| bounded(v, 64));
        tracing::warn!(
            source = source.label(),
            asked_s = secs,
            header = header.as_deref().unwrap_or("-"),
            clamped_to_ms = wait.as_millis() as u64,
            "the ad platform asked for an absurd wait; clamping it to max_retry_after"
        );
    }
    wait
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    const MAX: Duration = Duration::from_secs(180);

    #[test]
    fn delay_seconds_and_dates_are_read() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(header_secs(&headers("120"), now), Some(120.0));
        assert_eq!(header_secs(&headers(" 1.5 "), now), Some(1.5));
        assert_eq!(
            header_secs(&headers("Wed, 21 Oct 2015 07:29:00 GMT"), now),
            Some(60.0)
        );
        // A past date means now.
        assert_eq!(
            header_secs(&headers("Wed, 21 Oct 2015 07:00:00 GMT"), now),
            Some(0.0)
        );
    }

    #[test]
    fn negative_nan_infinite_and_unreadable_headers_are_ignored() {
        let now = SystemTime::now();
        for bad in ["-5", "NaN", "inf", "-inf", "soon", "", "Thu, 99 Foo 2015"] {
            assert_eq!(header_secs(&headers(bad), now), None, "{bad:?}");
        }
        assert_eq!(header_secs(&HeaderMap::new(), now), None);
    }

    #[test]
    fn absurd_waits_are_clamped_never_a_panic() {
        assert_eq!(clamp_secs(1e12, MAX), (MAX, true));
        assert_eq!(clamp_secs(1e300, MAX), (MAX, true));
        assert_eq!(clamp_secs(f64::MAX, MAX), (MAX, true));
        assert_eq!(clamp_secs(2.5, MAX), (Duration::from_millis(2500), false));
        let far = headers("Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(rate_limit_wait(&far, None, Duration::ZERO, MAX), MAX);
        assert_eq!(server_error_wait(&far, MAX), Some(MAX));
    }

    #[test]
    fn the_header_wins_then_the_body_then_the_default() {
        let window = Duration::from_secs(60);
        let none = HeaderMap::new();
        assert_eq!(
            rate_limit_wait(&headers("3"), Some(60.0), window, MAX),
            Duration::from_secs(3)
        );
        // An unusable header falls through to the body, an absent body to the default.
        assert_eq!(
            rate_limit_wait(&headers("-5"), Some(7.0), window, MAX),
            Duration::from_secs(7)
        );
        assert_eq!(rate_limit_wait(&headers("soon"), None, window, MAX), window);
        assert_eq!(rate_limit_wait(&none, Some(1e12), window, MAX), MAX);
        assert_eq!(
            rate_limit_wait(&none, None, window, Duration::from_secs(1)),
            Duration::from_secs(1),
            "even the default is clamped"
        );
        assert_eq!(server_error_wait(&none, MAX), None);
    }
}
