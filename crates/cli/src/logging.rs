//! Log setup shared by every subcommand: `-v`/`-q`, `--log-format pretty|json`, `RUST_LOG`.

use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, ValueEnum};
use tracing_subscriber::{EnvFilter, fmt};

/// How log lines look.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// More log detail (-v debug, -vv trace). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Tells the user something in one line: a plain `adsync: ...` line on stderr, or a log
/// event when logs are JSON (so stderr stays one JSON object per line).
pub fn notice(message: &str) {
    if JSON.load(Ordering::Relaxed) {
        tracing::warn!("{message}");
    } else {
        eprintln!("adsync: {message}");
    }
}

/// The one line a failed command ends with: plain text, or an error event with JSON logs.
pub fn fatal(message: &str) {
    if JSON.load(Ordering::Relaxed) {
        tracing::error!("{message}");
    } else {
        eprintln!("adsync: {message}");
    }
}

/// Installs the global subscriber, writing to stderr. With `interactive` (a progress bar on
/// the terminal) the default level is `warn`, so log lines do not tear the bar.
pub fn init(args: &LogArgs, interactive: bool) -> anyhow::Result<()> {
    let level = match (args.quiet, args.verbose) {
        (true, _) => "warn",
        (false, 0) if interactive => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Our crates at the chosen level; libraries one notch quieter unless asked for trace.
        let deps = if args.verbose >= 2 { "trace" } else { "warn" };
        EnvFilter::new(format!(
            "{deps},adsync={level},adsync_client={level},adsync_sim={level},adsync_sync={level},adsync_store={level}"
        ))
    });
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match args.log_format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            builder.json().flatten_event(true).try_init()
        }
    };
    result.map_err(|e| anyhow::anyhow!("could not set up logging: {e}"))
}
