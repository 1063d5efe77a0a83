//! Benchmark 4: netladder started and stopped with no traffic. Targets: ready (every program
//! attached) under 0.5 s after launch (issue 8), and exited under 0.5 s after SIGINT (issue 16).

use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use super::child::stop_requested;
use super::procfs::{bpf_programs_held_by, loaded_bpf_programs};
use super::report::{closing, Spread};
use super::tracer::Netladder;
use super::{one_line, Ctx, DETACH_TIMEOUT, POLL, SETTLE};

/// Starts and stops netladder once per round.
pub(super) fn run(ctx: &Ctx) -> Result<StartupResults> {
    let mut lifecycles = Vec::new();
    for run in 0..ctx.rounds {
        let result = lifecycle(ctx).map_err(one_line);
        stop_requested()?;
        eprintln!(
            "bench: start-up {}: {}",
            run + 1,
            Lifecycle::progress(&result)
        );
        lifecycles.push(result);
        sleep(SETTLE);
    }
    Ok(StartupResults { lifecycles })
}

/// netladder started and stopped with no traffic (issue 8, benchmark 4).
#[derive(Debug)]
struct Lifecycle {
    /// BPF programs it held once ready.
    programs: usize,
    /// Launch to ready file.
    ready: Duration,
    /// SIGINT to exit.
    exit: Duration,
    /// SIGINT to none of its programs loaded.
    unloaded: Duration,
}

/// Start-up and shutdown with no traffic: launch to ready, SIGINT to exit, and SIGINT to the
/// moment none of netladder's BPF programs is loaded any more.
fn lifecycle(ctx: &Ctx) -> Result<Lifecycle> {
    let netladder = Netladder::start(&ctx.bins, &ctx.work, ctx.seconds)?;
    let ready = netladder.startup;
    let programs = bpf_programs_held_by(netladder.pid())?;
    ensure!(
        !programs.is_empty(),
        "netladder was ready but held no BPF program"
    );
    let stopping = Instant::now();
    let stopped = netladder.stop()?;
    let exit = stopped.stop;
    let deadline = Instant::now() + DETACH_TIMEOUT;
    while !loaded_bpf_programs()?.is_disjoint(&programs) {
        ensure!(
            Instant::now() < deadline,
            "{} s after netladder exited, some of its BPF programs are still loaded",
            DETACH_TIMEOUT.as_secs()
        );
        sleep(POLL);
    }
    Ok(Lifecycle {
        programs: programs.len(),
        ready,
        exit,
        unloaded: stopping.elapsed(),
    })
}

impl Lifecycle {
    fn progress(result: &Result<Lifecycle, String>) -> String {
        match result {
            Ok(l) => format!(
                "{} programs, ready after {:.3} s, exit {:.3} s after SIGINT, unloaded after {:.3} s",
                l.programs,
                l.ready.as_secs_f64(),
                l.exit.as_secs_f64(),
                l.unloaded.as_secs_f64()
            ),
            Err(why) => format!("failed: {why}"),
        }
    }
}

/// Issue 8 (start-up) and issue 16 (shutdown): each under this many seconds, in every run.
const LIMIT_S: f64 = 0.5;

/// The target line on a time that must stay under `LIMIT_S` in every run (`what` happened
/// `when`; `measure` names it when it could not be measured, because of `why`).
fn limit_verdict(
    times: Option<Spread>,
    what: &str,
    when: &str,
    measure: &str,
    why: &str,
) -> String {
    match times {
        Some(t) => format!(
            "TARGET {}: {what} {:.3} s {when} at most (median {:.3} s; target under {LIMIT_S} s)",
            if t.max < LIMIT_S { "MET" } else { "MISSED" },
            t.max,
            t.median
        ),
        None => format!("TARGET MISSED: {measure} could not be measured: {why}"),
    }
}

/// The runs of benchmark 4, for the report.
pub(super) struct StartupResults {
    lifecycles: Vec<Result<Lifecycle, String>>,
}

