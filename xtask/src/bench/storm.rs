//! Benchmark 1: a refused-connection storm on loopback, untraced vs netladder vs bpftrace.
//!
//! Every round runs the same loopback storm (`nl-peer storm` against a port this process reserves
//! and never listens on) three ways: untraced, under `netladder watch --json`, and under a bpftrace
//! script that only counts the tracepoints netladder uses. The order rotates from round to round so
//! that drift (thermal, other load) does not favour one mode.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::child::{last_line, remove_if_present, stop_requested, Guarded};
use super::costs::{self, Costs};
use super::procfs::{cpu_secs, foreign_tracers, perf_event_fds, system_busy_secs};
use super::report::{closing, escape_cell, lost_verdict, Machine, Spread};
use super::tracer::{final_stats, FinalStats, Netladder};
use super::{
    one_line, retry_unless_broken, Ctx, JsonLine, Mode, ATTACH_TIMEOUT, EXIT_TIMEOUT, SETTLE,
    STORM_GRACE,
};

pub(super) const BPFTRACE: &str = "/usr/bin/bpftrace";

/// The tracepoints netladder hooks, counted per probe by the bpftrace reference script.
const TRACEPOINTS: &[&str] = &[
    "sock:inet_sock_set_state",
    "tcp:tcp_receive_reset",
    "tcp:tcp_retransmit_skb",
    "skb:kfree_skb",
    "syscalls:sys_enter_connect",
    "syscalls:sys_exit_connect",
];

/// Runs the storm rounds.
pub(super) fn run(ctx: &Ctx) -> Result<StormResults> {
    let port = ClosedPort::reserve()?;
    let bench = Bench {
        ctx,
        target: port.addr,
    };
    fs::write(bench.bpftrace_script(), bpftrace_script())
        .context("cannot write the bpftrace script")?;

    eprintln!(
        "bench: storm target {} (reserved, nobody listens); warming up",
        bench.target
    );
    bench.storm(Duration::from_secs(1))?;
    let mut foreign = BTreeSet::new();
    let mut rounds = Vec::new();
    let mut broken = Broken::default();
    for round in 0..ctx.rounds {
        rounds.push(bench.round(round, &mut broken, &mut foreign)?);
    }
    let costs = costs::measure(ctx, "storm", "refused connect", |_| {
        Ok(bench.storm(bench.storm_length())?.attempts)
    });
    Ok(StormResults {
        rounds,
        foreign,
        seconds: ctx.seconds,
        threads: ctx.threads,
        costs,
    })
}

/// What `nl-peer storm` printed, plus how busy the whole machine was meanwhile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Storm {
    pub(super) attempts: u64,
    pub(super) refused: u64,
    pub(super) ok: u64,
    pub(super) other: u64,
    pub(super) secs: f64,
    pub(super) rate: f64,
    /// CPU seconds the client used (user + system: the kernel's connect path and every BPF
    /// program that runs in it are charged here).
    pub(super) client_cpu: f64,
    /// CPU seconds all CPUs were busy during the storm (from /proc/stat).
    pub(super) busy_cpu: f64,
}

impl Storm {
    pub(super) fn parse(line: &str) -> Result<Storm> {
        let json = JsonLine::parse("nl-peer storm", line)?;
        let (count, real) = (|k| json.count(k), |k| json.real(k));
        Ok(Storm {
            attempts: count("attempts")?,
            refused: count("refused")?,
            ok: count("ok")?,
            other: count("other")?,
            secs: real("secs")?,
            rate: real("rate")?,
            client_cpu: real("user")? + real("sys")?,
            busy_cpu: 0.0,
        })
    }

    /// Client CPU time per connect, in microseconds.
    pub(super) fn cpu_per_connect_us(&self) -> f64 {
        1e6 * self.client_cpu / self.attempts.max(1) as f64
    }

    /// CPUs' worth of work done by neither the client nor the tracer (`tracer_cpu` seconds).
    pub(super) fn background_cpus(&self, tracer_cpu: f64) -> f64 {
        ((self.busy_cpu - self.client_cpu - tracer_cpu) / self.secs).max(0.0)
    }
}

