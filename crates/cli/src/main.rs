//! `adsync`: the command line. `main` only calls [`try_main`] and maps errors to exit codes;
//! each subcommand lives in its own module.

mod logging;
mod simulate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keep a database in step with an ad platform's API, however badly it behaves.
#[derive(Debug, Parser)]
#[command(name = "adsync", version, about)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the ad platform simulator (the reference mock server, quirks included, plus chaos).
    Simulate(simulate::SimulateArgs),
}

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(err) => {
            // One line: what failed and what to do. Detail went to the log at debug level.
            eprintln!("adsync: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn try_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    logging::init(&cli.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Simulate(args) => simulate::run(args).await,
        }
    })
}
