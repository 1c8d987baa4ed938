//! `adsync simulate`: the ad platform simulator as a standalone server.

use std::{net::IpAddr, process::ExitCode, time::Duration};

use adsync_domain::RateLimit;
use adsync_sim::{Profile, SimConfig, Simulator};
use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Port to listen on; 0 picks a free one (the bound address is printed).
    #[arg(long, default_value_t = 3001)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Preset behaviour: reference (the original mock), calm (no faults) or chaos.
    #[arg(long, default_value = "reference", value_parser = clap::value_parser!(String))]
    profile: String,
    /// Campaigns in the data set.
    #[arg(long, default_value_t = 100)]
    campaigns: usize,
    /// Cap on the `limit` query parameter (the reference has none).
    #[arg(long)]
    max_limit: Option<u64>,
    /// Requests per sliding window per X-Client-ID, as N/W (before --time-scale).
    #[arg(long, default_value = "10/60s")]
    rate_limit: RateLimit,
    /// How long a sync call takes (before --time-scale).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    sync_delay: Duration,
    /// Token lifetime (before --time-scale).
    #[arg(long, default_value = "3600s", value_parser = humantime::parse_duration)]
    token_ttl: Duration,
    /// Divide every duration by this factor (60 runs a 10-minute sync in 10 s).
    #[arg(long, default_value_t = 1.0, value_parser = positive_f64)]
    time_scale: f64,
    /// Seed of the data set and of chaos decisions.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also send the Retry-After header on 429 (the reference sends only the body).
    #[arg(long)]
    retry_after_header: bool,
    /// Answer every n-th listing call with 503, counted across clients (0: never).
    /// Default: 5, or 0 with --profile calm.
    #[arg(long)]
    fail_every: Option<u64>,
    /// Chaos: probability of a random 503 per rate-limited request.
    #[arg(long, value_parser = probability)]
    error_rate: Option<f64>,
    /// Chaos: probability that a request never gets an answer.
    #[arg(long, value_parser = probability)]
    hang_rate: Option<f64>,
    /// Chaos: probability that the connection is dropped mid-response.
    #[arg(long, value_parser = probability)]
    reset_rate: Option<f64>,
    /// Chaos: probability of a 200 whose JSON body is cut short.
    #[arg(long, value_parser = probability)]
    truncate_rate: Option<f64>,
    /// Make every n-th campaign invalid (for dead-letter demos).
    #[arg(long)]
    invalid_every: Option<usize>,
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a probability between 0 and 1")),
    }
}

impl SimulateArgs {
    fn config(&self) -> anyhow::Result<SimConfig> {
        let profile: Profile = self.profile.parse().map_err(anyhow::Error::msg)?;
        let mut c = SimConfig::for_profile(profile);
        c.campaigns = self.campaigns;
        c.max_limit = self.max_limit;
        c.rate_limit = self.rate_limit;
        c.sync_delay = self.sync_delay;
        c.token_ttl = self.token_ttl;
        c.time_scale = self.time_scale;
        c.seed = self.seed;
        c.retry_after_header = self.retry_after_header;
        if let Some(n) = self.fail_every {
            c.fail_every = (n > 0).then_some(n);
        }
        c.chaos.error = self.error_rate.unwrap_or(c.chaos.error);
        c.chaos.hang = self.hang_rate.unwrap_or(c.chaos.hang);
        c.chaos.reset = self.reset_rate.unwrap_or(c.chaos.reset);
        c.chaos.truncate = self.truncate_rate.unwrap_or(c.chaos.truncate);
        c.invalid_every = self.invalid_every;
        Ok(c)
    }
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let addr = (args.host, args.port).into();
    let sim = Simulator::start(config.clone(), addr)
        .await
        .with_context(|| {
            format!("cannot listen on {addr}: pick another --port, or 0 for any free port")
        })?;
    println!(
        "adsync simulator listening on {} (profile {}, {} campaigns, rate limit {} per client, time scale {})",
        sim.url(),
        config.profile,
        config.campaigns,
        config.effective_rate_limit(),
        config.time_scale
    );
    tracing::info!(stats = %format!("{}/__sim/stats", sim.url()), "press Ctrl-C to stop");
    tokio::select! {
        r = sim.wait() => r.context("simulator stopped")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}