/// What netladder printed about the storm's own connections.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct StormEvents {
    /// Failures to the storm's target classified #021 (summing aggregated counts).
    refused: u64,
    /// Failures to the storm's target with any other code.
    other_code: u64,
}

#[derive(Debug)]
struct NetladderRun {
    storm: Storm,
    seen: StormEvents,
    stats: FinalStats,
    peak_rss_kib: u64,
    /// netladder's CPU time (user + system) while the storm ran.
    cpu_secs: f64,
    /// Launch to ready file.
    startup: Duration,
    /// SIGINT to exit.
    stop: Duration,
}

#[derive(Debug)]
struct BpftraceRun {
    storm: Storm,
    /// bpftrace's CPU time (user + system) while the storm ran.
    cpu_secs: f64,
    /// sys_enter_connect hits bpftrace counted (a check that it really traced the storm).
    connects_counted: u64,
}

/// One round: every mode's result, or why it has none.
struct Round {
    order: [Mode; 3],
    untraced: Result<Storm, String>,
    netladder: Result<NetladderRun, String>,
    bpftrace: Result<BpftraceRun, String>,
}

impl Round {
    fn storm(&self, mode: Mode) -> Option<&Storm> {
        match mode {
            Mode::Untraced => self.untraced.as_ref().ok(),
            Mode::Netladder => self.netladder.as_ref().ok().map(|r| &r.storm),
            Mode::Bpftrace => self.bpftrace.as_ref().ok().map(|r| &r.storm),
        }
    }

    fn rate(&self, mode: Mode) -> Option<f64> {
        self.storm(mode).map(|s| s.rate)
    }

    /// CPUs busy with other work during this mode's storm.
    fn background(&self, mode: Mode) -> Option<f64> {
        let tracer_cpu = match mode {
            Mode::Untraced => 0.0,
            Mode::Netladder => self.netladder.as_ref().ok()?.cpu_secs,
            Mode::Bpftrace => self.bpftrace.as_ref().ok()?.cpu_secs,
        };
        Some(self.storm(mode)?.background_cpus(tracer_cpu))
    }

    fn ratio(&self, mode: Mode) -> Option<f64> {
        Some(self.rate(mode)? / self.rate(Mode::Untraced)?)
    }

    fn failure(&self, mode: Mode) -> Option<&str> {
        match mode {
            Mode::Untraced => self.untraced.as_ref().err(),
            Mode::Netladder => self.netladder.as_ref().err(),
            Mode::Bpftrace => self.bpftrace.as_ref().err(),
        }
        .map(String::as_str)
    }

    /// One progress line for the mode that just ran.
    fn progress(
        mode: Mode,
        untraced: &Result<Storm, String>,
        netladder: &Result<NetladderRun, String>,
        bpftrace: &Result<BpftraceRun, String>,
    ) -> String {
        let rate = |s: &Storm| {
            format!(
                "{:.0} connects/s, client CPU {:.2} us/connect",
                s.rate,
                s.cpu_per_connect_us()
            )
        };
        match mode {
            Mode::Untraced => untraced.as_ref().map_or_else(|e| format!("failed: {e}"), rate),
            Mode::Netladder => netladder.as_ref().map_or_else(
                |e| format!("failed: {e}"),
                |r| {
                    format!(
                        "{}, {} of {} refused connects classified #021, {} lost, netladder CPU {:.2} s",
                        rate(&r.storm),
                        r.seen.refused,
                        r.storm.refused,
                        r.stats.lost,
                        r.cpu_secs
                    )
                },
            ),
            Mode::Bpftrace => bpftrace.as_ref().map_or_else(|e| format!("failed: {e}"), |r| rate(&r.storm)),
        }
    }
}

/// Modes that failed once and are not retried (their failure repeats and costs time).
#[derive(Default)]
struct Broken {
    netladder: Option<String>,
    bpftrace: Option<String>,
}

struct Bench<'a> {
    ctx: &'a Ctx,
    target: SocketAddrV4,
}

