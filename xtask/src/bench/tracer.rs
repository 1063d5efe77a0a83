//! `netladder watch --json` as every benchmark runs it, and what it printed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::child::{last_line, remove_if_present, Guarded};
use super::{procfs, Bins, ATTACH_TIMEOUT, EXIT_TIMEOUT};

/// A running `netladder watch --json --ready-file F`, stdout and stderr going to files.
pub(super) struct Netladder {
    child: Guarded,
    out: PathBuf,
    err: PathBuf,
    /// Launch to ready file.
    pub(super) startup: Duration,
}

/// A netladder that exited after SIGINT.
pub(super) struct Stopped {
    /// SIGINT to exit.
    pub(super) stop: Duration,
    /// Its stdout file (JSON Lines).
    pub(super) out: PathBuf,
}

impl Netladder {
    /// Starts netladder and waits for its ready file (every program attached).
    pub(super) fn start(bins: &Bins, work: &Path, seconds: f64) -> Result<Netladder> {
        Netladder::start_with(bins, work, seconds, &[])
    }

    /// [`Netladder::start`] with more arguments for `watch`.
    pub(super) fn start_with(
        bins: &Bins,
        work: &Path,
        seconds: f64,
        extra_args: &[&str],
    ) -> Result<Netladder> {
        let ready = work.join("netladder.ready");
        remove_if_present(&ready)?;
        // --duration is a backstop only: the bench stops netladder with SIGINT long before.
        let backstop = (seconds + 600.0).to_string();
        let mut command = Command::new(&bins.netladder);
        command
            .args(["watch", "--json", "--ready-file"])
            .arg(&ready)
            .args(["--duration", &backstop])
            .args(extra_args);
        let launched = Instant::now();
        let (out, err) = (work.join("netladder.jsonl"), work.join("netladder.err"));
        let mut child = Guarded::spawn(&mut command, "netladder watch", &out, &err)?;
        child.wait_until(ATTACH_TIMEOUT, &err, || ready.exists())?;
        Ok(Netladder {
            child,
            out,
            err,
            startup: launched.elapsed(),
        })
    }

    pub(super) fn pid(&self) -> i32 {
        self.child.pid()
    }

    /// Its CPU time (user + system) so far.
    pub(super) fn cpu_secs(&self) -> Result<f64> {
        procfs::cpu_secs(self.pid())
    }

    /// Its peak resident set size (VmHWM) so far, in KiB.
    pub(super) fn peak_rss_kib(&self) -> Result<u64> {
        procfs::peak_rss_kib(self.pid())
    }

    /// SIGINT, then waits for a successful exit (netladder drains its ring buffer first).
    pub(super) fn stop(mut self) -> Result<Stopped> {
        let stopping = Instant::now();
        let status = self.child.interrupt_and_wait(EXIT_TIMEOUT)?;
        let stop = stopping.elapsed();
        ensure!(
            status.success(),
            "netladder watch failed ({status}){}",
            last_line(&self.err)
        );
        Ok(Stopped {
            stop,
            out: self.out.clone(),
        })
    }
}

/// The final stats line of `netladder watch --json`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct FinalStats {
    pub(super) events: u64,
    pub(super) lost: u64,
    pub(super) failures_reported: u64,
    /// Failures the kernel counted instead of sending (identical to an event of the same second).
    pub(super) aggregated: u64,
    /// Program runs the kernel skipped (a BPF program nested in another).
    pub(super) skipped_runs: u64,
    /// Errors the kernel reported that are not on the ladder (no failure line printed).
    pub(super) unclassified: u64,
}

pub(super) fn final_stats(v: &Value) -> Result<FinalStats> {
    let field = |key: &str| {
        v[key]
            .as_u64()
            .with_context(|| format!("netladder's stats line has no {key:?}"))
    };
    Ok(FinalStats {
        events: field("events")?,
        lost: field("lost")?,
        failures_reported: field("failures_reported")?,
        aggregated: v["aggregated"].as_u64().unwrap_or(0),
        skipped_runs: v["skipped_runs"].as_u64().unwrap_or(0),
        unclassified: v["unclassified"].as_u64().unwrap_or(0),
    })
}

/// Every failure event netladder printed, and its final stats line (for short outputs: every
/// line is parsed).
pub(super) fn read_failures(path: &Path) -> Result<(FinalStats, Vec<Value>)> {
    let text = fs::read_to_string(path).context("cannot read netladder's output")?;
    parse_failures(&text)
}

pub(super) fn parse_failures(text: &str) -> Result<(FinalStats, Vec<Value>)> {
    let mut failures = Vec::new();
    let mut stats = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).context("netladder printed a line that is not JSON")?;
        match v["type"].as_str() {
            Some("failure") => failures.push(v),
            Some("stats") if v["final"] == true => stats = Some(final_stats(&v)?),
            _ => {}
        }
    }
    let stats = stats.context("netladder printed no final stats line")?;
    Ok((stats, failures))
}

/// How many failures one event stands for (an aggregated event carries its count).
pub(super) fn count_of(event: &Value) -> u64 {
    event["count"].as_u64().unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_final_stats_are_read() {
        let text = [
            r#"{"type":"hooks","hooks":[]}"#,
            r#"{"type":"failure","code":"021","netns":7,"count":3}"#,
            r#"{"type":"failure","code":"023","netns":8}"#,
            r#"{"type":"stats","final":false,"events":1,"lost":0,"failures_reported":1}"#,
            r#"{"type":"stats","final":true,"events":2,"lost":1,"failures_reported":4,"aggregated":2,"skipped_runs":5,"unclassified":6}"#,
            "",
        ]
        .join("\n");
        let (stats, failures) = parse_failures(&text).unwrap();
        assert_eq!(failures.len(), 2);
        assert_eq!(failures.iter().map(count_of).sum::<u64>(), 4);
        assert_eq!(
            stats,
            FinalStats {
                events: 2,
                lost: 1,
                failures_reported: 4,
                aggregated: 2,
                skipped_runs: 5,
                unclassified: 6
            }
        );
        assert!(parse_failures(r#"{"type":"hooks"}"#).is_err());
        assert!(parse_failures("not json\n").is_err());
    }
}
