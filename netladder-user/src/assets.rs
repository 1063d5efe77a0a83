//! `netladder assets DIR` (hidden; the build and the Debian package use it): the man pages and the
//! shell completions, generated from the same clap definition as the command line itself.
//! Writes `DIR/man/netladder.1`, `DIR/man/netladder-SUBCOMMAND.1` and
//! `DIR/completions/{netladder.bash,_netladder,netladder.fish}`.
use std::path::Path;

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;
use clap_complete::Shell;

pub fn write(dir: &Path) -> Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let cmd = crate::cli::Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("cannot write the man pages into {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "netladder", &completions)
            .with_context(|| format!("cannot write the {shell} completions"))?;
    }
    Ok(())
}
