//! `cargo xtask bench`: what `netladder watch` costs, measured side by side with untraced runs.
//!
//! Five benchmarks (issues 8 and 16), each of which can run alone (`--only`):
//! - `storm` (storm.rs): a refused-connection storm on loopback, untraced vs netladder vs bpftrace;
//! - `healthy` (healthy.rs): throughput and connection rate of successful connections over a
//!   veth pair between two throwaway namespaces, untraced vs netladder;
//! - `drops` (drops.rs): a flood of connects that a namespace's own firewall rejects (and UDP
//!   datagrams it drops), untraced vs netladder, with netladder's accounting, CPU and memory;
//! - `hosttax` (hosttax.rs, loads in load.rs): what processes that make no failing connection
//!   pay while netladder runs (syscall loops, a loopback TCP echo), untraced vs netladder vs
//!   bpftrace;
//! - `startup` (startup.rs): netladder started and stopped with no traffic.
//!
//! Modes alternate in rotating order from round to round, so drift does not favour one. The
//! results are printed as markdown and written into the generated section of docs/benchmarks.md
//! (one block per benchmark). Targets are reported, never asserted: the task exits 0 when a target
//! is missed and says so in `TARGET MISSED:` lines.
//!
//! Safety: traffic only to 127.0.0.1 and to addresses the bench assigns inside namespaces it
//! creates (deleted on every exit path, stale ones of dead runs swept); every wait is bounded;
//! every child is stopped when the bench ends, fails or is interrupted (and dies with it through
//! PR_SET_PDEATHSIG if it is killed); no BPF program other than the ones netladder and bpftrace
//! load themselves is touched.

mod child;
mod costs;
mod drops;
mod floor;
mod healthy;
mod hosttax;
mod load;
mod procfs;
mod report;
mod startup;
mod storm;
mod tracer;
pub mod vmplans;

use std::path::PathBuf;
use std::process::ExitCode;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::{cmd, setup};
use child::{install_stop_handlers, WorkDir};
pub use load::LoadArgs;
use report::{Machine, DOC};

/// Longest wait for netladder's ready file, bpftrace's "Attaching" line or a server's ready line.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a tracer to exit after SIGINT (netladder drains its ring buffer first).
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait, after netladder exited, for the kernel to unload its programs.
const DETACH_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time a load may take beyond its duration before it is killed.
const STORM_GRACE: Duration = Duration::from_secs(30);
/// Pause between two loads, so one mode's teardown does not overlap the next one's load.
const SETTLE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(20);

/// One benchmark of `cargo xtask bench`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Which {
    /// Refused-connection storm on loopback (benchmark 1).
    Storm,
    /// Successful connections over a veth pair (benchmark 2).
    Healthy,
    /// A firewall rejecting a flood inside a namespace (benchmark 3).
    Drops,
    /// What processes that are not traced pay while netladder runs (benchmark 5, issue 16).
    #[value(name = "hosttax")]
    HostTax,
    /// Start-up and shutdown (benchmark 4).
    Startup,
    /// The storm and the connections again, also with every program empty: what the hooks
    /// cost before the programs do any work (benchmark 6, issue 16).
    Floor,
}

impl Which {
    /// Every benchmark, in the order they run and are reported.
    const ALL: [Which; 6] = [
        Which::Storm,
        Which::Healthy,
        Which::Drops,
        Which::HostTax,
        Which::Startup,
        Which::Floor,
    ];

    fn name(self) -> &'static str {
        match self {
            Which::Storm => "storm",
            Which::Healthy => "healthy",
            Which::Drops => "drops",
            Which::HostTax => "hosttax",
            Which::Startup => "startup",
            Which::Floor => "floor",
        }
    }
}

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Interleaved rounds; each runs every load once per mode (and start-up runs this often).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Length of each load (storm, stream, connect loop, flood, host-tax load) in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Client threads making connects in the storm (default 1: one client, the other CPUs left
    /// to the tracer).
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Client threads making connects in the drop storm's flood.
    #[arg(long, default_value_t = 2)]
    flood_threads: u32,
    /// Run only these benchmarks (comma-separated; default: all of them).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Which>,
    /// Print the results only; leave docs/benchmarks.md as it is.
    #[arg(long)]
    no_write: bool,
}

