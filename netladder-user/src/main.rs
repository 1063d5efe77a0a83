//! netladder: tells why a connection failed, while it fails.
mod classify;
mod cli;
mod enrich;
mod filter;
mod kernel;
mod ladder;
mod output;
mod preflight;
mod watch;

use clap::Parser as _;

fn main() {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Watch(args) => watch::run(args),
        cli::Command::Hooks(args) => watch::hooks(args),
    };
    if let Err(e) = result {
        eprintln!("netladder: {e:#}");
        std::process::exit(1);
    }
}
