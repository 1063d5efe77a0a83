//! Benchmark 2: the healthy path. Successful TCP traffic between two throwaway namespaces joined
//! by a veth pair, untraced vs under `netladder watch --json`:
//! - throughput: one stream (`nl-peer blast`) into a server that discards it (`nl-peer sink`);
//! - connection rate: connect, wait for the server's close, close (`nl-peer churn`) against a
//!   server that accepts and closes (`nl-peer listen`).
//!
//! A successful connection must cost (almost) nothing and produce no event: every failure event
//! netladder prints for these namespaces is a finding, and is shown.

use std::fs;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use netladder_tests::TwoHosts;
use serde_json::Value;

use super::child::{last_line, remove_if_present, Guarded};
use super::costs::{self, Costs};
use super::procfs::{cpu_secs, system_busy_secs};
use super::report::{closing, escape_cell, median, Machine, Spread};
use super::tracer::{count_of, read_failures, FinalStats, Netladder};
use super::{
    first_failure, pair_rounds, Ctx, JsonLine, Mode, PairRound, ATTACH_TIMEOUT, SETTLE, STORM_GRACE,
};

/// The client's and the server's end of the veth (only inside the bench's namespaces).
const CLIENT_CIDR: &str = "10.248.0.1/24";
const SERVER_CIDR: &str = "10.248.0.2/24";
const SINK_ADDR: &str = "10.248.0.2:5001";
const LISTEN_ADDR: &str = "10.248.0.2:5002";
/// The prefix of every address of the pair, to find events about them.
const PAIR_PREFIX: &str = "10.248.0.";

/// Runs the rounds.
pub(super) fn run(ctx: &Ctx) -> Result<HealthyResults> {
    let lab = Lab::create(ctx)?;
    eprintln!(
        "bench: healthy path: {} -> {SINK_ADDR} (stream) and {LISTEN_ADDR} (connects) over a veth \
         pair; warming up",
        CLIENT_CIDR.split('/').next().unwrap_or_default()
    );
    // One untraced run of each load, not counted: the first one after the namespaces were made
    // was measured slower than the others.
    lab.load(Load::Stream, lab.length())?;
    lab.load(Load::Connects, lab.length())?;
    let (rounds, foreign) = pair_rounds(
        "healthy",
        ctx.rounds,
        || lab.untraced(),
        || lab.traced(),
        Run::progress,
    )?;
    // Per MB of the stream: what the per-packet programs (the DNS cgroup_skb pair,
    // consume_skb) cost a bulk transfer.
    let stream_costs = costs::measure(ctx, "healthy path, stream", "MB", |netladder| {
        Ok(lab
            .load_traced(Load::Stream, lab.length(), Some(netladder))?
            .units
            / 1_000_000)
    });
    // Per connection (both ends are on this host, so both sockets' programs count).
    let costs = costs::measure(ctx, "healthy path", "connection", |netladder| {
        Ok(lab
            .load_traced(Load::Connects, lab.length(), Some(netladder))?
            .units)
    });
    Ok(HealthyResults {
        rounds,
        foreign,
        seconds: ctx.seconds,
        stream_costs,
        costs,
    })
}

/// The two kinds of healthy load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Load {
    Stream,
    Connects,
}

impl Load {
    const ALL: [Load; 2] = [Load::Stream, Load::Connects];

    fn command(self) -> &'static str {
        match self {
            Load::Stream => "blast",
            Load::Connects => "churn",
        }
    }

    fn server(self) -> &'static str {
        match self {
            Load::Stream => SINK_ADDR,
            Load::Connects => LISTEN_ADDR,
        }
    }

    /// The JSON key of the unit counted.
    fn units_key(self) -> &'static str {
        match self {
            Load::Stream => "bytes",
            Load::Connects => "connects",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Load::Stream => "throughput, one stream (MB/s)",
            Load::Connects => "successful connections (connects/s)",
        }
    }

    /// A rate in this load's unit (MB/s or connects/s).
    fn rate(self, per_sec: f64) -> f64 {
        match self {
            Load::Stream => per_sec / 1e6,
            Load::Connects => per_sec,
        }
    }

    fn cpu_unit(self) -> &'static str {
        match self {
            Load::Stream => "µs per MB",
            Load::Connects => "µs per connect",
        }
    }
}

