//! `adsync bench`: the benchmarks behind BENCHMARKS.md, rerunnable by anyone.
//!
//! - `sync`: full syncs against the in-process simulator (reference behaviour); wall time
//!   against the rate-limit floor, 429s, and the process's peak RSS.
//! - `store`: upsert throughput of the repository, PostgreSQL or SQLite.

use std::{process::ExitCode, time::Duration};

use adsync_client::{AdClient, RetryPolicy};
use adsync_domain::{Campaign, Money, RateLimit};
use adsync_sim::{Profile, SimConfig, Simulator};
use adsync_store::{ListingCursor, NewRun, PageBatch, RunEnd, RunEnding, RunStatus, Store};
use adsync_sync::{BreakerConfig, SyncConfig, SyncEngine};
use chrono::Utc;
use clap::{Args, Subcommand};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Full syncs against the built-in simulator: duration / rate-limit floor, 429s, peak RSS.
    Sync {
        /// Campaign counts to sync, one run each (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "100,1000")]
        campaigns: Vec<usize>,
        /// Simulator time scale (60: the 10/60s window lasts one second).
        #[arg(long, default_value_t = 60.0)]
        time_scale: f64,
        /// The platform's rate limit (before scaling).
        #[arg(long, default_value = "10/60s")]
        rate_limit: RateLimit,
        /// Page size asked for.
        #[arg(long, default_value_t = 100)]
        page_size: u64,
        /// Real (unscaled) delay of up to this much before the simulator counts a request in
        /// its rate window: a server that stamps arrivals late.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        arrival_jitter: std::time::Duration,
        /// Database for the runs; default: a fresh SQLite file in a temporary directory.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Upsert throughput: ROWS campaigns in pages of BATCH, inserted then updated.
    Store {
        /// Database (postgres://... or sqlite://...). Use a scratch database: the bench
        /// writes under tenant "bench-<pid>" and deletes nothing.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// Campaigns to upsert.
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
        /// Campaigns per page (one transaction each).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Concurrent writers, each its own tenant with ROWS / WRITERS campaigns (as when
        /// several tenants sync at once).
        #[arg(long, default_value_t = 1)]
        writers: usize,
    },
    /// Many tenants at once through the service (queue, worker, shared budgets, API under
    /// load): time until every run ended against one tenant's floor, 429s, API latency,
    /// peak RSS.
    Service(crate::bench_service::ServiceBenchArgs),
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BenchCommand::Service(args) => crate::bench_service::run(args).await,
        BenchCommand::Sync {
            campaigns,
            time_scale,
            rate_limit,
            page_size,
            arrival_jitter,
            database_url,
        } => {
            println!(
                "| campaigns | page size | window | jitter | calls | duration | floor | duration/floor | 429s | retries | peak RSS |"
            );
            println!(
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            );
            for n in campaigns {
                let run = SyncBench {
                    campaigns: n,
                    scale: time_scale,
                    rate_limit,
                    page_size,
                    arrival_jitter,
                };
                run.run(database_url.as_deref()).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Store {
            database_url,
            rows,
            batch,
            writers,
        } => bench_store(&database_url, rows, batch.max(1), writers.max(1)).await,
    }
}

/// One sync benchmark: a fresh run against the in-process simulator (reference behaviour).
struct SyncBench {
    campaigns: usize,
    scale: f64,
    rate_limit: RateLimit,
    page_size: u64,
    arrival_jitter: std::time::Duration,
}

impl SyncBench {
    async fn run(&self, database_url: Option<&str>) -> anyhow::Result<()> {
        let n = self.campaigns;
        let dir = std::env::temp_dir().join(format!("adsync-bench-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let url = database_url
            .map(str::to_owned)
            .unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.display()));
        let store = Store::connect(&url).await?;
        let sim = Simulator::start_local(SimConfig {
            campaigns: n,
            rate_limit: self.rate_limit,
            time_scale: self.scale,
            arrival_jitter: self.arrival_jitter,
            ..SimConfig::for_profile(Profile::Reference)
        })
        .await?;
        let client = AdClient::new(crate::platform::client_config(
            sim.url().parse()?,
            crate::platform::simulator_account(),
            self.rate_limit,
            RetryPolicy::default(),
            self.scale,
        ))?;
        let window = client.config().rate_limit.window;
        let engine = SyncEngine::new(
            client,
            store.clone(),
            SyncConfig {
                tenant: format!("bench-{}-{n}", std::process::id()),
                page_size: self.page_size,
                fresh: true,
                breaker: BreakerConfig::default().scaled(self.scale),
                ..SyncConfig::default()
            },
        );
        let report = engine.run(CancellationToken::new()).await?;
        anyhow::ensure!(
            report.status == RunStatus::Succeeded,
            "bench run ended {}: {:?}",
            report.status,
            report.error
        );
        let calls = report.counters.pages + report.counters.campaigns_synced;
        println!(
            "| {n} | {} | {:.0} ms | {} ms | {calls} | {:.2} s | {} | {} | {} | {} | {} |",
            self.page_size,
            window.as_secs_f64() * 1e3,
            self.arrival_jitter.as_millis(),
            report.duration.as_secs_f64(),
            report
                .floor
                .map_or_else(|| "-".into(), |f| format!("{:.2} s", f.as_secs_f64())),
            report
                .floor_ratio
                .map_or_else(|| "-".into(), |r| format!("{r:.3}")),
            report.client.rate_limited,
            report.client.retries,
            peak_rss().map_or("n/a".into(), |kb| format!("{:.1} MB", kb as f64 / 1024.0)),
        );
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}

/// The process's peak resident set size in KiB (`VmHWM`), on Linux.
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A campaign as the platform would send it, raw JSON included (the store writes it too).
fn synthetic(n: usize, pass: i64) -> Campaign {
    let budget_cents = 100_000 + n as i64 * 37;
    let record = serde_json::json!({
        "id": format!("campaign_{n}"),
        "name": format!("Campaign {n} — «ünïcødé» 'quoted'"),
        "status": "active",
        "budget": serde_json::Number::from_string_unchecked(
            Money::from_cents(budget_cents).expect("valid money").to_string()
        ),
        "impressions": 1000 * pass + n as i64,
        "clicks": 10 * pass + (n % 500) as i64,
        "conversions": pass + (n % 50) as i64,
        "created_at": Utc::now().to_rfc3339(),
    });
    Campaign::from_json(&record).expect("a valid synthetic campaign")
}

async fn bench_store(
    url: &str,
    rows: usize,
    batch: usize,
    writers: usize,
) -> anyhow::Result<ExitCode> {
    let store = Store::connect(url).await?;
    println!(
        "store bench: {} ({}), {rows} campaigns in pages of {batch}, {writers} writer(s)",
        adsync_store::redact_url(url),
        store.kind()
    );
    let per_writer = rows / writers;
    for (pass, label) in [(1, "insert"), (2, "update")] {
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move { store_pages(&store, w, per_writer, batch, pass).await })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        let took = started.elapsed();
        let total = per_writer * writers;
        println!(
            "  {label}: {total} rows in {:.2} s = {:.0} rows/s (each: campaign upsert + metrics row, checkpoint included)",
            took.as_secs_f64(),
            total as f64 / took.as_secs_f64().max(f64::EPSILON)
        );
    }
    for w in 0..writers {
        let stored = store.campaign_count(&bench_tenant(w)).await?;
        anyhow::ensure!(
            stored == per_writer as i64,
            "expected {per_writer} rows, found {stored}"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_tenant(writer: usize) -> String {
    format!("bench-{}-{writer}", std::process::id())
}

/// One writer's pass: a run, its pages stored one transaction each, the run finished.
async fn store_pages(
    store: &Store,
    writer: usize,
    rows: usize,
    batch: usize,
    pass: i64,
) -> anyhow::Result<()> {
    let tenant = bench_tenant(writer);
    let owner = adsync_sync::this_process();
    let new = NewRun {
        tenant: &tenant,
        page_size: batch as u64,
        platform: "bench",
        owner: &owner,
    };
    let (_, lease) = store.create_run(new, Duration::from_secs(600)).await?;
    let pages: Vec<Vec<Campaign>> = (0..rows)
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(|c| c.iter().map(|n| synthetic(*n, pass)).collect())
        .collect();
    for (i, page) in pages.iter().enumerate() {
        let last = i + 1 == pages.len();
        let ids: Vec<&str> = page.iter().map(|c| c.id.as_str()).collect();
        let cursor = ListingCursor {
            next_page: i as u64 + 2,
            reported_total: Some(rows as u64),
            page_limit: Some(batch as u64),
            pass_total: Some(rows as u64),
            done: last,
            complete: last,
            ..ListingCursor::default()
        };
        store
            .store_page(
                &lease,
                &PageBatch {
                    cursor,
                    listed_ids: &ids,
                    seen: page.len() as u64,
                    campaigns: page,
                    dead_letters: &[],
                    warnings: &[],
                    counts_as_page: true,
                    observed_at: Utc::now(),
                },
            )
            .await?;
    }
    let end = RunEnd {
        ending: RunEnding::Finished,
        error: None,
        client: Default::default(),
        active_seconds: 0.0,
        throttled_seconds: 0.0,
        floor_seconds: None,
        at: Utc::now(),
    };
    store.finish_run(&lease, &end).await?;
    Ok(())
}
