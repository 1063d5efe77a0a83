//! `cargo xtask ci` (what .ci/run calls): setup, build, host tests, then the VM suite.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{build, fuzz, hosttest, package, setup, vm};

/// Kernels CI boots, each twice (optional hooks on, and forced off). Measured under TCG on
/// November 22 with 11 scenario binaries (about 100 tests, the DNS, TLS and ssh rungs
/// included): 620-710 s per boot, so all four kernels take about 45 minutes with two machines at
/// once, and the whole CI about an hour. Narrow this to "6.1,6.12" if the suite outgrows that.
const CI_KERNELS: &str = "all";
/// Virtual machines at once: CI has the machine to itself, and each TCG guest uses one core.
const CI_JOBS: u16 = 2;
/// Seconds of fuzzing per target in CI.
const CI_FUZZ_SECS: u32 = 15;
/// Bound on one boot (the whole scenario suite of one kernel and mode): well above the 710 s
/// measured, so a slower CI machine is not cut off.
const CI_BOOT_TIMEOUT_SECS: u64 = 1200;

struct Step {
    name: &'static str,
    ok: bool,
    seconds: u64,
    detail: String,
}

pub fn run() -> Result<ExitCode> {
    let mut steps = Vec::new();

    let started = Instant::now();
    setup::run()?;
    let artifacts = build::run(build::Profile::Release)?;
    steps.push(Step {
        name: "setup + build",
        ok: true,
        seconds: started.elapsed().as_secs(),
        detail: String::new(),
    });

    let started = Instant::now();
    let host = hosttest::run(&artifacts)?;
    steps.push(Step {
        name: "host tests",
        ok: host.success,
        seconds: started.elapsed().as_secs(),
        detail: format!(
            "{} passed, {} failed, {} ignored",
            host.counts.passed, host.counts.failed, host.counts.ignored
        ),
    });

    // The Debian package from the release binary just built: a few seconds.
    let started = Instant::now();
    let (ok, detail) = match package::run(&artifacts) {
        Ok(report) => (
            true,
            format!(
                "{}: {} checks passed",
                report.deb.file_name().unwrap_or_default().to_string_lossy(),
                report.checks.len()
            ),
        ),
        Err(e) => {
            eprintln!("ci: package: {e:#}");
            (false, format!("{e:#}"))
        }
    };
    steps.push(Step {
        name: "package",
        ok,
        seconds: started.elapsed().as_secs(),
        detail,
    });

    // A short fuzz run of every userspace parser (building the targets takes a few minutes).
    let started = Instant::now();
    let fuzz_args = fuzz::FuzzArgs {
        seconds: CI_FUZZ_SECS,
        target: Vec::new(),
    };
    let (ok, detail) = match fuzz::run(&fuzz_args) {
        Ok(failed) if failed.is_empty() => {
            (true, format!("{CI_FUZZ_SECS} s per target, no finding"))
        }
        Ok(failed) => (false, format!("findings in {}", failed.join(", "))),
        Err(e) => (false, format!("{e:#}")),
    };
    steps.push(Step {
        name: "fuzz",
        ok,
        seconds: started.elapsed().as_secs(),
        detail,
    });

    let started = Instant::now();
    let kernels = vm::kernels(CI_KERNELS)?;
    let options = vm::SuiteOptions {
        expect_fail_demo: false,
        bad_cmdline_demo: false,
        timeout: Duration::from_secs(CI_BOOT_TIMEOUT_SECS),
        jobs: CI_JOBS,
    };
    let suite = vm::suite(&artifacts, &kernels, &options)?;
    steps.push(Step {
        name: "vm-test",
        ok: suite.success(),
        seconds: started.elapsed().as_secs(),
        detail: format!(
            "kernels {CI_KERNELS}: {} passed, {} failed, {} skipped",
            suite.totals.passed, suite.totals.failed, suite.totals.skipped
        ),
    });

    println!("\nci summary:");
    for step in &steps {
        let verdict = if step.ok { "ok" } else { "FAILED" };
        println!(
            "  {:<14} {verdict:<7} {:>5} s  {}",
            step.name, step.seconds, step.detail
        );
    }
    let passed = host.counts.passed as usize + suite.totals.passed;
    let failed = host.counts.failed as usize + suite.totals.failed;
    println!(
        "ci: {passed} passed, {failed} failed, {} skipped",
        suite.totals.skipped
    );
    Ok(if steps.iter().all(|s| s.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