/// What one `nl-peer blast` or `nl-peer churn` printed, plus the CPU used around it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Measured {
    /// Bytes sent (stream) or connections completed (connects).
    units: u64,
    /// Connects that failed (connects only; any is a problem of the bench, not a result).
    failures: u64,
    secs: f64,
    /// Units per second.
    pub(super) rate: f64,
    /// CPU seconds the client used (user + system, the kernel's work in its context included).
    client_cpu: f64,
    /// CPU seconds the server process used meanwhile.
    server_cpu: f64,
    /// CPU seconds all CPUs were busy meanwhile (from /proc/stat).
    busy_cpu: f64,
    /// CPU seconds the tracer used meanwhile (0 untraced).
    tracer_cpu: f64,
}

impl Measured {
    fn parse(line: &str, load: Load) -> Result<Measured> {
        let what = load.command();
        let json = JsonLine::parse(&format!("nl-peer {what}"), line)?;
        let (count, real) = (|k| json.count(k), |k| json.real(k));
        Ok(Measured {
            units: count(load.units_key())?,
            failures: json.v["failures"].as_u64().unwrap_or(0),
            secs: real("secs")?,
            rate: real("rate")?,
            client_cpu: real("user")? + real("sys")?,
            server_cpu: 0.0,
            busy_cpu: 0.0,
            tracer_cpu: 0.0,
        })
    }

    /// Client CPU per MB (stream) or per connect, in microseconds.
    pub(super) fn cpu_per_unit_us(&self, load: Load) -> f64 {
        let units = match load {
            Load::Stream => self.units as f64 / 1e6,
            Load::Connects => self.units as f64,
        };
        1e6 * self.client_cpu / units.max(1e-9)
    }

    /// CPUs' worth of work done by neither the client, the server nor the tracer.
    fn background_cpus(&self) -> f64 {
        ((self.busy_cpu - self.client_cpu - self.server_cpu - self.tracer_cpu) / self.secs).max(0.0)
    }
}

/// Both loads in one mode.
#[derive(Debug)]
struct Run {
    stream: Measured,
    connects: Measured,
    /// Under netladder: what it said and cost.
    traced: Option<Traced>,
}

#[derive(Debug)]
struct Traced {
    stats: FinalStats,
    /// Failure events about the bench's namespaces or addresses, one compact line each.
    events: Vec<String>,
    /// Failures they stand for (aggregated counts summed).
    failures: u64,
    peak_rss_kib: u64,
    startup: Duration,
}

impl Run {
    fn measured(&self, load: Load) -> &Measured {
        match load {
            Load::Stream => &self.stream,
            Load::Connects => &self.connects,
        }
    }

    fn progress(result: &Result<Run, String>) -> String {
        let run = match result {
            Ok(run) => run,
            Err(why) => return format!("failed: {why}"),
        };
        let mut line = format!(
            "{:.0} MB/s ({:.1} µs CPU per MB), {:.0} connects/s ({:.2} µs CPU per connect, {} failed)",
            run.stream.rate / 1e6,
            run.stream.cpu_per_unit_us(Load::Stream),
            run.connects.rate,
            run.connects.cpu_per_unit_us(Load::Connects),
            run.connects.failures
        );
        if let Some(t) = &run.traced {
            line += &format!(
                ", {} failure events for this traffic, {} lost, netladder CPU {:.2} s + {:.2} s",
                t.events.len(),
                t.stats.lost,
                run.stream.tracer_cpu,
                run.connects.tracer_cpu
            );
        }
        line
    }
}

type Round = PairRound<Run>;

impl Round {
    fn measured(&self, mode: Mode, load: Load) -> Option<&Measured> {
        self.run(mode).map(|r| r.measured(load))
    }

