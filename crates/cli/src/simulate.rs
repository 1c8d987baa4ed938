//! `adsync simulate`: the ad platform simulator as a standalone server.

use std::{net::IpAddr, process::ExitCode, time::Duration};

use adsync_domain::RateLimit;
use adsync_sim::{HasMore, Mutation, Profile, SimConfig, Simulator};
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
    /// Also send the Retry-After header on 429 (the reference sends only the body). With a
    /// value, send exactly that text, however absurd ("99999999999", an HTTP date...); write
    /// --retry-after-header=TEXT when TEXT starts with a dash.
    #[arg(long, value_name = "TEXT", num_args = 0..=1, allow_negative_numbers = true, value_parser = header_text)]
    retry_after_header: Option<Option<String>>,
    /// Replace retry_after in 429 bodies with this JSON value: 1e12, -5, '"soon"', null...
    #[arg(long, value_name = "JSON", allow_hyphen_values = true, value_parser = json_value)]
    retry_after_body: Option<serde_json::Value>,
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
    /// What has_more says and what pages past the end hold: honest; reference (page <
    /// ceil(total/10) whatever the limit, invented campaigns fill every page); endless (always
    /// true, empty pages); repeat (always true, the last page again); invent (always true, new
    /// campaigns forever). Default: reference, or honest with --profile calm.
    #[arg(long, value_name = "MODE")]
    has_more: Option<HasMore>,
    /// Leave total out of the pagination object.
    #[arg(long)]
    omit_total: bool,
    /// Hold every /api request a random time up to this (real time, not scaled) before the
    /// platform looks at it: before the token check and the rate-limit window.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    arrival_jitter: Duration,
    /// Write one line per rate-limited request, as the window judged it, to this file
    /// (`unix-seconds client-id endpoint ok|429`; `scripts/bench/arrivals` reads it).
    #[arg(long, value_name = "FILE")]
    arrivals_log: Option<std::path::PathBuf>,
    /// Replace expires_in in token answers with this JSON value: 1e300, -1, '"abc"', 0...
    /// Tokens still expire after --token-ttl.
    #[arg(long, value_name = "JSON", allow_hyphen_values = true, value_parser = json_value)]
    expires_in: Option<serde_json::Value>,
    /// Replace issued_at in token answers with this JSON value.
    #[arg(long, value_name = "JSON", allow_hyphen_values = true, value_parser = json_value)]
    issued_at: Option<serde_json::Value>,
    /// Give every n-th campaign the status archived_v2, unknown to the contract.
    #[arg(long, value_name = "N", value_parser = every_n)]
    unknown_status_every: Option<usize>,
    /// Add fields the contract does not name to every campaign (a nested bid_strategy
    /// object, a labels array).
    #[arg(long)]
    extra_fields: bool,
    /// Answer these listing pages, every time, with 200 {"campaigns": [...], "next": null}.
    #[arg(long, value_name = "PAGES", value_delimiter = ',', value_parser = page_number)]
    wrong_shape_pages: Vec<u64>,
    /// Answer the sync call of every n-th campaign, every time, with 200 {"ok": true}.
    #[arg(long, value_name = "N", value_parser = every_n)]
    wrong_shape_sync_every: Option<usize>,
    /// After AFTER successful listing calls, remove the first REMOVE listed campaigns and
    /// insert INSERT new ones at the front (repeatable), e.g. --mutate 1:5:0.
    #[arg(long, value_name = "AFTER:INSERT:REMOVE")]
    mutate: Vec<Mutation>,
}

fn every_n(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a whole number above 0 (1 means every campaign)"
        )),
    }
}

fn page_number(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a page number (pages start at 1)")),
    }
}

fn json_value(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s)
        .map_err(|e| format!("{s:?} is not JSON ({e}); quote strings, e.g. '\"soon\"'"))
}

/// What an HTTP header value may hold: visible ASCII, spaces, tabs and non-ASCII bytes.
fn header_text(s: &str) -> Result<String, String> {
    if s.bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80)
    {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} cannot be sent as a header: no control characters"
        ))
    }
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
        // The password it accepts (with the reference e-mail): from the environment only, so
        // that a harness starting its own simulator can use a random one and write none;
        // unset, the reference server's.
        if let Ok(password) = std::env::var("ADSYNC_SIM_PASSWORD") {
            c.password = password;
        }
        c.retry_after_header = self.retry_after_header.is_some();
        c.retry_after_header_value = self.retry_after_header.clone().flatten();
        c.retry_after_body = self.retry_after_body.clone();
        if let Some(n) = self.fail_every {
            c.fail_every = (n > 0).then_some(n);
        }
        c.chaos.error = self.error_rate.unwrap_or(c.chaos.error);
        c.chaos.hang = self.hang_rate.unwrap_or(c.chaos.hang);
        c.chaos.reset = self.reset_rate.unwrap_or(c.chaos.reset);
        c.chaos.truncate = self.truncate_rate.unwrap_or(c.chaos.truncate);
        c.invalid_every = self.invalid_every;
        c.has_more = self.has_more.unwrap_or(c.has_more);
        c.omit_total = self.omit_total;
        c.arrival_jitter = self.arrival_jitter;
        c.arrivals_log = self.arrivals_log.clone();
        c.expires_in = self.expires_in.clone();
        c.issued_at = self.issued_at.clone();
        c.unknown_status_every = self.unknown_status_every;
        c.extra_fields = self.extra_fields;
        c.wrong_shape_pages = self.wrong_shape_pages.clone();
        c.wrong_shape_sync_every = self.wrong_shape_sync_every;
        c.mutations = self.mutate.clone();
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
        "adsync simulator listening on {} (profile {}, {} campaigns, has_more {}, rate limit {} per client, time scale {})",
        sim.url(),
        config.profile,
        config.campaigns,
        config.has_more,
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
