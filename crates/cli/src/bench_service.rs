//! `adsync bench service`: many tenants at once, as the service runs them. N tenants, each
//! its own client id, against a simulator in a child process (so this process's memory and
//! CPU are the service's alone); one worker with a slot per tenant; the REST API under a steady
//! read load meanwhile. Reports how long until every run ended against one tenant's floor,
//! the 429s the simulator counted, the API's latency percentiles, the shared-budget grants,
//! and this process's peak RSS.

use std::{
    process::{ExitCode, Stdio},
    sync::Arc,
    time::Duration,
};

use adsync_service::{
    Service,
    queue::RunRequest,
    tenants::NewTenant,
    vault::{Credentials, Keyring, MasterKey},
    worker::WorkerConfig,
};
use adsync_store::{Store, StoreOptions};
use clap::Args;
use secrecy::SecretString;
use tokio::{io::AsyncBufReadExt, time::Instant};
use tokio_util::sync::CancellationToken;

/// `adsync bench service`.
#[derive(Debug, Args)]
pub struct ServiceBenchArgs {
    /// Scratch database (PostgreSQL for the real figure). The bench adds tenants named
    /// `bench-<pid>-<n>` and deletes nothing.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Tenants, each its own client id, all queued at once.
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Campaigns per tenant.
    #[arg(long, default_value_t = 100)]
    campaigns: usize,
    /// Simulator time scale (60: the 10/60s window lasts one second).
    #[arg(long, default_value_t = 60.0)]
    time_scale: f64,
    /// Simulator profile.
    #[arg(long, default_value = "calm")]
    profile: String,
    /// API requests per second during the runs (GET tenant, runs, run).
    #[arg(long, default_value_t = 100)]
    api_rps: u32,
    /// Database connections of the workers (the API has 8 of its own). Default: as `adsync
    /// serve`'s, two per core, 4 to 32.
    #[arg(long, default_value_t = adsync_service::worker::default_pool())]
    pool: u32,
    /// Port of the bench's API (0: any free one; its address is printed on stderr), so that a
    /// load tool in another process can be pointed at it (`--api-rps 0` then leaves the load
    /// to that tool).
    #[arg(long, default_value_t = 0)]
    api_port: u16,
    /// The admin key of the bench's API (a load tool needs it); default: a throwaway one.
    #[arg(long, env = "ADSYNC_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Have the simulator write when it counted each rate-limited request (and whether it
    /// refused it) to this file; `scripts/bench/arrivals` reads it.
    #[arg(long, value_name = "FILE")]
    sim_arrivals_log: Option<std::path::PathBuf>,
    /// Spend each client id's budget in the database (the service's default).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    shared_budgets: bool,
}

