//! What one VM run produced (read from the results serial port) and the kernel x scenario table.

use std::fmt::Write as _;
use std::time::Duration;

use super::qemu::Usage;
use crate::libtest::{self, Outcome, TestResult};

const START: &str = "NL-VM-START";
const END: &str = "NL-VM-END";
const BINARY_START: &str = "NL-VM-BINARY-START";
const BINARY_END: &str = "NL-VM-BINARY-END";
const MODULE_FAILED: &str = "NL-VM-MODULE-FAILED";
const HOOKS: &str = "NL-VM-HOOKS";
/// How many lines of a console or of a failed test's output a report shows.
pub const TAIL_LINES: usize = 40;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct BinaryRun {
    pub name: String,
    /// None when the machine stopped before the binary ended.
    pub exit_status: Option<i32>,
    /// How long the binary ran, in the guest's clock (from its end marker).
    pub time: Option<Duration>,
    pub tests: Vec<TestResult>,
}

/// The marker lines and test output of one boot's results port.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stream {
    /// `uname -r` inside the VM, once init started.
    pub started: Option<String>,
    pub ended: bool,
    pub module_failures: Vec<String>,
    /// Programs the kernel's verifier refused for a reason of netladder's own making (see
    /// [`own_refusal`]), each as its `netladder hooks` line.
    pub verifier_refusals: Vec<String>,
    pub binaries: Vec<BinaryRun>,
}

/// Whether a `netladder hooks` line is a program the verifier refused for a reason of
/// netladder's own making (stack size, bounds, ...), not for a helper or feature this kernel
/// lacks. Such a refusal silently turns the scenarios that need the program into skips, so the
/// VM run counts it as a failure of its own.
fn own_refusal(hooks_line: &str) -> bool {
    let mut cols = hooks_line.split_whitespace();
    let refused = cols.nth(2) == Some("REFUSED");
    // A helper the kernel does not offer to this program type is a capability limit, named by
    // `netladder hooks` and docs/kernels.md.
    let missing_helper =
        hooks_line.contains("unknown func") || hooks_line.contains("cannot use helper");
    refused && hooks_line.contains("(verifier:") && !missing_helper
}

pub fn parse_stream(text: &str) -> Stream {
    let mut stream = Stream::default();
    let mut current: Option<(String, String)> = None; // binary name, its output
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        let marker = line.trim();
        if let Some(release) = marker.strip_prefix(START) {
            stream.started = Some(release.trim().to_string());
        } else if marker == END {
            stream.ended = true;
        } else if let Some(module) = marker.strip_prefix(MODULE_FAILED) {
            stream.module_failures.push(module.trim().to_string());
        } else if let Some(hook) = marker.strip_prefix(HOOKS) {
            if own_refusal(hook) {
                stream.verifier_refusals.push(hook.trim().to_string());
            }
        } else if let Some(name) = marker.strip_prefix(BINARY_START) {
            current = Some((name.trim().to_string(), String::new()));
        } else if let Some(rest) = marker.strip_prefix(BINARY_END) {
            // `NAME STATUS SECONDSs`
            let mut words = rest.split_whitespace().skip(1);
            let status = words.next().and_then(|s| s.parse().ok());
            let time = words.next().and_then(libtest::seconds);
            if let Some((name, output)) = current.take() {
                stream.binaries.push(BinaryRun {
                    name,
                    exit_status: status,
                    time,
                    tests: libtest::parse(&output),
                });
            }
        } else if let Some((_, output)) = current.as_mut() {
            output.push_str(line);
            output.push('\n');
        }
    }
    if let Some((name, output)) = current {
        stream.binaries.push(BinaryRun {
            name,
            exit_status: None,
            time: None,
            tests: libtest::parse(&output),
        });
    }
    stream
}

#[derive(Debug, PartialEq, Eq)]
pub enum MachineStatus {
    Finished,
    DidNotBoot(String),
    DidNotFinish(String),
}