impl BenchArgs {
    fn validate(&self) -> Result<()> {
        ensure!((1..=100).contains(&self.rounds), "--rounds must be 1..=100");
        ensure!(
            (0.5..=600.0).contains(&self.seconds),
            "--seconds must be 0.5..=600"
        );
        ensure!((1..=64).contains(&self.threads), "--threads must be 1..=64");
        ensure!(
            (1..=64).contains(&self.flood_threads),
            "--flood-threads must be 1..=64"
        );
        Ok(())
    }

    /// The benchmarks to run, in their usual order.
    fn selected(&self) -> Vec<Which> {
        if self.only.is_empty() {
            return Which::ALL.to_vec();
        }
        let mut chosen = self.only.clone();
        chosen.sort();
        chosen.dedup();
        chosen
    }

    /// The command line that reproduces this run.
    fn command_line(&self) -> String {
        let selected = self.selected();
        let mut line = "sudo cargo xtask bench".to_owned();
        if selected.len() < Which::ALL.len() {
            let names: Vec<&str> = selected.iter().map(|w| w.name()).collect();
            line += &format!(" --only {}", names.join(","));
        }
        line += &format!(" --rounds {} --seconds {}", self.rounds, self.seconds);
        if selected.contains(&Which::Storm) {
            line += &format!(" --threads {}", self.threads);
        }
        if selected.contains(&Which::Drops) {
            line += &format!(" --flood-threads {}", self.flood_threads);
        }
        line
    }
}

/// What every benchmark needs.
struct Ctx {
    bins: Bins,
    /// The bench's scratch directory.
    work: PathBuf,
    rounds: u32,
    seconds: f64,
    threads: u32,
    flood_threads: u32,
}

/// The hidden `xtask bench-load` child mode: one host-tax load, timed by itself.
pub fn run_load(args: &LoadArgs) -> Result<ExitCode> {
    load::run(args)
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    args.validate()?;
    let selected = args.selected();
    let doc = cmd::workspace_root().join(DOC);
    if !args.no_write && selected.len() < Which::ALL.len() && !report::doc_has_blocks(&doc) {
        bail!(
            "{DOC}'s generated section has no per-benchmark blocks yet: run every benchmark once \
             (without --only) before running one alone, or add --no-write"
        );
    }
    ensure!(
        cmd::is_root(),
        "bench: must run as root (netladder and bpftrace load eBPF programs): sudo cargo xtask bench"
    );
    setup::run_for_tests()?;
    let bins = build()?;
    install_stop_handlers()?;
    let work = WorkDir::create()?;
    let ctx = Ctx {
        bins,
        work: work.path.clone(),
        rounds: args.rounds,
        seconds: args.seconds,
        threads: args.threads,
        flood_threads: args.flood_threads,
    };
    let runs = |which| selected.contains(&which);
    let storm = runs(Which::Storm).then(|| storm::run(&ctx)).transpose()?;
    let healthy = runs(Which::Healthy)
        .then(|| healthy::run(&ctx))
        .transpose()?;
    let drops = runs(Which::Drops).then(|| drops::run(&ctx)).transpose()?;
    let hosttax = runs(Which::HostTax)
        .then(|| hosttax::run(&ctx))
        .transpose()?;
    let startup = runs(Which::Startup)
        .then(|| startup::run(&ctx))
        .transpose()?;
    let floor = runs(Which::Floor).then(|| floor::run(&ctx)).transpose()?;

    let machine = Machine::describe();
    let command_line = args.command_line();
    let mut sections: Vec<(Which, String, Vec<String>)> = Vec::new();
    if let Some(s) = &storm {
        sections.push((
            Which::Storm,
            s.markdown(&machine, &command_line),
            s.verdicts(),
        ));
    }
    if let Some(h) = &healthy {
        sections.push((
            Which::Healthy,
            h.markdown(&machine, &command_line),
            h.verdicts(),
        ));
    }
    if let Some(d) = &drops {
        sections.push((
            Which::Drops,
            d.markdown(&machine, &command_line),
            d.verdicts(),
        ));
    }
    if let Some(h) = &hosttax {
        sections.push((
            Which::HostTax,
            h.markdown(&machine, &command_line),
            h.verdicts(),
        ));
    }
    if let Some(s) = &startup {
        // The storm's section names the machine; alone, start-up names it itself.
        let measured = storm.is_none().then(|| machine.measured(&command_line));
        sections.push((Which::Startup, s.markdown(measured), s.verdicts()));
    }
    if let Some(f) = &floor {
        sections.push((Which::Floor, f.markdown(), f.verdicts()));
    }
    let markdown: Vec<&str> = sections.iter().map(|(_, md, _)| md.as_str()).collect();
    println!("{}", markdown.join("\n"));
    for (_, _, verdicts) in &sections {
        for line in verdicts {
            println!("{line}");
        }
    }
    if !args.no_write {
        let ran: Vec<(Which, String)> = sections
            .into_iter()
            .map(|(which, md, _)| (which, md))
            .collect();
        report::write_doc(&doc, &ran)?;
        println!("bench: wrote {DOC}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the release `netladder` and `nl-peer` (only those two: the scenario tests are not needed).
fn build() -> Result<Bins> {
    let root = cmd::workspace_root();
    cmd::run(
        cmd::cargo()
            .current_dir(&root)
            .args(["build", "--release", "-p", "netladder-user"]),
    )?;
    cmd::run(cmd::cargo().current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "netladder-tests",
        "--bin",
        "nl-peer",
    ]))?;
    let release = root.join("target").join("release");
    let bins = Bins {
        netladder: release.join("netladder"),
        nl_peer: release.join("nl-peer"),
    };
    for bin in [&bins.netladder, &bins.nl_peer] {
        ensure!(
            bin.is_file(),
            "cargo finished but {} is missing",
            bin.display()
        );
    }
    Ok(bins)
}

struct Bins {
    netladder: PathBuf,
    nl_peer: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Untraced,
    Netladder,
    Bpftrace,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Untraced, Mode::Netladder, Mode::Bpftrace];
    /// The modes of the benchmarks that compare netladder with no tracer only.
    const PAIR: [Mode; 2] = [Mode::Untraced, Mode::Netladder];

    /// Round `round` runs the modes rotated by `round` places.
    fn order(round: u32) -> [Mode; 3] {
        rotated(Mode::ALL, round)
    }

    fn label(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Netladder => "netladder watch --json",
            Mode::Bpftrace => "bpftrace, counting the same tracepoints",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Netladder => "netladder",
            Mode::Bpftrace => "bpftrace",
        }
    }
}

