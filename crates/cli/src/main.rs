//! `adsync`: the command line. `main` only calls [`try_main`] and maps errors to exit codes
//! ([`exit`]); each subcommand lives in its own module.

mod apart;
mod bench;
mod bench_service;
mod dead_letters;
mod demo;
mod exit;
mod keys;
mod logging;
mod platform;
mod progress_view;
mod runs;
mod serve;
mod simulate;
mod summary;
mod sync;

use std::{io::IsTerminal, process::ExitCode};

use clap::{Parser, Subcommand};

/// jemalloc instead of glibc's malloc: a service syncing a thousand tenants allocates and
/// frees small buffers at every request, and glibc's arenas (their locks and consolidation)
/// cost a seventh of its CPU (1,000 tenants: 1.89-1.95 x floor with glibc, 1.69-1.79 with
/// jemalloc; BENCHMARKS.md section 6).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Sync every campaign of a tenant from the platform into the database (resumes an
    /// interrupted run). With no platform and no database configured, it syncs the built-in
    /// simulator into ./adsync.db. Exit codes: 0 done, 2 partial, 1 failed or bad input, 130
    /// stopped by the user, 75 platform or database down (retry later).
    Sync(sync::SyncArgs),
    /// Apply database migrations (sync does it too) and report.
    Migrate(platform::DbArgs),
    /// A tenant's run history (status, counters, duration against the floor, drift,
    /// warnings), or one run in full with `runs show ID`.
    Runs(runs::RunsArgs),
    /// List or retry records that could not be stored or synced.
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Run the ad platform simulator (the reference mock server, quirks included, plus chaos).
    Simulate(simulate::SimulateArgs),
    /// Rerunnable benchmarks (sync speed against the rate-limit floor, store throughput).
    Bench(bench::BenchArgs),
    /// The service: the REST API, the scheduler and embedded workers. `--demo` needs no
    /// configuration (SQLite, built-in simulators, three demo tenants).
    Serve(serve::ServeArgs),
    /// Workers only: claim queued runs from the database and sync them. Run any number, on
    /// any number of machines, against one PostgreSQL.
    Worker(serve::WorkerArgs),
    /// Master keys: `generate` one, `rotate` the tenants' credentials to a new one.
    Keys(keys::KeysArgs),
}

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(err) => {
            // One line: what failed and what to do. Detail went to the log at debug level.
            logging::fatal(&one_line(&format!("{err:#}")));
            ExitCode::from(exit::code_of(&err))
        }
    }
}

/// clap's error as one line: its first line, plus the arguments it lists below it (a missing
/// argument), or the commands there are when none was given.
fn usage_error(e: &clap::Error) -> String {
    use clap::{CommandFactory, error::ErrorKind};
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand
    ) {
        let commands: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        return format!("no command given: use one of {}", commands.join(", "));
    }
    let text = e.render().to_string();
    let mut lines = text.lines();
    let first = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    let listed: Vec<&str> = lines
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    if listed.is_empty() {
        first.to_owned()
    } else {
        format!("{first} {}", listed.join(", "))
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn try_main() -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            e.print()?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            // clap's own report spans several lines and exits 2, which means "partial" here.
            anyhow::bail!("{} (see adsync --help)", usage_error(&e));
        }
    };
    // A progress bar owns the terminal during a sync: logs stay quiet there unless asked.
    let interactive = matches!(cli.command, Command::Sync(_)) && std::io::stderr().is_terminal();
    logging::init(&cli.log, interactive)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Sync(args) => sync::run(args).await,
            Command::Migrate(db) => {
                let store = db.connect().await?;
                println!(
                    "database {} ({}) is migrated and ready",
                    adsync_store::redact_url(db.url()),
                    store.kind()
                );
                store.close().await;
                Ok(ExitCode::SUCCESS)
            }
            Command::Runs(args) => runs::run(args).await,
            Command::DeadLetters(args) => dead_letters::run(args).await,
            Command::Simulate(args) => simulate::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Serve(args) => serve::serve(args).await,
            Command::Worker(args) => serve::worker(args).await,
            Command::Keys(args) => keys::run(args).await,
        }
    })
}
