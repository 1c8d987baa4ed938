//! The flags that say which platform and database to talk to, shared by `sync` and
//! `dead-letters retry`; and the built-in simulator, used only when asked for (`--simulator`)
//! or when neither a platform nor a database is configured (the README's first command), so
//! simulated rows never reach a real database by accident.

use std::{path::PathBuf, time::Duration};

use adsync_client::{AdClient, ClientConfig, Credentials, RetryPolicy};
use adsync_domain::RateLimit;
use adsync_sim::{Profile, SimConfig, Simulator};
use adsync_store::{Store, StoreOptions, redact_url};
use anyhow::Context;
use clap::Args;
use secrecy::SecretString;
use url::Url;

use crate::exit::{Failure, config_error};

/// The default database when none is configured.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://adsync.db";

#[derive(Debug, Args)]
pub struct PlatformArgs {
    /// Base URL of the ad platform. Required once a database is configured (DATABASE_URL or
    /// --database-url), unless --simulator is given.
    #[arg(long, env = "AD_PLATFORM_API_URL", value_parser = http_url)]
    pub api_url: Option<Url>,
    /// Sync from the built-in simulator (in-process, reference behaviour, time scale 60),
    /// even into a configured database. Without any configuration it is used anyway.
    #[arg(long, conflicts_with = "api_url")]
    pub simulator: bool,
    /// Sent as X-Client-ID; the platform's rate limit is per client id.
    #[arg(long, env = "AD_PLATFORM_CLIENT_ID", default_value = "adsync")]
    pub client_id: String,
    /// The platform's rate limit for this client id, as N/W (10/60s, 100/1m, ...).
    #[arg(long, env = "ADSYNC_RATE_LIMIT", default_value = "10/60s")]
    pub rate_limit: RateLimit,
    /// Give up on a request after this long (a hang) and retry it.
    #[arg(long, env = "ADSYNC_REQUEST_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub request_timeout: Duration,
    /// Attempts per call for transient failures (503, timeouts, resets, truncated bodies).
    #[arg(long, env = "ADSYNC_MAX_ATTEMPTS", default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub max_attempts: u16,
    /// Longest wait a platform's 429 may impose (Retry-After header or retry_after body);
    /// longer values are clamped. Default: three rate-limit windows.
    #[arg(long, env = "ADSYNC_MAX_RETRY_AFTER", value_parser = positive_duration)]
    pub max_retry_after: Option<Duration>,
    /// A file with AD_PLATFORM_EMAIL=... and AD_PLATFORM_PASSWORD=... lines. Credentials are
    /// never taken from a flag; without this file they come from those environment variables.
    #[arg(long, env = "ADSYNC_CREDENTIALS_FILE")]
    pub credentials_file: Option<PathBuf>,
    #[command(flatten)]
    pub sim: SimArgs,
}

/// Knobs of the built-in simulator (ignored against a real platform).
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Built-in simulator only: campaigns in its data set.
    #[arg(long, env = "ADSYNC_SIM_CAMPAIGNS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub sim_campaigns: u32,
    /// Built-in simulator only: reference, calm or chaos.
    #[arg(long, env = "ADSYNC_SIM_PROFILE", default_value = "reference", value_parser = profile)]
    pub sim_profile: Profile,
    /// Built-in simulator only: every duration divided by this (60: a minute lasts a second).
    #[arg(long, env = "ADSYNC_SIM_TIME_SCALE", default_value_t = 60.0, value_parser = positive_f64)]
    pub sim_time_scale: f64,
    /// Built-in simulator only: make every n-th campaign invalid (dead-letter demo).
    #[arg(long, env = "ADSYNC_SIM_INVALID_EVERY", value_parser = clap::value_parser!(u32).range(1..))]
    pub sim_invalid_every: Option<u32>,
}

