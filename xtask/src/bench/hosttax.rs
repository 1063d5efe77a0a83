//! Benchmark 5 (issue 16): the host tax, what every other process on the host pays while
//! netladder runs. Three loads of the bench's own child mode (load.rs), none of which makes a
//! connection netladder could report: one-byte read()/write() pairs, open()/close() pairs, and
//! small send()/recv() round trips on one established loopback TCP connection. Each round runs
//! them untraced, under `netladder watch --json` (default hooks), and under bpftrace counting the
//! tracepoints netladder attached (read from `netladder hooks --json`, so the reference follows
//! netladder's hooks when they change), in rotating order.
//!
//! Why a load that never fails a connection: while any syscall tracepoint is enabled, the kernel
//! marks every task for syscall tracing, so every syscall of every process (not only the ones
//! netladder cares about) leaves the fast path and goes through the tracing entry and exit work.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::child::{last_line, remove_if_present, stop_requested, Guarded};
use super::load::{LoadKind, ECHO_BYTES};
use super::procfs::{cpu_secs, foreign_tracers, perf_event_fds, system_busy_secs};
use super::report::{closing, escape_cell, median, Machine, Spread};
use super::storm::BPFTRACE;
use super::tracer::{read_failures, Netladder};
use super::{
    one_line, retry_unless_broken, Ctx, JsonLine, Mode, ATTACH_TIMEOUT, EXIT_TIMEOUT, SETTLE,
    STORM_GRACE,
};

/// Issue 16: every load keeps at least this share of its untraced rate under netladder.
const TARGET: f64 = 0.99;
/// Where the classic tracepoints are listed, to find the category of a `tp_btf` hook.
const TRACEFS: [&str; 2] = [
    "/sys/kernel/tracing/events",
    "/sys/kernel/debug/tracing/events",
];

/// Runs the rounds.
pub(super) fn run(ctx: &Ctx) -> Result<HostTaxResults> {
    let probes = Probes::discover(ctx)?;
    let bench = Bench {
        ctx,
        exe: std::env::current_exe().context("cannot find the xtask binary")?,
        script: ctx.work.join("hosttax.bt"),
        file: ctx.work.join("hosttax.file"),
        probes: &probes,
    };
    fs::write(&bench.script, probes.script()).context("cannot write the bpftrace script")?;
    fs::write(&bench.file, b"opened and closed by the host-tax load\n")
        .context("cannot write the host-tax load's file")?;
    eprintln!(
        "bench: host tax: netladder attaches {} syscall tracepoints; bpftrace counts {} tracepoints; warming up",
        probes.syscalls(),
        probes.counted.len()
    );
    let warm_up = Duration::from_secs_f64(ctx.seconds.min(1.0));
    for load in LoadKind::ALL {
        bench.load(load, warm_up, None)?;
    }
    let mut rounds = Vec::new();
    let mut broken = Broken::default();
    let mut foreign = BTreeSet::new();
    for round in 0..ctx.rounds {
        rounds.push(bench.round(round, &mut broken, &mut foreign)?);
    }
    Ok(HostTaxResults {
        rounds,
        probes,
        foreign: foreign.into_iter().collect(),
        seconds: ctx.seconds,
    })
}

/// What bpftrace counts: netladder's attached tracepoints, as bpftrace names them.
#[derive(Debug, Default, PartialEq)]
struct Probes {
    /// `category:name` of each classic tracepoint (syscall tracepoints, and the classic twin
    /// of each `tp_btf` hook), once each, in netladder's order.
    counted: Vec<String>,
    /// netladder's attached hooks with no classic tracepoint to count (uprobes, cgroup_skb, ...).
    not_counted: Vec<String>,
}