/// Everything the table and the problem list need about one run (one kernel, one mode).
#[derive(Debug)]
pub struct RunReport {
    pub label: String,
    /// The test binaries this boot was to run, when not all of them (a selection).
    pub selected: Option<Vec<String>>,
    pub status: MachineStatus,
    pub elapsed: Duration,
    /// QEMU's CPU time and its wait for a CPU, when they could be read: CPU time well below
    /// `elapsed` means the guest mostly waited (on timers, or for a CPU: `waited`).
    pub usage: Option<Usage>,
    pub stream: Stream,
    pub console_tail: Vec<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// A table row: one test of one binary.
struct Row {
    /// `binary::test` when several test binaries ran, else the test name.
    label: String,
    binary: String,
    test: String,
}

fn rows(runs: &[RunReport]) -> Vec<Row> {
    let mut binaries: Vec<&str> = runs
        .iter()
        .flat_map(|r| r.stream.binaries.iter().map(|b| b.name.as_str()))
        .collect();
    binaries.sort();
    binaries.dedup();
    let qualify = binaries.len() > 1;
    let mut rows: Vec<Row> = Vec::new();
    for run in runs {
        for binary in &run.stream.binaries {
            for test in &binary.tests {
                let label = if qualify {
                    format!("{}::{}", binary.name, test.name)
                } else {
                    test.name.clone()
                };
                if !rows.iter().any(|r| r.label == label) {
                    rows.push(Row {
                        label,
                        binary: binary.name.clone(),
                        test: test.name.clone(),
                    });
                }
            }
        }
    }
    rows
}

fn find<'a>(run: &'a RunReport, binary: &str, test: &str) -> Option<&'a TestResult> {
    run.stream
        .binaries
        .iter()
        .filter(|b| b.name == binary)
        .flat_map(|b| b.tests.iter())
        .find(|t| t.name == test)
}

/// The kernel x scenario table, skip-reason footnotes, and the totals.
pub fn render_table(runs: &[RunReport]) -> (String, Totals) {
    let mut footnotes: Vec<String> = Vec::new();
    let mut totals = Totals::default();
    let mut grid: Vec<Vec<String>> = Vec::new();
    let mut not_selected = false;

    let mut header = vec!["scenario".to_string()];
    header.extend(runs.iter().map(|r| r.label.clone()));
    grid.push(header);
    let mut machine = vec!["(machine)".to_string()];
    machine.extend(runs.iter().map(machine_cell));
    grid.push(machine);

    for row in rows(runs) {
        let mut line = vec![row.label.clone()];
        for run in runs {
            let outcome = find(run, &row.binary, &row.test).map(|t| &t.outcome);
            let unselected = run
                .selected
                .as_ref()
                .is_some_and(|s| !s.contains(&row.binary));
            if outcome.is_none() && unselected {
                line.push(NOT_SELECTED.to_string());
                not_selected = true;
            } else {
                line.push(cell(outcome, &mut totals, &mut footnotes));
            }
        }
        grid.push(line);
    }
    totals.failed += runs
        .iter()
        .filter(|r| r.status != MachineStatus::Finished)
        .count();

    let mut out = render_grid(&grid);
    if not_selected {
        let _ = writeln!(
            out,
            "  {NOT_SELECTED}: the test binary is not in this boot's selection \
             (xtask/src/vm/selection.rs)"
        );
    }
    for (i, reason) in footnotes.iter().enumerate() {
        let _ = writeln!(out, "  [{}] skipped: {reason}", i + 1);
    }
    (out, totals)
}

/// The cell of a test whose binary the boot was not asked to run.
const NOT_SELECTED: &str = "not run";

/// How many of the slowest tests [`render_timings`] lists.
const SLOWEST: usize = 15;

