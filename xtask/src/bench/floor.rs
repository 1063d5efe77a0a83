//! Benchmark 6 (issue 16): the floor under netladder's cost. The refused storm of benchmark 1
//! and the successful connections of benchmark 2, each run untraced, under `netladder watch`, and
//! under `netladder watch --empty-programs`: the same programs attached to the same hooks, each
//! returning at once. The empty run is what the hooks cost the host by being attached at all (the
//! kernel's dispatch of every program run); what the full run adds on top is the programs' work.
//! A ratio target above the empty run's ratio cannot be met by making the programs cheaper: it
//! needs fewer program runs per connection. A fourth mode keeps only the two programs every
//! failure needs (the state changes and the drops, doing their full work) and skips every other
//! hook: what the smallest hook set costs, and so what the other rungs' hooks add.

use std::thread::sleep;
use std::time::Duration;

use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;

use super::child::stop_requested;
use super::healthy::{Lab, Load};
use super::report::{ratio_cells, Spread};
use super::storm::{one_storm, ClosedPort};
use super::tracer::Netladder;
use super::{one_line, rotated, Ctx, SETTLE};

/// The targets of issue 16 for these two loads.
const STORM_TARGET: f64 = 0.95;
const CONNECTS_TARGET: f64 = 0.99;

/// The programs every failure needs: who connected and how it ended, and what was dropped.
const MINIMAL: [&str; 2] = ["inet_sock_set_state", "kfree_skb"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tracing {
    Untraced,
    Full,
    Empty,
    Minimal,
}

impl Tracing {
    const ALL: [Tracing; 4] = [
        Tracing::Untraced,
        Tracing::Full,
        Tracing::Empty,
        Tracing::Minimal,
    ];

    fn label(self) -> &'static str {
        match self {
            Tracing::Untraced => "untraced",
            Tracing::Full => "netladder watch --json",
            Tracing::Empty => "the same, every program empty",
            Tracing::Minimal => "only the state-change and drop programs (full work)",
        }
    }

    /// `watch`'s extra arguments (None: untraced); `skips` are the other attached programs.
    fn watch_args(self, skips: &[String]) -> Option<Vec<String>> {
        match self {
            Tracing::Untraced => None,
            Tracing::Full => Some(Vec::new()),
            Tracing::Empty => Some(vec!["--empty-programs".to_owned()]),
            Tracing::Minimal => Some(
                skips
                    .iter()
                    .flat_map(|p| ["--skip-hook".to_owned(), p.clone()])
                    .collect(),
            ),
        }
    }
}

/// The programs `netladder hooks` says attach here, but for [`MINIMAL`] and the programs that
/// run inside another one (they cannot be skipped alone).
fn other_programs(ctx: &Ctx) -> Result<Vec<String>> {
    let out = Command::new(&ctx.bins.netladder)
        .args(["hooks", "--json"])
        .output()
        .context("cannot run netladder hooks --json")?;
    let table: Value =
        serde_json::from_slice(&out.stdout).context("netladder hooks --json printed no JSON")?;
    Ok(table["hooks"]
        .as_array()
        .context("netladder hooks --json has no hooks")?
        .iter()
        .filter(|h| h["status"] == "attached")
        .filter(|h| !h["hook"].as_str().unwrap_or_default().contains("(in "))
        .filter_map(|h| h["program"].as_str())
        .filter(|p| !MINIMAL.contains(p))
        .map(str::to_owned)
        .collect())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    Storm,
    Connects,
}

impl Work {
    const ALL: [Work; 2] = [Work::Storm, Work::Connects];

    fn label(self) -> &'static str {
        match self {
            Work::Storm => "refused storm (loopback)",
            Work::Connects => "successful connections (veth pair)",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Work::Storm => "refused connect",
            Work::Connects => "connection",
        }
    }

    fn target(self) -> f64 {
        match self {
            Work::Storm => STORM_TARGET,
            Work::Connects => CONNECTS_TARGET,
        }
    }
}

/// One run: units per second and the client's CPU per unit (µs).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sample {
    rate: f64,
    cpu_us: f64,
}

/// Every sample of one load, per round and mode (None: the run failed).
pub(super) struct FloorResults {
    samples: Vec<(Work, u32, Tracing, Option<Sample>)>,
    failures: Vec<String>,
    seconds: f64,
}