impl Probes {
    /// Asks `netladder hooks --json` which hooks this kernel attaches.
    fn discover(ctx: &Ctx) -> Result<Probes> {
        let out = ctx.work.join("hooks.json");
        let err = ctx.work.join("hooks.err");
        let mut command = Command::new(&ctx.bins.netladder);
        command.args(["hooks", "--json"]);
        let mut child = Guarded::spawn(&mut command, "netladder hooks", &out, &err)?;
        let status = child.wait_for(ATTACH_TIMEOUT)?;
        ensure!(
            status.success(),
            "netladder hooks failed ({status}){}",
            last_line(&err)
        );
        let text = fs::read_to_string(&out).context("cannot read netladder hooks' output")?;
        remove_if_present(&out)?;
        Probes::parse(&text, tracefs_category)
    }

    /// The probes of `netladder hooks --json` output; `category` names the tracefs category
    /// of a tracepoint (`kfree_skb` -> `skb`).
    fn parse(text: &str, category: impl Fn(&str) -> Option<String>) -> Result<Probes> {
        let v: Value =
            serde_json::from_str(text.trim()).context("netladder hooks printed invalid JSON")?;
        let hooks = v["hooks"]
            .as_array()
            .context("netladder hooks printed no \"hooks\" list")?;
        let mut probes = Probes::default();
        for hook in hooks.iter().filter(|h| h["status"] == "attached") {
            let name = hook["hook"]
                .as_str()
                .context("a hook of netladder hooks has no name")?;
            let classic = if let Some(rest) = name.strip_prefix("tracepoint/") {
                rest.split_once('/').map(|(cat, tp)| format!("{cat}:{tp}"))
            } else if let Some(tp) = name.strip_prefix("tp_btf/") {
                category(tp).map(|cat| format!("{cat}:{tp}"))
            } else {
                None
            };
            match classic {
                Some(tp) if !probes.counted.contains(&tp) => probes.counted.push(tp),
                Some(_) => {}
                None if !probes.not_counted.iter().any(|h| h == name) => {
                    probes.not_counted.push(name.to_owned())
                }
                None => {}
            }
        }
        Ok(probes)
    }

    /// How many of the counted tracepoints are syscall tracepoints.
    fn syscalls(&self) -> usize {
        self.counted
            .iter()
            .filter(|tp| tp.starts_with("syscalls:"))
            .count()
    }

    /// The counting script: one per-probe counter for each tracepoint.
    fn script(&self) -> String {
        self.counted
            .iter()
            .map(|tp| format!("tracepoint:{tp} {{ @[probe] = count(); }}\n"))
            .collect()
    }
}

/// The tracefs category of the classic tracepoint `name` (None when there is none).
fn tracefs_category(name: &str) -> Option<String> {
    TRACEFS.iter().find_map(|root| {
        fs::read_dir(root).ok()?.find_map(|entry| {
            let entry = entry.ok()?;
            entry
                .path()
                .join(name)
                .is_dir()
                .then(|| entry.file_name().to_string_lossy().into_owned())
        })
    })
}

/// The sum of the counts bpftrace printed at exit (`@[tracepoint:...]: N` lines).
fn bpftrace_hits(output: &str) -> u64 {
    output
        .lines()
        .filter_map(|line| line.trim().strip_prefix("@[")?.split_once("]:"))
        .filter_map(|(_, n)| n.trim().parse::<u64>().ok())
        .sum()
}

/// One load's run: what the child printed, plus the CPU used around it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Measured {
    ops: u64,
    secs: f64,
    /// Ops per second.
    rate: f64,
    /// CPU seconds of the load's process (user + system; the kernel's work and every BPF
    /// program that runs in its syscalls are charged here).
    cpu: f64,
    /// CPU seconds all CPUs were busy meanwhile (from /proc/stat).
    busy_cpu: f64,
    /// CPU seconds the tracer used meanwhile (0 untraced).
    tracer_cpu: f64,
}

impl Measured {
    fn parse(line: &str, load: LoadKind) -> Result<Measured> {
        let json = JsonLine::parse(&format!("xtask bench-load {}", load.arg()), line)?;
        let (count, real) = (|k| json.count(k), |k| json.real(k));
        Ok(Measured {
            ops: count("ops")?,
            secs: real("secs")?,
            rate: real("rate")?,
            cpu: real("user")? + real("sys")?,
            busy_cpu: 0.0,
            tracer_cpu: 0.0,
        })
    }

