//! netladder's code, as a library: the `netladder` binary (src/main.rs) is its command line,
//! and the fuzz targets (fuzz/) reach its parsers through [`fuzz`].
mod assets;
mod classify;
mod cli;
mod clock;
mod diagnose;
mod dnswire;
mod enrich;
mod explain;
mod failure;
mod filter;
pub mod fuzz;
mod kernel;
mod ladder;
mod metrics;
mod mountinfo;
mod otlp;
mod output;
mod preflight;
mod sink;
mod watch;
mod words;

use clap::Parser as _;

/// Runs the command line; the process's exit status.
pub fn main() -> i32 {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Watch(args) => watch::run(args),
        cli::Command::Hooks(args) => watch::hooks(args),
        cli::Command::Assets { dir } => assets::write(&dir),
        cli::Command::Explain(args) => explain::run(args),
        cli::Command::Diagnose(args) => match diagnose::run(args) {
            Ok(status) => return status,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}netladder: {e:#}", sink::error_prefix());
            1
        }
    }
}