impl Bench<'_> {
    fn round(
        &self,
        round: u32,
        broken: &mut Broken,
        foreign: &mut BTreeSet<String>,
    ) -> Result<Round> {
        let order = Mode::order(round);
        let mut untraced = Err("not run".to_owned());
        let mut netladder = Err("not run".to_owned());
        let mut bpftrace = Err("not run".to_owned());
        for mode in order {
            foreign.extend(foreign_tracers());
            match mode {
                Mode::Untraced => untraced = self.storm(self.storm_length()).map_err(one_line),
                Mode::Netladder => {
                    netladder = retry_unless_broken(&mut broken.netladder, || self.netladder())
                }
                Mode::Bpftrace => {
                    bpftrace = retry_unless_broken(&mut broken.bpftrace, || self.bpftrace())
                }
            }
            stop_requested()?;
            let summary = Round::progress(mode, &untraced, &netladder, &bpftrace);
            eprintln!("bench: round {}: {}: {summary}", round + 1, mode.short());
            sleep(SETTLE);
        }
        Ok(Round {
            order,
            untraced,
            netladder,
            bpftrace,
        })
    }

    fn storm_length(&self) -> Duration {
        Duration::from_secs_f64(self.ctx.seconds)
    }

    fn bpftrace_script(&self) -> PathBuf {
        self.ctx.work.join("count.bt")
    }

    /// Runs one storm and returns what the client counted.
    fn storm(&self, length: Duration) -> Result<Storm> {
        one_storm(self.ctx, self.target, length)
    }

    fn netladder(&self) -> Result<NetladderRun> {
        let netladder = Netladder::start(&self.ctx.bins, &self.ctx.work, self.ctx.seconds)?;
        let cpu_before = netladder.cpu_secs()?;
        let storm = self.storm(self.storm_length())?;
        let cpu_secs = netladder.cpu_secs()? - cpu_before;
        let peak_rss_kib = netladder.peak_rss_kib()?;
        let startup = netladder.startup;
        let stopped = netladder.stop()?;
        let (stats, seen) = read_netladder_output(&stopped.out, &self.target)?;
        remove_if_present(&stopped.out)?;
        Ok(NetladderRun {
            storm,
            seen,
            stats,
            peak_rss_kib,
            cpu_secs,
            startup,
            stop: stopped.stop,
        })
    }

    fn bpftrace(&self) -> Result<BpftraceRun> {
        ensure!(Path::new(BPFTRACE).is_file(), "{BPFTRACE} is not installed");
        let out = self.ctx.work.join("bpftrace.out");
        let err = self.ctx.work.join("bpftrace.err");
        let mut command = Command::new(BPFTRACE);
        command.arg(self.bpftrace_script());
        let mut child = Guarded::spawn(&mut command, "bpftrace", &out, &err)?;
        // bpftrace prints "Attaching N probes..." before it attaches; every attached tracepoint
        // is one perf event descriptor, so wait for those too.
        let pid = child.pid();
        child.wait_until(ATTACH_TIMEOUT, &err, || {
            fs::read_to_string(&out).is_ok_and(|text| text.contains("Attaching"))
                && perf_event_fds(pid) >= TRACEPOINTS.len()
        })?;
        let cpu_before = cpu_secs(pid)?;
        let storm = self.storm(self.storm_length())?;
        let cpu_secs = cpu_secs(pid)? - cpu_before;
        let status = child.interrupt_and_wait(EXIT_TIMEOUT)?;
        ensure!(
            status.success(),
            "bpftrace failed ({status}){}",
            last_line(&err)
        );
        let text = fs::read_to_string(&out).context("cannot read bpftrace's output")?;
        let connects_counted = bpftrace_count(&text, "syscalls:sys_enter_connect")
            .context("bpftrace printed no count for syscalls:sys_enter_connect")?;
        Ok(BpftraceRun {
            storm,
            cpu_secs,
            connects_counted,
        })
    }
}

/// The counting script: one per-probe counter for each tracepoint netladder hooks.
fn bpftrace_script() -> String {
    TRACEPOINTS
        .iter()
        .map(|tp| format!("tracepoint:{tp} {{ @[probe] = count(); }}\n"))
        .collect()
}

/// The count bpftrace printed at exit for `tracepoint:<tp>` (`@[tracepoint:<tp>]: N`).
fn bpftrace_count(output: &str, tp: &str) -> Option<u64> {
    let key = format!("@[tracepoint:{tp}]:");
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix(&key))
        .and_then(|n| n.trim().parse().ok())
}