    /// CPU time of the load per op, in nanoseconds.
    fn cpu_per_op_ns(&self) -> f64 {
        1e9 * self.cpu / self.ops.max(1) as f64
    }

    /// CPUs' worth of work done by neither the load nor the tracer.
    fn background_cpus(&self) -> f64 {
        ((self.busy_cpu - self.cpu - self.tracer_cpu) / self.secs.max(1e-9)).max(0.0)
    }
}

/// Every load, run once in one mode.
#[derive(Debug)]
struct ModeRun {
    loads: Vec<(LoadKind, Measured)>,
    /// netladder's events and lost events (final stats line) and its SIGINT-to-exit time.
    netladder: Option<(u64, u64, Duration)>,
    /// Hits bpftrace counted over all its probes (a check that it really traced).
    bpftrace_hits: Option<u64>,
}

impl ModeRun {
    fn measured(&self, load: LoadKind) -> Option<&Measured> {
        self.loads.iter().find(|(l, _)| *l == load).map(|(_, m)| m)
    }

    fn progress(mode: Mode, result: &Result<ModeRun, String>) -> String {
        let run = match result {
            Ok(run) => run,
            Err(why) => return format!("{}: failed: {why}", mode.short()),
        };
        let loads: Vec<String> = run
            .loads
            .iter()
            .map(|(load, m)| {
                format!(
                    "{} {:.0} ops/s ({:.0} ns CPU per op)",
                    load.arg(),
                    m.rate,
                    m.cpu_per_op_ns()
                )
            })
            .collect();
        let mut line = format!("{}: {}", mode.short(), loads.join(", "));
        if let Some((events, lost, stop)) = run.netladder {
            line += &format!(
                "; {events} kernel events, {lost} lost, exit {:.2} s after SIGINT",
                stop.as_secs_f64()
            );
        }
        if let Some(hits) = run.bpftrace_hits {
            line += &format!("; {hits} tracepoint hits counted");
        }
        line
    }
}

/// One round: each mode's runs (indexed as `Mode::ALL`), or why it has none.
struct Round {
    order: [Mode; 3],
    runs: [Result<ModeRun, String>; 3],
}

fn index(mode: Mode) -> usize {
    match mode {
        Mode::Untraced => 0,
        Mode::Netladder => 1,
        Mode::Bpftrace => 2,
    }
}

impl Round {
    fn measured(&self, mode: Mode, load: LoadKind) -> Option<&Measured> {
        self.runs[index(mode)].as_ref().ok()?.measured(load)
    }

    fn ratio(&self, mode: Mode, load: LoadKind) -> Option<f64> {
        Some(self.measured(mode, load)?.rate / self.measured(Mode::Untraced, load)?.rate)
    }

    fn failure(&self, mode: Mode) -> Option<&str> {
        self.runs[index(mode)].as_ref().err().map(String::as_str)
    }
}

/// Tracers that failed once and are not retried.
#[derive(Default)]
struct Broken {
    netladder: Option<String>,
    bpftrace: Option<String>,
}

struct Bench<'a> {
    ctx: &'a Ctx,
    /// The xtask binary itself, which runs the loads (`xtask bench-load`).
    exe: PathBuf,
    script: PathBuf,
    /// The file the open-close load opens.
    file: PathBuf,
    probes: &'a Probes,
}

