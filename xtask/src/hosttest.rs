//! `cargo xtask test`: unit tests and scenario tests on this host.
//!
//! The test binaries (built with `cargo test --no-run`, see `build::test_binaries`) are run one
//! after the other by this module, as `cargo test` would (from their package's directory), so
//! that each binary's and each test's time can be reported (libtest's `--report-time`); the doc
//! tests follow with `cargo test --doc`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::build::{self, Artifacts};
use crate::cmd;
use crate::libtest::{self, Counts, Outcome};

/// Where the output of the test binaries goes.
pub enum Output {
    /// Echoed as it comes (`cargo xtask test`).
    Echo,
    /// Written to this file; only one line per binary, and the failed tests' output at the end,
    /// are printed (CI, where the VM suite prints at the same time).
    Log(PathBuf),
}

pub struct HostSummary {
    pub counts: Counts,
    pub success: bool,
    /// Each failed test (binary::test) with the last lines of its output.
    pub failures: Vec<(String, Vec<String>)>,
}

impl HostSummary {
    /// One entry per failed test: its name and what says why, for the end of CI's output (which
    /// may be all a reader gets): the panic message's first lines (up to [`WHY_LINES`], until the
    /// backtrace note or a dump of events) when there is one, else its last line.
    pub fn failure_lines(&self) -> Vec<String> {
        self.failures
            .iter()
            .map(|(name, lines)| {
                let clip = |l: &String| l.trim().chars().take(200).collect::<String>();
                let why: Vec<String> = match lines.iter().position(|l| l.contains("panicked at")) {
                    Some(i) => lines[i + 1..]
                        .iter()
                        .take_while(|l| !l.starts_with("note: ") && l.trim() != "events:")
                        .take(WHY_LINES)
                        .map(clip)
                        .collect(),
                    None => lines.last().map(clip).into_iter().collect(),
                };
                format!("{name}: {}", why.join("\n  "))
            })
            .collect()
    }
}

/// How many lines of a failed test's panic message the summary repeats.
const WHY_LINES: usize = 8;

