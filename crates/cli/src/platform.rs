//! The flags that say which platform to talk to and how, shared by `sync` and
//! `dead-letters retry`; and the built-in simulator used when no `--api-url` is given.

use std::{path::PathBuf, time::Duration};

use adsync_client::{AdClient, ClientConfig, Credentials, RetryPolicy};
use adsync_domain::RateLimit;
use adsync_sim::{Profile, SimConfig, Simulator};
use anyhow::{Context, bail};
use clap::Args;
use secrecy::SecretString;
use url::Url;

#[derive(Debug, Args)]
pub struct PlatformArgs {
    /// Base URL of the ad platform. Without it, adsync starts its built-in simulator
    /// in-process (reference behaviour, time scale 60) and says so.
    #[arg(long, env = "AD_PLATFORM_API_URL")]
    pub api_url: Option<Url>,
    /// Sent as X-Client-ID; the platform's rate limit is per client id.
    #[arg(long, env = "AD_PLATFORM_CLIENT_ID", default_value = "adsync")]
    pub client_id: String,
    /// The platform's rate limit for this client id, as N/W (10/60s, 100/1m, ...).
    #[arg(long, env = "ADSYNC_RATE_LIMIT", default_value = "10/60s")]
    pub rate_limit: RateLimit,
    /// Give up on a request after this long (a hang) and retry it.
    #[arg(long, env = "ADSYNC_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Attempts per call for transient failures (503, timeouts, resets, malformed bodies).
    #[arg(long, env = "ADSYNC_MAX_ATTEMPTS", default_value_t = 6)]
    pub max_attempts: usize,
    /// A file with AD_PLATFORM_EMAIL=... and AD_PLATFORM_PASSWORD=... lines. Credentials are
    /// never taken from a flag; without this file they come from those environment variables.
    #[arg(long, env = "ADSYNC_CREDENTIALS_FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Built-in simulator only: campaigns in its data set.
    #[arg(long, env = "ADSYNC_SIM_CAMPAIGNS", default_value_t = 100)]
    pub sim_campaigns: usize,
    /// Built-in simulator only: reference, calm or chaos.
    #[arg(long, env = "ADSYNC_SIM_PROFILE", default_value = "reference")]
    pub sim_profile: String,
    /// Built-in simulator only: every duration divided by this (60: a minute lasts a second).
    #[arg(long, env = "ADSYNC_SIM_TIME_SCALE", default_value_t = 60.0)]
    pub sim_time_scale: f64,
    /// Built-in simulator only: make every n-th campaign invalid (dead-letter demo).
    #[arg(long, env = "ADSYNC_SIM_INVALID_EVERY")]
    pub sim_invalid_every: Option<usize>,
}

/// A client, and the simulator it talks to when none was given (kept alive with it).
pub struct Platform {
    pub client: AdClient,
    pub simulator: Option<Simulator>,
    /// 1.0 against a real platform; the simulator's time scale otherwise.
    pub time_scale: f64,
}

impl PlatformArgs {
    pub async fn connect(&self) -> anyhow::Result<Platform> {
        let (base_url, credentials, simulator, scale) = match &self.api_url {
            Some(url) => {
                let credentials = self.credentials()?.ok_or_else(|| {
                    anyhow::anyhow!(
                        "no credentials for {url}: set AD_PLATFORM_EMAIL and AD_PLATFORM_PASSWORD, or pass --credentials-file"
                    )
                })?;
                (url.clone(), credentials, None, 1.0)
            }
            None => {
                let scale = self.sim_time_scale;
                if !(scale.is_finite() && scale > 0.0) {
                    bail!("--sim-time-scale must be a positive number, got {scale}");
                }
                let profile: Profile = self.sim_profile.parse().map_err(anyhow::Error::msg)?;
                let mut config = SimConfig::for_profile(profile);
                config.campaigns = self.sim_campaigns;
                config.rate_limit = self.rate_limit;
                config.time_scale = scale;
                config.invalid_every = self.sim_invalid_every;
                let sim = Simulator::start_local(config)
                    .await
                    .context("could not start the built-in simulator")?;
                crate::logging::notice(&format!(
                    "no --api-url given: using the built-in simulator at {} ({profile} behaviour, {} campaigns, time scale {scale}); set AD_PLATFORM_API_URL to sync a real platform",
                    sim.url(),
                    self.sim_campaigns
                ));
                // The simulator's test account, unless the user brought credentials (then
                // wrong ones fail as they would against a real platform).
                let credentials = self.credentials()?.unwrap_or_else(simulator_account);
                let url = sim.url().parse().expect("the simulator's URL parses");
                (url, credentials, Some(sim), scale)
            }
        };
        let retry = RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            ..RetryPolicy::default()
        };
        let mut config = client_config(base_url, credentials, self.rate_limit, retry, scale);
        config.client_id = self.client_id.clone();
        config.request_timeout = self.request_timeout;
        let client = AdClient::new(config)?;
        Ok(Platform {
            client,
            simulator,
            time_scale: scale,
        })
    }

    /// From `--credentials-file`, else the environment; `None` when neither has any.
    fn credentials(&self) -> anyhow::Result<Option<Credentials>> {
        let (email, password) = match &self.credentials_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read --credentials-file {}", path.display())
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
                    _ => bail!(
                        "--credentials-file {} must hold AD_PLATFORM_EMAIL=... and AD_PLATFORM_PASSWORD=... lines",
                        path.display()
                    ),
                }
            }
            None => (
                std::env::var("AD_PLATFORM_EMAIL").ok(),
                std::env::var("AD_PLATFORM_PASSWORD").ok(),
            ),
        };
        match (email, password) {
            (Some(email), Some(password)) if !email.is_empty() => Ok(Some(Credentials {
                email,
                password: SecretString::from(password),
            })),
            (None, None) => Ok(None),
            _ => bail!(
                "set both AD_PLATFORM_EMAIL and AD_PLATFORM_PASSWORD (one is missing or empty)"
            ),
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
#[derive(Debug, Args)]
pub struct DbArgs {
    /// postgres://USER@HOST/DB or sqlite://FILE (created if missing).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://adsync.db",
        hide_env_values = true
    )]
    pub database_url: String,
}

impl DbArgs {
    pub async fn connect(&self) -> anyhow::Result<adsync_store::Store> {
        adsync_store::Store::connect(&self.database_url)
            .await
            .map_err(|e| anyhow::anyhow!("{e}; check --database-url (or DATABASE_URL)"))
    }
}