pub(super) fn run(ctx: &Ctx) -> Result<FloorResults> {
    let port = ClosedPort::reserve()?;
    let lab = Lab::create(ctx)?;
    let length = Duration::from_secs_f64(ctx.seconds);
    let skips = other_programs(ctx)?;
    eprintln!(
        "bench: floor: storm to {} and connections over a veth pair, untraced, under netladder, \
         with every program empty, and with only the state-change and drop programs; warming up",
        port.addr
    );
    one_storm(ctx, port.addr, Duration::from_secs(1))?;
    lab.load_traced(Load::Connects, lab.length(), None)?;
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for round in 0..ctx.rounds {
        for work in Work::ALL {
            for tracing in rotated(Tracing::ALL, round) {
                let sample = measure(ctx, &lab, &port, work, tracing.watch_args(&skips), length);
                stop_requested()?;
                let sample = match sample {
                    Ok(s) => {
                        eprintln!(
                            "bench: floor round {}: {}, {}: {:.0}/s, {:.2} µs client CPU per {}",
                            round + 1,
                            work.label(),
                            tracing.label(),
                            s.rate,
                            s.cpu_us,
                            work.unit()
                        );
                        Some(s)
                    }
                    Err(e) => {
                        let why = one_line(e);
                        eprintln!("bench: floor round {}: {why}", round + 1);
                        failures.push(format!("{}, {}: {why}", work.label(), tracing.label()));
                        None
                    }
                };
                samples.push((work, round, tracing, sample));
                sleep(SETTLE);
            }
        }
    }
    Ok(FloorResults {
        samples,
        failures,
        seconds: ctx.seconds,
    })
}

fn measure(
    ctx: &Ctx,
    lab: &Lab,
    port: &ClosedPort,
    work: Work,
    watch_args: Option<Vec<String>>,
    length: Duration,
) -> Result<Sample> {
    let netladder = watch_args
        .map(|args| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Netladder::start_with(&ctx.bins, &ctx.work, ctx.seconds, &args)
        })
        .transpose()?;
    let sample = match work {
        Work::Storm => {
            let s = one_storm(ctx, port.addr, length)?;
            Sample {
                rate: s.rate,
                cpu_us: s.cpu_per_connect_us(),
            }
        }
        Work::Connects => {
            let m = lab.load_traced(Load::Connects, length, netladder.as_ref())?;
            Sample {
                rate: m.rate,
                cpu_us: m.cpu_per_unit_us(Load::Connects),
            }
        }
    };
    if let Some(n) = netladder {
        n.stop()?;
    }
    Ok(sample)
}

impl FloorResults {
    /// `tracing`'s rate over the untraced rate of the same round, for every round with both.
    fn ratios(&self, work: Work, tracing: Tracing) -> Option<Spread> {
        let rate = |round: u32, t: Tracing| {
            self.samples
                .iter()
                .find(|(w, r, tr, _)| *w == work && *r == round && *tr == t)
                .and_then(|(_, _, _, s)| s.map(|s| s.rate))
        };
        let rounds = self.samples.iter().map(|(_, r, _, _)| *r).max()? + 1;
        Spread::of(
            (0..rounds).filter_map(|r| Some(rate(r, tracing)? / rate(r, Tracing::Untraced)?)),
        )
    }

    /// The median client CPU per unit of `tracing`'s runs.
    fn cpu_us(&self, work: Work, tracing: Tracing) -> Option<f64> {
        Spread::of(
            self.samples
                .iter()
                .filter(|(w, _, t, _)| *w == work && *t == tracing)
                .filter_map(|(_, _, _, s)| s.map(|s| s.cpu_us)),
        )
        .map(|s| s.median)
    }

