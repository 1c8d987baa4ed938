//! `adsync sync`: one run for one tenant, with a progress bar on a terminal and a summary.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use adsync_sync::{BreakerConfig, Progress, RunReport, SyncConfig, SyncEngine};
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::platform::{DbArgs, PlatformArgs};

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    platform: PlatformArgs,
    #[command(flatten)]
    db: DbArgs,
    /// Tenant (account) whose campaigns are synced; rows are keyed by it.
    #[arg(long, env = "ADSYNC_TENANT", default_value = "default")]
    tenant: String,
    /// Campaigns per page asked for (the platform may cap it; fewer pages, fewer calls).
    #[arg(long, env = "ADSYNC_PAGE_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    page_size: u64,
    /// Start a new run even if an interrupted one exists (it is marked failed).
    #[arg(long, env = "ADSYNC_FRESH")]
    fresh: bool,
    /// Sync calls in flight at once (default: sized from the rate limit).
    #[arg(long, env = "ADSYNC_SYNC_CONCURRENCY")]
    sync_concurrency: Option<usize>,
    /// Also write the run's summary as JSON to this file.
    #[arg(long, env = "ADSYNC_SUMMARY_JSON")]
    summary_json: Option<PathBuf>,
}

pub async fn run(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let store = args.db.connect().await?;
    let platform = args.platform.connect().await?;
    let scale = platform.time_scale;
    let rate_limit = platform.client.config().rate_limit;
    let config = SyncConfig {
        tenant: args.tenant.clone(),
        page_size: args.page_size,
        fresh: args.fresh,
        sync_concurrency: args.sync_concurrency,
        breaker: BreakerConfig::default().scaled(scale),
        shutdown_grace: args.platform.request_timeout,
        ..SyncConfig::default()
    };
    let engine = SyncEngine::new(platform.client.clone(), store.clone(), config);

    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signals(cancel.clone()));
    let display = tokio::spawn(show_progress(
        engine.progress(),
        platform.client.clone(),
        rate_limit,
    ));

    let result = engine.run(cancel).await;
    display.abort();
    let _ = display.await;
    store.close().await;
    drop(platform.simulator);
    let report = result.map_err(|e| anyhow::anyhow!(one_line_advice(&e)))?;

    println!("{}", summary_table(&report));
    if let Some(path) = &args.summary_json {
        let json = serde_json::to_string_pretty(&report).expect("report serializes");
        std::fs::write(path, json)
            .with_context(|| format!("cannot write --summary-json {}", path.display()))?;
    }
    if let Some(error) = &report.error {
        crate::logging::notice(&format!("run {} {}: {error}", report.run_id, report.status));
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// The sync error as one line that says what to do.
fn one_line_advice(e: &adsync_sync::SyncError) -> String {
    use adsync_client::Error as C;
    match e {
        adsync_sync::SyncError::Platform(C::Connect { .. } | C::Timeout(_)) => {
            format!("{e}; check --api-url (or AD_PLATFORM_API_URL) and that the platform is up")
        }
        _ => e.to_string(),
    }
}

/// First SIGINT/SIGTERM: stop taking work, finish in-flight calls, checkpoint. Second: quit
/// at once (the database is consistent at every commit, so nothing stored is lost).
async fn stop_on_signals(cancel: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    for n in 0.. {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        if n == 0 {
            eprintln!(
                "adsync: stopping: finishing in-flight calls and saving the checkpoint (again to quit now)"
            );
            cancel.cancel();
        } else {
            crate::logging::notice("quitting now; run adsync sync again to resume");
            std::process::exit(130);
        }
    }
}

/// A progress bar on a terminal; otherwise a plain log line every few seconds.
async fn show_progress(
    progress: Arc<Progress>,
    client: adsync_client::AdClient,
    limit: adsync_domain::RateLimit,
) {
    let line = |p: &Progress| {
        let s = p.snapshot();
        let c = client.stats();
        let (calls_left, eta) = p.eta(limit);
        (
            s,
            format!(
                "pages {} · stored {} · synced {} · dead-lettered {} · retries {} · 429s {} · {} calls left",
                s.pages, s.stored, s.synced, s.dead_lettered, c.retries, c.rate_limited, calls_left
            ),
            eta,
        )
    };
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg} · ETA {prefix}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        // The task is aborted at the end of the run: clear the bar then.
        let _clear = ClearOnDrop(bar.clone());
        loop {
            let (s, msg, eta) = line(&progress);
            bar.set_length(s.total_hint.max(s.seen));
            bar.set_position(s.synced + s.dead_lettered);
            bar.set_prefix(
                humantime::format_duration(Duration::from_secs(eta.as_secs())).to_string(),
            );
            bar.set_message(msg);
            bar.tick();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let (_, msg, eta) = line(&progress);
            tracing::info!(eta_s = eta.as_secs(), "progress: {msg}");
        }
    }
}

struct ClearOnDrop(ProgressBar);
impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The end-of-run table.
pub fn summary_table(r: &RunReport) -> String {
    let c = &r.counters;
    let k = &r.client;
    let rows = [
        (
            "run",
            format!(
                "{} for tenant {:?}: {}{}",
                r.run_id,
                r.tenant,
                r.status,
                if r.resumed { " (resumed)" } else { "" }
            ),
        ),
        (
            "campaigns",
            format!(
                "seen {} · stored {} · synced {} · dead-lettered {}",
                c.campaigns_seen, c.campaigns_stored, c.campaigns_synced, c.dead_lettered
            ),
        ),
        ("pages", c.pages.to_string()),
        (
            "requests",
            format!(
                "{} · ok {} · 429 {} · 5xx {} · timeouts {} · connection {} · malformed {} · 401 {} · other 4xx {}",
                k.requests,
                k.ok,
                k.rate_limited,
                k.server_errors,
                k.timeouts,
                k.transport_errors,
                k.malformed,
                k.unauthorized,
                k.rejected
            ),
        ),
        ("retries", k.retries.to_string()),
        ("429s", k.rate_limited.to_string()),
        ("token refreshes", k.token_refreshes.to_string()),
        (
            "limiter wait",
            format!(
                "{} (summed over requests)",
                secs(Duration::from_micros(k.limiter_wait_us))
            ),
        ),
        ("duration", secs(r.duration)),
        (
            "rate-limit floor",
            format!("{} · duration/floor {:.3}", secs(r.floor), r.floor_ratio),
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::from("Summary\n");
    for (key, value) in rows {
        out.push_str(&format!("  {key:<width$}  {value}\n"));
    }
    out.pop();
    out
}
