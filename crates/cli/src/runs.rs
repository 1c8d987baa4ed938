//! `adsync runs [show ID]`: a tenant's run history, and one run in full.

use std::process::ExitCode;

use adsync_store::RunRecord;
use adsync_sync::Outcome;
use clap::{Args, Subcommand};

use crate::{exit::config_error, platform::DbArgs, summary};

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Tenant.
    #[arg(long, env = "ADSYNC_TENANT", default_value = "default", global = true)]
    tenant: String,
    /// One JSON object per line instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// How many runs to list, newest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    #[command(subcommand)]
    command: Option<RunsCommand>,
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// One run in full: counters, listing, timing against the floor, warnings.
    Show {
        /// The run id (see `adsync runs`).
        id: i64,
    },
}

fn secs(s: f64) -> String {
    format!("{s:.1} s")
}

fn ratio(r: &RunRecord) -> String {
    r.floor_ratio()
        .map_or_else(|| "-".into(), |x| format!("{x:.3}"))
}

pub async fn run(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let store = args.db.connect().await?;
    match args.command {
        None => {
            let runs = store.runs(&args.tenant, args.limit).await?;
            if args.json {
                for r in &runs {
                    println!("{}", serde_json::to_string(r).expect("serializes"));
                }
            } else if runs.is_empty() {
                println!("no runs for tenant {:?}", args.tenant);
            } else {
                println!(
                    "{:>6}  {:<25} {:<11} {:>7} {:>7} {:>6} {:>6} {:>9} {:>6} {:>5} {:>8}",
                    "run",
                    "started",
                    "status",
                    "stored",
                    "synced",
                    "dead",
                    "warn",
                    "duration",
                    "/floor",
                    "drift",
                    "removed"
                );
                for r in &runs {
                    let c = &r.counters;
                    println!(
                        "{:>6}  {:<25} {:<11} {:>7} {:>7} {:>6} {:>6} {:>9} {:>6} {:>5} {:>8}",
                        r.id,
                        r.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                        r.status.as_str(),
                        c.campaigns_stored,
                        c.campaigns_synced,
                        c.dead_lettered,
                        c.warnings,
                        secs(r.active_seconds),
                        ratio(r),
                        r.cursor.drift_events,
                        c.campaigns_removed,
                    );
                }
            }
        }
        Some(RunsCommand::Show { id }) => {
            let run = match store.run(id).await {
                Ok(r) if r.tenant_id == args.tenant => r,
                Ok(_) | Err(adsync_store::StoreError::NotFound(_)) => {
                    return Err(config_error(format!(
                        "tenant {:?} has no run {id}; list them with adsync runs",
                        args.tenant
                    ))
                    .into());
                }
                Err(e) => return Err(e.into()),
            };
            let warnings = store.run_warnings(id).await?;
            if args.json {
                let mut value = serde_json::to_value(&run).expect("serializes");
                value["warnings_detail"] = serde_json::to_value(&warnings).expect("serializes");
                println!("{value}");
            } else {
                print!("{}", show(&run, &warnings));
            }
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

fn show(r: &RunRecord, warnings: &[adsync_store::StoredWarning]) -> String {
    let c = &r.counters;
    let outcome = Outcome::of(r.status, r.stop_reason);
    let mut rows: Vec<(&str, String)> = vec![
        ("run", format!("{} for tenant {:?}", r.id, r.tenant_id)),
        (
            "status",
            format!(
                "{}{} (exit code {})",
                r.status,
                r.stop_reason
                    .map_or_else(String::new, |s| format!(" ({})", s.as_str())),
                outcome.exit_code()
            ),
        ),
        ("platform", r.platform.clone().unwrap_or_else(|| "-".into())),
        (
            "started",
            format!(
                "{}{}",
                r.started_at.to_rfc3339(),
                r.finished_at
                    .map_or_else(String::new, |f| format!(", ended {}", f.to_rfc3339()))
            ),
        ),
        (
            "owner",
            format!(
                "{} (lease epoch {}, {} resumes)",
                r.owner.as_deref().unwrap_or("-"),
                r.lease_epoch,
                r.resumes
            ),
        ),
        (
            "campaigns",
            format!(
                "seen {} · stored {} · synced {} · dead-lettered {} · removed {} · returned {}",
                c.campaigns_seen,
                c.campaigns_stored,
                c.campaigns_synced,
                c.dead_lettered,
                c.campaigns_removed,
                c.campaigns_returned
            ),
        ),
        ("listing", summary::listing_line(&r.cursor, c.pages)),
        (
            "requests",
            format!(
                "{} · retries {} · 429s {} · token refreshes {}",
                c.requests, c.retries, c.rate_limited, c.token_refreshes
            ),
        ),
        (
            "duration",
            format!(
                "{} (throttled {}) · floor {} · duration/floor {}",
                secs(r.active_seconds),
                secs(r.throttled_seconds),
                r.floor_seconds.map_or_else(|| "-".into(), secs),
                ratio(r)
            ),
        ),
        ("error", r.error.clone().unwrap_or_else(|| "-".into())),
        ("warnings", String::new()),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    // Values start after the key column and two spaces.
    if let Some(last) = rows.last_mut() {
        last.1 = summary::warnings_block(warnings, width + 2);
    }
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}