/// Where the time of each run went: the machine (wall clock, QEMU's CPU time), each test binary
/// (guest clock), and the slowest tests (libtest's `--report-time`).
pub fn render_timings(runs: &[RunReport]) -> String {
    let mut grid: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["seconds".to_string()];
    header.extend(runs.iter().map(|r| r.label.clone()));
    grid.push(header);
    let mut machine = vec!["(machine, wall)".to_string()];
    machine.extend(
        runs.iter()
            .map(|r| format!("{:.0}", r.elapsed.as_secs_f64())),
    );
    grid.push(machine);
    for (title, part) in [
        (
            "(qemu on a cpu)",
            (|u: Usage| u.cpu) as fn(Usage) -> Duration,
        ),
        ("(qemu waiting for one)", |u: Usage| u.waited),
    ] {
        let mut line = vec![title.to_string()];
        line.extend(runs.iter().map(|r| {
            r.usage
                .map_or("-".to_string(), |u| format!("{:.0}", part(u).as_secs_f64()))
        }));
        grid.push(line);
    }
    let mut binaries: Vec<&str> = Vec::new();
    for run in runs {
        for binary in &run.stream.binaries {
            if !binaries.contains(&binary.name.as_str()) {
                binaries.push(&binary.name);
            }
        }
    }
    for name in binaries {
        let mut line = vec![name.to_string()];
        line.extend(runs.iter().map(|run| {
            match run.stream.binaries.iter().find(|b| b.name == name) {
                Some(b) => b
                    .time
                    .map_or("?".to_string(), |t| format!("{:.0}", t.as_secs_f64())),
                None => "-".to_string(),
            }
        }));
        grid.push(line);
    }
    let mut out = render_grid(&grid);
    let mut tests: Vec<(f64, &str, &str, &str)> = runs
        .iter()
        .flat_map(|run| {
            run.stream.binaries.iter().flat_map(move |b| {
                b.tests.iter().filter_map(move |t| {
                    t.time.map(|d| {
                        let name = (run.label.as_str(), b.name.as_str(), t.name.as_str());
                        (d.as_secs_f64(), name.0, name.1, name.2)
                    })
                })
            })
        })
        .collect();
    tests.sort_by(|a, b| b.0.total_cmp(&a.0));
    if !tests.is_empty() {
        let _ = writeln!(out, "slowest tests:");
        for (seconds, run, binary, test) in tests.iter().take(SLOWEST) {
            let _ = writeln!(out, "  {seconds:>6.1} s  {run}  {binary}::{test}");
        }
    }
    out
}

/// One table cell, counted into `totals`; skip reasons become numbered footnotes.
fn cell(outcome: Option<&Outcome>, totals: &mut Totals, footnotes: &mut Vec<String>) -> String {
    match outcome {
        Some(Outcome::Pass) => {
            totals.passed += 1;
            "pass".to_string()
        }
        Some(Outcome::Fail) => {
            totals.failed += 1;
            "FAIL".to_string()
        }
        Some(Outcome::NotFinished) => {
            totals.failed += 1;
            "FAIL (unfinished)".to_string()
        }
        Some(Outcome::Skipped(reason)) => {
            totals.skipped += 1;
            let index = match footnotes.iter().position(|f| f == reason) {
                Some(i) => i,
                None => {
                    footnotes.push(reason.clone());
                    footnotes.len() - 1
                }
            };
            format!("skipped[{}]", index + 1)
        }
        Some(Outcome::Ignored) => "ignored".to_string(),
        None => "-".to_string(),
    }
}

fn machine_cell(run: &RunReport) -> String {
    match run.status {
        MachineStatus::Finished => format!("ok {:.0}s", run.elapsed.as_secs_f64()),
        MachineStatus::DidNotBoot(_) => "DID NOT BOOT".to_string(),
        MachineStatus::DidNotFinish(_) => "DID NOT FINISH".to_string(),
    }
}

fn render_grid(grid: &[Vec<String>]) -> String {
    let columns = grid.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            grid.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in grid.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "{}", rule.join("  "));
        }
    }
    out
}

