//! `cargo xtask fuzz`: every cargo-fuzz target in fuzz/ for a few seconds each, from the corpus
//! kept in fuzz/corpus/TARGET. New inputs go to a scratch directory under fuzz/target, so a run
//! never changes the repository; a crash or leak fails the task and leaves its input in
//! fuzz/artifacts/TARGET.

use std::fs;

use anyhow::{bail, Context, Result};

use crate::cmd;

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 15)]
    pub seconds: u32,
    /// Only this target (repeatable); all of them by default.
    #[arg(long)]
    pub target: Vec<String>,
}

/// The targets, as listed in fuzz/Cargo.toml.
pub fn targets() -> Result<Vec<String>> {
    let manifest = cmd::workspace_root().join("fuzz/Cargo.toml");
    let text = fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "netladder-fuzz")
        .map(str::to_owned)
        .collect())
}

/// Runs the targets; the names of those that found something.
pub fn run(args: &FuzzArgs) -> Result<Vec<String>> {
    let fuzz_dir = cmd::workspace_root().join("fuzz");
    let all = targets()?;
    let chosen: Vec<String> = if args.target.is_empty() {
        all
    } else {
        for t in &args.target {
            if !all.contains(t) {
                bail!("no fuzz target {t:?} (targets: {})", all.join(", "));
            }
        }
        args.target.clone()
    };
    let mut failed = Vec::new();
    for target in chosen {
        let scratch = fuzz_dir.join("target/scratch-corpus").join(&target);
        fs::create_dir_all(&scratch)
            .with_context(|| format!("cannot create {}", scratch.display()))?;
        let seeds = fuzz_dir.join("corpus").join(&target);
        println!("fuzz: {target} for {} s", args.seconds);
        let status = cmd::cargo()
            .current_dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "run", "-O", &target])
            .arg(&scratch)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg("-rss_limit_mb=2048")
            .status()
            .context("cannot run cargo fuzz (cargo xtask setup installs it)")?;
        if !status.success() {
            failed.push(target);
        }
    }
    Ok(failed)
}