    fn ratio(&self, load: Load) -> Option<f64> {
        Some(self.measured(Mode::Netladder, load)?.rate / self.measured(Mode::Untraced, load)?.rate)
    }
}

/// The two namespaces and the two servers. Fields drop in order: the servers first, then the
/// namespaces (which kill whatever still runs inside and take the veth with them).
pub(super) struct Lab<'a> {
    ctx: &'a Ctx,
    _sink: Guarded,
    listener: Guarded,
    sink_pid: i32,
    hosts: TwoHosts,
}

impl<'a> Lab<'a> {
    pub(super) fn create(ctx: &'a Ctx) -> Result<Lab<'a>> {
        let hosts = TwoHosts::new("bench", &[CLIENT_CIDR], &[SERVER_CIDR])
            .context("cannot create the namespaces and their veth pair")?;
        let sink = Self::server(ctx, &hosts, "sink", &["sink", SINK_ADDR])?;
        let listener = Self::server(
            ctx,
            &hosts,
            "listen",
            &["listen", LISTEN_ADDR, "--backlog", "4096"],
        )?;
        Ok(Lab {
            ctx,
            sink_pid: sink.pid(),
            _sink: sink,
            listener,
            hosts,
        })
    }

    /// Starts `nl-peer ARGS` in the server namespace and waits for its `ready` line.
    fn server(ctx: &Ctx, hosts: &TwoHosts, name: &str, args: &[&str]) -> Result<Guarded> {
        let out = ctx.work.join(format!("{name}.out"));
        let err = ctx.work.join(format!("{name}.err"));
        let mut command = hosts.server.command(&ctx.bins.nl_peer);
        command.args(args);
        let what = if name == "sink" {
            "nl-peer sink"
        } else {
            "nl-peer listen"
        };
        let mut child = Guarded::spawn(&mut command, what, &out, &err)?;
        child.wait_until(ATTACH_TIMEOUT, &err, || {
            fs::read_to_string(&out).is_ok_and(|t| t.starts_with("ready "))
        })?;
        Ok(child)
    }

    fn server_pid(&self, load: Load) -> i32 {
        match load {
            Load::Stream => self.sink_pid,
            Load::Connects => self.listener.pid(),
        }
    }

    /// Runs one load for `length` from the client namespace.
    fn load(&self, load: Load, length: Duration) -> Result<Measured> {
        self.load_traced(load, length, None)
    }

    pub(super) fn load_traced(
        &self,
        load: Load,
        length: Duration,
        tracer: Option<&Netladder>,
    ) -> Result<Measured> {
        let out = self.ctx.work.join("load.out");
        let err = self.ctx.work.join("load.err");
        let mut command = self.hosts.client.command(&self.ctx.bins.nl_peer);
        command
            .args([load.command(), load.server()])
            .args(["--duration", &length.as_secs_f64().to_string()]);
        let server = self.server_pid(load);
        let tracer_cpu = || tracer.map_or(Ok(0.0), Netladder::cpu_secs);
        let (busy0, server0, tracer0) = (system_busy_secs()?, cpu_secs(server)?, tracer_cpu()?);
        let what = if load == Load::Stream {
            "nl-peer blast"
        } else {
            "nl-peer churn"
        };
        let mut child = Guarded::spawn(&mut command, what, &out, &err)?;
        let status = child.wait_for(length + STORM_GRACE)?;
        let busy_cpu = system_busy_secs()? - busy0;
        let server_cpu = cpu_secs(server)? - server0;
        let tracer_cpu = tracer_cpu()? - tracer0;
        ensure!(
            status.success(),
            "{what} failed ({status}){}",
            last_line(&err)
        );
        let text = fs::read_to_string(&out).context("cannot read nl-peer's output")?;
        Ok(Measured {
            server_cpu,
            busy_cpu,
            tracer_cpu,
            ..Measured::parse(&text, load)?
        })
    }

    pub(super) fn length(&self) -> Duration {
        Duration::from_secs_f64(self.ctx.seconds)
    }

    fn untraced(&self) -> Result<Run> {
        let stream = self.load(Load::Stream, self.length())?;
        sleep(SETTLE);
        let connects = self.load(Load::Connects, self.length())?;
        Ok(Run {
            stream,
            connects,
            traced: None,
        })
    }

    fn traced(&self) -> Result<Run> {
        let netladder = Netladder::start(&self.ctx.bins, &self.ctx.work, 2.0 * self.ctx.seconds)?;
        let stream = self.load_traced(Load::Stream, self.length(), Some(&netladder))?;
        sleep(SETTLE);
        let connects = self.load_traced(Load::Connects, self.length(), Some(&netladder))?;
        let peak_rss_kib = netladder.peak_rss_kib()?;
        let startup = netladder.startup;
        let stopped = netladder.stop()?;
        let (stats, failures) = read_failures(&stopped.out)?;
        remove_if_present(&stopped.out)?;
        let netns = [self.hosts.client.inode(), self.hosts.server.inode()];
        let ours: Vec<&Value> = failures.iter().filter(|e| is_ours(e, &netns)).collect();
        Ok(Run {
            stream,
            connects,
            traced: Some(Traced {
                stats,
                events: ours.iter().map(|e| describe_event(e)).collect(),
                failures: ours.iter().map(|e| count_of(e)).sum(),
                peak_rss_kib,
                startup,
            }),
        })
    }
}

/// Is this failure event about the bench's namespaces or the veth pair's addresses?
fn is_ours(event: &Value, netns: &[u64]) -> bool {
    let in_ns = event["netns"].as_u64().is_some_and(|n| netns.contains(&n));
    let addr = |key: &str| {
        event[key]
            .as_str()
            .is_some_and(|a| a.starts_with(PAIR_PREFIX))
    };
    in_ns || addr("dst") || addr("src")
}

/// One failure event in a few words: `#021 cause src -> dst (comm, count N)`.
fn describe_event(event: &Value) -> String {
    let text = |key: &str| event[key].as_str().unwrap_or("?").to_owned();
    format!(
        "#{} {} {} -> {} ({}, count {})",
        text("code"),
        text("cause"),
        text("src"),
        text("dst"),
        text("comm"),
        count_of(event)
    )
}

/// The rounds of benchmark 2, for the report.
pub(super) struct HealthyResults {
    rounds: Vec<Round>,
    foreign: Vec<String>,
    seconds: f64,
    /// The stream's program costs per MB (a run of its own), or why that run failed.
    stream_costs: Result<Costs, String>,
    /// The connects' program costs (a run of their own), or why that run failed.
    costs: Result<Costs, String>,
}

impl HealthyResults {
    fn rates(&self, mode: Mode, load: Load) -> Option<Spread> {
        Spread::of(
            self.rounds
                .iter()
                .filter_map(|r| r.measured(mode, load))
                .map(|m| load.rate(m.rate)),
        )
    }