/// Every reason to fail, each with the evidence (test output or console tail).
pub fn problems(runs: &[RunReport]) -> Vec<String> {
    let mut problems = Vec::new();
    for run in runs {
        match &run.status {
            MachineStatus::Finished => {}
            MachineStatus::DidNotBoot(why) | MachineStatus::DidNotFinish(why) => {
                let what = if matches!(run.status, MachineStatus::DidNotBoot(_)) {
                    "did not boot"
                } else {
                    "did not finish"
                };
                let head = format!("{}: {what}: {why}", run.label);
                problems.push(with_lines(
                    head,
                    Some("last console lines:"),
                    &run.console_tail,
                ));
            }
        }
        for module in &run.stream.module_failures {
            problems.push(format!(
                "{}: kernel module {module} failed to load",
                run.label
            ));
        }
        for hook in &run.stream.verifier_refusals {
            problems.push(format!(
                "{}: the verifier refused a netladder program: {hook}",
                run.label
            ));
        }
        problems.extend(binary_problems(run));
        if let (MachineStatus::Finished, Some(selected)) = (&run.status, &run.selected) {
            for name in selected {
                if !run.stream.binaries.iter().any(|b| &b.name == name) {
                    problems.push(format!(
                        "{}: test binary {name} was selected but did not run",
                        run.label
                    ));
                }
            }
        }
    }
    problems
}

fn binary_problems(run: &RunReport) -> Vec<String> {
    let mut problems = Vec::new();
    for binary in &run.stream.binaries {
        let mut failed_tests = 0;
        for test in &binary.tests {
            let verdict = match test.outcome {
                Outcome::Fail => "FAILED",
                Outcome::NotFinished => "did not finish",
                _ => continue,
            };
            failed_tests += 1;
            let head = format!(
                "{}: scenario {}::{} {verdict}",
                run.label, binary.name, test.name
            );
            problems.push(with_lines(head, None, &excerpt(&test.output)));
        }
        match binary.exit_status {
            Some(0) => {}
            Some(status) if failed_tests == 0 => problems.push(format!(
                "{}: test binary {} exited with status {status} without a failed test",
                run.label, binary.name
            )),
            Some(_) => {}
            None if failed_tests == 0 => problems.push(format!(
                "{}: test binary {} did not finish",
                run.label, binary.name
            )),
            None => {}
        }
        if binary.tests.is_empty() && binary.exit_status == Some(0) {
            problems.push(format!(
                "{}: test binary {} ran no test",
                run.label, binary.name
            ));
        }
    }
    problems
}

fn tail(lines: &[String]) -> &[String] {
    &lines[lines.len().saturating_sub(TAIL_LINES)..]
}

/// A failed test's output, at most TAIL_LINES lines: its start (where the panic message is) and
/// its end, with a note of what was left out.
fn excerpt(lines: &[String]) -> Vec<String> {
    if lines.len() <= TAIL_LINES {
        return lines.to_vec();
    }
    let head = TAIL_LINES * 2 / 3;
    let end = TAIL_LINES - head - 1;
    let mut out = lines[..head].to_vec();
    out.push(format!(
        "[... {} lines left out ...]",
        lines.len() - head - end
    ));
    out.extend_from_slice(&lines[lines.len() - end..]);
    out
}

/// `head`, then (when there are any) a title and the lines, indented.
fn with_lines(head: String, title: Option<&str>, lines: &[String]) -> String {
    let mut text = head;
    if lines.is_empty() {
        return text;
    }
    if let Some(title) = title {
        text.push_str("\n  ");
        text.push_str(title);
    }
    for line in lines {
        text.push_str("\n    | ");
        text.push_str(line);
    }
    text
}

/// The last TAIL_LINES non-empty lines of a log.
pub fn last_lines(text: &str) -> Vec<String> {
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.trim().is_empty())
        .collect();
    tail(&lines).to_vec()
}

