//! `adsync dead-letters list|retry`: what could not be stored or synced, and another try.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::platform::{DbArgs, PlatformArgs};

#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    #[command(subcommand)]
    command: DeadLettersCommand,
}

#[derive(Debug, Subcommand)]
enum DeadLettersCommand {
    /// List the tenant's dead letters (unresolved unless --all).
    List {
        #[command(flatten)]
        db: DbArgs,
        /// Tenant.
        #[arg(long, env = "ADSYNC_TENANT", default_value = "default")]
        tenant: String,
        /// Include resolved ones.
        #[arg(long)]
        all: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Mark dead letters resolved without retrying them (recorded as dismissed).
    Dismiss {
        #[command(flatten)]
        db: DbArgs,
        /// Tenant.
        #[arg(long, env = "ADSYNC_TENANT", default_value = "default")]
        tenant: String,
        /// The dead letters to dismiss (ids from `adsync dead-letters list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<i64>,
        /// Dismiss every unresolved dead letter of the tenant.
        #[arg(long)]
        all: bool,
    },
    /// Call the platform again for sync failures; validate invalid records again.
    Retry {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        platform: Box<PlatformArgs>,
        /// Tenant.
        #[arg(long, env = "ADSYNC_TENANT", default_value = "default")]
        tenant: String,
    },
}

pub async fn run(args: DeadLettersArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        DeadLettersCommand::List {
            db,
            tenant,
            all,
            json,
        } => {
            let store = db.connect().await?;
            let letters = store.dead_letters(&tenant, all).await?;
            if json {
                for l in &letters {
                    println!("{}", serde_json::to_string(l).expect("serializes"));
                }
            } else if letters.is_empty() {
                println!(
                    "no {}dead letters for tenant {tenant:?}",
                    if all { "" } else { "unresolved " }
                );
            } else {
                println!(
                    "{:>6}  {:<24} {:<10} {:>8}  {:<9}  reason",
                    "id", "campaign", "stage", "attempts", "resolved"
                );
                for l in &letters {
                    println!(
                        "{:>6}  {:<24} {:<10} {:>8}  {:<9}  {}",
                        l.id,
                        l.campaign_id.escape_debug().to_string(),
                        l.stage.as_str(),
                        l.attempts,
                        match (l.resolved, l.resolution) {
                            (false, _) => "no",
                            (true, Some(r)) => r.as_str(),
                            (true, None) => "yes",
                        },
                        l.reason.escape_debug()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadLettersCommand::Dismiss {
            db,
            tenant,
            ids,
            all: _,
        } => {
            let store = db.connect().await?;
            let n = store
                .dismiss_dead_letters(&tenant, &ids, chrono::Utc::now())
                .await?;
            println!("dismissed {n} dead letter(s) of tenant {tenant:?}");
            if !ids.is_empty() && n < ids.len() as u64 {
                crate::logging::notice(&format!(
                    "{} of the ids given are not unresolved dead letters of tenant {tenant:?}",
                    ids.len() as u64 - n
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadLettersCommand::Retry {
            db,
            platform,
            tenant,
        } => {
            let source = platform.source(&db)?;
            let store = db.connect().await?;
            let platform = platform.connect(source).await?;
            platform.client.authenticate().await?;
            let outcome =
                adsync_sync::retry_dead_letters(&platform.client, &store, &tenant).await?;
            println!(
                "dead letters of tenant {tenant:?}: {} resolved, {} still failing, {} valid now and {} pages to list again (the next sync does both)",
                outcome.resolved, outcome.still_failing, outcome.now_valid, outcome.need_a_sync
            );
            Ok(if outcome.still_failing > 0 {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
