//! `cargo xtask ci` (what .ci/run calls): set up, check formatting, build, then the VM suite
//! (the CI selection, xtask/src/vm/selection.rs) with everything else beside it.
//!
//! The TCG guests are the critical path and keep both cores busy, so they start as soon as the
//! release build is there. Beside them run the host tests (mostly waiting on timeouts and
//! sleeps; their output goes to a log file), the package check and clippy. The fuzz targets
//! build from the start in their own target directory. clippy and the fuzz build run at the
//! lowest CPU priority, so that they only take what the build and the guests leave. Each stage
//! prints its time as it ends; a summary closes the run.

use std::process::{Command, ExitCode};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::build::Artifacts;
use crate::{build, cmd, fuzz, hosttest, package, setup, vm};

/// Virtual machines at once: each TCG guest keeps one core busy (measured: QEMU's CPU time is
/// most of its wall time), and CI has two.
const CI_JOBS: u16 = 2;
/// The VM problems the summary repeats, and the lines of each (the rest is printed above it).
const SUMMARY_PROBLEMS: usize = 4;
const SUMMARY_PROBLEM_LINES: usize = 14;
/// Seconds of fuzzing per target in CI.
const CI_FUZZ_SECS: u32 = 15;
/// Bound on one boot: well above the longest measured, so a slower CI machine is not cut off.
const CI_BOOT_TIMEOUT_SECS: u64 = 2400;

/// A finished stage.
struct Step {
    name: &'static str,
    ok: bool,
    took: Duration,
    /// When it ended, from the start of the run.
    at: Duration,
    detail: String,
}

/// The stages so far; each is printed as it ends (stages beside the VM suite end in any order).
struct Stages {
    start: Instant,
    steps: Mutex<Vec<Step>>,
}

impl Stages {
    fn new() -> Stages {
        Stages {
            start: Instant::now(),
            steps: Mutex::new(Vec::new()),
        }
    }

    /// Runs `stage`, then prints and records its outcome: `Ok((ok, detail))`, or an error (a
    /// failed stage whose detail is the error).
    fn run(&self, name: &'static str, stage: impl FnOnce() -> Result<(bool, String)>) -> bool {
        let started = Instant::now();
        println!("ci: {name}: started");
        let (ok, detail) = stage().unwrap_or_else(|e| (false, format!("{e:#}")));
        let step = Step {
            name,
            ok,
            took: started.elapsed(),
            at: self.start.elapsed(),
            detail,
        };
        println!("ci: {}", line(&step));
        self.steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(step);
        ok
    }

    fn summary(self) -> bool {
        let steps = self
            .steps
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        println!(
            "\nci summary ({} s in all):",
            self.start.elapsed().as_secs()
        );
        for step in &steps {
            println!("  {}", line(step));
        }
        steps.iter().all(|s| s.ok)
    }
}

fn line(step: &Step) -> String {
    let verdict = if step.ok { "ok" } else { "FAILED" };
    format!(
        "{:<12} {verdict:<6} {:>5} s (ended at {:>5} s)  {}",
        step.name,
        step.took.as_secs(),
        step.at.as_secs(),
        step.detail
    )
}