/// Passed, failed and skipped tests of one run, for its progress line.
pub fn stream_totals(stream: &Stream) -> Totals {
    let mut totals = Totals::default();
    for test in stream.binaries.iter().flat_map(|b| b.tests.iter()) {
        match test.outcome {
            Outcome::Pass => totals.passed += 1,
            Outcome::Fail | Outcome::NotFinished => totals.failed += 1,
            Outcome::Skipped(_) => totals.skipped += 1,
            Outcome::Ignored => {}
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "NL-VM-START 6.1.0-50-cloud-amd64\r\n\
        NL-VM-MODULE-FAILED nft_compat.ko\n\
        NL-VM-BINARY-START scenarios\n\
        \nrunning 3 tests\n\
        test refused ... ok\n\
        test timeout ... FAILED\n\
        test drop_reason ... ok\n\n\
        successes:\n\n---- drop_reason stdout ----\nNL-SKIP no drop reasons before 5.17\n\n\
        successes:\n    drop_reason\n    refused\n\n\
        failures:\n\n---- timeout stdout ----\nexpected #023, got #021\n\nfailures:\n    timeout\n\n\
        test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n\n\
        NL-VM-BINARY-END scenarios 101 9.07s\n\
        NL-VM-END\n";

    fn run(label: &str, status: MachineStatus, stream: &str) -> RunReport {
        RunReport {
            label: label.to_string(),
            selected: None,
            status,
            elapsed: Duration::from_secs(12),
            usage: Some(Usage {
                cpu: Duration::from_secs(5),
                waited: Duration::from_secs(2),
            }),
            stream: parse_stream(stream),
            console_tail: vec!["Kernel panic - not syncing: VFS".to_string()],
        }
    }

    #[test]
    fn verifier_refusals_of_our_own_making_are_problems() {
        let stream = parse_stream(
            "NL-VM-START 6.1\n\
             NL-VM-HOOKS kfree_skb  tp_btf/kfree_skb  REFUSED   load failed: Permission denied (os error 13) (verifier: combined stack size of 2 calls is 544. Too large); lost: drops\n\
             NL-VM-HOOKS dns_egress  cgroup_skb/egress (cgroup2 root)  REFUSED   load failed: Invalid argument (os error 22) (verifier: 230: (85) call bpf_get_current_pid_tgid#14 / unknown func bpf_get_current_pid_tgid#14); lost: owner\n\
             NL-VM-HOOKS tcp_v4_connect_exit  fexit/tcp_v4_connect  REFUSED   load failed: Operation not permitted (os error 1); lost: io_uring\n\
             NL-VM-HOOKS inet_sock_set_state  tp_btf/inet_sock_set_state  attached  tp_btf\n\
             NL-VM-END\n",
        );
        assert_eq!(
            stream.verifier_refusals.len(),
            1,
            "{:?}",
            stream.verifier_refusals
        );
        assert!(stream.verifier_refusals[0].starts_with("kfree_skb"));
        let problems = problems(&[run("6.1", MachineStatus::Finished, "NL-VM-START 6.1\nNL-VM-HOOKS kfree_skb  tp_btf/kfree_skb  REFUSED   x (verifier: combined stack size of 2 calls is 544. Too large)\nNL-VM-END\n")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("the verifier refused a netladder program: kfree_skb"));
    }

    #[test]
    fn stream_markers_and_tests() {
        let stream = parse_stream(STREAM);
        assert_eq!(stream.started.as_deref(), Some("6.1.0-50-cloud-amd64"));
        assert!(stream.ended);
        assert_eq!(stream.module_failures, ["nft_compat.ko"]);
        assert_eq!(stream.binaries.len(), 1);
        assert_eq!(stream.binaries[0].exit_status, Some(101));
        assert_eq!(stream.binaries[0].time, Some(Duration::from_millis(9070)));
        let outcomes: Vec<Outcome> = stream.binaries[0]
            .tests
            .iter()
            .map(|t| t.outcome.clone())
            .collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Pass,
                Outcome::Fail,
                Outcome::Skipped("no drop reasons before 5.17".into())
            ]
        );
    }

    #[test]
    fn binaries_outside_a_selection_are_not_run_and_not_counted() {
        let full = "NL-VM-START 5.10\nNL-VM-BINARY-START cli\ntest a ... ok\n\
            NL-VM-BINARY-END cli 0\nNL-VM-BINARY-START rungs\ntest b ... ok\n\
            NL-VM-BINARY-END rungs 0\nNL-VM-END\n";
        let part = "NL-VM-START 6.1\nNL-VM-BINARY-START rungs\ntest b ... ok\n\
            NL-VM-BINARY-END rungs 0\nNL-VM-END\n";
        let mut selected = run("6.1", MachineStatus::Finished, part);
        selected.selected = Some(vec!["rungs".to_string(), "firewall".to_string()]);
        let runs = [run("5.10", MachineStatus::Finished, full), selected];
        let (table, totals) = render_table(&runs);
        let expected = "\
scenario   5.10    6.1
---------  ------  -------
(machine)  ok 12s  ok 12s
cli::a     pass    not run
rungs::b   pass    pass
  not run: the test binary is not in this boot's selection (xtask/src/vm/selection.rs)
";
        assert_eq!(table, expected);
        assert_eq!(totals.passed, 3);
        let problems = problems(&runs);
        assert_eq!(
            problems,
            ["6.1: test binary firewall was selected but did not run"]
        );
    }

    #[test]
    fn timings_per_machine_binary_and_test() {
        let stream = "NL-VM-START 6.1\nNL-VM-BINARY-START scenarios\n\
            test a ... ok <1.500s>\ntest b ... ok <30.250s>\n\
            NL-VM-BINARY-END scenarios 0 31.90s\nNL-VM-BINARY-START rungs\ntest c ... ok <2.000s>\n\
            NL-VM-BINARY-END rungs 0\nNL-VM-END\n";
        let runs = [
            run("6.1", MachineStatus::Finished, stream),
            run(
                "5.10",
                MachineStatus::Finished,
                "NL-VM-START 5.10\nNL-VM-END\n",
            ),
        ];
        let expected = "\
seconds                 6.1  5.10
----------------------  ---  ----
(machine, wall)         12   12
(qemu on a cpu)         5    5
(qemu waiting for one)  2    2
scenarios               32   -
rungs                   ?    -
slowest tests:
    30.2 s  6.1  scenarios::b
     2.0 s  6.1  rungs::c
     1.5 s  6.1  scenarios::a
";
        assert_eq!(render_timings(&runs), expected);
    }

    #[test]
    fn long_outputs_keep_their_start_and_end() {
        let lines: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
        let short = excerpt(&lines);
        assert_eq!(short.len(), TAIL_LINES);
        assert_eq!(short[0], "1");
        assert_eq!(short[26], "[... 61 lines left out ...]");
        assert_eq!(short[TAIL_LINES - 1], "100");
        assert_eq!(excerpt(&lines[..3]), ["1", "2", "3"]);
    }

    #[test]
    fn a_machine_that_stops_mid_binary() {
        let stream = parse_stream(
            "NL-VM-START 6.12\nNL-VM-BINARY-START scenarios\ntest a ... ok\ntest b ... ",
        );
        assert!(!stream.ended);
        assert_eq!(stream.binaries[0].exit_status, None);
        assert_eq!(stream.binaries[0].tests[1].outcome, Outcome::NotFinished);
    }

    #[test]
    fn table_with_pass_fail_skip_and_a_dead_kernel() {
        let runs = [
            run("6.1", MachineStatus::Finished, STREAM),
            run(
                "5.10",
                MachineStatus::DidNotBoot("qemu exited before init started".into()),
                "",
            ),
        ];
        let (table, totals) = render_table(&runs);
        let expected = "\
scenario     6.1         5.10
-----------  ----------  ------------
(machine)    ok 12s      DID NOT BOOT
refused      pass        -
timeout      FAIL        -
drop_reason  skipped[1]  -
  [1] skipped: no drop reasons before 5.17
";
        assert_eq!(table, expected);
        assert_eq!(
            totals,
            Totals {
                passed: 1,
                failed: 2,
                skipped: 1
            }
        );
        let problems = problems(&runs);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].starts_with("6.1: kernel module nft_compat.ko failed to load"));
        assert!(problems[1].starts_with("6.1: scenario scenarios::timeout FAILED"));
        assert!(problems[1].contains("expected #023, got #021"));
        assert!(problems[2].starts_with("5.10: did not boot: qemu exited before init started"));
        assert!(problems[2].contains("Kernel panic"));
    }
}
