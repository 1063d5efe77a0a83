//! `cargo xtask fuzz`: every cargo-fuzz target in fuzz/ for a few seconds each, from the corpus
//! kept in fuzz/corpus/TARGET. New inputs go to a scratch directory under fuzz/target, so a run
//! never changes the repository; a crash or leak fails the task and leaves its input in
//! fuzz/artifacts/TARGET.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    /// Targets run at once (each is one process on one core).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Write each target's libFuzzer output to DIR/TARGET.log and print one line per target
    /// (and the end of the log of a target that found something).
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Build the targets without optimizations: half the CPU time of the optimized build, and
    /// overflow checks and debug assertions on, but each input runs many times slower (CI's
    /// short run, where the build is most of the cost).
    #[arg(long)]
    pub dev: bool,
}

impl FuzzArgs {
    /// cargo-fuzz's flag for the build profile.
    pub fn profile_flag(&self) -> &'static str {
        if self.dev {
            "--dev"
        } else {
            "-O"
        }
    }
}

/// Lines of a failed target's log printed when its output goes to a file.
const FAILED_TAIL: usize = 40;

/// `cargo fuzz VERB` in fuzz/, with what its build and its runs must agree on (or a run builds
/// again): the profile, the target directory (fuzz/target, apart from the main one: the fuzz
/// crate is a member of the workspace, but its build has its own flags and must not wait for
/// the main build's lock), and no eBPF object (the targets only parse; see AYA_BUILD_SKIP in
/// netladder-user/build.rs).
pub fn cargo_fuzz(verb: &str, args: &FuzzArgs) -> Command {
    let fuzz_dir = cmd::workspace_root().join("fuzz");
    let mut command = cmd::cargo();
    command
        .current_dir(&fuzz_dir)
        .args([
            "+nightly",
            "fuzz",
            verb,
            args.profile_flag(),
            "--target-dir",
        ])
        .arg(fuzz_dir.join("target"))
        .env("AYA_BUILD_SKIP", "1");
    command
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
    if let Some(dir) = &args.log_dir {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let results = cmd::parallel(&chosen, args.jobs, |target| {
        run_one(&fuzz_dir, target, args)
    });
    let mut failed = Vec::new();
    for (target, found_nothing) in chosen.into_iter().zip(results) {
        if !found_nothing? {
            failed.push(target);
        }
    }
    Ok(failed)
}

/// One target for `args.seconds`: whether it found nothing.
fn run_one(fuzz_dir: &Path, target: &str, args: &FuzzArgs) -> Result<bool> {
    let scratch = fuzz_dir.join("target/scratch-corpus").join(target);
    fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let seeds = fuzz_dir.join("corpus").join(target);
    println!("fuzz: {target} for {} s", args.seconds);
    let mut run = cargo_fuzz("run", args);
    run.arg(target)
        .arg(&scratch)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .arg("-rss_limit_mb=2048");
    let log = match &args.log_dir {
        Some(dir) => {
            let path = dir.join(format!("{target}.log"));
            let file = fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            run.stdout(Stdio::from(file.try_clone()?))
                .stderr(Stdio::from(file));
            Some(path)
        }
        None => None,
    };
    let status = run
        .status()
        .context("cannot run cargo fuzz (cargo xtask setup installs it)")?;
    if let Some(path) = log {
        let text = fs::read_to_string(&path).unwrap_or_default();
        let runs = text
            .lines()
            .rev()
            .find(|l| l.starts_with("Done "))
            .unwrap_or("no \"Done\" line");
        let verdict = if status.success() {
            "ok"
        } else {
            "FOUND SOMETHING"
        };
        println!(
            "fuzz: {target}: {verdict}: {runs} (log: {})",
            path.display()
        );
        if !status.success() {
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(FAILED_TAIL)..] {
                println!("fuzz: {target}: | {line}");
            }
        }
    }
    Ok(status.success())
}