/// Starts `adsync simulate` as a child process and returns it with its URL.
async fn simulator(args: &ServiceBenchArgs) -> anyhow::Result<(tokio::process::Child, String)> {
    let exe = std::env::current_exe()?;
    let mut command = tokio::process::Command::new(exe);
    command.args([
        "-q",
        "simulate",
        "--port",
        "0",
        "--profile",
        &args.profile,
        "--campaigns",
        &args.campaigns.to_string(),
        "--time-scale",
        &args.time_scale.to_string(),
    ]);
    if let Some(path) = &args.sim_arrivals_log {
        command.arg("--arrivals-log").arg(path);
    }
    let mut child = command
        // Its tenants use the reference account.
        .env_remove("ADSYNC_SIM_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .map_err(|_| anyhow::anyhow!("the simulator did not start within 20 s"))??
        .ok_or_else(|| anyhow::anyhow!("the simulator exited"))?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .ok_or_else(|| anyhow::anyhow!("unexpected simulator output: {line}"))?
        .to_owned();
    Ok((child, url))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the bench.
pub async fn run(args: ServiceBenchArgs) -> anyhow::Result<ExitCode> {
    let (mut sim, sim_url) = simulator(&args).await?;
    let store = Store::connect_with(
        &args.database_url,
        &StoreOptions {
            max_connections: args.pool,
            ..StoreOptions::default()
        },
    )
    .await?;
    let keyring = Arc::new(Keyring::new(MasterKey::generate(), Vec::new()));
    let admin = args
        .admin_key
        .clone()
        .unwrap_or_else(|| format!("bench-admin-{}", std::process::id()));
    let service = Service::new(
        store.clone(),
        keyring.clone(),
        Some(SecretString::from(admin.clone())),
    );
    // As `adsync serve` does: the API on a pool of its own.
    let api_store = Store::connect_with(
        &args.database_url,
        &StoreOptions {
            max_connections: 8,
            ..StoreOptions::default()
        },
    )
    .await?;
    let api_service = Service::new(
        api_store.clone(),
        keyring.clone(),
        Some(SecretString::from(admin.clone())),
    );
    let stats_url = format!("{sim_url}/__sim/stats");
    // The same TLS provider the platform client installs (reqwest is built without one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let stats_before: serde_json::Value = http.get(&stats_url).send().await?.json().await?;
    let limit = adsync_domain::RateLimit::PLATFORM_DEFAULT.scaled(args.time_scale);

    // Tenants.
    let created = Instant::now();
    let pid = std::process::id();
    let mut tenants = Vec::with_capacity(args.tenants);
    for n in 0..args.tenants {
        let t = service
            .tenants
            .create(
                NewTenant {
                    name: format!("bench-{pid}-{n}"),
                    api_url: sim_url.clone(),
                    client_id: None,
                    rate_limit: Some(limit.to_string()),
                    page_size: Some(100),
                    schedule: None,
                    time_zone: None,
                    paused: false,
                    credentials: Credentials::new(
                        adsync_sim::REFERENCE_EMAIL,
                        SecretString::from(adsync_sim::REFERENCE_PASSWORD),
                    ),
                },
                None,
            )
            .await?;
        tenants.push(t);
    }
    eprintln!(
        "{} tenants created in {:.1} s",
        tenants.len(),
        created.elapsed().as_secs_f64()
    );

    // The API, in this process, under load while the runs go.
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.api_port)).await?;
    let api_url = format!("http://{}", listener.local_addr()?);
    eprintln!(
        "API at {api_url}/api/v1 (first tenant {})",
        tenants.first().map_or("-", |t| t.id.as_str())
    );
    let api = tokio::spawn(adsync_server::serve(
        listener,
        adsync_server::app(api_service.clone()),
        stop.clone(),
    ));

    // A checkpoint now rather than in the middle of the runs: one falling inside a run (the
    // tenants' creation and the previous run write enough WAL to call for one) made the same
    // build 1.5 or 2.1 x its floor within the hour. Needs a superuser or pg_checkpoint; the
    // bench goes on without it.
    if let Store::Postgres(pool) = &store
        && let Err(e) = sqlx::query("CHECKPOINT").execute(pool).await
    {
        eprintln!("no CHECKPOINT before the runs ({e}); a checkpoint during them adds noise");
    }

    // Queue every run at once (as the scheduler fires a minute's due ticks), then let one
    // worker with a slot per tenant take them.
    let started = Instant::now();
    let requests: Vec<RunRequest<'_>> = tenants
        .iter()
        .map(|t| RunRequest {
            tenant: &t.id,
            page_size: t.page_size,
            platform: &t.api_url,
            requested_by: "bench",
        })
        .collect();
    let runs: Vec<i64> = service
        .queue
        .enqueue_many(&requests)
        .await?
        .into_iter()
        .map(|o| o.run())
        .collect();
    let queued_in = started.elapsed();
    // As `adsync serve` runs them: on a runtime and a pool of their own.
    let (url, pool) = (args.database_url.clone(), args.pool);
    let connect = async move {
        let options = StoreOptions {
            max_connections: pool,
            ..StoreOptions::default()
        };
        Ok(Store::connect_with(&url, &options).await?)
    };
    let config = WorkerConfig {
        slots: args.tenants,
        poll: Duration::from_millis(50),
        shared_budgets: args.shared_budgets,
        ..WorkerConfig::default()
    };
    let worker_task =
        crate::serve::start_workers(connect, keyring, None, config, stop.clone()).await?;
    let load = tokio::spawn(api_load(
        http.clone(),
        api_url.clone(),
        admin.clone(),
        tenants.iter().map(|t| t.id.clone()).collect(),
        runs.clone(),
        args.api_rps,
        stop.clone(),
    ));

    // Until every run ended (polled on the API's pool: the workers' own is busy).
    let deadline = Instant::now() + Duration::from_secs(600);
    let ended = loop {
        if !any_open(&api_store, &runs).await? {
            break started.elapsed();
        }
        if Instant::now() > deadline {
            anyhow::bail!("runs still open after 600 s");
        }
        // Polled every 10 ms: at 100 ms, the poll alone added up to a hundredth of the floor.
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // What the shared budgets did (the workers record into the process's metrics, which the
    // API serves): slots dropped late each cost a window of their run.
    match budget_summary(&http, &api_url, &admin).await {
        Ok(summary) => eprintln!("shared budgets: {summary}"),
        Err(e) => eprintln!("no budget summary from /metrics: {e}"),
    }
    stop.cancel();
    let latencies = load.await?;
    worker_task.join().await??;
    api.await??;

    // Results. One tenant's floor from the contract: its calls (listing pages and one sync
    // per campaign) at its limit, plus the simulator's sync delay for the last call. The
    // floors the runs record include their measured last-call latency, which grows with the
    // load; the contract's figure does not flatter a loaded machine.
    let calls = (args.campaigns + args.campaigns.div_ceil(100).max(1)) as u64;
    let last_call = Duration::from_secs(2).div_f64(args.time_scale);
    let floor = limit.floor(calls, last_call).as_secs_f64();
    let mut recorded_floor = 0.0f64;
    let mut worst_ratio = 0.0f64;
    let mut by_status = std::collections::BTreeMap::<String, usize>::new();
    for id in &runs {
        let r = store.run(*id).await?;
        *by_status.entry(r.status.to_string()).or_default() += 1;
        recorded_floor = recorded_floor.max(r.floor_seconds.unwrap_or(0.0));
        worst_ratio = worst_ratio.max(r.floor_ratio().unwrap_or(0.0));
    }
    let stats: serde_json::Value = http.get(&stats_url).send().await?.json().await?;
    let limited = stats["rate_limited"].as_u64().unwrap_or(0)
        - stats_before["rate_limited"].as_u64().unwrap_or(0);
    let mut sorted = latencies;
    sorted.sort();
    let rss =
        crate::bench::peak_rss().map_or("n/a".into(), |kb| format!("{:.1} MB", kb as f64 / 1024.0));
    println!(
        "| tenants | campaigns each | all runs ended | one tenant's floor | all / floor | worst run / floor | runs | 429s | API requests | API p50 | API p99 | peak RSS |"
    );
    println!(
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
    );
    println!(
        "| {} | {} | {:.2} s | {:.2} s | {:.3} | {:.3} | {} | {} | {} | {:.1} ms | {:.1} ms | {} |",
        args.tenants,
        args.campaigns,
        ended.as_secs_f64(),
        floor,
        if floor > 0.0 {
            ended.as_secs_f64() / floor
        } else {
            0.0
        },
        worst_ratio,
        by_status
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", "),
        limited,
        sorted.len(),
        percentile(&sorted, 0.5).as_secs_f64() * 1e3,
        percentile(&sorted, 0.99).as_secs_f64() * 1e3,
        rss
    );
    eprintln!(
        "queued {} runs in {:.2} s",
        runs.len(),
        queued_in.as_secs_f64()
    );
    let _ = sim.kill().await;
    store.close().await;
    api_store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// The budget counters of the bench's `/metrics`, summed over their labels but `reason`.
async fn budget_summary(
    http: &reqwest::Client,
    api_url: &str,
    admin: &str,
) -> anyhow::Result<String> {
    let text = http
        .get(format!("{api_url}/metrics"))
        .bearer_auth(admin)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let sum = |prefix: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |a, b| a + b) as u64
    };
    Ok(format!(
        "{} grants, {} conflicts, slots dropped late {}, dropped held {}",
        sum("adsync_budget_grants_total"),
        sum("adsync_budget_grant_conflicts_total"),
        sum("adsync_budget_slots_dropped_total{reason=\"late\"}"),
        sum("adsync_budget_slots_dropped_total{reason=\"held\"}"),
    ))
}