/// The final stats line and the storm's failures from `netladder watch --json` output.
fn read_netladder_output(path: &Path, target: &SocketAddrV4) -> Result<(FinalStats, StormEvents)> {
    let text = fs::read_to_string(path).context("cannot read netladder's output")?;
    parse_netladder_output(&text, target)
}

fn parse_netladder_output(text: &str, target: &SocketAddrV4) -> Result<(FinalStats, StormEvents)> {
    let dst = format!("\"dst\":\"{target}\"");
    let mut seen = StormEvents::default();
    let mut stats = None;
    for line in text.lines() {
        let is_storm = line.contains(&dst);
        if !is_storm && !line.contains("\"stats\"") {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).context("netladder printed a line that is not JSON")?;
        match v["type"].as_str() {
            Some("failure") if is_storm => {
                let count = v["count"].as_u64().unwrap_or(1);
                if v["code"] == "021" {
                    seen.refused += count;
                } else {
                    seen.other_code += count;
                }
            }
            Some("stats") if v["final"] == true => stats = Some(final_stats(&v)?),
            _ => {}
        }
    }
    let stats = stats.context("netladder printed no final stats line")?;
    Ok((stats, seen))
}

/// A loopback TCP port bound (never listening) by this process for the whole bench: connects to
/// it are refused by the kernel ("no listener"), and nobody else can start listening on it.
/// Runs one storm against `target` (a [`ClosedPort`]) and returns what the client counted.
pub(super) fn one_storm(ctx: &Ctx, target: SocketAddrV4, length: Duration) -> Result<Storm> {
    let out = ctx.work.join("storm.out");
    let err = ctx.work.join("storm.err");
    let mut command = Command::new(&ctx.bins.nl_peer);
    command
        .arg("storm")
        .arg(target.to_string())
        .args(["--duration", &length.as_secs_f64().to_string()])
        .args(["--threads", &ctx.threads.to_string()]);
    let busy_before = system_busy_secs()?;
    let mut child = Guarded::spawn(&mut command, "nl-peer storm", &out, &err)?;
    let status = child.wait_for(length + STORM_GRACE)?;
    let busy_cpu = system_busy_secs()? - busy_before;
    ensure!(
        status.success(),
        "nl-peer storm failed ({status}){}",
        last_line(&err)
    );
    let text = fs::read_to_string(&out).context("cannot read nl-peer's output")?;
    Ok(Storm {
        busy_cpu,
        ..Storm::parse(&text)?
    })
}

/// A port on 127.0.0.1 that is bound and never listens: every connect to it is refused.
pub(super) struct ClosedPort {
    _socket: OwnedFd,
    pub(super) addr: SocketAddrV4,
}

impl ClosedPort {
    pub(super) fn reserve() -> Result<ClosedPort> {
        // SAFETY: plain syscall; the descriptor is owned right below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("cannot create a TCP socket");
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let mut len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let sin_ptr = (&mut sin as *mut libc::sockaddr_in).cast::<libc::sockaddr>();
        // SAFETY: sin is a sockaddr_in of length len, valid for both calls.
        let rc = unsafe {
            match libc::bind(socket.as_raw_fd(), sin_ptr, len) {
                0 => libc::getsockname(socket.as_raw_fd(), sin_ptr, &mut len),
                err => err,
            }
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("cannot reserve a port on 127.0.0.1");
        }
        let port = u16::from_be(sin.sin_port);
        Ok(ClosedPort {
            _socket: socket,
            addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
        })
    }
}

/// The rounds of benchmark 1, for the report.
pub(super) struct StormResults {
    rounds: Vec<Round>,
    foreign: BTreeSet<String>,
    seconds: f64,
    threads: u32,
    /// The storm's program costs (a run of its own), or why that run failed.
    costs: Result<Costs, String>,
}

impl StormResults {
    fn rates(&self, mode: Mode) -> Option<Spread> {
        Spread::of(self.rounds.iter().filter_map(|r| r.rate(mode)))
    }

    fn ratios(&self, mode: Mode) -> Option<Spread> {
        Spread::of(self.rounds.iter().filter_map(|r| r.ratio(mode)))
    }