    fn ratios(&self, load: Load) -> Option<Spread> {
        Spread::of(self.rounds.iter().filter_map(|r| r.ratio(load)))
    }

    fn traced_runs(&self) -> impl Iterator<Item = (usize, &Run, &Traced)> {
        self.rounds.iter().enumerate().filter_map(|(i, r)| {
            let run = r.netladder.as_ref().ok()?;
            Some((i + 1, run, run.traced.as_ref()?))
        })
    }

    fn why(&self, mode: Mode) -> &str {
        first_failure(&self.rounds, mode)
    }

    pub(super) fn markdown(&self, machine: &Machine, command_line: &str) -> String {
        let mut md = String::from("### Healthy path over a veth pair (issue 8, benchmark 2)\n\n");
        md += &machine.measured(command_line);
        md += &format!(
            "Each of {} rounds runs, once per mode in rotating order, a {} s TCP stream (`nl-peer blast`) \
             and then {} s of connect-and-close (`nl-peer churn`) from one namespace to another over a \
             veth pair ({} to {}). Ratios are per round against that round's untraced run.\n\n",
            self.rounds.len(),
            self.seconds,
            self.seconds,
            CLIENT_CIDR,
            SERVER_CIDR
        );
        md += &self.summary_table();
        md += "\n";
        md += &self.netladder_table();
        md += "\n";
        md += "One stream: ";
        md += &costs::section(&self.stream_costs);
        md += "\nSuccessful connections: ";
        md += &costs::section(&self.costs);
        let events: Vec<String> = self
            .traced_runs()
            .flat_map(|(i, _, t)| t.events.iter().map(move |e| format!("round {i}: {e}")))
            .collect();
        if !events.is_empty() {
            md += "\nFailure events netladder printed for this healthy traffic (each one is a bug):\n\n";
            for e in events.iter().take(20) {
                md += &format!("- {}\n", escape_cell(e));
            }
            if events.len() > 20 {
                md += &format!("- ... and {} more\n", events.len() - 20);
            }
        }
        md += &closing(&self.foreign, &self.verdicts());
        md
    }