/// `kernels`: `all`, or the kernels of the CI selection to boot (a subset, to try CI).
pub fn run(kernels: &str) -> Result<ExitCode> {
    let kernels = vm::kernels(kernels)?;
    let stages = Stages::new();
    let setup_ok = stages.run("setup", || {
        setup::run_for_tests()?;
        Ok((true, String::new()))
    });
    if !setup_ok {
        stages.summary();
        return Ok(ExitCode::FAILURE);
    }
    thread::scope(|scope| {
        // The fuzz targets build in their own target directory from the start, at the lowest
        // priority: they take what the release build leaves (its single-crate and link
        // phases) and then what the guests leave.
        scope.spawn(|| stages.run("fuzz", fuzz_run));
        let ok = after_setup(&stages, &kernels);
        if !ok {
            println!("ci: the build failed: the remaining stages are skipped");
        }
    });
    Ok(if stages.summary() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// fmt, the build, then the VM suite with the host tests, the package check and clippy beside
/// it. False when the build failed.
fn after_setup(stages: &Stages, kernels: &[&'static vm::KernelSpec]) -> bool {
    // The kernels download and unpack (network and disk) while the build keeps the CPUs busy.
    let fetch = thread::spawn({
        let kernels = kernels.to_vec();
        move || vm::fetch_kernels(&kernels)
    });
    stages.run("fmt", format_check);
    let mut artifacts = None;
    stages.run("build", || {
        let built = build::run(build::Profile::Release)?;
        let detail = format!("{} scenario test binaries", built.scenario_tests.len());
        artifacts = Some(built);
        Ok((true, detail))
    });
    let _ = fetch.join();
    let Some(artifacts) = artifacts else {
        return false;
    };
    thread::scope(|scope| {
        scope.spawn(|| stages.run("vm-test", || vm_suite(&artifacts, kernels)));
        scope.spawn(|| stages.run("host tests", || host_tests(&artifacts)));
        stages.run("package", || package_check(&artifacts));
        stages.run("clippy", clippy);
    });
    true
}

/// `cargo fmt --check` for the workspace (the eBPF and fuzz crates included).
fn format_check() -> Result<(bool, String)> {
    let status = cmd::cargo()
        .current_dir(cmd::workspace_root())
        .args(["fmt", "--all", "--check"])
        .status()?;
    Ok(if status.success() {
        (true, "cargo fmt --check: clean".to_string())
    } else {
        (false, "not formatted (run cargo fmt)".to_string())
    })
}

/// The CI selection of the VM suite.
fn vm_suite(artifacts: &Artifacts, kernels: &[&'static vm::KernelSpec]) -> Result<(bool, String)> {
    let names: Vec<String> = artifacts
        .scenario_tests
        .iter()
        .map(|t| vm::test_name(t))
        .collect();
    let boots: Vec<vm::BootPlan> = vm::selection::ci_boots(&names)?
        .into_iter()
        .filter(|b| kernels.iter().any(|k| k.label == b.kernel.label))
        .collect();
    print!("{}", vm::selection::describe());
    let options = vm::SuiteOptions {
        expect_fail_demo: false,
        timeout: Duration::from_secs(CI_BOOT_TIMEOUT_SECS),
        jobs: CI_JOBS,
    };
    let suite = vm::suite(artifacts, &boots, &options)?;
    let mut detail = format!(
        "{} boots (CI selection): {} passed, {} failed, {} skipped",
        boots.len(),
        suite.totals.passed,
        suite.totals.failed,
        suite.totals.skipped
    );
    detail += &problem_lines(&suite.problems);
    Ok((suite.success(), detail))
}

/// The VM problems as the summary repeats them (it is the last thing CI prints, and may be all
/// of the output a reader gets): what failed, where, and the start of its message.
fn problem_lines(problems: &[String]) -> String {
    let mut out = String::new();
    for problem in problems.iter().take(SUMMARY_PROBLEMS) {
        for (i, line) in problem.lines().take(SUMMARY_PROBLEM_LINES).enumerate() {
            out += if i == 0 {
                "\n      failed: "
            } else {
                "\n        "
            };
            out += line;
        }
    }
    if problems.len() > SUMMARY_PROBLEMS {
        out += &format!(
            "\n      and {} more (see \"vm-test problems\" above)",
            problems.len() - SUMMARY_PROBLEMS
        );
    }
    out
}

fn host_tests(artifacts: &Artifacts) -> Result<(bool, String)> {
    let log = cmd::workspace_root()
        .join("target")
        .join("ci")
        .join("host-tests.log");
    // The flood scenario runs 15 s, as in the guests (60 s by default): two threads connecting
    // as fast as they can would otherwise take a core from the guests for a minute.
    let env = [("NL_FLOOD_SECS", "15")];
    let host = hosttest::run(artifacts, &hosttest::Output::Log(log), &env)?;
    // The failed tests are named in the summary itself, the last thing CI prints.
    let mut detail = format!(
        "{} passed, {} failed, {} ignored",
        host.counts.passed, host.counts.failed, host.counts.ignored
    );
    for failure in host.failure_lines() {
        detail += &format!("\n      failed: {}", failure.replace('\n', "\n        "));
    }
    Ok((host.success, detail))
}

/// The Debian package from the release binary just built: a few seconds.
fn package_check(artifacts: &Artifacts) -> Result<(bool, String)> {
    let report = package::run(artifacts)?;
    Ok((
        true,
        format!(
            "{}: {} checks passed",
            report.deb.file_name().unwrap_or_default().to_string_lossy(),
            report.checks.len()
        ),
    ))
}

/// clippy with `-D warnings` on every crate: the workspace for the host (the fuzz crate
/// included: its dependencies are checked once, with the others'), and the eBPF crate for the
/// BPF target (as aya-build builds it).
fn clippy() -> Result<(bool, String)> {
    let root = cmd::workspace_root();
    let mut failed = Vec::new();
    // The eBPF object is not needed to check the host crates (the eBPF crate is checked on its
    // own below): AYA_BUILD_SKIP spares building it again for clippy's own build-script run.
    let mut workspace = lowest_priority(cmd::cargo());
    workspace
        .current_dir(&root)
        .args(["clippy", "--release", "--workspace", "--exclude"])
        .args(["netladder-ebpf", "--all-targets", "--", "-D", "warnings"])
        .env("AYA_BUILD_SKIP", "1");
    if !workspace.status()?.success() {
        failed.push("workspace");
    }
    let mut ebpf = lowest_priority(cmd::cargo());
    ebpf.current_dir(&root)
        .args([
            "+nightly",
            "clippy",
            "-p",
            "netladder-ebpf",
            "--bins",
            "--release",
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(root.join("target").join("clippy-ebpf"))
        .args(["--", "-D", "warnings"])
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        );
    if !ebpf.status()?.success() {
        failed.push("netladder-ebpf");
    }
    Ok(if failed.is_empty() {
        (
            true,
            "workspace (fuzz crate included), netladder-ebpf (bpfel): no warning".into(),
        )
    } else {
        (false, format!("warnings in {}", failed.join(", ")))
    })
}

/// A short fuzz run of every userspace parser. The build runs at the lowest priority, without
/// optimizations (`--dev`: 580 s of CPU against 1,240 s for the optimized build, measured on
/// December 5, which all came out of the guests' share); the runs themselves at the normal one,
/// so that each target gets its seconds. The fuzz targets only parse, so the eBPF object is not
/// built for them (AYA_BUILD_SKIP).
fn fuzz_run() -> Result<(bool, String)> {
    let args = fuzz::FuzzArgs {
        seconds: CI_FUZZ_SECS,
        target: Vec::new(),
        jobs: 2,
        log_dir: Some(cmd::workspace_root().join("target").join("ci").join("fuzz")),
        dev: true,
    };
    cmd::run(&mut lowest_priority(fuzz::cargo_fuzz("build", &args)))?;
    // The runs follow at the normal priority, two at a time (9 targets, about 135 s of CPU),
    // each target's output in a log of its own (a finding prints the end of its log).
    let failed = fuzz::run(&args)?;
    Ok(if failed.is_empty() {
        (
            true,
            format!("{CI_FUZZ_SECS} s per target (unoptimized build), no finding"),
        )
    } else {
        (false, format!("findings in {}", failed.join(", ")))
    })
}

/// `command` run through `nice -n 19` (its arguments, environment and directory).
fn lowest_priority(command: Command) -> Command {
    let mut niced = Command::new("nice");
    niced.args(["-n", "19"]).arg(command.get_program());
    niced.args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        niced.current_dir(dir);
    }
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => niced.env(key, value),
            None => niced.env_remove(key),
        };
    }
    niced
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_priority_keeps_the_arguments_environment_and_directory() {
        let mut command = Command::new("cargo");
        command
            .current_dir("/tmp")
            .args(["fuzz", "build"])
            .env("K", "v");
        let niced = lowest_priority(command);
        assert_eq!(niced.get_program(), "nice");
        let args: Vec<_> = niced.get_args().collect();
        assert_eq!(args, ["-n", "19", "cargo", "fuzz", "build"]);
        assert_eq!(niced.get_current_dir(), Some(std::path::Path::new("/tmp")));
        let envs: Vec<_> = niced.get_envs().collect();
        assert_eq!(
            envs,
            [(std::ffi::OsStr::new("K"), Some(std::ffi::OsStr::new("v")))]
        );
    }

    #[test]
    fn the_summary_names_each_vm_problem_with_the_start_of_its_message() {
        assert_eq!(problem_lines(&[]), "");
        let long: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
        let one = format!(
            "6.1: scenario dns::x FAILED\n    | {}",
            long.join("\n    | ")
        );
        let text = problem_lines(&[one]);
        assert!(text.starts_with("\n      failed: 6.1: scenario dns::x FAILED\n        "));
        assert_eq!(text.lines().count(), 1 + SUMMARY_PROBLEM_LINES);
        let many: Vec<String> = (0..6)
            .map(|i| format!("boot {i}: did not finish"))
            .collect();
        let text = problem_lines(&many);
        assert_eq!(text.matches("failed: ").count(), SUMMARY_PROBLEMS);
        assert!(text.ends_with("and 2 more (see \"vm-test problems\" above)"));
    }
}