fn http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s)
        .map_err(|e| format!("{s:?} is not a URL ({e}); use e.g. https://ads.example.com"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(format!(
            "{s:?} is not an http(s) URL; use e.g. https://ads.example.com"
        ));
    }
    Ok(url)
}

pub(crate) fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".into()),
        Err(e) => Err(format!("{e} (write e.g. 10s, 500ms, 2m)")),
    }
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

fn profile(s: &str) -> Result<Profile, String> {
    s.parse()
}

/// Where the data will come from, decided before anything is opened.
pub enum Source {
    /// A real platform.
    Platform { url: Url, credentials: Credentials },
    /// The built-in simulator.
    Simulator { credentials: Credentials },
}

impl Source {
    /// The label recorded on runs: the platform's URL (without any userinfo), or `simulator`.
    pub fn label(&self) -> String {
        match self {
            Source::Platform { url, .. } => {
                let mut url = url.clone();
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.to_string()
            }
            Source::Simulator { .. } => "simulator".into(),
        }
    }
}

/// A client, and the simulator it talks to when one is used (kept alive with it).
pub struct Platform {
    pub client: AdClient,
    pub simulator: Option<Simulator>,
    /// 1.0 against a real platform; the simulator's time scale otherwise.
    pub time_scale: f64,
}

impl PlatformArgs {
    /// Decides the source and checks the configuration, with no I/O but reading a
    /// credentials file: a missing variable fails before any database file is created.
    pub fn source(&self, db: &DbArgs) -> Result<Source, Failure> {
        match (&self.api_url, self.simulator, &db.database_url) {
            (Some(url), _, _) => {
                let credentials = self.credentials()?.ok_or_else(|| {
                    config_error(format!(
                        "no credentials for {}: set AD_PLATFORM_EMAIL and AD_PLATFORM_PASSWORD, or pass --credentials-file",
                        Source::Platform { url: url.clone(), credentials: simulator_account() }.label()
                    ))
                })?;
                Ok(Source::Platform {
                    url: url.clone(),
                    credentials,
                })
            }
            (None, false, Some(database)) => Err(config_error(format!(
                "a database is configured ({}) but AD_PLATFORM_API_URL is not: set AD_PLATFORM_API_URL (or --api-url) to the platform to sync, or pass --simulator to sync the built-in simulator into that database",
                redact_url(database)
            ))),
            (None, _, _) => Ok(Source::Simulator {
                // The simulator's test account, unless the user brought credentials (then
                // wrong ones fail as they would against a real platform).
                credentials: self.credentials()?.unwrap_or_else(simulator_account),
            }),
        }
    }

    /// Builds the client (and starts the simulator when the source is the simulator).
    pub async fn connect(&self, source: Source) -> anyhow::Result<Platform> {
        let (base_url, credentials, simulator, scale) = match source {
            Source::Platform { url, credentials } => (url, credentials, None, 1.0),
            Source::Simulator { credentials } => {
                let scale = self.sim.sim_time_scale;
                let profile = self.sim.sim_profile;
                let mut config = SimConfig::for_profile(profile);
                config.campaigns = self.sim.sim_campaigns as usize;
                config.rate_limit = self.rate_limit;
                config.time_scale = scale;
                config.invalid_every = self.sim.sim_invalid_every.map(|n| n as usize);
                let sim = Simulator::start_local(config)
                    .await
                    .context("could not start the built-in simulator")?;
                crate::logging::notice(&format!(
                    "using the built-in simulator at {} ({profile} behaviour, {} campaigns, time scale {scale}); set AD_PLATFORM_API_URL to sync a real platform",
                    sim.url(),
                    self.sim.sim_campaigns
                ));
                let url = sim.url().parse().expect("the simulator's URL parses");
                (url, credentials, Some(sim), scale)
            }
        };
        let retry = RetryPolicy {
            max_attempts: usize::from(self.max_attempts),
            ..RetryPolicy::default()
        };
        let mut config = client_config(base_url, credentials, self.rate_limit, retry, scale);
        config.client_id = self.client_id.clone();
        config.request_timeout = self.request_timeout;
        config.max_retry_after = self.max_retry_after.map(|d| d.div_f64(scale));
        let client = AdClient::new(config)?;
        Ok(Platform {
            client,
            simulator,
            time_scale: scale,
        })
    }