/// `modes` rotated left by `round` places (the benchmarks' modes, or benchmark 6's).
fn rotated<T, const N: usize>(mut modes: [T; N], round: u32) -> [T; N] {
    modes.rotate_left(round as usize % N);
    modes
}

/// One round of a benchmark that compares netladder with no tracer: each mode's result, or why
/// it failed.
struct PairRound<R> {
    order: [Mode; 2],
    untraced: Result<R, String>,
    netladder: Result<R, String>,
}

impl<R> PairRound<R> {
    fn run(&self, mode: Mode) -> Option<&R> {
        match mode {
            Mode::Netladder => self.netladder.as_ref().ok(),
            _ => self.untraced.as_ref().ok(),
        }
    }

    fn failure(&self, mode: Mode) -> Option<&str> {
        match mode {
            Mode::Netladder => self.netladder.as_ref().err(),
            _ => self.untraced.as_ref().err(),
        }
        .map(String::as_str)
    }
}

/// Why `mode` has no result: the first failure of its runs.
fn first_failure<R>(rounds: &[PairRound<R>], mode: Mode) -> &str {
    rounds
        .iter()
        .find_map(|r| r.failure(mode))
        .unwrap_or("no data")
}

/// Runs `rounds` rounds of a load untraced and under netladder, in rotating order, with a pause
/// after each run. Once a traced run fails, the later ones are not tried (same reason); a failed
/// untraced run is kept as that round's failure. Also returns the foreign tracers seen before
/// any run (sorted, once each).
fn pair_rounds<R>(
    name: &str,
    rounds: u32,
    mut untraced: impl FnMut() -> Result<R>,
    mut traced: impl FnMut() -> Result<R>,
    progress: impl Fn(&Result<R, String>) -> String,
) -> Result<(Vec<PairRound<R>>, Vec<String>)> {
    let mut done = Vec::new();
    let mut broken = None;
    let mut foreign = Vec::new();
    for round in 0..rounds {
        let order = rotated(Mode::PAIR, round);
        let mut plain = Err("not run".to_owned());
        let mut netladder = Err("not run".to_owned());
        for mode in order {
            foreign.extend(procfs::foreign_tracers());
            let result = match mode {
                Mode::Netladder => {
                    netladder = retry_unless_broken(&mut broken, &mut traced);
                    &netladder
                }
                _ => {
                    plain = untraced().map_err(one_line);
                    &plain
                }
            };
            child::stop_requested()?;
            eprintln!(
                "bench: {name} round {}: {}: {}",
                round + 1,
                mode.short(),
                progress(result)
            );
            sleep(SETTLE);
        }
        done.push(PairRound {
            order,
            untraced: plain,
            netladder,
        });
    }
    foreign.sort();
    foreign.dedup();
    Ok((done, foreign))
}