    fn summary_table(&self) -> String {
        let mut t = String::from(
            "| load | mode | min | median | max | ratio to untraced: median | min | max \
             | client CPU (median) | CPUs busy elsewhere (median) |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for load in Load::ALL {
            for mode in Mode::PAIR {
                let Some(rates) = self.rates(mode, load) else {
                    t += &format!(
                        "| {} | {} | did not run: {} | | | | | | | |\n",
                        load.label(),
                        mode.label(),
                        escape_cell(self.why(mode))
                    );
                    continue;
                };
                let ratios = super::report::ratio_cells(mode == Mode::Untraced, self.ratios(load));
                let measured = || self.rounds.iter().filter_map(|r| r.measured(mode, load));
                let per_unit = median(measured().map(|m| m.cpu_per_unit_us(load)));
                let background = median(measured().map(Measured::background_cpus));
                t += &format!(
                    "| {} | {} | {} | {ratios} | {per_unit:.2} {} | {background:.2} |\n",
                    load.label(),
                    mode.label(),
                    rates.rate_cells(),
                    load.cpu_unit()
                );
            }
        }
        t
    }

    fn netladder_table(&self) -> String {
        let mut t = String::from(
            "netladder, per round (failure events: those about the two namespaces or the pair's \
             addresses, which must be none; lost: netladder's final stats line; CPU: netladder's \
             user+system time during each load):\n\n\
             | round | order | stream ratio | connects ratio | connects made | failure events | lost \
             | peak RSS | CPU, stream | CPU, connects | start-up |\n\
             |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (i, round) in self.rounds.iter().enumerate() {
            let order: Vec<&str> = round.order.iter().map(|m| m.short()).collect();
            let order = order.join(" > ");
            let ratio = |load| {
                round
                    .ratio(load)
                    .map_or("-".to_owned(), |x| format!("{x:.3}"))
            };
            match (
                &round.netladder,
                round.run(Mode::Netladder).and_then(|r| r.traced.as_ref()),
            ) {
                (Ok(run), Some(tr)) => {
                    t += &format!(
                        "| {} | {order} | {} | {} | {} | {} | {} | {:.1} MiB | {:.2} s ({:.0}%) | {:.2} s ({:.0}%) | {:.2} s |\n",
                        i + 1,
                        ratio(Load::Stream),
                        ratio(Load::Connects),
                        run.connects.units,
                        tr.failures,
                        tr.stats.lost,
                        tr.peak_rss_kib as f64 / 1024.0,
                        run.stream.tracer_cpu,
                        100.0 * run.stream.tracer_cpu / run.stream.secs,
                        run.connects.tracer_cpu,
                        100.0 * run.connects.tracer_cpu / run.connects.secs,
                        tr.startup.as_secs_f64()
                    );
                }
                (Err(why), _) => {
                    t += &format!(
                        "| {} | {order} | did not run: {} |\n",
                        i + 1,
                        escape_cell(why)
                    );
                }
                (Ok(_), None) => {}
            }
        }
        t
    }

