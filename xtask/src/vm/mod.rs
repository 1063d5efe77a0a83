//! `cargo xtask vm-test`: the scenario tests inside QEMU on Debian kernels, twice per kernel
//! (optional hooks allowed, and forced off), reported as a kernel x scenario table.

mod debian;
mod debversion;
mod initramfs;
mod modules;
mod qemu;
mod report;
pub mod selection;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::build::{self, Artifacts};
use crate::{cmd, setup};
use debian::Kernel;
pub use debian::{select as kernels, KernelSpec};
pub use initramfs::test_name;
use report::{MachineStatus, RunReport, Totals};

#[derive(Args)]
pub struct VmTestArgs {
    /// Kernels to test: 5.10, 6.1, 6.12, sid, all, or a comma-separated list.
    #[arg(long, default_value = "all")]
    kernel: String,
    /// Make one scenario assert a deliberately wrong code (shows that a failure is caught).
    #[arg(long)]
    expect_fail_demo: bool,
    /// Boot with a broken kernel command line (shows that a dead kernel is reported).
    #[arg(long)]
    bad_cmdline_demo: bool,
    /// Seconds one boot may take before QEMU is killed.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Which test binaries each boot runs: `all` (every binary, both modes), or `ci`, CI's
    /// selection (xtask/src/vm/selection.rs) on the kernels named.
    #[arg(long, default_value = "all", value_parser = ["all", "ci"])]
    selection: String,
    /// Virtual machines to run at once (each takes one CPU core under TCG).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
    /// Use this netladder binary instead of building the workspace (with --nl-peer, --test-bin).
    #[arg(long, requires_all = ["nl_peer", "test_bin"])]
    netladder: Option<PathBuf>,
    /// Use this nl-peer binary instead of building the workspace.
    #[arg(long, requires_all = ["netladder", "test_bin"])]
    nl_peer: Option<PathBuf>,
    /// Use this scenario test binary instead of building the workspace (repeatable).
    #[arg(long, requires_all = ["netladder", "nl_peer"])]
    test_bin: Vec<PathBuf>,
}

/// Knobs of one suite run.
pub struct SuiteOptions {
    pub expect_fail_demo: bool,
    pub timeout: Duration,
    pub jobs: u16,
}

pub struct SuiteOutcome {
    pub totals: Totals,
    /// Each failed test, boot or check, with its excerpt (as printed under "vm-test problems").
    pub problems: Vec<String>,
}