impl Bench<'_> {
    fn round(
        &self,
        round: u32,
        broken: &mut Broken,
        foreign: &mut BTreeSet<String>,
    ) -> Result<Round> {
        let order = Mode::order(round);
        let mut runs = [
            Err("not run".to_owned()),
            Err("not run".to_owned()),
            Err("not run".to_owned()),
        ];
        for mode in order {
            foreign.extend(foreign_tracers());
            let result = match mode {
                Mode::Untraced => self.untraced().map_err(one_line),
                Mode::Netladder => retry_unless_broken(&mut broken.netladder, || self.netladder()),
                Mode::Bpftrace => retry_unless_broken(&mut broken.bpftrace, || self.bpftrace()),
            };
            stop_requested()?;
            eprintln!(
                "bench: host tax round {}: {}",
                round + 1,
                ModeRun::progress(mode, &result)
            );
            runs[index(mode)] = result;
            sleep(SETTLE);
        }
        Ok(Round { order, runs })
    }

    fn length(&self) -> Duration {
        Duration::from_secs_f64(self.ctx.seconds)
    }

    /// Runs one load for `length`; `tracer` is the pid whose CPU time is charged to the tracer.
    fn load(&self, load: LoadKind, length: Duration, tracer: Option<i32>) -> Result<Measured> {
        let out = self.ctx.work.join("hosttax-load.out");
        let err = self.ctx.work.join("hosttax-load.err");
        let mut command = Command::new(&self.exe);
        command
            .args(["bench-load", load.arg()])
            .args(["--seconds", &length.as_secs_f64().to_string()]);
        if load == LoadKind::OpenClose {
            command.arg("--file").arg(&self.file);
        }
        let tracer_cpu = || tracer.map_or(Ok(0.0), cpu_secs);
        let (busy0, tracer0) = (system_busy_secs()?, tracer_cpu()?);
        let mut child = Guarded::spawn(&mut command, "xtask bench-load", &out, &err)?;
        let status = child.wait_for(length + STORM_GRACE)?;
        let busy_cpu = system_busy_secs()? - busy0;
        let tracer_cpu = tracer_cpu()? - tracer0;
        ensure!(
            status.success(),
            "the {} load failed ({status}){}",
            load.arg(),
            last_line(&err)
        );
        let text = fs::read_to_string(&out).context("cannot read the load's output")?;
        Ok(Measured {
            busy_cpu,
            tracer_cpu,
            ..Measured::parse(&text, load)?
        })
    }

    /// Every load once, with a pause between two.
    fn loads(&self, tracer: Option<i32>) -> Result<Vec<(LoadKind, Measured)>> {
        let mut done = Vec::new();
        for (i, load) in LoadKind::ALL.into_iter().enumerate() {
            if i > 0 {
                sleep(SETTLE);
            }
            done.push((load, self.load(load, self.length(), tracer)?));
            stop_requested()?;
        }
        Ok(done)
    }

    fn untraced(&self) -> Result<ModeRun> {
        Ok(ModeRun {
            loads: self.loads(None)?,
            netladder: None,
            bpftrace_hits: None,
        })
    }

    fn netladder(&self) -> Result<ModeRun> {
        let backstop = LoadKind::ALL.len() as f64 * (self.ctx.seconds + 1.0);
        let netladder = Netladder::start(&self.ctx.bins, &self.ctx.work, backstop)?;
        let loads = self.loads(Some(netladder.pid()))?;
        let stopped = netladder.stop()?;
        let (stats, _) = read_failures(&stopped.out)?;
        remove_if_present(&stopped.out)?;
        Ok(ModeRun {
            loads,
            netladder: Some((stats.events, stats.lost, stopped.stop)),
            bpftrace_hits: None,
        })
    }

    fn bpftrace(&self) -> Result<ModeRun> {
        ensure!(Path::new(BPFTRACE).is_file(), "{BPFTRACE} is not installed");
        ensure!(
            !self.probes.counted.is_empty(),
            "netladder attaches no tracepoint, so bpftrace has nothing to count"
        );
        let out = self.ctx.work.join("hosttax-bpftrace.out");
        let err = self.ctx.work.join("hosttax-bpftrace.err");
        let mut command = Command::new(BPFTRACE);
        command.arg(&self.script);
        let mut child = Guarded::spawn(&mut command, "bpftrace", &out, &err)?;
        // Attached once it said so and holds one perf event per tracepoint.
        let pid = child.pid();
        let wanted = self.probes.counted.len();
        child.wait_until(ATTACH_TIMEOUT, &err, || {
            fs::read_to_string(&out).is_ok_and(|text| text.contains("Attaching"))
                && perf_event_fds(pid) >= wanted
        })?;
        let loads = self.loads(Some(pid))?;
        let status = child.interrupt_and_wait(EXIT_TIMEOUT)?;
        ensure!(
            status.success(),
            "bpftrace failed ({status}){}",
            last_line(&err)
        );
        let text = fs::read_to_string(&out).context("cannot read bpftrace's output")?;
        Ok(ModeRun {
            loads,
            netladder: None,
            bpftrace_hits: Some(bpftrace_hits(&text)),
        })
    }
}