impl HostSummary {
    pub fn exit_code(&self) -> ExitCode {
        if self.success {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// How many of the slowest host tests the summary lists.
const SLOWEST: usize = 10;
/// How many lines of a failed test's output the summary repeats (the log has all of them).
const FAILURE_LINES: usize = 40;

/// Builds and runs every test binary of the workspace (the eBPF crate only builds for the BPF
/// target), each even after a failure, then the doc tests. `env` is added to the test
/// binaries' environment.
pub fn run(artifacts: &Artifacts, output: &Output, env: &[(&str, &str)]) -> Result<HostSummary> {
    if !cmd::is_root() {
        println!("test: not root: the scenario tests will skip (run as root to exercise them)");
    }
    let binaries = build::test_binaries(build::Profile::Release)?;
    let mut log: Box<dyn Write> = match output {
        Output::Echo => Box::new(std::io::stdout()),
        Output::Log(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            Box::new(File::create(path).with_context(|| format!("creating {}", path.display()))?)
        }
    };
    let mut counts = Counts::default();
    let mut success = true;
    let mut failures: Vec<(String, Vec<String>)> = Vec::new();
    let mut slowest: Vec<(Duration, String)> = Vec::new();
    for binary in &binaries {
        let mut command = Command::new(&binary.executable);
        command
            .current_dir(&binary.dir)
            .args(libtest::REPORT_TIME_ARGS)
            .env(libtest::REPORT_TIME_ENV.0, libtest::REPORT_TIME_ENV.1)
            .env("NETLADDER_BIN", &artifacts.netladder)
            .env("NL_PEER_BIN", &artifacts.nl_peer)
            .envs(env.iter().copied());
        writeln!(
            log,
            "     Running {} ({})",
            binary.name,
            binary.executable.display()
        )?;
        let started = Instant::now();
        let (ok, text) = run_logged(command, &mut log)?;
        let took = started.elapsed();
        let c = text.lines().filter_map(libtest::parse_summary).fold(
            Counts::default(),
            |mut sum, c| {
                sum.add(c);
                sum
            },
        );
        counts.add(c);
        success &= ok;
        let results = libtest::parse(&text);
        for test in &results {
            if let Some(time) = test.time {
                slowest.push((time, format!("{}::{}", binary.name, test.name)));
            }
            if matches!(test.outcome, Outcome::Fail | Outcome::NotFinished) {
                failures.push((
                    format!("{}::{}", binary.name, test.name),
                    test.output.clone(),
                ));
            }
        }
        if !ok && results.iter().all(|t| !matches!(t.outcome, Outcome::Fail)) {
            failures.push((
                binary.name.clone(),
                vec![format!(
                    "{} exited with a failure",
                    binary.executable.display()
                )],
            ));
        }
        if let Output::Log(_) = output {
            println!(
                "host: {:<34} {:>6.1} s  {} passed, {} failed, {} ignored",
                binary.name,
                took.as_secs_f64(),
                c.passed,
                c.failed,
                c.ignored
            );
        }
    }

    // Doc tests (none today; kept so that one added later runs).
    let started = Instant::now();
    let mut doc = cmd::cargo();
    doc.current_dir(cmd::workspace_root())
        .arg("test")
        .args(crate::build::WORKSPACE)
        .args(["--release", "--doc", "--no-fail-fast"]);
    let (ok, text) = run_logged(doc, &mut log)?;
    for c in text.lines().filter_map(libtest::parse_summary) {
        counts.add(c);
    }
    success &= ok;
    if !ok {
        failures.push(("doc tests".into(), vec!["cargo test --doc failed".into()]));
    }
    if let Output::Log(_) = output {
        println!(
            "host: {:<34} {:>6.1} s",
            "doc tests",
            started.elapsed().as_secs_f64()
        );
    }
    drop(log);

    for (name, lines) in &failures {
        println!("host: FAILED {name}");
        for line in lines.iter().rev().take(FAILURE_LINES).rev() {
            println!("    | {line}");
        }
    }
    slowest.sort_by_key(|(time, _)| std::cmp::Reverse(*time));
    println!("host tests, slowest:");
    for (time, name) in slowest.iter().take(SLOWEST) {
        println!("  {:>6.1} s  {name}", time.as_secs_f64());
    }
    if let Output::Log(path) = output {
        println!("host tests: full output in {}", path.display());
    }
    println!(
        "host tests: {} passed, {} failed, {} ignored",
        counts.passed, counts.failed, counts.ignored
    );
    Ok(HostSummary {
        counts,
        success,
        failures,
    })
}

/// Runs `command` with stdout and stderr going to `log` (line by line, both through one pipe);
/// its success and everything it printed.
fn run_logged(mut command: Command, log: &mut dyn Write) -> Result<(bool, String)> {
    let described = cmd::describe(&command);
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    command
        .stdin(Stdio::null())
        .stdout(writer.try_clone().context("duplicating a pipe")?)
        .stderr(writer);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{described}`"))?;
    // Dropping the command closes this process's copies of the write end: EOF comes when the
    // child (and whatever it started) has closed its own.
    drop(command);
    let mut text = String::new();
    for line in BufReader::new(reader).lines() {
        let line = line.with_context(|| format!("reading the output of `{described}`"))?;
        writeln!(log, "{line}")?;
        text.push_str(&line);
        text.push('\n');
    }
    log.flush()?;
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{described}`"))?;
    Ok((status.success(), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_test_is_named_with_its_panic_message() {
        let summary = HostSummary {
            counts: Counts::default(),
            success: false,
            failures: vec![
                (
                    "rungs::arp".into(),
                    vec![
                        "NL-CLIENT something".into(),
                        "thread 'arp' panicked at tests/tests/rungs.rs:12:5:".into(),
                        "  one event per connection: 3 != 4".into(),
                        "note: run with `RUST_BACKTRACE=1`".into(),
                    ],
                ),
                (
                    "rungs::ports".into(),
                    vec![
                        "thread 'ports' panicked at tests/tests/rungs.rs:9:5:".into(),
                        "1 client(s) toward 10.0.0.2:80 read differently from the scenario:".into(),
                        "  curl: no event".into(),
                        "events:".into(),
                        "  blocking: #028".into(),
                    ],
                ),
                ("cli".into(), vec!["cli exited with a failure".into()]),
                ("doc tests".into(), vec![]),
            ],
        };
        assert_eq!(
            summary.failure_lines(),
            [
                "rungs::arp: one event per connection: 3 != 4",
                "rungs::ports: 1 client(s) toward 10.0.0.2:80 read differently from the \
                 scenario:\n  curl: no event",
                "cli: cli exited with a failure",
                "doc tests: ",
            ]
        );
    }
}