    /// `TARGET MET:` / `TARGET MISSED:` lines, then warnings about the measurement.
    pub(super) fn verdicts(&self) -> Vec<String> {
        let mut lines: Vec<String> = Load::ALL.iter().map(|&l| self.ratio_verdict(l)).collect();
        lines.extend(self.event_verdict());
        lines.extend(self.client_warnings());
        lines.extend(self.load_warning());
        lines
    }

    fn ratio_verdict(&self, load: Load) -> String {
        const TARGET: f64 = 0.99;
        let what = match load {
            Load::Stream => "throughput of one stream",
            Load::Connects => "rate of successful connections",
        };
        match self.ratios(load) {
            Some(r) => format!(
                "TARGET {}: netladder keeps {:.3} of the untraced {what} (median; min {:.3}, max {:.3}; target >= {TARGET})",
                if r.median >= TARGET { "MET" } else { "MISSED" },
                r.median,
                r.min,
                r.max
            ),
            None => format!(
                "TARGET MISSED: the {what} under netladder could not be measured: {}",
                self.why(Mode::Netladder)
            ),
        }
    }

    fn event_verdict(&self) -> Option<String> {
        let runs: Vec<(usize, &Run, &Traced)> = self.traced_runs().collect();
        if runs.is_empty() {
            return None;
        }
        // One stream per run, plus the connect loop's connections.
        let connections: u64 = runs.iter().map(|(_, r, _)| r.connects.units + 1).sum();
        let noisy: Vec<String> = runs
            .iter()
            .filter(|(_, _, t)| t.failures != 0)
            .map(|(i, _, t)| format!("round {i}: {} ({})", t.failures, t.events.join("; ")))
            .collect();
        Some(if noisy.is_empty() {
            format!(
                "TARGET MET: no failure event for any of the {connections} successful connections made under netladder"
            )
        } else {
            format!(
                "TARGET MISSED: netladder reported failures for successful connections: {}",
                noisy.join(" / ")
            )
        })
    }

