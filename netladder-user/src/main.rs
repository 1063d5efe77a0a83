//! netladder: tells why a connection failed, while it fails.
mod assets;
mod classify;
mod cli;
mod diagnose;
mod enrich;
mod explain;
mod filter;
mod kernel;
mod ladder;
mod metrics;
mod output;
mod preflight;
mod sink;
mod watch;

use clap::Parser as _;

fn main() {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Watch(args) => watch::run(args),
        cli::Command::Hooks(args) => watch::hooks(args),
        cli::Command::Assets { dir } => assets::write(&dir),
        cli::Command::Explain(args) => explain::run(args),
        cli::Command::Diagnose(args) => match diagnose::run(args) {
            Ok(status) => std::process::exit(status),
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        eprintln!("{}netladder: {e:#}", sink::error_prefix());
        std::process::exit(1);
    }
}