/// The fields of a JSON line one of the bench's programs printed (`what` names it in errors).
struct JsonLine {
    what: String,
    v: Value,
}

impl JsonLine {
    fn parse(what: &str, line: &str) -> Result<JsonLine> {
        let v = serde_json::from_str(line.trim())
            .with_context(|| format!("{what} printed invalid JSON"))?;
        Ok(JsonLine {
            what: what.to_owned(),
            v,
        })
    }

    fn count(&self, key: &str) -> Result<u64> {
        self.v[key]
            .as_u64()
            .with_context(|| format!("{} printed no {key:?}", self.what))
    }

    fn real(&self, key: &str) -> Result<f64> {
        self.v[key]
            .as_f64()
            .with_context(|| format!("{} printed no {key:?}", self.what))
    }
}

fn retry_unless_broken<T>(
    broken: &mut Option<String>,
    run: impl FnOnce() -> Result<T>,
) -> Result<T, String> {
    if let Some(reason) = broken {
        return Err(reason.clone());
    }
    run().map_err(|err| {
        let reason = one_line(err);
        *broken = Some(reason.clone());
        reason
    })
}

fn one_line(err: anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn modes_rotate_per_round() {
        assert_eq!(
            Mode::order(0),
            [Mode::Untraced, Mode::Netladder, Mode::Bpftrace]
        );
        assert_eq!(
            Mode::order(1),
            [Mode::Netladder, Mode::Bpftrace, Mode::Untraced]
        );
        assert_eq!(
            Mode::order(2),
            [Mode::Bpftrace, Mode::Untraced, Mode::Netladder]
        );
        assert_eq!(Mode::order(3), Mode::order(0));
        assert_eq!(rotated(Mode::PAIR, 1), [Mode::Netladder, Mode::Untraced]);
        assert_eq!(rotated(Mode::PAIR, 2), Mode::PAIR);
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> BenchArgs {
        Cli::try_parse_from([&["bench"], args].concat())
            .unwrap()
            .bench
    }

    #[test]
    fn command_line_names_what_ran() {
        assert_eq!(
            parse(&[]).command_line(),
            "sudo cargo xtask bench --rounds 5 --seconds 5 --threads 1 --flood-threads 2"
        );
        let one = parse(&[
            "--only",
            "drops,healthy,drops",
            "--rounds",
            "2",
            "--seconds",
            "3",
        ]);
        assert_eq!(one.selected(), [Which::Healthy, Which::Drops]);
        assert_eq!(
            one.command_line(),
            "sudo cargo xtask bench --only healthy,drops --rounds 2 --seconds 3 --flood-threads 2"
        );
        assert_eq!(
            parse(&["--only", "startup"]).command_line(),
            "sudo cargo xtask bench --only startup --rounds 5 --seconds 5"
        );
        let host = parse(&["--only", "hosttax,startup", "--rounds", "1"]);
        assert_eq!(host.selected(), [Which::HostTax, Which::Startup]);
        assert_eq!(
            host.command_line(),
            "sudo cargo xtask bench --only hosttax,startup --rounds 1 --seconds 5"
        );
        assert!(Cli::try_parse_from(["bench", "--only", "nope"]).is_err());
        assert!(parse(&["--flood-threads", "0"]).validate().is_err());
    }
}
