//! Reading the text output of Rust test binaries (libtest), with `--show-output` or
//! `--nocapture`, and `--report-time` when it was given (see [`REPORT_TIME_ARGS`]). A test that
//! passes after printing `NL-SKIP <reason>` counts as skipped.

use std::collections::HashMap;
use std::time::Duration;

const SKIP_MARKER: &str = "NL-SKIP";

/// Test binary arguments that make libtest print each test's duration (`test a ... ok <1.2s>`).
/// The flag is unstable: the binary accepts it when run with [`REPORT_TIME_ENV`] set (only the
/// test binary's own argument parsing is affected, nothing is compiled differently).
pub const REPORT_TIME_ARGS: &[&str] = &["-Z", "unstable-options", "--report-time"];
pub const REPORT_TIME_ENV: (&str, &str) = ("RUSTC_BOOTSTRAP", "1");

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skipped(String),
    Ignored,
    /// The test started but the binary or the machine stopped before it reported a result.
    NotFinished,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    pub name: String,
    pub outcome: Outcome,
    /// What the test printed (captured section or inline output), for failure reports.
    pub output: Vec<String>,
    /// How long it ran, when the binary ran with `--report-time`.
    pub time: Option<Duration>,
}

/// Pass/fail/ignored counts from libtest's `test result:` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

/// Parses `test result: ok. 5 passed; 0 failed; 1 ignored; ...`.
pub fn parse_summary(line: &str) -> Option<Counts> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let mut counts = Counts::default();
    for part in rest.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        let (number, label) = match words.as_slice() {
            [_, number, label] => (number, label), // "ok. 5 passed"
            [number, label, ..] => (number, label),
            _ => continue,
        };
        let Ok(n) = number.parse::<u64>() else {
            continue;
        };
        match *label {
            "passed" => counts.passed = n,
            "failed" => counts.failed = n,
            "ignored" => counts.ignored = n,
            _ => {}
        }
    }
    Some(counts)
}

#[derive(Default)]
struct Parser {
    order: Vec<String>,
    results: HashMap<String, Outcome>,
    times: HashMap<String, Duration>,
    skips: HashMap<String, String>,
    output: HashMap<String, Vec<String>>,
    /// A test whose `test NAME ... ` line has no result yet.
    running: Option<String>,
    /// The test whose `---- NAME stdout ----` section we are in.
    section: Option<String>,
}

/// Parses the output of one test binary into per-test results, in the order they appeared.
pub fn parse(text: &str) -> Vec<TestResult> {
    let mut parser = Parser::default();
    for line in text.lines() {
        parser.line(line.trim_end_matches('\r'));
    }
    parser.finish()
}

impl Parser {
    fn line(&mut self, line: &str) {
        if let Some(name) = section_header(line) {
            self.section = Some(name.to_string());
            return;
        }
        if line == "successes:" || line == "failures:" {
            self.section = None;
            return;
        }
        if let Some((name, rest)) = test_line(line) {
            self.section = None;
            self.seen(name);
            match result_word(rest) {
                Some((outcome, time)) => self.record(name, outcome, time),
                None => {
                    self.output_line(name, rest);
                    self.running = Some(name.to_string());
                }
            }
            return;
        }
        if let Some(name) = self.section.clone() {
            self.output_line(&name, line);
        } else if let Some(name) = self.running.clone() {
            match result_word(line) {
                Some((outcome, time)) => self.record(&name, outcome, time),
                None => self.output_line(&name, line),
            }
        }
    }

    fn seen(&mut self, name: &str) {
        if !self.order.iter().any(|n| n == name) {
            self.order.push(name.to_string());
        }
    }

    fn record(&mut self, name: &str, outcome: Outcome, time: Option<Duration>) {
        self.results.insert(name.to_string(), outcome);
        if let Some(time) = time {
            self.times.insert(name.to_string(), time);
        }
        self.running = None;
    }

    fn output_line(&mut self, name: &str, line: &str) {
        if let Some(pos) = line.find(SKIP_MARKER) {
            let reason = line[pos + SKIP_MARKER.len()..].trim();
            // The marker may repeat the test's name: `NL-SKIP <test>: <reason>`.
            let reason = reason
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix(':'))
                .map_or(reason, str::trim);
            let reason = if reason.is_empty() {
                "no reason given"
            } else {
                reason
            };
            self.skips.insert(name.to_string(), reason.to_string());
        }
        if !line.is_empty() {
            self.output
                .entry(name.to_string())
                .or_default()
                .push(line.to_string());
        }
    }

    fn finish(mut self) -> Vec<TestResult> {
        self.order
            .iter()
            .map(|name| {
                let outcome = match self.results.remove(name) {
                    Some(Outcome::Pass) => match self.skips.remove(name) {
                        Some(reason) => Outcome::Skipped(reason),
                        None => Outcome::Pass,
                    },
                    Some(other) => other,
                    None => Outcome::NotFinished,
                };
                TestResult {
                    name: name.clone(),
                    outcome,
                    output: self.output.remove(name).unwrap_or_default(),
                    time: self.times.remove(name),
                }
            })
            .collect()
    }
}