    pub(super) fn markdown(&self) -> String {
        let mut md = String::from(
            "### The floor: what the hooks cost before the programs work (issue 16, benchmark 6)\n\n",
        );
        md += &format!(
            "Each load ran {:.0} s per mode and round, the modes in rotating order: untraced; under \
             `netladder watch --json`; the same with `--empty-programs` (every program attached as \
             usual, each returning at once, so nothing is reported); and with only the state-change \
             and drop programs attached, doing their full work (every other attached program \
             skipped with `--skip-hook`). The empty mode is what attaching the hooks costs by \
             itself: the kernel's work to start a program, once per hook run. A target above it \
             cannot be met by cheaper programs, only by fewer program runs per connection. The \
             last mode is the smallest hook set that still sees who connected, how it ended and \
             what was dropped; what the whole set adds over it is the other rungs' hooks (routes, \
             DNS, the RST, binds). The runs per connection of each program are in the tables of \
             the storm's and the healthy path's kernel time, above.\n\n",
            self.seconds
        );
        md += "| load | mode | rate ratio: median | min | max | client CPU per unit (median) |\n";
        md += "|---|---|---|---|---|---|\n";
        for work in Work::ALL {
            for tracing in Tracing::ALL {
                let cpu = self
                    .cpu_us(work, tracing)
                    .map_or("no data".to_owned(), |c| {
                        format!("{c:.2} µs per {}", work.unit())
                    });
                md += &format!(
                    "| {} | {} | {} | {cpu} |\n",
                    work.label(),
                    tracing.label(),
                    ratio_cells(tracing == Tracing::Untraced, self.ratios(work, tracing)),
                );
            }
        }
        md += "\n";
        for work in Work::ALL {
            let cpu = |t| self.cpu_us(work, t);
            let (Some(untraced), Some(empty), Some(full), Some(minimal)) = (
                cpu(Tracing::Untraced),
                cpu(Tracing::Empty),
                cpu(Tracing::Full),
                cpu(Tracing::Minimal),
            ) else {
                continue;
            };
            md += &format!(
                "- {}, client CPU per {} over the untraced run (medians): every hook attached and \
                 empty {:+.2} µs, all of them working {:+.2} µs, only the state changes and drops \
                 working {:+.2} µs. Both ends run on this host; the client's CPU holds its own \
                 side only.\n",
                work.label(),
                work.unit(),
                empty - untraced,
                full - untraced,
                minimal - untraced
            );
        }
        for failure in &self.failures {
            md += &format!("- A run failed: {failure}\n");
        }
        md
    }

    pub(super) fn verdicts(&self) -> Vec<String> {
        Work::ALL
            .iter()
            .map(|&work| {
                let cell = |t| {
                    self.ratios(work, t).map_or("no data".to_owned(), |r| {
                        format!("{:.3} ({:.3}-{:.3})", r.median, r.min, r.max)
                    })
                };
                let floor = match self.ratios(work, Tracing::Empty) {
                    None => "no floor measured".to_owned(),
                    Some(r) if r.median < work.target() => format!(
                        "the empty hooks alone are below the target {}: out of reach with this hook \
                         set here, whatever the programs do",
                        work.target()
                    ),
                    Some(_) => format!(
                        "the empty hooks alone are not below the target {}",
                        work.target()
                    ),
                };
                format!(
                    "floor: {}: all hooks {}; all hooks empty {}; only state changes and drops {}; \
                     {floor}",
                    work.label(),
                    cell(Tracing::Full),
                    cell(Tracing::Empty),
                    cell(Tracing::Minimal),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rate: f64, cpu_us: f64) -> Option<Sample> {
        Some(Sample { rate, cpu_us })
    }

    #[test]
    fn ratios_pair_each_round_with_its_untraced_run() {
        let mut samples = Vec::new();
        for (round, base) in [(0, 100.0), (1, 200.0)] {
            samples.push((Work::Storm, round, Tracing::Untraced, sample(base, 10.0)));
            samples.push((Work::Storm, round, Tracing::Full, sample(base * 0.8, 12.0)));
            samples.push((Work::Storm, round, Tracing::Empty, sample(base * 0.9, 11.0)));
            samples.push((
                Work::Storm,
                round,
                Tracing::Minimal,
                sample(base * 0.95, 10.5),
            ));
        }
        samples.push((Work::Connects, 0, Tracing::Untraced, sample(50.0, 40.0)));
        samples.push((Work::Connects, 0, Tracing::Empty, None));
        let results = FloorResults {
            samples,
            failures: vec!["successful connections (veth pair), the same: refused".to_owned()],
            seconds: 1.0,
        };
        let empty = results.ratios(Work::Storm, Tracing::Empty).unwrap();
        assert!((empty.median - 0.9).abs() < 1e-9);
        assert!((results.ratios(Work::Storm, Tracing::Full).unwrap().max - 0.8).abs() < 1e-9);
        assert!(results.ratios(Work::Connects, Tracing::Empty).is_none());
        let verdicts = results.verdicts();
        assert!(verdicts[0].contains("all hooks empty 0.900 (0.900-0.900)"));
        assert!(verdicts[0].contains("only state changes and drops 0.950"));
        assert!(verdicts[0].contains("out of reach"));
        assert!(verdicts[1].contains("all hooks empty no data; "));
        assert!(verdicts[1].ends_with("no floor measured"));
        let md = results.markdown();
        assert!(md.contains("every hook attached and empty +1.00 µs, all of them working +2.00 µs"));
        assert!(md.contains("only the state changes and drops working +0.50 µs"));
        assert!(md.contains("A run failed"));
    }
}