impl StartupResults {
    /// The section; `measured` is the machine line, given when the storm's section (which
    /// has it) is not part of the same run.
    pub(super) fn markdown(&self, measured: Option<String>) -> String {
        let runs: Vec<&Lifecycle> = self
            .lifecycles
            .iter()
            .filter_map(|l| l.as_ref().ok())
            .collect();
        let mut md = String::from("### Start-up and shutdown (issues 8 and 16, benchmark 4)\n\n");
        md += &measured.unwrap_or_default();
        let Some(first) = runs.first() else {
            let why = self.lifecycles.iter().find_map(|l| l.as_ref().err());
            md += &format!("Did not run: {}.\n", why.map_or("no runs", String::as_str));
            return md;
        };
        md += &format!(
            "netladder started {} times with no traffic; it held {} BPF programs once ready. \
             \"Unloaded\": none of those programs is loaded any more (checked by program ID).\n\n\
             | measure | min | median | max |\n|---|---:|---:|---:|\n",
            runs.len(),
            first.programs
        );
        let secs = |pick: fn(&Lifecycle) -> Duration| -> Vec<f64> {
            runs.iter().map(|l| pick(l).as_secs_f64()).collect()
        };
        let rows = [
            (
                "launch to ready (every program attached)",
                secs(|l| l.ready),
            ),
            ("SIGINT to exit", secs(|l| l.exit)),
            ("SIGINT to every program unloaded", secs(|l| l.unloaded)),
        ];
        for (label, values) in rows {
            if let Some(s) = Spread::of(values) {
                md += &format!(
                    "| {label} | {:.3} s | {:.3} s | {:.3} s |\n",
                    s.min, s.median, s.max
                );
            }
        }
        md += &closing(&[], &self.verdicts());
        md
    }

    pub(super) fn verdicts(&self) -> Vec<String> {
        let runs = || self.lifecycles.iter().filter_map(|l| l.as_ref().ok());
        let why = self
            .lifecycles
            .iter()
            .find_map(|l| l.as_ref().err())
            .map_or("no runs", String::as_str);
        let ready = Spread::of(runs().map(|l| l.ready.as_secs_f64()));
        let exit = Spread::of(runs().map(|l| l.exit.as_secs_f64()));
        let mut lines = vec![
            limit_verdict(
                ready,
                "every program attached",
                "after launch",
                "start-up",
                why,
            ),
            limit_verdict(exit, "netladder exited", "after SIGINT", "shutdown", why),
        ];
        lines.extend(
            self.lifecycles
                .iter()
                .enumerate()
                .filter_map(|(i, l)| Some((i + 1, l.as_ref().err()?)))
                .map(|(i, why)| format!("TARGET MISSED: start-up/shutdown run {i} failed: {why}")),
        );
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ready: f64, exit: f64) -> Result<Lifecycle, String> {
        Ok(Lifecycle {
            programs: 3,
            ready: Duration::from_secs_f64(ready),
            exit: Duration::from_secs_f64(exit),
            unloaded: Duration::from_secs_f64(exit + 0.1),
        })
    }

    #[test]
    fn start_up_and_shutdown_each_have_a_target() {
        let results = StartupResults {
            lifecycles: vec![run(0.2, 0.3), run(0.4, 2.5), Err("boom".to_owned())],
        };
        let v = results.verdicts();
        assert_eq!(
            v[0],
            "TARGET MET: every program attached 0.400 s after launch at most (median 0.300 s; target under 0.5 s)"
        );
        assert_eq!(
            v[1],
            "TARGET MISSED: netladder exited 2.500 s after SIGINT at most (median 1.400 s; target under 0.5 s)"
        );
        assert_eq!(v[2], "TARGET MISSED: start-up/shutdown run 3 failed: boom");
        let none = StartupResults {
            lifecycles: vec![Err("no bpf".to_owned())],
        };
        assert_eq!(
            none.verdicts()[1],
            "TARGET MISSED: shutdown could not be measured: no bpf"
        );
    }
}
