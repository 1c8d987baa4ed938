//! The simulator's knobs and its three profiles.

use std::{str::FromStr, time::Duration};

use adsync_domain::RateLimit;

/// A preset of behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// The reference mock server: every 5th listing call answers 503, nothing else fails.
    #[default]
    Reference,
    /// No failures at all, for benchmarks of the happy path.
    Calm,
    /// Reference plus random 503s on both endpoints, hangs, connection resets, truncated JSON
    /// and hostile campaign names.
    Chaos,
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Reference => "reference",
            Self::Calm => "calm",
            Self::Chaos => "chaos",
        })
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reference" => Ok(Self::Reference),
            "calm" => Ok(Self::Calm),
            "chaos" => Ok(Self::Chaos),
            other => Err(format!(
                "unknown profile {other:?}: use reference, calm or chaos"
            )),
        }
    }
}

/// Per-request probabilities of each chaos fault, on both rate-limited endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChaosRates {
    /// Answer 503.
    pub error: f64,
    /// Never answer (the connection stays open, no bytes).
    pub hang: f64,
    /// Drop the connection without a complete response.
    pub reset: f64,
    /// Answer 200 with the JSON body cut short.
    pub truncate: f64,
}

impl ChaosRates {
    /// The chaos profile's defaults.
    pub const CHAOS: ChaosRates = ChaosRates {
        error: 0.10,
        hang: 0.05,
        reset: 0.03,
        truncate: 0.03,
    };
}

/// Everything the simulator can be told. Durations are the platform's (unscaled) figures;
/// [`SimConfig::time_scale`] divides all of them.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Campaigns in the data set.
    pub campaigns: usize,
    /// Largest `limit` honoured; larger requests are capped. `None`: no cap (the reference).
    pub max_limit: Option<u64>,
    /// Requests per sliding window, per `X-Client-ID`, on `/api/...`.
    pub rate_limit: RateLimit,
    /// How long a sync call takes.
    pub sync_delay: Duration,
    /// Token lifetime.
    pub token_ttl: Duration,
    /// Divides every duration (window, sync delay, token lifetime, `retry_after`).
    pub time_scale: f64,
    /// Preset behaviours.
    pub profile: Profile,
    /// Seed of the data set and of chaos decisions.
    pub seed: u64,
    /// Also send the `Retry-After` header on 429 (the reference sends only the body).
    pub retry_after_header: bool,
    /// Answer every n-th listing call (counted across clients) with 503. `None`: never.
    pub fail_every: Option<u64>,
    /// Random faults.
    pub chaos: ChaosRates,
    /// Campaign names with quotes, apostrophes, newlines, SQL and non-ASCII text.
    pub hostile_names: bool,
    /// Make every n-th campaign invalid (negative counter, unknown status, NUL in the name...).
    pub invalid_every: Option<usize>,
    /// Accepted e-mail.
    pub email: String,
    /// Accepted password.
    pub password: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::for_profile(Profile::Reference)
    }
}

impl SimConfig {
    /// The defaults of a profile.
    pub fn for_profile(profile: Profile) -> Self {
        let chaos = profile == Profile::Chaos;
        Self {
            campaigns: 100,
            max_limit: None,
            rate_limit: RateLimit::PLATFORM_DEFAULT,
            sync_delay: Duration::from_secs(2),
            token_ttl: Duration::from_secs(3600),
            time_scale: 1.0,
            profile,
            seed: 42,
            retry_after_header: false,
            fail_every: (profile != Profile::Calm).then_some(5),
            chaos: if chaos {
                ChaosRates::CHAOS
            } else {
                ChaosRates::default()
            },
            hostile_names: chaos,
            invalid_every: None,
            email: crate::REFERENCE_EMAIL.into(),
            password: crate::REFERENCE_PASSWORD.into(),
        }
    }

    /// A duration of the platform, divided by the time scale.
    pub fn scaled(&self, d: Duration) -> Duration {
        d.div_f64(self.time_scale.max(1e-9))
    }

    /// The rate limit a client must be configured with to match this simulator.
    pub fn effective_rate_limit(&self) -> RateLimit {
        self.rate_limit.scaled(self.time_scale)
    }
}
