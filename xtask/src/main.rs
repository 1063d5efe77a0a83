//! Developer tasks for netladder: `cargo xtask <command>` (see `cargo xtask --help`).

mod bench;
mod build;
mod ci;
mod cmd;
mod fuzz;
mod hosttest;
mod libtest;
mod package;
mod setup;
mod vm;

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Setup, build, test and VM tasks for netladder"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install whatever is missing to build and run netladder and its tests: apt packages,
    /// rust-src for nightly, bpf-linker 0.13 (LLVM 22), cargo-deb, cargo-fuzz.
    Setup,
    /// Set up, then build the netladder binary and the scenario test binaries.
    Build {
        /// Build the debug profile instead of release.
        #[arg(long)]
        debug: bool,
    },
    /// Set up what building and running needs (not the test tools), build netladder, then run
    /// `netladder ARGS` (through sudo when not root).
    Run {
        /// Arguments for netladder, e.g. `cargo xtask run -- watch --json`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, then run the unit tests and the scenario tests on this host.
    Test,
    /// Run the scenario tests inside QEMU on Debian kernels.
    VmTest(vm::VmTestArgs),
    /// Set up, build, then build the Debian package and check it (unpacked, never installed).
    Package,
    /// Set up, then run every fuzz target (fuzz/, cargo-fuzz) for a few seconds each.
    Fuzz(fuzz::FuzzArgs),
    /// What CI runs: setup, fmt and clippy, build, the VM suite (CI selection) and beside it the
    /// host tests, the package check and fuzzing; each stage's time, then a summary.
    Ci {
        /// Boot only these kernels of the CI selection (to try CI on a subset; CI boots all).
        #[arg(long, default_value = "all")]
        kernel: String,
    },
    /// Benchmark netladder's overhead: refused storm, healthy path, drop storm, host tax, start-up (docs/benchmarks.md).
    Bench(bench::BenchArgs),
    /// netladder's hook plans (fexit, without fexit, with syscall tracepoints) side by side in
    /// one Debian VM (docs/benchmarks.md).
    VmBench(bench::vmplans::VmBenchArgs),
    /// One load of the host-tax benchmark, run by `cargo xtask bench` as its own child.
    #[command(hide = true)]
    BenchLoad(bench::LoadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(task: Task) -> Result<ExitCode> {
    match task {
        Task::Setup => setup::run_for_tests().map(|()| ExitCode::SUCCESS),
        Task::Fuzz(args) => {
            setup::run_for_tests()?;
            let failed = fuzz::run(&args)?;
            if failed.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("xtask: fuzz: findings in {}", failed.join(", "));
                Ok(ExitCode::FAILURE)
            }
        }
        Task::Build { debug } => {
            setup::run()?;
            let profile = if debug {
                build::Profile::Debug
            } else {
                build::Profile::Release
            };
            build::run(profile).map(|_| ExitCode::SUCCESS)
        }
        Task::Run { args } => run_netladder(&args),
        Task::Test => {
            setup::run_for_tests()?;
            let artifacts = build::run(build::Profile::Release)?;
            hosttest::run(&artifacts, &hosttest::Output::Echo, &[])
                .map(|summary| summary.exit_code())
        }
        Task::VmTest(args) => vm::run(&args).map(|report| report.exit_code()),
        Task::Package => {
            setup::run_for_tests()?;
            let artifacts = build::run(build::Profile::Release)?;
            package::run(&artifacts).map(|_| ExitCode::SUCCESS)
        }
        Task::Ci { kernel } => ci::run(&kernel),
        Task::Bench(args) => bench::run(&args),
        Task::BenchLoad(args) => bench::run_load(&args),
        Task::VmBench(args) => bench::vmplans::run(&args),
    }
}

fn run_netladder(args: &[String]) -> Result<ExitCode> {
    setup::run()?;
    let netladder = build::netladder(build::Profile::Release)?;
    let netladder = netladder.to_string_lossy().into_owned();
    let mut command = cmd::privileged(&netladder, &[]);
    command.args(args);
    let err = command.exec();
    Err(err).with_context(|| format!("cannot start `{}`", cmd::describe(&command)))
}
