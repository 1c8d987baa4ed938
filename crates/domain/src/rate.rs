//! The platform's rate limit, `N` requests per sliding window `W`, and the floor it puts on
//! how fast a full sync can possibly go.

use std::{fmt, str::FromStr, time::Duration};

/// `N` requests per sliding window `W`, written `N/W` (`10/60s`, `10/1m`, `100/500ms`; a bare
/// number of seconds such as `10/60` is accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed in any window.
    pub requests: u32,
    /// Length of the sliding window.
    pub window: Duration,
}

/// Why a `N/W` string is not a rate limit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateLimitParseError {
    /// The string has no `/` between the count and the window.
    #[error("expected N/W such as 10/60s, got {0:?}")]
    Shape(String),
    /// The count is not a positive integer.
    #[error("the request count in {0:?} must be a positive integer")]
    Count(String),
    /// The window is not a positive duration of at most a year.
    #[error(
        "the window in {0:?} must be a positive duration such as 60s, 1m or 500ms (at most a year)"
    )]
    Window(String),
}

impl RateLimit {
    /// The platform's documented default: 10 requests per 60 s.
    pub const PLATFORM_DEFAULT: RateLimit = RateLimit {
        requests: 10,
        window: Duration::from_secs(60),
    };

    /// Builds a limit; `requests` and `window` must be non-zero.
    pub fn new(requests: u32, window: Duration) -> Option<Self> {
        (requests > 0 && !window.is_zero()).then_some(Self { requests, window })
    }

    /// The same limit with every duration divided by `factor` (a simulator's time scale).
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            requests: self.requests,
            window: self.window.div_f64(factor.max(f64::MIN_POSITIVE)),
        }
    }

    /// The least wall time a sync of `rate_limited_calls` calls can take under this limit when
    /// the last call itself takes `last_call`: the first `N` go at once, then `N` per window.
    /// This is the contract's `ceil((R - N) / N) * W + last_call`.
    pub fn floor(&self, rate_limited_calls: u64, last_call: Duration) -> Duration {
        let n = u64::from(self.requests);
        let windows = rate_limited_calls.saturating_sub(n).div_ceil(n);
        self.window
            .saturating_mul(u32::try_from(windows).unwrap_or(u32::MAX))
            .saturating_add(last_call)
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::PLATFORM_DEFAULT
    }
}

impl FromStr for RateLimit {
    type Err = RateLimitParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, window) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| RateLimitParseError::Shape(s.to_owned()))?;
        let requests: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| RateLimitParseError::Count(s.to_owned()))?;
        let window = parse_duration(window.trim())
            .filter(|w| !w.is_zero())
            .ok_or_else(|| RateLimitParseError::Window(s.to_owned()))?;
        Ok(Self { requests, window })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.window;
        if w.subsec_nanos() == 0 {
            write!(f, "{}/{}s", self.requests, w.as_secs())
        } else {
            write!(f, "{}/{}ms", self.requests, w.as_millis())
        }
    }
}

/// The longest window accepted: a year.
const MAX_WINDOW_SECS: f64 = 365.0 * 86_400.0;

/// Parses `60`, `60s`, `1.5s`, `500ms`, `1m`, `1h`, rounded to the millisecond: `Display`
/// prints whole milliseconds, and what it prints must parse back to the same limit.
// A four-unit parser is shorter than pulling humantime into a crate that has no I/O, and
// humantime rejects the bare `10/60` form the platform's own docs use.
fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.trim().parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    // Beyond a year a window means nothing, and the f64 would no longer hold it to the
    // millisecond (found by fuzzing: `7777755555.5509h` printed as a different window).
    if secs > MAX_WINDOW_SECS {
        return None;
    }
    let d = Duration::try_from_secs_f64(secs).ok()?;
    let millis = (d.subsec_nanos() + 500_000) / 1_000_000;
    Duration::from_secs(d.as_secs()).checked_add(Duration::from_millis(u64::from(millis)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_people_write() {
        assert_eq!("10/60s".parse(), Ok(RateLimit::PLATFORM_DEFAULT));
        assert_eq!("10/60".parse(), Ok(RateLimit::PLATFORM_DEFAULT));
        assert_eq!("10/1m".parse(), Ok(RateLimit::PLATFORM_DEFAULT));
        assert_eq!(
            "5/500ms".parse(),
            Ok(RateLimit::new(5, Duration::from_millis(500)).unwrap())
        );
    }

    #[test]
    fn rejects_malformed_limits_with_a_reason() {
        assert!(matches!(
            "10".parse::<RateLimit>(),
            Err(RateLimitParseError::Shape(_))
        ));
        assert!(matches!(
            "0/60s".parse::<RateLimit>(),
            Err(RateLimitParseError::Count(_))
        ));
        assert!(matches!(
            "x/60s".parse::<RateLimit>(),
            Err(RateLimitParseError::Count(_))
        ));
        assert!(matches!(
            "10/0s".parse::<RateLimit>(),
            Err(RateLimitParseError::Window(_))
        ));
        assert!(matches!(
            "10/6y".parse::<RateLimit>(),
            Err(RateLimitParseError::Window(_))
        ));
    }

    #[test]
    fn displays_round_trip() {
        for s in ["10/60s", "5/500ms"] {
            assert_eq!(s.parse::<RateLimit>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn floor_matches_the_contract() {
        // 100 campaigns in one page of 100: R = 101 calls. The 101st call is the first of the
        // eleventh batch of ten, so it starts after ceil(91 / 10) = 10 windows.
        let l = RateLimit::PLATFORM_DEFAULT;
        assert_eq!(
            l.floor(101, Duration::from_secs(2)),
            Duration::from_secs(602)
        );
        assert_eq!(l.floor(10, Duration::from_secs(2)), Duration::from_secs(2));
        assert_eq!(
            l.floor(110, Duration::from_secs(2)),
            Duration::from_secs(602)
        );
    }
}