    /// Median over the rounds of a per-round value (NaN when no round has it).
    fn median_of(&self, value: impl Fn(&Round) -> Option<f64>) -> f64 {
        Spread::of(self.rounds.iter().filter_map(value)).map_or(f64::NAN, |s| s.median)
    }

    fn netladder_runs(&self) -> impl Iterator<Item = (usize, &NetladderRun)> {
        self.rounds
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.netladder.as_ref().ok().map(|run| (i + 1, run)))
    }

    pub(super) fn markdown(&self, machine: &Machine, command_line: &str) -> String {
        let mut md = String::new();
        md += "### Refused-connection storm (issue 2; issue 8, benchmark 1)\n\n";
        md += &machine.measured(command_line);
        md += &format!(
            "Each of {} rounds runs a {} s storm of blocking connects ({} client thread(s)) to a closed \
             port on 127.0.0.1 once per mode, in rotating order. Ratios are per round against that \
             round's untraced run.\n\n",
            self.rounds.len(),
            self.seconds,
            self.threads
        );
        md += &self.summary_table();
        md += "\n";
        md += &self.netladder_table();
        md += "\n";
        md += &costs::section(&self.costs);
        md += "\n";
        md += &self.bpftrace_note();
        let foreign: Vec<String> = self.foreign.iter().cloned().collect();
        md += &closing(&foreign, &self.verdicts());
        md
    }

    fn summary_table(&self) -> String {
        let mut t = String::from(
            "| mode | connects/s min | median | max | ratio to untraced: median | min | max \
             | client CPU per connect (median) | CPUs busy elsewhere (median) |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for mode in Mode::ALL {
            let Some(rates) = self.rates(mode) else {
                let why = self
                    .rounds
                    .iter()
                    .find_map(|r| r.failure(mode))
                    .unwrap_or("no data");
                t += &format!(
                    "| {} | did not run: {} | | | | | | | |\n",
                    mode.label(),
                    escape_cell(why)
                );
                continue;
            };
            let ratios = super::report::ratio_cells(mode == Mode::Untraced, self.ratios(mode));
            let per_connect = self.median_of(|r| r.storm(mode).map(Storm::cpu_per_connect_us));
            let background = self.median_of(|r| r.background(mode));
            t += &format!(
                "| {} | {} | {ratios} | {per_connect:.2} µs | {background:.2} |\n",
                mode.label(),
                rates.rate_cells(),
            );
        }
        t
    }

    fn netladder_table(&self) -> String {
        let mut t = String::from(
            "netladder, per round (refused: counted by the client; classified: `#021` events for the \
             storm's address, aggregated counts summed; reported/events/lost: netladder's final stats \
             line; CPU: netladder's user+system time during the storm):\n\n\
             | round | order | connects/s | ratio | refused | classified #021 | other codes | reported | \
             kernel events | lost | peak RSS | CPU | start-up | stop |\n\
             |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (i, round) in self.rounds.iter().enumerate() {
            let order: Vec<&str> = round.order.iter().map(|m| m.short()).collect();
            let order = order.join(" > ");
            match &round.netladder {
                Ok(r) => {
                    let ratio = round
                        .ratio(Mode::Netladder)
                        .map_or("-".to_owned(), |x| format!("{x:.3}"));
                    t += &format!(
                        "| {} | {order} | {:.0} | {ratio} | {} | {} | {} | {} | {} | {} | {:.1} MiB | {:.2} s ({:.0}%) | {:.2} s | {:.2} s |\n",
                        i + 1,
                        r.storm.rate,
                        r.storm.refused,
                        r.seen.refused,
                        r.seen.other_code,
                        r.stats.failures_reported,
                        r.stats.events,
                        r.stats.lost,
                        r.peak_rss_kib as f64 / 1024.0,
                        r.cpu_secs,
                        100.0 * r.cpu_secs / r.storm.secs,
                        r.startup.as_secs_f64(),
                        r.stop.as_secs_f64()
                    );
                }
                Err(why) => {
                    t += &format!(
                        "| {} | {order} | did not run: {} |\n",
                        i + 1,
                        escape_cell(why)
                    );
                }
            }
        }
        t
    }

    fn bpftrace_note(&self) -> String {
        let checks: Vec<String> = self
            .rounds
            .iter()
            .filter_map(|r| r.bpftrace.as_ref().ok())
            .map(|r| format!("{} of {}", r.connects_counted, r.storm.attempts))
            .collect();
        let script: Vec<String> = TRACEPOINTS
            .iter()
            .map(|tp| format!("`tracepoint:{tp}`"))
            .collect();
        let mut note = format!(
            "The bpftrace reference ({BPFTRACE}) counts hits per probe in a map for {}.",
            script.join(", ")
        );
        if !checks.is_empty() {
            note += &format!(
                " connect() calls it counted vs the client's attempts, per round: {}.",
                checks.join("; ")
            );
        }
        note + "\n"
    }

    /// One line per target: `TARGET MET: ...` or `TARGET MISSED: ...` (or not checked, and why),
    /// then warnings about the measurement itself.
    pub(super) fn verdicts(&self) -> Vec<String> {
        let mut lines = vec![self.rate_verdict(), self.bpftrace_verdict()];
        lines.extend(self.accounting_verdicts());
        lines.extend(self.rss_verdict());
        lines.extend(self.client_warnings());
        lines.extend(self.load_warning());
        lines
    }

    /// Issue 8 asks for RSS under 50 MB during failure storms.
    fn rss_verdict(&self) -> Option<String> {
        const LIMIT_MB: f64 = 50.0;
        let peak_kib = self.netladder_runs().map(|(_, r)| r.peak_rss_kib).max()?;
        let peak_mb = peak_kib as f64 * 1024.0 / 1e6;
        let verdict = if peak_mb < LIMIT_MB { "MET" } else { "MISSED" };
        Some(format!(
            "TARGET {verdict}: netladder's peak RSS (VmHWM) was {peak_mb:.1} MB at most (target: under {LIMIT_MB} MB)"
        ))
    }

    fn rate_verdict(&self) -> String {
        match self.ratios(Mode::Netladder) {
            Some(r) if r.median >= 0.95 => format!(
                "TARGET MET: netladder keeps {:.3} of the untraced connect rate (median; min {:.3}, max {:.3}; target >= 0.95)",
                r.median, r.min, r.max
            ),
            Some(r) => format!(
                "TARGET MISSED: netladder keeps only {:.3} of the untraced connect rate (median; min {:.3}, max {:.3}; target >= 0.95)",
                r.median, r.min, r.max
            ),
            None => format!("TARGET MISSED: netladder's rate could not be measured: {}", self.why(Mode::Netladder)),
        }
    }

    fn bpftrace_verdict(&self) -> String {
        match (self.ratios(Mode::Netladder), self.ratios(Mode::Bpftrace)) {
            (Some(n), Some(b)) if n.median > b.median => format!(
                "TARGET MET: netladder is ahead of bpftrace ({:.3} vs {:.3} of untraced, medians)",
                n.median, b.median
            ),
            (Some(n), Some(b)) => format!(
                "TARGET MISSED: netladder is not ahead of bpftrace ({:.3} vs {:.3} of untraced, medians)",
                n.median, b.median
            ),
            (_, None) => format!("TARGET NOT CHECKED: bpftrace did not run: {}", self.why(Mode::Bpftrace)),
            (None, _) => "TARGET MISSED: netladder did not run, so it cannot be ahead of bpftrace".to_owned(),
        }
    }

    fn accounting_verdicts(&self) -> Vec<String> {
        let runs: Vec<(usize, &NetladderRun)> = self.netladder_runs().collect();
        if runs.is_empty() {
            return Vec::new();
        }
        let unclassified: Vec<String> = runs
            .iter()
            .filter(|(_, r)| r.seen.refused != r.storm.refused || r.seen.other_code != 0)
            .map(|(i, r)| {
                format!(
                    "round {i}: {} of {} classified #021, {} with another code",
                    r.seen.refused, r.storm.refused, r.seen.other_code
                )
            })
            .collect();
        let lost: Vec<String> = runs
            .iter()
            .filter(|(_, r)| r.stats.lost != 0)
            .map(|(i, r)| format!("round {i}: {} lost", r.stats.lost))
            .collect();
        vec![
            if unclassified.is_empty() {
                "TARGET MET: every refused connect of every round was reported once as #021"
                    .to_owned()
            } else {
                format!(
                    "TARGET MISSED: not every refused connect was classified: {}",
                    unclassified.join("; ")
                )
            },
            lost_verdict(&lost, "no event lost in any round"),
        ]
    }

    /// Storms that were not pure refusals mean the port was not closed or the client hit limits.
    fn client_warnings(&self) -> Vec<String> {
        let storms = self.rounds.iter().enumerate().flat_map(|(i, r)| {
            Mode::ALL
                .into_iter()
                .filter_map(move |mode| Some((i + 1, mode, *r.storm(mode)?)))
        });
        storms
            .filter(|(_, _, s)| s.ok != 0 || s.other != 0)
            .map(|(i, mode, s)| {
                format!(
                    "WARNING: round {i}, {}: {} connects succeeded and {} failed otherwise (expected refusals only)",
                    mode.short(),
                    s.ok,
                    s.other
                )
            })
            .collect()
    }

    /// Other work on the machine competes with the client and the tracer for CPU time.
    fn load_warning(&self) -> Option<String> {
        const NOISY_CPUS: f64 = 0.25;
        let busiest = Mode::ALL
            .iter()
            .map(|&mode| self.median_of(|r| r.background(mode)))
            .filter(|load| !load.is_nan())
            .fold(0.0, f64::max);
        (busiest > NOISY_CPUS).then(|| {
            format!(
                "WARNING: other work kept {busiest:.2} CPUs busy during the storms (median, worst mode): \
                 rates and ratios are noisy; the client CPU per connect is the steadier measure"
            )
        })
    }

    fn why(&self, mode: Mode) -> &str {
        self.rounds
            .iter()
            .find_map(|r| r.failure(mode))
            .unwrap_or("no data")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_storm_line() {
        let line = r#"{"attempts":10,"refused":9,"ok":0,"other":1,"secs":2.0,"rate":5.0,"user":0.5,"sys":1.5}"#;
        let s = Storm::parse(line).unwrap();
        assert_eq!(
            (s.attempts, s.refused, s.other, s.rate, s.client_cpu),
            (10, 9, 1, 5.0, 2.0)
        );
        assert_eq!(s.cpu_per_connect_us(), 200_000.0);
        let s = Storm { busy_cpu: 3.0, ..s };
        assert_eq!(s.background_cpus(0.5), 0.25);
        assert!(Storm::parse("{}").is_err());
    }

    #[test]
    fn netladder_output_counts_only_the_storm_target() {
        let target: SocketAddrV4 = "127.0.0.1:4000".parse().unwrap();
        let text = [
            r#"{"type":"hooks","hooks":[]}"#,
            r#"{"type":"failure","code":"021","dst":"127.0.0.1:4000","count":1}"#,
            r#"{"type":"failure","code":"021","dst":"127.0.0.1:4000","count":5}"#,
            r#"{"type":"failure","code":"023","dst":"127.0.0.1:4000"}"#,
            r#"{"type":"failure","code":"021","dst":"127.0.0.1:4001","count":7}"#,
            r#"{"type":"stats","final":false,"events":1,"lost":0,"failures_reported":1}"#,
            r#"{"type":"stats","final":true,"events":9,"lost":2,"failures_reported":14}"#,
        ]
        .join("\n");
        let (stats, seen) = parse_netladder_output(&text, &target).unwrap();
        assert_eq!(
            seen,
            StormEvents {
                refused: 6,
                other_code: 1
            }
        );
        assert_eq!(
            stats,
            FinalStats {
                events: 9,
                lost: 2,
                failures_reported: 14,
                ..FinalStats::default()
            }
        );
        assert!(parse_netladder_output(r#"{"type":"hooks"}"#, &target).is_err());
    }

    #[test]
    fn bpftrace_counts_are_found_by_probe() {
        let out = "Attaching 6 probes...\n\n\n@[tracepoint:skb:kfree_skb]: 12\n@[tracepoint:syscalls:sys_enter_connect]: 34\n";
        assert_eq!(bpftrace_count(out, "syscalls:sys_enter_connect"), Some(34));
        assert_eq!(bpftrace_count(out, "tcp:tcp_receive_reset"), None);
        assert!(bpftrace_script().lines().count() == TRACEPOINTS.len());
    }
}