/// The rounds of benchmark 5, for the report.
pub(super) struct HostTaxResults {
    rounds: Vec<Round>,
    probes: Probes,
    foreign: Vec<String>,
    seconds: f64,
}

impl HostTaxResults {
    fn ratios(&self, mode: Mode, load: LoadKind) -> Option<Spread> {
        Spread::of(self.rounds.iter().filter_map(|r| r.ratio(mode, load)))
    }

    fn why(&self, mode: Mode) -> &str {
        self.rounds
            .iter()
            .find_map(|r| r.failure(mode))
            .unwrap_or("no data")
    }

    pub(super) fn markdown(&self, machine: &Machine, command_line: &str) -> String {
        let mut md =
            String::from("### Host tax: work netladder does not watch (issue 16, benchmark 5)\n\n");
        md += &machine.measured(command_line);
        md += &format!(
            "Each of {} rounds runs three {} s loads once per mode, in rotating order: one-byte \
             read()/write() pairs (/dev/zero to /dev/null), open()/close() pairs of one file, and \
             {}-byte send()/recv() round trips on one TCP connection on 127.0.0.1 (echoed by a \
             thread with read()/write()). An op is one pair or one round trip. Ratios are per round \
             against that round's untraced run.\n\n",
            self.rounds.len(),
            self.seconds,
            ECHO_BYTES
        );
        md += &self.summary_table();
        md += "\n";
        md += &self.rounds_table();
        md += "\n";
        md += &self.probes_note();
        md += &closing(&self.foreign, &self.verdicts());
        md
    }

    fn summary_table(&self) -> String {
        let mut t = String::from(
            "| load | mode | ops/s min | median | max | ratio to untraced: median | min | max \
             | CPU per op (median) | CPUs busy elsewhere (median) |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for load in LoadKind::ALL {
            for mode in Mode::ALL {
                let measured = || self.rounds.iter().filter_map(|r| r.measured(mode, load));
                let Some(rates) = Spread::of(measured().map(|m| m.rate)) else {
                    t += &format!(
                        "| {} | {} | did not run: {} | | | | | | | |\n",
                        load.arg(),
                        mode.label(),
                        escape_cell(self.why(mode))
                    );
                    continue;
                };
                let ratios =
                    super::report::ratio_cells(mode == Mode::Untraced, self.ratios(mode, load));
                let per_op = median(measured().map(Measured::cpu_per_op_ns));
                let background = median(measured().map(Measured::background_cpus));
                t += &format!(
                    "| {} | {} | {} | {ratios} | {per_op:.0} ns | {background:.2} |\n",
                    load.arg(),
                    mode.label(),
                    rates.rate_cells(),
                );
            }
        }
        t
    }