    /// From `--credentials-file`, else the environment; `None` when neither has any.
    fn credentials(&self) -> Result<Option<Credentials>, Failure> {
        let (email, password) = match &self.credentials_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    config_error(format!(
                        "cannot read --credentials-file {}: {e}",
                        path.display()
                    ))
                })?;
                let mut email = None;
                let mut password = None;
                for line in text.lines() {
                    match line.trim().split_once('=') {
                        Some(("AD_PLATFORM_EMAIL", v)) => email = Some(v.trim().to_owned()),
                        Some(("AD_PLATFORM_PASSWORD", v)) => password = Some(v.trim().to_owned()),
                        _ => {}
                    }
                }
                match (email, password) {
                    (Some(e), Some(p)) => (Some(e), Some(p)),
                    _ => {
                        return Err(config_error(format!(
                            "--credentials-file {} must hold AD_PLATFORM_EMAIL=... and AD_PLATFORM_PASSWORD=... lines",
                            path.display()
                        )));
                    }
                }
            }
            None => (
                std::env::var("AD_PLATFORM_EMAIL").ok(),
                std::env::var("AD_PLATFORM_PASSWORD").ok(),
            ),
        };
        match (email, password) {
            (Some(email), Some(password)) if !email.is_empty() && !password.is_empty() => {
                Ok(Some(Credentials {
                    email,
                    password: SecretString::from(password),
                }))
            }
            (None, None) => Ok(None),
            _ => Err(config_error(
                "set both AD_PLATFORM_EMAIL and AD_PLATFORM_PASSWORD (one is missing or empty)",
            )),
        }
    }
}

/// The built-in simulator's test account (only ever used against it).
pub fn simulator_account() -> Credentials {
    Credentials {
        email: adsync_sim::REFERENCE_EMAIL.into(),
        password: SecretString::from(adsync_sim::REFERENCE_PASSWORD),
    }
}

/// A client configuration whose rate limit and retry delays are the platform's divided by
/// `scale`: 1.0 for a real platform, the time scale of a simulator.
pub fn client_config(
    base_url: Url,
    credentials: Credentials,
    rate_limit: RateLimit,
    retry: RetryPolicy,
    scale: f64,
) -> ClientConfig {
    let mut config = ClientConfig::new(base_url, credentials);
    config.rate_limit = rate_limit.scaled(scale);
    config.retry = retry.scaled(scale);
    config
}

/// `--database-url`, shared by every command that touches the database.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// postgres://USER@HOST/DB or sqlite://FILE (created if missing). Default:
    /// sqlite://adsync.db in the current directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Longest a database statement may run (PostgreSQL statement_timeout): a held lock or a
    /// stuck query fails the run (resumable) instead of hanging it.
    #[arg(long, env = "ADSYNC_DB_STATEMENT_TIMEOUT", default_value = "30s", value_parser = positive_duration, global = true)]
    pub db_statement_timeout: Duration,
}

impl DbArgs {
    /// The URL in force.
    pub fn url(&self) -> &str {
        self.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL)
    }

    pub async fn connect(&self) -> Result<Store, Failure> {
        self.connect_pool(StoreOptions::default().max_connections)
            .await
    }

    /// Connects with a pool of `connections`.
    pub async fn connect_pool(&self, connections: u32) -> Result<Store, Failure> {
        let options = StoreOptions {
            statement_timeout: self.db_statement_timeout,
            max_connections: connections.max(1),
        };
        Store::connect_with(self.url(), &options)
            .await
            .map_err(|e| Failure::store(&e, "; check --database-url (or DATABASE_URL)"))
    }
}