/// `---- NAME stdout ----`
fn section_header(line: &str) -> Option<&str> {
    line.strip_prefix("---- ")?.strip_suffix(" stdout ----")
}

/// `test NAME ... REST`
fn test_line(line: &str) -> Option<(&str, &str)> {
    line.strip_prefix("test ")?.split_once(" ... ")
}

/// `ok`, `FAILED`, `ignored[, reason]`, the first two with `--report-time`'s ` <1.234s>`.
fn result_word(text: &str) -> Option<(Outcome, Option<Duration>)> {
    let text = text.trim();
    let (word, time) = match text.rsplit_once(" <") {
        Some((word, time)) => match time.strip_suffix('>').and_then(seconds) {
            Some(time) => (word, Some(time)),
            None => (text, None),
        },
        None => (text, None),
    };
    let outcome = match word {
        "ok" => Outcome::Pass,
        "FAILED" => Outcome::Fail,
        t if t == "ignored" || t.starts_with("ignored, ") => Outcome::Ignored,
        _ => return None,
    };
    Some((outcome, time))
}

/// `12.34s` (as libtest and the VM's markers write durations).
pub fn seconds(text: &str) -> Option<Duration> {
    let value: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    Duration::try_from_secs_f64(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(text: &str) -> Vec<(String, Outcome)> {
        parse(text)
            .into_iter()
            .map(|r| (r.name, r.outcome))
            .collect()
    }

    fn o(name: &str, outcome: Outcome) -> (String, Outcome) {
        (name.to_string(), outcome)
    }

    #[test]
    fn show_output_format_with_skip_and_failure() {
        let text = "\nrunning 4 tests\n\
            test a_skips ... ok\n\
            test b_fails ... FAILED\n\
            test c_ignored ... ignored, needs a NIC\n\
            test d_passes ... ok\n\
            \nsuccesses:\n\n---- a_skips stdout ----\nNL-SKIP no drop reasons on this kernel\n\n\
            ---- d_passes stdout ----\nhello\n\nsuccesses:\n    a_skips\n    d_passes\n\n\
            failures:\n\n---- b_fails stdout ----\nthread 'b_fails' panicked at x.rs:1:1:\nwrong code\n\n\
            failures:\n    b_fails\n\ntest result: FAILED. 2 passed; 1 failed; 1 ignored;\n";
        let results = parse(text);
        assert_eq!(
            results
                .iter()
                .map(|r| (r.name.clone(), r.outcome.clone()))
                .collect::<Vec<_>>(),
            [
                o(
                    "a_skips",
                    Outcome::Skipped("no drop reasons on this kernel".into())
                ),
                o("b_fails", Outcome::Fail),
                o("c_ignored", Outcome::Ignored),
                o("d_passes", Outcome::Pass),
            ]
        );
        assert_eq!(
            results[1].output,
            ["thread 'b_fails' panicked at x.rs:1:1:", "wrong code"]
        );
    }

    #[test]
    fn nocapture_format_with_inline_skip() {
        let text =
            "test a ... NL-SKIP a: not root\nok\ntest b ... child says hi\nok\r\ntest c ... ok\n";
        assert_eq!(
            outcomes(text),
            [
                o("a", Outcome::Skipped("not root".into())),
                o("b", Outcome::Pass),
                o("c", Outcome::Pass)
            ]
        );
    }

    #[test]
    fn skip_marker_on_a_failed_test_keeps_the_failure() {
        let text =
            "test a ... FAILED\n\nfailures:\n\n---- a stdout ----\nNL-SKIP x\n\nfailures:\n    a\n";
        assert_eq!(outcomes(text), [o("a", Outcome::Fail)]);
    }

    #[test]
    fn a_test_cut_off_mid_run_is_not_finished() {
        let text = "test a ... ok\ntest b ... [  12.3] Kernel panic - not syncing\n";
        assert_eq!(
            outcomes(text),
            [o("a", Outcome::Pass), o("b", Outcome::NotFinished)]
        );
    }

    #[test]
    fn report_time_durations() {
        let text = "test a ... ok <1.250s>\ntest b ... child output\nFAILED <0.010s>\n\
                    test c ... ignored, slow\ntest d ... ok\n";
        let results = parse(text);
        let got: Vec<(Outcome, Option<Duration>)> =
            results.into_iter().map(|r| (r.outcome, r.time)).collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(
            got,
            [
                (Outcome::Pass, ms(1250)),
                (Outcome::Fail, ms(10)),
                (Outcome::Ignored, None),
                (Outcome::Pass, None)
            ]
        );
        assert_eq!(seconds("12.34s"), ms(12340));
        assert_eq!(seconds("12.34"), None);
    }

    #[test]
    fn summary_line_counts() {
        let counts = parse_summary("test result: ok. 5 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.14s");
        assert_eq!(
            counts,
            Some(Counts {
                passed: 5,
                failed: 2,
                ignored: 1
            })
        );
        assert_eq!(parse_summary("test a ... ok"), None);
    }
}