impl SuiteOutcome {
    pub fn success(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn exit_code(&self) -> ExitCode {
        if self.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// One boot of a kernel: a label suffix and what it adds to the kernel command line.
struct Mode {
    suffix: &'static str,
    cmdline: &'static str,
}

const NORMAL: Mode = Mode {
    suffix: "",
    cmdline: "",
};
/// The scenario helper appends NL_WATCH_ARGS to every `netladder watch` it starts.
const NO_OPTIONAL_HOOKS: Mode = Mode {
    suffix: "/no-optional",
    cmdline: "NL_WATCH_ARGS=--no-optional-hooks",
};
/// The initramfs has no /nonexistent: the kernel falls back to mounting a root disk, finds
/// none, and panics before any test runs.
const BAD_CMDLINE: Mode = Mode {
    suffix: "/bad-cmdline",
    cmdline: "rdinit=/nonexistent",
};

/// NL_FLOOD_SECS: the flood scenario (60 s on the host) runs 15 s per boot.
const BASE_CMDLINE: &str = "console=ttyS0 panic=-1 mitigations=off NL_FLOOD_SECS=15";

pub fn run(args: &VmTestArgs) -> Result<SuiteOutcome> {
    let kernels = debian::select(&args.kernel)?;
    let artifacts = match &args.netladder {
        Some(netladder) => Artifacts {
            netladder: netladder.clone(),
            nl_peer: args.nl_peer.clone().unwrap_or_default(),
            scenario_tests: args.test_bin.clone(),
        },
        None => {
            setup::run_for_tests()?;
            build::run(build::Profile::Release)?
        }
    };
    let options = SuiteOptions {
        expect_fail_demo: args.expect_fail_demo,
        timeout: Duration::from_secs(args.timeout),
        jobs: args.jobs,
    };
    let boots: Vec<BootPlan> = if args.bad_cmdline_demo {
        kernels
            .iter()
            .map(|kernel| BootPlan {
                kernel,
                mode: &BAD_CMDLINE,
                tests: None,
                env: Vec::new(),
                part: None,
            })
            .collect()
    } else if args.selection == "ci" {
        let names: Vec<String> = artifacts
            .scenario_tests
            .iter()
            .map(|t| test_name(t))
            .collect();
        print!("{}", selection::describe());
        selection::ci_boots(&names)?
            .into_iter()
            .filter(|b| kernels.iter().any(|k| k.label == b.kernel.label))
            .collect()
    } else {
        every_boot(&kernels)
    };
    suite(&artifacts, &boots, &options)
}

/// What one boot of the hook plans benchmark printed (`cargo xtask vm-bench`).
pub struct BenchBoot {
    /// `tcg` or `kvm`.
    pub accel: &'static str,
    /// The kernel release the guest booted.
    pub release: String,
    /// Everything the guest wrote on its results port.
    pub results: String,
}

/// Where the plans benchmark builds its initramfs.
fn bench_work() -> PathBuf {
    cmd::workspace_root()
        .join("target")
        .join("vm-cache")
        .join("initramfs-bench")
}

/// The part of the plans benchmark's initramfs shared by every kernel (built once per run).
pub fn bench_initramfs(artifacts: &Artifacts) -> Result<PathBuf> {
    let work = bench_work();
    fs::create_dir_all(&work)?;
    initramfs::build_common(artifacts, &work)
}

/// Boots `spec` once with `NL_BENCH=ROUNDS:SECONDS` and the shared archive `common`
/// ([`bench_initramfs`]): its init runs the plans benchmark (xtask/vm/bench) instead of the
/// tests.
pub fn boot_bench(
    spec: &'static KernelSpec,
    common: &Path,
    rounds: u32,
    seconds: u32,
    timeout: Duration,
) -> Result<BenchBoot> {
    let cache = cmd::workspace_root().join("target").join("vm-cache");
    let (kernel, cpio) = prepare(spec, common, &cache, &bench_work())?;
    let dir = cache.join("runs").join(format!("bench-{}", spec.label));
    let boot = qemu::Boot {
        kernel: &kernel.vmlinuz,
        initramfs: &cpio,
        cmdline: format!("{BASE_CMDLINE} NL_BENCH={rounds}:{seconds}"),
        dir: &dir,
        timeout,
    };
    let accel = qemu::choose_accel(&boot)?;
    let result = qemu::boot(&boot, accel)?;
    if let qemu::End::TimedOut = result.end {
        anyhow::bail!(
            "{}: the benchmark boot did not end within {} s (output in {})",
            spec.label,
            timeout.as_secs(),
            dir.display()
        );
    }
    Ok(BenchBoot {
        accel: result.accel.name(),
        release: kernel.release.clone(),
        results: read_lossy(&result.results),
    })
}

/// Downloads and unpacks the kernels (what `suite` would do first), so that CI can do it while
/// it builds. Errors are left for `suite` to report.
pub fn fetch_kernels(kernels: &[&'static KernelSpec]) {
    let cache = cmd::workspace_root().join("target").join("vm-cache");
    for spec in kernels {
        if let Err(err) = debian::prepare(spec, &cache) {
            println!(
                "vm-test: {}: cannot fetch the kernel yet: {err:#}",
                spec.label
            );
        }
    }
}

/// One boot to make: a kernel, a mode, and the scenario test binaries to run (all when None).
pub struct BootPlan {
    pub kernel: &'static KernelSpec,
    mode: &'static Mode,
    pub tests: Option<Vec<&'static str>>,
    /// Variables for the test binaries (kernel command line words `NAME=VALUE`).
    pub env: Vec<(&'static str, &'static str)>,
    /// Which part of its kernel and mode this boot is, when their binaries are split over
    /// several boots (its label then ends in `#N`).
    pub part: Option<u8>,
}

impl BootPlan {
    /// A boot with the optional hooks allowed (`optional_hooks`) or forced off.
    pub fn new(
        kernel: &'static KernelSpec,
        optional_hooks: bool,
        tests: Option<Vec<&'static str>>,
    ) -> BootPlan {
        let mode = if optional_hooks {
            &NORMAL
        } else {
            &NO_OPTIONAL_HOOKS
        };
        BootPlan {
            kernel,
            mode,
            tests,
            env: Vec::new(),
            part: None,
        }
    }

    pub(crate) fn label(&self) -> String {
        label(self.kernel.label, self.mode, self.part)
    }
}

/// A boot's name in the report: the kernel, the mode, and the part when split.
fn label(kernel: &str, mode: &Mode, part: Option<u8>) -> String {
    let part = part.map(|n| format!("#{n}")).unwrap_or_default();
    format!("{kernel}{}{part}", mode.suffix)
}

/// Every test binary on every given kernel, in both modes.
pub fn every_boot(kernels: &[&'static KernelSpec]) -> Vec<BootPlan> {
    kernels
        .iter()
        .flat_map(|kernel| [true, false].map(|optional| BootPlan::new(kernel, optional, None)))
        .collect()
}

/// Makes the boots, `options.jobs` at a time: those that run every test binary first (the
/// longest), the table in the order given.
pub fn suite(
    artifacts: &Artifacts,
    boots: &[BootPlan],
    options: &SuiteOptions,
) -> Result<SuiteOutcome> {
    let cache = cmd::workspace_root().join("target").join("vm-cache");
    let work = cache.join("initramfs");
    fs::create_dir_all(&work)?;
    let common = initramfs::build_common(artifacts, &work)?;
    let mut runs = Vec::new();
    let mut kernels: Vec<&'static KernelSpec> = Vec::new();
    for boot in boots {
        if !kernels.iter().any(|k| k.label == boot.kernel.label) {
            kernels.push(boot.kernel);
        }
    }
    let mut ready: Vec<(&'static str, (Kernel, PathBuf))> = Vec::new();
    for spec in kernels {
        match prepare(spec, &common, &cache, &work) {
            Ok(kernel) => ready.push((spec.label, kernel)),
            Err(err) => {
                println!(
                    "vm-test: {}: cannot prepare the kernel: {err:#}",
                    spec.label
                );
                for (order, boot) in boots.iter().enumerate() {
                    if boot.kernel.label == spec.label {
                        runs.push((order, unprepared(boot, &err)));
                    }
                }
            }
        }
    }
    let mut jobs: Vec<Job> = boots
        .iter()
        .enumerate()
        .filter_map(|(order, boot)| {
            let (_, (kernel, cpio)) = ready.iter().find(|(l, _)| *l == boot.kernel.label)?;
            Some(Job {
                order,
                kernel,
                cpio,
                mode: boot.mode,
                tests: boot.tests.as_deref(),
                env: &boot.env,
                part: boot.part,
            })
        })
        .collect();
    // Longest first: a boot of every binary before the selections (stable otherwise).
    jobs.sort_by_key(|job| std::cmp::Reverse(job.tests.map_or(usize::MAX, <[_]>::len)));
    runs.extend(run_jobs(&jobs, options, &cache)?);
    runs.sort_by_key(|(order, _)| *order);
    let runs: Vec<RunReport> = runs.into_iter().map(|(_, run)| run).collect();
    Ok(summarize(&runs, &cache))
}

/// Downloads (once) and unpacks the kernel, and builds its initramfs.
fn prepare(
    spec: &'static KernelSpec,
    common: &Path,
    cache: &Path,
    work: &Path,
) -> Result<(Kernel, PathBuf)> {
    let kernel = debian::prepare(spec, cache)?;
    let cpio = initramfs::build_for_kernel(common, &kernel, work)?;
    println!(
        "vm-test: {}: {} (initramfs {} MiB)",
        spec.label,
        kernel.release,
        fs::metadata(&cpio)?.len() >> 20
    );
    Ok((kernel, cpio))
}

/// One boot to do; `order` is its place in the table.
struct Job<'a> {
    order: usize,
    kernel: &'a Kernel,
    cpio: &'a Path,
    mode: &'a Mode,
    tests: Option<&'a [&'static str]>,
    env: &'a [(&'static str, &'static str)],
    part: Option<u8>,
}

/// Runs the boots, `options.jobs` at a time, after choosing the accelerator with a probe boot
/// of the first kernel.
fn run_jobs(jobs: &[Job], options: &SuiteOptions, cache: &Path) -> Result<Vec<(usize, RunReport)>> {
    let Some(first) = jobs.first() else {
        return Ok(Vec::new());
    };
    let accel = qemu::choose_accel(&qemu::Boot {
        kernel: &first.kernel.vmlinuz,
        initramfs: first.cpio,
        cmdline: cmdline(first.mode, None, &[], options),
        dir: &cache.join("runs").join("kvm-probe"),
        timeout: options.timeout,
    })?;
    cmd::parallel(jobs, usize::from(options.jobs), |job| {
        boot_once(job, options, cache, accel).map(|report| (job.order, report))
    })
    .into_iter()
    .collect()
}

fn unprepared(boot: &BootPlan, err: &anyhow::Error) -> RunReport {
    RunReport {
        label: boot.label(),
        selected: boot
            .tests
            .as_ref()
            .map(|t| t.iter().map(|s| s.to_string()).collect()),
        status: MachineStatus::DidNotBoot(format!("cannot prepare the kernel: {err:#}")),
        elapsed: Duration::ZERO,
        usage: None,
        stream: report::Stream::default(),
        console_tail: Vec::new(),
    }
}

/// The kernel command line: the mode's words, the demo flag, (NL_TESTS) the test binaries to
/// run when not all of them, and the boot's variables (the kernel hands `NAME=VALUE` words it
/// does not know to init's environment).
fn cmdline(
    mode: &Mode,
    tests: Option<&[&str]>,
    env: &[(&str, &str)],
    options: &SuiteOptions,
) -> String {
    let mut words = vec![BASE_CMDLINE.to_string(), mode.cmdline.to_string()];
    if options.expect_fail_demo {
        words.push("NL_EXPECT_FAIL_DEMO=1".to_string());
    }
    if let Some(tests) = tests {
        words.push(format!("NL_TESTS={}", tests.join(",")));
    }
    words.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    words.retain(|w| !w.is_empty());
    words.join(" ")
}

fn boot_once(
    job: &Job,
    options: &SuiteOptions,
    cache: &Path,
    accel: qemu::Accel,
) -> Result<RunReport> {
    let Job {
        kernel,
        cpio,
        mode,
        tests,
        env,
        part,
        ..
    } = job;
    let label = label(kernel.label, mode, *part);
    let dir = cache.join("runs").join(label.replace('/', "-"));
    let words: Vec<String> = env.iter().map(|(k, v)| format!(" {k}={v}")).collect();
    println!("vm-test: {label}: booting{}", words.concat());
    let boot = qemu::Boot {
        kernel: &kernel.vmlinuz,
        initramfs: cpio,
        cmdline: cmdline(mode, *tests, env, options),
        dir: &dir,
        timeout: options.timeout,
    };
    let result = qemu::boot(&boot, accel)?;
    let stream = report::parse_stream(&read_lossy(&result.results));
    let console = read_lossy(&result.console);
    let mut console_tail = report::last_lines(&console);
    if console_tail.is_empty() {
        console_tail = report::last_lines(&read_lossy(&dir.join("qemu.log")));
    }
    let status = machine_status(&stream, &result.end, options.timeout, &console);
    let report = RunReport {
        label,
        selected: tests.map(|t| t.iter().map(|s| s.to_string()).collect()),
        status,
        elapsed: result.elapsed,
        usage: result.usage,
        stream,
        console_tail,
    };
    print_progress(&report, result.accel);
    Ok(report)
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

fn machine_status(
    stream: &report::Stream,
    end: &qemu::End,
    timeout: Duration,
    console: &str,
) -> MachineStatus {
    let panic = console
        .lines()
        .find(|l| l.contains("Kernel panic"))
        .map(|l| l.trim().to_string());
    let why = match (end, panic) {
        (qemu::End::TimedOut, _) => format!("killed after {} s", timeout.as_secs()),
        (qemu::End::Exited, Some(panic)) => panic,
        (qemu::End::Exited, None) => "QEMU exited early".to_string(),
        (qemu::End::KvmFailed(why), _) => why.to_string(),
    };
    match (&stream.started, stream.ended) {
        (None, _) => MachineStatus::DidNotBoot(why),
        (Some(_), false) => MachineStatus::DidNotFinish(why),
        (Some(_), true) => MachineStatus::Finished,
    }
}

fn print_progress(run: &RunReport, accel: qemu::Accel) {
    let seconds = run.elapsed.as_secs_f64();
    match &run.status {
        MachineStatus::Finished => {
            let t = report::stream_totals(&run.stream);
            println!(
                "vm-test: {}: finished in {seconds:.1} s ({}): {} passed, {} failed, {} skipped",
                run.label,
                accel.name(),
                t.passed,
                t.failed,
                t.skipped
            );
        }
        MachineStatus::DidNotBoot(why) => {
            println!(
                "vm-test: {}: did not boot after {seconds:.1} s ({}): {why}",
                run.label,
                accel.name()
            )
        }
        MachineStatus::DidNotFinish(why) => {
            println!(
                "vm-test: {}: did not finish after {seconds:.1} s ({}): {why}",
                run.label,
                accel.name()
            )
        }
    }
}

fn summarize(runs: &[RunReport], cache: &Path) -> SuiteOutcome {
    let (table, totals) = report::render_table(runs);
    let problems = report::problems(runs);
    println!(
        "\nvm-test results (logs in {}):\n",
        cache.join("runs").display()
    );
    print!("{table}");
    println!("\nvm-test timings:\n");
    print!("{}", report::render_timings(runs));
    if !problems.is_empty() {
        println!("\nvm-test problems:");
        for problem in &problems {
            println!("- {problem}");
        }
    }
    println!(
        "\nvm-test: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.skipped
    );
    SuiteOutcome { totals, problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(expect_fail_demo: bool) -> SuiteOptions {
        SuiteOptions {
            expect_fail_demo,
            timeout: Duration::from_secs(60),
            jobs: 1,
        }
    }

    #[test]
    fn command_lines_carry_the_mode_and_the_demo_flag() {
        assert_eq!(
            cmdline(&NORMAL, None, &[], &options(false)),
            "console=ttyS0 panic=-1 mitigations=off NL_FLOOD_SECS=15"
        );
        assert_eq!(
            cmdline(&NO_OPTIONAL_HOOKS, None, &[], &options(true)),
            "console=ttyS0 panic=-1 mitigations=off NL_FLOOD_SECS=15 \
             NL_WATCH_ARGS=--no-optional-hooks NL_EXPECT_FAIL_DEMO=1"
        );
        assert_eq!(
            cmdline(
                &NORMAL,
                Some(&["rungs", "scenarios"]),
                &[("NL_CLIENTS", "blocking,nonblocking-poll")],
                &options(false)
            ),
            "console=ttyS0 panic=-1 mitigations=off NL_FLOOD_SECS=15 NL_TESTS=rungs,scenarios \
             NL_CLIENTS=blocking,nonblocking-poll"
        );
    }

    #[test]
    fn machine_status_tells_no_boot_from_no_finish() {
        let timeout = Duration::from_secs(60);
        let panic = "[ 2.6] Kernel panic - not syncing: VFS: Unable to mount root fs\n";
        let silent = report::parse_stream("");
        assert_eq!(
            machine_status(&silent, &qemu::End::Exited, timeout, panic),
            MachineStatus::DidNotBoot(
                "[ 2.6] Kernel panic - not syncing: VFS: Unable to mount root fs".into()
            )
        );
        let started = report::parse_stream("NL-VM-START 6.1\nNL-VM-BINARY-START t\n");
        assert_eq!(
            machine_status(&started, &qemu::End::TimedOut, timeout, ""),
            MachineStatus::DidNotFinish("killed after 60 s".into())
        );
        let done = report::parse_stream("NL-VM-START 6.1\nNL-VM-END\n");
        assert_eq!(
            machine_status(&done, &qemu::End::Exited, timeout, ""),
            MachineStatus::Finished
        );
    }
}
