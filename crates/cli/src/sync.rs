//! `adsync sync`: one run for one tenant, with a progress display and a summary.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use adsync_sync::{BreakerConfig, PagerLimits, RunReport, SyncConfig, SyncEngine, SyncError};
use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::{
    exit::{self, Failure},
    platform::{DbArgs, PlatformArgs},
};

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
    /// Start a new run even if an unfinished one exists (it is marked failed).
    #[arg(long, env = "ADSYNC_FRESH")]
    fresh: bool,
    /// Sync calls in flight at once (default: sized from the rate limit).
    #[arg(long, env = "ADSYNC_SYNC_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..=1024))]
    sync_concurrency: Option<u16>,
    /// How long this process's hold on the run lasts without renewal. If the process dies,
    /// the next `adsync sync` takes the run over after at most this long.
    #[arg(long, env = "ADSYNC_LEASE_TIMEOUT", default_value = "30s", value_parser = lease_timeout)]
    lease_timeout: Duration,
    /// Pages one listing pass may take when the platform reports no total (has_more is never
    /// followed further).
    #[arg(long, env = "ADSYNC_MAX_PAGES", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_pages: u64,
    /// Also write the run's summary as JSON to this file (also when the run cannot start).
    #[arg(long, env = "ADSYNC_SUMMARY_JSON")]
    summary_json: Option<PathBuf>,
}

fn lease_timeout(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d >= Duration::from_millis(100) => Ok(d),
        Ok(_) => Err("must be at least 100ms".into()),
        Err(e) => Err(format!("{e} (write e.g. 30s)")),
    }
}

pub async fn run(args: SyncArgs) -> anyhow::Result<ExitCode> {
    match sync(&args).await {
        Ok(report) => {
            println!("{}", crate::summary::table(&report));
            if let Some(path) = &args.summary_json {
                write_json(
                    path,
                    &serde_json::to_value(&report).expect("report serializes"),
                )?;
            }
            if let Some(error) = &report.error {
                crate::logging::notice(&format!(
                    "run {} {}: {error}",
                    report.run_id, report.status
                ));
            }
            Ok(ExitCode::from(report.exit_code()))
        }
        Err(err) => {
            if let Some(path) = &args.summary_json {
                let message = crate::one_line(&format!("{err:#}"));
                let json = serde_json::json!({
                    "tenant": args.tenant,
                    "status": "not_started",
                    "outcome": exit::outcome_of(&err),
                    "exit_code": exit::code_of(&err),
                    "error": message,
                });
                write_json(path, &json)?;
            }
            Err(err)
        }
    }
}

fn write_json(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON serializes");
    std::fs::write(path, text)
        .with_context(|| format!("cannot write --summary-json {}", path.display()))
}

async fn sync(args: &SyncArgs) -> anyhow::Result<RunReport> {
    // Configuration first: a missing variable fails before any database file is created.
    let source = args.platform.source(&args.db)?;
    let platform_label = source.label();
    let platform = args.platform.connect(source).await?;
    // The platform before the database: wrong credentials or an unreachable platform fail
    // before a database file exists.
    platform.client.authenticate().await.map_err(|e| {
        let e = SyncError::Platform(e);
        Failure::sync(&e, one_line_advice(&e))
    })?;
    let store = args.db.connect().await?;
    let scale = platform.time_scale;
    let config = SyncConfig {
        tenant: args.tenant.clone(),
        platform: platform_label,
        page_size: args.page_size,
        fresh: args.fresh,
        sync_concurrency: args.sync_concurrency.map(usize::from),
        breaker: BreakerConfig::default().scaled(scale),
        shutdown_grace: args.platform.request_timeout,
        lease_ttl: args.lease_timeout,
        pager: PagerLimits {
            max_pages: args.max_pages,
            ..PagerLimits::default()
        },
        ..SyncConfig::default()
    };
    let engine = SyncEngine::new(platform.client.clone(), store.clone(), config)
        .with_notice(|m| crate::logging::notice(&m));

    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signals(
        cancel.clone(),
        "quitting now; run adsync sync again to resume",
    ));
    let display = tokio::spawn(crate::progress_view::show(
        engine.progress(),
        platform.client.clone(),
    ));
    let result = engine.run(cancel).await;
    display.abort();
    let _ = display.await;
    store.close().await;
    drop(platform.simulator);
    result.map_err(|e| Failure::sync(&e, one_line_advice(&e)).into())
}

/// The sync error as one line that says what to do.
fn one_line_advice(e: &SyncError) -> String {
    use adsync_client::Error as C;
    match e {
        SyncError::Platform(C::Connect { .. } | C::Timeout(_) | C::Server { .. }) => format!(
            "{e}; check --api-url (or AD_PLATFORM_API_URL) and that the platform is up, then run again"
        ),
        SyncError::Store(s) => format!("{s}; check --database-url (or DATABASE_URL)"),
        SyncError::Platform(C::InvalidCredentials { .. }) => {
            format!("{e}; {}", adsync_sync::CLI_CREDENTIALS)
        }
        _ => e.to_string(),
    }
}

/// First SIGINT/SIGTERM: stop taking work, finish in-flight calls, checkpoint. Second: quit
/// at once (the database is consistent at every commit, so nothing stored is lost), saying
/// `quitting` (how the work left is resumed, which depends on the command).
pub(crate) async fn stop_on_signals(cancel: CancellationToken, quitting: &'static str) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    for n in 0.. {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        if n == 0 {
            crate::logging::notice(
                "stopping: finishing in-flight calls and saving the checkpoint (again to quit now)",
            );
            cancel.cancel();
        } else {
            crate::logging::notice(quitting);
            std::process::exit(130);
        }
    }
}