/// Whether any of `runs` is still queued or running.
async fn any_open(store: &Store, runs: &[i64]) -> anyhow::Result<bool> {
    const SQL: &str = "SELECT EXISTS (SELECT 1 FROM sync_runs
        WHERE id = ANY($1) AND status IN ('queued', 'running'))";
    Ok(match store {
        Store::Postgres(p) => sqlx::query_scalar(SQL).bind(runs).fetch_one(p).await?,
        // One process: the runs' ids are a range (no arrays in SQLite).
        Store::Sqlite(p) => {
            let (lo, hi) = (runs.iter().min(), runs.iter().max());
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sync_runs
                 WHERE id BETWEEN $1 AND $2 AND status IN ('queued', 'running'))",
            )
            .bind(lo.copied().unwrap_or(0))
            .bind(hi.copied().unwrap_or(-1))
            .fetch_one(p)
            .await?
        }
    })
}

/// GETs at `rps` requests a second, round robin over a tenant, its runs and a run, until
/// `stop`; returns each request's latency.
async fn api_load(
    http: reqwest::Client,
    base: String,
    key: String,
    tenants: Vec<String>,
    runs: Vec<i64>,
    rps: u32,
    stop: CancellationToken,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    if rps == 0 || tenants.is_empty() {
        return latencies;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rps)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut n = 0usize;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let url = match n % 3 {
            0 => format!("{base}/api/v1/tenants/{}", tenants[n % tenants.len()]),
            1 => format!("{base}/api/v1/tenants/{}/runs", tenants[n % tenants.len()]),
            _ => format!("{base}/api/v1/runs/{}", runs[n % runs.len()]),
        };
        n += 1;
        let (http, key, tx) = (http.clone(), key.clone(), tx.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let ok = http
                .get(url)
                .bearer_auth(key)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let _ = tx.send((ok, t.elapsed()));
        });
    }
    drop(tx);
    let mut failed = 0;
    while let Some((ok, d)) = rx.recv().await {
        if !ok {
            failed += 1;
        }
        latencies.push(d);
    }
    if failed > 0 {
        eprintln!("{failed} API requests failed");
    }
    latencies
}