    fn client_warnings(&self) -> Vec<String> {
        self.rounds
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                Mode::PAIR
                    .into_iter()
                    .filter_map(move |mode| Some((i + 1, mode, *r.measured(mode, Load::Connects)?)))
            })
            .filter(|(_, _, m)| m.failures != 0)
            .map(|(i, mode, m)| {
                format!(
                    "WARNING: healthy round {i}, {}: {} of the client's connects failed (expected none)",
                    mode.short(),
                    m.failures
                )
            })
            .collect()
    }

    fn load_warning(&self) -> Option<String> {
        const NOISY_CPUS: f64 = 0.25;
        let busiest = Load::ALL
            .iter()
            .flat_map(|&load| Mode::PAIR.map(|mode| (load, mode)))
            .map(|(load, mode)| {
                median(
                    self.rounds
                        .iter()
                        .filter_map(|r| r.measured(mode, load))
                        .map(Measured::background_cpus),
                )
            })
            .filter(|load| !load.is_nan())
            .fold(0.0, f64::max);
        (busiest > NOISY_CPUS).then(|| {
            format!(
                "WARNING: other work kept {busiest:.2} CPUs busy during the healthy loads (median, worst \
                 load and mode): rates and ratios are noisy; the client CPU columns are the steadier measure"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::rotated;

    #[test]
    fn parses_blast_and_churn_lines() {
        let blast = r#"{"bytes":2000000000,"secs":1.0,"rate":2000000000.0,"user":0.1,"sys":0.9}"#;
        let m = Measured::parse(blast, Load::Stream).unwrap();
        assert_eq!((m.units, m.failures, m.client_cpu), (2_000_000_000, 0, 1.0));
        assert_eq!(m.cpu_per_unit_us(Load::Stream), 500.0);
        assert_eq!(Load::Stream.rate(m.rate), 2000.0);
        let churn =
            r#"{"connects":20000,"failures":2,"secs":2.0,"rate":10000.0,"user":0.1,"sys":0.3}"#;
        let m = Measured::parse(churn, Load::Connects).unwrap();
        assert_eq!((m.units, m.failures), (20000, 2));
        assert!((m.cpu_per_unit_us(Load::Connects) - 20.0).abs() < 1e-9);
        let m = Measured {
            busy_cpu: 1.5,
            server_cpu: 0.3,
            tracer_cpu: 0.2,
            ..m
        };
        assert!((m.background_cpus() - 0.3).abs() < 1e-9);
        assert!(Measured::parse(churn, Load::Stream).is_err());
        assert!(Measured::parse("", Load::Connects).is_err());
    }

    #[test]
    fn events_about_the_pair_are_found() {
        let ev = |json: &str| -> Value { serde_json::from_str(json).unwrap() };
        let netns = [11, 12];
        assert!(is_ours(&ev(r#"{"netns":12,"dst":"1.2.3.4:5"}"#), &netns));
        assert!(is_ours(
            &ev(r#"{"netns":99,"dst":"10.248.0.2:5002"}"#),
            &netns
        ));
        assert!(!is_ours(
            &ev(r#"{"netns":99,"dst":"10.249.0.2:5002"}"#),
            &netns
        ));
        let e = ev(
            r#"{"code":"021","cause":"no_listener","src":"10.248.0.1:4000","dst":"10.248.0.2:5002","comm":"nl-peer","count":3}"#,
        );
        assert_eq!(
            describe_event(&e),
            "#021 no_listener 10.248.0.1:4000 -> 10.248.0.2:5002 (nl-peer, count 3)"
        );
    }

    fn measured(rate: f64) -> Measured {
        Measured {
            units: 1000,
            failures: 0,
            secs: 1.0,
            rate,
            client_cpu: 0.5,
            server_cpu: 0.0,
            busy_cpu: 0.5,
            tracer_cpu: 0.0,
        }
    }

    fn round(order: u32, untraced: f64, traced: f64, events: Vec<String>) -> Round {
        Round {
            order: rotated(Mode::PAIR, order),
            untraced: Ok(Run {
                stream: measured(untraced * 1e6),
                connects: measured(untraced),
                traced: None,
            }),
            netladder: Ok(Run {
                stream: measured(traced * 1e6),
                connects: measured(traced),
                traced: Some(Traced {
                    stats: FinalStats::default(),
                    failures: events.len() as u64,
                    events,
                    peak_rss_kib: 20 * 1024,
                    startup: Duration::from_millis(400),
                }),
            }),
        }
    }

    #[test]
    fn report_gives_ratios_and_verdicts() {
        let results = HealthyResults {
            rounds: vec![
                round(0, 100.0, 99.5, vec![]),
                round(1, 100.0, 98.0, vec![]),
                round(2, 100.0, 100.0, vec!["#021 x".to_owned()]),
            ],
            foreign: vec![],
            seconds: 3.0,
            stream_costs: Err("not run".into()),
            costs: Err("not run".into()),
        };
        let r = results.ratios(Load::Connects).unwrap();
        assert_eq!((r.min, r.median, r.max), (0.98, 0.995, 1.0));
        let verdicts = results.verdicts();
        assert!(
            verdicts[0].starts_with("TARGET MET: netladder keeps 0.995 of the untraced throughput")
        );
        assert!(verdicts[1].starts_with("TARGET MET:"));
        assert!(verdicts[2].starts_with("TARGET MISSED: netladder reported failures"));
        assert!(verdicts[2].contains("round 3: 1 (#021 x)"));
        let machine = Machine {
            kernel: "6.18".into(),
            cpus: 2,
            cpu_model: "cpu".into(),
            date: "today".into(),
        };
        let md = results.markdown(&machine, "sudo cargo xtask bench --only healthy");
        assert!(md.contains("| throughput, one stream (MB/s) | untraced | 100 | 100 | 100 | 1 | 1 | 1 | 500000000.00 µs per MB | 0.00 |"), "{md}");
        assert!(
            md.contains("| 2 | netladder > untraced | 0.980 | 0.980 | 1000 | 0 | 0 | 20.0 MiB |")
        );
        assert!(md.contains("- round 3: #021 x\n"));
        assert!(md.contains("Reproduce with `sudo cargo xtask bench --only healthy`"));
    }
}