    fn rounds_table(&self) -> String {
        let mut t = String::from(
            "Per round (ratio to that round's untraced run; netladder's kernel events and lost \
             events from its final stats line, and its SIGINT-to-exit time):\n\n\
             | round | order |",
        );
        let mut rule = String::from("|---:|---|");
        for load in LoadKind::ALL {
            t += &format!(" {0}, netladder | {0}, bpftrace |", load.arg());
            rule += "---:|---:|";
        }
        t += " netladder events | lost | exit |\n";
        t += &rule;
        t += "---:|---:|---:|\n";
        let cell = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.3}"));
        for (i, round) in self.rounds.iter().enumerate() {
            let order: Vec<&str> = round.order.iter().map(|m| m.short()).collect();
            t += &format!("| {} | {} |", i + 1, order.join(" > "));
            for load in LoadKind::ALL {
                t += &format!(
                    " {} | {} |",
                    cell(round.ratio(Mode::Netladder, load)),
                    cell(round.ratio(Mode::Bpftrace, load))
                );
            }
            match round.runs[index(Mode::Netladder)]
                .as_ref()
                .ok()
                .and_then(|r| r.netladder)
            {
                Some((events, lost, stop)) => {
                    t += &format!(" {events} | {lost} | {:.2} s |\n", stop.as_secs_f64())
                }
                None => t += " - | - | - |\n",
            }
        }
        t
    }

    fn probes_note(&self) -> String {
        let list = |items: &[String]| -> String {
            items
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut note = format!(
            "netladder's attached hooks, from `netladder hooks --json` on this kernel, include {} \
             syscall tracepoints. The bpftrace reference ({BPFTRACE}) counts hits per probe in a \
             map on the classic tracepoint of each tracepoint hook: {}.",
            self.probes.syscalls(),
            list(&self.probes.counted)
        );
        if !self.probes.not_counted.is_empty() {
            note += &format!(
                " Not counted by bpftrace (no classic tracepoint): {}.",
                list(&self.probes.not_counted)
            );
        }
        note + "\n"
    }

    /// One target line per load, then a warning when other work competed for the CPUs.
    pub(super) fn verdicts(&self) -> Vec<String> {
        let mut lines: Vec<String> = LoadKind::ALL
            .into_iter()
            .map(|load| self.load_verdict(load))
            .collect();
        lines.extend(self.load_warning());
        lines
    }

    fn load_verdict(&self, load: LoadKind) -> String {
        let bpftrace = self
            .ratios(Mode::Bpftrace, load)
            .map_or(String::new(), |b| format!("; bpftrace {:.3}", b.median));
        match self.ratios(Mode::Netladder, load) {
            Some(r) => format!(
                "TARGET {}: the {} load keeps {:.3} of its untraced rate under netladder (median; min {:.3}, max {:.3}{bpftrace}; target >= {TARGET})",
                if r.median >= TARGET { "MET" } else { "MISSED" },
                load.arg(),
                r.median,
                r.min,
                r.max
            ),
            None => format!(
                "TARGET MISSED: the {} load could not be measured under netladder: {}",
                load.arg(),
                self.why(Mode::Netladder)
            ),
        }
    }

    fn load_warning(&self) -> Option<String> {
        const NOISY_CPUS: f64 = 0.25;
        let busiest = self
            .rounds
            .iter()
            .flat_map(|r| {
                Mode::ALL.into_iter().flat_map(move |mode| {
                    LoadKind::ALL
                        .into_iter()
                        .filter_map(move |load| r.measured(mode, load))
                })
            })
            .map(Measured::background_cpus);
        let busiest = median(busiest);
        (busiest > NOISY_CPUS).then(|| {
            format!(
                "WARNING: other work kept {busiest:.2} CPUs busy during the host-tax loads (median): \
                 rates and ratios are noisy; the CPU per op is the steadier measure"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOOKS: &str = r#"{"type":"hooks","hooks":[
        {"hook":"tp_btf/inet_sock_set_state","status":"attached"},
        {"hook":"tp_btf/kfree_skb","status":"attached"},
        {"hook":"tp_btf/no_such_tp","status":"attached"},
        {"hook":"fentry/tcp_v4_err","status":"refused"},
        {"hook":"tracepoint/syscalls/sys_enter_connect","status":"attached"},
        {"hook":"tracepoint/syscalls/sys_exit_connect","status":"attached"},
        {"hook":"tracepoint/syscalls/sys_enter_write","status":"skipped"},
        {"hook":"tracepoint/syscalls/sys_enter_connect","status":"attached"},
        {"hook":"uprobe/libc:getaddrinfo","status":"attached"},
        {"hook":"cgroup_skb/egress (cgroup2 root)","status":"attached"}
    ]}"#;

    fn category(tp: &str) -> Option<String> {
        match tp {
            "inet_sock_set_state" => Some("sock".to_owned()),
            "kfree_skb" => Some("skb".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn probes_follow_the_attached_hooks() {
        let probes = Probes::parse(HOOKS, category).unwrap();
        assert_eq!(
            probes.counted,
            [
                "sock:inet_sock_set_state",
                "skb:kfree_skb",
                "syscalls:sys_enter_connect",
                "syscalls:sys_exit_connect"
            ]
        );
        assert_eq!(
            probes.not_counted,
            [
                "tp_btf/no_such_tp",
                "uprobe/libc:getaddrinfo",
                "cgroup_skb/egress (cgroup2 root)"
            ]
        );
        assert_eq!(probes.syscalls(), 2);
        assert_eq!(
            probes.script().lines().next(),
            Some("tracepoint:sock:inet_sock_set_state { @[probe] = count(); }")
        );
        assert!(Probes::parse("{}", category).is_err());
        assert!(Probes::parse("not json", category).is_err());
    }

    #[test]
    fn bpftrace_hits_are_summed() {
        let out = "Attaching 3 probes...\n\n\n@[tracepoint:skb:kfree_skb]: 12\n\
                   @[tracepoint:syscalls:sys_enter_write]: 30\nnoise: 5\n";
        assert_eq!(bpftrace_hits(out), 42);
        assert_eq!(bpftrace_hits(""), 0);
    }

    fn measured(rate: f64) -> Measured {
        Measured {
            ops: 1000,
            secs: 2.0,
            rate,
            cpu: 1.0,
            busy_cpu: 2.5,
            tracer_cpu: 0.5,
        }
    }

    fn run(rate: f64) -> Result<ModeRun, String> {
        Ok(ModeRun {
            loads: vec![(LoadKind::Echo, measured(rate))],
            netladder: None,
            bpftrace_hits: None,
        })
    }

    #[test]
    fn ratios_and_verdicts() {
        let m = Measured::parse(
            r#"{"load":"echo","ops":1000,"secs":2.0,"rate":500.0,"user":0.25,"sys":0.75}"#,
            LoadKind::Echo,
        )
        .unwrap();
        assert_eq!((m.ops, m.rate, m.cpu), (1000, 500.0, 1.0));
        assert_eq!(m.cpu_per_op_ns(), 1e6);
        assert_eq!(measured(1.0).background_cpus(), 0.5);
        assert!(Measured::parse("{}", LoadKind::Echo).is_err());

        let rounds = vec![
            Round {
                order: Mode::order(0),
                runs: [run(100.0), run(99.0), run(90.0)],
            },
            Round {
                order: Mode::order(1),
                runs: [run(200.0), run(190.0), Err("bpftrace broke".to_owned())],
            },
        ];
        let results = HostTaxResults {
            rounds,
            probes: Probes::default(),
            foreign: Vec::new(),
            seconds: 2.0,
        };
        let r = results.ratios(Mode::Netladder, LoadKind::Echo).unwrap();
        assert_eq!((r.min, r.max), (0.95, 0.99));
        assert_eq!(
            results
                .ratios(Mode::Bpftrace, LoadKind::Echo)
                .unwrap()
                .median,
            0.9
        );
        assert!(results
            .ratios(Mode::Netladder, LoadKind::ReadWrite)
            .is_none());
        let verdicts = results.verdicts();
        assert!(verdicts[0].starts_with("TARGET MISSED: the read-write load could not be measured"));
        assert!(verdicts[2].starts_with("TARGET MISSED: the echo load keeps 0.970"));
        assert!(verdicts[2].contains("bpftrace 0.900"));
        assert!(verdicts
            .iter()
            .any(|l| l.starts_with("WARNING: other work")));
        let md = results.markdown(
            &Machine {
                kernel: "6.18".to_owned(),
                cpus: 2,
                cpu_model: "cpu".to_owned(),
                date: "today".to_owned(),
            },
            "cmd",
        );
        assert!(md
            .contains("| echo | bpftrace, counting the same tracepoints | 90 | 90 | 90 | 0.900 |"));
        assert!(md.contains("| 2 | netladder > bpftrace > untraced |"));
    }
}
