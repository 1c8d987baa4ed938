//! The simulator's knobs and its three profiles.

use std::{str::FromStr, time::Duration};

use adsync_domain::RateLimit;
use serde_json::Value;

/// A preset of behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// The reference mock server: every 5th listing call answers 503, nothing else fails, and
    /// `has_more` is its `page < 10` ([`HasMore::Reference`]).
    #[default]
    Reference,
    /// No failures at all and an honest `has_more`, for benchmarks of the happy path.
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

/// How the listing endpoint computes `has_more`, and what it serves past the end of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HasMore {
    /// `has_more = to < total`; pages past the end are empty.
    #[default]
    Honest,
    /// The reference server's quirk: `has_more = page < ceil(total / 10)` whatever `limit` is,
    /// and every page holds `limit` records, those past the data set invented (with 100
    /// campaigns and `limit=100`, pages 2..10 hold campaign_101 to campaign_1000). The sync
    /// endpoint accepts any `campaign_N`, as the reference does not check ids. (At most 10,000
    /// invented records per page, so that an absurd `limit` cannot exhaust memory.)
    Reference,
    /// `has_more` is always true; pages past the end are empty.
    Endless,
    /// `has_more` is always true; past the end, the last real page is served again.
    Repeat,
    /// `has_more` is always true; every page past the end invents new campaigns, forever,
    /// while `total` keeps saying the data-set size. Their sync calls succeed. (At most 10,000
    /// invented records per page.)
    Invent,
}

impl std::fmt::Display for HasMore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Honest => "honest",
            Self::Reference => "reference",
            Self::Endless => "endless",
            Self::Repeat => "repeat",
            Self::Invent => "invent",
        })
    }
}

impl FromStr for HasMore {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "honest" => Ok(Self::Honest),
            "reference" => Ok(Self::Reference),
            "endless" => Ok(Self::Endless),
            "repeat" => Ok(Self::Repeat),
            "invent" => Ok(Self::Invent),
            other => Err(format!(
                "unknown has_more mode {other:?}: use honest, reference, endless, repeat or invent"
            )),
        }
    }
}

/// A change of the data set while clients page through it, applied once, after the listing
/// endpoint has answered [`Mutation::after_list_calls`] well-formed 200s in total: first the
/// first [`Mutation::remove_front`] listed campaigns disappear, then
/// [`Mutation::insert_front`] new campaigns appear at the front of the listing.
///
/// Written `AFTER:INSERT:REMOVE` (its [`Display`](std::fmt::Display) and [`FromStr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mutation {
    /// Successful listing calls answered before it applies (0: before the first).
    pub after_list_calls: u64,
    /// New campaigns inserted at the front, numbered after the highest number ever used.
    pub insert_front: usize,
    /// Campaigns removed from the front (their sync calls then answer 404).
    pub remove_front: usize,
}

impl std::fmt::Display for Mutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.after_list_calls, self.insert_front, self.remove_front
        )
    }
}

impl FromStr for Mutation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage =
            || format!("{s:?} is not AFTER:INSERT:REMOVE (three whole numbers, e.g. 2:5:3)");
        let mut parts = s.split(':').map(|p| p.trim().parse::<u64>());
        let (Some(Ok(after)), Some(Ok(insert)), Some(Ok(remove)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(usage());
        };
        if insert == 0 && remove == 0 {
            return Err(format!(
                "{s:?} changes nothing: INSERT or REMOVE must be above 0"
            ));
        }
        Ok(Self {
            after_list_calls: after,
            insert_front: usize::try_from(insert).map_err(|_| usage())?,
            remove_front: usize::try_from(remove).map_err(|_| usage())?,
        })
    }
}

/// Everything the simulator can be told. Durations are the platform's (unscaled) figures;
/// [`SimConfig::time_scale`] divides all of them, except [`SimConfig::arrival_jitter`].
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
    /// How `has_more` is computed and what pages past the end hold.
    pub has_more: HasMore,
    /// Leave `total` out of `pagination` entirely.
    pub omit_total: bool,
    /// Every `/api` request first waits a uniform random delay in `[0, arrival_jitter]`, before
    /// the token check and before the rate-limit window stamps its arrival: a platform that
    /// queues requests before it looks at them. Real time: not divided by the time scale.
    pub arrival_jitter: Duration,
    /// Appends a line for every rate-limited request to this file as the window judges it:
    /// `unix-seconds client-id endpoint ok|429`. For benchmarks that want to know when each
    /// request counted (`scripts/bench/arrivals` reads it); `None`: nothing written.
    pub arrivals_log: Option<std::path::PathBuf>,
    /// Replaces the value of `retry_after` in 429 bodies (`1e12`, `-5`, `"soon"`, `null`...).
    pub retry_after_body: Option<Value>,
    /// Sends exactly this `Retry-After` header text on 429 (whatever
    /// [`SimConfig::retry_after_header`] says). Text that is not a valid header value is not
    /// sent (and logged).
    pub retry_after_header_value: Option<String>,
    /// Replaces `expires_in` in `/auth/token` answers. Expiry checks still use `token_ttl`.
    pub expires_in: Option<Value>,
    /// Replaces `issued_at` in `/auth/token` answers. Expiry checks still use `token_ttl`.
    pub issued_at: Option<Value>,
    /// Every n-th campaign (by its number) has the status `archived_v2`. `None` or 0: never.
    pub unknown_status_every: Option<usize>,
    /// Every campaign carries fields the contract does not name: a nested `bid_strategy`
    /// object and a `labels` array.
    pub extra_fields: bool,
    /// Listing these page numbers always answers 200 `{"campaigns": [...], "next": null}`.
    pub wrong_shape_pages: Vec<u64>,
    /// The sync call of every n-th campaign (by its number) always answers 200 `{"ok": true}`.
    /// `None` or 0: never.
    pub wrong_shape_sync_every: Option<usize>,
    /// Changes of the data set, each applied once after so many successful listing calls.
    pub mutations: Vec<Mutation>,
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
            has_more: if profile == Profile::Calm {
                HasMore::Honest
            } else {
                HasMore::Reference
            },
            omit_total: false,
            arrival_jitter: Duration::ZERO,
            arrivals_log: None,
            retry_after_body: None,
            retry_after_header_value: None,
            expires_in: None,
            issued_at: None,
            unknown_status_every: None,
            extra_fields: false,
            wrong_shape_pages: Vec::new(),
            wrong_shape_sync_every: None,
            mutations: Vec::new(),
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
