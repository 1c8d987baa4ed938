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
                    "{:>6}  {:<24} {:<10} {:>8}  {:<8}  reason",
                    "id", "campaign", "stage", "attempts", "resolved"
                );
                for l in &letters {
                    println!(
                        "{:>6}  {:<24} {:<10} {:>8}  {:<8}  {}",
                        l.id,
                        l.campaign_id.escape_debug().to_string(),
                        l.stage.as_str(),
                        l.attempts,
                        if l.resolved { "yes" } else { "no" },
                        l.reason.escape_debug()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadLettersCommand::Retry {
            db,
            platform,
            tenant,
        } => {
            let store = db.connect().await?;
            let platform = platform.connect().await?;
            platform.client.authenticate().await?;
            let outcome =
                adsync_sync::retry_dead_letters(&platform.client, &store, &tenant).await?;
            println!(
                "dead letters of tenant {tenant:?}: {} resolved, {} still failing, {} valid now (the next sync stores them)",
                outcome.resolved, outcome.still_failing, outcome.now_valid
            );
            Ok(if outcome.still_failing > 0 {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
